"""The compact pattern-conv weight format (version 2), in NumPy.

Reads a layer's patterns from the zeros of its 3x3 filter and writes the
compact tensors that the `ClickTrainPatternConv2D` and
`ClickTrainPatternDepthwiseConv2D` custom ops (and their int8 versions) take
as constant inputs. The format is specified once, for all readers and
writers, in `tflite_export/include/clicktrain/pattern_conv.h`; in short, per
layer:

- `pattern_masks` (uint16 `[P]`): the layer's pattern table, bit `3 * ky + kx`
  set when 3x3 position `(ky, kx)` is kept.
- `kernel_index` (uint8 `[N]`): which (filter, input channel) pairs keep a
  kernel and the pattern of each, as one bit stream. The pairs are numbered
  `o * input_channels + i` (depthwise: pair `c` is channel `c`). Byte 0 is
  `gap_bits`; then, least significant bit first, for every kept kernel in
  pair order the gap since the previous one, Rice-coded with parameter
  `gap_bits` (`g >> gap_bits` one bits, a zero, the low `gap_bits` bits of
  `g`), and its pattern id in `ceil(log2(P))` bits; then the gap to the end.
  At random kernel removal the gaps are geometric, for which a Rice code
  with the best `gap_bits` comes within a few percent of the entropy of
  "which kernels are kept" (at 8x, 28% of kernels kept: 0.86 bits per pair,
  where a bitmap takes 1 and a uint8 channel index 8 per kept kernel).
- `values` (float32, or int8 for the int8 ops, `[V]`): kept weights, kernel
  after kernel in pair order, positions of its pattern in ascending bit
  order.

A kernel's pattern is its non-zero mask, or a superset of it holding the
missing positions as explicit zeros, when the smaller table that gives saves
more index bits than the zeros cost: int8 quantization rounds a few small
weights of the pruned patterns to 0, and each such subset would otherwise be
a pattern of its own and widen every kernel's pattern id.

The delegate expands the tensors once, at Prepare, into the memory its
kernels run from. It still reads version 1 (run lengths per filter and
pattern, then a uint8/uint16 input channel per kernel), which earlier
releases wrote; nothing writes it any more.

No Keras or TensorFlow here.
"""

import dataclasses

import numpy as np

FORMAT_VERSION = 2
CONV_OP_NAME = "ClickTrainPatternConv2D"
DEPTHWISE_CONV_OP_NAME = "ClickTrainPatternDepthwiseConv2D"
KERNEL_POSITIONS = 9
MAX_CHANNELS = 65535
MAX_PATTERNS = 511
MAX_GAP_BITS = 31

_POSITION_BITS = (1 << np.arange(KERNEL_POSITIONS)).astype(np.uint16)


@dataclasses.dataclass(frozen=True)
class CompactWeights:
    """One layer's filter in compact form.

    Attributes:
        pattern_masks: uint16 `[num_patterns]`, the pattern table.
        kernel_index: uint8 `[index_bytes]`, kept kernels and their
            patterns (see the module docstring).
        values: float32 `[num_values]`, in pair order.
        output_channels: filters of the layer.
        pairs: (filter, input channel) pairs the index numbers:
            `output_channels * input_channels`, or `output_channels` for a
            depthwise layer.
        num_kernels: kept kernels.
        depthwise: whether pair `c` is filter `c` on input channel `c`.
    """

    pattern_masks: np.ndarray
    kernel_index: np.ndarray
    values: np.ndarray
    output_channels: int
    pairs: int
    num_kernels: int
    depthwise: bool

    @property
    def num_patterns(self):
        return int(self.pattern_masks.size)

    @property
    def nbytes(self):
        """Bytes of all compact tensors (bias excluded)."""
        return self.pattern_masks.nbytes + self.kernel_index.nbytes + self.values.nbytes


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


def encode_conv(filter_ohwi, value_bytes=4):
    """Encodes a pattern-sparse CONV_2D filter.

    Args:
        filter_ohwi: float array `[output_channels, 3, 3, input_channels]`.
        value_bytes: bytes per value in the file (4 for float32, 1 for
            int8), which prices explicit zeros against pattern-id bits.

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
    filters, channels = np.nonzero(masks)  # in pair order
    weights_o9i = filter_ohwi.reshape(output_channels, KERNEL_POSITIONS, -1)
    return _encode(
        output_channels,
        output_channels * input_channels,
        filters.astype(np.int64) * input_channels + channels,
        masks[filters, channels],
        weights_o9i[filters, :, channels],
        depthwise=False,
        value_bytes=value_bytes,
    )


def encode_depthwise(filter_1hwc, value_bytes=4):
    """Encodes a pattern-sparse DEPTHWISE_CONV_2D filter (multiplier 1).

    Args:
        filter_1hwc: float array `[1, 3, 3, channels]` (TFLite layout).
        value_bytes: as for `encode_conv`.

    Returns:
        A `CompactWeights` in which pair `c` is filter `c` on input channel
        `c`; or `None` as for `encode_conv`.
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
    return _encode(
        channels,
        channels,
        kept.astype(np.int64),
        masks[kept],
        per_channel[kept],
        depthwise=True,
        value_bytes=value_bytes,
    )


def _id_bits(num_patterns):
    return int(num_patterns - 1).bit_length()


def _encode(output_channels, pairs, kept_pairs, masks, kernel_weights, depthwise, value_bytes):
    """Packs kept kernels, given in ascending pair order.

    Args:
        output_channels: number of filters.
        pairs: number of (filter, input channel) pairs of the layer.
        kept_pairs: int64 pair of each kept kernel, ascending.
        masks: non-zero mask of each kept kernel.
        kernel_weights: `[num_kernels, 9]` weights of each kept kernel.
        depthwise: whether the layer is a depthwise conv.
        value_bytes: bytes per value in the file.
    """
    if masks.size == 0:
        return None
    patterns = _patterns(masks, value_bytes)
    table = np.unique(patterns)
    if table.size > MAX_PATTERNS:
        return None
    pattern_ids = np.searchsorted(table, patterns)
    kept = (patterns[:, None] & _POSITION_BITS[None, :]) != 0
    return CompactWeights(
        pattern_masks=table.astype(np.uint16),
        kernel_index=_kernel_index(pairs, kept_pairs, pattern_ids, _id_bits(table.size)),
        values=kernel_weights[kept].astype(np.float32),
        output_channels=int(output_channels),
        pairs=int(pairs),
        num_kernels=int(kept_pairs.size),
        depthwise=bool(depthwise),
    )


def _patterns(masks, value_bytes):
    """The pattern of each kernel: its mask, or a superset of it (see above).

    Starting from every distinct mask, repeatedly folds the table entry that
    is cheapest to fold into its smallest superset still in the table (its
    kernels then store the extra positions as zeros), and keeps the table
    with the fewest bits of values, pattern ids and masks along the way.
    """
    table, inverse, counts = np.unique(masks, return_inverse=True, return_counts=True)
    entries = table.size
    if entries == 1:
        return masks
    sizes = ((table[:, None] >> np.arange(KERNEL_POSITIONS)) & 1).sum(axis=1)
    unreachable = KERNEL_POSITIONS + 1
    # extra[i, j]: zeros per kernel when entry i folds into its superset j.
    superset = ((table[:, None] & table[None, :]) == table[:, None]) & ~np.eye(entries, dtype=bool)
    extra = np.where(superset, sizes[None, :] - sizes[:, None], unreachable)
    kernels = int(masks.size)

    def table_bits(alive):
        return kernels * _id_bits(alive) + 16 * alive

    folded_into = np.arange(entries)  # table entry each distinct mask uses
    alive = np.ones(entries, bool)
    load = counts.astype(np.int64)  # kernels on each live entry
    bits = best_bits = 0
    best = folded_into.copy()
    for live in range(entries, 1, -1):
        options = np.where(alive[None, :], extra, unreachable)
        target = options.argmin(axis=1)
        step = options[np.arange(entries), target]
        foldable = alive & (step < unreachable)
        if not foldable.any():
            break
        cost = np.where(foldable, load * step * value_bytes * 8, np.iinfo(np.int64).max)
        entry = int(cost.argmin())
        bits += int(cost[entry]) + table_bits(live - 1) - table_bits(live)
        folded_into[folded_into == entry] = target[entry]
        load[target[entry]] += load[entry]
        load[entry] = 0
        alive[entry] = False
        if bits < best_bits:
            best_bits, best = bits, folded_into.copy()
    return table[best][inverse]


def _kernel_index(pairs, kept_pairs, pattern_ids, id_bits):
    """The kernel_index bytes, with the gap_bits that makes them fewest."""
    ends = np.append(kept_pairs, pairs)  # the final gap runs to `pairs`
    gaps = ends - np.concatenate([[0], kept_pairs + 1])
    gap_bits = min(
        range(MAX_GAP_BITS + 1),
        key=lambda k: int(np.sum((gaps >> k) + 1 + k)),
    )
    quotients = gaps >> gap_bits
    # Bits of code j: its gap (quotient ones, a zero, gap_bits low bits),
    # then, but for the final gap, id_bits of its pattern id.
    id_lengths = np.append(np.full(kept_pairs.size, id_bits, np.int64), 0)
    lengths = quotients + 1 + gap_bits + id_lengths
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    stream = np.zeros(int(lengths.sum()), np.uint8)
    ones = np.repeat(starts, quotients) + (
        np.arange(int(quotients.sum())) - np.repeat(np.cumsum(quotients) - quotients, quotients)
    )
    stream[ones] = 1
    remainder_start = starts + quotients + 1
    for bit in range(gap_bits):
        stream[remainder_start + bit] = (gaps >> bit) & 1
    id_start = remainder_start[:-1] + gap_bits
    for bit in range(id_bits):
        stream[id_start + bit] = (pattern_ids >> bit) & 1
    packed = np.packbits(stream, bitorder="little")
    return np.concatenate([[gap_bits], packed]).astype(np.uint8)


def kernel_pairs_and_patterns(compact):
    """Decodes `kernel_index`: the pair and pattern id of every kept kernel.

    Returns:
        Two int64 arrays `[num_kernels]`.

    Raises:
        ValueError: naming what is wrong when the index is malformed.
    """
    index = np.asarray(compact.kernel_index, np.uint8)
    if index.size == 0 or int(index[0]) > MAX_GAP_BITS:
        raise ValueError(f"kernel_index must start with gap_bits <= {MAX_GAP_BITS}")
    gap_bits, id_bits = int(index[0]), _id_bits(compact.num_patterns)
    stream = np.unpackbits(index[1:], bitorder="little")
    bit, next_pair, pairs, patterns = 0, 0, [], []

    def read(count):
        nonlocal bit
        if bit + count > stream.size:
            raise ValueError("kernel_index ends inside a code")
        value = int(np.dot(stream[bit : bit + count].astype(np.int64), 1 << np.arange(count)))
        bit += count
        return value

    while True:
        zero = np.flatnonzero(stream[bit:] == 0)
        if zero.size == 0:
            raise ValueError("kernel_index ends inside a code")
        quotient = int(zero[0])
        bit += quotient + 1
        next_pair += (quotient << gap_bits) + read(gap_bits)
        if next_pair == compact.pairs:
            break
        if next_pair > compact.pairs:
            raise ValueError("kernel_index runs past the layer's pairs")
        pattern = read(id_bits)
        if pattern >= compact.num_patterns:
            raise ValueError(f"kernel_index holds pattern id {pattern} >= {compact.num_patterns}")
        pairs.append(next_pair)
        patterns.append(pattern)
        next_pair += 1
    if stream.size - bit >= 8 or stream[bit:].any():
        raise ValueError("kernel_index must end in its last byte, padded with zero bits")
    return np.asarray(pairs, np.int64), np.asarray(patterns, np.int64)


def decode(compact, input_channels):
    """Rebuilds the dense filter `[output_channels, 3, 3, input_channels]`.

    Args:
        compact: a `CompactWeights`.
        input_channels: the layer's input channel count.

    Returns:
        float32 array; for a depthwise layer, the diagonal conv equivalent.
    """
    output_channels = compact.output_channels
    depthwise = compact.depthwise
    kernel_pairs, pattern_ids = kernel_pairs_and_patterns(compact)
    filters = kernel_pairs if depthwise else kernel_pairs // input_channels
    channels = kernel_pairs if depthwise else kernel_pairs % input_channels
    kept = (compact.pattern_masks[pattern_ids][:, None] & _POSITION_BITS[None, :]) != 0
    kernel_weights = np.zeros(kept.shape, np.float32)
    kernel_weights[kept] = compact.values
    dense = np.zeros((output_channels, KERNEL_POSITIONS, input_channels), np.float32)
    dense[filters, :, channels] = kernel_weights
    return dense.reshape(output_channels, 3, 3, input_channels)
