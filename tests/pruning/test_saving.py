"""Saving and loading wrapped and stripped models."""

import json
import os

import keras
import numpy as np
import pytest

import tf_clicktrain as ct
from tests.conftest import random_data
from tests.conftest import small_cnn
from tests.pruning.helpers import assert_pattern_sparse
from tests.pruning.helpers import assert_wrapper_consistent

SCHEDULE = ct.ClickTrainSchedule(
    selection_step=4, hard_pruning_step=12, connectivity_sparsity=0.5,
    reselection_steps=[8], penalty=1e-3,
)


def _as_json(config):
    # Tuples become lists on disk; compare configs as JSON.
    return json.loads(json.dumps(config))


def _compiled_pruned():
    pruned = ct.prune_pattern(small_cnn(), schedule=SCHEDULE, importance="taylor_accumulated",
                              connectivity_sparsity=[0.25, 0.5])
    pruned.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                   "sparse_categorical_crossentropy", metrics=["accuracy"])
    return pruned


def _train(model, x, y, epochs):
    model.fit(x, y, epochs=epochs, batch_size=16, shuffle=False, verbose=0,
              callbacks=[ct.UpdatePruningStep()])


def test_keras_round_trip_mid_schedule_restores_state_and_continues_identically(tmp_path):
    x, y = random_data(64)
    keras.utils.set_random_seed(3)
    reference = _compiled_pruned()
    _train(reference, x, y, epochs=2)  # steps 0..7: selected, soft phase
    path = str(tmp_path / "mid.keras")
    reference.save(path)
    loaded = keras.saving.load_model(path)

    for original, restored in zip(ct.pruning_wrappers(reference), ct.pruning_wrappers(loaded)):
        assert _as_json(original.get_config()) == _as_json(restored.get_config())
        assert len(original.weights) == len(restored.weights)
        for a, b in zip(original.weights, restored.weights):
            assert a.path.split("/")[-1] == b.path.split("/")[-1]
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(ct.pruning_wrappers(loaded)[0].pruning_phase.numpy()) == ct.schedules.SOFT

    _train(reference, x, y, epochs=3)  # through the hard phase
    _train(loaded, x, y, epochs=3)
    for a, b in zip(reference.weights, loaded.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    for wrapper in ct.pruning_wrappers(loaded):
        if wrapper.layer.name != "pointwise":
            assert_wrapper_consistent(wrapper)


def test_stripped_model_is_plain_keras_and_survives_keras_save(tmp_path):
    x, y = random_data(64)
    pruned = _compiled_pruned()
    _train(pruned, x, y, epochs=4)
    final = ct.strip_pruning(pruned)
    assert not ct.pruning_wrappers(final)
    assert [type(layer) for layer in final.layers] == [
        type(layer) for layer in small_cnn().layers
    ]
    np.testing.assert_allclose(final.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    path = str(tmp_path / "final.keras")
    final.save(path)
    reloaded = keras.saving.load_model(path)
    for name in ("conv1", "conv2"):
        assert_pattern_sparse(reloaded.get_layer(name).kernel.numpy())
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), final.predict(x, verbose=0),
                               rtol=1e-6)


def test_pretrained_weights_loaded_after_wrapping(tmp_path):
    dense = small_cnn()
    x, y = random_data(32)
    dense.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dense.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "dense.weights.h5")
    dense.save_weights(path)
    keras.utils.set_random_seed(99)  # the wrapped model starts from other weights
    pruned = ct.prune_pattern(small_cnn())
    ct.load_pretrained_weights(pruned, path)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), dense.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    other = ct.prune_pattern(small_cnn())
    ct.load_pretrained_weights(other, dense)
    np.testing.assert_allclose(other.predict(x, verbose=0), dense.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no counterpart"):
        ct.load_pretrained_weights(other, keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_prune_scope_loads_wrapped_model(tmp_path):
    pruned = ct.prune_pattern(small_cnn())
    path = str(tmp_path / "wrapped.keras")
    pruned.save(path)
    with ct.prune_scope():
        loaded = keras.saving.load_model(path)
    assert len(ct.pruning_wrappers(loaded)) == 3


class HandWrappedNet(keras.Model):
    """A subclassed model whose convs are wrapped by hand in __init__."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stem = keras.layers.Conv2D(8, 3, padding="same", activation="relu")
        self.body = ct.prune_pattern(
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            schedule=ct.ClickTrainSchedule(2, 6, connectivity_sparsity=0.5),
        )
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(4)

    def call(self, x):
        return self.head(self.pool(self.body(self.stem(x))))


def test_hand_wrapped_layers_in_subclassed_model_train_save_and_strip(tmp_path):
    x, y = random_data(64)
    model = HandWrappedNet()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _train(model, x, y, epochs=3)
    assert_wrapper_consistent(model.body)
    path = str(tmp_path / "sub.weights.h5")
    model.save_weights(path)
    other = HandWrappedNet()
    other(x[:1])
    other.load_weights(path)
    assert_wrapper_consistent(other.body)
    expected = model.predict(x, verbose=0)
    stripped = ct.strip_pruning(model)
    assert isinstance(stripped.body, keras.layers.Conv2D)
    assert_pattern_sparse(stripped.body.kernel.numpy())
    np.testing.assert_allclose(stripped.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_load_pretrained_weights_before_wrapping():
    dense = small_cnn()
    dense.layers[1].kernel.assign(np.full(dense.layers[1].kernel.shape, 0.5, np.float32))
    pruned = ct.prune_pattern(dense)
    assert np.all(pruned.get_layer("prune_pattern_conv1").layer.kernel.numpy() == 0.5)


def test_strip_before_training_warns_and_returns_dense(caplog):
    pruned = ct.prune_pattern(small_cnn())
    pruned.build((None, 12, 12, 3))
    with caplog.at_level("WARNING"):
        final = ct.strip_pruning(pruned)
    assert "has not reached the hard pruning phase" in caplog.text
    assert not ct.pruning_wrappers(final)


def test_strip_rejects_non_models():
    with pytest.raises(ValueError, match="strip_pruning"):
        ct.strip_pruning("model.keras")


def test_keras_file_saved_by_version_0_1_0_still_loads_and_trains():
    # Saved mid-hard-phase by tf-clicktrain 0.1.0 (before the checkpoint
    # tracking change): same variables in the same order.
    data = os.path.join(os.path.dirname(__file__), "data")
    loaded = keras.saving.load_model(os.path.join(data, "saved_by_0.1.0.keras"))
    x, y = random_data(32)
    expected = np.load(os.path.join(data, "saved_by_0.1.0.expected.npy"))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[ct.UpdatePruningStep()])
    for wrapper in ct.pruning_wrappers(loaded):
        if wrapper.layer.name != "pointwise":
            assert_wrapper_consistent(wrapper)
