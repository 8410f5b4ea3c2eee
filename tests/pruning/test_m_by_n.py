"""sparsity_m_by_n: 2:4 (and M:N) sparsity for unstructured layers."""

import keras
import numpy as np
import pytest

import tf_clicktrain as ct
from tf_clicktrain.patterns.m_by_n import follows_m_by_n
from tf_clicktrain.patterns.m_by_n import m_by_n_mask


def test_mask_keeps_the_largest_m_of_every_n_input_channels():
    importance = np.array([[4.0, 0.0], [1.0, 9.0], [3.0, 8.0], [2.0, 7.0]])
    np.testing.assert_array_equal(
        m_by_n_mask(importance, 2, 4), [[1, 0], [0, 1], [1, 1], [0, 0]])
    assert follows_m_by_n(m_by_n_mask(np.random.rand(3, 3, 8, 4), 1, 4), 1, 4)


def _model():
    return keras.Sequential([
        keras.Input((6, 6, 4)),
        keras.layers.Conv2D(8, 3, padding="same", name="stem"),
        keras.layers.Conv2D(8, 3, padding="same", name="body"),
        keras.layers.Conv2D(8, 1, name="pointwise"),
        keras.layers.Flatten(),
        keras.layers.Dense(4, name="head"),
    ])


def test_two_four_sparsity_survives_training_and_a_keras_round_trip(tmp_path):
    pruned = ct.prune_pattern(_model(), schedule=ct.ConstantSparsity(0.5, 0),
                              unstructured="all", sparsity_m_by_n=(2, 4))
    pruned.compile("sgd", "mse")
    x = np.random.default_rng(0).standard_normal((8, 6, 6, 4)).astype("float32")
    pruned.fit(x, np.zeros((8, 4)), batch_size=4, epochs=2, verbose=0,
               callbacks=[ct.UpdatePruningStep()])
    path = str(tmp_path / "m_by_n.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    for wrapper in ct.pruning_wrappers(loaded):
        assert wrapper.sparsity_m_by_n == (2, 4)
        for (weight, kind), mask in zip(wrapper.pruned_weights(),
                                        [p.mask.numpy() for p in wrapper.pruned]):
            if kind == "unstructured":
                assert follows_m_by_n(mask, 2, 4), wrapper.layer.name
                assert follows_m_by_n(weight.numpy() != 0, 2, 4) or not np.all(
                    weight.numpy()[mask == 1])
    stripped = ct.strip_pruning(loaded)
    assert follows_m_by_n(stripped.get_layer("head").kernel.numpy() != 0, 2, 4)


@pytest.mark.parametrize("bad", [(3, 2), (0, 4), "2:4", (2, 4, 8), (2.0, 4)])
def test_invalid_m_by_n_names_the_argument(bad):
    with pytest.raises(ValueError, match="sparsity_m_by_n"):
        ct.prune_pattern(keras.layers.Dense(4), sparsity_m_by_n=bad)


def test_input_channels_not_a_multiple_of_n_name_the_layer():
    wrapper = ct.prune_pattern(keras.layers.Dense(4, name="odd"), sparsity_m_by_n=(2, 4))
    with pytest.raises(ValueError, match="'odd'.*multiple of 4"):
        wrapper.build((None, 6))


def test_m_names_the_zeros_as_in_tfmot():
    # tfmot: "(2, 4): 2 zeros out of 4 consecutive elements"; (1, 4) zeros one.
    wrapper = ct.prune_pattern(keras.layers.Dense(4), sparsity_m_by_n=(1, 4))
    wrapper.build((None, 8))
    wrapper.update_pruning(1)
    target = wrapper.pruned[0].target_mask.numpy()
    assert follows_m_by_n(target, 3, 4)
    assert (target == 0).sum() == target.size // 4
