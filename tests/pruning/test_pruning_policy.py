"""pruning_policy=: PruneForLatency and user policies (tfmot's PruningPolicy)."""

import logging

import keras
import numpy as np
import pytest

import tf_clicktrain as ct
from tf_clicktrain.pruning.policy import PruneForLatency
from tf_clicktrain.pruning.policy import PruningPolicy


def _mobile_block():
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="body")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu", name="pointwise")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", groups=4, name="grouped")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


def _wrapped_names(model):
    return sorted(wrapper.layer.name for wrapper in ct.pruning_wrappers(model))


def test_prune_for_latency_prunes_only_what_the_export_speeds_up(caplog):
    with caplog.at_level(logging.WARNING):
        pruned = ct.prune_pattern(
            _mobile_block(), pruning_schedule=ct.ConstantSparsity(0.8, 0),
            unstructured="all", pruning_policy=PruneForLatency())
    assert _wrapped_names(pruned) == ["body", "pointwise"]
    lines = " ".join(record.getMessage() for record in caplog.records)
    for name in ("depthwise", "grouped", "head"):
        assert f"'{name}'" in lines and "left dense by PruneForLatency" in lines, name


def test_prune_for_latency_leaves_1x1_convs_dense_below_the_sparse_op_minimum(caplog):
    with caplog.at_level(logging.WARNING):
        pruned = ct.prune_pattern(
            _mobile_block(), pruning_schedule=ct.ConstantSparsity(0.5, 0),
            pruning_policy=PruneForLatency())
    assert _wrapped_names(pruned) == ["body"]
    assert any("'pointwise'" in r.getMessage() and "70%" in r.getMessage()
               for r in caplog.records)
    # sparsity_m_by_n=(3, 4) zeros 3 of 4 (tfmot's meaning): 75%, enough.
    pruned = ct.prune_pattern(
        _mobile_block(), pruning_schedule=ct.ConstantSparsity(0.5, 0),
        sparsity_m_by_n=(3, 4), pruning_policy=PruneForLatency())
    assert _wrapped_names(pruned) == ["body", "pointwise"]


def test_the_layers_it_prunes_become_custom_ops():
    pruned = ct.prune_pattern(
        _mobile_block(), pruning_schedule=ct.ConstantSparsity(0.8, 0),
        pruning_policy=PruneForLatency())
    pruned.compile(keras.optimizers.SGD(0.01), "mse")
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3)).astype("float32")
    pruned.fit(x, np.zeros((4, 4)), epochs=1, verbose=0, callbacks=[ct.UpdatePruningStep()])
    stripped = ct.strip_pruning(pruned)
    _, reports = ct.tflite.convert(stripped, decide_by="size", return_report=True)
    replaced = sorted(report.custom_op for report in reports if report.replaced)
    assert replaced == ["ClickTrainPatternConv2D", "ClickTrainSparseConv1x1"], reports


@pytest.mark.parametrize("model, message", [
    (keras.Sequential([keras.layers.Conv2D(4, 3)]), "needs a built model"),
    (keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)]), "no layer that the"),
    (keras.Sequential([keras.Input((8, 8, 4)), keras.layers.DepthwiseConv2D(3),
                       keras.layers.Conv2D(4, 5)]), "no layer that the"),
])
def test_prune_for_latency_refuses_an_unsuitable_model(model, message):
    with pytest.raises(ValueError, match=message):
        ct.prune_pattern(model, pruning_policy=PruneForLatency())


class OnlyNamed(PruningPolicy):
    """A user policy: prunes the layers it names."""

    def __init__(self, names):
        self.names = set(names)

    def allow_pruning(self, layer):
        return layer.name in self.names

    def ensure_model_supports_pruning(self, model):
        missing = self.names - {layer.name for layer in model.layers}
        if missing:
            raise ValueError(f"Layers not in the model: {sorted(missing)}")


def test_a_user_policy_chooses_the_layers():
    pruned = ct.prune_pattern(_mobile_block(), pruning_policy=OnlyNamed(["pointwise"]))
    assert _wrapped_names(pruned) == ["pointwise"]
    with pytest.raises(ValueError, match="not in the model"):
        ct.prune_pattern(_mobile_block(), pruning_policy=OnlyNamed(["missing"]))


def test_a_policy_needs_a_model_and_a_policy_object():
    with pytest.raises(ValueError, match="applies to a model"):
        ct.prune_pattern(keras.layers.Conv2D(4, 3), pruning_policy=PruneForLatency())
    with pytest.raises(ValueError, match="pruning_policy must be"):
        ct.prune_pattern(_mobile_block(), pruning_policy="latency")
