import numpy as np
import pytest

from tf_clicktrain import patterns


def test_fold_output_scale_scales_each_output_channel_by_the_squared_bn_factor():
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((3, 3, 2, 3))
    gamma = np.array([1.0, 2.0, 0.5])
    variance = np.array([4.0, 1.0, 0.25])
    folded = patterns.fold_output_scale(np.square(weights), gamma, variance, 1e-3)
    expected = np.square(weights * gamma / np.sqrt(variance + 1e-3))
    np.testing.assert_allclose(folded, expected)


def test_fold_output_scale_changes_which_kernels_are_removed():
    # Filter 0 has large raw weights but a BN that shrinks them 10x; folded,
    # its kernels are the least important and connectivity removes them.
    rows = np.ones((3, 3, 1, 2))
    rows[..., 0] *= 3.0
    raw = patterns.to_kernel_rows(np.square(rows))
    folded = patterns.to_kernel_rows(
        patterns.fold_output_scale(np.square(rows), [0.1, 1.0], [1.0, 1.0], 1e-5))
    assert patterns.kernels_to_keep(raw.sum(axis=1), 0.5).tolist() == [True, False]
    assert patterns.kernels_to_keep(folded.sum(axis=1), 0.5).tolist() == [False, True]


@pytest.mark.parametrize(
    "gamma, variance, epsilon, match",
    [([1.0], [1.0, 1.0], 1e-3, "one value per output channel"),
     ([1.0, 1.0], [1.0, -1.0], 1e-3, "variance"),
     ([1.0, 1.0], [1.0, 1.0], 0.0, "epsilon")],
)
def test_fold_output_scale_rejects_mismatched_bn_statistics(gamma, variance, epsilon, match):
    with pytest.raises(ValueError, match=match):
        patterns.fold_output_scale(np.ones((3, 3, 1, 2)), gamma, variance, epsilon)
