r"""Accuracy, compression and wall time: dense vs ClickTrain vs baselines.

Every row trains the same VGG-style CNN (six 3x3 convs with BatchNorm, first
conv left dense) on the same data with the same epochs and optimizer
(examples/clicktrain_tfds.py's recipe). Rows:

- dense: the baseline.
- ct4 / ct8 / ct12: ClickTrain at 3x3-conv compression 4x, 8x, 12x, the
  learning-rate schedule not rewound (the example rewinds it by default:
  that is the ct8_rewind row).
- authors: the authors' variant at 8x (one-minibatch Taylor importance, a
  fixed 4-pattern library).
- ct8_onebatch, ct8_fixed, ct8_nosoft, ct8_magnitude: ablations of ct8
  (one-minibatch importance, fixed library, no group-lasso penalty,
  magnitude importance); ct8_magnitude_anneal: magnitude importance with the
  soft phase also fading removed weights out of the forward pass;
  ct8_rewind: learning-rate rewinding, the run's rate schedule replayed
  from its start (squeezed into the remaining steps) when the masks apply;
  ct12_rewind: the same at 12x.
- pat8: prune after training: the trained dense model of the same seed,
  pruned to the same patterns and fine-tuned for as many epochs again
  (soft half, hard half); its wall time includes the dense training.
  pat8_ft<N> (e.g. pat8_ft1): the same with N fine-tuning epochs;
  pat8r_ft<N>: N fine-tuning epochs replaying the training's learning-rate
  schedule from its initial rate.
- tfmot: tensorflow-model-optimization's unstructured magnitude pruning of
  the same layers at the sparsity of ct8, run by benchmarks/tfmot_baseline.py
  in its own virtual environment (.venv-tfmot, made by
  benchmarks/setup_tfmot_venv.sh); skipped when that is missing.

With --filter_group=G (default 4) the ct and pat rows prune every
3x3 conv in runs of G filters that share kernels and patterns
(prune_pattern's filter_group); G is recorded in the rows' config, so rows
of different G are never reported together.
--threads limits TensorFlow's threads (recorded in the row, not the config);
--check_tflite converts each ct row's model and checks the file against Keras.

Results are appended to a JSON-lines file as each run finishes, so an
interrupted benchmark resumes where it stopped; the table is printed from
that file.

    python benchmarks/accuracy.py --rows=dense,ct8 --seeds=0,1,2
    python benchmarks/accuracy.py --rows=ct8 --filter_group=1 --threads=1
    python benchmarks/accuracy.py --report_only
"""

import collections
import re
import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_clicktrain as ct  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "examples"))
import clicktrain_tfds as recipe  # noqa: E402
from _results import append_row, finished_rows  # noqa: E402
from _tflite_check import check_tflite  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("rows", ["dense", "ct4", "ct8", "ct12", "authors", "pat8", "tfmot"],
                  "Rows to run (see the module docstring).")
flags.DEFINE_list("seeds", ["0"], "Seeds; each row runs once per seed.")
flags.DEFINE_string("results", os.path.join(REPO, "benchmarks", "results", "accuracy.jsonl"),
                    "JSON-lines file of finished runs.")
flags.DEFINE_bool("report_only", False, "Only print the table of finished runs.")
flags.DEFINE_string("default_importance", None,
                    "Importance of the ct rows (default: the library's).")
flags.DEFINE_integer("filter_group", 4,
                     "filter_group of the ct and pat rows, on every 3x3 conv: runs "
                     "of this many filters share kernel decisions and patterns. Recorded in the config when not 1, so the rows of runs "
                     "made before filter groups existed count as filter_group 1.")
flags.DEFINE_bool("check_tflite", False,
                  "Also convert each ct row's model (decide_by='size') and compare the "
                  ".tflite file with Keras on 256 test images (tflite_* fields).")
flags.DEFINE_integer("threads", 0,
                     "TensorFlow intra- and inter-op threads (0: TensorFlow's choice).")

# The four 2x2 quadrants around the centre: a fixed library standing in for
# the authors' hard-coded one.
FIXED_LIBRARY = np.zeros((4, 9), np.float32)
for _row, _positions in enumerate(([0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8])):
    FIXED_LIBRARY[_row, _positions] = 1.0

ROW_SETTINGS = {
    "ct4": dict(compression=4.0),
    "ct8": dict(compression=8.0),
    "ct12": dict(compression=12.0),
    "authors": dict(compression=8.0, importance="taylor", pattern_library=FIXED_LIBRARY),
    "ct8_onebatch": dict(compression=8.0, importance="taylor"),
    "ct8_fixed": dict(compression=8.0, pattern_library=FIXED_LIBRARY),
    "ct8_nosoft": dict(compression=8.0, penalty=0.0),
    "ct8_magnitude": dict(compression=8.0, importance="magnitude"),
    "ct8_magnitude_anneal": dict(compression=8.0, importance="magnitude", soft_anneal=True),
    # The library's defaults before issue 13: the paper's phase fractions and
    # a fixed penalty.
    "ct8_paper_schedule": dict(compression=8.0, selection_fraction=65 / 190,
                               hard_fraction=143 / 190, penalty=1.5e-4),
    "ct8_bn": dict(compression=8.0, batchnorm_folded=True),
    "ct8_gradual": dict(compression=8.0, gradual_events=10),
    # Learning-rate rewinding: the run's rate schedule replayed from its
    # start, squeezed into the steps from the hard phase on.
    "ct8_rewind": dict(compression=8.0, rewind_learning_rate=True),
    "ct12_rewind": dict(compression=12.0, rewind_learning_rate=True),
}


class GradualConnectivitySchedule(ct.ClickTrainSchedule):
    """ClickTrain's phases with kernels removed in steps through the soft phase.

    Selection repeats at ``events`` evenly spaced steps of the soft phase;
    the connectivity sparsity rises from 0 to the final one on a cubic ramp
    (Zhu & Gupta), reaching it at the last event.
    """

    def __init__(self, *args, events=10, **kwargs):
        super().__init__(*args, **kwargs)
        length = self.hard_pruning_step - self.selection_step
        spacing = max(1, length // events)
        # The base class selects on the step after `selection_step` steps
        # were taken (tfmot numbering) or on step `selection_step`.
        first = self.selection_step + (0 if super().__call__(self.selection_step)[0] else 1)
        self.event_steps = [first + k * spacing for k in range(events) if k * spacing < length]

    def __call__(self, step):
        if step < self.event_steps[0]:
            return False, 0.0
        if step >= self.event_steps[-1]:
            return step == self.event_steps[-1], self.connectivity_sparsity
        done = sum(1 for event in self.event_steps if event <= step) - 1
        progress = done / max(1, len(self.event_steps) - 1)
        sparsity = self.connectivity_sparsity * (1.0 - (1.0 - progress) ** 3)
        return step in self.event_steps, sparsity


def _fold_batchnorm_into_importance(model):
    """Ranks each conv followed by a BatchNorm by its folded weights.

    Wraps each such wrapper's importance so that a kernel's entries are
    scaled by ``gamma / sqrt(moving_variance + epsilon)`` of its output
    channel (squared, as the importance is), the weight the conv has once BN
    is folded into it.
    """
    for wrapper in ct.pruning_wrappers(model):
        consumers = [node.operation for node in wrapper._outbound_nodes]
        if len(consumers) != 1 or not isinstance(consumers[0],
                                                 keras.layers.BatchNormalization):
            continue
        batchnorm = consumers[0]
        owner = getattr(wrapper, "controller", None) or wrapper
        unscaled = owner._importance_of

        def folded(state, unscaled=unscaled, batchnorm=batchnorm):
            importance = unscaled(state)
            if len(state.weight.shape) != 4:
                return importance
            scale = batchnorm.gamma.numpy() / np.sqrt(batchnorm.moving_variance.numpy()
                                                      + batchnorm.epsilon)
            return importance * np.square(scale)  # last axis: output channels

        owner._importance_of = folded


def _evaluate(model, test, steps_per_epoch):
    final = ct.strip_pruning(model) if ct.pruning_wrappers(model) else model
    recipe.compile_model(final, steps_per_epoch)
    stats = ct.model_stats(final)
    return final, {
        "accuracy": float(final.evaluate(test, verbose=0)[1]),
        "conv3x3_compression": stats.conv3x3_compression,
        "model_compression": stats.model_compression,
    }


def _dense_path(seed):
    """The dense row's model, one per results file (pat rows fine-tune it)."""
    stem = os.path.splitext(os.path.basename(FLAGS.results))[0]
    return os.path.join(os.path.dirname(FLAGS.results), f"{stem}_dense_seed{seed}.keras")


def _timed_fit(model, train, epochs, callbacks=None):
    """Fits; returns (wall seconds, CPU seconds of this process)."""
    start, start_cpu = time.time(), time.process_time()
    model.fit(train, epochs=epochs, verbose=2, callbacks=callbacks)
    return time.time() - start, time.process_time() - start_cpu


def run_dense(seed, train, test, info, steps):
    keras.utils.set_random_seed(seed)
    model = recipe.build_model(info)
    recipe.compile_model(model, steps)
    seconds, cpu_seconds = _timed_fit(model, train, FLAGS.epochs)
    _, result = _evaluate(model, test, steps)
    os.makedirs(os.path.dirname(_dense_path(seed)), exist_ok=True)
    model.save(_dense_path(seed))
    return {**result, "seconds": seconds, "cpu_seconds": cpu_seconds}


def run_clicktrain(seed, train, test, info, steps, compression, importance=None,
                   pattern_library=None, penalty=None, soft_anneal=True,
                   selection_fraction=None, hard_fraction=None, batchnorm_folded=False,
                   gradual_events=0, rewind_learning_rate=False):
    keras.utils.set_random_seed(seed)
    if penalty is None:  # the flag's, else the library's (sized to the soft phase)
        penalty = FLAGS.penalty
    schedule = recipe.make_schedule(FLAGS.epochs, steps, compression, 4, penalty,
                                    selection_fraction or FLAGS.selection_fraction,
                                    hard_fraction or FLAGS.hard_fraction)
    if gradual_events:
        schedule = GradualConnectivitySchedule(
            schedule.selection_step, schedule.hard_pruning_step,
            schedule.connectivity_sparsity, penalty=schedule.penalty_value,
            events=gradual_events)
    kwargs = {"importance": importance or FLAGS.default_importance}
    model = ct.prune_pattern(
        recipe.build_model(info), schedule=schedule, pattern_library=pattern_library,
        soft_anneal=soft_anneal, filter_group=FLAGS.filter_group,
        **{k: v for k, v in kwargs.items() if v is not None},
    )
    if batchnorm_folded:
        _fold_batchnorm_into_importance(model)
    recipe.compile_model(model, steps,
                         schedule.hard_pruning_step if rewind_learning_rate else None)
    seconds, cpu_seconds = _timed_fit(model, train, FLAGS.epochs, [ct.UpdatePruningStep()])
    final, result = _evaluate(model, test, steps)
    if FLAGS.check_tflite:
        result.update(check_tflite(final, test))
    return {**result, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "penalty": schedule.penalty_value,
            "selection_step": schedule.selection_step,
            "hard_pruning_step": schedule.hard_pruning_step}


def run_prune_after_training(seed, train, test, info, steps, finished, finetune_epochs,
                             rewind=False):
    """Prunes the dense row's trained model and fine-tunes it.

    Pattern selection on the first step (magnitude importance, the library's
    default), soft phase for the first half of the fine-tuning steps at a
    tenth of the initial learning rate, hard masks and a further x0.1 for
    the second half. With ``rewind``, fine-tuning replays the training's
    learning-rate schedule (from the initial rate, drops at the same relative
    points) over its epochs instead. Wall and CPU time include the dense
    row's training.
    """
    dense_rows = [r for r in finished if r["row"] == "dense" and r["seed"] == seed
                  and r["config"] == _config()]
    if not dense_rows or not os.path.exists(_dense_path(seed)):
        raise RuntimeError("pat rows need the dense row of the same seed and "
                           "configuration first (--rows=dense,pat8)")
    keras.utils.set_random_seed(seed)
    dense = keras.saving.load_model(_dense_path(seed))
    soft_steps = max(1, finetune_epochs * steps // 2)
    sparsity = ct.patterns.sparsity_for_compression(8.0)
    if rewind:
        lr = FLAGS.learning_rate
        rate = recipe.learning_rate_schedule(lr, finetune_epochs, steps)
    else:
        # Fine-tuning starts where dense training's first drop left the rate.
        lr = FLAGS.learning_rate * 0.1
        rate = keras.optimizers.schedules.PiecewiseConstantDecay([soft_steps], [lr, lr * 0.1])
    # The penalty sized to the soft phase at the fine-tuning rate (the
    # library's rule assumes the rate of 0.05 the phase starts at otherwise).
    penalty = ct.schedules.default_penalty(0, soft_steps) * FLAGS.learning_rate / lr
    schedule = ct.ClickTrainSchedule(0, soft_steps, sparsity, penalty=penalty)
    model = ct.prune_pattern(dense, schedule=schedule, importance="magnitude",
                             filter_group=FLAGS.filter_group)
    optimizer = keras.optimizers.SGD(rate, momentum=0.9, weight_decay=5e-4)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    seconds, cpu_seconds = _timed_fit(model, train, finetune_epochs, [ct.UpdatePruningStep()])
    _, result = _evaluate(model, test, steps)
    dense_row = dense_rows[-1]
    return {**result, "seconds": seconds + dense_row["seconds"],
            "cpu_seconds": cpu_seconds + dense_row.get("cpu_seconds", float("nan")),
            "finetune_seconds": seconds, "finetune_cpu_seconds": cpu_seconds,
            "finetune_epochs": finetune_epochs}


def run_tfmot(seed):
    python = os.path.join(REPO, ".venv-tfmot", "bin", "python")
    if not os.path.exists(python):
        print("tfmot: .venv-tfmot missing (bash benchmarks/setup_tfmot_venv.sh); skipped")
        return None
    stem = os.path.splitext(os.path.basename(FLAGS.results))[0]
    out = os.path.join(os.path.dirname(FLAGS.results), f"{stem}_tfmot_seed{seed}.json")
    command = [
        python, os.path.join(REPO, "benchmarks", "tfmot_baseline.py"),
        f"--dataset={FLAGS.dataset}", f"--epochs={FLAGS.epochs}",
        f"--batch_size={FLAGS.batch_size}", f"--widths={','.join(FLAGS.widths)}",
        f"--sparsity={1 - 1 / 8.0}", f"--seed={seed}", f"--output_json={out}",
    ]
    if FLAGS.train_examples:
        command.append(f"--train_examples={FLAGS.train_examples}")
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": ""})
    with open(out) as handle:
        return json.load(handle)


def print_table(rows):
    grouped = collections.OrderedDict()
    for row in rows:
        grouped.setdefault(row["row"], []).append(row)
    print(f"\n{'row':<15}{'seeds':>6}{'accuracy %':>18}{'3x3 compr.':>12}"
          f"{'model compr.':>14}{'wall s':>9}{'CPU s':>8}")
    for name, runs in grouped.items():
        accuracies = [100 * r["accuracy"] for r in runs]
        spread = f" ± {statistics.stdev(accuracies):.2f}" if len(runs) > 1 else ""
        compression = statistics.mean(r.get("conv3x3_compression", float("nan")) for r in runs)
        model_compression = statistics.mean(r.get("model_compression", float("nan")) for r in runs)
        seconds = statistics.median(r["seconds"] for r in runs)
        cpu_seconds = statistics.median(r.get("cpu_seconds", float("nan")) for r in runs)
        print(f"{name:<15}{len(runs):>6}{statistics.mean(accuracies):>11.2f}{spread:<7}"
              f"{compression:>11.2f}x{model_compression:>13.2f}x{seconds:>9.0f}"
              f"{cpu_seconds:>8.0f}")


def _config():
    config = {"dataset": FLAGS.dataset, "epochs": FLAGS.epochs,
              "widths": FLAGS.widths, "train_examples": FLAGS.train_examples,
              "selection_fraction": round(FLAGS.selection_fraction
                                          or ct.ClickTrainSchedule.SELECTION_FRACTION, 4),
              "hard_fraction": round(FLAGS.hard_fraction
                                     or ct.ClickTrainSchedule.HARD_FRACTION, 4)}
    if FLAGS.penalty is not None:
        config["penalty"] = FLAGS.penalty
    if FLAGS.filter_group != 1:
        config["filter_group"] = FLAGS.filter_group
    return config


def main(argv):
    del argv
    finished = finished_rows(FLAGS.results)
    config = _config()
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    if not FLAGS.report_only:
        train, test, info = recipe.make_datasets(FLAGS.dataset, FLAGS.batch_size,
                                                 FLAGS.train_examples)
        steps = int(train.cardinality().numpy())
        for seed in [int(s) for s in FLAGS.seeds]:
            for name in FLAGS.rows:
                if any(r["row"] == name and r["seed"] == seed and r["config"] == config
                       for r in finished):
                    continue
                print(f"=== {name}, seed {seed}", flush=True)
                if name == "dense":
                    result = run_dense(seed, train, test, info, steps)
                elif name == "pat8" or re.fullmatch(r"pat8r?_ft\d+", name):
                    finetune_epochs = int(name.split("_ft")[1]) if "_ft" in name else FLAGS.epochs
                    result = run_prune_after_training(
                        seed, train, test, info, steps, finished, finetune_epochs,
                        rewind=name.startswith("pat8r"))
                elif name == "tfmot":
                    result = run_tfmot(seed)
                elif name in ROW_SETTINGS:
                    result = run_clicktrain(seed, train, test, info, steps, **ROW_SETTINGS[name])
                else:
                    raise app.UsageError(f"Unknown row: {name}")
                if result is None:
                    continue
                row = {"row": name, "seed": seed, "config": config, **result}
                if FLAGS.threads:
                    row["threads"] = FLAGS.threads
                append_row(FLAGS.results, row)
                finished.append(row)
                print(json.dumps(row), flush=True)
                keras.backend.clear_session()
    print(f"\n{FLAGS.dataset}, {FLAGS.epochs} epochs, widths {','.join(FLAGS.widths)}, "
          f"filter group {FLAGS.filter_group}, "
          f"train examples {FLAGS.train_examples or 'all'}, selection at "
          f"{config['selection_fraction']:.3f}, hard from {config['hard_fraction']:.3f} "
          "of the epochs")
    print_table([r for r in finished if r["config"] == config])


if __name__ == "__main__":
    app.run(main)
