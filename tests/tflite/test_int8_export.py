"""Full-integer int8 export: QAT ranges or representative data, zeros kept."""

import keras
import numpy as np
import pytest
from ai_edge_litert import interpreter as litert_interpreter
from ai_edge_litert import schema_py_generated as schema

import tf_clicktrain as ct
from tf_clicktrain.tflite import int8_export

INPUT_SHAPE = (10, 10, 3)


def conv_bn_net():
    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = inputs
    for index, width in enumerate((8, 16, 16)):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(4, name="logits")(x)
    return keras.Model(inputs, outputs)


def pattern_sparse(model, seed=0):
    """conv1/conv2: each 3x3 kernel keeps 4 of its 9 weights; half removed."""
    rng = np.random.default_rng(seed)
    for name in ("conv1", "conv2"):
        layer = model.get_layer(name)
        kernel = layer.kernel.numpy()
        inputs, outputs = kernel.shape[2:]
        mask = np.zeros((inputs, outputs, 9), np.float32)
        kept = np.argsort(rng.random((inputs, outputs, 9)), axis=-1)[..., :4]
        np.put_along_axis(mask, kept, 1.0, axis=-1)
        mask *= (rng.random((inputs, outputs)) < 0.5)[..., None]
        layer.kernel.assign(kernel * mask.transpose(2, 0, 1).reshape(kernel.shape))
    return model


def images(count, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (count, *INPUT_SHAPE)).astype("float32")


def trained_qat_model():
    model = pattern_sparse(conv_bn_net())
    qat = ct.quantize_model(model)
    x = images(64)
    y = np.random.default_rng(1).integers(0, 4, 64)
    qat.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, batch_size=16, epochs=2, verbose=0)
    return qat


def conv_filters(tflite_bytes):
    """The int8 filters of the CONV_2D ops in file order, as [h, w, in, out]."""
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    filters = []
    for subgraph in model.subgraphs:
        for operator in subgraph.operators:
            code = model.operatorCodes[operator.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) != schema.BuiltinOperator.CONV_2D:
                continue
            tensor = subgraph.tensors[operator.inputs[1]]
            assert tensor.type == schema.TensorType.INT8
            data = np.asarray(model.buffers[tensor.buffer].data, np.uint8).view(np.int8)
            filters.append(data.reshape(tensor.shape).transpose(1, 2, 3, 0))
    return filters


def run(tflite_bytes, x):
    interpreter = litert_interpreter.Interpreter(model_content=tflite_bytes, num_threads=1)
    runner = interpreter.get_signature_runner()
    return np.concatenate([next(iter(runner(image=x[i:i + 1]).values()))
                           for i in range(len(x))])


@pytest.fixture(scope="module")
def qat_model():
    keras.utils.set_random_seed(5)
    return trained_qat_model()


def test_qat_model_exports_full_integer_without_data(qat_model):
    tflite_bytes = ct.tflite.convert(qat_model)
    assert int8_export.float_operators(tflite_bytes) == []
    x = images(8, seed=3)
    expected = qat_model.predict(x, verbose=0)
    actual = run(tflite_bytes, x)
    # The QAT model computes what the int8 file computes, up to accumulation
    # order: a couple of output steps at most.
    output_step = (expected.max() - expected.min()) / 255
    assert np.abs(actual - expected).max() <= 3 * output_step


def test_int8_file_keeps_the_patterns(qat_model):
    filters = conv_filters(ct.tflite.convert(qat_model, custom_ops=False))
    assert len(filters) == 3
    for index in (1, 2):
        keras_zeros = qat_model.get_layer(f"conv{index}").kernel_mask.numpy() == 0
        assert keras_zeros.mean() > 0.5
        assert np.all(filters[index][keras_zeros] == 0), index


def test_int8_inputs_and_outputs(qat_model):
    tflite_bytes = ct.tflite.convert(qat_model, inference_input_type="int8",
                                     inference_output_type="int8")
    interpreter = litert_interpreter.Interpreter(model_content=tflite_bytes)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8


def test_float_model_with_representative_dataset_is_full_integer():
    model = pattern_sparse(conv_bn_net())
    calibration = images(16, seed=2)

    def representative_dataset():
        for index in range(len(calibration)):
            yield [calibration[index:index + 1]]

    tflite_bytes = ct.tflite.convert(model, representative_dataset=representative_dataset,
                                     custom_ops=False)
    assert int8_export.float_operators(tflite_bytes) == []
    zeros = model.get_layer("conv2").kernel.numpy() == 0
    assert np.all(conv_filters(tflite_bytes)[2][zeros] == 0)
    x = images(8, seed=4)
    expected = model.predict(x, verbose=0)
    spread = expected.max() - expected.min()
    assert np.abs(run(tflite_bytes, x) - expected).max() < 0.1 * spread


def test_bad_int8_requests_raise(qat_model):
    with pytest.raises(ValueError, match="never trained"):
        ct.tflite.convert(ct.quantize_model(conv_bn_net()))
    with pytest.raises(ValueError, match="int8 inputs/outputs need an int8 file"):
        ct.tflite.convert(conv_bn_net(), inference_input_type="int8")
    with pytest.raises(ValueError, match="inference_output_type"):
        ct.tflite.convert(qat_model, inference_output_type="uint8")
    with pytest.raises(ValueError, match="representative_dataset must be a callable"):
        ct.tflite.convert(conv_bn_net(), representative_dataset=[images(1)])
    with pytest.raises(ValueError, match="needs representative_dataset"):
        int8_export.convert_int8(conv_bn_net())


def test_depthwise_relu6_and_residual_add_export_matches_keras():
    inputs = keras.Input((8, 8, 4), name="image")
    x = keras.layers.Conv2D(8, 1, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.ReLU()(keras.layers.Add()([x, keras.layers.Conv2D(8, 1)(x)]))
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    depthwise = model.get_layer("depthwise")
    mask = np.random.default_rng(0).random(depthwise.kernel.shape) < 0.5
    depthwise.kernel.assign(depthwise.kernel.numpy() * mask)
    qat = ct.quantize_model(model)
    x = np.random.default_rng(1).uniform(size=(16, 8, 8, 4)).astype("float32")
    qat(x, training=True)
    tflite_bytes = ct.tflite.convert(qat)
    assert int8_export.float_operators(tflite_bytes) == []
    expected = qat.predict(x[:4], verbose=0)
    output_step = (expected.max() - expected.min()) / 255
    assert np.abs(run(tflite_bytes, x[:4]) - expected).max() <= 3 * output_step
    assert np.all(qat.get_layer("depthwise").kernel.numpy()[~mask] == 0)


def test_common_layers_export_full_integer():
    layers = keras.layers
    inputs = keras.Input((8, 8, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.Concatenate()([x, layers.Conv2D(4, 1)(x)])
    x = layers.Multiply()([x, layers.Conv2D(12, 1, activation="sigmoid")(x)])
    x = layers.AveragePooling2D(2)(x)
    x = layers.UpSampling2D()(x)
    x = layers.Activation("hard_swish")(x)
    x = layers.LeakyReLU(0.1)(layers.Conv2D(8, 3, padding="same")(x))
    x = layers.Dropout(0.2)(layers.Flatten()(x))
    outputs = layers.Dense(5)(x)
    qat = ct.quantize_model(keras.Model(inputs, outputs))
    x = np.random.default_rng(1).uniform(size=(16, 8, 8, 3)).astype("float32")
    qat(x, training=True)
    tflite_bytes = ct.tflite.convert(qat)
    assert int8_export.float_operators(tflite_bytes) == []
    expected = qat.predict(x[:4], verbose=0)
    # Concatenate, Multiply and pooling requantize in TFLite's int8 ops, each
    # rounding once more than the fake-quant model: a few output steps.
    low, high, _ = qat.layers[-1].ranges()["output"]
    assert np.abs(run(tflite_bytes, x[:4]) - expected).max() <= 4 * (high - low) / 255
