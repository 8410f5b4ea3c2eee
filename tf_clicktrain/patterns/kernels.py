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


def filter_group_rows(kernel_shape, filter_group, groups=1):
    """The filter group of each kernel row of a `Conv2D` kernel.

    Filter groups are runs of ``filter_group`` consecutive output channels
    (filters) inside one conv group: output channel ``j`` of conv group
    ``c`` (of ``out / groups`` channels) is in run ``(j mod out / groups) //
    filter_group`` of that group, and a group whose channel count is not a
    multiple of ``filter_group`` ends with a smaller run. A run never
    crosses a conv group's boundary.

    Every (input channel, filter group) pair is one *pooled kernel*: rows
    that share it are kept or removed together and share a pattern.

    Args:
        kernel_shape: ``(3, 3, in, out)``.
        filter_group: filters per run, a positive integer.
        groups: the convolution's groups, a divisor of ``out``.

    Returns:
        int array ``(in * out,)``: the pooled kernel of each row,
        ``i * F + f`` for input ``i`` and filter group ``f`` of the F runs
        over all output channels (so pooled kernels keep the row order
        ``(input, output)`` of `to_kernel_rows`).

    Raises:
        ValueError: if ``filter_group`` is not a positive integer or
            ``groups`` does not divide the output channels.
    """
    validate_filter_group(filter_group)
    kernel_row_groups(kernel_shape, groups)  # Raises on a bad ``groups``.
    inputs, outputs = int(kernel_shape[2]), int(kernel_shape[3])
    per_group = outputs // groups
    runs_per_group = -(-per_group // filter_group)  # ceil
    output = np.arange(outputs)
    run_of_output = (output // per_group) * runs_per_group + (output % per_group) // filter_group
    num_runs = groups * runs_per_group
    return (np.arange(inputs)[:, None] * num_runs + run_of_output[None, :]).ravel()


def validate_filter_group(filter_group):
    """Raises `ValueError` unless ``filter_group`` is a positive integer."""
    if (
        isinstance(filter_group, bool)
        or not isinstance(filter_group, (int, np.integer))
        or filter_group < 1
    ):
        raise ValueError(
            "filter_group must be a positive integer. "
            f"Received: filter_group={filter_group!r}"
        )
