"""int8 vs fp32, dense vs pattern-sparse: 3x3 layers and whole models in LiteRT.

Per layer (ResNet-18's 3x3 conv shapes, stride 1 and 2, at the given
compression, int8 in and out so the file is the conv alone): XNNPACK's dense
int8 CONV_2D against the int8 pattern-conv custom op
(`ClickTrainPatternConv2DInt8`, the kernel variant dispatch picks, or
TF_CLICKTRAIN_KERNELS), interleaved, each sample clocked in wall time and in
the calling thread's CPU time (1 thread: both ops run on the calling thread,
so CPU time leaves out what other jobs take from a shared core); min and
median of each; the rate of each side in int8 GOPS (XNNPACK: dense ops; ours:
the non-zero ops, "effective") and as a fraction of `--peak_gops`, the core's
VPDPBUSD peak (Zen 4 at ~3.55 GHz: one 512-bit VPDPBUSD per cycle, double
pumped, 64 multiply-adds = 128 ops per cycle, 454 GOPS); and whether the two
agree bit for bit with LiteRT's reference kernels.

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
pattern-sparse at 8x (4 of 9 weights kept, 72% of kernels removed), each
kernel one of `--patterns` 4-of-9 patterns (4 unless told, as
prune_pattern keeps per layer by default). Weights
are random (speed and size do not depend on their values). Timing: median
(or, with `--statistic min` on a loaded machine, min) of interleaved samples,
each the mean of enough invokes to last ~20 ms.

Size: per network, the bytes of the 3x3 convs' weights in the dense fp32
file against every constant input of the pattern ops in the
`decide_by="size"` int8 and float files (values, pattern masks, kernel
index, bias, int8 filter scales), next to issue 10's goal of
1.2 / (4 x compression) for the int8 file.

Usage: python benchmarks/int8_speed.py [--rounds 9] [--compression 8]
       [--patterns 4] [--statistic min] [--skip_models] [--skip_layers]
       [--size_only] [--peak_gops 454.4]
"""

import argparse
import contextlib
import io
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from ai_edge_litert import interpreter as litert_interpreter  # noqa: E402

import tf_clicktrain as ct  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import reference_models  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pattern_conv_speed import PATTERNS  # noqa: E402
from pattern_conv_speed import pattern_sparsify  # noqa: E402
from pattern_conv_speed import time_interleaved  # noqa: E402

from ai_edge_litert import schema_py_generated as schema  # noqa: E402

from tf_clicktrain.tflite import compact_format  # noqa: E402
from tf_clicktrain.tflite import int8_pattern_rewrite  # noqa: E402
from tf_clicktrain.tflite import speed_decision  # noqa: E402

NETWORKS = (  # (name, build, input shape, leave the first conv dense)
    ("main job CNN 28x28x1",
     lambda: reference_models.vgg_style_cnn((28, 28, 1), widths=(16, 16, 32, 32, 64, 64)),
     (28, 28, 1), True),
    ("ResNet-18 224x224x3", reference_models.resnet18, (224, 224, 3), False),
)
CALIBRATION_IMAGES = 8
# ResNet-18's 3x3 convs (SAME): (input height = width, channels in, out, stride).
RESNET18_LAYERS = ((56, 64, 64, 1), (28, 128, 128, 1), (14, 256, 256, 1), (7, 512, 512, 1),
                   (56, 64, 128, 2), (28, 128, 256, 2), (14, 256, 512, 2))


def _quietly(function, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args, **kwargs)


def _invoker(interpreter, image):
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()  # warm-up: delegate application, caches
    return interpreter.invoke


def build_files(build, shape, first_conv_dense, compression, rng, patterns=PATTERNS):
    model = build()
    first = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    first_weights = first.get_weights()
    pattern_sparsify(model, compression, rng, patterns)
    if first_conv_dense:
        first.set_weights(first_weights)
    calibration = rng.uniform(0, 1, (CALIBRATION_IMAGES, 1, *shape)).astype(np.float32)

    def representative_dataset():
        for image in calibration:
            yield [image]

    qat = ct.quantize_model(model)
    qat(calibration[:, 0], training=True)  # sets the activation ranges
    # Every pattern-sparse 3x3 conv a float pattern op, for the size table.
    fp32_custom = _quietly(ct.tflite.convert, model, decide_by="size")
    return fp32_custom, {
        "dense fp32": _quietly(ct.tflite.convert, model, custom_ops=False),
        "dense int8": _quietly(ct.tflite.convert, model, custom_ops=False,
                               representative_dataset=representative_dataset),
        "pattern fp32": _quietly(ct.tflite.convert, model),
        "pattern int8": _quietly(ct.tflite.convert, qat),
        "pattern int8 custom": _quietly(ct.tflite.convert, qat, decide_by="size"),
    }


def _single_conv_files(size, channels, outputs, stride, compression, rng, patterns):
    """Builtin-only and custom-op int8 files of one pattern-sparse 3x3 conv."""
    model = keras.Sequential([
        keras.Input((size, size, channels)),
        keras.layers.Conv2D(outputs, 3, strides=stride, padding="same", activation="relu"),
    ])
    pattern_sparsify(model, compression, rng, patterns)
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


def layer_rows(compression, rounds, rng, patterns):
    """Per layer: name, dense ops, bit-exactness and {clock: {statistic: (dense ms, ours ms)}}."""
    rows = []
    for size, channels, outputs, stride in RESNET18_LAYERS:
        builtin, custom = _single_conv_files(size, channels, outputs, stride, compression, rng,
                                             patterns)
        inputs = rng.integers(-128, 128, (1, size, size, channels)).astype(np.int8)
        xnnpack = litert_interpreter.Interpreter(model_content=builtin, num_threads=1)
        ours = ct.tflite.Interpreter(model_content=custom, num_threads=1)
        invokes = {"dense": _invoker(xnnpack, inputs), "ours": _invoker(ours, inputs)}
        exact = np.array_equal(
            ours.get_tensor(ours.get_output_details()[0]["index"]),
            _reference_output(builtin, inputs))
        wall, cpu = speed_decision.interleaved_samples(invokes, rounds, 0.02,
                                                       return_thread_time=True)
        times = {}
        for clock, samples in (("wall", wall), ("cpu", cpu)):
            times[clock] = {
                name: tuple(reduce(samples[side]) * 1e3 for side in ("dense", "ours"))
                for name, reduce in (("min", min), ("median", statistics.median))}
        out_size = (size + stride - 1) // stride
        dense_ops = 2 * out_size * out_size * outputs * channels * 9
        name = f"{size}x{size}x{channels} -> {outputs}" + (f" s{stride}" if stride > 1 else "")
        rows.append((name, dense_ops, exact, times))
        print(f"done: layer {name}", file=sys.stderr)
    return rows


def print_layer_rows(rows, compression, rounds, peak_gops):
    print(f"\n1 thread, batch 1, one 3x3 conv at {compression:g}x, int8 in/out, "
          f"{rounds} interleaved samples; ms as min / median; GOPS and % of the "
          f"{peak_gops:g} GOPS VPDPBUSD peak from the min")
    for clock, title in (("cpu", "calling thread's CPU time"), ("wall", "wall time")):
        print(f"\n{title}:")
        print("| layer | XNNPACK dense int8 ms | pattern int8 op ms | speedup (min) | "
              "speedup (median) | XNNPACK GOPS (% peak) | ours eff. GOPS (% peak) | "
              "bit-exact |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for name, dense_ops, exact, times in rows:
            (dense_min, ours_min), (dense_median, ours_median) = (
                times[clock]["min"], times[clock]["median"])
            dense_gops = dense_ops / dense_min / 1e6
            ours_gops = dense_ops / compression / ours_min / 1e6
            print(f"| {name} | {dense_min:.3f} / {dense_median:.3f} | "
                  f"{ours_min:.3f} / {ours_median:.3f} | {dense_min / ours_min:.2f}x | "
                  f"{dense_median / ours_median:.2f}x | {dense_gops:.0f} "
                  f"({100 * dense_gops / peak_gops:.0f}%) | {ours_gops:.0f} "
                  f"({100 * ours_gops / peak_gops:.0f}%) | {'yes' if exact else 'NO'} |")


# The pattern-conv ops' constant inputs in the compact format the exporter
# writes (input 0 is the activations): pattern_masks, kernel_index, values,
# bias and (int8) filter_scales.
PATTERN_OP_INPUTS = {
    int8_pattern_rewrite.OP_NAME: {1: "index", 2: "index", 3: "values", 4: "scales",
                                   5: "scales"},
    compact_format.CONV_OP_NAME: {1: "index", 2: "index", 3: "values", 4: "scales"},
}


def _constant_bytes(model, subgraph, tensor_index):
    if tensor_index < 0:
        return 0
    data = model.buffers[subgraph.tensors[tensor_index].buffer].data
    return 0 if data is None else len(data)


def conv3x3_bytes(dense_fp32, pattern_file, op_name):
    """Bytes of the 3x3 convs' weights in two files of one network.

    Returns (fp32 bytes, {"values", "index", "scales": bytes}): the fp32
    file's 3x3 CONV_2D filters, and every constant input of the pattern
    file's `op_name` ops: values (int8 or float32); pattern masks and kernel
    index ("index"); bias and, int8, per-channel filter scales ("scales").
    """
    fp32 = 0
    model = schema.ModelT.InitFromPackedBuf(bytearray(dense_fp32), 0)
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            if builtin != schema.BuiltinOperator.CONV_2D:
                continue
            shape = list(subgraph.tensors[op.inputs[1]].shape)
            if shape[1:3] == [3, 3]:
                fp32 += _constant_bytes(model, subgraph, op.inputs[1])
    parts = dict.fromkeys(("values", "index", "scales"), 0)
    model = schema.ModelT.InitFromPackedBuf(bytearray(pattern_file), 0)
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if (code.customCode or b"").decode() != op_name:
                continue
            for position, part in PATTERN_OP_INPUTS[op_name].items():
                if position < len(op.inputs):
                    parts[part] += _constant_bytes(model, subgraph, op.inputs[position])
    return fp32, parts


def print_size_rows(rows, compression, patterns):
    print(f"\n3x3 conv weights, fp32 dense file vs every constant of the pattern ops "
          f"(`decide_by=\"size\"`), {patterns} patterns per layer; goal: int8 bytes "
          f"<= 1.2 / (4 x {compression:g}) of the fp32 bytes")
    print("| model | pattern file | fp32 3x3 weights MB | values MB | pattern masks + kernel "
          "index MB | bias (+ scales) MB | total / fp32 | int8 goal | values-only "
          "compression |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    bound = 1.2 / (4 * compression)
    for name, kind, fp32, parts in rows:
        total = sum(parts.values())
        ratio = total / fp32
        value_bytes = 1 if kind == "int8" else 4
        goal = (f"{bound:.4f} ({'met' if ratio <= bound else 'missed'})" if kind == "int8"
                else "")
        print(f"| {name} | {kind} | {fp32 / 2**20:.3f} | {parts['values'] / 2**20:.3f} | "
              f"{parts['index'] / 2**20:.3f} | {parts['scales'] / 2**20:.3f} | "
              f"**{ratio:.4f}** (1 / {1 / ratio:.1f}) | {goal} | "
              f"{fp32 / 4 / (parts['values'] / value_bytes):.2f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="samples per file")
    parser.add_argument("--compression", type=float, default=8.0,
                        help="weight compression of the pattern-sparse 3x3 convs")
    parser.add_argument("--statistic", choices=["median", "min"], default="median",
                        help="min of the interleaved samples suits a loaded machine")
    parser.add_argument("--skip_models", action="store_true",
                        help="time the single layers only")
    parser.add_argument("--skip_layers", action="store_true",
                        help="time the whole models only")
    parser.add_argument("--peak_gops", type=float, default=454.4,
                        help="the core's int8 dot-product peak, GOPS")
    parser.add_argument("--size_only", action="store_true",
                        help="of the whole models, print the 3x3 weight bytes only")
    parser.add_argument("--patterns", type=int, default=4,
                        choices=range(1, len(PATTERNS) + 1),
                        help="patterns per layer (the first of pattern_conv_speed.PATTERNS), "
                             "by default prune_pattern's 4")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    patterns = PATTERNS[:args.patterns]
    if not args.skip_layers:
        layers = layer_rows(args.compression, args.rounds, rng, patterns)
        print_layer_rows(layers, args.compression, args.rounds, args.peak_gops)
    if args.skip_models:
        return
    rows = []
    size_rows = []
    for name, build, shape, first_conv_dense in NETWORKS:
        fp32_custom, files = build_files(build, shape, first_conv_dense, args.compression,
                                         rng, patterns)
        size_rows.append((name, "int8", *conv3x3_bytes(
            files["dense fp32"], files["pattern int8 custom"], int8_pattern_rewrite.OP_NAME)))
        size_rows.append((name, "fp32", *conv3x3_bytes(
            files["dense fp32"], fp32_custom, compact_format.CONV_OP_NAME)))
        if args.size_only:
            continue
        image = rng.uniform(0, 1, (1, *shape)).astype(np.float32)
        invokes = {}
        for kind, tflite_bytes in files.items():
            interpreter_class = (ct.tflite.Interpreter if kind.startswith("pattern")
                                 else litert_interpreter.Interpreter)
            invokes[kind] = _invoker(
                interpreter_class(model_content=tflite_bytes, num_threads=1), image)
        reduce = min if args.statistic == "min" else statistics.median
        clocks = speed_decision.interleaved_samples(invokes, args.rounds, 0.02,
                                                    return_thread_time=True)
        times = [{kind: reduce(samples[kind]) * 1e3 for kind in files} for samples in clocks]
        for kind, tflite_bytes in files.items():
            pattern_ops = ct.tflite.count_pattern_ops(tflite_bytes)
            rows.append((name, kind, times[0][kind], times[1][kind], len(tflite_bytes),
                         pattern_ops))
        print(f"done: {name}", file=sys.stderr)

    print_size_rows(size_rows, args.compression, args.patterns)
    if args.size_only:
        return
    print(f"\n1 thread, batch 1, 3x3 convs at {args.compression:g}x, {args.statistic} of "
          f"{args.rounds} interleaved samples, wall time and the calling thread's CPU time")
    print("| model | file | wall ms | CPU ms | vs dense fp32 (CPU) | vs dense int8 (wall) | "
          "vs dense int8 (CPU) | size MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, kind, wall_ms, cpu_ms, size, pattern_ops in rows:
        same = [r for r in rows if r[0] == name]
        dense_fp32 = next(r for r in same if r[1] == "dense fp32")
        dense_int8 = next(r for r in same if r[1] == "dense int8")
        note = f" ({pattern_ops} pattern ops)" if kind.startswith("pattern") else ""
        print(f"| {name} | {kind}{note} | {wall_ms:.3f} | {cpu_ms:.3f} | "
              f"{dense_fp32[3] / cpu_ms:.2f}x | {dense_int8[2] / wall_ms:.2f}x | "
              f"{dense_int8[3] / cpu_ms:.2f}x | {size / 2**20:.3f} |")


if __name__ == "__main__":
    main()
