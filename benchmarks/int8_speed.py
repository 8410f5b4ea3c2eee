"""int8 vs fp32, dense vs pattern-sparse: 3x3 layers and whole models in LiteRT.

Per layer (ResNet-18's 3x3 conv shapes at the given compression, int8 in and
out so the file is the conv alone): XNNPACK's dense int8 CONV_2D against the
int8 pattern-conv custom op (`ClickTrainPatternConv2DInt8`, scalar kernel),
interleaved, and whether the two agree bit for bit with LiteRT's reference
kernels.

Whole models: five files of the same network, timed in one run, interleaved
round by round:

- dense fp32: the builtin-only file (`custom_ops=False`), XNNPACK's CONV_2D;
- dense int8: TFLiteConverter full-integer post-training quantization
  (`representative_dataset`), builtin int8 ops, XNNPACK's QS8 kernels;
- pattern fp32: `ct.tflite.convert(model)` (the pattern-conv custom op where
  it measured faster, `decide_by="speed"`), run by `ct.tflite.Interpreter`;
- pattern int8: `ct.quantize_model(model)`, ranges set on calibration
  images, `ct.tflite.convert(qat_model)`: full-integer, each pattern-sparse
  3x3 conv the int8 custom op only where it measured faster
  (`decide_by="speed"`), else builtin;
- pattern int8 custom: the same with `decide_by="size"`: every
  pattern-sparse 3x3 conv is the int8 custom op.

Networks: the main job's VGG-style CNN (widths 16-16-32-32-64-64) on 28x28x1
and ResNet-18 on 224x224x3, every 3x3 conv but the main job's first one
pattern-sparse at 8x (4 of 9 weights kept, 72% of kernels removed). Weights
are random (speed and size do not depend on their values). Timing: median
(or, with `--statistic min` on a loaded machine, min) of interleaved samples,
each the mean of enough invokes to last ~20 ms.

Usage: python benchmarks/int8_speed.py [--rounds 9] [--compression 8]
       [--statistic min] [--skip_models]
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
# ResNet-18's 3x3 convs (stride 1, SAME): (height = width, channels in = out).
RESNET18_LAYERS = ((56, 64), (28, 128), (14, 256), (7, 512))


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
        "pattern int8 custom": _quietly(ct.tflite.convert, qat, decide_by="size"),
    }


def _single_conv_files(size, channels, compression, rng):
    """Builtin-only and custom-op int8 files of one pattern-sparse 3x3 conv."""
    model = keras.Sequential([
        keras.Input((size, size, channels)),
        keras.layers.Conv2D(channels, 3, padding="same", activation="relu"),
    ])
    pattern_sparsify(model, compression, rng)
    qat = ct.quantize_model(model)
    qat(rng.normal(0, 1, (CALIBRATION_IMAGES, size, size, channels)).astype(np.float32),
        training=True)
    io = dict(inference_input_type="int8", inference_output_type="int8")
    builtin = _quietly(ct.tflite.convert, qat, custom_ops=False, **io)
    custom = _quietly(ct.tflite.convert, qat, decide_by="size", **io)
    assert ct.tflite.count_pattern_ops(custom) == 1, "the layer was not replaced"
    return builtin, custom


def _reference_output(tflite_bytes, inputs):
    interpreter = litert_interpreter.Interpreter(
        model_content=tflite_bytes,
        experimental_op_resolver_type=litert_interpreter.OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], inputs)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def layer_rows(compression, rounds, statistic, rng):
    rows = []
    for size, channels in RESNET18_LAYERS:
        builtin, custom = _single_conv_files(size, channels, compression, rng)
        inputs = rng.integers(-128, 128, (1, size, size, channels)).astype(np.int8)
        xnnpack = litert_interpreter.Interpreter(model_content=builtin, num_threads=1)
        ours = ct.tflite.Interpreter(model_content=custom, num_threads=1)
        invokes = {"XNNPACK dense int8": _invoker(xnnpack, inputs),
                   "pattern int8 op": _invoker(ours, inputs)}
        exact = np.array_equal(
            ours.get_tensor(ours.get_output_details()[0]["index"]),
            _reference_output(builtin, inputs))
        times = time_interleaved(invokes, rounds, statistic=statistic)
        rows.append((f"{size}x{size}x{channels} -> {channels}", times["XNNPACK dense int8"],
                     times["pattern int8 op"], exact))
        print(f"done: layer {size}x{size}x{channels}", file=sys.stderr)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="samples per file")
    parser.add_argument("--compression", type=float, default=8.0,
                        help="weight compression of the pattern-sparse 3x3 convs")
    parser.add_argument("--statistic", choices=["median", "min"], default="median",
                        help="min of the interleaved samples suits a loaded machine")
    parser.add_argument("--skip_models", action="store_true",
                        help="time the single layers only")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    layers = layer_rows(args.compression, args.rounds, args.statistic, rng)
    print(f"\n1 thread, batch 1, one 3x3 conv at {args.compression:g}x, int8 in/out, "
          f"{args.statistic} of {args.rounds} interleaved samples")
    print("| layer | XNNPACK dense int8 ms | pattern int8 op ms | speedup | "
          "bit-exact vs LiteRT reference |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, dense_ms, ours_ms, exact in layers:
        print(f"| {name} | {dense_ms:.3f} | {ours_ms:.3f} | {dense_ms / ours_ms:.2f}x | "
              f"{'yes' if exact else 'NO'} |")
    if args.skip_models:
        return
    rows = []
    for name, build, shape, first_conv_dense in NETWORKS:
        files = build_files(build, shape, first_conv_dense, args.compression, rng)
        image = rng.uniform(0, 1, (1, *shape)).astype(np.float32)
        invokes = {}
        for kind, tflite_bytes in files.items():
            interpreter_class = (ct.tflite.Interpreter if kind.startswith("pattern")
                                 else litert_interpreter.Interpreter)
            invokes[kind] = _invoker(
                interpreter_class(model_content=tflite_bytes, num_threads=1), image)
        times = time_interleaved(invokes, args.rounds, statistic=args.statistic)
        for kind, tflite_bytes in files.items():
            pattern_ops = ct.tflite.count_pattern_ops(tflite_bytes)
            rows.append((name, kind, times[kind], len(tflite_bytes), pattern_ops))
        print(f"done: {name}", file=sys.stderr)

    print(f"\n1 thread, batch 1, 3x3 convs at {args.compression:g}x, {args.statistic} of "
          f"{args.rounds} interleaved samples")
    print("| model | file | ms | vs dense fp32 | vs dense int8 | size MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, kind, ms, size, pattern_ops in rows:
        dense_fp32 = next(r[2] for r in rows if r[0] == name and r[1] == "dense fp32")
        dense_int8 = next(r[2] for r in rows if r[0] == name and r[1] == "dense int8")
        note = f" ({pattern_ops} pattern ops)" if kind.startswith("pattern") else ""
        print(f"| {name} | {kind}{note} | {ms:.3f} | {dense_fp32 / ms:.2f}x | "
              f"{dense_int8 / ms:.2f}x | {size / 2**20:.3f} |")


if __name__ == "__main__":
    main()
