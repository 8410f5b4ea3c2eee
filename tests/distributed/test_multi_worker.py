"""ClickTrain under MultiWorkerMirroredStrategy: two workers on loopback.

The test starts both worker processes with their TF_CONFIG on free loopback
ports, bounds them in time and kills them (process groups) whatever happens.
Both workers must end with identical pruning state, equal to the
single-device run on the same global batches.
"""

import numpy as np

from tests import subprocesses
from tests.distributed import checks
from tests.distributed.conftest import CHILD_TIMEOUT
from tests.distributed.conftest import Run

WORKERS = 2


def _run_cluster(tmp_path):
    ports = subprocesses.free_ports(WORKERS)
    outs = [tmp_path / f"worker{i}.npz" for i in range(WORKERS)]
    logs = [tmp_path / f"worker{i}.log" for i in range(WORKERS)]
    processes = []
    with subprocesses.running(processes):
        for index in range(WORKERS):
            processes.append(subprocesses.start(
                ["-m", "tests.distributed.workload", "--strategy=multi_worker",
                 f"--out={outs[index]}"],
                logs[index], TF_CONFIG=subprocesses.tf_config(ports, index),
            ))
        subprocesses.wait_all(processes, CHILD_TIMEOUT, logs)
    return [Run(out) for out in outs]


def test_two_workers_agree_and_match_single_device(single_run, tmp_path):
    workers = _run_cluster(tmp_path)
    for worker in workers:
        assert worker.meta["replicas"] == WORKERS
        assert worker.meta["local_replicas"] == 1
        checks.assert_all_phases_ran(worker)
        checks.assert_replicas_agree(worker)
        checks.assert_pattern_sparse(worker)
    # The workers hold bit-identical variables.
    first, second = (worker.values() for worker in workers)
    for name, value in first.items():
        np.testing.assert_array_equal(second[name], value, err_msg=name)
    difference = checks.max_difference(workers[0], single_run)
    print(f"{WORKERS} workers vs single device: max difference {difference:.2e}, "
          f"fit {workers[0].meta['fit_seconds']:.1f} s")
