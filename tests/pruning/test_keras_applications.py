"""Every keras.applications model wraps, trains past the hard phase, strips,
round-trips through .keras, tf.train.Checkpoint and SavedModel, and converts.

Slow: one parameter per model, run with ``-m slow`` (MobileNetV3Small, the
hard-sigmoid ``keras.ops`` case, takes minutes on a loaded 2-core machine).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_clicktrain as ct

# The smallest input each family accepts with weights=None.
INPUT_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71, "NASNetLarge": 32,
              "NASNetMobile": 32}
MODELS = sorted(name for name in dir(keras.applications) if name[0].isupper())


def _constructor_kwargs(name):
    size = INPUT_SIZE.get(name, 32)
    kwargs = dict(weights=None, input_shape=(size, size, 3), classes=3)
    return kwargs


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_application_wraps_trains_strips_saves_and_converts(name, tmp_path):
    model = getattr(keras.applications, name)(**_constructor_kwargs(name))
    schedule = ct.ClickTrainSchedule(selection_step=1, hard_pruning_step=2)
    pruned = ct.prune_pattern(model, schedule=schedule)
    assert ct.pruning_wrappers(pruned)
    size = model.input_shape[1]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, size, size, 3)).astype("float32")
    y = rng.integers(0, 3, 2)
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=3, batch_size=2, verbose=0, callbacks=[ct.UpdatePruningStep()])
    assert all(int(w.pruning_phase.numpy()) == ct.schedules.HARD
               for w in ct.pruning_wrappers(pruned))
    expected = pruned.predict(x, verbose=0)

    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path).predict(x, verbose=0), expected,
                               rtol=1e-4, atol=1e-5)
    checkpoint = tf.train.Checkpoint(model=pruned).save(str(tmp_path / "ckpt"))
    restored = ct.prune_pattern(getattr(keras.applications, name)(**_constructor_kwargs(name)),
                                schedule=schedule)
    tf.train.Checkpoint(model=restored).restore(checkpoint).assert_existing_objects_matched()
    np.testing.assert_allclose(restored.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)
    tf.saved_model.save(pruned, str(tmp_path / "saved"))

    stripped = ct.strip_pruning(pruned)
    assert not ct.pruning_wrappers(stripped)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)
    assert ct.tflite.convert(stripped)
