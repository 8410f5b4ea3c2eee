r"""Accuracy cost of block-pruning the 1x1 convs of a MobileNetV2-like network.

A native 1x1 kernel runs fastest when the kept weights of a 1x1 conv come in
blocks of consecutive output channels per input channel (block-sparse GEMM
in NHWC). `ct.prune_pattern(..., block_size=(1, 16))` prunes that way: a 1x1
kernel is cut as its (input, output) matrix, so a (1, 16) block is one input
channel x 16 consecutive output channels. This benchmark measures what the
block constraint costs in test accuracy against unstructured pruning of the
same 1x1 convs at the same sparsity, and against dense training.

The network: a small MobileNetV2 for 28x28x1 (3x3 stem conv, five inverted
residual blocks 1x1 expand x4 -> 3x3 depthwise -> 1x1 project with
BatchNorm + ReLU6, two of them stride 2, a 1x1 head conv, global average
pooling and a Dense classifier; channel counts multiples of 16). Every
variant trains with examples/clicktrain_tfds.py's recipe and budget (SGD 0.05
with momentum, step decay, weight decay); the pruned ones use the library's
defaults (`ClickTrainSchedule.from_budget`, 4 patterns of 4 entries on the
depthwise convs, magnitude importance, first conv left dense, the
`ct.UpdatePruningStep` callback, the learning-rate schedule rewound when the
masks apply, `ct.strip_pruning`), with the 1x1 convs (`unstructured=
"pointwise"`, the default) pruned to `--sparsity`:

- dense: no pruning.
- unstructured: 1x1 convs unstructured (magnitude) at the sparsity.
- block16: the same with `block_size=(1, 16)`.
- block4: the same with `block_size=(1, 4)`.
- dwonly: depthwise patterns only, 1x1 convs dense (`unstructured="none"`),
  to separate the depthwise patterns' cost from the 1x1 pruning's.

Each row reports the test accuracy on the full 10,000-image test set, the
measured sparsity of the 1x1 kernels, and the share of 16-output-channel
groups of a 1x1 kernel row (one input channel) that are all zero, all kept,
or mixed (mixed must be 0 for block16). With `--convert_seeds`, the stripped
model of those seeds is converted with `ct.tflite.convert(...,
decide_by="size")` and run by `ct.tflite.Interpreter`; the row records the
file size, the custom-op count and the largest difference to Keras on 256
test images. Rows are appended to a JSON-lines file as each run finishes, so
an interrupted run resumes where it stopped; the table is printed from it.

With `--save_dir`, each stripped model is saved; `--check_saved` converts
and checks saved models in a fresh process (a long run keeps the native
library it loaded first mapped, so a rebuild of libclicktrain_tflite.so
during the run leaves its later checks running the old code; each check row
records the library's path and modification time).

    nice -n 10 python benchmarks/pointwise_block_accuracy.py --epochs=5 \
        --train_images=20000 --seeds=0,1,2 --variants=dense,unstructured,block16 \
        --convert_seeds=0
    python benchmarks/pointwise_block_accuracy.py --report_only --epochs=5
"""

import collections
import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_clicktrain as ct  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "examples"))
import clicktrain_tfds as recipe  # noqa: E402  (defines --epochs, --batch_size, ...)
from _results import append_row, finished_rows  # noqa: E402
from _tflite_check import check_tflite  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["0"], "Seeds; each variant runs once per seed.")
flags.DEFINE_list("variants", ["dense", "unstructured", "block16"],
                  "Variants to run: dense, unstructured, block16, block4, dwonly.")
flags.DEFINE_integer("train_images", 20000,
                     "Training images used (the first N of the train split; 0: all 60,000).")
flags.DEFINE_float("sparsity", 0.8, "Final sparsity of the 1x1 convs (unstructured_sparsity).")
flags.DEFINE_integer("expansion", 4, "Expansion factor of the inverted residual blocks.")
flags.DEFINE_list("convert_seeds", [],
                  "Seeds whose pruned models are also converted to .tflite and checked.")
flags.DEFINE_integer("threads", 1, "TensorFlow intra/inter-op threads (1: one core).")
flags.DEFINE_string("results", os.path.join(REPO, "benchmarks", "results",
                                            "pointwise_block_accuracy.jsonl"),
                    "JSON-lines file of finished runs.")
flags.DEFINE_bool("report_only", False, "Only print the table of finished runs.")
flags.DEFINE_string("save_dir", None,
                    "If set, save each stripped model there as <variant>_seed<seed>.keras.")
flags.DEFINE_bool("check_saved", False,
                  "Train nothing: convert the models saved in --save_dir for --variants and "
                  "--seeds, check them against Keras and append one 'tflite_check' row each.")

VARIANTS = {
    "dense": None,
    "unstructured": dict(block_size=(1, 1)),
    "block16": dict(block_size=(1, 16)),
    "block4": dict(block_size=(1, 4)),
    "dwonly": dict(unstructured="none"),
}
GROUP = 16  # output channels per group in the block-structure check


def mobilenet_v2_small(input_shape=(28, 28, 1), classes=10, expansion=4):
    """A MobileNetV2-like CNN for 28x28 inputs (about 55k parameters at x4)."""
    def conv_bn(x, filters, kernel, stride, name, activation=True):
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same",
                                use_bias=False, name=name)(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        return keras.layers.ReLU(6.0, name=f"{name}_relu")(x) if activation else x

    def inverted_residual(x, filters, stride, name):
        inputs = x
        x = conv_bn(x, expansion * int(inputs.shape[-1]), 1, 1, f"{name}_expand")
        x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                         name=f"{name}_dw")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(x)
        x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
        x = conv_bn(x, filters, 1, 1, f"{name}_project", activation=False)
        if stride == 1 and int(inputs.shape[-1]) == filters:
            x = keras.layers.Add(name=f"{name}_add")([inputs, x])
        return x

    inputs = keras.Input(input_shape)
    x = conv_bn(inputs, 16, 3, 1, "stem")
    for index, (filters, stride) in enumerate(
            [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1)], start=1):
        x = inverted_residual(x, filters, stride, f"block{index}")
    x = conv_bn(x, 128, 1, 1, "head")
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2_small")


def pointwise_kernels(model):
    """{name: (in, out) matrix} of every 1x1 Conv2D of a stripped model."""
    return {
        layer.name: layer.kernel.numpy().reshape(layer.kernel.shape[-2:])
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
        and not isinstance(layer, keras.layers.DepthwiseConv2D)
        and tuple(layer.kernel_size) == (1, 1)
    }


def pointwise_structure(model):
    """Sparsity of the 1x1 kernels and how their 16-output-channel groups look.

    A group is one input channel x 16 consecutive output channels (the
    block the native kernel wants): all zero, all kept (no zero), or mixed.
    """
    kernels = pointwise_kernels(model)
    zeros = total = 0
    groups = collections.Counter()
    per_layer = {}
    for name, matrix in kernels.items():
        rows, columns = matrix.shape
        assert columns % GROUP == 0, (name, matrix.shape)
        kept = (matrix != 0).reshape(rows, columns // GROUP, GROUP).sum(axis=-1)
        layer_groups = collections.Counter(
            zero=int((kept == 0).sum()), full=int((kept == GROUP).sum()),
            mixed=int(((kept > 0) & (kept < GROUP)).sum()))
        groups.update(layer_groups)
        layer_zeros = int((matrix == 0).sum())
        per_layer[name] = {"shape": [rows, columns], "sparsity": layer_zeros / matrix.size,
                           "mixed_groups": layer_groups["mixed"]}
        zeros += layer_zeros
        total += matrix.size
    count = sum(groups.values())
    return {
        "pointwise_sparsity": zeros / total,
        "pointwise_weights": int(total),
        "groups16": count,
        "groups16_zero": groups["zero"] / count,
        "groups16_full": groups["full"] / count,
        "groups16_mixed": groups["mixed"] / count,
        "per_layer": per_layer,
    }


def depthwise_sparsity(model):
    kernels = [layer.kernel.numpy() for layer in model.layers
               if isinstance(layer, keras.layers.DepthwiseConv2D)]
    return float(sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels))


def make_datasets():
    train, test, info = recipe.make_datasets("fashion_mnist", FLAGS.batch_size,
                                             FLAGS.train_images)
    return train, test, info


def train_variant(name, seed, train, test, steps):
    keras.utils.set_random_seed(seed)
    model = mobilenet_v2_small(expansion=FLAGS.expansion)
    options = VARIANTS[name]
    extra = {}
    callbacks = []
    if options is None:
        recipe.compile_model(model, steps)
    else:
        # The example's schedule for the budget (its default 3x3 target of 8x
        # only names the schedule's sparsity: this network's one regular 3x3
        # conv is the stem, left dense; depthwise convs keep every kernel).
        schedule = recipe.make_schedule(FLAGS.epochs, steps, 8.0)
        model = ct.prune_pattern(model, schedule=schedule,
                                 unstructured_sparsity=FLAGS.sparsity, **options)
        recipe.compile_model(model, steps, schedule.hard_pruning_step)
        callbacks = [ct.UpdatePruningStep()]
        extra = {"selection_step": schedule.selection_step,
                 "hard_pruning_step": schedule.hard_pruning_step,
                 "wrapped": [w.layer.name for w in ct.pruning_wrappers(model)]}
    start, start_cpu = time.time(), time.process_time()
    model.fit(train, epochs=FLAGS.epochs, verbose=2, callbacks=callbacks)
    seconds, cpu_seconds = time.time() - start, time.process_time() - start_cpu
    final = ct.strip_pruning(model) if ct.pruning_wrappers(model) else model
    recipe.compile_model(final, steps)
    accuracy = float(final.evaluate(test, verbose=0)[1])
    stats = ct.model_stats(final)
    row = {"accuracy": accuracy, "seconds": seconds, "cpu_seconds": cpu_seconds,
           "model_compression": stats.model_compression,
           "depthwise_sparsity": depthwise_sparsity(final),
           **pointwise_structure(final), **extra}
    return final, row


def _config():
    return {"dataset": "fashion_mnist", "epochs": FLAGS.epochs,
            "train_images": FLAGS.train_images, "batch_size": FLAGS.batch_size,
            "learning_rate": FLAGS.learning_rate, "sparsity": FLAGS.sparsity,
            "expansion": FLAGS.expansion}


def print_table(rows):
    grouped = collections.OrderedDict()
    for row in rows:
        grouped.setdefault(row["variant"], []).append(row)
    print(f"\n{'variant':<14}{'seeds':>6}{'accuracy %':>17}{'1x1 sparsity':>14}"
          f"{'16-groups zero/full/mixed':>28}{'dw sparsity':>13}{'wall s':>8}{'tflite KB':>11}")
    for name, runs in grouped.items():
        accuracies = [100 * r["accuracy"] for r in runs]
        spread = f" ± {statistics.stdev(accuracies):.2f}" if len(runs) > 1 else ""
        mean = lambda key: statistics.mean(r[key] for r in runs)  # noqa: E731
        sizes = [r["tflite_bytes"] / 1024 for r in runs if "tflite_bytes" in r]
        size = f"{statistics.mean(sizes):.1f}" if sizes else "-"
        groups = (f"{mean('groups16_zero'):.3f}/{mean('groups16_full'):.3f}/"
                  f"{mean('groups16_mixed'):.3f}")
        print(f"{name:<14}{len(runs):>6}{statistics.mean(accuracies):>10.2f}{spread:<7}"
              f"{mean('pointwise_sparsity'):>14.3f}{groups:>28}{mean('depthwise_sparsity'):>13.3f}"
              f"{statistics.median(r['seconds'] for r in runs):>8.0f}{size:>11}")
    print("(accuracy: mean ± std over seeds, full 10,000-image test set; 16-groups: one "
          "input channel x 16 consecutive output channels of a 1x1 kernel)")


def main(argv):
    del argv
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    recipe._silence_info_logs()
    finished = finished_rows(FLAGS.results)
    config = _config()
    if FLAGS.check_saved:
        _, test, _ = make_datasets()
        for seed in [int(s) for s in FLAGS.seeds]:
            for name in FLAGS.variants:
                path = os.path.join(FLAGS.save_dir, f"{name}_seed{seed}.keras")
                final = keras.saving.load_model(path)
                recipe.compile_model(final, 1)
                row = {"variant": name, "seed": seed, "config": config,
                       "check": "tflite_check", "model": path,
                       "accuracy": float(final.evaluate(test, verbose=0)[1]),
                       **check_tflite(final, test)}
                append_row(FLAGS.results, row)
                print(json.dumps(row), flush=True)
        return
    if not FLAGS.report_only:
        unknown = set(FLAGS.variants) - set(VARIANTS)
        if unknown:
            raise app.UsageError(f"Unknown variants: {sorted(unknown)}")
        train, test, _ = make_datasets()
        steps = int(train.cardinality().numpy())
        convert_seeds = {int(s) for s in FLAGS.convert_seeds}
        for seed in [int(s) for s in FLAGS.seeds]:
            for name in FLAGS.variants:
                if any(r["variant"] == name and r["seed"] == seed and r["config"] == config
                       and "check" not in r for r in finished):
                    continue
                print(f"=== {name}, seed {seed}", flush=True)
                final, result = train_variant(name, seed, train, test, steps)
                if FLAGS.save_dir:
                    os.makedirs(FLAGS.save_dir, exist_ok=True)
                    final.save(os.path.join(FLAGS.save_dir, f"{name}_seed{seed}.keras"))
                if seed in convert_seeds and name != "dense":
                    result.update(check_tflite(final, test))
                row = {"variant": name, "seed": seed, "config": config, **result}
                append_row(FLAGS.results, row)
                finished.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "per_layer"}),
                      flush=True)
                keras.backend.clear_session()
    print(f"\nfashion_mnist, {FLAGS.epochs} epochs, {FLAGS.train_images or 60000} training "
          f"images, 1x1 sparsity {FLAGS.sparsity}, expansion x{FLAGS.expansion}")
    print_table([r for r in finished if r["config"] == config and "check" not in r])
    checks = [r for r in finished if r.get("check") == "tflite_check"]
    if checks:
        print("\n.tflite checks of saved models (decide_by='size', ct.tflite.Interpreter, "
              "256 test images):")
        for r in checks:
            print(f"{r['variant']:<14}seed {r['seed']}  epochs {r['config']['epochs']}  "
                  f"{r['tflite_bytes'] / 1024:.1f} KB (builtin-only "
                  f"{r['tflite_builtin_bytes'] / 1024:.1f} KB), {r['tflite_custom_ops']} custom "
                  f"ops, max |tflite - keras| {r['tflite_max_abs_diff']:.1e}, argmax agree "
                  f"{r['tflite_argmax_agree']:.3f}")


if __name__ == "__main__":
    app.run(main)
