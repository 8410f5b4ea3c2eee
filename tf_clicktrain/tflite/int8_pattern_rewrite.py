"""Plans int8 pattern-sparse 3x3 convs as the int8 pattern-conv custom ops.

Planners for `model_rewrite`'s rewrite loop, for full-integer files: given
one CONV_2D (or DEPTHWISE_CONV_2D with depth multiplier 1) with an int8 3x3
filter quantized per output channel (symmetric, as TFLite's converter
writes it), int8 input and output quantized per tensor and an int32 bias,
they propose a `Rewrite` to `ClickTrainPatternConv2DInt8` (or
`ClickTrainPatternDepthwiseConv2DInt8`), or say in a `LayerReport` why the
layer stays builtin.

The ops' inputs are the float ops' compact tensors (`compact_format`) with
int8 values, then the int32 bias and the float32 per-channel filter scales:
`[input, pattern_masks, kernel_index, values, bias, filter_scales]`; their
options are the float ops' flexbuffer map. The
formats are specified in `tflite_export/include/clicktrain/pattern_conv_s8.h`
and `pattern_dwconv_s8.h`. The ops reproduce TFLite's int8 reference CONV_2D
and DEPTHWISE_CONV_2D bit for bit.
"""

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from tf_clicktrain.tflite import compact_format

OP_NAME = "ClickTrainPatternConv2DInt8"
OP_KIND = "CONV_2D"
DEPTHWISE_OP_NAME = "ClickTrainPatternDepthwiseConv2DInt8"
DEPTHWISE_OP_KIND = "DEPTHWISE_CONV_2D"


def _per_tensor(tensor):
    """`(scale, zero_point)` of a per-tensor quantized tensor, else None."""
    quantization = tensor.quantization
    if quantization is None or quantization.scale is None or quantization.zeroPoint is None:
        return None
    if len(quantization.scale) != 1 or len(quantization.zeroPoint) != 1:
        return None
    return float(quantization.scale[0]), int(quantization.zeroPoint[0])


def plan_int8_pattern_conv(model, subgraph, operator, limits):
    """A `Rewrite`, a kept `LayerReport`, or None for a non-int8 or non-3x3 conv.

    Args:
        model, subgraph, operator: the `schema` object API view of the
            CONV_2D and the file holding it.
        limits: `model_rewrite.PlanLimits`.
    """
    return _plan_int8(model, subgraph, operator, limits, depthwise=False)


def plan_int8_pattern_depthwise_conv(model, subgraph, operator, limits):
    """As `plan_int8_pattern_conv`, for a DEPTHWISE_CONV_2D (multiplier 1)."""
    return _plan_int8(model, subgraph, operator, limits, depthwise=True)


def _plan_int8(model, subgraph, operator, limits, depthwise):
    operands = model_rewrite.conv_operands(subgraph, operator)
    if operands is None:
        return None
    inputs, outputs, filter_tensor, shape = operands
    tensors = subgraph.tensors
    if filter_tensor.type != schema.TensorType.INT8 or len(shape) != 4 or shape[1:3] != (3, 3):
        return None  # Float filters are the float planner's; others not ours.
    name = (filter_tensor.name or b"").decode(errors="replace")
    op_name, op_kind = (DEPTHWISE_OP_NAME, DEPTHWISE_OP_KIND) if depthwise else (OP_NAME, OP_KIND)
    # TFLite's layouts: [out, 3, 3, in] quantized along 0; depthwise
    # [1, 3, 3, channels * multiplier] quantized along 3.
    output_channels, input_channels = (shape[3], shape[3]) if depthwise else (shape[0], shape[3])
    channel_axis = 3 if depthwise else 0
    dense_bytes = int(np.prod(shape))

    def keep(reason):
        return model_rewrite.LayerReport(
            name, op_kind, False, reason, dense_bytes, total_weights=dense_bytes, custom_op=op_name
        )

    if depthwise and shape[0] != 1:
        return keep("depthwise filter is not [1, 3, 3, channels]")

    filter_data = model.buffers[filter_tensor.buffer].data
    if filter_data is None:
        return keep("filter is not a constant tensor")
    dense = np.frombuffer(np.asarray(filter_data, np.uint8).tobytes(), np.int8)
    if dense.size != dense_bytes:
        return keep("filter buffer size does not match its shape")
    dense = dense.reshape(shape)
    quantization = filter_tensor.quantization
    scales = None if quantization is None or quantization.scale is None else np.asarray(
        quantization.scale, np.float32)
    zero_points = None if quantization is None or quantization.zeroPoint is None else np.asarray(
        quantization.zeroPoint, np.int64)
    if scales is None or scales.size not in (1, output_channels):
        return keep("filter is not quantized per output channel")
    if scales.size > 1 and quantization.quantizedDimension != channel_axis:
        return keep("filter is not quantized along its output channels")
    if zero_points is None or np.any(zero_points != 0):
        return keep("filter quantization is not symmetric (zero point 0)")
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        return keep("filter scales are not finite and positive")
    scales = np.broadcast_to(scales, (output_channels,)).astype(np.float32)
    options = operator.builtinOptions
    activation = model_rewrite._ACTIVATION_NAMES.get(options.fusedActivationFunction)
    input_tensor, output_tensor = tensors[inputs[0]], tensors[outputs[0]]
    input_shape = [int(d) for d in input_tensor.shape]
    if activation is None:
        return keep("fused activation is not NONE/RELU/RELU_N1_TO_1/RELU6")
    if (
        input_tensor.type != schema.TensorType.INT8
        or output_tensor.type != schema.TensorType.INT8
        or len(input_shape) != 4
        or _per_tensor(input_tensor) is None
        or _per_tensor(output_tensor) is None
    ):
        return keep("input/output is not a per-tensor quantized int8 NHWC tensor")
    if input_shape[3] != input_channels:
        return keep("depth multiplier is not 1" if depthwise else "grouped convolution")
    bias_index = model_rewrite.bias_input(inputs)
    if bias_index >= 0 and not model_rewrite.is_constant_vector(
        model, subgraph, bias_index, schema.TensorType.INT32, output_channels
    ):
        return keep("bias is not a constant int32 vector")
    encode = compact_format.encode_depthwise if depthwise else compact_format.encode_conv
    structure = encode(dense.astype(np.float32), value_bytes=1)
    if structure is None:
        return keep("no non-zero weight, or too many patterns")
    values = structure.values.astype(np.int8)
    compact_bytes = structure.pattern_masks.nbytes + structure.kernel_index.nbytes + values.nbytes
    if structure.num_patterns > limits.max_patterns:
        return keep(f"{structure.num_patterns} patterns > max_patterns={limits.max_patterns}")
    if compact_bytes > limits.max_size_ratio * dense_bytes:
        return keep(
            f"compact/dense size {compact_bytes / dense_bytes:.2f} > "
            f"max_size_ratio={limits.max_size_ratio}"
        )

    custom_options = model_rewrite.pattern_conv_options(
        input_channels, output_channels, options, activation
    )

    def apply(editor, target_subgraph, target_operator):
        compact_inputs = model_rewrite.add_compact_constants(
            editor, target_subgraph, name, structure, values
        )
        scales_index = editor.add_constant(target_subgraph, f"{name}/filter_scales", scales)
        target_inputs = [int(index) for index in target_operator.inputs]
        editor.make_custom(
            target_operator,
            op_name,
            [
                target_inputs[0],
                *compact_inputs,
                model_rewrite.bias_input(target_inputs),
                scales_index,
            ],
            custom_options,
        )
        return [target_inputs[1]]

    report = model_rewrite.LayerReport(
        name,
        op_kind,
        True,
        "",
        dense_bytes,
        compact_bytes,
        structure.num_patterns,
        int(np.count_nonzero(dense)),
        dense_bytes,
        custom_op=op_name,
    )
    timing_key = (
        op_name,
        tuple(input_shape),
        shape,
        custom_options,
        bias_index >= 0,
        structure.num_patterns,
        structure.num_kernels,
        int(values.size),
    )
    return model_rewrite.Rewrite(op_name, report, timing_key, apply)


# Last: model_rewrite registers this module's planner when it is imported.
from tf_clicktrain.tflite import model_rewrite  # noqa: E402
