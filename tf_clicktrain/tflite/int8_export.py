"""Keras model -> full-integer int8 .tflite bytes.

Two ways in, as with TFLiteConverter:
- a model from `ct.quantize_model`, trained: its fake-quant ranges become the
  file's scales and zero points (quantization-aware training), no data;
- any float model with a `representative_dataset`: post-training full-integer
  quantization calibrated on that data.

Either way every op computes in int8 (a float op left in the file is an
error); inputs and outputs are float32 with QUANTIZE / DEQUANTIZE at the
edges unless `inference_input_type` / `inference_output_type` say int8.
Pattern-sparse kernels keep their zeros: a zero weight is an int8 0.
"""

import contextlib
import io
import warnings

import numpy as np

_IO_TYPES = ("float32", "int8")
# Ops allowed to read or write float32 in a full-integer file: the edges.
_EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")


def is_quantization_aware(model):
    """Whether a Keras model holds `QuantizeWrapper` layers."""
    from tf_clicktrain.quantization import quantize_wrappers

    return bool(quantize_wrappers(model))


def convert_int8(model, representative_dataset=None, inference_input_type="float32",
                 inference_output_type="float32"):
    """Converts a QAT-trained or float Keras model to a full-integer file.

    Args:
        model: a Keras model; from `ct.quantize_model` (trained), or a float
            model given with ``representative_dataset``.
        representative_dataset: as TFLiteConverter's: a callable returning
            an iterable of input lists, each ``[array]`` one sample batch.
            Needed for a float model; a QAT model uses its trained ranges
            (data given for it is ignored).
        inference_input_type: "float32" (default) or "int8".
        inference_output_type: "float32" (default) or "int8".

    Returns:
        The .tflite model as `bytes`.

    Raises:
        ValueError: on a float model without ``representative_dataset``, a
            QAT model whose ranges were never trained, a bad type name, or
            if the converter left an op in float.
    """
    import tensorflow as tf  # Deferred: the runtime side needs no TensorFlow.

    for name, value in (("inference_input_type", inference_input_type),
                        ("inference_output_type", inference_output_type)):
        if value not in _IO_TYPES:
            raise ValueError(f"{name} must be one of {_IO_TYPES}. Received: {name}={value!r}")
    quantization_aware = is_quantization_aware(model)
    if quantization_aware:
        _check_ranges_trained(model)
    elif representative_dataset is None:
        raise ValueError(
            "int8 export of a float model needs representative_dataset (post-training "
            "full-integer quantization), or a model from ct.quantize_model trained "
            "with fit (quantization-aware training)."
        )
    elif not callable(representative_dataset):
        raise ValueError(
            "representative_dataset must be a callable returning an iterable of "
            f"input lists, as for TFLiteConverter. Received: {representative_dataset!r}"
        )
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # Emitted for every int8-input conversion; the ranges come from the model.
        warnings.filterwarnings("ignore", "Statistics for quantized inputs")
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if not quantization_aware:
            converter.representative_dataset = representative_dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, inference_input_type)
        converter.inference_output_type = getattr(tf, inference_output_type)
        tflite_bytes = converter.convert()
    float_ops = float_operators(tflite_bytes)
    if float_ops:
        raise ValueError(
            "The converter left these ops in float32, so the file is not full-integer: "
            f"{float_ops}. With a QAT model, every op needs a trained range; layers "
            "quantize_model does not know may lack one."
        )
    return tflite_bytes


def _check_ranges_trained(model):
    from tf_clicktrain.quantization import quantize_wrappers

    untrained = [
        f"{wrapper.name}/{name}"
        for wrapper in quantize_wrappers(model)
        for name, (_, _, initialized) in wrapper.ranges().items()
        if not initialized
    ]
    if untrained:
        raise ValueError(
            "The quantized model's activation ranges were never trained: train it "
            "with fit (or run model(x, training=True) on sample data) before export. "
            f"Untrained ranges: {untrained}"
        )


def float_operators(tflite_bytes):
    """Names (``OP:output``) of ops computing in float32, edges excluded.

    Raises:
        ValueError: if `tflite_bytes` is not a well-formed TFLite model.
    """
    from ai_edge_litert import schema_py_generated as schema

    from tf_clicktrain.tflite import flatbuffer_check

    names = {value: name for name, value in vars(schema.BuiltinOperator).items()
             if not name.startswith("_")}
    tflite_bytes = bytes(tflite_bytes)
    flatbuffer_check.check_model(tflite_bytes)
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    flatbuffer_check.check_indices(model)
    found = []
    for subgraph in model.subgraphs:
        for operator in subgraph.operators or []:
            code = model.operatorCodes[operator.opcodeIndex]
            op_name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
            if op_name in _EDGE_OPS:
                continue
            outputs = [int(i) for i in (operator.outputs if operator.outputs is not None
                                        else np.zeros(0))]
            for index in outputs:
                tensor = subgraph.tensors[index]
                if tensor.type == schema.TensorType.FLOAT32:
                    found.append(f"{op_name}:{tensor.name.decode()}")
    return found
