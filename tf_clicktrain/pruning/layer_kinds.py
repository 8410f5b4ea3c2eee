"""Which layers are pruned, and how: the table of layer kinds.

`LAYER_KINDS` has one row per kind of layer: the Keras layer types it is
for, an optional condition on the layer, how such layers are pruned
(`PATTERN`, `UNSTRUCTURED`, or `DENSE` with the reason), under which
``unstructured`` policies `prune_pattern` prunes them when it meets them in
a model, and which of their weights are pruned. The first row that matches
a layer decides. A kind of layer is one row, e.g. the 3x3 convolutions:

```python
LayerKind((keras.layers.Conv2D, keras.layers.DepthwiseConv2D), PATTERN, when=_is_3x3),
```

A ``PATTERN`` layer gets patterns on each of its ``(3, 3, in, out)``
weights and unstructured magnitude pruning on its other weights (see
`weight_kind`), so custom layers that implement `PrunableLayer` are a row
too: they name their weights themselves.
"""

import dataclasses
import logging
from typing import Callable

import keras

from tf_clicktrain.pruning.prunable_layer import is_prunable_layer

logger = logging.getLogger(__name__)

PATTERN = "pattern"
UNSTRUCTURED = "unstructured"
DENSE = None  # Left as it is.

UNSTRUCTURED_POLICIES = ("none", "pointwise", "all")
EVERY_POLICY = UNSTRUCTURED_POLICIES
POINTWISE_OR_ALL = ("pointwise", "all")
ALL_ONLY = ("all",)

_NOT_SUPPORTED = (
    "tf_clicktrain prunes convolutions, Dense, Embedding, LSTM/GRU/SimpleRNN "
    "and MultiHeadAttention layers, and layers implementing "
    "tf_clicktrain.PrunableLayer (get_prunable_weights)"
)


def _kernel_size(layer):
    return tuple(getattr(layer, "kernel_size", ()))


def _is_3x3(layer):
    return _kernel_size(layer) == (3, 3)


def _is_1x1(layer):
    return _kernel_size(layer) == (1, 1)


def _kernel_size_reason(layer):
    return (
        f"its kernel_size is {_kernel_size(layer)}; patterns need a 3x3 2-D "
        "kernel, and unstructured pruning of it is enabled by unstructured='all'"
    )


def _embedding_reason(layer):
    return "unstructured pruning of embeddings is enabled by unstructured='all'"


def _always(layer):
    return True


def _kernel(layer):
    return [layer.kernel]


def _separable_kernels(layer):
    return [layer.depthwise_kernel, layer.pointwise_kernel]


def _embeddings(layer):
    return [layer.embeddings]


def _attention_kernels(layer):
    """The query, key, value and output projection kernels of attention."""
    return [
        dense.kernel
        for dense in (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense)
    ]


def _rnn_cells(layer):
    if isinstance(layer, keras.layers.Bidirectional):
        return _rnn_cells(layer.forward_layer) + _rnn_cells(layer.backward_layer)
    return list(getattr(layer.cell, "cells", [layer.cell]))  # StackedRNNCells: .cells


def _has_recurrent_kernels(layer):
    """An RNN (or Bidirectional RNN) of LSTM, GRU, SimpleRNN and
    `PrunableLayer` cells."""
    if isinstance(layer, keras.layers.Bidirectional):
        return isinstance(layer.forward_layer, keras.layers.RNN) and _has_recurrent_kernels(
            layer.forward_layer
        )
    return all(
        isinstance(cell, _RECURRENT_CELLS) or is_prunable_layer(cell)
        for cell in _rnn_cells(layer)
    )


def _recurrent_kernels(layer):
    """Each cell's input kernel and recurrent kernel (biases stay dense), or
    what a `PrunableLayer` cell names."""
    weights = []
    for cell in _rnn_cells(layer):
        if is_prunable_layer(cell):
            weights += _declared_weights(cell)
        else:
            weights += [cell.kernel, cell.recurrent_kernel]
    return weights


def _unstructured_all_reason(what):
    return f"unstructured pruning of {what} is enabled by unstructured='all'"


def _declared_weights(layer):
    """The weights a `PrunableLayer` names, checked."""
    weights = list(layer.get_prunable_weights())
    if not weights:
        raise ValueError(
            f"Layer '{layer.name}' returned no weights from get_prunable_weights()."
        )
    for weight in weights:
        if not isinstance(weight, keras.Variable):
            raise ValueError(
                f"Layer '{layer.name}': get_prunable_weights() must return "
                f"Keras variables. Received: {weight!r}"
            )
    return weights


@dataclasses.dataclass(frozen=True)
class LayerKind:
    """One row of the table of layer kinds.

    Attributes:
        layer_types: the Keras layer classes of the row (subclasses match).
        pruning: `PATTERN`, `UNSTRUCTURED`, or `DENSE` (left as it is).
        when: a further condition on the layer (e.g. its kernel size).
        policies: the ``unstructured`` policies under which `prune_pattern`
            prunes such a layer met in a model. A layer passed to it
            directly is pruned whatever the policy.
        reason: why such a layer is left dense: a string or a callable
            ``(layer) -> str``. For a pruned kind, why a policy outside
            ``policies`` leaves it dense; None when that is no news (the
            policy names the kind), which leaves it dense silently.
        weights: ``(layer) -> list of variables`` of a built layer: the
            weights pruned.
    """

    layer_types: tuple
    pruning: object
    when: Callable = _always
    policies: tuple = EVERY_POLICY
    reason: object = None
    weights: Callable = _kernel

    def matches(self, layer):
        return isinstance(layer, self.layer_types) and self.when(layer)

    def reason_for(self, layer):
        return self.reason(layer) if callable(self.reason) else self.reason


_CONVOLUTIONS = (
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose, keras.layers.DepthwiseConv2D,
)

# Cells whose kernel and recurrent_kernel are pruned (ConvLSTM cells and
# custom cells that are not PrunableLayer are not among them: such layers
# stay dense).
_RECURRENT_CELLS = (keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell)

# Layers with weight matrices or kernels that no row above prunes: a user
# pruning a model expects them pruned, so leaving one dense is logged.
_OTHER_WEIGHT_LAYERS = (
    keras.layers.SeparableConv1D, keras.layers.DepthwiseConv1D,
    keras.layers.EinsumDense, keras.layers.RNN, keras.layers.MultiHeadAttention,
)

LAYER_KINDS = [
    LayerKind((keras.layers.Layer,), PATTERN, when=is_prunable_layer,
              weights=_declared_weights),
    LayerKind((keras.layers.Conv2D, keras.layers.DepthwiseConv2D), PATTERN, when=_is_3x3),
    LayerKind((keras.layers.SeparableConv2D,), PATTERN, when=_is_3x3,
              weights=_separable_kernels),
    LayerKind((keras.layers.Conv2D,), UNSTRUCTURED, when=_is_1x1, policies=POINTWISE_OR_ALL),
    LayerKind((keras.layers.Dense,), UNSTRUCTURED, policies=ALL_ONLY),
    LayerKind((keras.layers.Embedding,), UNSTRUCTURED, policies=ALL_ONLY,
              reason=_embedding_reason, weights=_embeddings),
    LayerKind((keras.layers.SeparableConv2D,), UNSTRUCTURED, policies=ALL_ONLY,
              reason=_kernel_size_reason, weights=_separable_kernels),
    LayerKind(_CONVOLUTIONS, UNSTRUCTURED, policies=ALL_ONLY, reason=_kernel_size_reason),
    LayerKind((keras.layers.MultiHeadAttention,), UNSTRUCTURED, policies=ALL_ONLY,
              reason=_unstructured_all_reason("attention layers"), weights=_attention_kernels),
    LayerKind((keras.layers.RNN, keras.layers.Bidirectional), UNSTRUCTURED,
              when=_has_recurrent_kernels, policies=ALL_ONLY,
              reason=_unstructured_all_reason("recurrent layers"), weights=_recurrent_kernels),
    LayerKind(_OTHER_WEIGHT_LAYERS, DENSE, reason=_NOT_SUPPORTED),
]


def validate_unstructured_policy(unstructured):
    if unstructured not in UNSTRUCTURED_POLICIES:
        raise ValueError(
            f"unstructured must be one of {UNSTRUCTURED_POLICIES}. "
            f"Received: unstructured={unstructured!r}"
        )


def kind_of(layer):
    """The first row of `LAYER_KINDS` that matches ``layer``, or None."""
    return next((kind for kind in LAYER_KINDS if kind.matches(layer)), None)


def is_conv(layer):
    """True for the convolutions whose first layer the paper leaves dense."""
    return isinstance(
        layer,
        (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D),
    )


def pruning_kind(layer, unstructured="pointwise", explicit=False):
    """How a layer is pruned, from the table of layer kinds.

    Args:
        layer: a Keras layer.
        unstructured: which layers without 3x3 patterns get unstructured
            magnitude pruning when met in a model: "none", "pointwise" (1x1
            Conv2D) or "all" (also Dense, Embedding, other kernel sizes,
            Conv1D/Conv3D and transposed convolutions).
        explicit: the user asked for this very layer; it is then pruned
            whatever ``unstructured`` says.

    Returns:
        `PATTERN`, `UNSTRUCTURED`, or `DENSE` (None) for layers left alone.
        A layer of the table left dense for a reason is logged, naming it
        and why.

    Raises:
        ValueError: if ``explicit`` and the layer cannot be pruned.
    """
    kind = kind_of(layer)
    if kind is not None and kind.pruning is not DENSE:
        if explicit or unstructured in kind.policies:
            return kind.pruning
        reason = kind.reason_for(layer)
        if reason is None:
            return DENSE
    else:
        reason = _NOT_SUPPORTED if kind is None else kind.reason_for(layer)
    if explicit:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) cannot be pruned: {reason}."
        )
    if kind is not None:
        logger.warning(
            "prune_pattern: layer '%s' (%s) is left dense: %s.",
            layer.name, type(layer).__name__, reason,
        )
    return DENSE


def _prunable_kind(layer):
    kind = kind_of(layer)
    if kind is None or kind.pruning is DENSE:
        pruning_kind(layer, explicit=True)  # Raises, naming the layer and why.
    return kind


def prunable_weights(layer):
    """The variables of a built layer that the wrapper prunes."""
    return _prunable_kind(layer).weights(layer)


def keeps_every_kernel(layer, weight):
    """True for depthwise 3x3 kernels: removing one would remove a channel."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return True
    return isinstance(layer, keras.layers.SeparableConv2D) and weight is layer.depthwise_kernel


def weight_kind(layer, weight):
    """`PATTERN` for the ``(3, 3, a, b)`` weights of a `PATTERN` layer, else
    `UNSTRUCTURED` (a separable conv's pointwise kernel, for one)."""
    shape = tuple(weight.shape)
    if _prunable_kind(layer).pruning == PATTERN and len(shape) == 4 and shape[:2] == (3, 3):
        return PATTERN
    return UNSTRUCTURED
