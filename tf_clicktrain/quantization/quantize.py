"""`quantize_model`: quantization-aware training that keeps the patterns."""

import contextlib
import logging

import keras

from tf_clicktrain.pruning import prune as prune_lib
from tf_clicktrain.quantization import batchnorm_folding
from tf_clicktrain.quantization.quantize_wrapper import QuantizeWrapper
from tf_clicktrain.quantization.quantize_wrapper import quantized_kernel_variable

logger = logging.getLogger(__name__)

# Layers whose int8 TFLite op keeps the input's scale and zero point: no
# range of their own.
_SCALE_PRESERVING_TYPES = (
    keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
    keras.layers.Flatten, keras.layers.Reshape, keras.layers.Dropout,
    keras.layers.SpatialDropout2D, keras.layers.Identity, keras.layers.ZeroPadding2D,
    batchnorm_folding.FoldedBatchNormalization,
    keras.layers.Cropping2D, keras.layers.Permute,
)
# Ops into which TFLite fuses a following ReLU / ReLU6 (then only the
# activation's output has a range).
_FUSING_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense,
                 keras.layers.Add)


def quantize_model(to_quantize, *, preserve_sparsity=True, ema_decay=0.99):
    """Prepares a model for quantization-aware training (QAT) to int8.

    Follows tensorflow-model-optimization's `quantize_model`, on Keras 3 and
    with pattern sparsity kept: the returned model computes, in training and
    inference, what the full-integer TFLite file will compute.

    - Every BatchNormalization reading only a Conv2D / DepthwiseConv2D /
      Dense output is folded into that layer (as TFLite folds it) and becomes
      a pass-through `FoldedBatchNormalization`; QAT then trains the folded
      kernel (BN is frozen).
    - Conv2D / DepthwiseConv2D kernels are fake-quantized per output channel,
      Dense kernels per tensor (symmetric int8, [-127, 127]), after their
      sparsity mask: the
      kernel's zeros (removed kernels, pattern positions) stay exactly zero
      through training and quantize to exactly 0.
    - Activations get per-tensor asymmetric int8 ranges (moving min/max,
      learned in `fit`) where TFLite's int8 ops need them: the model's inputs
      and every layer output, except layers that keep their input's scale
      (pooling max, reshape, dropout) and a conv/dense/add output that only
      feeds a ReLU (TFLite fuses the two). Ranges are set by the first
      training batch: train (or run `model(x, training=True)`) before
      predicting or exporting.

    Export with `ct.tflite.convert(qat_model)`: the ranges become the int8
    file's scales and zero points, no representative data needed.

    Args:
        to_quantize: a Sequential or Functional model, typically the output
            of `ct.strip_pruning`. A model still holding pruning wrappers is
            stripped first (its masks are then fixed). The input model is
            not modified.
        preserve_sparsity: keep every zero of the kernels at zero.
        ema_decay: per-step decay of the moving activation ranges, in [0, 1).

    Returns:
        A new Keras model of `QuantizeWrapper` and plain layers, trained with
        `compile` / `fit` as usual (a learning rate lower than the original
        run's is typical for this fine-tuning).

    Raises:
        ValueError: if the model is not a Sequential/Functional model, holds
            nested models or shared layers, or is already quantized.

    Example:

    ```python
    final = ct.strip_pruning(pruned_model)
    qat = ct.quantize_model(final)
    qat.compile(keras.optimizers.SGD(1e-3, momentum=0.9), loss, metrics=["accuracy"])
    qat.fit(train_ds, epochs=1)
    int8_bytes = ct.tflite.convert(qat)
    ```
    """
    if not isinstance(to_quantize, keras.Model) or not (
        isinstance(to_quantize, keras.Sequential) or _is_functional(to_quantize)
    ):
        raise ValueError(
            "quantize_model takes a built Sequential or Functional Keras model. "
            f"Received: to_quantize={to_quantize!r}"
        )
    if not to_quantize.built or not to_quantize.inputs:
        raise ValueError(
            f"quantize_model: model '{to_quantize.name}' is not built; give it an "
            "Input (or call it once) first."
        )
    if prune_lib.pruning_wrappers(to_quantize):
        logger.info("quantize_model: stripping pruning wrappers (masks are kept fixed).")
        to_quantize = prune_lib.strip_pruning(to_quantize)
    layers = list(to_quantize.layers)
    for layer in layers:
        if isinstance(layer, keras.Model):
            raise ValueError(
                f"quantize_model: layer '{layer.name}' is a nested model; build the "
                "model flat (nested models are not supported)."
            )
        if isinstance(layer, QuantizeWrapper):
            raise ValueError(f"Layer '{layer.name}' is already quantized.")
        if quantized_kernel_variable(layer) is None and any(
            weight.name.endswith("kernel") for weight in layer.weights
        ):
            raise ValueError(
                f"quantize_model: layer '{layer.name}' ({type(layer).__name__}) has a "
                "kernel it cannot quantize; supported are Conv2D, DepthwiseConv2D and "
                "Dense (a SeparableConv2D is a DepthwiseConv2D then a 1x1 Conv2D)."
            )
        if len(layer._inbound_nodes) != 1:
            raise ValueError(
                f"quantize_model: layer '{layer.name}' is called "
                f"{len(layer._inbound_nodes)} times; shared layers are not supported."
            )
    plan = _plan(layers)
    pending_weights = []

    def clone(layer):
        step = plan[id(layer)]
        if step.replace_by_identity:
            return batchnorm_folding.FoldedBatchNormalization(name=layer.name)
        if step.fold_batchnorm is not None:
            copy, weights = batchnorm_folding.folded_layer(layer, step.fold_batchnorm)
        else:
            copy = layer.__class__.from_config(layer.get_config())
            weights = layer.get_weights()
        pending_weights.append((copy, weights))
        needs_wrapper = (step.quantize_inputs or step.quantize_output
                         or quantized_kernel_variable(layer) is not None)
        if not needs_wrapper:
            return copy
        return QuantizeWrapper(
            copy, quantize_inputs=step.quantize_inputs, quantize_output=step.quantize_output,
            preserve_sparsity=preserve_sparsity, ema_decay=ema_decay, name=layer.name,
        )

    # The wrapper reads its sparsity mask from the kernel when it is built,
    # so the weights go in before the wrappers are built: set on the inner
    # layers right after cloning, then the masks are taken from them.
    quantized = keras.models.clone_model(to_quantize, clone_function=clone)
    for copy, weights in pending_weights:
        copy.set_weights(weights)
    for layer in quantized.layers:
        if isinstance(layer, QuantizeWrapper) and layer.kernel_mask is not None:
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            layer.kernel_mask.assign((kernel != 0).astype("float32"))
    return quantized


class _Step:
    """What `quantize_model` does with one layer."""

    def __init__(self):
        self.replace_by_identity = False
        self.fold_batchnorm = None
        self.quantize_inputs = False
        self.quantize_output = True


def _plan(layers):
    producers = {}
    consumers = {id(layer): [] for layer in layers}
    reads_model_input = set()
    for layer in layers:
        node = layer._inbound_nodes[0]
        producers[id(layer)] = []
        for tensor in node.input_tensors:
            producer = tensor._keras_history.operation
            if isinstance(producer, keras.layers.InputLayer):
                reads_model_input.add(id(layer))
            else:
                producers[id(layer)].append(producer)
                consumers.setdefault(id(producer), []).append(layer)
    plan = {id(layer): _Step() for layer in layers}
    folded_into = {}
    for layer in layers:
        following = consumers[id(layer)]
        if (len(following) == 1 and len(producers[id(following[0])]) == 1
                and batchnorm_folding.can_fold(layer, following[0])):
            plan[id(layer)].fold_batchnorm = following[0]
            plan[id(following[0])].replace_by_identity = True
            folded_into[id(following[0])] = layer
    for layer in layers:
        step = plan[id(layer)]
        step.quantize_inputs = id(layer) in reads_model_input
        if step.replace_by_identity or isinstance(layer, _SCALE_PRESERVING_TYPES):
            step.quantize_output = False
            continue
        following = consumers[id(layer)]
        # Skip a folded BatchNormalization: its consumer reads this output.
        if (len(following) == 1 and plan[id(following[0])].replace_by_identity):
            following = consumers[id(following[0])]
        if (isinstance(layer, _FUSING_TYPES) and _is_linear(layer) and len(following) == 1
                and _is_fusable_relu(following[0])):
            step.quantize_output = False
    return plan


def _is_linear(layer):
    activation = getattr(layer, "activation", None)
    return activation is None or getattr(activation, "__name__", None) == "linear"


def _is_fusable_relu(layer):
    if isinstance(layer, keras.layers.ReLU):
        return (not layer.negative_slope and not layer.threshold
                and layer.max_value in (None, 6.0, 6))
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", None) in ("relu", "relu6")
    return False


def _is_functional(model):
    # Functional models are the ones with a graph of inputs and outputs.
    return type(model).__name__ == "Functional"


def quantize_wrappers(model):
    """All `QuantizeWrapper` layers of a model (nested models included)."""
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, QuantizeWrapper):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(quantize_wrappers(layer))
    return found


@contextlib.contextmanager
def quantize_scope():
    """Custom-object scope for loading quantized models (tfmot's name).

    The classes are registered serializable, so `keras.saving.load_model`
    finds them once `tf_clicktrain` is imported.
    """
    with keras.saving.custom_object_scope({"QuantizeWrapper": QuantizeWrapper}):
        yield
