"""Every saver sees every pruning variable: TF checkpoints and SavedModel."""

import keras
import numpy as np
import tensorflow as tf

import tf_clicktrain as ct
from tests.conftest import random_data
from tests.conftest import small_cnn

SCHEDULE = ct.ClickTrainSchedule(selection_step=2, hard_pruning_step=4, penalty=1e-3)


def _pruned(importance="taylor_accumulated"):
    model = ct.prune_pattern(small_cnn(), schedule=SCHEDULE, importance=importance)
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    return model


def _trained(epochs=3):
    model = _pruned()
    x, y = random_data(32)
    model.fit(x, y, epochs=epochs, batch_size=16, shuffle=False, verbose=0,
              callbacks=[ct.UpdatePruningStep()])
    return model, x, y


def test_tf_checkpoint_restores_masks_patterns_and_step(tmp_path):
    model, x, _ = _trained()
    assert int(ct.pruning_wrappers(model)[0].pruning_phase.numpy()) == ct.schedules.HARD
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    names = [name for name, _ in tf.train.list_variables(path)]
    for variable in ("mask_0", "target_mask_0", "pattern_set_0", "pattern_ids_0",
                     "importance_0", "pruning_step", "pruning_phase"):
        assert any(f"/{variable}/" in name for name in names), variable

    restored = _pruned()
    tf.train.Checkpoint(model=restored).restore(path).assert_existing_objects_matched()
    for a, b in zip(model.variables, restored.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)


def test_training_after_a_tf_checkpoint_restore_keeps_pruned_weights_at_zero(tmp_path):
    model, x, y = _trained()
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    restored = _pruned()
    tf.train.Checkpoint(model=restored).restore(path)
    restored.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[ct.UpdatePruningStep()])
    for original, wrapper in zip(ct.pruning_wrappers(model), ct.pruning_wrappers(restored)):
        mask = original.pruned[0].mask.numpy()
        assert (mask == 0).any()
        np.testing.assert_array_equal(wrapper.pruned[0].mask.numpy(), mask)
        assert not wrapper.pruned[0].weight.numpy()[mask == 0].any()
    assert int(ct.pruning_wrappers(restored)[0].pruning_step.numpy()) == 8


def test_saved_model_of_a_wrapped_model_serves_the_masked_function(tmp_path):
    model, x, _ = _trained()
    tf.saved_model.save(model, str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    served = loaded.signatures["serving_default"](tf.constant(x))
    (output,) = served.values()
    np.testing.assert_allclose(output.numpy(), model.predict(x, verbose=0), rtol=1e-5,
                               atol=1e-6)


def test_export_and_weights_files_still_work(tmp_path):
    model, x, _ = _trained()
    model.export(str(tmp_path / "exported"))
    model.save_weights(str(tmp_path / "w.weights.h5"))
    other = _pruned()
    other.load_weights(str(tmp_path / "w.weights.h5"))
    for a, b in zip(model.variables, other.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
