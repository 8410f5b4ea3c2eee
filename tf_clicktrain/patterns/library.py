"""Candidate patterns: every placement of n kept entries in a 3x3 kernel."""

import itertools

import numpy as np

from tf_clicktrain.patterns.kernels import KERNEL_POSITIONS

CENTRE_POSITION = 4


def validate_entries_per_kernel(entries_per_kernel):
    """Raises `ValueError` unless ``entries_per_kernel`` is an int in 1..9."""
    if (
        isinstance(entries_per_kernel, bool)
        or not isinstance(entries_per_kernel, (int, np.integer))
        or not 1 <= entries_per_kernel <= KERNEL_POSITIONS
    ):
        raise ValueError(
            "entries_per_kernel must be an integer between 1 and 9. "
            f"Received: entries_per_kernel={entries_per_kernel!r}"
        )


def candidate_patterns(entries_per_kernel=4, force_centre=False):
    """All patterns keeping ``entries_per_kernel`` of the 9 positions.

    Args:
        entries_per_kernel: number of kept entries, 1..9.
        force_centre: if True, only patterns that keep the centre position
            (PatDNN's constraint: C(8, n - 1) candidates instead of C(9, n)).

    Returns:
        float32 array ``(num_candidates, 9)`` of 0/1, in lexicographic order of
        the kept positions (so the result is deterministic).

    Example:
    ```python
    candidate_patterns(4).shape        # (126, 9)
    candidate_patterns(4, True).shape  # (56, 9)
    ```
    """
    validate_entries_per_kernel(entries_per_kernel)
    rows = []
    for positions in itertools.combinations(range(KERNEL_POSITIONS), entries_per_kernel):
        if force_centre and CENTRE_POSITION not in positions:
            continue
        row = np.zeros(KERNEL_POSITIONS, np.float32)
        row[list(positions)] = 1.0
        rows.append(row)
    return np.stack(rows)


def pattern_to_string(pattern):
    """Draws a pattern as three lines of ``#`` (kept) and ``.`` (removed)."""
    pattern = np.asarray(pattern).reshape(3, 3)
    return "\n".join("".join("#" if v else "." for v in row) for row in pattern)
