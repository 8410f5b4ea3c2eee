"""Pattern-conv op vs XNNPACK's dense CONV_2D in LiteRT: layers and models.

Per layer (ResNet-18 / VGG shapes, one 3x3 conv, batch 1): a Keras model with
one Conv2D whose kernels keep 4 of 9 weights (8 patterns, centre kept, as
PatDNN's library) and a fraction of kernels giving 4x, 8x and 12x weight
compression (kept kernels = 9 / (4 * compression)), runs of --filter_group
consecutive filters (default 4, what `ct.prune_pattern` uses for 3x3 convs
of 64+ filters) keeping the same channels with the same patterns. The pruned
file runs
through ct.tflite.Interpreter (our op); the builtin-only file of the same
layer (zeros kept) runs through LiteRT's stock Interpreter, whose CONV_2D is
XNNPACK's. Whole models: ResNet-18 at 224x224 (3x3 convs pattern-sparse, the
7x7 stem, 1x1 shortcuts and the classifier dense) and the VGG-style CNN on
28x28x1, pruned .tflite vs dense .tflite.

Timing: every variant of one row runs in the same process, interleaved
round by round (rotating the order), each sample the mean of enough invokes
to last --sample_ms (default 20 ms); the figure is the median of the
samples. On a machine whose cores other jobs keep busy, `--statistic min`
with short samples (e.g. --sample_ms 3 --rounds 25) reports the fastest
sample of each side instead: the closest either side gets to an idle core.

GFLOP/s: dense = 2 * 9 * Cin * Cout * Hout * Wout / time for XNNPACK;
effective = 2 * (non-zero weights) * Hout * Wout / time for our op (the
non-zero FLOPs only).

--peak_gflops P (one core's FMA peak, e.g. measured with a chain of
independent FMAs) adds each side's fraction of that peak per thread.

--only scaling times, per layer, both sides on 1 and on 2 threads (four
interpreters interleaved in one run) and prints each side's 2-thread
speedup over its own 1-thread time. On a machine with 2 cores shared with
other jobs use `--statistic min` with short samples: a 2-thread sample is
fast only when both cores were free, so the fastest samples are the ones
that measure the op rather than the neighbours. `--realtime_priority N`
runs the timed part (and every thread the interpreters start) under
SCHED_FIFO priority N, so other jobs' processes do not take the cores in the
middle of a sample (needs CAP_SYS_NICE; the kernel still leaves 5% of each
second to other tasks).

Usage:
  python benchmarks/pattern_conv_speed.py [--rounds 7] [--threads 1 2]
      [--only layers|models|scaling] [--kernels scalar|avx2|avx512] [--peak_gflops P]
      [--filter_group G]
"""

import argparse
import contextlib
import io
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="samples per variant")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", choices=["layers", "models", "scaling"], default=None)
    parser.add_argument("--compressions", type=float, nargs="+", default=[4.0, 8.0, 12.0])
    parser.add_argument("--filter_group", type=int, default=4,
                        help="filters per group sharing channels and patterns "
                             "(prune_pattern's filter_group; it uses 4 for 3x3 "
                             "convs of 64+ filters, as all these layers are; "
                             "1 prunes every filter alone)")
    parser.add_argument("--statistic", choices=["median", "min"], default="median")
    parser.add_argument("--sample_ms", type=float, default=20.0)
    parser.add_argument("--peak_gflops", type=float, default=None,
                        help="one core's fp32 FMA peak, for a fraction-of-peak column")
    parser.add_argument("--realtime_priority", type=int, default=None,
                        help="time under SCHED_FIFO at this priority (1-99)")
    parser.add_argument(
        "--kernels", default=None,
        help="force a kernel variant (TF_CLICKTRAIN_KERNELS), e.g. scalar for the baseline",
    )
    return parser.parse_args()


ARGS = _parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.kernels:
    os.environ["TF_CLICKTRAIN_KERNELS"] = ARGS.kernels  # read once, at library load

import keras  # noqa: E402
import numpy as np  # noqa: E402
from ai_edge_litert import interpreter as litert_interpreter  # noqa: E402

from tf_clicktrain import tflite as ct_tflite  # noqa: E402
from tf_clicktrain.tflite import speed_decision  # noqa: E402
from _timing import prepared_invoke  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import reference_models  # noqa: E402

# 4-of-9 patterns with the centre kept (bit 3 * ky + kx).
PATTERNS = (0b000111010, 0b010111000, 0b010110010, 0b010011010,
            0b000110011, 0b000011110, 0b110011000, 0b011110000)

LAYERS = (  # (name, size, input channels, output channels, stride)
    ("56x56x64->64", 56, 64, 64, 1),
    ("28x28x128->128", 28, 128, 128, 1),
    ("14x14x256->256", 14, 256, 256, 1),
    ("7x7x512->512", 7, 512, 512, 1),
    ("56x56x64->128 s2", 56, 64, 128, 2),
)


def pattern_sparsify(model, compression, rng, patterns=PATTERNS, filter_group=1):
    """Zeroes every 3x3 conv into 4-of-9 `patterns` at the given compression.

    With ``filter_group`` G, each run of G consecutive filters keeps the same
    input channels with the same patterns, as
    ``ct.prune_pattern(filter_group=G)`` prunes.
    """
    bits = np.array([[(p >> i) & 1 for i in range(9)] for p in patterns], np.float32)
    kept_fraction = 9.0 / (4.0 * compression)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (3, 3):
            weights = layer.get_weights()
            _, _, inputs, outputs = weights[0].shape
            groups = -(-outputs // filter_group)
            kernels = inputs * groups
            kept = np.zeros(kernels, bool)
            kept[rng.choice(kernels, int(round(kept_fraction * kernels)), replace=False)] = True
            choice = bits[rng.integers(len(patterns), size=kernels)] * kept[:, None]
            choice = np.repeat(choice.reshape(inputs, groups, 9), filter_group, axis=1)
            choice = choice[:, :outputs]
            mask = choice.transpose(2, 0, 1).reshape(3, 3, inputs, outputs)
            weights[0] = weights[0] * mask
            layer.set_weights(weights)
        elif isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, channels), rng.normal(size=channels) * 0.1,
                               rng.normal(scale=0.1, size=channels), rng.uniform(0.5, 2.0, channels)])
    return model


def _convert(model, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return ct_tflite.convert(model, decide_by="size", max_size_ratio=1.0, **kwargs)


def time_interleaved(invokes, rounds, sample_seconds=None, statistic=None):
    """Median (or min) ms per invoke of each callable, sampled round-robin."""
    if sample_seconds is None:
        sample_seconds = ARGS.sample_ms / 1e3 if ARGS is not None else 0.02
    if statistic is None:
        statistic = ARGS.statistic if ARGS is not None else "median"
    samples = speed_decision.interleaved_samples(invokes, rounds, sample_seconds)
    reduce = min if statistic == "min" else statistics.median
    return {name: reduce(values) * 1e3 for name, values in samples.items()}


@contextlib.contextmanager
def _timing_priority():
    """SCHED_FIFO (--realtime_priority) for the block, if asked for.

    Interpreters made inside the block start their threads with the policy;
    conversion and the Keras reference run outside it, at normal priority.
    """
    if ARGS is None or ARGS.realtime_priority is None:
        yield
        return
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(ARGS.realtime_priority))
    try:
        yield
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _relative_error(actual, expected):
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def bench_layers(threads, compressions, rounds, rng, peak_gflops=None):
    print(f"\n== one 3x3 conv layer, batch 1, {threads} thread(s), filter group "
          f"{ARGS.filter_group}, {ARGS.statistic} of {rounds} interleaved samples ==")
    peak_header = f"{'XNNPACK % peak':>15}{'ours % peak':>12}" if peak_gflops else ""
    print(f"{'layer':<18}{'compr.':>7}{'XNNPACK ms':>11}{'ours ms':>9}{'speedup':>9}"
          f"{'XNNPACK GFLOP/s':>16}{'ours eff. GFLOP/s':>18}{'max rel err':>12}{peak_header}")
    rows = []
    for name, size, cin, cout, stride in LAYERS:
        inputs = rng.normal(size=(1, size, size, cin)).astype(np.float32)
        invokes, outputs, nonzero, files = {}, {}, {}, {}
        for compression in compressions:
            model = keras.Sequential([
                keras.Input((size, size, cin)),
                keras.layers.Conv2D(cout, 3, strides=stride, padding="same"),
            ])
            pattern_sparsify(model, compression, rng, filter_group=ARGS.filter_group)
            if not files:
                # The dense file's speed does not depend on its zeros.
                files["dense"] = (_convert(model, custom_ops=False),
                                  litert_interpreter.Interpreter)
            files[compression] = (_convert(model), ct_tflite.Interpreter)
            nonzero[compression] = (np.count_nonzero(model.layers[0].get_weights()[0]), model)
        with _timing_priority():
            for key, (content, interpreter_class) in files.items():
                interpreter = interpreter_class(model_content=content, num_threads=threads)
                invokes[key], outputs[key] = prepared_invoke(interpreter, inputs)
            times = time_interleaved(invokes, rounds)
        out_size = (size + stride - 1) // stride
        dense_flops = 2 * 9 * cin * cout * out_size * out_size
        dense_ms = times["dense"]
        for compression in compressions:
            kept, model = nonzero[compression]
            error = _relative_error(outputs[compression](), model.predict(inputs, verbose=0))
            ms = times[compression]
            effective = 2 * kept * out_size * out_size / ms / 1e6
            row = dict(layer=name, threads=threads, compression=compression, dense_ms=dense_ms,
                       ours_ms=ms, speedup=dense_ms / ms,
                       dense_gflops=dense_flops / dense_ms / 1e6, ours_gflops=effective,
                       error=error)
            rows.append(row)
            peak = ""
            if peak_gflops:
                core_peak = peak_gflops * threads
                peak = (f"{100 * row['dense_gflops'] / core_peak:>14.0f}%"
                        f"{100 * effective / core_peak:>11.0f}%")
            print(f"{name:<18}{compression:>6.0f}x{dense_ms:>11.3f}{ms:>9.3f}{row['speedup']:>8.2f}x"
                  f"{row['dense_gflops']:>16.1f}{effective:>18.1f}{error:>12.1e}{peak}")
        sys.stdout.flush()
    return rows


def bench_scaling(compressions, rounds, rng):
    """2-thread over 1-thread speedup of our op and of XNNPACK, per layer."""
    print(f"\n== 2 threads over 1, one 3x3 conv layer, batch 1, filter group "
          f"{ARGS.filter_group}, {ARGS.statistic} of {rounds} interleaved samples ==")
    print(f"{'layer':<18}{'compr.':>7}{'XNNPACK 1t ms':>14}{'2t ms':>8}{'scaling':>9}"
          f"{'ours 1t ms':>11}{'2t ms':>8}{'scaling':>9}{'speedup 2t':>11}")
    rows = []
    for name, size, cin, cout, stride in LAYERS:
        inputs = rng.normal(size=(1, size, size, cin)).astype(np.float32)
        for compression in compressions:
            model = keras.Sequential([
                keras.Input((size, size, cin)),
                keras.layers.Conv2D(cout, 3, strides=stride, padding="same"),
            ])
            pattern_sparsify(model, compression, rng, filter_group=ARGS.filter_group)
            dense_file, ours_file = _convert(model, custom_ops=False), _convert(model)
            invokes = {}
            with _timing_priority():
                for threads in (1, 2):
                    dense = litert_interpreter.Interpreter(model_content=dense_file,
                                                           num_threads=threads)
                    invokes[("dense", threads)], _ = prepared_invoke(dense, inputs)
                    ours = ct_tflite.Interpreter(model_content=ours_file, num_threads=threads)
                    invokes[("ours", threads)], _ = prepared_invoke(ours, inputs)
                times = time_interleaved(invokes, rounds)
            del invokes
            row = dict(layer=name, compression=compression,
                       **{f"{side}_{threads}t_ms": times[(side, threads)]
                          for side in ("dense", "ours") for threads in (1, 2)})
            row["dense_scaling"] = row["dense_1t_ms"] / row["dense_2t_ms"]
            row["ours_scaling"] = row["ours_1t_ms"] / row["ours_2t_ms"]
            rows.append(row)
            print(f"{name:<18}{compression:>6.0f}x{row['dense_1t_ms']:>14.3f}"
                  f"{row['dense_2t_ms']:>8.3f}{row['dense_scaling']:>8.2f}x"
                  f"{row['ours_1t_ms']:>11.3f}{row['ours_2t_ms']:>8.3f}"
                  f"{row['ours_scaling']:>8.2f}x"
                  f"{row['dense_2t_ms'] / row['ours_2t_ms']:>10.2f}x")
            sys.stdout.flush()
    return rows


def bench_models(threads, rounds, rng, compressions):
    print(f"\n== whole models, batch 1, {threads} thread(s), filter group "
          f"{ARGS.filter_group}, {ARGS.statistic} of {rounds} interleaved samples ==")
    print(f"{'model':<32}{'compr.':>7}{'dense ms':>10}{'pruned ms':>10}{'speedup':>9}"
          f"{'max rel err':>12}")
    rows = []
    for name, build, shape in (
        ("ResNet-18 224x224x3", reference_models.resnet18, (224, 224, 3)),
        ("VGG-style CNN 28x28x1", reference_models.vgg_style_cnn, (28, 28, 1)),
    ):
        inputs = rng.normal(size=(1, *shape)).astype(np.float32)
        invokes, outputs, models, files = {}, {}, {}, {}
        for compression in compressions:
            model = pattern_sparsify(build(), compression, rng,
                                     filter_group=ARGS.filter_group)
            if not files:
                files["dense"] = (_convert(model, custom_ops=False),
                                  litert_interpreter.Interpreter)
            files[compression] = (_convert(model), ct_tflite.Interpreter)
            models[compression] = model
        with _timing_priority():
            for key, (content, interpreter_class) in files.items():
                interpreter = interpreter_class(model_content=content, num_threads=threads)
                invokes[key], outputs[key] = prepared_invoke(interpreter, inputs)
            times = time_interleaved(invokes, rounds)
        for compression in compressions:
            error = _relative_error(outputs[compression](),
                                    models[compression].predict(inputs, verbose=0))
            row = dict(model=name, threads=threads, compression=compression,
                       dense_ms=times["dense"], ours_ms=times[compression],
                       speedup=times["dense"] / times[compression], error=error)
            rows.append(row)
            print(f"{name:<32}{compression:>6.0f}x{row['dense_ms']:>10.2f}{row['ours_ms']:>10.2f}"
                  f"{row['speedup']:>8.2f}x{error:>12.1e}")
        sys.stdout.flush()
    return rows


def main():
    args = ARGS
    rng = np.random.default_rng(0)
    print("kernels:", ct_tflite.native_library.library_info()["kernels"])
    if args.only == "scaling":
        bench_scaling(args.compressions, args.rounds, rng)
        return
    for threads in args.threads:
        if args.only in (None, "layers"):
            bench_layers(threads, args.compressions, args.rounds, rng, args.peak_gflops)
        if args.only in (None, "models"):
            bench_models(threads, args.rounds, rng, args.compressions)


if __name__ == "__main__":
    main()
