"""Block sparsity (``block_size``, ``block_pooling_type``) as tfmot offers it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_clicktrain as ct
from tf_clicktrain.patterns.blocks import follows_blocks
from tf_clicktrain.patterns.blocks import pool_blocks

SCHEDULE = ct.ConstantSparsity(0.5, begin_step=0)


def _blocks_zero(kernel, block_size):
    """Fraction of whole blocks of a 2-D kernel that are entirely zero."""
    return (pool_blocks(kernel != 0, block_size, "MAX") == 0).mean()


def test_edge_blocks_are_scored_over_the_entries_they_have():
    scores = np.array([[1.0, 3.0, 10.0], [5.0, 7.0, 20.0], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(
        pool_blocks(scores, (2, 2), "AVG"), [[4.0, 15.0], [0.5, 0.0]])
    np.testing.assert_allclose(
        pool_blocks(scores, (2, 2), "MAX"), [[7.0, 20.0], [0.5, 0.0]])
    mask = ct.patterns.block_mask(scores, 0.5, (2, 2), "AVG")
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 1, 1], [0, 0, 0]])
    assert follows_blocks(mask, (2, 2))
    assert not follows_blocks(np.eye(4), (2, 2))


def _model():
    return keras.Sequential([
        keras.Input((6, 6, 8)),
        keras.layers.Conv2D(8, 3, padding="same", name="stem"),
        keras.layers.Conv2D(16, 1, name="pointwise"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(8, name="head"),
    ])


def _trained(**kwargs):
    model = ct.prune_pattern(_model(), schedule=SCHEDULE, unstructured="all", **kwargs)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 6, 6, 8)).astype("float32")
    model.fit(x, np.zeros((8, 8)), batch_size=4, epochs=2, verbose=0,
              callbacks=[ct.UpdatePruningStep()])
    return model, x


@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
def test_dense_and_1x1_kernels_lose_whole_blocks(pooling):
    model, _ = _trained(block_size=(2, 4), block_pooling_type=pooling)
    stripped = ct.strip_pruning(model)
    for name in ("pointwise", "head"):
        kernel = stripped.get_layer(name).kernel.numpy()
        matrix = kernel.reshape(kernel.shape[-2:])
        assert follows_blocks(matrix != 0, (2, 4)), name
        assert _blocks_zero(matrix, (2, 4)) == 0.5, name


def test_block_settings_survive_keras_files_and_checkpoints(tmp_path):
    model, x = _trained(block_size=(4, 1), block_pooling_type="MAX")
    path = str(tmp_path / "blocks.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for wrapper in ct.pruning_wrappers(loaded):
        assert (wrapper.block_size, wrapper.block_pooling_type) == ((4, 1), "MAX")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)

    checkpoint = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    restored = ct.prune_pattern(_model(), schedule=SCHEDULE, unstructured="all",
                                block_size=(4, 1), block_pooling_type="MAX")
    tf.train.Checkpoint(model=restored).restore(checkpoint).assert_existing_objects_matched()
    for original, wrapper in zip(ct.pruning_wrappers(model), ct.pruning_wrappers(restored)):
        for a, b in zip(original.pruned, wrapper.pruned):
            np.testing.assert_array_equal(a.mask.numpy(), b.mask.numpy())


def test_a_target_mask_that_splits_a_block_is_refused_on_load():
    wrapper = ct.prune_pattern(keras.layers.Dense(4, name="blocky"), schedule=SCHEDULE,
                               block_size=(2, 2))
    wrapper.build((None, 4))
    wrapper.update_pruning(1)
    target = wrapper.pruned[0].target_mask
    split = target.numpy()
    split[0, 0] = 1.0 - split[0, 1]
    target.assign(split)
    wrapper.pruned[0].mask.assign(split)
    with pytest.raises(ValueError, match="'blocky'.*whole 2x2 blocks"):
        wrapper.check_state()


@pytest.mark.parametrize("kwargs, message", [
    ({"block_size": (0, 2)}, "block_size must be a pair"),
    ({"block_size": 4}, "block_size must be a pair"),
    ({"block_size": (2.0, 2)}, "block_size must be a pair"),
    ({"block_pooling_type": "MIN"}, "block_pooling_type must be one of"),
    ({"block_size": (1, 4), "sparsity_m_by_n": (2, 4)}, "block_size or sparsity_m_by_n"),
])
def test_invalid_block_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ct.prune_pattern(keras.layers.Dense(4), **kwargs)
    with pytest.raises(ValueError, match=message):
        ct.prune_pattern(_model(), unstructured="all", **kwargs)


def test_a_weight_with_no_matrix_view_names_the_layer():
    wrapper = ct.prune_pattern(keras.layers.Conv1D(4, 3, name="temporal"), block_size=(2, 2))
    with pytest.raises(ValueError, match="'temporal'.*block_size=\\(2, 2\\).*shape \\(3, 4, 4\\)"):
        wrapper.build((None, 10, 4))
