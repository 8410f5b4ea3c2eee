"""The one walk over a model's layers that every part of the library uses."""

import keras

from tf_clicktrain.pruning.wrapper import PatternPruningWrapper


def walk_layers(root, into_sublayers=False):
    """Yields the layers under ``root`` depth first, in model order, each once.

    Nested models are flattened: their layers are yielded, not the models,
    as ``keras.models.clone_model(..., recursive=True)`` rebuilds them. A
    `PatternPruningWrapper` is yielded whole; its layer is ``wrapper.layer``.

    Args:
        root: a model, a layer, or a list or tuple of them.
        into_sublayers: also yield the layers that other layers hold in
            their attributes (directly, or in lists, tuples and dicts): the
            sub-layers of a custom layer come after it, and a subclassed
            model's layers are reached, hand-wrapped ones included. Without
            it, the walk yields what a Sequential or Functional model is
            cloned from.

    Example:
    ```python
    names = [layer.name for layer in walk_layers(model)]
    ```
    """
    seen = set()

    def visit(value):
        if isinstance(value, (list, tuple)):
            for item in value:
                yield from visit(item)
            return
        if isinstance(value, dict):
            for item in value.values():
                yield from visit(item)
            return
        if not isinstance(value, keras.layers.Layer) or id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, keras.Model):
            yield from visit(value.layers)
            return
        yield value
        if into_sublayers and not isinstance(value, PatternPruningWrapper):
            held = [
                attribute for attribute in vars(value).values()
                if isinstance(attribute, (keras.layers.Layer, list, tuple, dict))
            ]
            yield from visit(held)

    yield from visit(root)
