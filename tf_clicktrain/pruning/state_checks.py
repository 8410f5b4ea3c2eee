"""Invariants of a wrapper's pruning variables, checked whenever they load.

A `.keras` file, a `.weights.h5` file or a TensorFlow checkpoint can hold any
values; these checks refuse states that training never produces (a NaN or
non-binary mask, a pattern id outside the pattern set, an unknown phase)
before they reach a forward pass, `strip_pruning` or the pattern report.
"""

import numpy as np

from tf_clicktrain import patterns
from tf_clicktrain.patterns.blocks import follows_blocks
from tf_clicktrain.patterns.blocks import matrix_shape
from tf_clicktrain.patterns.m_by_n import follows_m_by_n
from tf_clicktrain.pruning import layer_kinds
from tf_clicktrain.pruning import schedules as schedules_lib

# Far beyond any training run, far below int64 overflow in step arithmetic.
MAX_STEP = 2**40


class _Checker:
    def __init__(self, wrapper):
        self.layer_name = wrapper.layer.name

    def fail(self, variable, problem):
        raise ValueError(
            f"Layer '{self.layer_name}': pruning variable '{variable.name}' "
            f"{problem}. The saved state is corrupt or was edited."
        )

    def values(self, variable):
        value = np.asarray(variable.numpy())
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            self.fail(variable, "contains NaN or Inf")
        return value

    def binary(self, variable):
        value = self.values(variable)
        if not np.all((value == 0) | (value == 1)):
            self.fail(variable, "must hold only 0 and 1")
        return value

    def scalar_in(self, variable, low, high):
        value = self.values(variable)
        if not low <= value <= high:
            self.fail(variable, f"must be in [{low}, {high}]; it is {value}")
        return value


def _check_patterns(check, wrapper, pruned, target, selected):
    pattern_set = check.binary(pruned.pattern_set)
    ids = check.values(pruned.pattern_ids)
    num_patterns = len(pattern_set)
    if np.any(ids < patterns.selection.REMOVED) or np.any(ids >= num_patterns):
        check.fail(
            pruned.pattern_ids,
            f"must hold ids in [-1, {num_patterns - 1}] (-1: removed kernel)",
        )
    counts = pattern_set.sum(axis=1)
    if np.any((counts != 0) & (counts != wrapper.entries_per_kernel)):
        check.fail(
            pruned.pattern_set,
            f"rows must keep entries_per_kernel={wrapper.entries_per_kernel} positions",
        )
    rows = patterns.to_kernel_rows(target)
    if not selected:
        if np.any(ids != patterns.selection.REMOVED) or not np.all(rows == 1):
            check.fail(
                pruned.pattern_ids,
                "and the target mask must be untouched before the first selection",
            )
        return
    expected = np.zeros_like(rows)
    kept = ids != patterns.selection.REMOVED
    if pruned.groups > 1:
        row_groups = patterns.kernel_row_groups(target.shape, pruned.groups)
        if np.any(ids[kept] // wrapper.num_patterns != row_groups[kept]):
            check.fail(pruned.pattern_ids, "names a pattern of another group")
    if np.any(counts[ids[kept]] == 0):
        check.fail(pruned.pattern_ids, "names an empty pattern")
    expected[kept] = pattern_set[ids[kept]]
    if not np.array_equal(rows, expected):
        check.fail(
            pruned.target_mask,
            "does not match its pattern ids and pattern set",
        )


def check_wrapper_state(wrapper):
    """Raises `ValueError` naming the layer and variable of a broken state.

    Args:
        wrapper: a built `PatternPruningWrapper`.
    """
    check = _Checker(wrapper)
    check.scalar_in(wrapper.pruning_step, -1, MAX_STEP)
    phase = int(check.values(wrapper.pruning_phase))
    if phase not in schedules_lib.PHASE_NAMES:
        check.fail(
            wrapper.pruning_phase,
            f"must be one of {sorted(schedules_lib.PHASE_NAMES)} "
            f"({', '.join(schedules_lib.PHASE_NAMES.values())}); it is {phase}",
        )
    selected = int(check.scalar_in(wrapper.selection_count, 0, MAX_STEP)) > 0
    if phase != schedules_lib.DENSE and not selected:
        check.fail(
            wrapper.selection_count,
            f"is 0 but the phase is {schedules_lib.PHASE_NAMES[phase]}",
        )
    penalty = check.values(wrapper.penalty_weight)
    if penalty < 0:
        check.fail(wrapper.penalty_weight, f"must be >= 0; it is {penalty}")
    if wrapper.soft_keep is not None:
        check.scalar_in(wrapper.soft_keep, 0.0, 1.0)
    for pruned in wrapper.pruned:
        mask = check.binary(pruned.mask)
        target = check.binary(pruned.target_mask)
        # The importance accumulator is checked where it is used: selection
        # raises a clear error on NaN or Inf (diverged gradients included).
        if pruned.kind == layer_kinds.PATTERN:
            _check_patterns(check, wrapper, pruned, target, selected)
        elif not selected and not np.all(target == 1):
            check.fail(pruned.target_mask, "must be all ones before the first selection")
        elif selected and wrapper.sparsity_m_by_n is not None and not follows_m_by_n(
            target, *wrapper.config.m_by_n_kept
        ):
            check.fail(
                pruned.target_mask,
                f"must zero {wrapper.sparsity_m_by_n[0]} of every "
                f"{wrapper.sparsity_m_by_n[1]} input-channel entries",
            )
        elif selected and wrapper.config.uses_blocks and not follows_blocks(
            target.reshape(matrix_shape(target.shape)), wrapper.block_size
        ):
            check.fail(
                pruned.target_mask,
                f"must keep or remove whole {wrapper.block_size[0]}x"
                f"{wrapper.block_size[1]} blocks (block_size)",
            )
        if phase == schedules_lib.HARD and not np.array_equal(mask, target):
            check.fail(pruned.mask, "must equal the target mask in the hard phase")
        if phase != schedules_lib.HARD and not np.all(mask == 1):
            check.fail(pruned.mask, "must be all ones before the hard phase")
