"""M-by-N sparsity masks (2:4 and friends), with no Keras in it."""

import numpy as np


def validate_m_by_n(m_by_n, name="sparsity_m_by_n"):
    """Returns ``(m, n)`` as ints, or raises `ValueError` naming ``name``."""
    if (
        not isinstance(m_by_n, (tuple, list))
        or len(m_by_n) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in m_by_n)
        or not 1 <= m_by_n[0] < m_by_n[1]
    ):
        raise ValueError(
            f"{name} must be a pair (m, n) of integers with 1 <= m < n, e.g. "
            f"(2, 4). Received: {name}={m_by_n!r}"
        )
    return int(m_by_n[0]), int(m_by_n[1])


def m_by_n_mask(importance, m, n, axis=-2):
    """Keeps the ``m`` most important of every ``n`` consecutive entries.

    Groups run along ``axis``, the input-channel axis of Keras kernels
    (``(in, out)`` for Dense, ``(h, w, in, out)`` for convolutions), as the
    sparse tensor cores that run 2:4 sparsity expect.

    Args:
        importance: non-negative scores with the kernel's shape.
        m: entries kept per group.
        n: group length; ``importance.shape[axis]`` must be a multiple.
        axis: the axis the groups run along.

    Returns:
        float32 0/1 mask of ``importance``'s shape with exactly ``m`` ones in
        every group (ties broken by position).

    Example:
    ```python
    m_by_n_mask(np.array([[4.0], [1.0], [3.0], [2.0]]), 2, 4).ravel()
    # array([1., 0., 1., 0.], dtype=float32)
    ```
    """
    importance = np.asarray(importance, np.float64)
    if importance.ndim < 2 or importance.shape[axis] % n:
        raise ValueError(
            f"M-by-N sparsity needs a kernel whose input-channel axis is a "
            f"multiple of n={n}. Received: shape {importance.shape}"
        )
    moved = np.moveaxis(importance, axis, -1)
    groups = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // n, n))
    order = np.argsort(-groups, axis=-1, kind="stable")
    mask = np.zeros(groups.shape, np.float32)
    np.put_along_axis(mask, order[..., :m], 1.0, axis=-1)
    return np.moveaxis(mask.reshape(moved.shape), -1, axis)


def follows_m_by_n(mask, m, n, axis=-2):
    """True if every group of ``n`` entries along ``axis`` keeps ``m``."""
    mask = np.asarray(mask)
    if mask.ndim < 2 or mask.shape[axis] % n:
        return False
    moved = np.moveaxis(mask, axis, -1)
    groups = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // n, n))
    return bool(np.all(groups.sum(axis=-1) == m))
