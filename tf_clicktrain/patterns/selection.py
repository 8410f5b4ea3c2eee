"""Dynamic pattern generation and selection from weight importance.

ClickTrain's selection, per layer:
1. connectivity: remove the kernels with the lowest summed importance;
2. generation: for every kept kernel find the candidate pattern that captures
   most of its importance, count these best fits weighted by the importance
   they capture, and keep the K most counted candidates as the layer's
   pattern set (or use a fixed library instead);
3. assignment: give every kept kernel the pattern of the set that captures
   most of its importance.
"""

import dataclasses

import numpy as np

from tf_clicktrain.patterns.connectivity import kernels_to_keep

REMOVED = -1


@dataclasses.dataclass(frozen=True)
class PatternSelection:
    """The outcome of selection for one layer.

    Attributes:
        pattern_set: float32 ``(K, 9)`` 0/1 patterns of the layer.
        pattern_ids: int32 ``(num_kernels,)``, the index into ``pattern_set``
            of each kernel, or ``REMOVED`` (-1) for removed kernels.
        mask_rows: float32 ``(num_kernels, 9)`` 0/1 mask implied by the two.
    """

    pattern_set: np.ndarray
    pattern_ids: np.ndarray
    mask_rows: np.ndarray


def _check_importance(importance_rows):
    importance_rows = np.asarray(importance_rows, np.float64)
    if importance_rows.ndim != 2 or importance_rows.shape[1] != 9:
        raise ValueError(
            "Expected importance of shape (num_kernels, 9). "
            f"Received: shape={importance_rows.shape}"
        )
    if not np.all(np.isfinite(importance_rows)):
        raise ValueError(
            "Importance contains NaN or Inf values; the weights or gradients "
            "of this layer are not finite, so no pattern can be selected."
        )
    if np.any(importance_rows < 0):
        raise ValueError("Importance must be non-negative.")
    return importance_rows


def select_pattern_set(importance_rows, candidates, num_patterns):
    """Generates a layer's pattern set from its kernels' importance.

    Args:
        importance_rows: ``(num_kernels, 9)`` non-negative importance of the
            kernels that take part (usually the kept ones).
        candidates: ``(num_candidates, 9)`` 0/1 candidate patterns.
        num_patterns: K, the size of the set, at most ``num_candidates``.

    Returns:
        float32 ``(K, 9)``: the K candidates that are the best fit of the most
        importance. Candidates nobody prefers fill remaining places by how
        often they are the best fit, then by candidate order.
    """
    importance_rows = _check_importance(importance_rows)
    candidates = np.asarray(candidates, np.float32)
    if not 1 <= num_patterns <= len(candidates):
        raise ValueError(
            f"num_patterns must be between 1 and the number of candidate "
            f"patterns ({len(candidates)}). Received: num_patterns={num_patterns}"
        )
    fit = importance_rows @ candidates.T.astype(np.float64)
    best = np.argmax(fit, axis=1)
    best_fit = fit[np.arange(len(best)), best]
    weighted = np.bincount(best, weights=best_fit, minlength=len(candidates))
    counts = np.bincount(best, minlength=len(candidates))
    # Sort by weighted count, then plain count, then candidate order.
    order = np.lexsort((np.arange(len(candidates)), -counts, -weighted))
    return candidates[order[:num_patterns]].copy()


def assign_patterns(importance_rows, pattern_set):
    """Gives every kernel the pattern of the set capturing most importance.

    Args:
        importance_rows: ``(num_kernels, 9)`` non-negative importance.
        pattern_set: ``(K, 9)`` 0/1 patterns.

    Returns:
        int32 ``(num_kernels,)`` pattern indices (ties go to the lower index).
    """
    importance_rows = _check_importance(importance_rows)
    fit = importance_rows @ np.asarray(pattern_set, np.float64).T
    return np.argmax(fit, axis=1).astype(np.int32)


def select_patterns_and_kernels(
    importance_rows,
    num_patterns,
    connectivity_sparsity,
    candidates=None,
    pattern_library=None,
):
    """Runs connectivity pruning, pattern generation and assignment.

    Args:
        importance_rows: ``(num_kernels, 9)`` non-negative importance.
        num_patterns: K, the size of the generated pattern set.
        connectivity_sparsity: fraction in [0, 1) of kernels to remove.
        candidates: ``(M, 9)`` candidate patterns to generate the set from.
        pattern_library: a fixed ``(K, 9)`` pattern set; when given, no set
            is generated and ``candidates``/``num_patterns`` are ignored.

    Returns:
        A `PatternSelection`.
    """
    importance_rows = _check_importance(importance_rows)
    keep = kernels_to_keep(importance_rows.sum(axis=1), connectivity_sparsity)
    if pattern_library is not None:
        pattern_set = np.asarray(pattern_library, np.float32)
    else:
        if candidates is None:
            raise ValueError("Pass candidates or a pattern_library.")
        kept_rows = importance_rows[keep] if keep.any() else importance_rows
        pattern_set = select_pattern_set(kept_rows, candidates, num_patterns)
    pattern_ids = assign_patterns(importance_rows, pattern_set)
    pattern_ids[~keep] = REMOVED
    mask_rows = pattern_set[np.maximum(pattern_ids, 0)] * keep[:, None]
    return PatternSelection(
        pattern_set=pattern_set.astype(np.float32),
        pattern_ids=pattern_ids,
        mask_rows=mask_rows.astype(np.float32),
    )


def select_patterns_per_group(
    importance_rows,
    row_groups,
    num_patterns,
    connectivity_sparsity,
    candidates=None,
    pattern_library=None,
):
    """`select_patterns_and_kernels` run on each group of a grouped conv.

    Every group is pruned as the independent convolution it is: it loses
    the same ``connectivity_sparsity`` fraction of its own kernels and gets
    its own ``num_patterns`` patterns (or a copy of ``pattern_library``).

    Args:
        importance_rows: ``(num_kernels, 9)`` non-negative importance.
        row_groups: ``(num_kernels,)`` group index of each row, 0..G-1
            (`kernels.kernel_row_groups`).
        num_patterns, connectivity_sparsity, candidates, pattern_library:
            as for `select_patterns_and_kernels`, per group.

    Returns:
        A `PatternSelection` whose ``pattern_set`` stacks the G groups'
        sets, ``(G * K, 9)``: group ``g``'s kernels use ids in
        ``[g * K, (g + 1) * K)``.
    """
    importance_rows = _check_importance(importance_rows)
    row_groups = np.asarray(row_groups)
    num_groups = int(row_groups.max()) + 1
    size = len(pattern_library) if pattern_library is not None else num_patterns
    pattern_set = np.zeros((num_groups * size, 9), np.float32)
    pattern_ids = np.full(len(importance_rows), REMOVED, np.int32)
    mask_rows = np.zeros(importance_rows.shape, np.float32)
    for group in range(num_groups):
        rows = np.flatnonzero(row_groups == group)
        selection = select_patterns_and_kernels(
            importance_rows[rows], num_patterns, connectivity_sparsity,
            candidates=candidates, pattern_library=pattern_library,
        )
        pattern_set[group * size:(group + 1) * size] = selection.pattern_set
        kept = selection.pattern_ids != REMOVED
        pattern_ids[rows[kept]] = selection.pattern_ids[kept] + group * size
        mask_rows[rows] = selection.mask_rows
    return PatternSelection(pattern_set=pattern_set, pattern_ids=pattern_ids, mask_rows=mask_rows)


def select_patterns_per_filter_group(
    importance_rows,
    row_groups,
    filter_group_rows,
    num_patterns,
    connectivity_sparsity,
    candidates=None,
    pattern_library=None,
):
    """`select_patterns_per_group` with filters pruned in groups.

    The rows that share a pooled kernel (one input channel of a run of
    consecutive filters, `kernels.filter_group_rows`) are kept or removed
    together and get one pattern, so a kernel that runs the group's filters
    together can load each input once for all of them. Selection runs on
    the pooled kernels, whose importance is the sum of their rows': the
    ``connectivity_sparsity`` fraction counts pooled kernels, and the
    pattern set is generated from them.

    Args:
        importance_rows: ``(num_kernels, 9)`` non-negative importance.
        row_groups: ``(num_kernels,)`` conv group of each row
            (`kernels.kernel_row_groups`).
        filter_group_rows: ``(num_kernels,)`` pooled kernel of each row,
            ``0..P-1`` (`kernels.filter_group_rows`); rows of one pooled
            kernel must be in one conv group.
        num_patterns, connectivity_sparsity, candidates, pattern_library:
            as for `select_patterns_and_kernels`, per conv group.

    Returns:
        A `PatternSelection` over all ``num_kernels`` rows, laid out as
        `select_patterns_per_group`'s.
    """
    importance_rows = _check_importance(importance_rows)
    row_groups = np.asarray(row_groups)
    filter_group_rows = np.asarray(filter_group_rows)
    num_pooled = int(filter_group_rows.max()) + 1
    pooled = np.zeros((num_pooled, 9), np.float64)
    np.add.at(pooled, filter_group_rows, importance_rows)
    pooled_groups = np.zeros(num_pooled, row_groups.dtype)
    pooled_groups[filter_group_rows] = row_groups
    selection = select_patterns_per_group(
        pooled, pooled_groups, num_patterns, connectivity_sparsity,
        candidates=candidates, pattern_library=pattern_library,
    )
    return PatternSelection(
        pattern_set=selection.pattern_set,
        pattern_ids=selection.pattern_ids[filter_group_rows],
        mask_rows=selection.mask_rows[filter_group_rows],
    )
