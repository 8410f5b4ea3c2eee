"""tfmot's pruning_impl_test.py (mask math), ported to the controller and
the NumPy mask functions it uses.

Difference: a weight whose leading axes all have length 1 (a 1x1
convolution's kernel) is block-pruned as its matrix; tfmot refuses every
weight that is not 2-D. testBlockMaskingWithHigherDimensionsRaisesError
therefore passes tfmot's 3-D weight to the mask function itself, and a
weight with a real third axis to the wrapper.

Not applicable: tfmot's graph-mode (TF1) runs of each case.
"""

import keras
import numpy as np
import pytest

import tf_clicktrain as ct
from tf_clicktrain.pruning import schedules


class VectorLayer(keras.layers.Layer, ct.PrunableLayer):
    """One weight vector 1, 2, ..., 100 (tfmot's test weight)."""

    def build(self, input_shape):
        self.weight = self.add_weight(
            shape=(100,), initializer=keras.initializers.Constant(np.linspace(1.0, 100.0, 100)))

    def call(self, inputs):
        return inputs * self.weight

    def get_prunable_weights(self):
        return [self.weight]


class ListedSparsity(schedules.PruningSchedule):
    """Prunes at every step to the sparsity listed for it."""

    def __init__(self, values):
        self.values = list(values)

    def __call__(self, step):
        return True, self.values[step]

    def phase(self, step):
        return schedules.HARD

    @property
    def final_sparsity(self):
        return self.values[-1]

    def get_config(self):
        return {"values": self.values}


class MatrixLayer(keras.layers.Layer, ct.PrunableLayer):
    """One weight of a given value (tfmot's block-masking test weights)."""

    def __init__(self, value, **kwargs):
        super().__init__(**kwargs)
        self.value = np.asarray(value, np.float32)

    def build(self, input_shape):
        self.weight = self.add_weight(
            shape=self.value.shape, initializer=keras.initializers.Constant(self.value))

    def call(self, inputs):
        return inputs

    def get_prunable_weights(self):
        return [self.weight]


def _wrapped(schedule):
    wrapper = ct.PatternPruningWrapper(VectorLayer(), schedule=schedule)
    wrapper.build((None, 100))
    return wrapper


def _block_masking(block_size, block_pooling_type, weight, expected_mask):
    wrapper = ct.PatternPruningWrapper(
        MatrixLayer(weight), schedule=ct.ConstantSparsity(0.5, 0, 100, 1),
        block_size=block_size, block_pooling_type=block_pooling_type)
    wrapper.build((None, 4))
    wrapper.update_pruning(1)
    new_mask = wrapper.pruned[0].target_mask.numpy()
    assert new_mask.shape == np.shape(weight)
    np.testing.assert_array_equal(new_mask, expected_mask)


def test_update_single_mask():
    wrapper = _wrapped(ct.ConstantSparsity(0.5, 0, 100, 1))
    assert np.count_nonzero(wrapper.pruned[0].mask.numpy()) == 100
    wrapper.update_pruning(1)
    assert np.count_nonzero(wrapper.pruned[0].mask.numpy()) == 50


def test_constructs_mask_and_threshold_correctly():
    # Sparsity math often returns values with small tolerances.
    mask = ct.patterns.magnitude_mask(np.arange(1, 11), 0.200000018)
    np.testing.assert_array_equal(mask, np.concatenate((np.zeros(2), np.ones(8))))


def test_conditional_mask_update():
    wrapper = _wrapped(ListedSparsity([0.0, 0.1, 0.1, 0.3, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5]))
    non_zero_count = []
    for step in range(10):
        wrapper.update_pruning(step)
        wrapper.reapply_masks()
        non_zero_count.append(np.count_nonzero(wrapper.pruned[0].weight.numpy()))
    # Weights pruned at steps 1, 3, 5.
    assert non_zero_count == [100, 90, 90, 70, 70, 50, 50, 50, 50, 50]


def test_block_masking_avg():
    weight = [[0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2],
              [0.3, 0.3, 0.4, 0.4], [0.3, 0.3, 0.4, 0.4]]
    expected_mask = [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0],
                     [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    _block_masking((2, 2), "AVG", weight, expected_mask)


def test_block_masking_max():
    weight = [[0.1, 0.0, 0.2, 0.0], [0.0, -0.1, 0.0, -0.2],
              [0.3, 0.0, 0.4, 0.0], [0.0, -0.3, 0.0, -0.4]]
    expected_mask = [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0],
                     [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    _block_masking((2, 2), "MAX", weight, expected_mask)


def test_block_masking_with_higher_dimensions_raises_error():
    # Weights as in test_block_masking_avg, but with one extra dimension.
    weight = np.array([[[0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2],
                        [0.3, 0.3, 0.4, 0.4], [0.3, 0.3, 0.4, 0.4]]])
    # Block masking should only be used with 2 Dimensional weights.
    with pytest.raises(ValueError, match="2-dimensional"):
        ct.patterns.block_mask(weight, 0.5, (2, 2), "AVG")
    with pytest.raises(ValueError, match="block_size=\\(2, 2\\).*shape \\(2, 4, 4\\)"):
        _block_masking((2, 2), "AVG", np.concatenate([weight, weight]), None)
