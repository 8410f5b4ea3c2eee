"""The native library: ABI pin, version checks, claims, native unit test."""

import importlib.metadata
import os
import shutil
import subprocess

import keras
import numpy as np
import pytest
import tflite_helpers
from ai_edge_litert import interpreter as litert_interpreter

from tf_clicktrain import tflite as ct_tflite
from tf_clicktrain.tflite import native_library

NATIVE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "tflite_export")


def test_library_is_built_for_the_installed_litert():
    info = native_library.library_info()
    installed = importlib.metadata.version("ai-edge-litert")
    assert installed.startswith(info["litert_abi_version"] + ".")
    native_library.check_runtime_version()


def test_library_reads_the_format_python_writes():
    info = native_library.library_info()
    assert info["format_version"] == ct_tflite.compact_format.FORMAT_VERSION
    assert info["kernels"] in ("scalar", "avx2", "avx512", "neon")


def test_runtime_version_mismatch_is_reported(monkeypatch):
    monkeypatch.setattr(native_library, "installed_litert_version", lambda: "9.9.0")
    with pytest.raises(RuntimeError, match="built for ai-edge-litert"):
        native_library.check_runtime_version()


def test_abi_delegate_claims_every_pattern_node_and_runs_them():
    # The delegate checks the declared struct layout against the live runtime
    # (tensor fields, function table, the registration passed by value) and
    # refuses to load on a mismatch; loading here proves the layout, the
    # outputs prove the tensors and options are read correctly.
    input_shape = (9, 9, 5)
    model = keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(7, 3, padding="valid"),
            keras.layers.DepthwiseConv2D(3, padding="same"),
        ]
    )
    tflite_helpers.sparsify_model(model, np.random.default_rng(0))
    tflite_bytes = ct_tflite.convert(model, decide_by="size", max_size_ratio=1.0)
    delegate = native_library.load_delegate()
    interpreter = litert_interpreter.Interpreter(
        model_content=tflite_bytes, experimental_delegates=[delegate]
    )
    assert native_library.claimed_nodes(delegate) == 3
    inputs = np.random.default_rng(1).normal(size=(2, *input_shape)).astype(np.float32)
    actual = tflite_helpers.run_interpreter(interpreter, inputs)
    assert tflite_helpers.max_relative_error(actual, model.predict(inputs, verbose=0)) <= 1e-4


def test_stock_interpreter_without_the_delegate_refuses_the_custom_ops():
    model = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.Conv2D(4, 3)])
    tflite_helpers.sparsify_model(model, np.random.default_rng(2))
    tflite_bytes = ct_tflite.convert(model, decide_by="size")
    with pytest.raises((ValueError, RuntimeError), match="ClickTrainPatternConv2D"):
        interpreter = litert_interpreter.Interpreter(model_content=tflite_bytes)
        interpreter.allocate_tensors()


def test_delegate_rejects_options():
    with pytest.raises(ValueError, match="takes no options"):
        litert_interpreter.load_delegate(native_library.library_path(), {"threads": 2})


def test_missing_library_is_explained(monkeypatch, tmp_path):
    monkeypatch.setenv(native_library.LIBRARY_PATH_VARIABLE, str(tmp_path / "absent.so"))
    with pytest.raises(FileNotFoundError, match=native_library.LIBRARY_PATH_VARIABLE):
        native_library.library_path()


@pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("g++") is None,
    reason="needs make and g++",
)
def test_native_unit_test_passes(tmp_path):
    completed = subprocess.run(
        ["make", "-s", "-C", NATIVE_DIR, f"BUILD={tmp_path}", "test"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "all checks passed" in completed.stdout
