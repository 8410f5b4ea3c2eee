"""The single-device reference run shared by the distributed tests."""

import json

import numpy as np
import pytest

from tests import subprocesses

CHILD_TIMEOUT = 180


class Run:
    """A workload run loaded from its .npz dump."""

    def __init__(self, path):
        with np.load(path) as data:
            self.data = {key: data[key] for key in data.files}
        self.meta = json.loads(str(self.data["meta"]))
        self.phases = self.data["phases"]

    def values(self):
        return {k[len("value/"):]: v for k, v in self.data.items() if k.startswith("value/")}

    def replicas(self):
        return {k[len("replicas/"):]: v for k, v in self.data.items() if k.startswith("replicas/")}


def run_workload(strategy, tmp_path):
    out = tmp_path / f"{strategy}.npz"
    subprocesses.run(
        ["-m", "tests.distributed.workload", f"--strategy={strategy}", f"--out={out}"],
        tmp_path / f"{strategy}.log", CHILD_TIMEOUT,
    )
    return Run(out)


@pytest.fixture(scope="session")
def single_run(tmp_path_factory):
    return run_workload("single", tmp_path_factory.mktemp("single"))
