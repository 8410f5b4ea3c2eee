"""Fake quantization as TFLite's int8 kernels compute it.

- Weights: symmetric int8, narrow range [-127, 127], per output channel for
  convolutions (per tensor for Dense), the scale taken from the largest
  magnitude. A zero weight quantizes to exactly 0.
- Activations: asymmetric int8 per tensor over a moving [min, max] range
  that always contains 0 (`MovingRange`).

Both use `tf.quantization.fake_quant_with_min_max_vars*`, the ops TFLite's
converter reads as quantization-aware training: their ranges become the
int8 file's scales and zero points.
"""

import keras
import tensorflow as tf

NUM_BITS = 8
# A channel whose weights are all zero (every kernel removed) still needs a
# non-empty range; any positive value quantizes its zeros to exactly 0.
_MIN_WEIGHT_RANGE = 1e-8
# Activation ranges narrower than this are widened (all-zero tensors).
_MIN_ACTIVATION_RANGE = 1e-6


def quantize_kernel(kernel, depthwise=False, per_channel=True):
    """Fake-quantizes a kernel to symmetric narrow-range int8.

    Args:
        kernel: a Conv2D ``(h, w, in, out)``, Dense ``(in, out)`` or, with
            ``depthwise=True``, a DepthwiseConv2D ``(h, w, in, multiplier)``
            kernel (its output channels are ``in * multiplier``, as in
            TFLite's DEPTHWISE_CONV_2D filter).
        depthwise: whether ``kernel`` is a depthwise kernel.
        per_channel: one scale per output channel (convolutions); False: one
            scale for the whole kernel (Dense: TFLite's converter cannot
            transpose a per-channel FULLY_CONNECTED weight from training).

    Returns:
        The kernel with each value rounded to its int8 grid.
    """
    if not per_channel:
        limit = tf.maximum(tf.reduce_max(tf.abs(kernel)), _MIN_WEIGHT_RANGE)
        return tf.quantization.fake_quant_with_min_max_vars(
            kernel, -limit, limit, num_bits=NUM_BITS, narrow_range=True
        )
    shape = tf.shape(kernel)
    values = tf.reshape(kernel, [shape[0], shape[1], -1]) if depthwise else kernel
    axes = list(range(len(values.shape) - 1))
    limit = tf.maximum(tf.reduce_max(tf.abs(values), axis=axes), _MIN_WEIGHT_RANGE)
    quantized = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        values, -limit, limit, num_bits=NUM_BITS, narrow_range=True
    )
    return tf.reshape(quantized, shape) if depthwise else quantized


class MovingRange:
    """The per-tensor int8 range of one activation, as layer variables.

    In training each batch's [min, max] (widened to contain 0) moves the range
    by an exponential moving average; the first batch sets it. Outside
    training the stored range is used as is. The variables belong to the
    layer that creates this object, so they are saved with it.
    """

    def __init__(self, layer, name, ema_decay):
        self.ema_decay = ema_decay
        self.minimum = layer.add_weight(
            name=f"{name}_min", shape=(), initializer="zeros", trainable=False
        )
        self.maximum = layer.add_weight(
            name=f"{name}_max", shape=(), initializer="zeros", trainable=False
        )
        self.initialized = layer.add_weight(
            name=f"{name}_initialized", shape=(), dtype="bool",
            initializer="zeros", trainable=False,
        )

    def __call__(self, values, training):
        """Updates the range (in training) and fake-quantizes ``values``."""
        values = tf.convert_to_tensor(values)
        if training:
            batch_min = tf.minimum(tf.reduce_min(values), 0.0)
            batch_max = tf.maximum(tf.reduce_max(values), 0.0)
            decay = tf.where(self.initialized, self.ema_decay, 0.0)
            updates = [
                self.minimum.assign(decay * self.minimum + (1.0 - decay) * batch_min),
                self.maximum.assign(decay * self.maximum + (1.0 - decay) * batch_max),
            ]
            with tf.control_dependencies(updates):
                updates.append(self.initialized.assign(True))
            with tf.control_dependencies(updates):
                minimum = tf.identity(self.minimum.value)
                maximum = tf.identity(self.maximum.value)
        else:
            minimum = tf.convert_to_tensor(self.minimum)
            maximum = tf.convert_to_tensor(self.maximum)
        maximum = tf.maximum(maximum, minimum + _MIN_ACTIVATION_RANGE)
        return tf.quantization.fake_quant_with_min_max_vars(
            values, minimum, maximum, num_bits=NUM_BITS, narrow_range=False
        )

    def value(self):
        """``(min, max, initialized)`` as Python values."""
        return (float(keras.ops.convert_to_numpy(self.minimum)),
                float(keras.ops.convert_to_numpy(self.maximum)),
                bool(keras.ops.convert_to_numpy(self.initialized)))
