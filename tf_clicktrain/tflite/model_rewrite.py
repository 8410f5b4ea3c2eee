"""Rewrites a .tflite flatbuffer: pattern-sparse 3x3 convs -> compact custom ops.

Works on the output of TensorFlow's own converter, so BatchNorm folding, fused
activations and the signature are the converter's. Each CONV_2D, and each
DEPTHWISE_CONV_2D with multiplier 1, whose constant 3x3 float32 filter is
pattern-sparse and worth it (see `replace_pattern_convs`) becomes a CUSTOM op
`ClickTrainPatternConv2D` / `ClickTrainPatternDepthwiseConv2D` with inputs
`[input, pattern_masks, pattern_run_lengths, kernel_input_channels, values,
bias]` and flexbuffer options; the dense filter and its buffer are removed.
Anything else stays as it was.
"""

import dataclasses

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers

from tf_clicktrain.tflite import compact_format

_FILE_IDENTIFIER = b"TFL3"
# The converter's own alignment for constant data; the pattern-conv glue copies
# its weights into 64-byte-aligned memory itself, so more would only pad.
_BUFFER_ALIGNMENT = 16
_NO_TENSOR = -1
_PADDING_NAMES = {schema.Padding.SAME: "SAME", schema.Padding.VALID: "VALID"}
_ACTIVATION_NAMES = {
    schema.ActivationFunctionType.NONE: "NONE",
    schema.ActivationFunctionType.RELU: "RELU",
    schema.ActivationFunctionType.RELU_N1_TO_1: "RELU_N1_TO_1",
    schema.ActivationFunctionType.RELU6: "RELU6",
}


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """What the rewrite did with one convolution.

    Attributes:
        name: the filter tensor's name (names the Keras layer).
        op: "CONV_2D" or "DEPTHWISE_CONV_2D".
        replaced: whether it became a pattern-conv custom op.
        reason: why it stayed builtin (empty when replaced).
        dense_weight_bytes: bytes of the dense filter.
        compact_weight_bytes: bytes of the compact tensors (0 if kept).
        num_patterns: size of the layer's pattern table (0 if kept).
        kept_weights: non-zero weights in the filter.
        total_weights: weights in the dense filter.
    """

    name: str
    op: str
    replaced: bool
    reason: str
    dense_weight_bytes: int
    compact_weight_bytes: int = 0
    num_patterns: int = 0
    kept_weights: int = 0
    total_weights: int = 0


class _AlignedBuffer(schema.BufferT):
    """A Buffer whose data starts at a `_BUFFER_ALIGNMENT`-aligned file offset."""

    def Pack(self, builder):  # pylint: disable=invalid-name
        data = None
        if self.data is not None:
            payload = np.asarray(self.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(payload), _BUFFER_ALIGNMENT)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        schema.BufferAddOffset(builder, self.offset)
        schema.BufferAddSize(builder, self.size)
        return schema.BufferEnd(builder)


def replace_pattern_convs(tflite_bytes, *, max_patterns=64, max_size_ratio=0.8):
    """Replaces pattern-sparse 3x3 convolutions by compact custom ops.

    A convolution is replaced when its filter is a constant float32 3x3
    filter, its input and output are float32, its fused activation is NONE,
    RELU, RELU_N1_TO_1 or RELU6, its non-zero positions form at most
    `max_patterns` distinct patterns, and its compact tensors take at most
    `max_size_ratio` of the dense filter's bytes.

    Args:
        tflite_bytes: a .tflite model (bytes), e.g. from `TFLiteConverter`.
        max_patterns: largest pattern table a replaced layer may have.
        max_size_ratio: largest compact/dense weight-size ratio worth
            replacing.

    Returns:
        A tuple `(new_tflite_bytes, reports)` with one `LayerReport` per 3x3
        convolution seen.

    Raises:
        ValueError: if `tflite_bytes` is not a TFLite model or an argument is
            out of range.
    """
    if not 1 <= max_patterns <= compact_format.MAX_PATTERNS:
        raise ValueError(
            f"max_patterns must be in [1, {compact_format.MAX_PATTERNS}]. "
            f"Received: max_patterns={max_patterns}"
        )
    if not 0 < max_size_ratio:
        raise ValueError(
            f"max_size_ratio must be positive. Received: max_size_ratio={max_size_ratio}"
        )
    tflite_bytes = bytes(tflite_bytes)
    if len(tflite_bytes) < 8 or tflite_bytes[4:8] != _FILE_IDENTIFIER:
        raise ValueError("tflite_bytes is not a TFLite flatbuffer (no 'TFL3' identifier).")
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    if any(buffer.offset for buffer in model.buffers or []):
        # Weights stored outside the flatbuffer (models over 2 GB): not handled.
        return tflite_bytes, []

    rewriter = _Rewriter(model, max_patterns, max_size_ratio)
    for subgraph_index, subgraph in enumerate(model.subgraphs):
        rewriter.rewrite_subgraph(subgraph_index, subgraph)
    if not any(report.replaced for report in rewriter.reports):
        return tflite_bytes, rewriter.reports
    rewriter.drop_dead_buffers()
    model.buffers = [_as_aligned(buffer) for buffer in model.buffers]
    builder = flatbuffers.Builder(len(tflite_bytes))
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output()), rewriter.reports


def count_pattern_ops(tflite_bytes):
    """Returns how many pattern-conv custom ops a .tflite model holds."""
    tflite_bytes = bytes(tflite_bytes)
    if len(tflite_bytes) < 8 or tflite_bytes[4:8] != _FILE_IDENTIFIER:
        raise ValueError("tflite_bytes is not a TFLite flatbuffer (no 'TFL3' identifier).")
    model = schema.Model.GetRootAs(tflite_bytes, 0)
    ours = {
        index
        for index in range(model.OperatorCodesLength())
        if (model.OperatorCodes(index).CustomCode() or b"").decode()
        in (compact_format.CONV_OP_NAME, compact_format.DEPTHWISE_CONV_OP_NAME)
    }
    count = 0
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            if subgraph.Operators(o).OpcodeIndex() in ours:
                count += 1
    return count


def _as_aligned(buffer):
    aligned = _AlignedBuffer()
    aligned.data, aligned.offset, aligned.size = buffer.data, buffer.offset, buffer.size
    return aligned


def _builtin_code(operator_code):
    return max(operator_code.builtinCode, operator_code.deprecatedBuiltinCode)


class _Rewriter:
    """Edits one model in place; see `replace_pattern_convs`."""

    def __init__(self, model, max_patterns, max_size_ratio):
        self.model = model
        self.max_patterns = max_patterns
        self.max_size_ratio = max_size_ratio
        self.reports = []
        self.custom_opcodes = {}
        self.orphaned_buffers = set()

    # -- one subgraph -------------------------------------------------------

    def rewrite_subgraph(self, subgraph_index, subgraph):
        orphaned_tensors = set()
        for operator in subgraph.operators or []:
            code = _builtin_code(self.model.operatorCodes[operator.opcodeIndex])
            if code == schema.BuiltinOperator.CONV_2D:
                replaced_filter = self._rewrite_conv(subgraph, operator, depthwise=False)
            elif code == schema.BuiltinOperator.DEPTHWISE_CONV_2D:
                replaced_filter = self._rewrite_conv(subgraph, operator, depthwise=True)
            else:
                continue
            if replaced_filter is not None:
                orphaned_tensors.add(replaced_filter)
        self._drop_dead_tensors(subgraph_index, subgraph, orphaned_tensors)

    def _rewrite_conv(self, subgraph, operator, depthwise):
        """Replaces `operator` if worth it; returns the freed filter tensor."""
        op_name = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
        inputs = [int(index) for index in operator.inputs]
        outputs = [int(index) for index in operator.outputs]
        tensors = subgraph.tensors
        if len(inputs) < 2 or len(outputs) != 1 or inputs[1] < 0:
            return None
        filter_tensor = tensors[inputs[1]]
        shape = tuple(int(d) for d in filter_tensor.shape)
        if len(shape) != 4 or shape[1:3] != (3, 3):
            return None  # Not a 3x3 convolution: not ours to report.
        name = (filter_tensor.name or b"").decode(errors="replace")

        def keep(reason, dense_bytes=0):
            self.reports.append(LayerReport(name, op_name, False, reason, dense_bytes))
            return None

        filter_data = self.model.buffers[filter_tensor.buffer].data
        if filter_tensor.type != schema.TensorType.FLOAT32 or filter_data is None:
            return keep("filter is not a constant float32 tensor")
        dense = np.frombuffer(np.asarray(filter_data, np.uint8).tobytes(), np.float32)
        if dense.size != np.prod(shape):
            return keep("filter buffer size does not match its shape")
        dense = dense.reshape(shape)
        options = operator.builtinOptions
        activation = _ACTIVATION_NAMES.get(options.fusedActivationFunction)
        input_tensor, output_tensor = tensors[inputs[0]], tensors[outputs[0]]
        input_shape = [int(d) for d in input_tensor.shape]
        if activation is None:
            return keep("fused activation is not NONE/RELU/RELU_N1_TO_1/RELU6", dense.nbytes)
        if (
            input_tensor.type != schema.TensorType.FLOAT32
            or output_tensor.type != schema.TensorType.FLOAT32
            or len(input_shape) != 4
        ):
            return keep("input/output is not a float32 NHWC tensor", dense.nbytes)
        if depthwise:
            input_channels = output_channels = shape[3]
            if input_shape[3] != shape[3]:
                return keep("depth multiplier is not 1", dense.nbytes)
            compact = compact_format.encode_depthwise(dense)
        else:
            output_channels, input_channels = shape[0], shape[3]
            if input_shape[3] != input_channels:
                return keep("grouped convolution", dense.nbytes)
            compact = compact_format.encode_conv(dense)
        bias_index = inputs[2] if len(inputs) > 2 else _NO_TENSOR
        if bias_index >= 0:
            bias = tensors[bias_index]
            if (
                bias.type != schema.TensorType.FLOAT32
                or self.model.buffers[bias.buffer].data is None
                or [int(d) for d in bias.shape] != [output_channels]
            ):
                return keep("bias is not a constant float32 vector", dense.nbytes)
        if compact is None:
            return keep("no non-zero weight, or too many patterns", dense.nbytes)
        if compact.num_patterns > self.max_patterns:
            return keep(
                f"{compact.num_patterns} patterns > max_patterns={self.max_patterns}",
                dense.nbytes,
            )
        if compact.nbytes > self.max_size_ratio * dense.nbytes:
            return keep(
                f"compact/dense size {compact.nbytes / dense.nbytes:.2f} > "
                f"max_size_ratio={self.max_size_ratio}",
                dense.nbytes,
            )

        compact_inputs = [
            self._add_constant(subgraph, f"{name}/pattern_masks", compact.pattern_masks),
            self._add_constant(
                subgraph, f"{name}/pattern_run_lengths", compact.pattern_run_lengths
            ),
            self._add_constant(
                subgraph, f"{name}/kernel_input_channels", compact.kernel_input_channels
            ),
            self._add_constant(subgraph, f"{name}/values", compact.values),
        ]
        custom_options = flexbuffers.Dumps(
            {
                "format_version": compact_format.FORMAT_VERSION,
                "input_channels": int(input_channels),
                "output_channels": int(output_channels),
                "stride_h": int(options.strideH),
                "stride_w": int(options.strideW),
                "dilation_h": int(options.dilationHFactor),
                "dilation_w": int(options.dilationWFactor),
                "padding": _PADDING_NAMES[options.padding],
                "fused_activation": activation,
            }
        )
        op_type = (
            compact_format.DEPTHWISE_CONV_OP_NAME if depthwise else compact_format.CONV_OP_NAME
        )
        operator.opcodeIndex = self._custom_opcode(op_type)
        operator.inputs = np.array([inputs[0], *compact_inputs, bias_index], np.int32)
        operator.builtinOptionsType = schema.BuiltinOptions.NONE
        operator.builtinOptions = None
        operator.customOptions = np.frombuffer(bytes(custom_options), np.uint8)
        operator.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
        kept = int(np.count_nonzero(dense))
        self.reports.append(
            LayerReport(
                name,
                op_name,
                True,
                "",
                dense.nbytes,
                compact.nbytes,
                compact.num_patterns,
                kept,
                int(dense.size),
            )
        )
        return inputs[1]

    def _add_constant(self, subgraph, name, array):
        array = np.ascontiguousarray(array)
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(array.tobytes(), np.uint8)
        self.model.buffers.append(buffer)
        tensor = schema.TensorT()
        tensor.shape = np.array(array.shape, np.int32)
        tensor.type = {
            np.dtype(np.uint8): schema.TensorType.UINT8,
            np.dtype(np.uint16): schema.TensorType.UINT16,
            np.dtype(np.float32): schema.TensorType.FLOAT32,
        }[array.dtype]
        tensor.buffer = len(self.model.buffers) - 1
        tensor.name = name.encode()
        subgraph.tensors.append(tensor)
        return len(subgraph.tensors) - 1

    def _custom_opcode(self, op_type):
        if op_type not in self.custom_opcodes:
            code = schema.OperatorCodeT()
            code.builtinCode = schema.BuiltinOperator.CUSTOM
            code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
            code.customCode = op_type.encode()
            code.version = 1
            self.model.operatorCodes.append(code)
            self.custom_opcodes[op_type] = len(self.model.operatorCodes) - 1
        return self.custom_opcodes[op_type]

    # -- dead weights ---------------------------------------------------------

    def _drop_dead_tensors(self, subgraph_index, subgraph, candidates):
        """Removes replaced filters that no operator uses any more."""
        used = set(int(i) for i in subgraph.inputs) | set(int(i) for i in subgraph.outputs)
        for operator in subgraph.operators or []:
            for field in (operator.inputs, operator.outputs, operator.intermediates):
                if field is not None:
                    used.update(int(i) for i in field)
        dead = sorted(candidates - used)
        if not dead:
            return
        for index in dead:
            self.orphaned_buffers.add(subgraph.tensors[index].buffer)
        dead_set = set(dead)
        new_index = {}
        kept_tensors = []
        for index, tensor in enumerate(subgraph.tensors):
            if index not in dead_set:
                new_index[index] = len(kept_tensors)
                kept_tensors.append(tensor)
        subgraph.tensors = kept_tensors

        def remap(indices):
            if indices is None:
                return None
            return np.array(
                [new_index[int(i)] if int(i) >= 0 else int(i) for i in indices], np.int32
            )

        for operator in subgraph.operators or []:
            operator.inputs = remap(operator.inputs)
            operator.outputs = remap(operator.outputs)
            operator.intermediates = remap(operator.intermediates)
        subgraph.inputs = remap(subgraph.inputs)
        subgraph.outputs = remap(subgraph.outputs)
        for signature in self.model.signatureDefs or []:
            if signature.subgraphIndex == subgraph_index:
                for entry in (signature.inputs or []) + (signature.outputs or []):
                    entry.tensorIndex = new_index[entry.tensorIndex]

    def drop_dead_buffers(self):
        """Removes the buffers of removed filters, renumbering the rest."""
        used = {0}
        for subgraph in self.model.subgraphs:
            used.update(tensor.buffer for tensor in subgraph.tensors)
        used.update(metadata.buffer for metadata in self.model.metadata or [])
        used.update(int(i) for i in (self.model.metadataBuffer or []))
        dead = self.orphaned_buffers - used
        if not dead:
            return
        new_index = {}
        kept = []
        for index, buffer in enumerate(self.model.buffers):
            if index not in dead:
                new_index[index] = len(kept)
                kept.append(buffer)
        self.model.buffers = kept
        for subgraph in self.model.subgraphs:
            for tensor in subgraph.tensors:
                tensor.buffer = new_index[tensor.buffer]
        for metadata in self.model.metadata or []:
            metadata.buffer = new_index[metadata.buffer]
        if self.model.metadataBuffer is not None:
            self.model.metadataBuffer = [new_index[int(i)] for i in self.model.metadataBuffer]
