"""Which layers are pruned, and how: the policy from layer to weights."""

import logging

import keras

from tf_clicktrain.pruning.prunable_layer import is_prunable_layer

logger = logging.getLogger(__name__)

# Layers whose 3x3 kernels get patterns (Conv2DTranspose is not a Conv2D).
_PATTERN_LAYERS = (
    keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
)

# Layers pruned unstructured (tfmot's magnitude pruning) when not patterned.
_UNSTRUCTURED_LAYERS = (
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose, keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D, keras.layers.Embedding,
)

# Layers with weight matrices or kernels: a user pruning a model expects
# these to be pruned, so leaving one dense is logged with the reason.
_WEIGHT_LAYERS = (
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose, keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D, keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D, keras.layers.Dense, keras.layers.EinsumDense,
    keras.layers.Embedding, keras.layers.RNN, keras.layers.MultiHeadAttention,
)

PATTERN = "pattern"
UNSTRUCTURED = "unstructured"

UNSTRUCTURED_POLICIES = ("none", "pointwise", "all")


def validate_unstructured_policy(unstructured):
    if unstructured not in UNSTRUCTURED_POLICIES:
        raise ValueError(
            f"unstructured must be one of {UNSTRUCTURED_POLICIES}. "
            f"Received: unstructured={unstructured!r}"
        )


def _kernel_size(layer):
    return tuple(getattr(layer, "kernel_size", ()))


def is_conv(layer):
    """True for the convolutions whose first layer the paper leaves dense."""
    return isinstance(layer, _PATTERN_LAYERS)


def pruning_kind(layer, unstructured="pointwise", explicit=False):
    """How a built-in or protocol layer is pruned.

    Args:
        layer: a Keras layer.
        unstructured: which layers without 3x3 patterns get unstructured
            magnitude pruning when met in a model: "none", "pointwise" (1x1
            Conv2D) or "all" (also Dense, Embedding, other kernel sizes,
            Conv1D/Conv3D and transposed convolutions).
        explicit: the user asked for this very layer; it is then pruned
            whatever ``unstructured`` says.

    Returns:
        `PATTERN`, `UNSTRUCTURED`, or None for layers left alone (a layer
        with weights left dense for another reason than the policy is
        logged, naming it and why).

    Raises:
        ValueError: if ``explicit`` and the layer cannot be pruned.
    """
    if is_prunable_layer(layer):
        return PATTERN  # The wrapper decides per weight, by shape.
    if isinstance(layer, _PATTERN_LAYERS) and _kernel_size(layer) == (3, 3):
        if getattr(layer, "groups", 1) == 1:
            return PATTERN
        reason = f"it has groups={layer.groups}; only groups=1 is supported"
    elif isinstance(layer, keras.layers.Conv2D) and _kernel_size(layer) == (1, 1):
        if getattr(layer, "groups", 1) != 1:
            reason = f"it has groups={layer.groups}; only groups=1 is supported"
        elif explicit or unstructured in ("pointwise", "all"):
            return UNSTRUCTURED
        else:
            return None
    elif isinstance(layer, keras.layers.Dense):
        if explicit or unstructured == "all":
            return UNSTRUCTURED
        return None
    elif isinstance(layer, _UNSTRUCTURED_LAYERS):
        if getattr(layer, "groups", 1) != 1:
            reason = f"it has groups={layer.groups}; only groups=1 is supported"
        elif explicit or unstructured == "all":
            return UNSTRUCTURED
        else:
            reason = (
                f"its kernel_size is {_kernel_size(layer)}; patterns need a 3x3 "
                "2-D kernel, and unstructured pruning of it is enabled by "
                "unstructured='all'"
            )
    else:
        reason = (
            "tf_clicktrain prunes convolutions, Dense and Embedding layers, and "
            "layers implementing tf_clicktrain.PrunableLayer "
            "(get_prunable_weights)"
        )
    if explicit:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) cannot be pruned: "
            f"{reason}."
        )
    if isinstance(layer, _WEIGHT_LAYERS):
        logger.warning(
            "prune_pattern: layer '%s' (%s) is left dense: %s.",
            layer.name, type(layer).__name__, reason,
        )
    return None


def prunable_weights(layer):
    """The variables of a built layer that the wrapper prunes."""
    if is_prunable_layer(layer):
        weights = list(layer.get_prunable_weights())
        if not weights:
            raise ValueError(
                f"Layer '{layer.name}' returned no weights from "
                "get_prunable_weights()."
            )
        for weight in weights:
            if not isinstance(weight, keras.Variable):
                raise ValueError(
                    f"Layer '{layer.name}': get_prunable_weights() must return "
                    f"Keras variables. Received: {weight!r}"
                )
        return weights
    if isinstance(layer, keras.layers.SeparableConv2D):
        return [layer.depthwise_kernel, layer.pointwise_kernel]
    if isinstance(layer, keras.layers.Embedding):
        return [layer.embeddings]
    return [layer.kernel]


def keeps_every_kernel(layer, weight):
    """True for depthwise 3x3 kernels: removing one would remove a channel."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return True
    return isinstance(layer, keras.layers.SeparableConv2D) and weight is layer.depthwise_kernel


def weight_kind(layer, weight):
    """`PATTERN` for the ``(3, 3, a, b)`` kernels of 2-D convolutions and
    `PrunableLayer` weights, else `UNSTRUCTURED` (transposed convolutions'
    kernels included)."""
    shape = tuple(weight.shape)
    pattern_layer = is_prunable_layer(layer) or isinstance(layer, _PATTERN_LAYERS)
    if pattern_layer and len(shape) == 4 and shape[:2] == (3, 3):
        return PATTERN
    return UNSTRUCTURED
