"""Keras model -> .tflite bytes with pattern-sparse convs as compact custom ops."""

import contextlib
import io


def convert(
    model,
    *,
    custom_ops=True,
    decide_by="speed",
    num_threads=1,
    whole_model_check=None,
    max_patterns=64,
    max_size_ratio=0.8,
    return_report=False,
    verbose=False,
    representative_dataset=None,
    inference_input_type="float32",
    inference_output_type="float32",
):
    """Converts a pattern-sparse Keras model to a TFLite flatbuffer.

    The model is converted by TensorFlow's own `TFLiteConverter` (so folded
    BatchNorm, fused activations and the `serving_default` signature are the
    converter's); that is the builtin-only file. Then each pattern-sparse 3x3
    CONV_2D / DEPTHWISE_CONV_2D that a custom op can express
    (`ClickTrainPatternConv2D` / `ClickTrainPatternDepthwiseConv2D`, holding
    only compact weights; within `max_patterns` and `max_size_ratio`) is a
    candidate, and `decide_by` says which candidates are replaced. Patterns
    are read from the zeros of the weights, so any pattern-sparse model
    converts, e.g. one returned by `ct.strip_pruning`.

    Never slower (the default, `decide_by="speed"`): a layer is replaced
    only when its custom op, timed alone on this machine against the builtin
    operator with the same weights and shapes (LiteRT's interpreter, XNNPACK
    for the builtin, `num_threads` threads, the fastest of interleaved
    rounds), is at least 5% faster; equal shapes with equal sparsity are timed once. Then the
    whole-model check times the rewritten file against the builtin-only file
    and, while it is slower, puts the replaced layers with the smallest gain
    back to builtin, down to the builtin-only file itself. So the returned
    file measured no slower than the builtin-only file on the converting
    machine: convert on (or like) the target CPU. Without the native
    library every layer stays builtin, with a warning.

    Args:
        model: a Keras model (Sequential, Functional or subclassed) with
            pattern-sparse 3x3 convolutions.
        custom_ops: when False, return the converter's builtin-only file (all
            weights dense, zeros kept), which runs on any stock TFLite/LiteRT
            runtime.
        decide_by: "speed" (replace a candidate only when measured faster),
            "size" (replace every candidate: the smallest file, whatever its
            speed), or a callable taking a `speed_decision.Candidate` (its
            `report`, and `builtin_model` / `custom_model`: the layer alone
            as .tflite bytes, e.g. to time on a device) and returning True
            to replace.
        num_threads: threads for the timings (use the interpreter's
            `num_threads` on the target).
        whole_model_check: time the whole file against the builtin-only
            file and put layers back until it is not slower. None: on with
            `decide_by="speed"`, off otherwise.
        max_patterns: a layer with more distinct patterns stays builtin.
        max_size_ratio: a layer whose compact weights take more than this
            fraction of its dense filter's bytes stays builtin.
        return_report: also return one `LayerReport` per 3x3 convolution:
            whether it was replaced, what decided (`decided_by`, `reason`)
            and the measured times (`builtin_us`, `custom_us`).
        verbose: print one line per timed layer and per whole-model timing.
        representative_dataset: as TFLiteConverter's: full-integer int8
            quantization of weights and activations, calibrated on this data
            (`int8_export.convert_int8`). A model from `ct.quantize_model`
            converts to int8 without it, from its trained ranges.
        inference_input_type, inference_output_type: "float32" or "int8",
            for int8 files.

    Returns:
        The .tflite model as `bytes`; with `return_report=True`, a tuple
        `(bytes, reports)`.

    Raises:
        ValueError: if the model still holds pruning wrappers (call
            `ct.strip_pruning` first, as with tfmot's `strip_pruning`), or
            `decide_by`, `num_threads` or `whole_model_check` is invalid.

    Example:

    ```python
    tflite_bytes = ct.tflite.convert(ct.strip_pruning(model))
    interpreter = ct.tflite.Interpreter(model_content=tflite_bytes)
    interpreter.allocate_tensors()
    ```
    """
    import tensorflow as tf  # Deferred: the runtime side needs no TensorFlow.

    from tf_clicktrain.pruning.prune import pruning_wrappers
    from tf_clicktrain.tflite import int8_export

    if not hasattr(model, "layers") or not callable(model):
        raise ValueError(f"convert takes a Keras model. Received: model={model!r}")
    _validate_decision_arguments(decide_by, num_threads, whole_model_check)
    wrapped = [layer.name for layer in pruning_wrappers(model)]
    if wrapped:
        raise ValueError(
            "convert takes a stripped model: call ct.strip_pruning(model) first. "
            f"Received a model with pruning wrappers: {wrapped}"
        )
    # The Keras 3 path exports a SavedModel first and prints its signature
    # ("Saved artifact at ..."); that is noise to a caller of convert().
    int8_file = representative_dataset is not None or int8_export.is_quantization_aware(model)
    if int8_file:
        tflite_bytes = int8_export.convert_int8(
            model, representative_dataset, inference_input_type, inference_output_type)
    else:
        if (inference_input_type, inference_output_type) != ("float32", "float32"):
            raise ValueError(
                "int8 inputs/outputs need an int8 file: pass representative_dataset, "
                "or a model from ct.quantize_model."
            )
        with contextlib.redirect_stdout(io.StringIO()):
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            tflite_bytes = converter.convert()
    reports = []
    if custom_ops:
        tflite_bytes, reports = rewrite_builtin_file(
            tflite_bytes,
            decide_by=decide_by,
            num_threads=num_threads,
            whole_model_check=whole_model_check,
            max_patterns=max_patterns,
            max_size_ratio=max_size_ratio,
            verbose=verbose,
        )
    return (tflite_bytes, reports) if return_report else tflite_bytes


def _validate_decision_arguments(decide_by, num_threads, whole_model_check):
    if not (decide_by in ("speed", "size") or callable(decide_by)):
        raise ValueError(
            "decide_by must be 'speed', 'size' or a callable(candidate) -> bool. "
            f"Received: decide_by={decide_by!r}"
        )
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(
            f"num_threads must be a positive integer. Received: num_threads={num_threads!r}"
        )
    if whole_model_check not in (None, True, False):
        raise ValueError(
            "whole_model_check must be None, True or False. "
            f"Received: whole_model_check={whole_model_check!r}"
        )


def rewrite_builtin_file(
    builtin_bytes,
    *,
    decide_by="speed",
    num_threads=1,
    whole_model_check=None,
    max_patterns=64,
    max_size_ratio=0.8,
    verbose=False,
    layer_timer=None,
    model_timer=None,
):
    """The builtin-only .tflite -> `(bytes, reports)`, decided as `convert` says.

    Args:
        builtin_bytes: the converter's builtin-only file.
        decide_by, num_threads, whole_model_check, max_patterns,
            max_size_ratio, verbose: as for `convert`.
        layer_timer, model_timer: callables `{name: tflite bytes} ->
            {name: median seconds}` timing one-operator files and whole
            files; default `speed_decision.InterpreterTimer(num_threads)`.
    """
    from tf_clicktrain.tflite import model_rewrite
    from tf_clicktrain.tflite import speed_decision

    _validate_decision_arguments(decide_by, num_threads, whole_model_check)
    if layer_timer is None:
        layer_timer = speed_decision.InterpreterTimer(num_threads)
    if model_timer is None:
        model_timer = speed_decision.InterpreterTimer(num_threads, rounds=11, sample_seconds=0.01)
    if decide_by == "speed":
        choose = speed_decision.SpeedChooser(layer_timer, verbose=verbose)
    elif decide_by == "size":
        choose = model_rewrite.choose_by_size
    else:
        choose = speed_decision.CallableChooser(decide_by)

    def rewrite(chooser):
        return model_rewrite.replace_pattern_convs(
            builtin_bytes,
            max_patterns=max_patterns,
            max_size_ratio=max_size_ratio,
            choose=chooser,
        )

    rewritten = rewrite(choose)
    if whole_model_check is None:
        whole_model_check = decide_by == "speed"
    if not whole_model_check:
        return rewritten
    return speed_decision.keep_not_slower(
        builtin_bytes, rewritten, choose, rewrite, model_timer, verbose=verbose
    )
