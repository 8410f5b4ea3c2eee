"""Unstructured (per-weight) magnitude masks, for 1x1 convs and Dense."""

import numpy as np

from tf_clicktrain.patterns.connectivity import removed_count


def magnitude_mask(importance, sparsity):
    """Keeps the highest-importance weights, removing ``sparsity`` of them.

    Args:
        importance: array of any shape, non-negative scores (e.g. ``w ** 2``).
        sparsity: fraction in [0, 1) of entries to set to zero.

    Returns:
        float32 0/1 mask with the shape of ``importance`` and exactly
        ``floor(sparsity * size)`` zeros (`removed_count`; ties broken by
        position, so the result is deterministic).
    """
    importance = np.asarray(importance, np.float64)
    flat = importance.reshape(-1)
    num_removed = removed_count(sparsity, flat.size)
    mask = np.ones(flat.size, np.float32)
    if num_removed > 0:
        order = np.argsort(flat, kind="stable")
        mask[order[:num_removed]] = 0.0
    return mask.reshape(importance.shape)
