"""The int8 pattern convs of an exported QAT file, recomputed bit for bit.

`int8_conv_reference` restates TFLite's int8 CONV_2D (the semantics a native
int8 pattern-conv op must match); here it is checked against LiteRT's own
reference kernels on files from `ct.quantize_model` + `ct.tflite.convert`.
"""

import keras
import numpy as np
import pytest
from ai_edge_litert import interpreter as litert_interpreter
from ai_edge_litert import schema_py_generated as schema

import int8_conv_reference as reference
import tf_clicktrain as ct


def _exported_conv(stride, padding, activation, seed):
    rng = np.random.default_rng(seed)
    model = keras.Sequential([
        keras.Input((9, 9, 8), name="image"),
        keras.layers.Conv2D(16, 3, strides=stride, padding=padding, activation=activation),
    ])
    conv = model.layers[0]
    keep = np.zeros((8 * 16, 9), np.float32)
    np.put_along_axis(keep, np.argsort(rng.random((8 * 16, 9)), axis=1)[:, :4], 1.0, axis=1)
    keep *= (rng.random(8 * 16) < 0.5)[:, None]
    conv.kernel.assign(conv.kernel.numpy() * keep.reshape(8, 16, 3, 3).transpose(2, 3, 0, 1))
    conv.bias.assign(rng.normal(0, 0.2, 16).astype("float32"))
    qat = ct.quantize_model(model)
    qat(rng.normal(0, 1, (32, 9, 9, 8)).astype("float32"), training=True)
    return ct.tflite.convert(qat, inference_input_type="int8", inference_output_type="int8")


def _conv_operands(tflite_bytes):
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    (subgraph,) = model.subgraphs
    (operator,) = subgraph.operators  # int8 I/O: the conv alone
    code = model.operatorCodes[operator.opcodeIndex]
    assert max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.CONV_2D
    tensors = [subgraph.tensors[i] for i in operator.inputs] + [
        subgraph.tensors[operator.outputs[0]]]
    data_input, filters, bias, output = tensors

    def data(tensor, dtype):
        raw = np.asarray(model.buffers[tensor.buffer].data, np.uint8)
        return raw.view(dtype).reshape(tensor.shape)

    options = operator.builtinOptions
    return dict(
        input_scale=float(data_input.quantization.scale[0]),
        input_zero_point=int(data_input.quantization.zeroPoint[0]),
        filters=data(filters, np.int8),
        filter_scales=np.asarray(filters.quantization.scale, np.float32),
        bias=data(bias, np.int32),
        output_scale=float(output.quantization.scale[0]),
        output_zero_point=int(output.quantization.zeroPoint[0]),
        stride=int(options.strideH),
        same=options.padding == schema.Padding.SAME,
        relu=options.fusedActivationFunction == schema.ActivationFunctionType.RELU,
    )


def _reference_output(operands, inputs):
    multipliers, shifts = zip(*[
        reference.quantize_multiplier(
            float(np.float32(operands["input_scale"])) * float(scale)
            / float(np.float32(operands["output_scale"])))
        for scale in operands["filter_scales"]])
    size, stride = inputs.shape[1], operands["stride"]
    if operands["same"]:
        pad, out = reference.same_padding(size, stride)
    else:
        pad, out = 0, (size - 3) // stride + 1
    low = max(-128, operands["output_zero_point"]) if operands["relu"] else -128
    return reference.conv2d_int8(
        inputs, operands["input_zero_point"], operands["filters"], operands["bias"],
        multipliers, shifts, operands["output_zero_point"], stride,
        ((pad, pad), (out, out)), activation_min=low)


def _litert_output(tflite_bytes, inputs, resolver):
    interpreter = litert_interpreter.Interpreter(
        model_content=tflite_bytes, experimental_op_resolver_type=resolver)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(inputs.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, inputs)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("stride, padding, activation", [
    (1, "same", "relu"), (2, "same", None), (1, "valid", "relu"), (2, "valid", None)])
def test_reference_matches_litert_reference_conv_bit_for_bit(stride, padding, activation):
    tflite_bytes = _exported_conv(stride, padding, activation, seed=stride)
    operands = _conv_operands(tflite_bytes)
    assert operands["relu"] == (activation == "relu")
    assert np.mean(operands["filters"] == 0) > 0.7  # the patterns, as int8 zeros
    inputs = np.random.default_rng(3).integers(-128, 128, (2, 9, 9, 8)).astype(np.int8)
    expected = _litert_output(tflite_bytes, inputs,
                              litert_interpreter.OpResolverType.BUILTIN_REF)
    actual = _reference_output(operands, inputs)
    np.testing.assert_array_equal(actual, expected)
    # XNNPACK's int8 conv (what the builtin path runs) rounds its own way:
    # within one step of the reference.
    optimized = _litert_output(tflite_bytes, inputs, litert_interpreter.OpResolverType.AUTO)
    assert np.abs(optimized.astype(np.int32) - expected).max() <= 1


def test_quantize_multiplier_matches_tflite_examples():
    assert reference.quantize_multiplier(0.5) == (1 << 30, 0)
    assert reference.quantize_multiplier(0.0) == (0, 0)
    multiplier, shift = reference.quantize_multiplier(0.0009765625 * 3)  # 3 * 2^-10
    assert multiplier == 3 << 29 and shift == -8
