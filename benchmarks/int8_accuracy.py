r"""int8 accuracy of a pattern-pruned model: post-training vs quantization-aware.

Takes the pruned model the main job saves (examples/clicktrain_tfds.py writes
`pruned.keras`, plain Keras layers with pattern-sparse kernels) and measures on
the test split, all in one run:

- fp32: the pruned Keras model;
- int8 PTQ: `ct.tflite.convert(model, representative_dataset=...)` (full
  integer, calibrated on training images), run in LiteRT;
- int8 QAT: `ct.quantize_model(model)` fine-tuned for `--qat_epochs`, then
  `ct.tflite.convert(qat_model)` (no data), run in LiteRT.

Both int8 files are builtin-only (`custom_ops=False`); the script checks
that every weight the patterns removed is an int8 zero in the QAT file.

    python examples/clicktrain_tfds.py --skip_dense --output_dir=/tmp/ct
    python benchmarks/int8_accuracy.py --pruned_model=/tmp/ct/pruned.keras
"""

import os
import sys
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert import interpreter as litert_interpreter  # noqa: E402
from ai_edge_litert import schema_py_generated as schema  # noqa: E402

import tf_clicktrain as ct  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import offline_datasets  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("pruned_model", "artifacts/clicktrain_tfds/pruned.keras",
                    "The stripped pattern-pruned model (.keras).")
flags.DEFINE_string("dataset", "fashion_mnist", "tfds dataset the model was trained on.")
flags.DEFINE_integer("qat_epochs", 1, "Quantization-aware fine-tuning epochs.")
flags.DEFINE_float("learning_rate", 1e-3, "SGD learning rate of the QAT fine-tuning.")
flags.DEFINE_integer("batch_size", 128, "QAT batch size.")
flags.DEFINE_integer("calibration_examples", 500, "Training images calibrating the PTQ file.")
flags.DEFINE_integer("seed", 0, "Random seed.")


def load_split(split):
    data = offline_datasets.load(FLAGS.dataset, split, as_supervised=True)

    def scale(image, label):
        return tf.cast(image, tf.float32) / 255.0, label

    return data.map(scale, num_parallel_calls=tf.data.AUTOTUNE)


def as_arrays(data):
    images, labels = zip(*data.batch(10_000).as_numpy_iterator())
    return np.concatenate(images), np.concatenate(labels)


def tflite_accuracy(tflite_bytes, images, labels, batch=500):
    interpreter = litert_interpreter.Interpreter(model_content=tflite_bytes, num_threads=1)
    (input_detail,) = interpreter.get_input_details()
    (output_detail,) = interpreter.get_output_details()
    interpreter.resize_tensor_input(input_detail["index"], [batch, *images.shape[1:]])
    interpreter.allocate_tensors()
    correct = 0
    for start in range(0, len(images) - batch + 1, batch):
        interpreter.set_tensor(input_detail["index"], images[start:start + batch])
        interpreter.invoke()
        logits = interpreter.get_tensor(output_detail["index"])
        correct += int((logits.argmax(-1) == labels[start:start + batch]).sum())
    return correct / (len(images) // batch * batch)


def int8_conv_filters(tflite_bytes):
    """int8 CONV_2D filters in file order, as [h, w, in, out]."""
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    filters = []
    for subgraph in model.subgraphs:
        for operator in subgraph.operators:
            code = model.operatorCodes[operator.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.CONV_2D:
                tensor = subgraph.tensors[operator.inputs[1]]
                data = np.asarray(model.buffers[tensor.buffer].data, np.uint8).view(np.int8)
                filters.append(data.reshape(tensor.shape).transpose(1, 2, 3, 0))
    return filters


def check_patterns_kept(model, tflite_bytes):
    """Every zero of the Keras conv kernels is an int8 zero in the file."""
    layers = [getattr(layer, "layer", layer) for layer in model.layers]  # unwrap QAT
    kernels = [layer.kernel.numpy() for layer in layers if isinstance(layer, keras.layers.Conv2D)]
    filters = int8_conv_filters(tflite_bytes)
    assert len(kernels) == len(filters), (len(kernels), len(filters))
    removed = kept_as_zero = 0
    for kernel, int8_filter in zip(kernels, filters):
        zeros = kernel == 0
        if not np.all(int8_filter[zeros] == 0):
            raise AssertionError("a removed weight is non-zero in the int8 file")
        removed += int(zeros.sum())
        kept_as_zero += int((int8_filter[~zeros] == 0).sum())
    return removed, kept_as_zero


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    final = keras.saving.load_model(FLAGS.pruned_model)
    train = load_split("train")
    test_images, test_labels = as_arrays(load_split("test"))
    rows = []

    final.compile(metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fp32_accuracy = final.evaluate(test_images, test_labels, batch_size=500, verbose=0)[1]
    fp32_bytes = ct.tflite.convert(final, custom_ops=False)
    rows.append(("fp32 pruned (Keras)", fp32_accuracy, len(fp32_bytes), 0.0))

    calibration = as_arrays(train.take(FLAGS.calibration_examples))[0]

    def representative_dataset():
        for index in range(len(calibration)):
            yield [calibration[index:index + 1]]

    start = time.time()
    ptq_bytes = ct.tflite.convert(final, representative_dataset=representative_dataset,
                                  custom_ops=False)
    rows.append(("int8 PTQ (LiteRT)", tflite_accuracy(ptq_bytes, test_images, test_labels),
                 len(ptq_bytes), time.time() - start))

    start = time.time()
    qat = ct.quantize_model(final)
    qat.compile(keras.optimizers.SGD(FLAGS.learning_rate, momentum=0.9),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    qat.fit(train.shuffle(10_000, seed=FLAGS.seed).batch(FLAGS.batch_size)
            .prefetch(tf.data.AUTOTUNE), epochs=FLAGS.qat_epochs, verbose=2)
    qat_keras_accuracy = qat.evaluate(test_images, test_labels, batch_size=500, verbose=0)[1]
    qat_bytes = ct.tflite.convert(qat, custom_ops=False)
    seconds = time.time() - start
    rows.append(("int8 QAT (Keras, fake-quant)", qat_keras_accuracy, 0, seconds))
    rows.append(("int8 QAT (LiteRT)", tflite_accuracy(qat_bytes, test_images, test_labels),
                 len(qat_bytes), seconds))

    print(f"\n{FLAGS.dataset}, {len(test_labels)} test images; pruned model "
          f"{FLAGS.pruned_model}")
    print(f"{'model':<30}{'accuracy':>10}{'vs fp32':>10}{'.tflite KB':>12}{'time':>8}")
    for name, accuracy, size, seconds in rows:
        size_text = f"{size / 1024:.1f}" if size else "-"
        print(f"{name:<30}{100 * accuracy:>9.2f}%{100 * (accuracy - fp32_accuracy):>+9.2f}pp"
              f"{size_text:>12}{seconds:>7.0f}s")
    removed, kept_as_zero = check_patterns_kept(qat, qat_bytes)
    print(f"\nConv weights removed by the patterns: {removed}, all int8 zeros in the QAT "
          f"file (plus {kept_as_zero} kept weights that round to 0).")


if __name__ == "__main__":
    app.run(main)
