"""Keras callbacks: drive the pruning step, log pruning summaries."""

import logging

import keras
import numpy as np
import tensorflow as tf

from tf_clicktrain.pruning import stats
from tf_clicktrain.pruning.prune import pruning_wrappers

logger = logging.getLogger(__name__)


class UpdatePruningStep(keras.callbacks.Callback):
    """Advances the pruning state of every wrapper before each batch.

    Required in ``fit`` for models with pruning wrappers; training without it
    fails with a message saying to add it. The step counts optimizer steps
    and continues from the value saved in the wrappers, so a reloaded or
    resumed model picks up its schedule where it stopped.

    Example:
    ```python
    model.fit(x, y, epochs=3, callbacks=[ct.UpdatePruningStep()])
    ```
    """

    def __init__(self):
        super().__init__()
        self._wrappers = []
        self._step = None

    def on_train_begin(self, logs=None):
        self._wrappers = pruning_wrappers(self.model)
        self._step = None
        for wrapper in self._wrappers:
            wrapper.reset_known_state()

    def on_train_batch_begin(self, batch, logs=None):
        if not self._wrappers:
            return
        if self._step is None:
            # Read lazily: BackupAndRestore may restore weights after
            # on_train_begin, and the saved step is where the run resumes.
            saved = [int(w.pruning_step.numpy()) for w in self._wrappers if w.built]
            self._step = max([step + 1 for step in saved] + [0])
        for wrapper in self._wrappers:
            wrapper.check_selection_inputs(self._step)
        for wrapper in self._wrappers:
            wrapper.update_pruning(self._step)

    def on_train_batch_end(self, batch, logs=None):
        if self._step is not None:
            self._step += 1


class PruningSummaries(keras.callbacks.Callback):
    """Writes per-layer pruning scalars for TensorBoard.

    For each pruned layer: ``sparsity`` (fraction of zero weights in the
    pruned weights), ``kernels_kept`` and ``patterns_in_use`` (3x3 layers),
    and ``phase``; plus ``pattern_usage`` histograms (how many kernels use
    each pattern id, removed kernels as -1). At the end of every epoch also
    the pattern report (`tf_clicktrain.report`) as an image,
    ``pruning/pattern_report``: each layer's patterns, kernels per pattern,
    kernels kept vs removed (skipped, with a warning, without matplotlib).

    Args:
        log_dir: directory for the event files.
        update_freq: "epoch" or an integer number of steps (scalars and
            histograms; the report image is written once per epoch).
        pattern_report: write the report image.

    Example:
    ```python
    model.fit(x, y, callbacks=[ct.UpdatePruningStep(),
                               ct.PruningSummaries("logs/pruning")])
    ```
    """

    def __init__(self, log_dir, update_freq="epoch", pattern_report=True):
        super().__init__()
        if not isinstance(log_dir, str) or not log_dir:
            raise ValueError(
                f"log_dir must be a non-empty path. Received: log_dir={log_dir!r}"
            )
        if update_freq != "epoch" and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ValueError(
                "update_freq must be 'epoch' or a positive integer. "
                f"Received: update_freq={update_freq!r}"
            )
        self.log_dir = log_dir
        self.update_freq = update_freq
        self.pattern_report = bool(pattern_report)
        self._writer = None
        self._batches_seen = 0

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir)
        self._batches_seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches_seen += 1
        if self.update_freq != "epoch" and self._batches_seen % self.update_freq == 0:
            self._write()

    def on_epoch_end(self, epoch, logs=None):
        if self.update_freq == "epoch":
            self._write()
        if self.pattern_report:
            self._write_pattern_report()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def _write(self):
        wrappers = pruning_wrappers(self.model)
        if not wrappers:
            return
        step = max(int(w.pruning_step.numpy()) for w in wrappers)
        with self._writer.as_default(step=step):
            for wrapper in wrappers:
                layer_stats = stats.wrapper_stats(wrapper)
                prefix = f"pruning/{wrapper.layer.name}"
                tf.summary.scalar(f"{prefix}/sparsity", layer_stats.sparsity)
                tf.summary.scalar(
                    f"{prefix}/phase", float(int(wrapper.pruning_phase.numpy()))
                )
                if layer_stats.num_kernels:
                    tf.summary.scalar(f"{prefix}/kernels_kept", layer_stats.kernels_kept)
                    tf.summary.scalar(
                        f"{prefix}/patterns_in_use", layer_stats.patterns_in_use
                    )
                    tf.summary.histogram(
                        f"{prefix}/pattern_usage",
                        np.asarray(layer_stats.pattern_ids, np.float32),
                    )
        self._writer.flush()

    def _write_pattern_report(self):
        """The pattern report as an image summary (once per epoch)."""
        wrappers = pruning_wrappers(self.model)
        if not wrappers:
            return
        try:
            from tf_clicktrain import report

            png = report.pattern_report_png(wrappers)
        except ImportError as error:
            logger.warning("PruningSummaries: no pattern report image (%s)", error)
            self.pattern_report = False
            return
        step = max(int(w.pruning_step.numpy()) for w in wrappers)
        with self._writer.as_default(step=step):
            image = tf.io.decode_png(png, channels=3)[tf.newaxis]
            tf.summary.image("pruning/pattern_report", image)
        self._writer.flush()
