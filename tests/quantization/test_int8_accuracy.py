"""End to end on Fashion-MNIST: prune, strip, quantization-aware training,
full-integer .tflite in LiteRT, with the fp32 accuracy kept."""

import keras
import numpy as np
import pytest
from ai_edge_litert import interpreter as litert_interpreter

import tf_clicktrain as ct
from examples import offline_datasets
from examples import reference_models


def _fashion_mnist(split, count):
    data = offline_datasets.load("fashion_mnist", split, as_supervised=True).take(count)
    images, labels = zip(*data.as_numpy_iterator())
    return np.stack(images).astype("float32") / 255.0, np.array(labels)


def _litert_accuracy(tflite_bytes, images, labels):
    interpreter = litert_interpreter.Interpreter(model_content=tflite_bytes, num_threads=1)
    (input_detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(input_detail["index"], list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_detail["index"], images)
    interpreter.invoke()
    logits = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return float(np.mean(logits.argmax(-1) == labels))


@pytest.mark.slow
def test_int8_pattern_file_keeps_fp32_accuracy():
    x, y = _fashion_mnist("train", 12_000)
    x_test, y_test = _fashion_mnist("test", 2_000)
    epochs, batch = 3, 64
    schedule = ct.ClickTrainSchedule.from_budget(
        epochs, int(np.ceil(len(x) / batch)),
        connectivity_sparsity=ct.patterns.sparsity_for_compression(8.0))
    pruned = ct.prune_pattern(
        reference_models.vgg_style_cnn(widths=(16, 16, 32, 32, 64, 64)), schedule=schedule)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pruned.compile(keras.optimizers.Adam(3e-3), loss, metrics=["accuracy"])
    pruned.fit(x, y, epochs=epochs, batch_size=batch, verbose=0,
               callbacks=[ct.UpdatePruningStep()])
    final = ct.strip_pruning(pruned)
    final.compile(loss=loss, metrics=["accuracy"])
    fp32_accuracy = final.evaluate(x_test, y_test, verbose=0)[1]
    assert fp32_accuracy > 0.8, fp32_accuracy

    qat = ct.quantize_model(final)
    qat.compile(keras.optimizers.SGD(1e-3, momentum=0.9), loss, metrics=["accuracy"])
    qat.fit(x, y, epochs=1, batch_size=batch, verbose=0)
    int8_bytes = ct.tflite.convert(qat)
    int8_accuracy = _litert_accuracy(int8_bytes, x_test, y_test)
    # 0.5 pp is 10 of the 2,000 test images.
    assert int8_accuracy >= fp32_accuracy - 0.005, (int8_accuracy, fp32_accuracy)
    for layer in final.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.name != "conv1":
            removed = layer.kernel.numpy() == 0
            assert removed.mean() > 0.8
            assert np.all(qat.get_layer(layer.name).kernel.numpy()[removed] == 0)
