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


# Filter groups: runs of consecutive filters sharing kernels and patterns.


def _select_filter_groups(kernel_shape, filter_group, sparsity, groups=1, seed=0):
    importance = _importance(int(np.prod(kernel_shape[2:])), seed)
    return importance, patterns.select_patterns_per_filter_group(
        importance,
        patterns.kernel_row_groups(kernel_shape, groups),
        patterns.filter_group_rows(kernel_shape, filter_group, groups),
        num_patterns=4, connectivity_sparsity=sparsity,
        candidates=patterns.candidate_patterns(4),
    )


def _runs(outputs, filter_group, groups=1):
    """The output-channel runs that must agree, as lists of channels."""
    per_group = outputs // groups
    return [
        list(range(start, min(start + filter_group, (group + 1) * per_group)))
        for group in range(groups)
        for start in range(group * per_group, (group + 1) * per_group, filter_group)
    ]


def _assert_runs_agree(selection, kernel_shape, runs):
    inputs, outputs = kernel_shape[2:]
    ids = selection.pattern_ids.reshape(inputs, outputs)
    masks = selection.mask_rows.reshape(inputs, outputs, 9)
    for run in runs:
        assert np.all(ids[:, run] == ids[:, run[:1]])
        assert np.all(masks[:, run] == masks[:, run[:1]])


def test_filter_group_rows_number_runs_of_filters_per_input():
    np.testing.assert_array_equal(
        patterns.filter_group_rows((3, 3, 2, 6), 4),
        [0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3],
    )
    # Two conv groups of 5 filters: runs of 2 restart at filter 5.
    np.testing.assert_array_equal(
        patterns.filter_group_rows((3, 3, 1, 10), 2, groups=2),
        [0, 0, 1, 1, 2, 3, 3, 4, 4, 5],
    )


def test_every_filter_group_shares_kernels_and_patterns_per_input():
    shape = (3, 3, 24, 32)
    _, selection = _select_filter_groups(shape, 4, 0.75)
    _assert_runs_agree(selection, shape, _runs(32, 4))
    removed = selection.pattern_ids == REMOVED
    assert removed.mean() == 0.75  # 144 of 192 pooled kernels, x4 rows each.
    assert np.all(selection.mask_rows[~removed].sum(axis=1) == 4)
    np.testing.assert_array_equal(
        selection.mask_rows[~removed], selection.pattern_set[selection.pattern_ids[~removed]]
    )


def test_pooled_kernels_are_ranked_by_their_summed_importance():
    shape = (3, 3, 16, 8)
    importance, selection = _select_filter_groups(shape, 4, 0.5)
    pooled_scores = importance.sum(axis=1).reshape(16, 2, 4).sum(axis=2)
    removed = (selection.pattern_ids == REMOVED).reshape(16, 2, 4)[..., 0]
    assert pooled_scores[removed].max() <= pooled_scores[~removed].min()


def test_a_partial_last_filter_group_is_smaller():
    shape = (3, 3, 20, 10)  # Runs of 4, 4 and 2 filters.
    _, selection = _select_filter_groups(shape, 4, 0.5)
    _assert_runs_agree(selection, shape, _runs(10, 4))
    ids = selection.pattern_ids.reshape(20, 10)
    # The last run is its own: it is not tied to filters 4..7.
    assert np.any(ids[:, 8] != ids[:, 7])
    assert (ids[:, [0, 4, 8]] == REMOVED).sum() == 30  # Half of 60 pooled kernels.


def test_filter_groups_never_cross_conv_groups():
    shape = (3, 3, 12, 12)  # 2 conv groups of 6 filters, runs of 4 and 2.
    _, selection = _select_filter_groups(shape, 4, 0.5, groups=2)
    _assert_runs_agree(selection, shape, _runs(12, 4, groups=2))
    ids = selection.pattern_ids.reshape(12, 12)
    assert np.any(ids[:, 5] != ids[:, 6])
    for group in range(2):
        group_ids = ids[:, group * 6:(group + 1) * 6]
        kept = group_ids[group_ids != REMOVED]
        assert np.all(kept // 4 == group)  # Each conv group's own patterns.
        assert (group_ids[:, [0, 4]] == REMOVED).sum() == 12  # Half of 24.


def test_filter_group_1_is_the_per_group_selection():
    shape = (3, 3, 6, 8)
    importance, grouped = _select_filter_groups(shape, 1, 0.6, groups=2)
    plain = patterns.select_patterns_per_group(
        importance, patterns.kernel_row_groups(shape, 2), 4, 0.6,
        candidates=patterns.candidate_patterns(4),
    )
    for field in ("pattern_set", "pattern_ids", "mask_rows"):
        np.testing.assert_array_equal(getattr(grouped, field), getattr(plain, field))


@pytest.mark.parametrize("value", [0, -4, 2.0, True, "4", None])
def test_filter_group_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match=f"filter_group must be a positive integer. "
                                         f"Received: filter_group={value!r}"):
        patterns.filter_group_rows((3, 3, 2, 8), value)
