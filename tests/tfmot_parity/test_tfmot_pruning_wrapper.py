"""tfmot's pruning_wrapper_test.py, ported to `PatternPruningWrapper`.

Differences:
- A wrapper holds one mask per pruned weight; `pruned_weights()` lists them
  (tfmot's ``pruning_vars``).
- Layers with nothing to prune (MaxPooling2D, Flatten, Dropout,
  BatchNormalization) are refused by the wrapper, naming the layer, instead
  of being wrapped to prune nothing.

Not applicable: testConv3DWeightNotPrunedWithSparsityMbyN (tfmot silently
skips the Conv3D kernel under ``sparsity_m_by_n``; here its input-channel
axis is grouped like any kernel's, or the layer is refused by name).
"""

import json

import keras
import pytest
import tensorflow as tf

import tf_clicktrain as ct

layers = keras.layers
PARAMS = {"pruning_schedule": ct.ConstantSparsity(0.5, 0)}


class CustomLayer(layers.Layer):
    """A custom layer which is not prunable."""

    def __init__(self, input_dim=16, output_dim=32, **kwargs):
        super().__init__(**kwargs)
        self.weight = self.add_weight(shape=(input_dim, output_dim),
                                      initializer="random_normal")
        self.bias = self.add_weight(shape=(output_dim,), initializer="zeros")

    def call(self, inputs):
        return tf.matmul(inputs, self.weight) + self.bias


class CustomLayerPrunable(CustomLayer):
    def get_prunable_weights(self):
        return [self.weight, self.bias]


def _mask_count(model):
    return sum(len(w.pruned_weights()) for w in ct.pruning_wrappers(model))


def _model(wrapper, input_shape):
    model = keras.Sequential([wrapper])
    model.build(input_shape)
    return model


def test_dense():
    model = _model(ct.PatternPruningWrapper(layers.Dense(10), **PARAMS), (10, 1))
    assert _mask_count(model) == 1


def test_embedding():
    model = _model(ct.PatternPruningWrapper(layers.Embedding(10, 10), **PARAMS), (10, 1))
    assert _mask_count(model) == 1


def test_conv2d():
    model = _model(ct.PatternPruningWrapper(layers.Conv2D(4, (3, 3)), **PARAMS),
                   (1, 16, 16, 4))
    assert _mask_count(model) == 1


def test_prune_model():
    prunable = [layers.Conv2D(32, 5), layers.Conv2D(64, 5), layers.Dense(1024),
                layers.Dense(10)]
    model = keras.Sequential([
        ct.PatternPruningWrapper(prunable[0], **PARAMS), layers.MaxPooling2D((2, 2), (2, 2)),
        ct.PatternPruningWrapper(prunable[1], **PARAMS), layers.MaxPooling2D((2, 2), (2, 2)),
        layers.Flatten(), ct.PatternPruningWrapper(prunable[2], **PARAMS),
        layers.Dropout(0.4), ct.PatternPruningWrapper(prunable[3], **PARAMS),
    ])
    model.build((1, 28, 28, 1))
    assert _mask_count(model) == 4
    for layer in (layers.MaxPooling2D(), layers.Flatten(), layers.Dropout(0.4)):
        with pytest.raises(ValueError, match=layer.name):
            ct.PatternPruningWrapper(layer, **PARAMS)

    config = model.get_config()
    restored = keras.Sequential.from_config(config)
    restored_config = restored.get_config()
    for layer in config["layers"] + restored_config["layers"]:
        layer.pop("build_config", None)
    assert json.dumps(config, sort_keys=True) == json.dumps(restored_config, sort_keys=True)


def test_custom_layer_non_prunable():
    layer = CustomLayer(input_dim=16, output_dim=32)
    layer(keras.Input((16,)))
    with pytest.raises(ValueError, match=layer.name):
        ct.PatternPruningWrapper(layer)


def test_custom_layer_prunable():
    layer = CustomLayerPrunable(input_dim=16, output_dim=32)
    layer(keras.Input((16,)))
    wrapper = ct.PatternPruningWrapper(layer)
    # tfmot's name is prune_low_magnitude_<layer>; ours is prune_pattern_<layer>.
    assert wrapper.name == "prune_pattern_custom_layer_prunable"


def test_collect_prunable_layers():
    model = keras.Sequential([
        keras.Input((4,)), ct.PatternPruningWrapper(layers.Dense(10), **PARAMS),
        layers.Dropout(0.5), ct.PatternPruningWrapper(layers.Dense(10), **PARAMS),
    ])
    assert len(ct.pruning_wrappers(model)) == 2
    lstm = ct.PatternPruningWrapper(
        layers.RNN(layers.LSTMCell(4, dropout=0.5, recurrent_dropout=0.5)), **PARAMS)
    model = keras.Sequential([keras.Input((3, 4)), lstm, layers.Dense(10)])
    assert ct.pruning_wrappers(model) == [lstm]


def test_prune_wrapper_allows_only_valid_pooling_type():
    layer = layers.Dense(10)
    with pytest.raises(ValueError, match="block_pooling_type"):
        ct.PatternPruningWrapper(layer, block_pooling_type="MIN")
    ct.PatternPruningWrapper(layer, block_pooling_type="AVG")
    ct.PatternPruningWrapper(layer, block_pooling_type="MAX")
