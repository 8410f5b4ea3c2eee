"""Folding a BatchNormalization into the conv or dense layer before it.

TFLite's converter folds an inference-mode BatchNormalization that follows a
Conv2D, DepthwiseConv2D or Dense into that layer's kernel and bias; the int8
file then quantizes the folded kernel. Quantization-aware training folds the
same way up front, so it trains exactly the kernel that will be quantized.
Scaling a kernel per output channel keeps its zeros, so patterns survive.
"""

import keras
import numpy as np

FOLDABLE_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def can_fold(layer, batchnorm):
    """Whether ``batchnorm`` (reading only ``layer``'s output) folds into it."""
    if not isinstance(layer, FOLDABLE_TYPES) or isinstance(layer, keras.layers.Conv2DTranspose):
        return False
    if not isinstance(batchnorm, keras.layers.BatchNormalization):
        return False
    rank = len(layer.output.shape)
    axis = batchnorm.axis if isinstance(batchnorm.axis, int) else None
    if axis is None and len(batchnorm.axis) == 1:
        axis = batchnorm.axis[0]
    linear = getattr(layer.activation, "__name__", None) == "linear"
    return linear and axis in (-1, rank - 1)


def folded_layer(layer, batchnorm):
    """A new layer computing ``batchnorm(layer(x))`` in inference mode.

    Returns:
        ``(new_layer, weights)``: the unbuilt layer (with a bias) and the
        weights to set once it is built, ``[kernel, bias]``.
    """
    config = layer.get_config()
    config["use_bias"] = True
    config["bias_initializer"] = "zeros"
    new_layer = layer.__class__.from_config(config)
    kernel = keras.ops.convert_to_numpy(
        next(w for w in layer.weights if w.name in ("kernel", "depthwise_kernel")))
    bias = (keras.ops.convert_to_numpy(layer.bias) if layer.use_bias
            else np.zeros(kernel.shape[-1] if not _is_depthwise(layer)
                          else kernel.shape[-2] * kernel.shape[-1], np.float32))
    mean = keras.ops.convert_to_numpy(batchnorm.moving_mean)
    variance = keras.ops.convert_to_numpy(batchnorm.moving_variance)
    gamma = (keras.ops.convert_to_numpy(batchnorm.gamma) if batchnorm.scale
             else np.ones_like(mean))
    beta = (keras.ops.convert_to_numpy(batchnorm.beta) if batchnorm.center
            else np.zeros_like(mean))
    scale = gamma / np.sqrt(variance + batchnorm.epsilon)
    if _is_depthwise(layer):
        folded_kernel = kernel * scale.reshape(1, 1, kernel.shape[2], kernel.shape[3])
    else:
        folded_kernel = kernel * scale
    folded_bias = beta + (bias - mean) * scale
    return new_layer, [folded_kernel.astype(np.float32), folded_bias.astype(np.float32)]


def _is_depthwise(layer):
    return isinstance(layer, keras.layers.DepthwiseConv2D)


@keras.saving.register_keras_serializable(package="tf_clicktrain")
class FoldedBatchNormalization(keras.layers.Layer):
    """Stands where a BatchNormalization was folded into the previous layer.

    Passes its input through (it takes BatchNormalization's call arguments),
    keeping the model's layer names; TFLite's converter drops it.
    """

    def call(self, inputs, training=None, mask=None):
        del training, mask
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape
