import numpy as np
import pytest

from tf_clicktrain import patterns
from tf_clicktrain.patterns.selection import REMOVED


def _importance(num_kernels=300, seed=0):
    return np.random.default_rng(seed).random((num_kernels, 9)) ** 3


def test_selection_keeps_k_patterns_and_removes_the_requested_fraction():
    importance = _importance()
    selection = patterns.select_patterns_and_kernels(
        importance, num_patterns=4, connectivity_sparsity=0.6,
        candidates=patterns.candidate_patterns(4),
    )
    assert selection.pattern_set.shape == (4, 9)
    assert np.all(selection.pattern_set.sum(axis=1) == 4)
    removed = selection.pattern_ids == REMOVED
    assert removed.sum() == int(np.floor(0.6 * 300))
    assert np.all(selection.mask_rows[removed] == 0)
    assert np.all(selection.mask_rows[~removed].sum(axis=1) == 4)
    # Every kept kernel uses exactly the pattern its id names.
    np.testing.assert_array_equal(
        selection.mask_rows[~removed], selection.pattern_set[selection.pattern_ids[~removed]]
    )


def test_removed_kernels_are_the_least_important():
    importance = _importance()
    selection = patterns.select_patterns_and_kernels(
        importance, 4, 0.5, candidates=patterns.candidate_patterns(4)
    )
    scores = importance.sum(axis=1)
    removed = selection.pattern_ids == REMOVED
    assert scores[removed].max() <= scores[~removed].min()


def test_generated_set_is_the_dominant_best_fits():
    # Two patterns explain all kernels: the set must contain both.
    candidates = patterns.candidate_patterns(4)
    a, b = candidates[3], candidates[70]
    rng = np.random.default_rng(1)
    rows = np.concatenate([a * (1 + rng.random((50, 9))), b * (1 + rng.random((30, 9)))])
    rows += 0.01 * rng.random(rows.shape)
    pattern_set = patterns.select_pattern_set(rows, candidates, 2)
    assert {tuple(p) for p in pattern_set} == {tuple(a), tuple(b)}


def test_assignment_picks_the_pattern_capturing_most_importance():
    pattern_set = patterns.candidate_patterns(4)[[0, 125]]
    rows = np.stack([pattern_set[1] * 5 + 0.1, pattern_set[0] * 5 + 0.1])
    np.testing.assert_array_equal(patterns.assign_patterns(rows, pattern_set), [1, 0])


def test_fixed_library_is_used_as_is():
    library = patterns.candidate_patterns(4)[[5, 6, 7, 8]]
    selection = patterns.select_patterns_and_kernels(
        _importance(), 99, 0.0, pattern_library=library
    )
    np.testing.assert_array_equal(selection.pattern_set, library)


def test_selection_is_deterministic():
    importance = _importance()
    first = patterns.select_patterns_and_kernels(importance, 4, 0.3, patterns.candidate_patterns(4))
    second = patterns.select_patterns_and_kernels(importance, 4, 0.3, patterns.candidate_patterns(4))
    np.testing.assert_array_equal(first.mask_rows, second.mask_rows)


def test_nan_importance_is_a_clear_error():
    importance = _importance()
    importance[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        patterns.select_patterns_and_kernels(importance, 4, 0.3, patterns.candidate_patterns(4))


def test_too_many_patterns_is_rejected():
    with pytest.raises(ValueError, match="num_patterns"):
        patterns.select_pattern_set(_importance(), patterns.candidate_patterns(8), 10)


def test_depth_increasing_rule():
    rule = patterns.depth_increasing(0.35, 0.85)
    assert [round(rule(i, 3), 2) for i in range(3)] == [0.35, 0.6, 0.85]
    with pytest.raises(ValueError, match="last"):
        patterns.depth_increasing(0.3, 1.0)


def test_magnitude_mask_removes_exactly_the_smallest():
    values = np.array([[3.0, 1.0], [2.0, 4.0]])
    np.testing.assert_array_equal(patterns.magnitude_mask(values, 0.5), [[1, 0], [0, 1]])


def test_describe_reads_patterns_from_zeros():
    kernel = np.zeros((3, 3, 2, 3), np.float32)
    kernel[0, 0, 0, 0] = kernel[1, 1, 0, 0] = 1
    kernel[0, 0, 1, 2] = kernel[1, 1, 1, 2] = 2
    kernel[2, 2, 0, 1] = kernel[1, 1, 0, 1] = 3
    described = patterns.describe_pattern_sparsity(kernel)
    assert described.num_kernels == 6
    assert described.removed_kernels == 3
    assert described.pattern_counts == {(0, 4): 2, (4, 8): 1}
    assert described.is_pattern_sparse(entries_per_kernel=2, max_patterns=2)
    assert not described.is_pattern_sparse(entries_per_kernel=2, max_patterns=1)
