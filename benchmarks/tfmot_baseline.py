r"""tfmot baseline: unstructured magnitude pruning of the same CNN, in tf_keras.

The accuracy benchmark's `tfmot` row: tensorflow-model-optimization's
`prune_low_magnitude` (unstructured) applied to the same layers ClickTrain
prunes (every 3x3 conv but the first) of the same VGG-style CNN, trained on the
same data with the same optimizer and learning-rate schedule as
examples/clicktrain_tfds.py. tfmot prunes only tf_keras (Keras 2) models and
sets TF_USE_LEGACY_KERAS=1 when imported, so this script runs in its own
environment:

    bash benchmarks/setup_tfmot_venv.sh          # once: creates .venv-tfmot/
    .venv-tfmot/bin/python benchmarks/tfmot_baseline.py --epochs=4 \
        --sparsity=0.875 --output_json=artifacts/tfmot.json
    .venv-tfmot/bin/python benchmarks/tfmot_baseline.py --epochs=1 \
        --train_examples=2000                    # a quick check

benchmarks/accuracy.py runs it as a subprocess with the flags of its own run.

The recipe, mirroring the Keras 3 side:
- model: examples/reference_models.py's vgg_style_cnn rebuilt in tf_keras
  (3x3 conv without bias -> BatchNorm(momentum=0.9) -> ReLU, a 2x2 max-pool
  after every second conv, global average pooling, Dense logits), same layer
  names and default initializers.
- optimizer: SGD, momentum 0.9, weight decay 5e-4, learning rate 0.05 divided
  by 10 at 55/190 and 131/190 of the epochs (PiecewiseConstantDecay per
  step). tf_keras' SGD (the TF >= 2.11 optimizer) has the same decoupled
  `weight_decay` as Keras 3's: after each step every trainable variable
  (BatchNorm included) is multiplied by (1 - weight_decay * lr); so it is the
  same update, not an L2-loss approximation.
- pruning: `prune_low_magnitude` on conv2..convN with tfmot's gradual recipe,
  `PolynomialDecay` (power 3) from sparsity 0 to --sparsity between 1/3 and
  3/4 of the training steps (the last mask update falls exactly on the end
  step, so the final sparsity is reached); then `strip_pruning`.

Printed and written to --output_json: test accuracy of the stripped model,
wall and process CPU time of `fit`, `conv3x3_sparsity` (zeros / weights over the pruned 3x3
convs), `conv3x3_compression` (weights / non-zeros over all 3x3 convs, the
dense first one included, as `tf_clicktrain.model_stats` counts it),
`model_compression` (all trainable weights / non-zeros) and per-layer
sparsities.

Data: examples/offline_datasets.py (offline-capable tfds loading) is loaded by
file path: importing the `tf_clicktrain` package would import its Keras-3
parts. The script checks that loading it imports neither `tf_clicktrain` nor
`keras`.
"""

import importlib.util
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# tfmot sets this on import; set it first so nothing ever sees Keras 3 as tf.keras.
os.environ["TF_USE_LEGACY_KERAS"] = "1"

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _keras3_modules():
    return {m for m in sys.modules if m == "keras" or m.startswith("keras.")}


def _load_datasets_module():
    """examples/offline_datasets.py by file path, without the tf_clicktrain package."""
    before = _keras3_modules()
    path = os.path.join(REPO, "examples", "offline_datasets.py")
    spec = importlib.util.spec_from_file_location("_clicktrain_datasets", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    package = sorted(m for m in sys.modules if m.split(".")[0] == "tf_clicktrain")
    added = _keras3_modules() - before
    if package or added:
        raise RuntimeError(
            f"Loading {path} imported the Keras-3 side: tf_clicktrain modules "
            f"{package}, keras modules {sorted(added)[:5]}")
    return module


datasets = _load_datasets_module()

import tensorflow_model_optimization as tfmot  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "fashion_mnist", "tfds image classification dataset.")
flags.DEFINE_integer("epochs", 4, "Training epochs.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_list("widths", ["16", "16", "32", "32", "64", "64"], "3x3 conv widths.")
flags.DEFINE_float("sparsity", 0.875,
                   "Final unstructured sparsity of each pruned 3x3 conv "
                   "(0.875: 8x compression of those layers).")
flags.DEFINE_float("learning_rate", 0.05, "Initial SGD learning rate.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("train_examples", 0, "Use only this many training examples (0: all).")
flags.DEFINE_string("output_json", "", "Where to write the results (JSON); none if empty.")


def make_datasets(name, batch_size, train_examples=0, seed=0):
    """Batched (image float32 in [0, 1], label) train/test datasets + info.

    The same pipeline as examples/clicktrain_tfds.py.
    """
    train, info = datasets.load(name, "train", as_supervised=True, with_info=True)
    test = datasets.load(name, "test", as_supervised=True)
    if train_examples:
        train = train.take(train_examples)

    def scale(image, label):
        return tf.cast(image, tf.float32) / 255.0, label

    train = (train.map(scale, num_parallel_calls=tf.data.AUTOTUNE).cache()
             .shuffle(10_000, seed=seed).batch(batch_size).prefetch(tf.data.AUTOTUNE))
    test = (test.map(scale, num_parallel_calls=tf.data.AUTOTUNE).batch(512).cache()
            .prefetch(tf.data.AUTOTUNE))
    return train, test, info


def vgg_style_cnn(input_shape, classes, widths, name="vgg_style_cnn"):
    """examples/reference_models.py's vgg_style_cnn, layer for layer, in tf_keras."""
    layers = tf_keras.layers
    inputs = tf_keras.Input(input_shape, name="image")
    x = inputs
    for index, width in enumerate(widths):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False,
                          name=f"conv{index + 1}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{index + 1}")(x)
        x = layers.ReLU(name=f"relu{index + 1}")(x)
        if index % 2 == 1:
            x = layers.MaxPooling2D(name=f"pool{index // 2 + 1}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return tf_keras.Model(inputs, outputs, name=name)


def learning_rate_schedule(initial, epochs, steps_per_epoch):
    """Step decay x0.1 at the paper's relative points (55/190, 131/190)."""
    boundaries = sorted({max(1, round(epochs * 55 / 190)) * steps_per_epoch,
                         max(2, round(epochs * 131 / 190)) * steps_per_epoch})
    values = [initial * 0.1**i for i in range(len(boundaries) + 1)]
    return tf_keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def compile_model(model, steps_per_epoch):
    optimizer = tf_keras.optimizers.SGD(
        learning_rate_schedule(FLAGS.learning_rate, FLAGS.epochs, steps_per_epoch),
        momentum=0.9, weight_decay=5e-4,
    )
    model.compile(optimizer,
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


def pruning_schedule(total_steps, final_sparsity):
    """tfmot's gradual recipe: 0 -> final sparsity from 1/3 to 3/4 of training.

    Masks are updated every `frequency` steps (tfmot's default 100 on long
    runs, about 10 updates on short ones); the end step is aligned to an
    update so the final sparsity is reached.
    """
    begin = total_steps // 3
    span = max(1, (3 * total_steps) // 4 - begin)
    frequency = 100 if span >= 1000 else max(1, span // 10)
    end = begin + frequency * max(1, span // frequency)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=final_sparsity, begin_step=begin,
        end_step=end, power=3, frequency=frequency)
    return schedule, dict(begin_step=begin, end_step=end, frequency=frequency)


def _is_conv3x3(layer):
    return (isinstance(layer, tf_keras.layers.Conv2D)
            and tuple(layer.kernel_size) == (3, 3))


def prune_model(model, schedule):
    """Wraps every 3x3 conv but the first with prune_low_magnitude."""
    first = next(layer.name for layer in model.layers if _is_conv3x3(layer))
    pruned_names = [layer.name for layer in model.layers
                    if _is_conv3x3(layer) and layer.name != first]

    def clone(layer):
        if layer.name in pruned_names:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer.__class__.from_config(layer.get_config())

    pruned = tf_keras.models.clone_model(model, clone_function=clone)
    return pruned, pruned_names


def sparsity_figures(model, pruned_names):
    """Sparsity of the pruned convs; compression of all 3x3 convs and the model."""
    per_layer = {}
    pruned_weights = pruned_zeros = conv_weights = conv_nonzero = 0
    for layer in model.layers:
        if not _is_conv3x3(layer):
            continue
        kernel = layer.kernel.numpy()
        nonzero = int(np.count_nonzero(kernel))
        conv_weights += kernel.size
        conv_nonzero += nonzero
        per_layer[layer.name] = 1.0 - nonzero / kernel.size
        if layer.name in pruned_names:
            pruned_weights += kernel.size
            pruned_zeros += kernel.size - nonzero
    model_weights = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    model_nonzero = sum(int(np.count_nonzero(w.numpy())) for w in model.trainable_weights)
    return {
        "conv3x3_sparsity": pruned_zeros / max(pruned_weights, 1),
        "conv3x3_compression": conv_weights / max(conv_nonzero, 1),
        "model_compression": model_weights / max(model_nonzero, 1),
        "layer_sparsity": per_layer,
    }


def main(argv):
    del argv
    if not 0.0 <= FLAGS.sparsity < 1.0:
        raise app.UsageError(f"--sparsity must be in [0, 1). Received: {FLAGS.sparsity}")
    tf_keras.utils.set_random_seed(FLAGS.seed)
    train, test, info = make_datasets(FLAGS.dataset, FLAGS.batch_size,
                                      FLAGS.train_examples, FLAGS.seed)
    steps_per_epoch = int(train.cardinality().numpy())
    total_steps = steps_per_epoch * FLAGS.epochs
    schedule, schedule_steps = pruning_schedule(total_steps, FLAGS.sparsity)

    dense = vgg_style_cnn(info.features["image"].shape,
                          info.features["label"].num_classes,
                          [int(w) for w in FLAGS.widths])
    model, pruned_names = prune_model(dense, schedule)
    compile_model(model, steps_per_epoch)
    start, start_cpu = time.time(), time.process_time()
    model.fit(train, epochs=FLAGS.epochs, verbose=2,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    seconds = time.time() - start
    cpu_seconds = time.process_time() - start_cpu

    final = tfmot.sparsity.keras.strip_pruning(model)
    compile_model(final, steps_per_epoch)
    accuracy = float(final.evaluate(test, verbose=0)[1])
    results = {
        "accuracy": accuracy,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        **sparsity_figures(final, pruned_names),
        "target_sparsity": FLAGS.sparsity,
        "pruned_layers": pruned_names,
        "pruning_schedule": schedule_steps,
        "steps": total_steps,
        "epochs": FLAGS.epochs,
        "dataset": FLAGS.dataset,
        "seed": FLAGS.seed,
        "train_examples": FLAGS.train_examples,
        "versions": {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__,
                     "tfmot": tfmot.__version__},
    }
    print(f"tfmot prune_low_magnitude: accuracy {accuracy:.4f}, pruned 3x3 convs "
          f"sparsity {results['conv3x3_sparsity']:.4f} (target {FLAGS.sparsity}), "
          f"3x3 conv compression {results['conv3x3_compression']:.2f}x, model "
          f"{results['model_compression']:.2f}x, fit {seconds:.0f}s")
    if FLAGS.output_json:
        folder = os.path.dirname(os.path.abspath(FLAGS.output_json))
        os.makedirs(folder, exist_ok=True)
        with open(FLAGS.output_json, "w") as handle:
            json.dump(results, handle, indent=2)
        print(f"Wrote {FLAGS.output_json}")
    if math.isnan(accuracy):
        raise SystemExit("evaluation gave NaN accuracy")


if __name__ == "__main__":
    app.run(main)
