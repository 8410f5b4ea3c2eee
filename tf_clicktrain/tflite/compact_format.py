"""The compact pattern-conv weight format (version 1), in NumPy.

Reads a layer's patterns from the zeros of its 3x3 filter and writes the
compact tensors that the `ClickTrainPatternConv2D` and
`ClickTrainPatternDepthwiseConv2D` custom ops take as constant inputs. The
format is specified once, for all readers and writers, in
`tflite_export/include/clicktrain/pattern_conv.h`; in short, per layer:

- `pattern_masks` (uint16 `[P]`): the layer's pattern table, bit `3 * ky + kx`
  set when 3x3 position `(ky, kx)` is kept.
- `pattern_run_lengths` (uint8 or uint16 `[C_out, P]`): kept kernels of each pattern in
  each filter. A filter's kernels are stored grouped by pattern (PatDNN's
  filter-kernel reordering), so kernels of one pattern are adjacent and each
  kernel's pattern id follows from the run lengths.
- `kernel_input_channels` (uint8 or uint16 `[K]`): input channel of each kept
  kernel.

The two index tensors use uint8 whenever every value fits, so a kept kernel
costs one index byte next to its float32 weights in layers of up to 256 input
channels.
- `values` (float32 `[V]`): kept weights, kernel after kernel, positions in
  ascending bit order.

No Keras or TensorFlow here.
"""

import dataclasses

import numpy as np

FORMAT_VERSION = 1
CONV_OP_NAME = "ClickTrainPatternConv2D"
DEPTHWISE_CONV_OP_NAME = "ClickTrainPatternDepthwiseConv2D"
KERNEL_POSITIONS = 9
MAX_CHANNELS = 65535
MAX_PATTERNS = 511

_POSITION_BITS = (1 << np.arange(KERNEL_POSITIONS)).astype(np.uint16)


@dataclasses.dataclass(frozen=True)
class CompactWeights:
    """One layer's filter in compact form.

    Attributes:
        pattern_masks: uint16 `[num_patterns]`, the pattern table.
        pattern_run_lengths: uint8 or uint16 `[output_channels, num_patterns]`.
        kernel_input_channels: uint8 or uint16 `[num_kernels]`.
        values: float32 `[num_values]`.
    """

    pattern_masks: np.ndarray
    pattern_run_lengths: np.ndarray
    kernel_input_channels: np.ndarray
    values: np.ndarray

    @property
    def num_patterns(self):
        return int(self.pattern_masks.size)

    @property
    def num_kernels(self):
        return int(self.kernel_input_channels.size)

    @property
    def nbytes(self):
        """Bytes of all compact tensors (bias excluded)."""
        return sum(
            array.nbytes
            for array in (
                self.pattern_masks,
                self.pattern_run_lengths,
                self.kernel_input_channels,
                self.values,
            )
        )


def kernel_masks(filter_ohwi):
    """Returns the 9-bit non-zero mask of every 3x3 kernel.

    Args:
        filter_ohwi: array `[output_channels, 3, 3, input_channels]` (the
            TFLite CONV_2D filter layout).

    Returns:
        uint16 array `[output_channels, input_channels]`; 0 marks a removed
        kernel.
    """
    filter_ohwi = np.asarray(filter_ohwi)
    if filter_ohwi.ndim != 4 or filter_ohwi.shape[1:3] != (3, 3):
        raise ValueError(
            "filter_ohwi must have shape [output_channels, 3, 3, "
            f"input_channels]. Received: shape={filter_ohwi.shape}"
        )
    nonzero = filter_ohwi.reshape(filter_ohwi.shape[0], KERNEL_POSITIONS, -1) != 0
    return np.tensordot(_POSITION_BITS, nonzero, axes=([0], [1])).astype(np.uint16)


def encode_conv(filter_ohwi):
    """Encodes a pattern-sparse CONV_2D filter.

    Args:
        filter_ohwi: float array `[output_channels, 3, 3, input_channels]`.

    Returns:
        A `CompactWeights`, or `None` when the filter has no non-zero weight
        or more than `MAX_PATTERNS` distinct patterns or channel counts the
        format cannot index.
    """
    filter_ohwi = np.asarray(filter_ohwi, dtype=np.float32)
    output_channels, _, _, input_channels = filter_ohwi.shape
    if max(output_channels, input_channels) > MAX_CHANNELS:
        return None
    masks = kernel_masks(filter_ohwi)
    filters, channels = np.nonzero(masks)
    weights_o9i = filter_ohwi.reshape(output_channels, KERNEL_POSITIONS, -1)
    return _encode(
        output_channels,
        filters,
        channels,
        masks[filters, channels],
        weights_o9i[filters, :, channels],
    )


def encode_depthwise(filter_1hwc):
    """Encodes a pattern-sparse DEPTHWISE_CONV_2D filter (multiplier 1).

    Args:
        filter_1hwc: float array `[1, 3, 3, channels]` (TFLite layout).

    Returns:
        A `CompactWeights` in which filter `c` holds at most one kernel, on
        input channel `c`; or `None` as for `encode_conv`.
    """
    filter_1hwc = np.asarray(filter_1hwc, dtype=np.float32)
    if filter_1hwc.ndim != 4 or filter_1hwc.shape[:3] != (1, 3, 3):
        raise ValueError(
            "filter_1hwc must have shape [1, 3, 3, channels]. "
            f"Received: shape={filter_1hwc.shape}"
        )
    channels = filter_1hwc.shape[3]
    if channels > MAX_CHANNELS:
        return None
    per_channel = filter_1hwc.reshape(KERNEL_POSITIONS, channels).T  # [C, 9]
    masks = (per_channel != 0).astype(np.uint16) @ _POSITION_BITS
    (kept,) = np.nonzero(masks)
    return _encode(channels, kept, kept, masks[kept], per_channel[kept])


def _encode(output_channels, filters, channels, masks, kernel_weights):
    """Orders kept kernels by (filter, pattern, input channel) and packs them.

    Args:
        output_channels: number of filters.
        filters, channels: filter and input channel of each kept kernel.
        masks: non-zero mask of each kept kernel.
        kernel_weights: `[num_kernels, 9]` weights of each kept kernel.
    """
    table = np.unique(masks)
    if table.size == 0 or table.size > MAX_PATTERNS:
        return None
    pattern_ids = np.searchsorted(table, masks)
    order = np.lexsort((channels, pattern_ids, filters))
    filters, channels, pattern_ids = filters[order], channels[order], pattern_ids[order]
    run_lengths = np.zeros((output_channels, table.size), np.int64)
    np.add.at(run_lengths, (filters, pattern_ids), 1)
    kept = (table[pattern_ids][:, None] & _POSITION_BITS[None, :]) != 0
    return CompactWeights(
        pattern_masks=table.astype(np.uint16),
        pattern_run_lengths=_smallest_index_array(run_lengths),
        kernel_input_channels=_smallest_index_array(channels),
        values=kernel_weights[order][kept].astype(np.float32),
    )


def _smallest_index_array(indices):
    fits_in_a_byte = indices.size == 0 or int(indices.max()) <= np.iinfo(np.uint8).max
    return indices.astype(np.uint8 if fits_in_a_byte else np.uint16)


def decode(compact, input_channels):
    """Rebuilds the dense filter `[output_channels, 3, 3, input_channels]`.

    Args:
        compact: a `CompactWeights`.
        input_channels: the layer's input channel count.

    Returns:
        float32 array; for a depthwise layer, the diagonal conv equivalent.
    """
    output_channels = compact.pattern_run_lengths.shape[0]
    dense = np.zeros((output_channels, KERNEL_POSITIONS, input_channels), np.float32)
    pattern_of_kernel = np.concatenate(
        [
            np.repeat(np.arange(compact.num_patterns), row)
            for row in compact.pattern_run_lengths.astype(np.int64)
        ]
        or [np.zeros(0, np.int64)]
    )
    filter_of_kernel = np.repeat(
        np.arange(output_channels), compact.pattern_run_lengths.sum(axis=1, dtype=np.int64)
    )
    kept = (compact.pattern_masks[pattern_of_kernel][:, None] & _POSITION_BITS[None, :]) != 0
    kernel_weights = np.zeros(kept.shape, np.float32)
    kernel_weights[kept] = compact.values
    dense[filter_of_kernel, :, compact.kernel_input_channels.astype(np.int64)] = kernel_weights
    return dense.reshape(output_channels, 3, 3, input_channels)
