"""The compact weight format: patterns read from zeros, order, round trip."""

import numpy as np
import pytest
import tflite_helpers

from tf_clicktrain.tflite import compact_format


def _pattern_sparse_filter(rng, output_channels, input_channels):
    masks = np.zeros((output_channels, 9, input_channels), np.float32)
    for o in range(output_channels):
        for i in range(input_channels):
            if rng.random() > 0.3:
                pattern = tflite_helpers.PATTERNS[rng.integers(4)]
                masks[o, :, i] = tflite_helpers.pattern_bits(pattern)
    values = rng.normal(size=masks.shape).astype(np.float32)
    return (values * masks).reshape(output_channels, 3, 3, input_channels)


@pytest.mark.parametrize("channels", [(3, 13), (37, 5), (1, 1)])
def test_encode_decode_round_trip(channels):
    rng = np.random.default_rng(0)
    dense = _pattern_sparse_filter(rng, *channels)
    dense[0] = 0  # a filter whose kernels are all removed
    dense[-1, 1, 1, 0] = 1.0  # make sure at least one weight survives
    compact = compact_format.encode_conv(dense)
    np.testing.assert_array_equal(compact_format.decode(compact, channels[1]), dense)


def test_pattern_table_is_the_set_of_non_zero_positions():
    rng = np.random.default_rng(1)
    dense = _pattern_sparse_filter(rng, 8, 6)
    compact = compact_format.encode_conv(dense)
    assert set(compact.pattern_masks.tolist()) <= set(tflite_helpers.PATTERNS)
    assert compact.pattern_run_lengths.sum() == compact.num_kernels
    assert compact.values.size == 4 * compact.num_kernels
    assert np.count_nonzero(compact.values) == np.count_nonzero(dense)


def test_kernels_of_one_pattern_are_adjacent_within_a_filter():
    rng = np.random.default_rng(2)
    dense = _pattern_sparse_filter(rng, 4, 9)
    compact = compact_format.encode_conv(dense)
    masks = compact_format.kernel_masks(dense)
    start = 0
    for o, runs in enumerate(compact.pattern_run_lengths):
        for pattern, run in zip(compact.pattern_masks, runs):
            channels = compact.kernel_input_channels[start : start + run]
            assert (masks[o, channels] == pattern).all()
            assert (np.diff(channels.astype(int)) > 0).all()
            start += run


def test_depthwise_kernels_read_their_own_channel():
    rng = np.random.default_rng(3)
    dense = _pattern_sparse_filter(rng, 1, 11).reshape(1, 3, 3, 11)
    dense[..., 4] = 0
    compact = compact_format.encode_depthwise(dense)
    assert compact.pattern_run_lengths.sum(axis=1).max() <= 1
    assert 4 not in compact.kernel_input_channels
    rebuilt = compact_format.decode(compact, 11)
    diagonal = rebuilt[np.arange(11), :, :, np.arange(11)]  # [C, 3, 3]
    np.testing.assert_array_equal(diagonal.transpose(1, 2, 0), dense[0])


def test_all_zero_filter_is_not_encoded():
    assert compact_format.encode_conv(np.zeros((2, 3, 3, 2), np.float32)) is None


def test_kernel_masks_rejects_non_3x3_filters():
    with pytest.raises(ValueError, match="filter_ohwi must have shape"):
        compact_format.kernel_masks(np.zeros((2, 5, 5, 2)))
