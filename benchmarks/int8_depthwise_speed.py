"""The int8 pattern depthwise op against XNNPACK's int8 depthwise conv.

Per layer (MobileNetV2's 3x3 depthwise shapes, SAME, RELU6, int8 in and
out so the file is the layer alone), one pattern-sparse DepthwiseConv2D
(each channel keeps one of 4 patterns of `--taps` taps; `--removed` of the
channels lose their kernel), quantization-aware model from
`ct.quantize_model`:

- XNNPACK: the builtin-only file (`custom_ops=False`), builtin int8
  DEPTHWISE_CONV_2D in LiteRT's stock interpreter (XNNPACK's QS8 kernel);
- ours: `ct.tflite.convert(qat, decide_by="size")`, the
  `ClickTrainPatternDepthwiseConv2DInt8` custom op (the row-kernel variant
  dispatch picks, or TF_CLICKTRAIN_KERNELS) in `ct.tflite.Interpreter`.

1 thread, batch 1, interleaved round by round, each sample the mean of
enough invokes to last `--sample_ms`; medians (and mins) over `--rounds`
rounds, in wall time and in the calling thread's CPU time (1 thread: both
run on the calling thread, so CPU time leaves out what other jobs take from
a shared core). Also prints whether our output equals LiteRT's reference
DEPTHWISE_CONV_2D bit for bit, and the speed decision's verdict
(`decide_by="speed"`) for the layer.

Usage: python benchmarks/int8_depthwise_speed.py [--rounds 11] [--taps 4]
       [--removed 0.0] [--sample_ms 20]
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
from tf_clicktrain.tflite import speed_decision  # noqa: E402

# MobileNetV2's 3x3 depthwise convs: (input height = width, channels, stride).
LAYERS = ((112, 96, 2), (56, 144, 1), (56, 144, 2), (28, 192, 1), (14, 384, 1), (7, 960, 1))
CALIBRATION_IMAGES = 4


def _quietly(function, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args, **kwargs)


def _layer_model(size, channels, stride, taps, removed, rng):
    model = keras.Sequential([
        keras.Input((size, size, channels)),
        keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", activation="relu6"),
    ])
    layer = model.layers[0]
    library = np.zeros((4, 9), np.float32)
    np.put_along_axis(library, np.argsort(rng.random((4, 9)), axis=1)[:, :taps], 1.0, axis=1)
    keep = library[rng.integers(0, 4, channels)] * (rng.random(channels) >= removed)[:, None]
    layer.kernel.assign(layer.kernel.numpy() * keep.T.reshape(3, 3, channels, 1))
    qat = ct.quantize_model(model)
    qat(rng.normal(0, 1, (CALIBRATION_IMAGES, size, size, channels)).astype(np.float32),
        training=True)
    return qat


def _invoker(interpreter, image):
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()  # warm-up: delegate application, caches
    return interpreter.invoke


def _output(interpreter):
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def layer_row(size, channels, stride, args, rng):
    qat = _layer_model(size, channels, stride, args.taps, args.removed, rng)
    io_types = dict(inference_input_type="int8", inference_output_type="int8")
    builtin = _quietly(ct.tflite.convert, qat, custom_ops=False, **io_types)
    # The shared compact format costs a byte per channel and pattern: size
    # is not what this benchmark is about.
    custom = _quietly(ct.tflite.convert, qat, decide_by="size", max_size_ratio=4.0, **io_types)
    assert ct.tflite.count_pattern_ops(custom) == 1, "the layer was not replaced"
    _, reports = _quietly(ct.tflite.convert, qat, max_size_ratio=4.0, return_report=True,
                          **io_types)
    (report,) = reports
    inputs = rng.integers(-128, 128, (1, size, size, channels)).astype(np.int8)
    xnnpack = litert_interpreter.Interpreter(model_content=builtin, num_threads=1)
    ours = ct.tflite.Interpreter(model_content=custom, num_threads=1)
    invokes = {"xnnpack": _invoker(xnnpack, inputs), "ours": _invoker(ours, inputs)}
    reference = litert_interpreter.Interpreter(
        model_content=builtin,
        experimental_op_resolver_type=litert_interpreter.OpResolverType.BUILTIN_REF)
    reference.allocate_tensors()
    reference.set_tensor(reference.get_input_details()[0]["index"], inputs)
    reference.invoke()
    exact = np.array_equal(_output(ours), _output(reference))
    wall, cpu = speed_decision.interleaved_samples(invokes, args.rounds, args.sample_ms / 1e3,
                                                   return_thread_time=True)
    times = {
        clock: {side: (statistics.median(samples[side]) * 1e3, min(samples[side]) * 1e3)
                for side in ("xnnpack", "ours")}
        for clock, samples in (("cpu", cpu), ("wall", wall))
    }
    name = f"{size}x{size}x{channels}" + (f" s{stride}" if stride > 1 else "")
    return name, exact, times, report.replaced


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--taps", type=int, default=4, help="kept taps per pattern (1-9)")
    parser.add_argument("--removed", type=float, default=0.0,
                        help="fraction of channels whose kernel is removed")
    parser.add_argument("--sample_ms", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"1 thread, batch 1, one 3x3 depthwise conv (SAME, RELU6), {args.taps} of 9 taps "
          f"kept, {args.removed:.0%} of kernels removed, int8 in/out; median (min) of "
          f"{args.rounds} interleaved samples; kernels: "
          f"{os.environ.get('TF_CLICKTRAIN_KERNELS', 'dispatch')}")
    print(f"| layer | XNNPACK cpu ms | ours cpu ms | speedup (cpu) | XNNPACK wall ms | "
          f"ours wall ms | speedup (wall) | bit-exact | speed decision |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for size, channels, stride in LAYERS:
        name, exact, times, replaced = layer_row(size, channels, stride, args, rng)
        cells = []
        for clock in ("cpu", "wall"):
            (xnn, xnn_min), (ours, ours_min) = times[clock]["xnnpack"], times[clock]["ours"]
            cells += [f"{xnn:.4f} ({xnn_min:.4f})", f"{ours:.4f} ({ours_min:.4f})",
                      f"{xnn / ours:.2f}x"]
        verdict = "custom op" if replaced else "builtin"
        print(f"| {name} | {' | '.join(cells)} | {'yes' if exact else 'NO'} | {verdict} |",
              flush=True)


if __name__ == "__main__":
    main()
