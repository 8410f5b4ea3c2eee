"""Every kind of layer users prune: patterns where possible, else tfmot's
unstructured magnitude pruning; a layer left dense is logged."""

import logging

import keras
import numpy as np
import pytest

import tf_clicktrain as ct
from tests.pruning.helpers import assert_pattern_sparse

SCHEDULE = ct.ConstantSparsity(0.5, begin_step=0)


def _train_and_strip(layer, input_shape, integer_inputs=False):
    wrapper = ct.prune_pattern(layer, schedule=SCHEDULE)
    model = keras.Sequential([keras.Input(input_shape), wrapper])
    rng = np.random.default_rng(0)
    if integer_inputs:
        x = rng.integers(0, 10, (4,) + input_shape)
    else:
        x = rng.standard_normal((4,) + input_shape).astype("float32")
    y = np.zeros((4,) + tuple(model.output_shape[1:]), "float32")
    model.compile(keras.optimizers.SGD(0.01), "mse")
    model.fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[ct.UpdatePruningStep()])
    stripped = ct.strip_pruning(model)
    np.testing.assert_allclose(stripped(x), model(x), rtol=1e-5, atol=1e-5)
    return wrapper


@pytest.mark.parametrize("layer, input_shape, integer_inputs", [
    (keras.layers.Conv1D(8, 3), (10, 4), False),
    (keras.layers.Conv3D(4, 3), (5, 5, 5, 2), False),
    (keras.layers.Conv2DTranspose(4, 3), (6, 6, 4), False),
    (keras.layers.Conv2D(4, 5), (8, 8, 4), False),
    (keras.layers.DepthwiseConv2D(5), (8, 8, 4), False),
    (keras.layers.Embedding(10, 8), (5,), True),
    (keras.layers.Dense(8), (6,), False),
], ids=["conv1d", "conv3d", "conv2d_transpose", "conv5x5", "depthwise5x5", "embedding",
        "dense"])
def test_unstructured_layers_reach_the_target_sparsity(layer, input_shape, integer_inputs):
    wrapper = _train_and_strip(layer, input_shape, integer_inputs)
    ((weight, kind),) = wrapper.pruned_weights()
    assert kind == "unstructured"
    assert np.count_nonzero(weight.numpy()) == weight.numpy().size // 2


def test_separable_conv_gets_depthwise_patterns_and_pointwise_sparsity():
    wrapper = _train_and_strip(keras.layers.SeparableConv2D(8, 3, depth_multiplier=2),
                               (8, 8, 4))
    (depthwise, depthwise_kind), (pointwise, pointwise_kind) = wrapper.pruned_weights()
    assert (depthwise_kind, pointwise_kind) == ("pattern", "unstructured")
    described = assert_pattern_sparse(depthwise.numpy())
    assert described.removed_kernels == 0  # A removed kernel would drop a channel.
    assert np.count_nonzero(pointwise.numpy()) == pointwise.numpy().size // 2


def test_unstructured_all_prunes_every_kernel_layer_of_a_model():
    model = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, name="stem"),
        keras.layers.SeparableConv2D(8, 3, name="separable"),
        keras.layers.Conv2D(8, 5, padding="same", name="wide"),
        keras.layers.Conv2DTranspose(4, 3, name="up"),
        keras.layers.Flatten(), keras.layers.Dense(3, name="head"),
    ])
    names = sorted(w.layer.name for w in ct.pruning_wrappers(
        ct.prune_pattern(model, unstructured="all")))
    assert names == ["head", "separable", "up", "wide"]
    names = sorted(w.layer.name for w in ct.pruning_wrappers(ct.prune_pattern(model)))
    assert names == ["separable"]


def test_layer_left_dense_is_logged_with_the_reason(caplog):
    model = keras.Sequential([
        keras.Input((8, 8, 4)), keras.layers.Conv2D(8, 3, name="stem"),
        keras.layers.Conv2D(8, 3, groups=2, name="grouped"),
        keras.layers.Conv2D(8, 5, padding="same", name="wide"),
    ])
    with caplog.at_level(logging.WARNING):
        ct.prune_pattern(model)
    lines = [r.getMessage() for r in caplog.records]
    assert not any("'grouped'" in line for line in lines), lines  # Patterns per group.
    assert any("'wide'" in line and "unstructured='all'" in line for line in lines), lines
    assert not any("'stem'" in line for line in lines)
