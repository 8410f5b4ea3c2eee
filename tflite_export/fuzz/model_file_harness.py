"""Python half of model_file_fuzzer.cc: loads and runs one .tflite file.

Runs the user's path, `tf_clicktrain.tflite.Interpreter` over the stock
LiteRT runtime with the ClickTrain delegate (the sanitized build named by
TF_CLICKTRAIN_TFLITE_LIBRARY), then resizes the first input and runs again,
so the delegate's Prepare sees a second shape through the runtime's own
ResizeTensorExplicit. Only the `tf_clicktrain.tflite` modules the
interpreter needs are imported (not the package's Keras side).

`run` returns normally or after the documented ValueError / RuntimeError;
any other exception is a bug, reported by aborting the process.

Replaying inputs in one process, as the fuzzer runs them (files of the
fuzzer's format: a .tflite file and one control byte):

    python fuzz/model_file_harness.py <file>...
    python fuzz/model_file_harness.py --ring <directory>   # see input_ring.py

Without TF_CLICKTRAIN_TFLITE_LIBRARY this loads the uninstrumented library,
so it runs under valgrind.
"""

import math
import os
import sys
import traceback
import types

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _import_interpreter():
    for name in ("tf_clicktrain", "tf_clicktrain.tflite"):
        package = types.ModuleType(name)
        package.__path__ = [os.path.join(_REPO, *name.split("."))]
        sys.modules[name] = package
    from tf_clicktrain.tflite import interpreter  # pylint: disable=import-outside-toplevel

    return interpreter


_interpreter = _import_interpreter()
from ai_edge_litert import interpreter as _litert  # pylint: disable=wrong-import-position

# Loads the sanitized library now, before libFuzzer starts counting coverage.
_interpreter.native_library.load_delegate()

# Shapes a fuzzed file may ask the harness to fill; larger inputs are skipped.
_MAX_INPUT_ELEMENTS = 1 << 20
# Files whose own tensors declare more than this are skipped: LiteRT's arena
# would allocate it all (legitimately, for the file asks for it), which under
# ASan is slow and trips libFuzzer's memory limit. The delegate's own
# allocations stay under libFuzzer's limits.
_MAX_DECLARED_BYTES = 256 << 20


def _fill_inputs(interpreter, rng):
    for detail in interpreter.get_input_details():
        shape = detail["shape"]
        if np.prod(shape, dtype=np.int64) > _MAX_INPUT_ELEMENTS:
            return False
        if detail["dtype"] == np.float32:
            value = rng.standard_normal(shape).astype(np.float32)
        else:
            value = np.zeros(shape, detail["dtype"])
        interpreter.set_tensor(detail["index"], value)
    return True


def _declared_bytes(interpreter):
    total = 0
    for detail in interpreter.get_tensor_details():
        itemsize = np.dtype(detail["dtype"]).itemsize if detail["dtype"] is not None else 8
        total += math.prod(max(int(d), 0) for d in detail["shape"]) * itemsize
    return total


def _resized(shape, mode):
    shape = [int(d) for d in shape]
    if len(shape) != 4:
        return None
    if mode == 1:  # taller and wider
        return [shape[0], shape[1] + 3, shape[2] + 5, shape[3]]
    if mode == 2:  # down to one pixel
        return [shape[0], 1, 1, shape[3]]
    if mode == 3:  # batch of two
        return [2, *shape[1:]]
    return None


def run_input(data):
    """Runs one fuzzer input: a .tflite file followed by one control byte.

    Control bits 0-1 pick 1-4 threads, bits 2-3 the resize mode (see
    `_resized`), bit 4 LiteRT's default delegates (XNNPACK).
    """
    if not data:
        return
    control = data[-1]
    run(data[:-1], 1 + (control & 3), (control >> 2) & 3, (control >> 4) & 1)


def run(content, threads, resize_mode, default_delegates):
    """Loads, prepares, runs, resizes and reruns the model in `content`."""
    try:
        _run(content, threads, resize_mode, default_delegates)
    except (ValueError, RuntimeError):
        pass
    except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        sys.stderr.flush()
        os.abort()


def _run(content, threads, resize_mode, default_delegates):
    resolver = (
        _litert.OpResolverType.AUTO
        if default_delegates
        else _litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter = _interpreter.Interpreter(
        model_content=content, num_threads=threads, experimental_op_resolver_type=resolver
    )
    rng = np.random.default_rng(0)
    if _declared_bytes(interpreter) > _MAX_DECLARED_BYTES:
        return
    interpreter.allocate_tensors()
    if not _fill_inputs(interpreter, rng):
        return
    interpreter.invoke()
    inputs = interpreter.get_input_details()
    if not inputs:
        return
    shape = _resized(inputs[0]["shape"], resize_mode)
    if shape is None:
        return
    interpreter.resize_tensor_input(inputs[0]["index"], shape, strict=False)
    if _declared_bytes(interpreter) > _MAX_DECLARED_BYTES:
        return
    interpreter.allocate_tensors()
    if _fill_inputs(interpreter, rng):
        interpreter.invoke()


def _replay(paths):
    for path in paths:
        print(path, flush=True)
        with open(path, "rb") as input_file:
            run_input(input_file.read())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ring"] and len(sys.argv) == 3:
        import input_ring  # pylint: disable=import-error

        _replay(input_ring.ring_inputs(sys.argv[2]))
    elif len(sys.argv) > 1 and "--ring" not in sys.argv:
        _replay(sys.argv[1:])
    else:
        sys.exit(f"usage: {sys.argv[0]} <file>... | --ring <directory>")
