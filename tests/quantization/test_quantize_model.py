"""Quantization-aware training keeps pattern sparsity, saves and loads."""

import keras
import numpy as np
import pytest

import tf_clicktrain as ct
from tf_clicktrain.quantization import QuantizeWrapper
from tf_clicktrain.quantization import batchnorm_folding
from tf_clicktrain.quantization import fake_quant
from tf_clicktrain.quantization import quantize_model
from tf_clicktrain.quantization import quantize_wrappers

INPUT_SHAPE = (10, 10, 3)
CLASSES = 4


def conv_bn_net(widths=(8, 16, 16)):
    """conv-BN-ReLU blocks, a max-pool, GAP, Dense: the main job's shape."""
    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = inputs
    for index, width in enumerate(widths):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
        if index == 0:
            x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs)


def data(count=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (count, *INPUT_SHAPE)).astype("float32")
    y = rng.integers(0, CLASSES, count)
    return x, y


def make_pattern_sparse(model, seed=0):
    """Zeroes every 3x3 kernel but the first conv's into 4-of-9 patterns,
    removing about half of the kernels; BN statistics made non-trivial."""
    rng = np.random.default_rng(seed)
    patterns = np.array([[1, 1, 0, 1, 1, 0, 0, 0, 0], [0, 1, 0, 1, 1, 1, 0, 0, 0],
                         [0, 0, 0, 0, 1, 1, 0, 1, 1], [0, 1, 0, 0, 1, 0, 1, 1, 0]],
                        np.float32)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, size).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.1, size).astype("float32"))
        if isinstance(layer, keras.layers.Conv2D) and layer.name != "conv0":
            kernel = layer.kernel.numpy()
            _, _, inputs, outputs = kernel.shape
            ids = rng.integers(0, len(patterns), (inputs, outputs))
            keep = rng.random((inputs, outputs)) < 0.5
            mask = patterns[ids].reshape(inputs, outputs, 3, 3).transpose(2, 3, 0, 1)
            layer.kernel.assign(kernel * mask * keep)


def compile_and_fit(model, x, y, epochs=3):
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)


def zero_positions(model):
    return {layer.name: keras.ops.convert_to_numpy(kernel) == 0
            for layer in model.layers
            for kernel in [_kernel(layer)] if kernel is not None}


def _kernel(layer):
    if isinstance(layer, QuantizeWrapper):
        layer = layer.layer
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        return layer.kernel
    return None


def test_patterns_survive_quantization_aware_training():
    model = conv_bn_net()
    make_pattern_sparse(model)
    before = zero_positions(model)
    kernels_before = {name: _kernel(model.get_layer(name)).numpy() for name in before}
    qat = quantize_model(model)
    x, y = data()
    compile_and_fit(qat, x, y)
    after = zero_positions(qat)
    for name in ("conv1", "conv2"):
        assert before[name].mean() > 0.7  # pattern-sparse to begin with
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
        wrapper = qat.get_layer(name)
        # What the int8 file will hold: exact zeros where the patterns remove
        # weights (a kept weight below half a step may round to 0 as well).
        quantized = fake_quant.quantize_kernel(wrapper.kernel.value).numpy()
        assert np.all(quantized[before[name]] == 0), name
        assert np.mean(quantized[~before[name]] != 0) > 0.95, name
        # Training moved the kept weights (BN folded in, then fine-tuned).
        assert not np.allclose(wrapper.kernel.numpy()[~before[name]],
                               kernels_before[name][~before[name]])
    # The input model is left as it was.
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(),
                                  kernels_before["conv1"])


def test_quantized_model_layout():
    qat = quantize_model(conv_bn_net())
    kinds = {layer.name: type(layer).__name__ for layer in qat.layers}
    assert kinds["bn1"] == "FoldedBatchNormalization"
    assert kinds["pool"] == "MaxPooling2D"  # keeps its input's scale
    conv0, relu0 = qat.get_layer("conv0"), qat.get_layer("relu0")
    assert conv0.quantize_inputs and not conv0.quantize_output  # ReLU fused
    assert relu0.quantize_output and not relu0.quantize_inputs
    assert qat.get_layer("logits").quantize_output
    assert len(quantize_wrappers(qat)) == 8  # 3 convs, 3 ReLUs, GAP, logits


def test_batchnorm_folding_matches_inference_batchnorm():
    model = conv_bn_net()
    make_pattern_sparse(model, seed=3)
    conv, bn = model.get_layer("conv1"), model.get_layer("bn1")
    folded, weights = batchnorm_folding.folded_layer(conv, bn)
    x = np.random.default_rng(1).normal(size=(2, 5, 5, 8)).astype("float32")
    folded.build(x.shape)
    folded.set_weights(weights)
    expected = bn(conv(x), training=False)
    np.testing.assert_allclose(folded(x), expected, atol=1e-5)
    np.testing.assert_array_equal(weights[0] == 0, conv.kernel.numpy() == 0)


def test_quantized_model_runs_close_to_float_after_range_training():
    model = conv_bn_net()
    make_pattern_sparse(model)
    x, _ = data()
    qat = quantize_model(model)
    qat(x, training=True)  # sets the ranges; no weight changes
    expected = model.predict(x, verbose=0)
    actual = qat.predict(x, verbose=0)
    spread = expected.max() - expected.min()
    assert np.abs(actual - expected).max() < 0.05 * spread


def test_keras_round_trip_restores_ranges_and_masks(tmp_path):
    model = conv_bn_net()
    make_pattern_sparse(model)
    qat = quantize_model(model)
    x, y = data()
    compile_and_fit(qat, x, y, epochs=1)
    path = tmp_path / "qat.keras"
    qat.save(path)
    loaded = keras.saving.load_model(path)
    for original in quantize_wrappers(qat):
        restored = loaded.get_layer(original.name)
        assert isinstance(restored, QuantizeWrapper)
        assert restored.ranges() == original.ranges()
        assert all(initialized for _, _, initialized in restored.ranges().values())
        if original.kernel_mask is not None:
            np.testing.assert_array_equal(restored.kernel_mask.numpy(),
                                          original.kernel_mask.numpy())
    np.testing.assert_allclose(loaded.predict(x, verbose=0), qat.predict(x, verbose=0),
                               atol=1e-6)
    # Training the loaded model keeps the zeros.
    compile_and_fit(loaded, x, y, epochs=1)
    np.testing.assert_array_equal(zero_positions(loaded)["conv2"],
                                  zero_positions(qat)["conv2"])


def test_composes_with_prune_pattern_and_strip_pruning():
    x, y = data(96)
    schedule = ct.ClickTrainSchedule(selection_step=2, hard_pruning_step=4,
                                     connectivity_sparsity=0.5)
    pruned = ct.prune_pattern(conv_bn_net(), schedule=schedule)
    pruned.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0,
               callbacks=[ct.UpdatePruningStep()])
    stripped = ct.strip_pruning(pruned)
    expected_zeros = zero_positions(stripped)
    assert expected_zeros["conv2"].mean() > 0.5
    for source in (stripped, pruned):  # a still-wrapped model is stripped first
        qat = quantize_model(source)
        compile_and_fit(qat, x, y, epochs=1)
        for name in ("conv1", "conv2"):
            np.testing.assert_array_equal(zero_positions(qat)[name], expected_zeros[name])


def test_sequential_model():
    model = keras.Sequential([
        keras.Input((8, 8, 2)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ])
    qat = quantize_model(model)
    assert qat.layers[0].quantize_inputs and qat.layers[0].quantize_output
    assert not isinstance(qat.layers[1], QuantizeWrapper)
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 2)).astype("float32")
    qat(x, training=True)
    assert qat.predict(x, verbose=0).shape == (4, 3)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, inputs):
        return self.dense(inputs)


def _nested():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))


def _shared():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(4)
    return keras.Model(inputs, dense(dense(inputs)))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: "model", "Sequential or Functional"),
        (lambda: keras.layers.Dense(2), "Sequential or Functional"),
        (_Subclassed, "Sequential or Functional"),
        (_nested, "nested model"),
        (_shared, "shared layers"),
        (lambda: quantize_model(conv_bn_net()), "already quantized"),
    ],
)
def test_bad_models_raise(make, message):
    with pytest.raises(ValueError, match=message):
        quantize_model(make())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"ema_decay": -0.1}, "ema_decay"),
        ({"ema_decay": "0.9"}, "ema_decay"),
        ({"preserve_sparsity": 1}, "preserve_sparsity"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantize_model(conv_bn_net(), **kwargs)


def test_wrapper_rejects_non_layers():
    with pytest.raises(ValueError, match="wraps a Keras layer"):
        QuantizeWrapper("conv")
    with pytest.raises(ValueError, match="quantize_inputs"):
        QuantizeWrapper(keras.layers.ReLU(), quantize_inputs="yes")


def test_unsupported_kernel_layers_raise():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.SeparableConv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="SeparableConv2D"):
        quantize_model(model)
