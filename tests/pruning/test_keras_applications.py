"""Every keras.applications model wraps, trains past the hard phase, strips,
round-trips through .keras, tf.train.Checkpoint and SavedModel, and converts.

Slow: one parameter per model, run with ``-m slow``. Each model is kept
cheap: weights=None, the smallest input its family accepts, two images,
three eager steps of a schedule whose hard phase starts at step 2, and
``decide_by="size"`` so that converting times nothing.
"""

import gc
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_clicktrain as ct

# The smallest input each family accepts with weights=None (others: 32).
INPUT_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
MODELS = sorted(name for name in dir(keras.applications) if name[0].isupper())
SCHEDULE = ct.ClickTrainSchedule(selection_step=1, hard_pruning_step=2)
# Above this many parameters (ConvNeXtXLarge: 350M), Adam's two slots per
# weight would take the test past 24 GB; SGD keeps no slots, and clipping
# the gradient's norm bounds its steps as Adam's are bounded.
SLOT_FREE_OPTIMIZER_ABOVE = 250_000_000


def _prune(model):
    # unstructured="all": every kind of layer a model has is wrapped (3x3
    # convs get patterns; Dense, 1x1 and other kernel sizes magnitude
    # pruning), which ConvNeXt needs: it has no 3x3 conv, and its 1x1 convs
    # are Dense layers.
    return ct.prune_pattern(model, schedule=SCHEDULE, unstructured="all")


def _build(name):
    size = INPUT_SIZE.get(name, 32)
    return getattr(keras.applications, name)(
        weights=None, input_shape=(size, size, 3), classes=3)


def _freeze_batch_norm(layer):
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.trainable = False
    for child in getattr(layer, "layers", []):
        _freeze_batch_norm(child)


def _optimizer(num_params):
    if num_params > SLOT_FREE_OPTIMIZER_ABOVE:
        return keras.optimizers.SGD(1e-4, clipnorm=1.0)
    return keras.optimizers.Adam(1e-4)


def _assert_same_predictions(model, x, expected):
    np.testing.assert_allclose(model(x, training=False), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_application_wraps_trains_strips_saves_and_converts(name, tmp_path):
    model = _build(name)
    num_params = model.count_params()
    size = model.input_shape[1]
    pruned = _prune(model)
    # Rebuilt below for the checkpoint restore: not kept through training.
    del model
    wrappers = ct.pruning_wrappers(pruned)
    assert wrappers
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, size, size, 3)).astype("float32")
    y = rng.integers(0, 3, 2)
    # Eager steps: tracing a large model's train function costs more than
    # the three steps themselves.
    # The dense EfficientNetV2L, untrained, already has non-finite gradients
    # from the batch statistics of two images, and gradients of 1e14 with
    # BatchNorm frozen, which pattern selection rightly refuses once SGD has
    # made the weights non-finite. Frozen BatchNorm and Adam's bounded steps
    # keep every model finite.
    _freeze_batch_norm(pruned)
    pruned.compile(_optimizer(num_params), "sparse_categorical_crossentropy",
                   run_eagerly=True)
    pruned.fit(x, y, epochs=3, batch_size=2, verbose=0, callbacks=[ct.UpdatePruningStep()])
    assert all(int(w.pruning_phase.numpy()) == ct.schedules.HARD for w in wrappers)
    del wrappers
    expected = keras.ops.convert_to_numpy(pruned(x, training=False))

    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    _assert_same_predictions(loaded, x, expected)
    # Each copy is freed once checked, and its files removed: even so, the
    # largest models need about 15 bytes of memory per byte of parameters,
    # and each saved copy holds the weights and both masks.
    del loaded
    gc.collect()
    (tmp_path / "pruned.keras").unlink()
    checkpoint = tf.train.Checkpoint(model=pruned).save(str(tmp_path / "checkpoint" / "ckpt"))
    # prune_pattern clones: wrapping a freshly built dense model of the same
    # structure gives a model to restore into.
    restored = _prune(_build(name))
    status = tf.train.Checkpoint(model=restored).restore(checkpoint)
    status.assert_existing_objects_matched()
    status.expect_partial()  # The optimizer's slots: `restored` has not trained.
    _assert_same_predictions(restored, x, expected)
    del restored, status
    gc.collect()
    shutil.rmtree(tmp_path / "checkpoint")
    tf.saved_model.save(pruned, str(tmp_path / "saved"))
    served_model = tf.saved_model.load(str(tmp_path / "saved"))
    (served,) = served_model.signatures["serving_default"](tf.constant(x)).values()
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)
    del served_model, served
    gc.collect()
    shutil.rmtree(tmp_path / "saved")

    stripped = ct.strip_pruning(pruned)
    del pruned
    gc.collect()
    assert not ct.pruning_wrappers(stripped)
    _assert_same_predictions(stripped, x, expected)
    stats = ct.model_stats(stripped)
    assert stats.conv3x3_nonzero < stats.conv3x3_weights or not stats.conv3x3_weights
    tflite_bytes = ct.tflite.convert(stripped, decide_by="size")
    del stripped
    gc.collect()
    interpreter = ct.tflite.Interpreter(model_content=tflite_bytes)
    runner = interpreter.get_signature_runner()
    (input_name,) = runner.get_input_details()
    (output,) = runner(**{input_name: x[:1]}).values()
    np.testing.assert_allclose(output, expected[:1], rtol=1e-3, atol=1e-4)
