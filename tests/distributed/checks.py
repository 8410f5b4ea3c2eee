"""Comparisons of a distributed run with the single-device reference."""

import numpy as np

import tf_clicktrain as ct
from tests.distributed import workload

# Float variables (weights, optimizer state, importance) of a 2-replica run
# differ from the single-device run on the same global batches only by the
# order of float32 sums in the all-reduce: measured max 3.1e-5 (a bias after
# 20 steps of SGD with momentum); the tests allow 1e-4.
TOLERANCE = 1e-4

# Pruning decisions must be identical, not close.
EXACT = ("_mask", "_pattern_set", "_pattern_ids", "pruning_phase", "selection_count",
         "pruning_step", "penalty_weight")


def assert_replicas_agree(run):
    """Every local replica holds the same pruning state."""
    replicas = run.replicas()
    assert replicas, "no pruning variables recorded"
    for name, copies in replicas.items():
        assert len(copies) == run.meta["local_replicas"], name
        for copy in copies[1:]:
            np.testing.assert_array_equal(copy, copies[0], err_msg=name)


def assert_all_phases_ran(run):
    phases = list(run.phases)
    steps = workload.EPOCHS * workload.STEPS_PER_EPOCH
    assert len(phases) == steps
    schedule = workload.SCHEDULE
    assert phases == [
        ct.schedules.DENSE if step < schedule["selection_step"]
        else ct.schedules.SOFT if step < schedule["hard_pruning_step"]
        else ct.schedules.HARD
        for step in range(steps)
    ]


def max_difference(run, reference):
    """Compares every variable; returns the largest float difference."""
    values, expected = run.values(), reference.values()
    assert sorted(values) == sorted(expected)
    largest = 0.0
    for name, value in expected.items():
        if any(marker in name for marker in EXACT):
            np.testing.assert_array_equal(values[name], value, err_msg=name)
            continue
        difference = float(np.max(np.abs(values[name].astype(np.float64) - value)))
        assert difference <= TOLERANCE, (name, difference)
        largest = max(largest, difference)
    return largest


def assert_pattern_sparse(run):
    values = run.values()
    for layer in ("conv1", "conv2"):
        kernel = values[f"{layer}/kernel"]
        described = ct.patterns.describe_pattern_sparsity(kernel)
        assert described.entries_per_kernel == (4,), (layer, described)
        assert described.num_patterns <= 4, (layer, described)
        assert described.removed_kernels > 0, (layer, described)
