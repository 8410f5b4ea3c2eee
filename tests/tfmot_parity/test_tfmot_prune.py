"""tfmot's prune_test.py, ported to `prune_pattern` / `strip_pruning`.

Differences, each asserted by the test of the same name:
- Layers with nothing to prune (Dropout) are left unwrapped in a model and
  refused when asked for directly; tfmot wraps them in a wrapper that prunes
  nothing.
- Dense layers of a model are pruned with ``unstructured="all"``; tfmot
  prunes them by default.
- Unsupported layers (ConvLSTM2D) in a model are left dense with a log line;
  tfmot refuses the whole model. Asked for directly, both raise.
- Subclasses of built-in layers are prunable as their base class; tfmot's
  exact-class registry refuses them.
- An already wrapped layer is kept with its pruning state, as a copy (the
  input model is never shared with the result); tfmot reuses the object.
- No `prune_scope` is needed to load (the classes are registered); it is
  still there for tfmot code.

Not applicable: testPruneScope_NeededForTF1SavedModel (TF1 API);
testPruneScope_NotNeededForTFCheckpoint uses the TF checkpoint format of
``save_weights``, which Keras 3 removed: `tf.train.Checkpoint` is tested
instead.
"""

import json
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_clicktrain as ct

layers = keras.layers
PARAMS = {"pruning_schedule": ct.ConstantSparsity(0.5, 0), "unstructured": "all"}


class TestSubclassedModel(keras.Model):
    def __init__(self):
        super().__init__(name="test_model")
        self.layer1 = layers.Dense(10, activation="relu")

    def call(self, inputs):
        return self.layer1(inputs)


class CustomPrunableLayer(layers.Dense, ct.PrunableLayer):
    def get_prunable_weights(self):
        return [self.kernel]


class CustomNonPrunableLayer(layers.Dense):
    pass


def build_simple_dense_model():
    return keras.Sequential([
        keras.Input((10,)),
        layers.Dense(8, activation="relu"),
        layers.Dense(5, activation="softmax"),
    ])


def _count_pruned_layers(model):
    return len(ct.pruning_wrappers(model))


def _validate_pruned_layer(original_layer, wrapped_layer):
    assert isinstance(wrapped_layer, ct.PatternPruningWrapper)
    assert wrapped_layer.layer is original_layer
    assert wrapped_layer.pruning_schedule is PARAMS["pruning_schedule"]


def _prune_layer(layer):
    return ct.prune_pattern(layer, pruning_schedule=PARAMS["pruning_schedule"])


def test_prune_keras_prunable_layer():
    layer = layers.Dense(10)
    wrapped = _prune_layer(layer)
    keras.Sequential([keras.Input((10,)), wrapped])
    _validate_pruned_layer(layer, wrapped)


def test_prune_keras_non_prunable_layer():
    with pytest.raises(ValueError, match="Dropout"):
        _prune_layer(layers.Dropout(0.4))


def test_prune_keras_unsupported_layer():
    with pytest.raises(ValueError, match="ConvLSTM2D"):
        _prune_layer(layers.ConvLSTM2D(2, (5, 5)))


def test_prune_custom_prunable_layer():
    layer = CustomPrunableLayer(10)
    wrapped = _prune_layer(layer)
    keras.Sequential([keras.Input((10,)), wrapped])
    _validate_pruned_layer(layer, wrapped)
    assert wrapped.layer.get_prunable_weights() == [wrapped.layer.kernel]


def test_prune_custom_non_prunable_layer():
    # A subclass of Dense is pruned as a Dense.
    assert isinstance(_prune_layer(CustomNonPrunableLayer(10)), ct.PatternPruningWrapper)


def test_prune_model_valid_layers_successful():
    model = keras.Sequential([
        keras.Input((10,)), layers.Dense(10), layers.Dropout(0.4), CustomPrunableLayer(10),
    ])
    pruned = ct.prune_pattern(model, **PARAMS)
    assert len(pruned.layers) == len(model.layers)
    assert [type(layer).__name__ for layer in pruned.layers] == [
        "PatternPruningWrapper", "Dropout", "PatternPruningWrapper",
    ]


def test_prune_model_unsupported_keras_layer_is_left_dense(caplog):
    model = keras.Sequential([
        keras.Input((4, 8, 8, 1)), layers.ConvLSTM2D(2, (3, 3), name="lstm"),
        layers.Flatten(), layers.Dense(10, name="dense"),
    ])
    with caplog.at_level(logging.INFO):
        pruned = ct.prune_pattern(model, **PARAMS)
    assert [w.layer.name for w in ct.pruning_wrappers(pruned)] == ["dense"]
    assert "lstm" in caplog.text


def test_prune_model_does_not_wrap_already_wrapped_layer():
    inner = ct.prune_pattern(layers.Dense(10, name="inner"), num_patterns=2,
                             pruning_schedule=PARAMS["pruning_schedule"])
    model = keras.Sequential([keras.Input((10,)), layers.Dense(10, name="outer"), inner])
    pruned = ct.prune_pattern(model, **PARAMS)
    assert len(pruned.layers) == len(model.layers)
    assert pruned.layers[0].layer.name == "outer"
    kept = pruned.layers[1]
    assert isinstance(kept.layer, layers.Dense) and kept.num_patterns == 2
    assert kept.layer.name == "inner"


def test_prune_valid_layers_list_successful():
    model_layers = [layers.Dense(10), CustomPrunableLayer(10)]
    pruned_layers = _prune_layer(model_layers)
    assert len(pruned_layers) == len(model_layers)
    for layer, pruned in zip(model_layers, pruned_layers):
        _validate_pruned_layer(layer, pruned)
    with pytest.raises(ValueError, match="Dropout"):
        _prune_layer(model_layers + [layers.Dropout(0.4)])


def test_prune_inference_works_pruning_step_callback_not_required():
    model = ct.prune_pattern(keras.Sequential([
        keras.Input((100,)), layers.Dense(10, activation="relu"),
        layers.Dense(2, activation="sigmoid"),
    ]), **PARAMS)
    model.compile(loss=keras.losses.categorical_crossentropy,
                  optimizer=keras.optimizers.SGD(), metrics=["accuracy"])
    rng = np.random.default_rng(0)
    model.predict(rng.random((1000, 100)), verbose=0)
    model.evaluate(rng.random((1000, 100)),
                   keras.utils.to_categorical(rng.integers(0, 2, (1000, 1))), verbose=0)


def test_prune_sequential_model():
    model = keras.Sequential([layers.Dense(10), layers.Dense(10)])  # No InputLayer.
    assert _count_pruned_layers(ct.prune_pattern(model, **PARAMS)) == 2
    model = keras.Sequential([keras.Input((10,)), layers.Dense(10), layers.Dense(10)])
    assert _count_pruned_layers(ct.prune_pattern(model, **PARAMS)) == 2


def test_prune_sequential_model_preserves_built_state():
    for model, built in (
        (keras.Sequential([layers.Dense(10), layers.Dense(10)]), False),
        (keras.Sequential([keras.Input((10,)), layers.Dense(10), layers.Dense(10)]), True),
    ):
        assert model.built == built
        pruned = ct.prune_pattern(model, **PARAMS)
        assert model.built == built
        with ct.prune_scope():
            loaded = keras.models.model_from_json(pruned.to_json())
        assert loaded.built == built


def _two_input_model():
    i1 = keras.Input(shape=(10,))
    i2 = keras.Input(shape=(10,))
    x1 = layers.Dense(10)(i1)
    x2 = layers.Dense(10)(i2)
    return keras.Model(inputs=[i1, i2], outputs=layers.Add()([x1, x2]))


def test_prune_functional_model():
    # tfmot counts 3: it also wraps Add, which has nothing to prune.
    assert _count_pruned_layers(ct.prune_pattern(_two_input_model(), **PARAMS)) == 2


def test_prune_functional_model_with_layer_reused():
    inp = keras.Input(shape=(10,))
    dense_layer = layers.Dense(10)
    x = dense_layer(dense_layer(inp))
    model = keras.Model(inputs=[inp], outputs=[x])
    assert _count_pruned_layers(ct.prune_pattern(model, **PARAMS)) == 1


def test_prune_functional_model_preserves_built_state():
    model = _two_input_model()
    pruned = ct.prune_pattern(model, **PARAMS)
    assert model.built
    with ct.prune_scope():
        loaded = keras.models.model_from_json(pruned.to_json())
    assert loaded.built


def test_prune_model_recursively():
    internal = keras.Sequential([keras.Input((10,)), layers.Dense(10)])
    original = keras.Sequential([keras.Input((10,)), internal, layers.Dense(10)])
    assert _count_pruned_layers(ct.prune_pattern(original, **PARAMS)) == 2


def test_prune_subclass_model():
    with pytest.raises(ValueError, match="subclassed"):
        ct.prune_pattern(TestSubclassedModel(), **PARAMS)


def test_prune_misc_object():
    with pytest.raises(ValueError, match="object"):
        ct.prune_pattern(object(), **PARAMS)


def _layer_configs(model):
    # Keras' clone renames Input layers; every other layer keeps its config.
    return [
        json.dumps(layer.get_config(), sort_keys=True)
        for layer in model.layers
        if not isinstance(layer, layers.InputLayer)
    ]


def test_strip_pruning_sequential_model():
    model = keras.Sequential([keras.Input((10,)), layers.Dense(10), layers.Dense(10)])
    stripped = ct.strip_pruning(ct.prune_pattern(model, **PARAMS))
    assert _count_pruned_layers(stripped) == 0
    assert _layer_configs(stripped) == _layer_configs(model)


def test_strip_pruning_functional_model():
    model = _two_input_model()
    stripped = ct.strip_pruning(ct.prune_pattern(model, **PARAMS))
    assert _count_pruned_layers(stripped) == 0
    assert _layer_configs(stripped) == _layer_configs(model)


def test_prune_scope_not_needed_for_keras_model(tmp_path):
    pruned = ct.prune_pattern(build_simple_dense_model(), **PARAMS)
    path = str(tmp_path / "model.keras")
    pruned.save(path)
    assert _count_pruned_layers(keras.saving.load_model(path)) == 2
    with ct.prune_scope():
        assert _count_pruned_layers(keras.saving.load_model(path)) == 2


def test_prune_scope_not_needed_for_keras_checkpoint(tmp_path):
    pruned = ct.prune_pattern(build_simple_dense_model(), **PARAMS)
    path = str(tmp_path / "w.weights.h5")
    pruned.save_weights(path)
    ct.prune_pattern(build_simple_dense_model(), **PARAMS).load_weights(path)


def test_prune_scope_not_needed_for_tf_checkpoint(tmp_path):
    pruned = ct.prune_pattern(build_simple_dense_model(), **PARAMS)
    path = tf.train.Checkpoint(model=pruned).save(str(tmp_path / "ckpt"))
    same = ct.prune_pattern(build_simple_dense_model(), **PARAMS)
    tf.train.Checkpoint(model=same).restore(path).assert_existing_objects_matched()


def test_prune_scope_not_needed_for_tf2_saved_model(tmp_path):
    pruned = ct.prune_pattern(build_simple_dense_model(), **PARAMS)
    tf.saved_model.save(pruned, str(tmp_path / "saved"))
    tf.saved_model.load(str(tmp_path / "saved"))
