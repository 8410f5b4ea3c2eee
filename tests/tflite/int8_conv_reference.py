"""TFLite's int8 CONV_2D (per-channel), in NumPy, bit for bit.

The semantics a native int8 pattern-conv op must reproduce, as in
`tflite/kernels/internal/reference/integer_ops/conv.h` (ConvPerChannel):
int32 accumulation of ``filter * (input - input_zero_point)`` over the
in-bounds taps (padding contributes 0), plus the int32 bias, then
``MultiplyByQuantizedMultiplier`` with the per-channel multiplier of
``input_scale * filter_scale[c] / output_scale`` (gemmlowp rounding: a
rounding doubling high multiply, then a rounding right shift), plus the
output zero point, clamped to the fused activation's range.
"""

import math

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real_multiplier):
    """TFLite's QuantizeMultiplier: ``(int32 multiplier, shift)``."""
    if real_multiplier == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real_multiplier)
    fixed = int(math.floor(fraction * (1 << 31) + 0.5))  # TfLiteRound: half away from 0
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return fixed, shift


def _saturating_rounding_doubling_high_mul(a, b):
    product = a.astype(np.int64) * np.int64(b)
    nudge = np.where(product >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    total = product + nudge
    # C's integer division truncates toward zero.
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, high).astype(np.int64)


def _rounding_divide_by_power_of_two(x, exponent):
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> exponent) + (remainder > threshold).astype(np.int64)


def multiply_by_quantized_multiplier(x, multiplier, shift):
    left_shift = max(shift, 0)
    right_shift = max(-shift, 0)
    scaled = _saturating_rounding_doubling_high_mul(x * (1 << left_shift), multiplier)
    return _rounding_divide_by_power_of_two(scaled, right_shift)


def conv2d_int8(inputs, input_zero_point, filters, bias, multipliers, shifts,
                output_zero_point, stride, padding, activation_min=-128, activation_max=127):
    """int8 NHWC conv, filters ``[out, kh, kw, in]`` int8, bias int32 ``[out]``.

    ``padding`` is ``((pad_top, pad_left), (out_height, out_width))``, e.g.
    from `same_padding` per axis.
    """
    batch, height, width, _ = inputs.shape
    out_channels, kernel_h, kernel_w, _ = filters.shape
    (pad_top, pad_left), (out_h, out_w) = padding
    shifted = inputs.astype(np.int64) - input_zero_point
    padded = np.zeros((batch, height + kernel_h + out_h * stride, width + kernel_w + out_w * stride,
                       inputs.shape[3]), np.int64)
    padded[:, pad_top:pad_top + height, pad_left:pad_left + width] = shifted
    accumulator = np.zeros((batch, out_h, out_w, out_channels), np.int64)
    for ky in range(kernel_h):
        for kx in range(kernel_w):
            window = padded[:, ky:ky + out_h * stride:stride, kx:kx + out_w * stride:stride]
            accumulator += window @ filters[:, ky, kx, :].astype(np.int64).T
    accumulator += bias.astype(np.int64)
    output = np.empty_like(accumulator)
    for channel in range(out_channels):
        output[..., channel] = multiply_by_quantized_multiplier(
            accumulator[..., channel], multipliers[channel], shifts[channel])
    output += output_zero_point
    return np.clip(output, activation_min, activation_max).astype(np.int8)


def same_padding(size, stride, kernel=3):
    """TFLite's SAME padding: ``(pad_before, output_size)`` for one axis."""
    output = (size + stride - 1) // stride
    total = max((output - 1) * stride + kernel - size, 0)
    return total // 2, output
