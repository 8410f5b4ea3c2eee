"""Sparsity and compression figures of wrapped or stripped models."""

import dataclasses

import keras
import numpy as np

from tf_clicktrain import patterns
from tf_clicktrain.pruning import layer_kinds
from tf_clicktrain.pruning.layer_walk import walk_layers
from tf_clicktrain.pruning.wrapper import PatternPruningWrapper


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """Figures of one layer's main weight (kernel).

    Attributes:
        name: layer name (of the wrapped layer for wrappers).
        kind: "pattern" or "unstructured" (read from a wrapper, or from the
            zeros of a plain layer), or "dense".
        num_weights: entries of the kernel.
        nonzero: non-zero entries.
        num_kernels: 3x3 kernels (0 for non-3x3 weights).
        kernels_kept: 3x3 kernels with a non-zero entry.
        patterns_in_use: distinct non-zero position sets of kept kernels.
        pattern_ids: per-kernel pattern ids of a wrapper (-1 removed), or
            None.
    """

    name: str
    kind: str
    num_weights: int
    nonzero: int
    num_kernels: int = 0
    kernels_kept: int = 0
    patterns_in_use: int = 0
    pattern_ids: object = None

    @property
    def sparsity(self):
        return 1.0 - self.nonzero / self.num_weights if self.num_weights else 0.0


def _kernel_stats(name, kind, kernel, pattern_ids=None):
    kernel = np.asarray(kernel)
    fields = dict(
        name=name, kind=kind, num_weights=int(kernel.size),
        nonzero=int(np.count_nonzero(kernel)), pattern_ids=pattern_ids,
    )
    if kernel.ndim == 4 and kernel.shape[:2] == (3, 3):
        described = patterns.describe_pattern_sparsity(kernel)
        fields.update(
            num_kernels=described.num_kernels,
            kernels_kept=described.kept_kernels,
            patterns_in_use=described.num_patterns,
        )
    return LayerStats(**fields)


def _plain_kernel_stats(layer):
    """Stats of an unwrapped layer's first prunable weight (a separable
    conv's depthwise kernel), its kind read from the weight's zeros."""
    kernel = keras.ops.convert_to_numpy(layer_kinds.prunable_weights(layer)[0])
    stats = _kernel_stats(layer.name, "dense", kernel)
    if stats.nonzero < stats.num_weights:
        kind = "pattern" if stats.num_kernels else "unstructured"
        stats = dataclasses.replace(stats, kind=kind)
    return stats


def wrapper_stats(wrapper):
    """`LayerStats` of a wrapper's first pruned weight, masks applied."""
    (weight, kind), = wrapper.pruned_weights()[:1]
    value = wrapper.masked_weight_values()[0]
    pattern_ids = None
    if kind == layer_kinds.PATTERN:
        pattern_ids = wrapper.pattern_state(0)[1]
    return _kernel_stats(wrapper.layer.name, kind, value, pattern_ids)


@dataclasses.dataclass(frozen=True)
class ModelStats:
    """Compression figures of a model.

    Attributes:
        layers: `LayerStats` of every wrapper, and of every plain layer of a
            kind that is pruned (`layer_kinds.LAYER_KINDS`: convolutions,
            separable convs by their depthwise kernel, Dense, ...).
        conv3x3_weights / conv3x3_nonzero: totals over 3x3 conv kernels.
        model_weights / model_nonzero: totals over all trainable weights.
    """

    layers: list
    conv3x3_weights: int
    conv3x3_nonzero: int
    model_weights: int
    model_nonzero: int

    @property
    def conv3x3_compression(self):
        """3x3-conv parameters / non-zeros."""
        return self.conv3x3_weights / max(self.conv3x3_nonzero, 1)

    @property
    def model_compression(self):
        """All trainable parameters / non-zeros."""
        return self.model_weights / max(self.model_nonzero, 1)

    def table(self):
        """A printable per-layer table with the totals."""
        lines = [
            f"{'layer':<28}{'kind':<14}{'weights':>10}{'nonzero':>10}"
            f"{'kernels kept':>16}{'patterns':>10}"
        ]
        for s in self.layers:
            kept = f"{s.kernels_kept}/{s.num_kernels}" if s.num_kernels else "-"
            used = str(s.patterns_in_use) if s.num_kernels else "-"
            lines.append(
                f"{s.name:<28}{s.kind:<14}{s.num_weights:>10}{s.nonzero:>10}"
                f"{kept:>16}{used:>10}"
            )
        lines.append(
            f"3x3 conv compression {self.conv3x3_compression:.2f}x "
            f"({self.conv3x3_weights} -> {self.conv3x3_nonzero}); whole model "
            f"{self.model_compression:.2f}x ({self.model_weights} -> {self.model_nonzero})"
        )
        return "\n".join(lines)


def _is_prunable(layer):
    kind = layer_kinds.kind_of(layer)
    return kind is not None and kind.pruning is not layer_kinds.DENSE


def model_stats(model):
    """Per-layer and total compression of a wrapped or stripped model.

    Args:
        model: a Sequential or Functional Keras model.

    Returns:
        A `ModelStats`; wrapped layers are counted with their masks applied.

    Example:
    ```python
    print(ct.model_stats(ct.strip_pruning(model)).table())
    ```
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"model_stats takes a Keras model. Received: model={model!r}")
    layer_stats = []
    model_weights = model_nonzero = 0
    for layer in walk_layers(model):
        masked = {}
        inner = layer
        if isinstance(layer, PatternPruningWrapper):
            inner = layer.layer
            masked = {
                id(weight): value
                for (weight, _), value in zip(
                    layer.pruned_weights(), layer.masked_weight_values()
                )
            }
            layer_stats.append(wrapper_stats(layer))
        elif layer.built and _is_prunable(layer):
            layer_stats.append(_plain_kernel_stats(layer))
        for variable in inner.trainable_weights:
            value = masked.get(id(variable))
            if value is None:
                value = variable.numpy()
            model_weights += value.size
            model_nonzero += int(np.count_nonzero(value))
    conv = [s for s in layer_stats if s.num_kernels]
    return ModelStats(
        layers=layer_stats,
        conv3x3_weights=sum(s.num_weights for s in conv),
        conv3x3_nonzero=sum(s.nonzero for s in conv),
        model_weights=model_weights,
        model_nonzero=model_nonzero,
    )
