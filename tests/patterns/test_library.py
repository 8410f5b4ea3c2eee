import math

import numpy as np
import pytest

from tf_clicktrain import patterns


@pytest.mark.parametrize("entries", range(1, 10))
def test_all_placements_are_generated_once(entries):
    candidates = patterns.candidate_patterns(entries)
    assert candidates.shape == (math.comb(9, entries), 9)
    assert np.all(candidates.sum(axis=1) == entries)
    assert len({tuple(row) for row in candidates}) == len(candidates)


def test_force_centre_keeps_only_patterns_with_the_centre():
    candidates = patterns.candidate_patterns(4, force_centre=True)
    assert candidates.shape == (56, 9)
    assert np.all(candidates[:, 4] == 1)


@pytest.mark.parametrize("bad", [0, 10, -1, 2.5, True, "4"])
def test_entries_outside_one_to_nine_are_rejected(bad):
    with pytest.raises(ValueError, match="entries_per_kernel"):
        patterns.candidate_patterns(bad)


def test_pattern_drawing():
    pattern = np.zeros(9)
    pattern[[0, 4, 5, 8]] = 1
    assert patterns.pattern_to_string(pattern) == "#..\n.##\n..#"


def test_kernel_rows_round_trip_and_layout():
    kernel = np.arange(3 * 3 * 2 * 5, dtype=np.float32).reshape(3, 3, 2, 5)
    rows = patterns.to_kernel_rows(kernel)
    assert rows.shape == (10, 9)
    np.testing.assert_array_equal(rows[1 * 5 + 3], kernel[:, :, 1, 3].reshape(9))
    np.testing.assert_array_equal(patterns.from_kernel_rows(rows, kernel.shape), kernel)


def test_kernel_rows_reject_non_3x3():
    with pytest.raises(ValueError, match="kernel.shape"):
        patterns.to_kernel_rows(np.zeros((5, 5, 2, 2)))
