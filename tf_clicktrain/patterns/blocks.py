"""Block sparsity masks (tfmot's ``block_size`` / ``block_pooling_type``).

A 2-D weight is cut into non-overlapping ``(block_height, block_width)``
blocks from its top-left corner; each block is scored by the average or the
maximum of its entries' magnitudes, and whole blocks are removed, lowest
score first. Blocks at the bottom and right edges may be partial: they are
scored over the entries they have, as TensorFlow's ``SAME``-padded pooling
does in tfmot.

No Keras or TensorFlow here.
"""

import numpy as np

from tf_clicktrain.patterns.unstructured import magnitude_mask

POOLING_TYPES = ("AVG", "MAX")
NO_BLOCKS = (1, 1)


def validate_block_size(block_size, name="block_size"):
    """Returns ``(height, width)`` as ints, or raises `ValueError` naming ``name``."""
    if (
        not isinstance(block_size, (tuple, list))
        or len(block_size) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in block_size)
        or min(block_size) < 1
    ):
        raise ValueError(
            f"{name} must be a pair (height, width) of positive integers, e.g. "
            f"(1, 4). Received: {name}={block_size!r}"
        )
    return int(block_size[0]), int(block_size[1])


def validate_pooling_type(pooling_type, name="block_pooling_type"):
    """Raises `ValueError` unless ``pooling_type`` is "AVG" or "MAX"."""
    if pooling_type not in POOLING_TYPES:
        raise ValueError(
            f"{name} must be one of {POOLING_TYPES}. Received: {name}={pooling_type!r}"
        )
    return pooling_type


def matrix_shape(weight_shape):
    """The ``(rows, columns)`` a weight is cut into blocks as, or None.

    2-D weights (Dense, Embedding, recurrent kernels) are their own matrix;
    a kernel whose leading axes all have length 1 (a 1x1 convolution's
    ``(1, 1, in, out)``) is its ``(in, out)`` matrix. Any other weight has
    no matrix view and cannot be block-pruned.
    """
    shape = tuple(int(d) for d in weight_shape)
    if len(shape) < 2 or any(d != 1 for d in shape[:-2]):
        return None
    return shape[-2:]


def pool_blocks(scores, block_size, pooling_type):
    """Scores each block of a 2-D array by the mean or max of its entries.

    Args:
        scores: ``(rows, columns)`` non-negative scores.
        block_size: ``(height, width)`` of a block.
        pooling_type: "AVG" or "MAX".

    Returns:
        ``(ceil(rows / height), ceil(columns / width))`` block scores; an
        edge block is pooled over the entries it has.
    """
    scores = np.asarray(scores, np.float64)
    height, width = block_size
    rows, columns = scores.shape
    block_rows, block_columns = -(-rows // height), -(-columns // width)
    padded = np.full((block_rows * height, block_columns * width), np.nan)
    padded[:rows, :columns] = scores
    blocks = padded.reshape(block_rows, height, block_columns, width)
    if pooling_type == "AVG":
        return np.nanmean(blocks, axis=(1, 3))
    return np.nanmax(blocks, axis=(1, 3))


def block_mask(scores, sparsity, block_size, pooling_type="AVG"):
    """Removes the lowest-scoring ``sparsity`` fraction of blocks.

    Args:
        scores: ``(rows, columns)`` non-negative magnitudes (tfmot pools
            ``|w|``; pass ``sqrt`` of a squared importance).
        sparsity: fraction in [0, 1) of blocks to remove; exactly
            ``floor(sparsity * num_blocks)`` are removed (ties by position).
        block_size: ``(height, width)``.
        pooling_type: "AVG" or "MAX".

    Returns:
        float32 0/1 mask of ``scores``' shape, constant over every block.

    Raises:
        ValueError: if ``scores`` is not 2-D.

    Example:
    ```python
    weight = np.array([[0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2],
                       [0.3, 0.3, 0.4, 0.4], [0.3, 0.3, 0.4, 0.4]])
    block_mask(weight, 0.5, (2, 2))[:, 0]   # array([0., 0., 1., 1.])
    ```
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2:
        raise ValueError(
            "Block sparsity needs a 2-dimensional weight. "
            f"Received: shape {scores.shape}"
        )
    validate_block_size(block_size)
    validate_pooling_type(pooling_type)
    rows, columns = scores.shape
    kept_blocks = magnitude_mask(pool_blocks(scores, block_size, pooling_type), sparsity)
    height, width = block_size
    expanded = np.repeat(np.repeat(kept_blocks, height, axis=0), width, axis=1)
    return expanded[:rows, :columns]


def follows_blocks(mask, block_size):
    """True if a 2-D 0/1 ``mask`` is constant over every block."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        return False
    height, width = block_size
    first = mask[::height, ::width]
    expanded = np.repeat(np.repeat(first, height, axis=0), width, axis=1)
    return bool(np.array_equal(expanded[: mask.shape[0], : mask.shape[1]], mask))
