"""int8 vs fp32, dense vs pattern-sparse, whole models in LiteRT (1 thread, batch 1).

Four files of the same network, timed in one run, interleaved round by round:

- dense fp32: the builtin-only file (`custom_ops=False`), XNNPACK's CONV_2D;
- dense int8: TFLiteConverter full-integer post-training quantization
  (`representative_dataset`), builtin int8 ops, XNNPACK's QS8 kernels;
- pattern fp32: `ct.tflite.convert(model)` (the pattern-conv custom op where
  it measured faster, `decide_by="speed"`), run by `ct.tflite.Interpreter`;
- pattern int8: `ct.quantize_model(model)`, ranges set on calibration
  images, `ct.tflite.convert(qat_model)`: full-integer, builtin int8 ops
  (there is no int8 pattern-conv op yet, so its speed is dense int8's).

Networks: the main job's VGG-style CNN (widths 16-16-32-32-64-64) on 28x28x1
and ResNet-18 on 224x224x3, every 3x3 conv but the main job's first one
pattern-sparse at 8x (4 of 9 weights kept, 72% of kernels removed). Weights
are random (speed and size do not depend on their values). Timing: medians of
interleaved samples, each the mean of enough invokes to last ~20 ms.

Usage: python benchmarks/int8_speed.py [--rounds 9] [--compression 8]
"""

import argparse
import contextlib
import io
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from ai_edge_litert import interpreter as litert_interpreter  # noqa: E402

import tf_clicktrain as ct  # noqa: E402
from tf_clicktrain import applications  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pattern_conv_speed import pattern_sparsify  # noqa: E402
from pattern_conv_speed import time_interleaved  # noqa: E402

NETWORKS = (  # (name, build, input shape, leave the first conv dense)
    ("main job CNN 28x28x1",
     lambda: applications.vgg_style_cnn((28, 28, 1), widths=(16, 16, 32, 32, 64, 64)),
     (28, 28, 1), True),
    ("ResNet-18 224x224x3", applications.resnet18, (224, 224, 3), False),
)
CALIBRATION_IMAGES = 8


def _quietly(function, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args, **kwargs)


def _invoker(interpreter, image):
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()  # warm-up: delegate application, caches
    return interpreter.invoke


def build_files(build, shape, first_conv_dense, compression, rng):
    model = build()
    first = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    first_weights = first.get_weights()
    pattern_sparsify(model, compression, rng)
    if first_conv_dense:
        first.set_weights(first_weights)
    calibration = rng.uniform(0, 1, (CALIBRATION_IMAGES, 1, *shape)).astype(np.float32)

    def representative_dataset():
        for image in calibration:
            yield [image]

    qat = ct.quantize_model(model)
    qat(calibration[:, 0], training=True)  # sets the activation ranges
    return {
        "dense fp32": _quietly(ct.tflite.convert, model, custom_ops=False),
        "dense int8": _quietly(ct.tflite.convert, model, custom_ops=False,
                               representative_dataset=representative_dataset),
        "pattern fp32": _quietly(ct.tflite.convert, model),
        "pattern int8": _quietly(ct.tflite.convert, qat),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="samples per file")
    parser.add_argument("--compression", type=float, default=8.0,
                        help="weight compression of the pattern-sparse 3x3 convs")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for name, build, shape, first_conv_dense in NETWORKS:
        files = build_files(build, shape, first_conv_dense, args.compression, rng)
        image = rng.uniform(0, 1, (1, *shape)).astype(np.float32)
        invokes = {}
        for kind, tflite_bytes in files.items():
            interpreter_class = (ct.tflite.Interpreter if kind == "pattern fp32"
                                 else litert_interpreter.Interpreter)
            invokes[kind] = _invoker(
                interpreter_class(model_content=tflite_bytes, num_threads=1), image)
        times = time_interleaved(invokes, args.rounds)
        pattern_ops = ct.tflite.count_pattern_ops(files["pattern fp32"])
        for kind, tflite_bytes in files.items():
            rows.append((name, kind, times[kind], len(tflite_bytes),
                         pattern_ops if kind == "pattern fp32" else 0))
        print(f"done: {name}", file=sys.stderr)

    print(f"\n1 thread, batch 1, 3x3 convs at {args.compression:g}x, median of "
          f"{args.rounds} interleaved samples")
    print("| model | file | ms | vs dense fp32 | vs dense int8 | size MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, kind, ms, size, pattern_ops in rows:
        dense_fp32 = next(r[2] for r in rows if r[0] == name and r[1] == "dense fp32")
        dense_int8 = next(r[2] for r in rows if r[0] == name and r[1] == "dense int8")
        note = f" ({pattern_ops} pattern ops)" if kind == "pattern fp32" else ""
        print(f"| {name} | {kind}{note} | {ms:.3f} | {dense_fp32 / ms:.2f}x | "
              f"{dense_int8 / ms:.2f}x | {size / 2**20:.3f} |")


if __name__ == "__main__":
    main()
