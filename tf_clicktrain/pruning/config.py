"""The validated pruning parameters of one wrapper (no Keras layer needed)."""

import dataclasses
import functools

import numpy as np

from tf_clicktrain import patterns
from tf_clicktrain.patterns import blocks
from tf_clicktrain.patterns.connectivity import validate_sparsity
from tf_clicktrain.patterns.library import validate_entries_per_kernel
from tf_clicktrain.patterns.m_by_n import validate_m_by_n
from tf_clicktrain.pruning import schedules as schedules_lib

IMPORTANCE_METHODS = ("magnitude", "taylor", "taylor_accumulated")


def _is_positive_int(value):
    return (
        isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1
    )


def resolve_schedule(schedule=None, pruning_schedule=None):
    """One schedule from ``schedule`` or its tfmot alias ``pruning_schedule``.

    Returns the default ``ConstantSparsity(0.5, begin_step=0)`` when neither
    is given; raises `ValueError` when both are.
    """
    if schedule is not None and pruning_schedule is not None:
        raise ValueError(
            "Pass the schedule as schedule= or as pruning_schedule= (its "
            "tensorflow-model-optimization name), not both. Received: "
            f"schedule={schedule!r}, pruning_schedule={pruning_schedule!r}"
        )
    if pruning_schedule is not None:
        schedule = pruning_schedule
    if schedule is None:
        return schedules_lib.ConstantSparsity(0.5, begin_step=0)
    return schedules_lib.deserialize(schedule)


@dataclasses.dataclass(frozen=True, eq=False)  # eq: pattern_library is an array.
class PruningConfig:
    """What a `PatternPruningWrapper` prunes to, checked once on creation.

    See `PatternPruningWrapper` for the meaning of each field.

    Raises:
        ValueError: naming the argument and the value received.
    """

    schedule: schedules_lib.PruningSchedule
    num_patterns: int = 4
    entries_per_kernel: int = 4
    force_centre: bool = False
    connectivity_sparsity: float = None
    unstructured_sparsity: float = None
    importance: str = "magnitude"
    importance_decay: float = 0.99
    pattern_library: np.ndarray = None
    soft_anneal: bool = True
    sparsity_m_by_n: tuple = None
    block_size: tuple = blocks.NO_BLOCKS
    block_pooling_type: str = "AVG"
    filter_group: int = None

    def __post_init__(self):
        if not isinstance(self.schedule, schedules_lib.PruningSchedule):
            raise ValueError(
                "schedule must be a tf_clicktrain PruningSchedule. "
                f"Received: schedule={self.schedule!r}"
            )
        if not _is_positive_int(self.num_patterns):
            raise ValueError(
                "num_patterns must be a positive integer. "
                f"Received: num_patterns={self.num_patterns!r}"
            )
        validate_entries_per_kernel(self.entries_per_kernel)
        for name in ("connectivity_sparsity", "unstructured_sparsity"):
            value = getattr(self, name)
            if value is not None:
                validate_sparsity(value, name)
        if self.importance not in IMPORTANCE_METHODS:
            raise ValueError(
                f"importance must be one of {IMPORTANCE_METHODS}. "
                f"Received: importance={self.importance!r}"
            )
        validate_sparsity(self.importance_decay, "importance_decay")
        for name in ("force_centre", "soft_anneal"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(
                    f"{name} must be True or False. Received: {name}={getattr(self, name)!r}"
                )
        if self.pattern_library is not None:
            library = np.asarray(self.pattern_library, np.float32)
            if (
                library.ndim != 2
                or library.shape[1] != 9
                or len(library) == 0
                or not np.all(np.isin(library, (0.0, 1.0)))
                or np.any(library.sum(axis=1) != self.entries_per_kernel)
            ):
                raise ValueError(
                    "pattern_library must be a (K, 9) array of 0/1 rows with "
                    f"entries_per_kernel={self.entries_per_kernel} ones each. "
                    f"Received: pattern_library with shape {library.shape}"
                )
            object.__setattr__(self, "pattern_library", library)
            object.__setattr__(self, "num_patterns", len(library))
        elif self.num_patterns > len(self.candidates):
            raise ValueError(
                f"num_patterns must be at most {len(self.candidates)}, the "
                f"number of patterns with entries_per_kernel={self.entries_per_kernel} "
                f"and force_centre={self.force_centre}. "
                f"Received: num_patterns={self.num_patterns}"
            )
        if self.sparsity_m_by_n is not None:
            object.__setattr__(self, "sparsity_m_by_n", validate_m_by_n(self.sparsity_m_by_n))
        object.__setattr__(self, "block_size", blocks.validate_block_size(self.block_size))
        blocks.validate_pooling_type(self.block_pooling_type)
        if self.filter_group is not None:
            patterns.kernels.validate_filter_group(self.filter_group)
            object.__setattr__(self, "filter_group", int(self.filter_group))
        if self.uses_blocks and self.sparsity_m_by_n is not None:
            raise ValueError(
                "Pass block_size or sparsity_m_by_n, not both: each decides how "
                "unstructured weights are grouped. Received: "
                f"block_size={self.block_size}, sparsity_m_by_n={self.sparsity_m_by_n}"
            )
        object.__setattr__(self, "num_patterns", int(self.num_patterns))
        object.__setattr__(self, "entries_per_kernel", int(self.entries_per_kernel))
        object.__setattr__(self, "importance_decay", float(self.importance_decay))

    @functools.cached_property
    def candidates(self):
        """The patterns selection chooses from (None with a fixed library)."""
        if self.pattern_library is not None:
            return None
        return patterns.candidate_patterns(self.entries_per_kernel, self.force_centre)

    @property
    def uses_blocks(self):
        """True when unstructured weights are pruned in blocks larger than 1x1."""
        return self.block_size != blocks.NO_BLOCKS

    @property
    def final_unstructured_sparsity(self):
        """The fraction of zeros unstructured weights end the schedule with."""
        if self.sparsity_m_by_n is not None:
            zeros, n = self.sparsity_m_by_n
            return zeros / n
        if self.unstructured_sparsity is not None:
            return self.unstructured_sparsity
        return self.schedule.final_sparsity

    @property
    def m_by_n_kept(self):
        """``(kept, n)``: ``sparsity_m_by_n`` names the zeros, as tfmot does."""
        zeros, n = self.sparsity_m_by_n
        return n - zeros, n

    def to_config(self):
        """The JSON-ready fields, as in `PatternPruningWrapper.get_config`."""
        return {
            "schedule": schedules_lib.serialize(self.schedule),
            "num_patterns": self.num_patterns,
            "entries_per_kernel": self.entries_per_kernel,
            "force_centre": bool(self.force_centre),
            "connectivity_sparsity": self.connectivity_sparsity,
            "unstructured_sparsity": self.unstructured_sparsity,
            "importance": self.importance,
            "importance_decay": self.importance_decay,
            "soft_anneal": bool(self.soft_anneal),
            "pattern_library": (
                None if self.pattern_library is None else self.pattern_library.tolist()
            ),
            "sparsity_m_by_n": (
                None if self.sparsity_m_by_n is None else list(self.sparsity_m_by_n)
            ),
            "block_size": list(self.block_size),
            "block_pooling_type": self.block_pooling_type,
            "filter_group": self.filter_group,
        }
