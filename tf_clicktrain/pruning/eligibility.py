"""Which layers are pruned, and how: the policy from layer to weights."""

import logging

import keras

from tf_clicktrain.pruning.prunable_layer import is_prunable_layer

logger = logging.getLogger(__name__)

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
    return isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))


def is_depthwise(layer):
    """True for depthwise convolutions (no kernel removal by default)."""
    return isinstance(layer, keras.layers.DepthwiseConv2D)


def pruning_kind(layer, unstructured="pointwise", explicit=False):
    """How a built-in or protocol layer is pruned.

    Args:
        layer: a Keras layer.
        unstructured: which non-3x3 layers get unstructured magnitude pruning
            when met in a model: "none", "pointwise" (1x1 convs) or "all"
            (1x1 convs and Dense).
        explicit: the user asked for this very layer; 1x1 convs and Dense are
            then pruned whatever ``unstructured`` says.

    Returns:
        `PATTERN`, `UNSTRUCTURED`, or None for layers left alone.

    Raises:
        ValueError: if ``explicit`` and the layer cannot be pruned.
    """
    if is_prunable_layer(layer):
        return PATTERN  # The wrapper decides per weight, by shape.
    reason = None
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        if _kernel_size(layer) == (3, 3):
            return PATTERN
        reason = f"its kernel_size is {_kernel_size(layer)}; patterns need 3x3"
    elif isinstance(layer, keras.layers.Conv2D) and not isinstance(
        layer, keras.layers.Conv2DTranspose
    ):
        if getattr(layer, "groups", 1) != 1:
            reason = f"it has groups={layer.groups}; only groups=1 is supported"
        elif _kernel_size(layer) == (3, 3):
            return PATTERN
        elif _kernel_size(layer) == (1, 1):
            if explicit or unstructured in ("pointwise", "all"):
                return UNSTRUCTURED
            return None
        else:
            reason = (
                f"its kernel_size is {_kernel_size(layer)}; patterns need 3x3 "
                "and unstructured pruning is offered for 1x1"
            )
    elif isinstance(layer, keras.layers.Dense):
        if explicit or unstructured == "all":
            return UNSTRUCTURED
        return None
    else:
        reason = (
            "it is not a Conv2D, DepthwiseConv2D or Dense layer and does not "
            "implement tf_clicktrain.PrunableLayer (get_prunable_weights)"
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
    return [layer.kernel]


def weight_kind(weight):
    """`PATTERN` for ``(3, 3, a, b)`` weights, else `UNSTRUCTURED`."""
    shape = tuple(weight.shape)
    if len(shape) == 4 and shape[:2] == (3, 3):
        return PATTERN
    return UNSTRUCTURED
