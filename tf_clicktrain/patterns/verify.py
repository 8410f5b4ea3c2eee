"""Reading patterns back from the zeros of a kernel."""

import collections
import dataclasses

import numpy as np

from tf_clicktrain.patterns.kernels import to_kernel_rows


@dataclasses.dataclass(frozen=True)
class PatternSparsity:
    """What the zeros of a 3x3 kernel look like.

    Attributes:
        num_kernels: number of 3x3 kernels in the tensor.
        removed_kernels: kernels that are entirely zero.
        pattern_counts: maps each distinct non-zero position set (a tuple of
            positions 0..8) of the kept kernels to how many kernels use it.
        entries_per_kernel: sorted distinct non-zero counts of kept kernels.
    """

    num_kernels: int
    removed_kernels: int
    pattern_counts: dict
    entries_per_kernel: tuple

    @property
    def kept_kernels(self):
        return self.num_kernels - self.removed_kernels

    @property
    def num_patterns(self):
        return len(self.pattern_counts)

    def is_pattern_sparse(self, entries_per_kernel, max_patterns):
        """True if every kept kernel has exactly ``entries_per_kernel``
        non-zeros and the kept kernels use at most ``max_patterns`` patterns."""
        entries_ok = self.entries_per_kernel in ((), (entries_per_kernel,))
        return entries_ok and self.num_patterns <= max_patterns


def describe_pattern_sparsity(kernel):
    """Reads kept/removed kernels and the patterns in use from the zeros.

    Args:
        kernel: array ``(3, 3, a, b)``.

    Returns:
        A `PatternSparsity`.
    """
    nonzero = to_kernel_rows(kernel) != 0
    per_kernel = nonzero.sum(axis=1)
    kept = per_kernel > 0
    counts = collections.Counter(
        tuple(np.flatnonzero(row).tolist()) for row in nonzero[kept]
    )
    return PatternSparsity(
        num_kernels=int(nonzero.shape[0]),
        removed_kernels=int((~kept).sum()),
        pattern_counts=dict(counts),
        entries_per_kernel=tuple(sorted(set(per_kernel[kept].tolist()))),
    )
