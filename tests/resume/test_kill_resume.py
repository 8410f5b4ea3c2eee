"""SIGKILL in the middle of every phase, resume, and lose nothing.

One seeded run (op determinism on) trains uninterrupted. Another is killed
with SIGKILL four times, each time in the middle of an epoch in a different
phase, and restarted with the same BackupAndRestore directory after each
kill:

- warm-up (step 5): resumes from the epoch-0 backup, before any selection;
- right after pattern selection (step 6, selection at step 6): resumes from
  the same backup and selects again;
- soft phase (step 9): resumes from the epoch-1 backup, whose pruning state
  already holds a selection;
- hard phase (step 17): resumes from the epoch-3 backup, masks applied.

Its final masks, pattern sets, pattern ids, weights and optimizer state must
equal the uninterrupted run's exactly.
"""

import os
import signal
import time

import numpy as np

import tf_clicktrain as ct
from tests import subprocesses
from tests.resume import train

CHILD_TIMEOUT = 150

# (step to kill at, step the next run must resume from, phase at the kill)
KILL_POINTS = (
    (5, 4, ct.schedules.DENSE),
    (6, 4, ct.schedules.SOFT),
    (9, 8, ct.schedules.SOFT),
    (17, 16, ct.schedules.HARD),
)


def _phase(batch_index):
    # Batch index b (from 0) is the pruning step b + 1 (tfmot's numbering).
    return ct.ClickTrainSchedule(**train.SCHEDULE).phase(batch_index + 1)


def _run_and_kill(args, log, marker):
    with subprocesses.running([subprocesses.start(args, log)]) as (process,):
        deadline = time.monotonic() + CHILD_TIMEOUT
        while not os.path.exists(marker):
            if process.poll() is not None:
                raise AssertionError(
                    f"run ended before its kill point (exit {process.returncode})\n"
                    + subprocesses.tails([log])
                )
            if time.monotonic() > deadline:
                raise AssertionError("kill point not reached in time\n" + subprocesses.tails([log]))
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    with open(marker) as paused:
        killed_at, resumed_at = (int(field) for field in paused.read().split())
    os.remove(marker)
    return killed_at, resumed_at


def test_sigkill_in_every_phase_then_resume_equals_uninterrupted(tmp_path):
    reference = tmp_path / "reference.npz"
    subprocesses.run(
        ["-m", "tests.resume.train", f"--backup={tmp_path / 'reference_backup'}",
         f"--out={reference}"],
        tmp_path / "reference.log", CHILD_TIMEOUT,
    )

    backup = tmp_path / "backup"
    out = tmp_path / "resumed.npz"
    base = ["-m", "tests.resume.train", f"--backup={backup}", f"--out={out}"]
    expected_start = 0
    for index, (step, resume_step, phase) in enumerate(KILL_POINTS):
        assert _phase(step) == phase
        killed_at, started_at = _run_and_kill(
            base + [f"--pause-at={step}"], tmp_path / f"killed{index}.log", f"{out}.paused"
        )
        assert (killed_at, started_at) == (step, expected_start)
        assert not out.exists()
        expected_start = resume_step
    subprocesses.run(base, tmp_path / "final.log", CHILD_TIMEOUT)

    with np.load(reference) as expected, np.load(out) as resumed:
        assert int(expected["resumed_at"]) == 0
        assert int(resumed["resumed_at"]) == KILL_POINTS[-1][1]
        keys = sorted(k for k in expected.files if k != "resumed_at")
        assert keys == sorted(k for k in resumed.files if k != "resumed_at")
        assert any("pattern_ids" in k for k in keys)
        assert any(k.startswith("optimizer/") for k in keys)
        for key in keys:
            np.testing.assert_array_equal(resumed[key], expected[key], err_msg=key)
        kernel = expected["value/conv2/kernel"]
        assert ct.patterns.describe_pattern_sparsity(kernel).entries_per_kernel == (4,)
