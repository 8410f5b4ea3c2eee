"""README.md's Quickstart, run as written, pruned and dense, over seeds.

The code is not copied: the Quickstart's ```python block is read from
README.md and executed, so the measurement follows the README by
construction. Each run sets ``keras.utils.set_random_seed(seed)`` first (the
block loads its data without randomness, then builds the model). The dense
run executes the same block with the pruning calls made no-ops:
``prune_pattern`` and ``strip_pruning`` return the model unchanged,
``RewoundLearningRate`` returns the schedule it wraps (the dense network
trains with the plain decay), and ``UpdatePruningStep`` / ``PruningSummaries``
are empty callbacks (``--runs clicktrain_plain_decay`` prunes with the plain
decay: ``RewoundLearningRate`` returns the schedule it wraps). Everything else (data, network, optimizer, epochs, the
test accuracy the block prints) is the block's own.

Prints a table (test accuracy per seed, mean ± sample std, and the pruned
minus dense gap) and appends one JSON line per run to
``benchmarks/results/quickstart.jsonl``; a run already in that file for the
same README block (by hash) is not repeated, so an interrupted run resumes.

    python benchmarks/quickstart_accuracy.py --seeds 0 1 2

``--after_training`` measures README's "Pruning a trained model" instead:
the Quickstart block's data and network (its code up to the line setting
``epochs``, with the network as ``final``), then that section's block, after
``keras.utils.set_random_seed(seed)``; it records the dense and the
pruned-after-training test accuracies (run ``after_training``).

Runs one training at a time; on 2 cores each run takes about 2 minutes.
"""

import argparse
import contextlib
import hashlib
import json
import os
import re
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = "Quickstart"
AFTER_TRAINING = "Pruning a trained model"
IMPORT = "import tf_clicktrain as ct\n"
NETWORK_END = "epochs, batch_size ="  # the Quickstart's first line after data and network
RUNS = ("dense", "clicktrain", "clicktrain_plain_decay")
DEFAULT_RUNS = ("dense", "clicktrain")


def readme_block(readme_path, wanted=SECTION):
    """The first ```python block under the heading ``wanted``."""
    with open(readme_path) as handle:
        lines = handle.read().splitlines()
    section = None
    for index, line in enumerate(lines):
        heading = re.match(r"#+\s+(.*)", line)
        if heading:
            section = heading.group(1).strip()
        elif line.strip() == "```python" and section == wanted:
            end = lines.index("```", index + 1)
            return "\n".join(lines[index + 1:end]) + "\n"
    raise ValueError(f"no ```python block under '{wanted}' in {readme_path}")


def quickstart_block(readme_path):
    return readme_block(readme_path, SECTION)


class _Proxy:
    """``tf_clicktrain`` with some names replaced."""

    def __init__(self, module, **replaced):
        self._module = module
        self.__dict__.update(replaced)

    def __getattr__(self, name):
        return getattr(self._module, name)


def plain_decay_namespace(ct):
    """``ct`` whose ``RewoundLearningRate`` returns the schedule it wraps."""
    return _Proxy(ct, RewoundLearningRate=lambda schedule, **kwargs: schedule)


def dense_namespace(ct, keras):
    """``ct`` with the pruning calls made no-ops (the same network, trained dense)."""
    return _Proxy(
        ct,
        prune_pattern=lambda to_prune, **kwargs: to_prune,
        strip_pruning=lambda model: model,
        RewoundLearningRate=lambda schedule, **kwargs: schedule,
        UpdatePruningStep=lambda *args, **kwargs: keras.callbacks.Callback(),
        PruningSummaries=lambda *args, **kwargs: keras.callbacks.Callback(),
    )


def run_once(code, run, seed):
    import keras

    import tf_clicktrain as ct

    if IMPORT not in code:
        raise ValueError(f"the Quickstart block no longer contains {IMPORT!r}")
    namespace = {"__name__": "__quickstart__"}
    namespace["ct"] = {"clicktrain": ct, "dense": dense_namespace(ct, keras),
                       "clicktrain_plain_decay": plain_decay_namespace(ct)}[run]
    code = code.replace(IMPORT, "")
    keras.utils.set_random_seed(seed)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        cwd = os.getcwd()
        os.chdir(workdir)  # the block writes pruned.keras and logs/
        try:
            with contextlib.redirect_stdout(sys.stderr):  # fit's log and the table
                exec(compile(code, f"README.md ({SECTION})", "exec"), namespace)
        finally:
            os.chdir(cwd)
    seconds = time.perf_counter() - start
    final = namespace["final"]
    return {
        "run": run,
        "seed": seed,
        "test_accuracy": float(namespace["accuracy"]),
        "test_images": int(len(namespace["y_test"])),
        "train_images": int(len(namespace["y_train"])),
        "epochs": int(namespace["epochs"]),
        "conv3x3_compression": round(float(ct.model_stats(final).conv3x3_compression), 3),
        "seconds": round(seconds, 1),
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }


def run_after_training(quickstart, block, seed):
    """README's "Pruning a trained model" on the Quickstart's data and network."""
    import keras

    if NETWORK_END not in quickstart:
        raise ValueError(f"the Quickstart block no longer contains {NETWORK_END!r}")
    namespace = {"__name__": "__quickstart__"}
    setup = quickstart[:quickstart.index(NETWORK_END)] + "final = model\n"
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    with contextlib.redirect_stdout(sys.stderr):
        exec(compile(setup, f"README.md ({SECTION}, data and network)", "exec"), namespace)
        keras.utils.set_random_seed(seed)
        exec(compile(block, f"README.md ({AFTER_TRAINING})", "exec"), namespace)
    evaluate = lambda network: float(network.evaluate(  # noqa: E731
        namespace["x_test"], namespace["y_test"], verbose=0)[1])
    import tf_clicktrain as ct

    return {
        "run": "after_training",
        "seed": seed,
        "dense_test_accuracy": round(evaluate(namespace["dense"]), 6),
        "test_accuracy": round(evaluate(namespace["tuned"]), 6),
        "test_images": int(len(namespace["y_test"])),
        "train_images": int(len(namespace["y_train"])),
        "conv3x3_compression": round(
            float(ct.model_stats(namespace["tuned"]).conv3x3_compression), 3),
        "seconds": round(time.perf_counter() - start, 1),
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }


def table(results, seeds):
    by = {(r["run"], r["seed"]): r["test_accuracy"] * 100 for r in results}
    header = "| run | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |"
    rows = [header, "| --- " * (len(seeds) + 2) + "|"]

    def row(name, values):
        gap = name.startswith("gap")
        sign, unit = ("+", " pp") if gap else ("", "%")
        cells = ["-" if v is None else f"{v:{sign}.2f}{unit}" for v in values]
        present = [v for v in values if v is not None]
        summary = "-"
        if len(present) >= 2:
            summary = (f"{statistics.mean(present):{sign}.2f} ± "
                       f"{statistics.stdev(present):.2f}{unit}")
        return f"| {name} | " + " | ".join(cells) + f" | {summary} |"

    for run in RUNS:
        if any((run, s) in by for s in seeds):
            rows.append(row(run, [by.get((run, s)) for s in seeds]))
    gaps = [by[("clicktrain", s)] - by[("dense", s)]
            if ("clicktrain", s) in by and ("dense", s) in by else None for s in seeds]
    rows.append(row("gap (clicktrain - dense)", gaps))
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(DEFAULT_RUNS),
                        help="clicktrain_plain_decay: pruned, without RewoundLearningRate")
    parser.add_argument("--after_training", action="store_true",
                        help='measure README\'s "Pruning a trained model" instead')
    parser.add_argument("--readme", default=os.path.join(REPO, "README.md"))
    parser.add_argument("--results",
                        default=os.path.join(REPO, "benchmarks", "results", "quickstart.jsonl"))
    args = parser.parse_args(argv)

    code = quickstart_block(args.readme)
    block = readme_block(args.readme, AFTER_TRAINING) if args.after_training else ""
    block_hash = hashlib.sha256((code + block).encode()).hexdigest()[:12]
    runs = ["after_training"] if args.after_training else args.runs
    done = []
    if os.path.exists(args.results):
        with open(args.results) as handle:
            done = [json.loads(line) for line in handle if line.strip()]
    done = [r for r in done if r.get("readme_block") == block_hash]
    for seed in args.seeds:
        for run in runs:
            if any(r["run"] == run and r["seed"] == seed for r in done):
                continue
            if run == "after_training":
                result = run_after_training(code, block, seed)
            else:
                result = run_once(code, run, seed)
            result["readme_block"] = block_hash
            print(json.dumps(result), flush=True)
            os.makedirs(os.path.dirname(args.results), exist_ok=True)
            with open(args.results, "a") as handle:
                handle.write(json.dumps(result) + "\n")
            done.append(result)
    done = [r for r in done if r["seed"] in args.seeds]
    if args.after_training:
        done = [dict(r, run=run, test_accuracy=r[key]) for r in done
                for run, key in (("dense", "dense_test_accuracy"),
                                 ("clicktrain", "test_accuracy"))]
        print(f"README {AFTER_TRAINING!r} (blocks {block_hash}), test accuracy "
              "(clicktrain: pruned after training):")
    else:
        print(f"README Quickstart block {block_hash}, test accuracy:")
    print(table(done, args.seeds))


if __name__ == "__main__":
    main()
