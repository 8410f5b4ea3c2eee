"""Reshaping between Keras kernel layouts and rows of 3x3 kernels."""

import numpy as np

KERNEL_POSITIONS = 9


def to_kernel_rows(kernel):
    """Flattens a ``(3, 3, a, b)`` kernel into ``(a * b, 9)`` kernel rows.

    Row ``i * b + j`` holds the 3x3 kernel ``kernel[:, :, i, j]`` in row-major
    order. For `Conv2D` ``(a, b)`` is ``(in_channels, out_channels)``; for
    `DepthwiseConv2D` it is ``(channels, depth_multiplier)``.

    Args:
        kernel: array of shape ``(3, 3, a, b)``.

    Returns:
        Array of shape ``(a * b, 9)``.

    Raises:
        ValueError: if the kernel is not 4-D with a 3x3 spatial extent.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[:2] != (3, 3):
        raise ValueError(
            "Expected a kernel of shape (3, 3, in, out). "
            f"Received: kernel.shape={kernel.shape}"
        )
    return kernel.reshape(KERNEL_POSITIONS, -1).T


def from_kernel_rows(rows, kernel_shape):
    """Inverse of `to_kernel_rows`.

    Args:
        rows: array of shape ``(a * b, 9)``.
        kernel_shape: the target shape ``(3, 3, a, b)``.

    Returns:
        Array of shape ``kernel_shape``.
    """
    return np.asarray(rows).T.reshape(kernel_shape)


def kernel_row_groups(kernel_shape, groups):
    """The group of each kernel row of a grouped convolution's kernel.

    A Keras convolution with ``groups=G`` has a ``(3, 3, in / G, out)``
    kernel whose output channels are split into G consecutive runs, one per
    group. Row ``i * out + j`` of `to_kernel_rows` is output channel ``j``,
    so it belongs to group ``j // (out / G)``.

    Args:
        kernel_shape: ``(3, 3, a, b)``.
        groups: G, a divisor of ``b``.

    Returns:
        int array ``(a * b,)`` of group indices in ``[0, G)``.

    Raises:
        ValueError: if ``groups`` does not divide the output channels.
    """
    inputs, outputs = int(kernel_shape[2]), int(kernel_shape[3])
    if groups < 1 or outputs % groups:
        raise ValueError(
            f"groups must divide the kernel's {outputs} output channels. "
            f"Received: groups={groups}"
        )
    return np.tile(np.arange(outputs) // (outputs // groups), inputs)
