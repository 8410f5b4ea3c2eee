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
    fails with a message saying to add it. Steps are numbered as in
    tensorflow-model-optimization: the first batch is step 1, and after
    ``n`` batches every wrapper's ``pruning_step`` is ``n``. The count
    continues from the value saved in the wrappers, so a reloaded or resumed
    model picks up its schedule where it stopped. At the end of every epoch
    the masks are re-applied to the weights (as tfmot does).

    In a custom training loop, call it as tfmot's recipe does:

    ```python
    step_callback = ct.UpdatePruningStep()
    step_callback.set_model(model)
    step_callback.on_train_begin()
    for epoch in range(epochs):
        for x, y in dataset:
            step_callback.on_train_batch_begin(batch=-1)
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True)) + sum(model.losses)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
        step_callback.on_epoch_end(batch=-1)
    ```

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
            # Read lazily: BackupAndRestore (or a checkpoint restored in a
            # custom loop) may restore the weights after on_train_begin, and
            # the saved step is where the run resumes.
            saved = [int(w.pruning_step.numpy()) for w in self._wrappers if w.built]
            self._step = max(saved + [0])
        self._step += 1
        for wrapper in self._wrappers:
            wrapper.check_selection_inputs(self._step)
        for wrapper in self._wrappers:
            wrapper.update_pruning(self._step)

    def on_epoch_end(self, epoch=None, logs=None, batch=None):
        # tfmot's custom-loop recipe passes batch=; Keras passes the epoch.
        for wrapper in self._wrappers:
            if wrapper.built:
                wrapper.reapply_masks()


class PruningSummaries(keras.callbacks.Callback):
    """Writes per-layer pruning scalars for TensorBoard.

    For each pruned layer: ``sparsity`` (fraction of zero weights in the
    pruned weights), ``kernels_kept`` and ``patterns_in_use`` (3x3 layers),
    and ``phase``; plus ``pattern_usage`` histograms (how many kernels use
    each pattern id, removed kernels as -1). At the end of every epoch also
    the pattern report (`tf_clicktrain.report`) as an image,
    ``pruning/pattern_report``: each layer's patterns, kernels per pattern,
    kernels kept vs removed (skipped, with a warning, without matplotlib).

    In a custom training loop (tfmot's recipe), call ``set_model(model)``
    once and ``on_epoch_end(batch=-1)`` (or ``on_epoch_begin(epoch=-1)``)
    once per epoch: the summaries are written there too.

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
        self._in_fit = False

    @property
    def writer(self):
        """The summary writer, created on first use (custom loops too)."""
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        return self._writer

    def on_train_begin(self, logs=None):
        self._in_fit = True
        self._batches_seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches_seen += 1
        if self.update_freq != "epoch" and self._batches_seen % self.update_freq == 0:
            self._write()

    def on_epoch_begin(self, epoch=None, logs=None):
        # tfmot's newer custom-loop recipe logs here; fit logs at epoch end.
        if not self._in_fit:
            self._write()

    def on_epoch_end(self, epoch=None, logs=None, batch=None):
        # tfmot's custom-loop recipe passes batch=; Keras passes the epoch.
        if self.update_freq == "epoch" or not self._in_fit:
            self._write()
        if self.pattern_report:
            self._write_pattern_report()

    def on_train_end(self, logs=None):
        self._in_fit = False
        if self._writer is not None:
            self._writer.flush()

    def _write(self):
        wrappers = [w for w in pruning_wrappers(self.model) if w.built]
        if not wrappers:
            return
        step = max(int(w.pruning_step.numpy()) for w in wrappers)
        with self.writer.as_default(step=step):
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
        self.writer.flush()

    def _write_pattern_report(self):
        """The pattern report as an image summary (once per epoch)."""
        wrappers = [w for w in pruning_wrappers(self.model) if w.built]
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
        with self.writer.as_default(step=step):
            image = tf.io.decode_png(png, channels=3)[tf.newaxis]
            tf.summary.image("pruning/pattern_report", image)
        self.writer.flush()
