"""prune_pattern on layers, lists, Sequential, Functional, nested models."""

import logging

import keras
import numpy as np
import pytest

import tf_clicktrain as ct
from tests.conftest import random_data
from tests.conftest import small_cnn


def _wrapped_names(model):
    return sorted(w.layer.name for w in ct.pruning_wrappers(model))


def test_sequential_wraps_eligible_layers_and_skips_the_first_conv():
    pruned = ct.prune_pattern(small_cnn())
    assert _wrapped_names(pruned) == ["conv1", "conv2", "pointwise"]
    assert isinstance(pruned, keras.Sequential)


def test_unstructured_policy_controls_pointwise_and_dense():
    assert _wrapped_names(ct.prune_pattern(small_cnn(), unstructured="none")) == ["conv1", "conv2"]
    assert "classifier" in _wrapped_names(ct.prune_pattern(small_cnn(), unstructured="all"))


def test_skip_layers_and_first_conv_option():
    names = _wrapped_names(
        ct.prune_pattern(small_cnn(), skip_first_conv=False, skip_layers=["conv2"])
    )
    assert names == ["conv0", "conv1", "pointwise"]


def test_input_model_is_left_untouched_and_weights_are_kept():
    model = small_cnn()
    x, _ = random_data(8)
    before = model.predict(x, verbose=0)
    pruned = ct.prune_pattern(model)
    assert not ct.pruning_wrappers(model)
    # Mask is all ones before pruning starts: same function as the original.
    np.testing.assert_allclose(pruned.predict(x, verbose=0), before, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(x, verbose=0), before)


def test_functional_with_nested_sequential_and_residual():
    inputs = keras.Input((10, 10, 4))
    stem = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    block = keras.Sequential(
        [keras.Input((10, 10, 8)), keras.layers.Conv2D(8, 3, padding="same", name="inner")],
        name="block",
    )
    added = keras.layers.Add()([stem, block(stem)])
    outputs = keras.layers.Conv2D(6, 3, name="head")(added)
    model = keras.Model(inputs, outputs)
    pruned = ct.prune_pattern(model)
    assert _wrapped_names(pruned) == ["head", "inner"]
    x = np.random.default_rng(0).standard_normal((2, 10, 10, 4)).astype("float32")
    np.testing.assert_allclose(pruned(x), model(x), rtol=1e-5, atol=1e-5)


def test_single_layer_and_list():
    wrapper = ct.prune_pattern(keras.layers.Conv2D(4, 3))
    assert isinstance(wrapper, ct.PatternPruningWrapper)
    wrappers = ct.prune_pattern([keras.layers.Conv2D(4, 3), keras.layers.Dense(3)])
    assert [type(w) for w in wrappers] == [ct.PatternPruningWrapper] * 2


@pytest.mark.parametrize(
    "layer, match",
    [
        (keras.layers.SeparableConv1D(4, 3, name="s"), "SeparableConv1D"),
        (keras.layers.BatchNormalization(name="bn"), "PrunableLayer"),
        (keras.layers.ConvLSTM2D(4, 3, name="lstm"), "ConvLSTM2D"),
    ],
)
def test_explicitly_requested_unprunable_layer_is_an_error(layer, match):
    with pytest.raises(ValueError, match=match):
        ct.prune_pattern(layer)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_patterns=0), "num_patterns=0"),
        (dict(entries_per_kernel=10), "entries_per_kernel=10"),
        (dict(entries_per_kernel=0), "entries_per_kernel=0"),
        (dict(connectivity_sparsity=1.0), "connectivity_sparsity=1.0"),
        (dict(connectivity_sparsity=-0.1), "connectivity_sparsity"),
        (dict(unstructured_sparsity=2), "unstructured_sparsity=2"),
        (dict(importance="fisher"), "importance='fisher'"),
        (dict(unstructured="some"), "unstructured='some'"),
        (dict(num_patterns=200), "num_patterns"),
        (dict(schedule="soon"), "schedule"),
        (dict(connectivity_sparsity=[0.1]), "one value per"),
        (dict(skip_layers=["nope"]), "nope"),
    ],
)
def test_wrong_arguments_raise_before_any_state(kwargs, match):
    model = small_cnn()
    with pytest.raises(ValueError, match=match):
        ct.prune_pattern(model, **kwargs)


def test_subclassed_model_must_be_wrapped_by_hand():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)

        def call(self, x):
            return self.conv(x)

    with pytest.raises(ValueError, match="subclassed"):
        ct.prune_pattern(Net())


def test_model_without_eligible_layer_warns(caplog):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Activation("relu")])
    with caplog.at_level(logging.WARNING):
        ct.prune_pattern(model)
    assert "no layer eligible" in caplog.text


def test_already_wrapped_is_rejected():
    with pytest.raises(ValueError, match="already wrapped"):
        ct.prune_pattern(ct.prune_pattern(keras.layers.Conv2D(4, 3)))


def test_per_layer_connectivity_list_and_rule():
    pruned = ct.prune_pattern(small_cnn(), connectivity_sparsity=[0.2, 0.7])
    values = {w.layer.name: w.connectivity_sparsity for w in ct.pruning_wrappers(pruned)}
    assert values["conv1"] == 0.2 and values["conv2"] == 0.7
    ruled = ct.prune_pattern(small_cnn(), connectivity_sparsity=ct.patterns.depth_increasing(0.3, 0.6))
    values = {w.layer.name: w.connectivity_sparsity for w in ct.pruning_wrappers(ruled)}
    assert values["conv1"] == pytest.approx(0.3) and values["conv2"] == pytest.approx(0.6)


def _model_with_ops_nodes():
    inputs = keras.Input((10, 10, 4))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    gate = keras.layers.Conv2D(8, 3, padding="same", name="gate")(x)
    x = x * keras.ops.relu6(gate + 3.0) / 6.0  # MobileNetV3's hard sigmoid.
    block = keras.layers.Conv2D(8, 3, padding="same", name="block")(x)
    x = x + block  # ConvNeXt's residual.
    outputs = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def test_functional_model_with_keras_ops_nodes_wraps_trains_and_strips():
    model = _model_with_ops_nodes()
    pruned = ct.prune_pattern(model, schedule=ct.ConstantSparsity(0.5, begin_step=0))
    assert _wrapped_names(pruned) == ["block", "gate"]
    x = np.random.default_rng(0).standard_normal((4, 10, 10, 4)).astype("float32")
    np.testing.assert_allclose(pruned(x), model(x), rtol=1e-5, atol=1e-5)
    pruned.compile("sgd", "mse")
    pruned.fit(x, np.zeros((4, 3)), verbose=0, callbacks=[ct.UpdatePruningStep()])
    stripped = ct.strip_pruning(pruned)
    assert not ct.pruning_wrappers(stripped)
    np.testing.assert_allclose(stripped(x), pruned(x), rtol=1e-5, atol=1e-5)


def test_already_wrapped_layer_in_a_model_is_kept_as_it_is():
    wrapped = ct.prune_pattern(keras.layers.Conv2D(8, 3, padding="same", name="done"),
                               num_patterns=2, schedule=ct.ConstantSparsity(0.3, 0))
    model = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, padding="same", name="stem"),
        wrapped, keras.layers.Conv2D(8, 3, padding="same", name="next"),
    ])
    wrapped.pruned[0].mask.assign(np.zeros(wrapped.pruned[0].mask.shape))
    pruned = ct.prune_pattern(model, num_patterns=4)
    kept = pruned.get_layer("prune_pattern_done")
    assert kept.num_patterns == 2 and kept is not wrapped
    np.testing.assert_array_equal(kept.pruned[0].mask.numpy(), 0.0)
    assert _wrapped_names(pruned) == ["done", "next"]  # "stem" is the first conv.


def test_tfmot_argument_names_and_layer_kwargs_pass_through():
    schedule = ct.PolynomialDecay(0.1, 0.5, begin_step=0, end_step=10)
    pruned = ct.prune_pattern(small_cnn(), pruning_schedule=schedule, dtype="float32")
    assert all(w.schedule is schedule for w in ct.pruning_wrappers(pruned))
    single = ct.prune_pattern(keras.layers.Conv2D(4, 3), pruning_schedule=schedule,
                              name="custom_name")
    assert single.name == "custom_name" and single.pruning_schedule is schedule
    with pytest.raises(ValueError, match="not both"):
        ct.prune_pattern(small_cnn(), schedule=schedule, pruning_schedule=schedule)
    with pytest.raises(ValueError, match="name="):
        ct.prune_pattern(small_cnn(), name="one_name_for_all")
