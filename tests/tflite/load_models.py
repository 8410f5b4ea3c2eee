"""Loads and runs each .tflite file named on the command line.

Run in a subprocess by test_robustness.py, so that a crash in native code
fails the test instead of killing pytest. Prints one JSON line per file:
`{"file": ..., "outcome": "ok" | "error", "message": ...}`.
"""

import json
import sys

import numpy as np

from tf_clicktrain import tflite as ct_tflite


def _load_and_run(path):
    interpreter = ct_tflite.Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.ones(detail["shape"], np.float32))
    interpreter.invoke()


def main(paths):
    for path in paths:
        try:
            _load_and_run(path)
            result = {"file": path, "outcome": "ok", "message": ""}
        except (ValueError, RuntimeError) as error:
            result = {"file": path, "outcome": "error", "message": str(error)}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
