"""A seeded ClickTrain run with BackupAndRestore, killable at a given step.

Run as a child process by the kill/resume tests:

    python -m tests.resume.train --backup=DIR --out=final.npz [--pause-at=STEP]

With ``--pause-at`` the run writes ``<out>.paused`` (holding STEP and the
step it resumed from) after optimizer step STEP and then blocks, so the test can SIGKILL it at a known point in the
middle of an epoch. Started again with the same backup directory, Keras'
BackupAndRestore restores the last epoch's weights (model, pruning state,
optimizer) and fit resumes from that epoch; UpdatePruningStep continues from
the restored step. At the end every variable is written to ``--out``, along
with the step at which training resumed.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EXAMPLES = 64
BATCH = 16
STEPS_PER_EPOCH = EXAMPLES // BATCH
EPOCHS = 6
SCHEDULE = dict(
    selection_step=6, hard_pruning_step=14, connectivity_sparsity=0.5,
    reselection_steps=[10], penalty=1e-3,
)
PAUSE_SECONDS = 120


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--backup", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--pause-at", type=int, default=None)
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    import tf_clicktrain as ct
    from tests.conftest import random_data
    from tests.conftest import small_cnn

    keras.utils.set_random_seed(11)
    tf.config.experimental.enable_op_determinism()
    x, y = random_data(EXAMPLES, seed=5)
    model = ct.prune_pattern(
        small_cnn(), schedule=ct.ClickTrainSchedule(**SCHEDULE),
        importance="taylor_accumulated", connectivity_sparsity=[0.25, 0.5],
    )
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    resumed_at = []

    class Pause(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if not resumed_at:
                resumed_at.append(self.epoch * STEPS_PER_EPOCH + batch)

        def on_train_batch_end(self, batch, logs=None):
            step = self.epoch * STEPS_PER_EPOCH + batch
            if step == args.pause_at:
                with open(args.out + ".paused", "w") as marker:
                    marker.write(f"{step} {resumed_at[0]}")
                time.sleep(PAUSE_SECONDS)  # The test kills us here.
                sys.exit(3)

    model.fit(
        x, y, epochs=EPOCHS, batch_size=BATCH, shuffle=False, verbose=0,
        callbacks=[
            ct.UpdatePruningStep(),
            keras.callbacks.BackupAndRestore(args.backup, save_freq="epoch"),
            Pause(),
        ],
    )
    out = {f"value/{v.path}": v.numpy() for v in model.variables}
    out.update({f"optimizer/{v.path}": v.numpy() for v in model.optimizer.variables})
    out["resumed_at"] = np.asarray(resumed_at[0])
    ct.saving.write_bytes(args.out, _npz_bytes(out))
    return 0


def _npz_bytes(arrays):
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


if __name__ == "__main__":
    sys.exit(main())
