"""Assertions shared by the pruning tests."""

import numpy as np

import tf_clicktrain as ct


def assert_pattern_sparse(kernel, entries_per_kernel=4, max_patterns=4):
    """Every kept 3x3 kernel has exactly n non-zeros in one of <= K patterns."""
    described = ct.patterns.describe_pattern_sparsity(kernel)
    assert described.entries_per_kernel in ((), (entries_per_kernel,)), described
    assert described.num_patterns <= max_patterns, described
    return described


def assert_wrapper_consistent(wrapper, entries_per_kernel=4, max_patterns=4):
    """Weights, masks, pattern set and pattern ids all agree."""
    (weight, _), = wrapper.pruned_weights()[:1]
    value = weight.numpy()
    described = assert_pattern_sparse(value, entries_per_kernel, max_patterns)
    pattern_set, pattern_ids = wrapper.pattern_state(0)
    rows = ct.patterns.to_kernel_rows(value) != 0
    removed = pattern_ids == -1
    assert not rows[removed].any()
    kept = ~removed
    # Each kept kernel's non-zeros lie inside the pattern its id names.
    assert not (rows[kept] & (pattern_set[pattern_ids[kept]] == 0)).any()
    return described
