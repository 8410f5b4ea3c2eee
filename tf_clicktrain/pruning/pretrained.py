"""Loading dense (pretrained) weights into an already wrapped model."""

import keras

from tf_clicktrain.pruning.layer_walk import walk_layers
from tf_clicktrain.pruning.prune import pruning_wrappers
from tf_clicktrain.pruning.prune import strip_pruning


def _layers_by_name(model):
    return {layer.name: layer for layer in walk_layers(model)}


def load_pretrained_weights(pruned_model, source):
    """Copies a dense model's weights into a model wrapped for pruning.

    Weights can be loaded before wrapping (``prune_pattern`` keeps them);
    this is the way after wrapping, where the wrapped model's own
    ``load_weights`` expects a checkpoint of the wrapped model.

    Args:
        pruned_model: a Sequential/Functional model from ``prune_pattern``.
        source: a dense Keras model with the same layer names, or the path of
            its ``.weights.h5`` or ``.keras`` file.

    Returns:
        ``pruned_model``, with every layer's weights taken from ``source``
        (pruning state untouched; layers already in the hard phase keep their
        masked entries at zero).

    Raises:
        ValueError: if a layer of the pruned model is missing from the source
            or has weights of another shape.

    Example:
    ```python
    pruned = ct.prune_pattern(build_model(), schedule=schedule)
    ct.load_pretrained_weights(pruned, "dense.weights.h5")
    ```
    """
    if isinstance(source, str):
        dense = strip_pruning(pruned_model)
        if source.endswith(".keras"):
            dense = keras.saving.load_model(source)
        else:
            dense.load_weights(source)
        source = dense
    if not isinstance(source, keras.Model):
        raise ValueError(
            "source must be a Keras model or the path of a .weights.h5 or .keras "
            f"file. Received: source={source!r}"
        )
    source_layers = _layers_by_name(source)
    wrappers = pruning_wrappers(pruned_model)
    wrapped_ids = {id(w) for w in wrappers}
    for layer in _layers_by_name(pruned_model).values():
        target = layer.layer if id(layer) in wrapped_ids else layer
        if not target.weights:
            continue
        source_layer = source_layers.get(target.name)
        if source_layer is None:
            raise ValueError(
                f"Layer '{target.name}' of the pruned model has no counterpart "
                "in the source model."
            )
        values = source_layer.get_weights()
        expected = [tuple(w.shape) for w in target.weights]
        if [tuple(v.shape) for v in values] != expected:
            raise ValueError(
                f"Layer '{target.name}': source weights have shapes "
                f"{[tuple(v.shape) for v in values]}, expected {expected}."
            )
        target.set_weights(values)
    for wrapper in wrappers:
        wrapper.reapply_masks()
    return pruned_model
