"""The Keras layer wrapper that fake-quantizes a layer for int8 export."""

import inspect

import keras

from tf_clicktrain.pruning.wrapper import MaskConstraint
from tf_clicktrain.quantization import fake_quant

_KERNEL_NAMES = ("kernel", "depthwise_kernel")
# Activations TFLite fuses into CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED:
# after them only the activation's output needs a range.
FUSABLE_ACTIVATIONS = ("linear", "relu", "relu6")
_WEIGHT_QUANTIZED_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                           keras.layers.Dense)


def quantized_kernel_variable(layer):
    """The kernel variable a `QuantizeWrapper` quantizes, or None."""
    if not isinstance(layer, _WEIGHT_QUANTIZED_TYPES) or isinstance(
        layer, keras.layers.Conv2DTranspose
    ):
        return None
    return next((w for w in layer.weights if w.name in _KERNEL_NAMES), None)


@keras.saving.register_keras_serializable(package="tf_clicktrain")
class QuantizeWrapper(keras.layers.Wrapper):
    """Fake-quantizes a layer's kernel, inputs and output as TFLite int8 will.

    - Kernel of a Conv2D / DepthwiseConv2D (per output channel) or Dense
      (per tensor): symmetric int8, narrow range, after the sparsity mask, so zeros (removed
      kernels, pattern positions) stay exactly zero in the forward pass and,
      through a constraint, after every optimizer step.
    - Inputs (``quantize_inputs``, for layers reading the model's inputs) and
      output (``quantize_output``): asymmetric int8 per tensor over moving
      ranges (`fake_quant.MovingRange`).

    All state (sparsity mask, ranges) lives in Keras variables, so it is in
    checkpoints and `.keras` files. Use `tf_clicktrain.quantize_model` rather
    than this class directly.

    Args:
        layer: the layer to quantize.
        quantize_inputs: also fake-quantize the layer's inputs.
        quantize_output: fake-quantize the layer's output.
        preserve_sparsity: keep the kernel's zeros at zero (the mask is read
            from the kernel when the wrapper is built on a built layer).
        ema_decay: decay of the moving activation ranges, in [0, 1).
        **kwargs: base layer arguments (e.g. ``name``).
    """

    def __init__(self, layer, quantize_inputs=False, quantize_output=True,
                 preserve_sparsity=True, ema_decay=0.99, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(f"QuantizeWrapper wraps a Keras layer. Received: layer={layer!r}")
        for name, value in (("quantize_inputs", quantize_inputs),
                            ("quantize_output", quantize_output),
                            ("preserve_sparsity", preserve_sparsity)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a bool. Received: {name}={value!r}")
        if isinstance(ema_decay, bool) or not isinstance(ema_decay, (int, float)) or not (
            0.0 <= ema_decay < 1.0
        ):
            raise ValueError(f"ema_decay must be in [0, 1). Received: ema_decay={ema_decay!r}")
        super().__init__(layer, **kwargs)
        self.quantize_inputs = quantize_inputs
        self.quantize_output = quantize_output
        self.preserve_sparsity = preserve_sparsity
        self.ema_decay = float(ema_decay)
        self._layer_takes_training = "training" in inspect.signature(layer.call).parameters

    def build(self, input_shape=None):
        initial_kernel = None
        kernel = quantized_kernel_variable(self.layer) if self.layer.built else None
        if kernel is not None:
            initial_kernel = keras.ops.convert_to_numpy(kernel)
        super().build(input_shape)
        self.kernel = quantized_kernel_variable(self.layer)
        self.kernel_mask = None
        if self.kernel is not None and self.preserve_sparsity:
            initializer = "ones" if initial_kernel is None else keras.initializers.Constant(
                (initial_kernel != 0).astype("float32"))
            self.kernel_mask = self.add_weight(
                name="kernel_mask", shape=self.kernel.shape, initializer=initializer,
                trainable=False,
            )
            self.kernel.constraint = MaskConstraint(self.kernel_mask, self.kernel.constraint)
        self.input_ranges = []
        if self.quantize_inputs:
            count = len(input_shape) if _is_shape_list(input_shape) else 1
            self.input_ranges = [
                fake_quant.MovingRange(self, f"input_{index}", self.ema_decay)
                for index in range(count)
            ]
        self.output_range = (
            fake_quant.MovingRange(self, "output", self.ema_decay)
            if self.quantize_output else None
        )
        # Another activation (sigmoid, tanh, ...) is a TFLite op of its own,
        # whose input (the conv's output) needs a range too.
        activation = getattr(self.layer, "activation", None)
        self.pre_activation_range = None
        if self.kernel is not None and activation is not None and getattr(
            activation, "__name__", None
        ) not in FUSABLE_ACTIVATIONS:
            self.pre_activation_range = fake_quant.MovingRange(
                self, "pre_activation", self.ema_decay)
        self.built = True

    def call(self, inputs, training=None, **kwargs):
        if self.input_ranges:
            if isinstance(inputs, (list, tuple)):
                inputs = [r(x, training) for r, x in zip(self.input_ranges, inputs)]
            else:
                inputs = self.input_ranges[0](inputs, training)
        mapping = []
        if self.kernel is not None:
            kernel = self.kernel.value
            if self.kernel_mask is not None:
                kernel = kernel * self.kernel_mask
            depthwise = isinstance(self.layer, keras.layers.DepthwiseConv2D)
            per_channel = not isinstance(self.layer, keras.layers.Dense)
            mapping.append(
                (self.kernel, fake_quant.quantize_kernel(kernel, depthwise, per_channel)))
        layer_kwargs = dict(kwargs)
        if self._layer_takes_training:
            layer_kwargs["training"] = training
        activation = self.layer.activation if self.pre_activation_range else None
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            if activation is None:
                outputs = self.layer(inputs, **layer_kwargs)
            else:
                self.layer.activation = keras.activations.linear
                try:
                    outputs = self.layer(inputs, **layer_kwargs)
                finally:
                    self.layer.activation = activation
        for variable in self.layer.variables:
            if variable is self.kernel:
                continue
            new_value = scope.get_current_value(variable)
            if new_value is not None:
                variable.assign(new_value)
        for loss in scope.losses:
            self.add_loss(loss)
        if activation is not None:
            outputs = activation(self.pre_activation_range(outputs, training))
        if self.output_range is not None:
            outputs = self.output_range(outputs, training)
        return outputs

    def compute_output_shape(self, *args, **kwargs):
        return self.layer.compute_output_shape(*args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    def ranges(self):
        """The activation ranges: ``{"input_0": (min, max, initialized), ...}``."""
        found = {f"input_{i}": r.value() for i, r in enumerate(self.input_ranges)}
        if self.pre_activation_range is not None:
            found["pre_activation"] = self.pre_activation_range.value()
        if self.output_range is not None:
            found["output"] = self.output_range.value()
        return found

    def get_config(self):
        return {
            **super().get_config(),
            "quantize_inputs": self.quantize_inputs,
            "quantize_output": self.quantize_output,
            "preserve_sparsity": self.preserve_sparsity,
            "ema_decay": self.ema_decay,
        }


def _is_shape_list(input_shape):
    return (isinstance(input_shape, (list, tuple)) and len(input_shape) > 0
            and all(isinstance(s, (list, tuple)) or s is None for s in input_shape)
            and any(isinstance(s, (list, tuple)) for s in input_shape))
