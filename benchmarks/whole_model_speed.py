"""Whole models as a user exports them: pruned file vs builtin-only twin.

MobileNetV2, EfficientNetB0 and ResNet50 from `keras.applications`
(weights=None) and ResNet-18 (`examples/reference_models.py`), all at
224x224x3, batch 1, pruned as a new user would with the library's defaults
(`ct.prune_pattern(model, schedule=ClickTrainSchedule(...))`: 3x3 convs get
4-of-9 patterns with `--connectivity` of their kernels removed, depthwise 3x3
convs get patterns, 1x1 convs unstructured sparsity `--pointwise_sparsity`
(in blocks of 1 x `--pointwise_block` output channels when given), 3x3
convs of 64+ filters in filter groups of 4 (`--filter_group G`: G for every
3x3 conv), the first conv dense), fitted for a few steps on random data past the hard
phase, then `ct.strip_pruning`.

Files timed, per thread count, in one process, interleaved round by round
(rotating order); each file's median over the rounds, and (as convert's own
timing does, robust to a loaded machine) its fastest round:
- dense: XNNPACK's fp32 file of the unpruned model;
- builtin: the builtin-only twin of the pruned model (`custom_ops=False`);
- size: `ct.tflite.convert(decide_by="size")`, every candidate replaced
  (what convert did before it timed layers);
- ours: `ct.tflite.convert(num_threads=threads)`, the default: layers
  replaced only where measured faster, whole-model check.

Usage:
  python benchmarks/whole_model_speed.py [--models mobilenetv2 ...]
      [--threads 1 2] [--rounds 9] [--pointwise_block N] [--filter_group G]
      [--results results/whole_model_speed.jsonl]
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MODELS = ("mobilenetv2", "efficientnetb0", "resnet50", "resnet18")


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=9, help="samples per file")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--connectivity", type=float, default=0.7,
                        help="fraction of 3x3 kernels removed (0.7: 7.5x on 3x3 convs)")
    parser.add_argument("--pointwise_block", type=int, default=1,
                        help="prune the 1x1 convs in blocks of one input channel x this "
                             "many output channels (block_size=(1, N)); 1: unstructured")
    parser.add_argument("--filter_group", type=int, default=None,
                        help="prune_pattern's filter_group for the 3x3 convs (default: "
                             "the library's, 4 for convs of 64+ filters, else 1)")
    parser.add_argument("--pointwise_sparsity", type=float, default=0.8,
                        help="sparsity of the 1x1 convs")
    parser.add_argument("--results", default=None, help="append one JSON line per row here")
    return parser.parse_args()


import keras  # noqa: E402
import numpy as np  # noqa: E402
from ai_edge_litert import interpreter as litert_interpreter  # noqa: E402

import tf_clicktrain as ct  # noqa: E402
from tf_clicktrain import tflite as ct_tflite  # noqa: E402
from tf_clicktrain.tflite import speed_decision  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import reference_models  # noqa: E402
from _timing import prepared_invoke  # noqa: E402


def build(name, size):
    shape = (size, size, 3)
    if name == "mobilenetv2":
        return keras.applications.MobileNetV2(input_shape=shape, weights=None)
    if name == "efficientnetb0":
        return keras.applications.EfficientNetB0(input_shape=shape, weights=None)
    if name == "resnet50":
        return keras.applications.ResNet50(input_shape=shape, weights=None)
    return reference_models.resnet18(input_shape=shape)


def prune(model, connectivity, pointwise_sparsity, seed=0, pointwise_block=1, filter_group=None):
    """The library's defaults, fitted on random data past the hard phase.

    keras.applications models end in a softmax, ResNet-18 in logits.
    """
    from_logits = model.layers[-1].get_config().get("activation") != "softmax"
    schedule = ct.ClickTrainSchedule(
        selection_step=1, hard_pruning_step=2, connectivity_sparsity=connectivity
    )
    pruned = ct.prune_pattern(model, schedule=schedule, unstructured_sparsity=pointwise_sparsity,
                              block_size=(1, pointwise_block), filter_group=filter_group)
    pruned.compile(
        optimizer=keras.optimizers.SGD(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
    )
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(8, *model.input_shape[1:])).astype(np.float32)
    labels = rng.integers(0, model.output_shape[-1], size=8)
    pruned.fit(images, labels, batch_size=2, epochs=1, verbose=0,
               callbacks=[ct.UpdatePruningStep()])
    return ct.strip_pruning(pruned)


def weight_compression(model):
    """Whole-model weights / non-zero weights (conv, depthwise, dense kernels)."""
    total = kept = 0
    for weight in model.weights:
        if weight.path.endswith("kernel"):
            values = np.asarray(weight.numpy())
            total += values.size
            kept += int(np.count_nonzero(values))
    return total / max(kept, 1)


def _convert(model, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return ct_tflite.convert(model, **kwargs)


def _invoker(content, threads, inputs):
    if ct_tflite.count_pattern_ops(content):
        interpreter = ct_tflite.Interpreter(model_content=content, num_threads=threads)
    else:
        interpreter = litert_interpreter.Interpreter(model_content=content, num_threads=threads)
    return prepared_invoke(interpreter, inputs)


def time_interleaved(invokes, rounds, sample_seconds=0.1):
    """(median, fastest) ms per invoke of each callable, sampled round-robin."""
    samples = speed_decision.interleaved_samples(invokes, rounds, sample_seconds)
    return {name: (statistics.median(values) * 1e3, min(values) * 1e3)
            for name, values in samples.items()}


def _relative_error(actual, expected):
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def _replaced_by_op(reports):
    counts = {}
    for report in reports:
        key = report.custom_op or report.op
        done, seen = counts.get(key, (0, 0))
        counts[key] = (done + report.replaced, seen + 1)
    return ", ".join(f"{key} {done}/{seen}" for key, (done, seen) in sorted(counts.items()))


def bench(name, args, rng):
    start = time.time()
    dense_model = build(name, args.size)
    pruned = prune(dense_model, args.connectivity, args.pointwise_sparsity,
                   pointwise_block=args.pointwise_block, filter_group=args.filter_group)
    prune_seconds = time.time() - start
    compression = weight_compression(pruned)
    inputs = rng.normal(size=(1, args.size, args.size, 3)).astype(np.float32)
    expected = pruned.predict(inputs, verbose=0)
    files = {
        "dense": _convert(dense_model, custom_ops=False),
        "builtin": _convert(pruned, custom_ops=False),
        "size": _convert(pruned, decide_by="size"),
    }
    print(f"\n== {name} {args.size}x{args.size}, batch 1: whole-model weight compression "
          f"{compression:.2f}x, pruned in {prune_seconds:.0f} s ==")
    rows = []
    for threads in args.threads:
        start = time.time()
        files["ours"], reports = _convert(pruned, num_threads=threads, return_report=True)
        convert_seconds = time.time() - start
        invokes, outputs = {}, {}
        for key, content in files.items():
            invokes[key], outputs[key] = _invoker(content, threads, inputs)
        medians_and_fastest = time_interleaved(invokes, args.rounds)
        times = {key: value[0] for key, value in medians_and_fastest.items()}
        fastest = {key: value[1] for key, value in medians_and_fastest.items()}
        errors = {key: _relative_error(outputs[key](), expected)
                  for key in ("builtin", "size", "ours")}
        row = dict(
            model=name, size=args.size, threads=threads, compression=compression,
            connectivity=args.connectivity, pointwise_sparsity=args.pointwise_sparsity,
            pointwise_block=args.pointwise_block, filter_group=args.filter_group,
            **{f"{key}_ms": times[key] for key in files},
            **{f"{key}_fastest_ms": fastest[key] for key in files},
            **{f"{key}_bytes": len(content) for key, content in files.items()},
            ours_vs_builtin=times["builtin"] / times["ours"],
            size_vs_builtin=times["builtin"] / times["size"],
            ours_vs_dense=times["dense"] / times["ours"],
            ours_vs_builtin_fastest=fastest["builtin"] / fastest["ours"],
            size_vs_builtin_fastest=fastest["builtin"] / fastest["size"],
            ours_error=errors["ours"], size_error=errors["size"],
            convert_seconds=convert_seconds,
            replaced=sum(report.replaced for report in reports), candidates=len(reports),
        )
        rows.append(row)
        print(f"{threads} thread(s): dense {times['dense']:.2f} ms, builtin {times['builtin']:.2f} ms, "
              f"size-decided {times['size']:.2f} ms ({row['size_vs_builtin']:.2f}x), "
              f"ours {times['ours']:.2f} ms ({row['ours_vs_builtin']:.2f}x vs builtin, "
              f"{row['ours_vs_dense']:.2f}x vs dense)")
        print(f"  fastest rounds: builtin {fastest['builtin']:.2f} ms, size-decided "
              f"{fastest['size']:.2f} ms ({row['size_vs_builtin_fastest']:.2f}x), ours "
              f"{fastest['ours']:.2f} ms ({row['ours_vs_builtin_fastest']:.2f}x vs builtin)")
        print(f"  files: dense {len(files['dense']) / 1e6:.2f} MB, builtin "
              f"{len(files['builtin']) / 1e6:.2f} MB, size-decided {len(files['size']) / 1e6:.2f} MB "
              f"({len(files['size']) / len(files['builtin']):.2f}), ours "
              f"{len(files['ours']) / 1e6:.2f} MB ({len(files['ours']) / len(files['builtin']):.2f})")
        print(f"  convert {convert_seconds:.1f} s; replaced: {_replaced_by_op(reports)}; "
              f"max rel err ours {errors['ours']:.1e}, size-decided {errors['size']:.1e}")
        sys.stdout.flush()
    return rows


def main():
    args = _parse_args()
    rng = np.random.default_rng(0)
    print("kernels:", ct_tflite.native_library.library_info()["kernels"])
    for name in args.models:
        rows = bench(name, args, rng)
        if args.results:
            with open(args.results, "a") as results:
                for row in rows:
                    results.write(json.dumps(row) + "\n")
        keras.backend.clear_session()


if __name__ == "__main__":
    main()
