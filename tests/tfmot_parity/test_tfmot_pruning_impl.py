"""tfmot's pruning_impl_test.py (mask math), ported to the controller and
the NumPy mask functions it uses.

Not applicable: testBlockMaskingAvg, testBlockMaskingMax and
testBlockMaskingWithHigherDimensionsRaisesError (block sparsity is not
offered); tfmot's graph-mode (TF1) runs of each case.
"""

import keras
import numpy as np

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


def _wrapped(schedule):
    wrapper = ct.PatternPruningWrapper(VectorLayer(), schedule=schedule)
    wrapper.build((None, 100))
    return wrapper


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
