"""The compact sparse 1x1 conv weight format (version 1), in NumPy.

Writes the tensors that the `ClickTrainSparseConv1x1` custom op takes as
constant inputs, from the zeros of a 1x1 filter. The format is specified
once, for all readers and writers, in
`tflite_export/include/clicktrain/sparse_conv1x1.h`; in short, per layer:

- `nonzero_mask` (uint8 `[output_channels, ceil(input_channels / 8)]`): bit
  `i % 8` of byte `i // 8` of row `o` is set when weight `(o, i)` is kept.
- `values` (float32 `[num_nonzeros]`): the kept weights, row after row,
  ascending input channel within a row.

A bit per dense weight costs less than an 8-bit index per kept weight
whenever more than one weight in eight is kept, which covers the 70-90%
sparsity the library prunes 1x1 convs to.

No Keras or TensorFlow here.
"""

import dataclasses

import numpy as np

FORMAT_VERSION = 1
OP_NAME = "ClickTrainSparseConv1x1"
MAX_CHANNELS = 65535


@dataclasses.dataclass(frozen=True)
class SparsePointwiseWeights:
    """One 1x1 layer's filter in compact form.

    Attributes:
        nonzero_mask: uint8 `[output_channels, ceil(input_channels / 8)]`.
        values: float32 `[num_nonzeros]`.
    """

    nonzero_mask: np.ndarray
    values: np.ndarray

    @property
    def output_channels(self):
        return int(self.nonzero_mask.shape[0])

    @property
    def num_nonzeros(self):
        return int(self.values.size)

    @property
    def nbytes(self):
        """Bytes of the compact tensors (bias excluded)."""
        return self.nonzero_mask.nbytes + self.values.nbytes


def encode(filter_oi):
    """Encodes a sparse 1x1 filter.

    Args:
        filter_oi: float array `[output_channels, input_channels]`, or the
            TFLite CONV_2D layout `[output_channels, 1, 1, input_channels]`.

    Returns:
        A `SparsePointwiseWeights`.

    Raises:
        ValueError: if the filter is not 1x1 or has more than `MAX_CHANNELS`
            input or output channels.
    """
    filter_oi = np.asarray(filter_oi, dtype=np.float32)
    if filter_oi.ndim == 4 and filter_oi.shape[1:3] == (1, 1):
        filter_oi = filter_oi.reshape(filter_oi.shape[0], filter_oi.shape[3])
    if filter_oi.ndim != 2 or 0 in filter_oi.shape:
        raise ValueError(
            "filter_oi must have shape [output_channels, input_channels] or "
            f"[output_channels, 1, 1, input_channels]. Received: shape={filter_oi.shape}"
        )
    if max(filter_oi.shape) > MAX_CHANNELS:
        raise ValueError(
            f"A sparse 1x1 layer has at most {MAX_CHANNELS} input and output "
            f"channels. Received: shape={filter_oi.shape}"
        )
    kept = filter_oi != 0
    return SparsePointwiseWeights(
        nonzero_mask=np.packbits(kept, axis=1, bitorder="little"),
        values=filter_oi[kept],  # Row-major: row after row, channels ascending.
    )


def decode(weights, input_channels):
    """Rebuilds the dense filter `[output_channels, input_channels]`.

    Raises:
        ValueError: if the mask and values disagree with each other or with
            `input_channels`.
    """
    mask = np.asarray(weights.nonzero_mask, np.uint8)
    if mask.ndim != 2 or mask.shape[1] != (input_channels + 7) // 8:
        raise ValueError(
            f"nonzero_mask must have shape [output_channels, {(input_channels + 7) // 8}] "
            f"for input_channels={input_channels}. Received: shape={mask.shape}"
        )
    bits = np.unpackbits(mask, axis=1, bitorder="little").astype(bool)
    if bits[:, input_channels:].any():
        raise ValueError(f"nonzero_mask marks input channels >= {input_channels}.")
    kept = bits[:, :input_channels]
    if int(kept.sum()) != weights.values.size:
        raise ValueError(
            f"values must hold one weight per set bit ({int(kept.sum())}). "
            f"Received: {weights.values.size} values"
        )
    dense = np.zeros(kept.shape, np.float32)
    dense[kept] = weights.values
    return dense
