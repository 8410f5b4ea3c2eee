"""Keras model -> .tflite bytes with pattern-sparse convs as compact custom ops."""

import contextlib
import io


def convert(
    model,
    *,
    custom_ops=True,
    max_patterns=64,
    max_size_ratio=0.8,
    return_report=False,
):
    """Converts a pattern-sparse Keras model to a TFLite flatbuffer.

    The model is converted by TensorFlow's own `TFLiteConverter` (so folded
    BatchNorm, fused activations and the `serving_default` signature are the
    converter's), then every pattern-sparse 3x3 CONV_2D / DEPTHWISE_CONV_2D is
    replaced by a `ClickTrainPatternConv2D` /
    `ClickTrainPatternDepthwiseConv2D` custom op holding only compact weights.
    Patterns are read from the zeros of the weights, so any pattern-sparse
    model converts, e.g. one returned by `ct.strip_pruning`.

    Args:
        model: a Keras model (Sequential, Functional or subclassed) with
            pattern-sparse 3x3 convolutions.
        custom_ops: when False, return the converter's builtin-only file (all
            weights dense, zeros kept), which runs on any stock TFLite/LiteRT
            runtime.
        max_patterns: a layer with more distinct patterns stays builtin.
        max_size_ratio: a layer whose compact weights take more than this
            fraction of its dense filter's bytes stays builtin.
        return_report: also return one `LayerReport` per 3x3 convolution.

    Returns:
        The .tflite model as `bytes`; with `return_report=True`, a tuple
        `(bytes, reports)`.

    Raises:
        ValueError: if the model still holds pruning wrappers (call
            `ct.strip_pruning` first, as with tfmot's `strip_pruning`).

    Example:

    ```python
    tflite_bytes = ct.tflite.convert(ct.strip_pruning(model))
    interpreter = ct.tflite.Interpreter(model_content=tflite_bytes)
    interpreter.allocate_tensors()
    ```
    """
    import tensorflow as tf  # Deferred: the runtime side needs no TensorFlow.

    from tf_clicktrain.tflite import model_rewrite

    if not hasattr(model, "layers") or not callable(model):
        raise ValueError(f"convert takes a Keras model. Received: model={model!r}")
    wrapped = [layer.name for layer in _all_layers(model) if _is_pruning_wrapper(layer)]
    if wrapped:
        raise ValueError(
            "convert takes a stripped model: call ct.strip_pruning(model) first. "
            f"Received a model with pruning wrappers: {wrapped}"
        )
    # The Keras 3 path exports a SavedModel first and prints its signature
    # ("Saved artifact at ..."); that is noise to a caller of convert().
    with contextlib.redirect_stdout(io.StringIO()):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        tflite_bytes = converter.convert()
    reports = []
    if custom_ops:
        tflite_bytes, reports = model_rewrite.replace_pattern_convs(
            tflite_bytes, max_patterns=max_patterns, max_size_ratio=max_size_ratio
        )
    return (tflite_bytes, reports) if return_report else tflite_bytes


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


def _is_pruning_wrapper(layer):
    from tf_clicktrain.pruning.wrapper import PatternPruningWrapper

    return isinstance(layer, PatternPruningWrapper)
