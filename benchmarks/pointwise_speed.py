"""Sparse 1x1 conv op vs XNNPACK's dense 1x1 CONV_2D in LiteRT: layers, models.

One Keras Conv2D 1x1 (batch 1) of MobileNetV2 / EfficientNetB0 / ResNet-50 pointwise shapes,
its weights zeroed at random (unstructured, as `prune_pattern` prunes 1x1
convs) to 70%, 80% and 90% sparsity. The builtin-only file (zeros kept) runs
in LiteRT's stock Interpreter, whose CONV_2D is XNNPACK's; the same file
with the layer rewritten to `ClickTrainSparseConv1x1` runs in
ct.tflite.Interpreter.

Timing: both files of one row run in the same process, interleaved round
by round (rotating the order), each sample the mean of enough invokes to
last ~10 ms; the figure is the median of the samples. With one thread both
interpreters run on the calling thread, so each sample is also clocked in
that thread's CPU time, which leaves out the time the scheduler gives to
other jobs on a shared machine; the "cpu" columns are those medians. With
two threads only wall time is meaningful.

Whole models (--only models): keras.applications MobileNetV2 and ResNet50
at 224x224 with random weights, every 1x1 conv zeroed to the sparsity, BN
statistics randomised; the builtin-only file against the same file with
its 1x1 convs rewritten (3x3 and depthwise convs stay builtin).

GFLOP/s: XNNPACK = dense FLOPs / time (2 * Cin * Cout * H * W); ours
effective = the same dense FLOPs / our time; ours useful = 2 * (kept
weights) * H * W / our time.

Usage:
  python benchmarks/pointwise_speed.py [--rounds 15] [--threads 1 2] [--only layers|models]
      [--sparsities 0.6 0.7 0.8 0.9] [--kernels scalar|avx2|avx512]
"""

import argparse
import contextlib
import io
import math
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="samples per variant")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.6, 0.7, 0.8, 0.9])
    parser.add_argument("--only", choices=["layers", "models"], default=None)
    parser.add_argument(
        "--kernels", default=None, help="force a kernel variant (TF_CLICKTRAIN_KERNELS)"
    )
    parser.add_argument(
        "--block", type=int, default=1,
        help="zero weights in blocks of one input channel x this many consecutive "
             "output channels, as block_size=(1, N) pruning does (1: unstructured)")
    return parser.parse_args()


ARGS = _parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.kernels:
    os.environ["TF_CLICKTRAIN_KERNELS"] = ARGS.kernels  # read once, at library load

import keras  # noqa: E402
import numpy as np  # noqa: E402
from ai_edge_litert import interpreter as litert_interpreter  # noqa: E402

from tf_clicktrain import tflite as ct_tflite  # noqa: E402
from tf_clicktrain.tflite import model_rewrite  # noqa: E402
from tf_clicktrain.tflite import pointwise_rewrite  # noqa: E402
from tf_clicktrain.tflite import speed_decision  # noqa: E402
from _timing import prepared_invoke  # noqa: E402

LAYERS = (  # (network, size, input channels, output channels)
    ("ResNet-50", 56, 64, 256),
    ("ResNet-50", 56, 256, 64),
    ("ResNet-50", 28, 128, 512),
    ("ResNet-50", 28, 512, 128),
    ("ResNet-50", 14, 256, 1024),
    ("ResNet-50", 7, 512, 2048),
    ("MobileNetV2", 112, 16, 96),
    ("MobileNetV2", 56, 24, 144),
    ("MobileNetV2", 56, 144, 24),
    ("MobileNetV2", 14, 96, 576),
    ("MobileNetV2", 14, 576, 96),
    ("MobileNetV2", 7, 960, 160),
    ("EfficientNetB0", 28, 40, 240),
    ("EfficientNetB0", 28, 240, 40),
)


def time_interleaved(invokes, rounds, sample_seconds=0.01):
    """Median (wall ms, calling-thread CPU ms) per invoke, sampled round-robin."""
    wall, cpu = speed_decision.interleaved_samples(
        invokes, rounds, sample_seconds, return_thread_time=True)
    return {name: (statistics.median(wall[name]) * 1e3, statistics.median(cpu[name]) * 1e3)
            for name in invokes}


def zero_at_random(kernel, sparsity, rng, block=None):
    """Zeroes `sparsity` of a 1x1 kernel in place: single weights, or whole
    blocks of one input channel x `block` consecutive output channels."""
    block = block or (ARGS.block if ARGS is not None else 1)
    if kernel.shape[-1] % block != 0:
        block = 1
    blocks = kernel.reshape(-1, block)
    removed = rng.permutation(len(blocks))[: math.ceil(sparsity * len(blocks))]
    blocks[removed] = 0.0


def sparse_pointwise_model(size, cin, cout, sparsity, rng):
    model = keras.Sequential([keras.Input((size, size, cin)), keras.layers.Conv2D(cout, 1)])
    kernel, bias = model.layers[0].get_weights()
    zero_at_random(kernel, sparsity, rng)
    model.layers[0].set_weights([kernel, rng.normal(size=bias.shape).astype(np.float32)])
    return model, int(np.count_nonzero(kernel))


def bench_layers(threads, sparsities, rounds, rng):
    print(f"\n== one 1x1 conv, batch 1, {threads} thread(s), blocks of 1x{ARGS.block}, median of {rounds} "
          "interleaved samples ==")
    on_cpu = threads == 1
    clock = "cpu" if on_cpu else "wall"
    print(f"{'layer':<28}{'sparsity':>9}{'XNNPACK ms':>11}{'ours ms':>9}{'speedup':>9}"
          f"{'(wall)':>8}{'XNNPACK GF/s':>13}{'ours eff.':>10}{'ours useful':>12}{'rel err':>9}")
    print(f"  (ms and GFLOP/s from {clock} time; the (wall) column is the wall-time speedup)")
    rows = []
    for network, size, cin, cout in LAYERS:
        name = f"{network} {size}x{size}x{cin}->{cout}"
        inputs = rng.normal(size=(1, size, size, cin)).astype(np.float32)
        invokes, outputs, layers = {}, {}, {}
        for sparsity in sparsities:
            model, kept = sparse_pointwise_model(size, cin, cout, sparsity, rng)
            with contextlib.redirect_stdout(io.StringIO()):
                builtin = ct_tflite.convert(model, custom_ops=False)
            ours, (report,) = model_rewrite.replace_pattern_convs(builtin, max_size_ratio=1.0)
            if not report.replaced:
                raise RuntimeError(f"{name} at {sparsity} stayed builtin: {report.reason}")
            if not invokes:  # XNNPACK's dense time does not depend on the zeros
                dense = litert_interpreter.Interpreter(model_content=builtin, num_threads=threads)
                invokes["dense"], outputs["dense"] = prepared_invoke(dense, inputs)
            interpreter = ct_tflite.Interpreter(model_content=ours, num_threads=threads)
            invokes[sparsity], outputs[sparsity] = prepared_invoke(interpreter, inputs)
            layers[sparsity] = (model, kept)
        times = time_interleaved(invokes, rounds)
        dense_flops = 2.0 * size * size * cin * cout
        pick = 1 if on_cpu else 0
        dense_ms = times["dense"][pick]
        for sparsity in sparsities:
            model, kept = layers[sparsity]
            expected = model.predict(inputs, verbose=0)
            error = float(np.abs(outputs[sparsity]() - expected).max() / np.abs(expected).max())
            ms = times[sparsity][pick]
            row = dict(layer=name, threads=threads, sparsity=sparsity, clock=clock,
                       dense_ms=dense_ms, ours_ms=ms, speedup=dense_ms / ms,
                       wall_speedup=times["dense"][0] / times[sparsity][0],
                       dense_gflops=dense_flops / dense_ms / 1e6,
                       effective_gflops=dense_flops / ms / 1e6,
                       useful_gflops=2.0 * size * size * kept / ms / 1e6, error=error)
            rows.append(row)
            print(f"{name:<28}{sparsity:>9.0%}{dense_ms:>11.3f}{ms:>9.3f}"
                  f"{row['speedup']:>8.2f}x{row['wall_speedup']:>7.2f}x{row['dense_gflops']:>13.1f}"
                  f"{row['effective_gflops']:>10.1f}{row['useful_gflops']:>12.1f}{error:>9.1e}")
        sys.stdout.flush()
    return rows


def sparse_pointwise_application(build, sparsity, rng):
    model = build(weights=None, input_shape=(224, 224, 3))
    for layer in model.layers:
        if type(layer) is keras.layers.Conv2D and tuple(layer.kernel_size) == (1, 1):
            weights = layer.get_weights()
            zero_at_random(weights[0], sparsity, rng)
            layer.set_weights(weights)
        elif isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, channels), rng.normal(size=channels) * 0.1,
                               rng.normal(scale=0.1, size=channels),
                               rng.uniform(0.5, 2.0, channels)])
    return model


def bench_models(threads, sparsities, rounds, rng):
    on_cpu = threads == 1
    print(f"\n== whole models 224x224, batch 1, {threads} thread(s), median of {rounds} "
          f"interleaved samples, {'cpu' if on_cpu else 'wall'} time ==")
    print(f"{'model':<14}{'1x1 sparsity':>13}{'1x1 replaced':>13}{'size ratio':>11}"
          f"{'builtin ms':>11}{'ours ms':>9}{'speedup':>9}{'rel err':>9}")
    for name, build in (("MobileNetV2", keras.applications.MobileNetV2),
                        ("ResNet50", keras.applications.ResNet50)):
        inputs = rng.normal(size=(1, 224, 224, 3)).astype(np.float32)
        for sparsity in sparsities:
            with contextlib.redirect_stdout(io.StringIO()):
                builtin = ct_tflite.convert(sparse_pointwise_application(build, sparsity, rng),
                                            custom_ops=False)
            ours, reports = model_rewrite.replace_pattern_convs(builtin)
            replaced = sum(report.replaced for report in reports)
            dense = litert_interpreter.Interpreter(model_content=builtin, num_threads=threads)
            interpreter = ct_tflite.Interpreter(model_content=ours, num_threads=threads)
            invokes, outputs = {}, {}
            invokes["dense"], outputs["dense"] = prepared_invoke(dense, inputs)
            invokes["ours"], outputs["ours"] = prepared_invoke(interpreter, inputs)
            times = time_interleaved(invokes, rounds, sample_seconds=0.05)
            pick = 1 if on_cpu else 0
            expected = outputs["dense"]()
            error = float(np.abs(outputs["ours"]() - expected).max() / np.abs(expected).max())
            print(f"{name:<14}{sparsity:>13.0%}{replaced:>13}{len(ours) / len(builtin):>11.2f}"
                  f"{times['dense'][pick]:>11.2f}{times['ours'][pick]:>9.2f}"
                  f"{times['dense'][pick] / times['ours'][pick]:>8.2f}x{error:>9.1e}")
            sys.stdout.flush()


def main():
    args = ARGS
    # Time the op at every sparsity asked for, also below the threshold at
    # which the converter keeps a layer builtin (which these figures set).
    pointwise_rewrite.MIN_SPARSITY = 0.0
    rng = np.random.default_rng(0)
    print("kernels:", ct_tflite.native_library.library_info()["kernels"])
    for threads in args.threads:
        if args.only == "models":
            bench_models(threads, args.sparsities, args.rounds, rng)
            continue
        rows = bench_layers(threads, args.sparsities, args.rounds, rng)
        for sparsity in args.sparsities:
            speedups = [row["speedup"] for row in rows if row["sparsity"] == sparsity]
            print(f"{threads} thread(s), {sparsity:.0%} sparse: speedup min "
                  f"{min(speedups):.2f}x, median {statistics.median(speedups):.2f}x, "
                  f"max {max(speedups):.2f}x")
        if args.only is None:
            bench_models(threads, args.sparsities, args.rounds, rng)


if __name__ == "__main__":
    main()
