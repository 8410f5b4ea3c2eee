r"""Training-time overhead of ClickTrain against the same model trained dense.

Runs `fit` for one epoch on the same data, alternating dense and pruned runs
(interleaved repeats in one process, so machine noise hits both alike), and
prints the median time per run and the median of the per-pair ratios, for
wall time and for the process's CPU time (all threads; less sensitive to
other jobs on a shared machine than wall time).
The pruned runs go through every phase: the schedule selects, softens and
hardens within the measured epoch.

    python benchmarks/overhead.py --repeats=5
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_clicktrain as ct  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import reference_models  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "Interleaved dense/pruned pairs.")
flags.DEFINE_integer("examples", 8192, "Training examples per epoch.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_list("widths", ["32", "32", "64", "64", "128", "128"], "3x3 conv widths.")
flags.DEFINE_list("importance", ["magnitude", "taylor_accumulated"],
                  "Importance methods to measure.")


def _compile(model):
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _make(kind, steps):
    widths = [int(w) for w in FLAGS.widths]
    model = reference_models.vgg_style_cnn(widths=widths)
    callbacks = []
    if kind != "dense":
        # Selection at 1/3, hard phase from 2/3 of the epoch: every phase runs.
        schedule = ct.ClickTrainSchedule(steps // 3, 2 * steps // 3, connectivity_sparsity=0.72)
        model = ct.prune_pattern(model, schedule=schedule, importance=kind)
        callbacks = [ct.UpdatePruningStep()]
    return _compile(model), callbacks


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    x = rng.random((FLAGS.examples, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, FLAGS.examples)
    steps = FLAGS.examples // FLAGS.batch_size
    kinds = ["dense"] + list(FLAGS.importance)
    times = {kind: [] for kind in kinds}
    cpu_times = {kind: [] for kind in kinds}
    for repeat in range(FLAGS.repeats + 1):
        for kind in kinds:
            model, callbacks = _make(kind, steps)
            # Warm-up call traces the train function; it is not timed.
            model.fit(x[: FLAGS.batch_size], y[: FLAGS.batch_size],
                      batch_size=FLAGS.batch_size, verbose=0,
                      callbacks=[] if kind == "dense" else [ct.UpdatePruningStep()])
            for wrapper in ct.pruning_wrappers(model):
                wrapper.pruning_step.assign(-1)
            start, cpu_start = time.perf_counter(), time.process_time()
            model.fit(x, y, batch_size=FLAGS.batch_size, epochs=1, verbose=0,
                      shuffle=False, callbacks=callbacks)
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            if repeat > 0:  # the first round warms caches and is dropped
                times[kind].append(elapsed)
                cpu_times[kind].append(cpu)
            keras.backend.clear_session()
        print(f"repeat {repeat}: " + ", ".join(
            f"{kind} {times[kind][-1]:.2f}s" for kind in kinds if times[kind]), flush=True)

    print(f"\nfit() of {FLAGS.examples} examples, batch {FLAGS.batch_size}, widths "
          f"{','.join(FLAGS.widths)}, {FLAGS.repeats} interleaved repeats")
    for label, table in (("wall time", times), ("CPU time", cpu_times)):
        print(f"\n{label}")
        print(f"{'run':<30}{'median s':>10}{'median ratio':>14}{'min ratio':>11}"
              f"{'max ratio':>11}")
        dense = table["dense"]
        print(f"{'dense':<30}{statistics.median(dense):>10.2f}{1.0:>14.3f}")
        for kind in kinds[1:]:
            ratios = [t / d for t, d in zip(table[kind], dense)]
            print(f"{'clicktrain/' + kind:<30}{statistics.median(table[kind]):>10.2f}"
                  f"{statistics.median(ratios):>14.3f}{min(ratios):>11.3f}"
                  f"{max(ratios):>11.3f}")


if __name__ == "__main__":
    app.run(main)
