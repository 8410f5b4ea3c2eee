"""Measures the peak memory of loading and running .tflite files.

Run in a subprocess by test_memory_budget.py, with LiteRT alone (no
TensorFlow, so the process starts small):

    python peak_rss.py LIBRARY THREADS BASELINE_MODEL MODEL...

Loads BASELINE_MODEL, then each MODEL, with the ClickTrain delegate library
LIBRARY on THREADS threads (allocate, run twice on ones), keeping every
interpreter alive. Prints one JSON line: peak RSS in bytes after imports
(`start`), after the baseline model (`baseline`) and after all models
(`peak`); the delegate's `memory_fallbacks`; and `errors`, the message of
each model that failed to load or run ("" when it ran).
"""

import ctypes
import json
import resource
import sys

import numpy as np
from ai_edge_litert import interpreter as litert_interpreter


def _peak_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _load_and_run(path, delegate, threads):
    interpreter = litert_interpreter.Interpreter(
        model_path=path, experimental_delegates=[delegate], num_threads=threads
    )
    interpreter.allocate_tensors()
    for _ in range(2):
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.ones(detail["shape"], detail["dtype"]))
        interpreter.invoke()
    return interpreter


def main(library, threads, baseline_model, models):
    threads = int(threads)
    native = ctypes.CDLL(library)
    native.clicktrain_tflite_memory_fallbacks.argtypes = [ctypes.c_void_p]
    delegate = litert_interpreter.load_delegate(library)
    start = _peak_bytes()
    alive = [_load_and_run(baseline_model, delegate, threads)]
    baseline = _peak_bytes()
    errors = []
    for path in models:
        try:
            alive.append(_load_and_run(path, delegate, threads))
            errors.append("")
        except (ValueError, RuntimeError) as error:
            errors.append(str(error))
    result = {
        "start": start,
        "baseline": baseline,
        "peak": _peak_bytes(),
        "memory_fallbacks": native.clicktrain_tflite_memory_fallbacks(
            delegate._get_native_delegate_pointer()  # pylint: disable=protected-access
        ),
        "errors": errors,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
