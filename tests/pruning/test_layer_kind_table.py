"""The table of layer kinds: first matching row decides, subclasses match,
PrunableLayer comes first, and a new row is all a new kind needs."""

import keras
import pytest

import tf_clicktrain as ct
from tf_clicktrain.pruning import layer_kinds


@pytest.mark.parametrize("layer, unstructured, expected", [
    (keras.layers.Conv2D(4, 3), "none", layer_kinds.PATTERN),
    (keras.layers.DepthwiseConv2D(3), "none", layer_kinds.PATTERN),
    (keras.layers.SeparableConv2D(4, 3), "none", layer_kinds.PATTERN),
    (keras.layers.Conv2D(4, 1), "none", layer_kinds.DENSE),
    (keras.layers.Conv2D(4, 1), "pointwise", layer_kinds.UNSTRUCTURED),
    (keras.layers.Dense(4), "pointwise", layer_kinds.DENSE),
    (keras.layers.Dense(4), "all", layer_kinds.UNSTRUCTURED),
    (keras.layers.Embedding(10, 4), "all", layer_kinds.UNSTRUCTURED),
    (keras.layers.Conv2DTranspose(4, 3), "all", layer_kinds.UNSTRUCTURED),
    (keras.layers.Dropout(0.5), "all", layer_kinds.DENSE),
], ids=lambda value: getattr(value, "name", str(value)))
def test_each_layer_type_gets_its_kind_of_pruning(layer, unstructured, expected):
    assert layer_kinds.pruning_kind(layer, unstructured) == expected


def test_subclasses_of_built_in_layers_match_their_row():
    class MyConv(keras.layers.Conv2D):
        pass

    assert layer_kinds.pruning_kind(MyConv(4, 3)) == layer_kinds.PATTERN


def test_prunable_layer_comes_before_the_built_in_choice():
    class DenseWithChoice(keras.layers.Dense, ct.PrunableLayer):
        def get_prunable_weights(self):
            return [self.bias]

    layer = DenseWithChoice(3)
    layer.build((None, 5))
    assert layer_kinds.pruning_kind(layer, "none") == layer_kinds.PATTERN
    assert layer_kinds.prunable_weights(layer) == [layer.bias]
    assert layer_kinds.weight_kind(layer, layer.bias) == layer_kinds.UNSTRUCTURED


def test_separable_conv_prunes_both_kernels_with_their_own_kind():
    layer = keras.layers.SeparableConv2D(8, 3)
    layer.build((None, 8, 8, 4))
    depthwise, pointwise = layer_kinds.prunable_weights(layer)
    assert (depthwise, pointwise) == (layer.depthwise_kernel, layer.pointwise_kernel)
    assert layer_kinds.weight_kind(layer, depthwise) == layer_kinds.PATTERN
    assert layer_kinds.weight_kind(layer, pointwise) == layer_kinds.UNSTRUCTURED


def test_a_layer_without_a_row_cannot_be_wrapped():
    with pytest.raises(ValueError, match=r"Layer 'drop' \(Dropout\) cannot be pruned"):
        ct.PatternPruningWrapper(keras.layers.Dropout(0.5, name="drop"))


class _Bilinear(keras.layers.Layer):
    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 4))

    def call(self, x):
        return x @ self.kernel


def test_a_new_row_makes_a_new_kind_prunable(monkeypatch):
    layer = _Bilinear()
    layer.build((None, 6))
    assert layer_kinds.pruning_kind(layer, "all") == layer_kinds.DENSE
    row = layer_kinds.LayerKind((_Bilinear,), layer_kinds.UNSTRUCTURED,
                                policies=layer_kinds.ALL_ONLY)
    monkeypatch.setattr(layer_kinds, "LAYER_KINDS", [row, *layer_kinds.LAYER_KINDS])
    assert layer_kinds.kind_of(layer) is row
    assert layer_kinds.pruning_kind(layer, "all") == layer_kinds.UNSTRUCTURED
    assert layer_kinds.pruning_kind(layer, "pointwise") == layer_kinds.DENSE
    assert layer_kinds.prunable_weights(layer) == [layer.kernel]


def test_model_stats_counts_the_depthwise_kernels_of_stripped_separable_convs():
    model = keras.Sequential([
        keras.Input((8, 8, 4)), keras.layers.Conv2D(4, 3, name="stem"),
        keras.layers.SeparableConv2D(8, 3, name="separable"),
    ])
    separable = model.get_layer("separable")
    depthwise, pointwise, bias = separable.get_weights()
    depthwise[0, 0] = 0.0  # one of 9 entries of every depthwise kernel
    separable.set_weights([depthwise, pointwise, bias])
    stats = ct.model_stats(model)
    assert [layer.name for layer in stats.layers] == ["stem", "separable"]
    assert stats.layers[1].kind == "pattern"
    assert stats.conv3x3_weights == 3 * 3 * 4 * 4 + 3 * 3 * 4
    assert stats.conv3x3_nonzero == stats.conv3x3_weights - 4
