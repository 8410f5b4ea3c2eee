"""Every compiled kernel variant, through LiteRT, against Keras and the reference.

The variant is chosen once per process (TF_CLICKTRAIN_KERNELS overrides the
CPU-based choice), so each runs in a small child process that loads only
LiteRT and the delegate.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tflite_helpers

from tf_clicktrain import tflite as ct_tflite
from tf_clicktrain.tflite import native_library

_CHILD = r"""
import json, sys
import numpy as np
from ai_edge_litert import interpreter as litert
model_path, inputs_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
delegate = litert.load_delegate(sys.argv[4])
interpreter = litert.Interpreter(model_path=model_path, experimental_delegates=[delegate],
                                 num_threads=threads)
inputs = np.load(inputs_path)
detail = interpreter.get_input_details()[0]
interpreter.resize_tensor_input(detail["index"], inputs.shape)
interpreter.allocate_tensors()
interpreter.set_tensor(detail["index"], inputs)
interpreter.invoke()
np.save(inputs_path + ".out.npy", interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
lib = __import__("ctypes").CDLL(sys.argv[4])
lib.clicktrain_tflite_kernel_name.restype = __import__("ctypes").c_char_p
print(json.dumps({"kernels": lib.clicktrain_tflite_kernel_name().decode()}))
"""


def _variants_for_this_cpu():
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    variants = ["scalar"]
    if " avx2" in flags and " fma" in flags:
        variants.append("avx2")
    if " avx512f" in flags:
        variants.append("avx512")
    return variants


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    inputs_layer = keras.Input((13, 11, 7))
    x = keras.layers.Conv2D(19, 3, padding="same", activation="relu")(inputs_layer)
    x = keras.layers.Conv2D(21, 3, strides=2, padding="valid")(x)
    x = keras.layers.Conv2D(17, 3, dilation_rate=2, padding="same", activation="relu6")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
    model = keras.Model(inputs_layer, x)
    tflite_helpers.sparsify_model(model, np.random.default_rng(5))
    directory = tmp_path_factory.mktemp("variants")
    model_path = directory / "model.tflite"
    model_path.write_bytes(ct_tflite.convert(model, decide_by="size", max_size_ratio=1.0))
    inputs = np.random.default_rng(6).normal(size=(2, 13, 11, 7)).astype(np.float32)
    inputs_path = directory / "inputs.npy"
    np.save(inputs_path, inputs)
    return model_path, inputs_path, model.predict(inputs, verbose=0)


def _run(variant, threads, model_path, inputs_path):
    environment = dict(os.environ, TF_CLICKTRAIN_KERNELS=variant, TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, str(model_path), str(inputs_path), str(threads),
         native_library.library_path()],
        capture_output=True, text=True, timeout=120, env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    chosen = json.loads(completed.stdout.strip().splitlines()[-1])["kernels"]
    return chosen, np.load(str(inputs_path) + ".out.npy")


def test_every_variant_matches_keras_and_the_scalar_reference(exported):
    model_path, inputs_path, expected = exported
    reference = None
    for variant in _variants_for_this_cpu():
        for threads in (1, 2):
            chosen, actual = _run(variant, threads, model_path, inputs_path)
            assert chosen == variant
            assert tflite_helpers.max_relative_error(actual, expected) <= 1e-4, (variant, threads)
            if reference is None:
                reference = actual
            assert tflite_helpers.max_relative_error(actual, reference) <= 1e-5, (variant, threads)
