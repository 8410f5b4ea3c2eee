"""Connectivity pruning: removing whole 3x3 kernels of a layer."""

import numpy as np


def validate_sparsity(value, name):
    """Raises `ValueError` unless ``value`` is a number in [0, 1)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not np.isfinite(value)
        or not 0.0 <= float(value) < 1.0
    ):
        raise ValueError(
            f"{name} must be a number in [0, 1). Received: {name}={value!r}"
        )


def removed_count(sparsity, size):
    """How many of ``size`` entries a ``sparsity`` fraction removes.

    ``floor(sparsity * size)``, computed so that a product that is an
    integer on paper is not rounded down by floating point:
    ``removed_count(0.29, 100)`` is 29 (``0.29 * 100`` is 28.999999999999996)
    and so is ``removed_count(0.2 + 0.09, 100)``.
    """
    return int(np.floor(round(float(sparsity) * size, 6)))


def kernels_to_keep(kernel_scores, sparsity):
    """Keeps the highest-scoring kernels, removing a ``sparsity`` fraction.

    Args:
        kernel_scores: ``(num_kernels,)`` scores, e.g. the importance summed
            over each kernel's 9 entries.
        sparsity: fraction in [0, 1) of kernels to remove;
            ``floor(sparsity * num_kernels)`` are removed (`removed_count`).

    Returns:
        bool array ``(num_kernels,)``, True for kept kernels. Ties are broken
        by position, so equal inputs give equal outputs.
    """
    validate_sparsity(sparsity, "sparsity")
    kernel_scores = np.asarray(kernel_scores, np.float64)
    num_removed = removed_count(sparsity, kernel_scores.size)
    keep = np.ones(kernel_scores.size, bool)
    if num_removed > 0:
        order = np.argsort(kernel_scores, kind="stable")
        keep[order[:num_removed]] = False
    return keep


def sparsity_for_compression(compression, entries_per_kernel=4):
    """Kernel sparsity r giving a 3x3 layer ``compression`` = params / non-zeros.

    A pattern-pruned 3x3 layer keeps ``entries_per_kernel`` of 9 weights in
    each of its ``1 - r`` kept kernels: compression = 9 / (n * (1 - r)).

    Args:
        compression: target compression, at least ``9 / entries_per_kernel``.
        entries_per_kernel: n, weights kept per kernel.

    Returns:
        r in [0, 1).

    Example:
    ```python
    sparsity_for_compression(8.0)   # 0.71875
    ```
    """
    minimum = 9.0 / entries_per_kernel
    if not isinstance(compression, (int, float)) or not minimum <= compression < float("inf"):
        raise ValueError(
            f"compression must be at least 9 / entries_per_kernel = {minimum:.3g}. "
            f"Received: compression={compression!r}"
        )
    return 1.0 - minimum / compression


def depth_increasing(first, last):
    """A per-layer connectivity rule rising linearly with depth.

    The paper's configurations remove a larger fraction of kernels in deeper
    layers (VGG-16: 35% in the first pruned layer up to 85% in the last).

    Args:
        first: sparsity of the shallowest pruned 3x3 layer, in [0, 1).
        last: sparsity of the deepest, in [0, 1).

    Returns:
        A callable ``rule(index, count) -> sparsity`` for
        ``prune_pattern(..., connectivity_sparsity=rule)``; ``index`` counts
        the pattern-pruned layers in model order from 0 to ``count - 1``.

    Example:
    ```python
    rule = depth_increasing(0.35, 0.85)
    [round(rule(i, 3), 2) for i in range(3)]   # [0.35, 0.6, 0.85]
    ```
    """
    validate_sparsity(first, "first")
    validate_sparsity(last, "last")

    def rule(index, count):
        if count <= 1:
            return float(first)
        return float(first + (last - first) * index / (count - 1))

    return rule
