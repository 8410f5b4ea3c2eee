r"""ClickTrain end to end on a tfds image dataset: dense vs pattern-pruned.

Trains a VGG-style CNN densely, then the same network with ClickTrain pattern
pruning during training (dense warm-up, pattern selection and connectivity
pruning, soft group-lasso phase, hard masks) with the library's default
schedule for the epoch budget and the learning-rate schedule replayed from
its start when the masks apply (`ct.RewoundLearningRate`); prints accuracy, compression and wall time of
both, exports the pruned model to .tflite in fp32 and full-integer int8, each
as the pattern-op file and as the builtin-only file a user would ship
otherwise, prints their test accuracy, size and latency side by side, and
saves the models. TensorFlow's and absl's INFO logs are shown with --verbose
only.

    python examples/clicktrain_tfds.py --dataset=fashion_mnist --epochs=4
    python examples/clicktrain_tfds.py --dataset=cifar10 --epochs=60 \
        --widths=64,64,128,128,256,256       # with internet

Offline, `mnist` and `fashion_mnist` are prepared from local files (see
offline_datasets.py, next to this script).
"""

import contextlib
import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags
from absl import logging

# TensorFlow's native logs are configured when it is imported, before flags
# are parsed, so --verbose is read from argv here.
VERBOSE = any(arg in ("--verbose", "--verbose=true", "--verbose=True") for arg in sys.argv)
if not VERBOSE:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _quiet_native_stderr(quiet):
    """Sends file descriptor 2 to /dev/null (native logs that ignore levels)."""
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _quiet_native_stderr(not VERBOSE):
    # Importing TensorFlow logs a oneDNN notice through absl's C++ logging,
    # which TF_CPP_MIN_LOG_LEVEL does not reach.
    import keras  # noqa: E402
    import tensorflow as tf  # noqa: E402

import offline_datasets  # noqa: E402
import reference_models  # noqa: E402
import tf_clicktrain as ct  # noqa: E402
from tf_clicktrain.tflite import speed_decision  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "fashion_mnist", "tfds image classification dataset.")
flags.DEFINE_integer("epochs", 4, "Epochs for each of the two runs.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_list("widths", ["16", "16", "32", "32", "64", "64"], "3x3 conv widths.")
flags.DEFINE_float("conv_compression", 8.0,
                   "Target compression of each pruned 3x3 conv (params / non-zeros).")
flags.DEFINE_integer("num_patterns", 4, "Patterns per layer (K).")
flags.DEFINE_integer("entries_per_kernel", 4, "Weights kept per 3x3 kernel.")
# Magnitude measured better than accumulated Taylor on this network
# (benchmarks/README.md, 3 seeds); both are one flag away.
flags.DEFINE_enum("importance", "magnitude",
                  ["magnitude", "taylor", "taylor_accumulated"], "Weight importance.")
flags.DEFINE_float("penalty", None,
                   "Group-lasso weight of the soft phase (default: the library's, sized "
                   "to the soft phase).")
flags.DEFINE_bool("soft_anneal", True,
                  "Also fade removed weights out of the forward pass in the soft phase.")
flags.DEFINE_float("learning_rate", 0.05, "Initial SGD learning rate.")
flags.DEFINE_float("selection_fraction", None,
                   "Where pattern selection happens, as a fraction of the epochs "
                   "(default: the library's, 1/6; the paper: 65/190).")
flags.DEFINE_float("hard_fraction", None,
                   "Where the hard phase starts (default: the library's, 1/3; the "
                   "paper: 143/190).")
flags.DEFINE_bool("rewind_learning_rate", True,
                  "When the masks apply, replay the learning-rate schedule from its initial "
                  "rate over the remaining steps (measured +1 pp at 8x, benchmarks/README.md).")
flags.DEFINE_integer("train_examples", 0, "Use only this many training examples (0: all).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("output_dir", "artifacts/clicktrain_tfds", "Where models are saved.")
flags.DEFINE_bool("skip_dense", False, "Skip the dense baseline run.")
flags.DEFINE_integer("calibration_images", 500,
                     "Training images that calibrate the int8 files' activation ranges.")
flags.DEFINE_bool("verbose", False,
                  "Show TensorFlow's and absl's INFO logs (dataset info, SavedModel "
                  "assets, converter notices).")


def make_datasets(name, batch_size, train_examples=0, seed=0):
    """Batched (image float32 in [0, 1], label) train/test datasets + info."""
    train, info = offline_datasets.load(name, "train", as_supervised=True, with_info=True)
    test = offline_datasets.load(name, "test", as_supervised=True)
    if train_examples:
        train = train.take(train_examples)

    def scale(image, label):
        return tf.cast(image, tf.float32) / 255.0, label

    train = (train.map(scale, num_parallel_calls=tf.data.AUTOTUNE).cache()
             .shuffle(10_000, seed=seed).batch(batch_size).prefetch(tf.data.AUTOTUNE))
    test = (test.map(scale, num_parallel_calls=tf.data.AUTOTUNE).batch(512).cache()
            .prefetch(tf.data.AUTOTUNE))
    return train, test, info


def make_schedule(epochs, steps_per_epoch, compression, entries_per_kernel=4, penalty=None,
                  selection_fraction=None, hard_fraction=None):
    """The library's ClickTrain schedule for a budget at a target compression."""
    return ct.ClickTrainSchedule.from_budget(
        epochs, steps_per_epoch,
        selection_fraction=selection_fraction, hard_fraction=hard_fraction,
        connectivity_sparsity=ct.patterns.sparsity_for_compression(
            compression, entries_per_kernel),
        penalty=penalty)


def learning_rate_schedule(initial, epochs, steps_per_epoch):
    """Step decay x0.1 at the paper's relative points (55/190, 131/190)."""
    boundaries = sorted({max(1, round(epochs * 55 / 190)) * steps_per_epoch,
                         max(2, round(epochs * 131 / 190)) * steps_per_epoch})
    values = [initial * 0.1**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def compile_model(model, steps_per_epoch, rewind_step=None):
    """SGD with the step decay; with `rewind_step`, the decay replayed from there."""
    rate = learning_rate_schedule(FLAGS.learning_rate, FLAGS.epochs, steps_per_epoch)
    if rewind_step is not None:
        rate = ct.RewoundLearningRate(rate, rewind_step=rewind_step,
                                      total_steps=FLAGS.epochs * steps_per_epoch)
    optimizer = keras.optimizers.SGD(rate, momentum=0.9, weight_decay=5e-4)
    model.compile(optimizer,
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


def build_model(info):
    return reference_models.vgg_style_cnn(
        input_shape=info.features["image"].shape,
        classes=info.features["label"].num_classes,
        widths=[int(w) for w in FLAGS.widths],
    )


def _median_call_ms(interpreters, image, rounds=101):
    """Median ms per signature-runner call of each interpreter, interleaved.

    Each sample is the mean of the calls that fit in about 2 ms, and the
    order of the interpreters rotates from round to round, so load from
    other jobs hits every file alike.
    """
    calls = {}
    for label, interpreter in interpreters.items():
        runner = interpreter.get_signature_runner()
        name = next(iter(runner.get_input_details()))
        calls[label] = lambda runner=runner, name=name: runner(**{name: image})
    samples = speed_decision.interleaved_samples(calls, rounds, sample_seconds=0.002)
    return {label: 1000 * statistics.median(times) for label, times in samples.items()}


def _file_accuracy(interpreter, test):
    """Test accuracy of a .tflite file, one image per invoke (batch 1)."""
    runner = interpreter.get_signature_runner()
    name = next(iter(runner.get_input_details()))
    correct = total = 0
    for images, labels in test:
        for image, label in zip(images.numpy(), labels.numpy()):
            logits = next(iter(runner(**{name: image[None]}).values()))
            correct += int(logits.argmax() == label)
            total += 1
    return correct / total


def export_tflite(final, train, test):
    """Exports the pruned model in fp32 and int8, pattern op vs builtin-only.

    Returns one row per file: test accuracy, size and one-thread latency, and
    the fp32 pattern file's largest difference to Keras.
    """
    from ai_edge_litert.interpreter import Interpreter as StockInterpreter

    calibration = train.unbatch().take(FLAGS.calibration_images).batch(1)

    def representative_dataset():
        for image, _ in calibration:
            yield [image]

    conversions = {
        "fp32 builtin-only": dict(custom_ops=False),
        "fp32 pattern op": {},
        "int8 builtin-only": dict(custom_ops=False,
                                  representative_dataset=representative_dataset),
        "int8 pattern op": dict(representative_dataset=representative_dataset),
    }
    files = {}
    start = time.time()
    for label, options in conversions.items():
        print(f"Converting to .tflite: {label}...", flush=True)
        with _quiet_native_stderr(not FLAGS.verbose):
            files[label] = ct.tflite.convert(final, **options)
    print(f"Converted in {time.time() - start:.0f} s; measuring accuracy and latency of the "
          "four files (1 thread, batch 1)...", flush=True)
    ct.tflite.save(files["fp32 pattern op"], os.path.join(FLAGS.output_dir, "pruned.tflite"))
    ct.tflite.save(files["int8 pattern op"],
                   os.path.join(FLAGS.output_dir, "pruned_int8.tflite"))
    image = next(iter(test.unbatch().batch(1)))[0].numpy()
    rows, interpreters = {}, {}
    for label, content in files.items():
        interpreter_class = StockInterpreter if "builtin" in label else ct.tflite.Interpreter
        with _quiet_native_stderr(not FLAGS.verbose):  # LiteRT's delegate notices
            interpreter = interpreter_class(model_content=content, num_threads=1)
            interpreter.allocate_tensors()
            rows[label] = {"accuracy": _file_accuracy(interpreter, test),
                           "kb": len(content) / 1024}
        interpreters[label] = interpreter
    for label, milliseconds in _median_call_ms(interpreters, image).items():
        rows[label]["ms"] = milliseconds
    runner = ct.tflite.Interpreter(model_content=files["fp32 pattern op"],
                                   num_threads=1).get_signature_runner()
    logits = next(iter(runner(**{next(iter(runner.get_input_details())): image}).values()))
    difference = float(abs(logits - final.predict(image, verbose=0)).max())
    return rows, difference


def _silence_info_logs():
    """absl and TensorFlow's Python loggers: warnings and errors only."""
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("ERROR")
    tf.autograph.set_verbosity(0)


def main(argv):
    del argv
    if not FLAGS.verbose:
        _silence_info_logs()
    keras.utils.set_random_seed(FLAGS.seed)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    train, test, info = make_datasets(FLAGS.dataset, FLAGS.batch_size,
                                      FLAGS.train_examples, FLAGS.seed)
    steps_per_epoch = int(train.cardinality().numpy())
    results = {}

    if not FLAGS.skip_dense:
        print(f"Dense baseline: {FLAGS.epochs} epochs", flush=True)
        dense = build_model(info)
        compile_model(dense, steps_per_epoch)
        start = time.time()
        dense.fit(train, epochs=FLAGS.epochs, validation_data=test, verbose=2, shuffle=False)
        results["dense"] = {
            "accuracy": dense.evaluate(test, verbose=0)[1],
            "seconds": time.time() - start,
            "conv3x3_compression": 1.0,
        }
        ct.save_model(dense, os.path.join(FLAGS.output_dir, "dense.keras"))

    schedule = make_schedule(FLAGS.epochs, steps_per_epoch, FLAGS.conv_compression,
                             FLAGS.entries_per_kernel, FLAGS.penalty,
                             FLAGS.selection_fraction, FLAGS.hard_fraction)
    print(f"ClickTrain: {FLAGS.epochs} epochs, selection at step {schedule.selection_step}, "
          f"hard from step {schedule.hard_pruning_step}, kernel sparsity "
          f"{schedule.connectivity_sparsity:.3f}, penalty {schedule.penalty_value:.2e}"
          + (", learning rate rewound at the hard phase" if FLAGS.rewind_learning_rate else ""),
          flush=True)
    keras.utils.set_random_seed(FLAGS.seed)
    pruned = ct.prune_pattern(
        build_model(info), schedule=schedule, num_patterns=FLAGS.num_patterns,
        entries_per_kernel=FLAGS.entries_per_kernel, importance=FLAGS.importance,
        soft_anneal=FLAGS.soft_anneal,
    )
    compile_model(pruned, steps_per_epoch,
                  schedule.hard_pruning_step if FLAGS.rewind_learning_rate else None)
    start = time.time()
    pruned.fit(train, epochs=FLAGS.epochs, validation_data=test, verbose=2, shuffle=False,
               callbacks=[ct.UpdatePruningStep(),
                          ct.PruningSummaries(os.path.join(FLAGS.output_dir, "logs"))])
    seconds = time.time() - start
    final = ct.strip_pruning(pruned)
    compile_model(final, steps_per_epoch)
    stats = ct.model_stats(final)
    results["clicktrain"] = {
        "accuracy": final.evaluate(test, verbose=0)[1],
        "seconds": seconds,
        "conv3x3_compression": stats.conv3x3_compression,
        "model_compression": stats.model_compression,
    }
    ct.save_model(final, os.path.join(FLAGS.output_dir, "pruned.keras"))
    files, difference = export_tflite(final, train, test)
    report_path = ct.report.plot_pattern_report(
        final, os.path.join(FLAGS.output_dir, "patterns.png"))

    print(stats.table())
    print(f"\n{'run':<12}{'accuracy':>10}{'3x3 conv compr.':>18}{'wall time':>12}")
    for run, row in results.items():
        print(f"{run:<12}{row['accuracy']:>10.4f}{row['conv3x3_compression']:>17.2f}x"
              f"{row['seconds']:>11.0f}s")
    with open(os.path.join(FLAGS.output_dir, "results.json"), "w") as handle:
        json.dump({**results, "tflite": files}, handle, indent=2)
    print("\nThe pruned model's .tflite files (test accuracy; 1 thread, batch 1):")
    print(f"{'file':<20}{'accuracy':>10}{'size':>12}{'latency':>12}")
    for label, row in files.items():
        print(f"{label:<20}{row['accuracy']:>10.4f}{row['kb']:>9.1f} KB{row['ms']:>9.3f} ms")
    print(f"(builtin-only: the same weights, zeros kept, run by XNNPACK; int8: full-integer, "
          f"calibrated on {FLAGS.calibration_images} training images; the fp32 pattern file "
          f"differs from Keras by at most {difference:.1e})")
    print(f"\nSaved {FLAGS.output_dir}/pruned.keras, pruned.tflite, pruned_int8.tflite (and "
          "dense.keras, results.json)")
    print(f"Pattern report (patterns per layer, kernels kept/removed): {report_path}")


if __name__ == "__main__":
    app.run(main)
