"""tfmot's pruning_callbacks_test.py, ported: fit and custom training loops.

Differences:
- ``prune_pattern`` prunes Dense layers of a model only with
  ``unstructured="all"`` (its default targets convolutions); tfmot's
  ``prune_low_magnitude`` prunes them by default.
- ``pruning_step`` after 3 single-batch epochs is 3, as in tfmot since it
  counts steps from 1 (tfmot's older test expected 2).
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_clicktrain as ct

BATCH_SIZE = 20


def build_simple_dense_model():
    """tfmot's keras_test_utils.build_simple_dense_model."""
    return keras.Sequential([
        keras.Input((10,)),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(5, activation="softmax"),
    ])


def _pruned_model_setup(custom_training_loop=False):
    pruned_model = ct.prune_pattern(build_simple_dense_model(), unstructured="all")
    rng = np.random.default_rng(0)
    x_train = rng.random((BATCH_SIZE, 10)).astype("float32")
    y_train = keras.utils.to_categorical(rng.integers(0, 5, (BATCH_SIZE, 1)), 5)
    loss = keras.losses.categorical_crossentropy
    optimizer = keras.optimizers.SGD()
    if custom_training_loop:
        return pruned_model, loss, optimizer, x_train, y_train
    pruned_model.compile(loss=loss, optimizer=optimizer, metrics=["accuracy"])
    return pruned_model, x_train, y_train


def _steps(model):
    return [int(w.pruning_step.numpy()) for w in ct.pruning_wrappers(model)]


def _assert_logs_exist(log_dir):
    assert os.listdir(log_dir)


def test_update_pruning_steps_and_logs_summaries(tmp_path):
    log_dir = str(tmp_path)
    pruned_model, x_train, y_train = _pruned_model_setup()
    pruned_model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=3, verbose=0,
                     callbacks=[ct.UpdatePruningStep(), ct.PruningSummaries(log_dir=log_dir)])
    assert _steps(pruned_model) == [3, 3]
    _assert_logs_exist(log_dir)


def test_update_pruning_steps_and_logs_summaries_custom_training_loop(tmp_path):
    log_dir = str(tmp_path)
    pruned_model, loss, optimizer, x_train, y_train = _pruned_model_setup(
        custom_training_loop=True)
    unused_arg = -1
    step_callback = ct.UpdatePruningStep()
    log_callback = ct.PruningSummaries(log_dir=log_dir)
    step_callback.set_model(pruned_model)
    log_callback.set_model(pruned_model)
    pruned_model.optimizer = optimizer

    step_callback.on_train_begin()
    for _ in range(3):
        # Only one batch given batch_size = 20 and the input shape.
        step_callback.on_train_batch_begin(batch=unused_arg)
        with tf.GradientTape() as tape:
            logits = pruned_model(x_train, training=True)
            loss_value = loss(y_train, logits)
        grads = tape.gradient(loss_value, pruned_model.trainable_variables)
        optimizer.apply_gradients(zip(grads, pruned_model.trainable_variables))
        step_callback.on_epoch_end(batch=unused_arg)
        log_callback.on_epoch_end(batch=unused_arg)

    assert _steps(pruned_model) == [3, 3]
    _assert_logs_exist(log_dir)
    # The summaries were written in the loop, at the steps reached.
    events = [
        event.step
        for name in os.listdir(log_dir)
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name))
        for value in event.summary.value
        if value.tag.endswith("dense/sparsity")
    ]
    assert events == [1, 2, 3]


def test_custom_loop_summaries_also_write_on_epoch_begin(tmp_path):
    # tfmot's newer recipe calls log_callback.on_epoch_begin(epoch=-1).
    pruned_model, _, _, _, _ = _pruned_model_setup(custom_training_loop=True)
    log_callback = ct.PruningSummaries(log_dir=str(tmp_path), pattern_report=False)
    log_callback.set_model(pruned_model)
    log_callback.on_epoch_begin(epoch=-1)
    _assert_logs_exist(str(tmp_path))


def test_prune_training_raises_error_pruning_step_callback_missing():
    pruned_model, x_train, y_train = _pruned_model_setup()
    with pytest.raises(tf.errors.InvalidArgumentError, match="UpdatePruningStep"):
        pruned_model.fit(x_train, y_train, verbose=0)


def test_prune_training_loop_raises_error_pruning_step_callback_missing_custom_loop():
    pruned_model, _, _, x_train, _ = _pruned_model_setup(custom_training_loop=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="UpdatePruningStep"):
        with tf.GradientTape():
            pruned_model(x_train, training=True)
