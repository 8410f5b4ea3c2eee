"""Saving never leaves a half-file: ct.save_model, ct.save_weights, ct.tflite.save."""

import os
import signal
import time

import keras
import numpy as np
import pytest

import tf_clicktrain as ct
from tests import subprocesses
from tests.conftest import random_data
from tests.conftest import small_cnn


def _trained():
    x, y = random_data(32)
    model = ct.prune_pattern(small_cnn(), schedule=ct.ConstantSparsity(0.5, begin_step=0))
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[ct.UpdatePruningStep()])
    return model


def _leftovers(directory):
    return [name for name in os.listdir(directory) if ".tmp-" in name]


def _crashing_save(self, filepath, *args, **kwargs):
    with open(filepath, "wb") as half:
        half.write(b"PK\x03\x04 half a zip")
    raise OSError("disk full (simulated)")


def test_failed_model_save_keeps_previous_file(tmp_path, monkeypatch):
    model = _trained()
    path = tmp_path / "model.keras"
    ct.save_model(model, path)
    before = path.read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "save", _crashing_save)
        with pytest.raises(OSError, match="simulated"):
            ct.save_model(model, path)
    assert path.read_bytes() == before
    assert not _leftovers(tmp_path)
    reloaded = keras.saving.load_model(path)
    assert len(ct.pruning_wrappers(reloaded)) == len(ct.pruning_wrappers(model))


def test_failed_stripped_save_and_weights_save_keep_previous_files(tmp_path, monkeypatch):
    model = _trained()
    stripped = ct.strip_pruning(model)
    model_path, weights_path = tmp_path / "final.keras", tmp_path / "w.weights.h5"
    ct.save_model(stripped, model_path)
    ct.save_weights(model, weights_path)
    before = model_path.read_bytes(), weights_path.read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "save", _crashing_save)
        patch.setattr(keras.Model, "save_weights", _crashing_save)
        with pytest.raises(OSError):
            ct.save_model(stripped, model_path)
        with pytest.raises(OSError):
            ct.save_weights(model, weights_path)
    assert (model_path.read_bytes(), weights_path.read_bytes()) == before
    assert not _leftovers(tmp_path)
    model.load_weights(weights_path)


def test_failed_tflite_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"
    ct.tflite.save(b"first complete file", path)
    real_open = open

    def failing_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode and ".tmp-" in os.fspath(file):
            handle.write(b"half")
            handle.close()
            raise OSError("killed mid-write (simulated)")
        return handle

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(OSError, match="simulated"):
        ct.tflite.save(b"second file, never completed", path)
    monkeypatch.undo()
    assert path.read_bytes() == b"first complete file"
    assert not _leftovers(tmp_path)


def test_sigkill_during_saves_leaves_loadable_files(tmp_path):
    """A process killed while re-saving leaves complete, loadable files."""
    log = tmp_path / "save_loop.log"
    with subprocesses.running(
        [subprocesses.start(["-m", "tests.resume.save_loop", f"--dir={tmp_path}"], log)]
    ) as (process,):
        deadline = time.monotonic() + 150
        while not (tmp_path / "ready").exists():
            assert process.poll() is None, subprocesses.tails([log])
            assert time.monotonic() < deadline, subprocesses.tails([log])
            time.sleep(0.05)
        time.sleep(1.5)  # Several save rounds in, mid-write of one of them.
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    wrapped = keras.saving.load_model(tmp_path / "wrapped.keras")
    assert ct.pruning_wrappers(wrapped)
    stripped = keras.saving.load_model(tmp_path / "stripped.keras")
    x, _ = random_data(4)
    assert np.all(np.isfinite(stripped.predict(x, verbose=0)))
    interpreter = ct.tflite.Interpreter(model_path=str(tmp_path / "model.tflite"))
    interpreter.allocate_tensors()
