"""Plans sparse 1x1 CONV_2Ds as `ClickTrainSparseConv1x1` custom ops.

A planner for `model_rewrite`'s rewrite loop: given one CONV_2D of a
.tflite model, it proposes a `Rewrite` to the compact sparse 1x1 op (inputs
`[input, nonzero_mask, values, bias]`, flexbuffer options; format in
`pointwise_format`), or says in a `LayerReport` why the layer stays builtin.
"""

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers

from tf_clicktrain.tflite import model_rewrite
from tf_clicktrain.tflite import pointwise_format

# Below this fraction of zero weights the sparse op is not reliably faster
# than XNNPACK's dense 1x1 conv, so a layer stays builtin: measured 1.05-2.0x
# at 70% and 0.98-1.6x at 60% over ResNet-50 and MobileNetV2 shapes
# ("Sparse 1x1 op vs XNNPACK dense" in benchmarks/README.md).
MIN_SPARSITY = 0.7
MAX_STRIDE = 64


def plan_sparse_conv1x1(model, subgraph, operator, limits):
    """A `Rewrite`, a kept `LayerReport`, or None for a non-1x1 operator.

    Args:
        model, subgraph, operator: the `schema` object API view of the
            CONV_2D and the file holding it.
        limits: `model_rewrite.PlanLimits` (its `max_size_ratio` applies).
    """
    operands = model_rewrite.conv_operands(subgraph, operator)
    if operands is None:
        return None
    inputs, outputs, filter_tensor, shape = operands
    tensors = subgraph.tensors
    if len(shape) != 4 or shape[1:3] != (1, 1):
        return None  # Not a 1x1 convolution: not ours to report.
    name = (filter_tensor.name or b"").decode(errors="replace")

    def keep(reason, dense_bytes=0, kept=0):
        return model_rewrite.LayerReport(
            name,
            "CONV_2D",
            False,
            reason,
            dense_bytes,
            kept_weights=kept,
            total_weights=int(np.prod(shape)),
            custom_op=pointwise_format.OP_NAME,
        )

    filter_data = model.buffers[filter_tensor.buffer].data
    if filter_tensor.type != schema.TensorType.FLOAT32 or filter_data is None:
        return keep("filter is not a constant float32 tensor")
    dense = np.frombuffer(np.asarray(filter_data, np.uint8).tobytes(), np.float32)
    if dense.size != np.prod(shape):
        return keep("filter buffer size does not match its shape")
    dense = dense.reshape(shape[0], shape[3])
    kept = int(np.count_nonzero(dense))
    options = operator.builtinOptions
    activation = model_rewrite._ACTIVATION_NAMES.get(options.fusedActivationFunction)
    input_tensor, output_tensor = tensors[inputs[0]], tensors[outputs[0]]
    input_shape = [int(d) for d in input_tensor.shape]
    output_channels, input_channels = dense.shape
    if activation is None:
        return keep("fused activation is not NONE/RELU/RELU_N1_TO_1/RELU6", dense.nbytes, kept)
    if (
        input_tensor.type != schema.TensorType.FLOAT32
        or output_tensor.type != schema.TensorType.FLOAT32
        or len(input_shape) != 4
    ):
        return keep("input/output is not a float32 NHWC tensor", dense.nbytes, kept)
    if input_shape[3] != input_channels:
        return keep("grouped convolution", dense.nbytes, kept)
    if max(input_channels, output_channels) > pointwise_format.MAX_CHANNELS:
        return keep(f"more than {pointwise_format.MAX_CHANNELS} channels", dense.nbytes, kept)
    if not (1 <= options.strideH <= MAX_STRIDE and 1 <= options.strideW <= MAX_STRIDE):
        return keep(f"stride above {MAX_STRIDE}", dense.nbytes, kept)
    bias_index = model_rewrite.bias_input(inputs)
    if bias_index >= 0 and not model_rewrite.is_constant_vector(
        model, subgraph, bias_index, schema.TensorType.FLOAT32, output_channels
    ):
        return keep("bias is not a constant float32 vector", dense.nbytes, kept)
    sparsity = 1.0 - kept / dense.size
    if sparsity < MIN_SPARSITY:
        return keep(
            f"sparsity {sparsity:.2f} < {MIN_SPARSITY}: the dense builtin is as fast",
            dense.nbytes,
            kept,
        )
    compact = pointwise_format.encode(dense)
    if compact.nbytes > limits.max_size_ratio * dense.nbytes:
        return keep(
            f"compact/dense size {compact.nbytes / dense.nbytes:.2f} > "
            f"max_size_ratio={limits.max_size_ratio}",
            dense.nbytes,
            kept,
        )

    custom_options = bytes(
        flexbuffers.Dumps(
            {
                "format_version": pointwise_format.FORMAT_VERSION,
                "input_channels": int(input_channels),
                "output_channels": int(output_channels),
                "stride_h": int(options.strideH),
                "stride_w": int(options.strideW),
                "fused_activation": activation,
            }
        )
    )

    def apply(editor, target_subgraph, target_operator):
        mask_index = editor.add_constant(
            target_subgraph, f"{name}/nonzero_mask", compact.nonzero_mask
        )
        values_index = editor.add_constant(target_subgraph, f"{name}/values", compact.values)
        target_inputs = [int(index) for index in target_operator.inputs]
        editor.make_custom(
            target_operator,
            pointwise_format.OP_NAME,
            [target_inputs[0], mask_index, values_index, model_rewrite.bias_input(target_inputs)],
            custom_options,
        )
        return [target_inputs[1]]

    report = model_rewrite.LayerReport(
        name,
        "CONV_2D",
        True,
        "",
        dense.nbytes,
        compact.nbytes,
        0,
        kept,
        int(dense.size),
        custom_op=pointwise_format.OP_NAME,
    )
    timing_key = (
        pointwise_format.OP_NAME,
        tuple(input_shape),
        shape,
        custom_options,
        bias_index >= 0,
        kept,
    )
    return model_rewrite.Rewrite(pointwise_format.OP_NAME, report, timing_key, apply)
