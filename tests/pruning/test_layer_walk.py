"""The one layer walk: model order, nested models flattened, each layer once,
hand-wrapped layers of subclassed models and custom layers found."""

import keras

import tf_clicktrain as ct
from tf_clicktrain.pruning.layer_walk import walk_layers


def _names(layers):
    return [layer.name for layer in layers]


def test_nested_models_are_flattened_in_order_and_shared_layers_yielded_once():
    shared = keras.layers.Dense(4, name="shared")
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="inner_dense"),
                              shared], name="inner")
    inputs = keras.Input((4,), name="x")
    outputs = shared(inner(keras.layers.Dense(4, name="first")(inputs)))
    model = keras.Model(inputs, outputs)
    assert _names(walk_layers(model)) == ["x", "first", "inner_dense", "shared"]


def test_a_single_layer_or_list_walks_to_itself():
    dense = keras.layers.Dense(2, name="alone")
    conv = keras.layers.Conv2D(2, 3, name="conv")
    assert _names(walk_layers(dense)) == ["alone"]
    assert _names(walk_layers([dense, conv, dense])) == ["alone", "conv"]


class _Block(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.convs = [keras.layers.Conv2D(4, 3, padding="same", name=f"{self.name}_conv{i}")
                      for i in range(2)]
        self.head = ct.prune_pattern(keras.layers.Conv2D(4, 3, padding="same",
                                                         name=f"{self.name}_head"))

    def call(self, x):
        for conv in self.convs:
            x = conv(x)
        return self.head(x)


class _Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.blocks = {"a": _Block(name="block_a")}
        self.out = ct.prune_pattern(keras.layers.Conv2D(2, 3, name="out_conv"))

    def call(self, x):
        return self.out(self.blocks["a"](x))


def test_into_sublayers_finds_custom_layers_children_and_hand_wrapped_layers():
    net = _Net()
    net(keras.ops.zeros((1, 8, 8, 3)))
    names = _names(walk_layers(net, into_sublayers=True))
    assert names == ["block_a", "block_a_conv0", "block_a_conv1", "prune_pattern_block_a_head",
                     "prune_pattern_out_conv"]
    # Without it, only what a clone is made of: the model's own layers.
    assert _names(walk_layers(net)) == ["block_a", "prune_pattern_out_conv"]
    assert _names(ct.pruning_wrappers(net)) == ["prune_pattern_block_a_head",
                                                "prune_pattern_out_conv"]


def test_wrappers_are_yielded_whole_not_descended_into():
    model = ct.prune_pattern(keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="stem"),
        keras.layers.Conv2D(4, 3, name="body"),
    ]))
    for into_sublayers in (False, True):
        assert _names(walk_layers(model, into_sublayers=into_sublayers)) == [
            "stem", "prune_pattern_body"]
