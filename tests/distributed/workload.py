"""One pruning run under a tf.distribute strategy, dumped for comparison.

Run as a child process by the distributed tests (a strategy's devices and
TF_CONFIG must be set before TensorFlow initialises, which the main pytest
process has already done):

    python -m tests.distributed.workload --strategy=single --out=single.npz
    python -m tests.distributed.workload --strategy=mirrored --out=mirrored.npz
    TF_CONFIG=... python -m tests.distributed.workload --strategy=multi_worker \
        --out=worker0.npz

Every run trains the same tiny CNN from the same initial weights on the same
global batches (16 examples per step) through all ClickTrain phases: dense
warm-up with accumulated Taylor importance, pattern selection with
connectivity pruning, a reselection, the soft phase (group lasso) and the
hard phase. The output holds every variable of the model, each pruning
variable once per replica (so the test can check the replicas agree), and
the per-step pruning phase seen by the callback.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

GLOBAL_BATCH = 16
EXAMPLES = 64
EPOCHS = 5
STEPS_PER_EPOCH = EXAMPLES // GLOBAL_BATCH
SCHEDULE = dict(
    selection_step=5, hard_pruning_step=14, connectivity_sparsity=0.5,
    reselection_steps=[9], penalty=1e-3,
)


def _make_strategy(name, tf):
    if name == "single":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        cpu, = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.RING
            )
        )
    raise ValueError(f"unknown strategy {name!r}")


def _replica_values(variable):
    """The value of ``variable`` on every local replica."""
    value = getattr(variable, "value", variable)
    copies = getattr(value, "values", None)
    if copies is None:
        return [variable.numpy()]
    return [copy.numpy() for copy in copies]


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import tensorflow as tf

    strategy = _make_strategy(args.strategy, tf)

    import keras
    import numpy as np

    keras.config.disable_traceback_filtering()

    import tf_clicktrain as ct
    from tests.conftest import random_data
    from tests.conftest import small_cnn

    keras.utils.set_random_seed(7)
    tf.config.experimental.enable_op_determinism()
    x, y = random_data(EXAMPLES, seed=3)
    schedule = ct.ClickTrainSchedule(**SCHEDULE)
    with strategy.scope():
        model = ct.prune_pattern(
            small_cnn(), schedule=schedule, importance="taylor_accumulated",
            connectivity_sparsity=[0.25, 0.5],
        )
        model.compile(
            keras.optimizers.SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy"
        )
    ct.distribute.fix_multi_worker_fit(model)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    phases = []

    class RecordPhase(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            wrapper = ct.pruning_wrappers(self.model)[0]
            phases.append(int(wrapper.pruning_phase.numpy()))

    start = time.perf_counter()
    model.fit(
        dataset, epochs=EPOCHS, verbose=0, shuffle=False,
        callbacks=[ct.UpdatePruningStep(), RecordPhase()],
    )
    fit_seconds = time.perf_counter() - start

    out = {"phases": np.asarray(phases)}
    names = []
    for variable in model.variables:
        key = variable.path
        names.append(key)
        copies = _replica_values(variable)
        out[f"value/{key}"] = copies[0]
        if "prune_pattern" in key:
            out[f"replicas/{key}"] = np.stack(copies)
    out["names"] = np.asarray(names)
    out["meta"] = np.asarray(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "local_replicas": len(_replica_values(model.variables[-1])),
        "fit_seconds": fit_seconds,
        "task": os.environ.get("TF_CONFIG", ""),
    }))
    tmp = args.out + ".partial.npz"
    np.savez(tmp, **out)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
