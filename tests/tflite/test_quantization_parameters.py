"""Quantization parameters that crash LiteRT are refused.

LiteRT's XNNPACK delegate (applied by default) dereferences a null pointer
on an int8 tensor with a zero point outside [-128, 127], on an 8-bit tensor
whose scale is zero, negative, NaN or subnormal, and on a rank-0 8-bit
tensor with several scales: a few changed bytes of an exported file kill the
process in stock LiteRT. `ct.tflite.Interpreter` refuses such files with a
ValueError before LiteRT sees them.
"""

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from tf_clicktrain import tflite as ct_tflite
from tf_clicktrain.tflite import flatbuffer_check


def _quantize_model(zero_point, tensor_type=schema.TensorType.INT8, scales=None,
                    shape=(1, 4), quantized_dimension=0):
    """A one-op model: QUANTIZE of a float input (`shape`) to an 8-bit output."""
    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.QUANTIZE
    code.version = 1
    model.operatorCodes = [code]
    model.buffers = [schema.BufferT(), schema.BufferT(), schema.BufferT()]
    source = schema.TensorT()
    source.shape, source.type, source.buffer, source.name = list(shape), schema.TensorType.FLOAT32, 1, b"x"
    quantized = schema.TensorT()
    quantized.shape, quantized.type, quantized.buffer, quantized.name = list(shape), tensor_type, 2, b"q"
    quantized.quantization = schema.QuantizationParametersT()
    quantized.quantization.scale = [0.5] if scales is None else list(scales)
    quantized.quantization.zeroPoint = [zero_point] * len(quantized.quantization.scale)
    quantized.quantization.quantizedDimension = quantized_dimension
    operator = schema.OperatorT()
    operator.opcodeIndex, operator.inputs, operator.outputs = 0, [0], [1]
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators = [source, quantized], [operator]
    subgraph.inputs, subgraph.outputs = [0], [1]
    model.subgraphs = [subgraph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize(
    "zero_point, tensor_type",
    [
        (13057, schema.TensorType.INT8),
        (128, schema.TensorType.INT8),
        (-129, schema.TensorType.INT8),
        (256, schema.TensorType.UINT8),
        (-1, schema.TensorType.UINT8),
    ],
)
def test_out_of_range_zero_point_is_refused(zero_point, tensor_type):
    with pytest.raises(ValueError, match=r"tensors\[1\]\.quantization\.zero_point\[0\]"):
        ct_tflite.Interpreter(model_content=_quantize_model(zero_point, tensor_type))


@pytest.mark.parametrize(
    "zero_point, tensor_type, expected",
    [
        (-128, schema.TensorType.INT8, [-128, -126, 127, -128]),
        (127, schema.TensorType.INT8, [127, 127, 127, 125]),
        (0, schema.TensorType.UINT8, [0, 2, 255, 0]),
        (255, schema.TensorType.UINT8, [255, 255, 255, 253]),
    ],
)
def test_zero_points_at_the_range_ends_load_and_run(zero_point, tensor_type, expected):
    interpreter = ct_tflite.Interpreter(model_content=_quantize_model(zero_point, tensor_type))
    interpreter.allocate_tensors()
    interpreter.set_tensor(0, np.array([[0.0, 1.0, 1000.0, -1.0]], np.float32))
    interpreter.invoke()
    np.testing.assert_array_equal(interpreter.get_tensor(1)[0], expected)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf"), 1e-45])
@pytest.mark.parametrize("tensor_type", [schema.TensorType.INT8, schema.TensorType.UINT8])
def test_scale_that_is_not_a_positive_normal_float_is_refused(scale, tensor_type):
    with pytest.raises(ValueError, match=r"tensors\[1\]\.quantization\.scale\[0\] is .*"
                                         r"a scale must be a positive normal float"):
        ct_tflite.Interpreter(model_content=_quantize_model(0, tensor_type, scales=[scale]))


@pytest.mark.parametrize(
    "shape, scales, quantized_dimension",
    [
        ((), [0.5, 0.5], 0),           # several scales for a rank-0 tensor
        ((1, 4), [0.5, 0.5], 1),       # two scales for a dimension of 4
        ((1, 4), [0.5] * 4, 0),        # scales along a dimension of 1
    ],
)
def test_scale_count_that_does_not_match_the_quantized_dimension_is_refused(
        shape, scales, quantized_dimension):
    with pytest.raises(ValueError, match=rf"tensors\[1\] has {len(scales)} quantization scales"):
        ct_tflite.Interpreter(model_content=_quantize_model(
            0, scales=scales, shape=shape, quantized_dimension=quantized_dimension))


def test_per_channel_scales_along_the_quantized_dimension_pass_the_check():
    flatbuffer_check.check_loadable(_quantize_model(
        0, scales=[0.5, 0.25, 1.0, 2.0], shape=(1, 4), quantized_dimension=1))
    flatbuffer_check.check_loadable(_quantize_model(0, scales=[1.2e-38]))   # smallest normal
