"""ClickTrain under MirroredStrategy on two logical CPU devices.

The run happens in a child process (logical devices must be configured
before TensorFlow initialises); it covers wrapping inside the scope, fit,
selection with connectivity pruning, a reselection, the soft phase (group
lasso through add_loss) and the hard phase (masks and constraints).
"""

from tests.distributed import checks
from tests.distributed.conftest import run_workload


def test_mirrored_two_replicas_match_single_device(single_run, tmp_path):
    mirrored = run_workload("mirrored", tmp_path)
    assert mirrored.meta["replicas"] == 2
    assert single_run.meta["replicas"] == 1
    checks.assert_all_phases_ran(single_run)
    checks.assert_all_phases_ran(mirrored)
    checks.assert_replicas_agree(mirrored)
    checks.assert_pattern_sparse(mirrored)
    difference = checks.max_difference(mirrored, single_run)
    print(f"mirrored vs single device: max difference {difference:.2e}, "
          f"fit {mirrored.meta['fit_seconds']:.1f} s vs {single_run.meta['fit_seconds']:.1f} s")
