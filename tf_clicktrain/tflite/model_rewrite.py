"""Rewrites a .tflite flatbuffer: pattern-sparse 3x3 convs -> compact custom ops.

Works on the output of TensorFlow's own converter, so BatchNorm folding, fused
activations and the signature are the converter's. Each CONV_2D, and each
DEPTHWISE_CONV_2D with multiplier 1, whose constant 3x3 float32 filter is
pattern-sparse and worth it (see `replace_pattern_convs`) becomes a CUSTOM op
`ClickTrainPatternConv2D` / `ClickTrainPatternDepthwiseConv2D` with inputs
`[input, pattern_masks, kernel_index, values, bias]` (`compact_format`) and
flexbuffer options; the dense filter and its buffer are removed.
Anything else stays as it was.

The rewrite loop is generic: for each builtin operator, the planners
registered for its opcode in `_PLANNERS` each propose a `Rewrite` (a custom
op that could replace it); a chooser (`choose_by_size`, or the speed-based
one in `speed_decision`) picks one or keeps the builtin, and can build a
one-operator .tflite of the builtin and of each candidate to time them.
"""

import copy
import dataclasses

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers

from tf_clicktrain.tflite import compact_format
from tf_clicktrain.tflite import flatbuffer_check

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
        custom_op: the custom op that replaced the layer, or the one that
            was considered and rejected ("" when none could express it).
        decided_by: what made the decision: "size", "speed", "callable"
            (`decide_by`), or "whole-model check" (replaced, then put back
            because the whole file measured slower); "" when no custom op
            could express the layer.
        builtin_us: median time of the builtin operator alone, in
            microseconds, measured at convert time (None when not timed).
        custom_us: the same for the custom op (None when not timed).
        location: `(subgraph index, operator index)` in the file.
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
    custom_op: str = ""
    decided_by: str = ""
    builtin_us: float | None = None
    custom_us: float | None = None
    location: tuple = ()


@dataclasses.dataclass(frozen=True)
class Rewrite:
    """A custom op that can replace one builtin operator.

    Attributes:
        custom_op: the custom op's name.
        report: the layer's `LayerReport` if this rewrite is applied.
        timing_key: hashable; rewrites with equal keys (same op, shapes,
            options and sparsity structure) run equally fast, so one timing
            serves them all.
        apply: `apply(editor, subgraph, operator)` rewrites `operator` in
            place (new constants through the `ModelEditor`) and returns the
            indices of tensors the operator no longer uses.
    """

    custom_op: str
    report: LayerReport
    timing_key: tuple
    apply: object


@dataclasses.dataclass(frozen=True)
class Choice:
    """A chooser's verdict on one operator.

    Attributes:
        rewrite: the `Rewrite` to apply, or None to keep the builtin.
        considered: the best rejected rewrite when `rewrite` is None.
        decided_by: see `LayerReport.decided_by`.
        reason: why the builtin was kept ("" when replaced).
        builtin_us, custom_us: measured times, if any.
    """

    rewrite: Rewrite | None
    decided_by: str
    considered: Rewrite | None = None
    reason: str = ""
    builtin_us: float | None = None
    custom_us: float | None = None


@dataclasses.dataclass(frozen=True)
class PlanLimits:
    """Limits every planner applies before proposing a rewrite."""

    max_patterns: int
    max_size_ratio: float


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


def replace_pattern_convs(
    tflite_bytes, *, max_patterns=64, max_size_ratio=0.8, choose=None
):
    """Replaces pattern-sparse 3x3 convolutions by compact custom ops.

    A convolution is a candidate when its filter is a constant float32 3x3
    filter, its input and output are float32, its fused activation is NONE,
    RELU, RELU_N1_TO_1 or RELU6, its non-zero positions form at most
    `max_patterns` distinct patterns, and its compact tensors take at most
    `max_size_ratio` of the dense filter's bytes. `choose` then decides
    whether a candidate is replaced; by default every candidate is (the
    decision by size).

    Args:
        tflite_bytes: a .tflite model (bytes), e.g. from `TFLiteConverter`.
        max_patterns: largest pattern table a replaced layer may have.
        max_size_ratio: largest compact/dense weight-size ratio worth
            replacing.
        choose: None (`choose_by_size`) or a callable taking an
            `OperatorCandidates` and returning a `Choice`, e.g.
            `speed_decision.SpeedChooser`.

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
    flatbuffer_check.check_model(tflite_bytes)
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    flatbuffer_check.check_indices(model)
    if any(buffer.offset for buffer in model.buffers or []):
        # Weights stored outside the flatbuffer (models over 2 GB): not handled.
        return tflite_bytes, []

    rewriter = _Rewriter(
        model, PlanLimits(max_patterns, max_size_ratio), choose or choose_by_size
    )
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
    """Returns how many ClickTrain custom ops a .tflite model holds.

    Pattern convs (3x3, depthwise, int8 3x3, int8 depthwise) and sparse 1x1
    convs are counted.

    Raises:
        ValueError: if `tflite_bytes` is not a well-formed TFLite model.
    """
    tflite_bytes = bytes(tflite_bytes)
    flatbuffer_check.check_model(tflite_bytes)
    model = schema.Model.GetRootAs(tflite_bytes, 0)
    ours = {
        index
        for index in range(model.OperatorCodesLength())
        if flatbuffer_check.custom_code(model.OperatorCodes(index), index)
        in (
            compact_format.CONV_OP_NAME,
            compact_format.DEPTHWISE_CONV_OP_NAME,
            pointwise_format.OP_NAME,
            int8_pattern_rewrite.OP_NAME,
            int8_pattern_rewrite.DEPTHWISE_OP_NAME,
        )
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


def _report_of(choice, location):
    chosen = choice.rewrite or choice.considered
    return dataclasses.replace(
        chosen.report,
        replaced=choice.rewrite is not None,
        reason=choice.reason,
        decided_by=choice.decided_by,
        builtin_us=choice.builtin_us,
        custom_us=choice.custom_us,
        location=location,
    )


def choose_by_size(candidates):
    """Replaces every candidate: the smallest rewrite of an operator wins."""
    smallest = min(candidates.rewrites, key=lambda rewrite: rewrite.report.compact_weight_bytes)
    return Choice(rewrite=smallest, decided_by="size")


class OperatorCandidates:
    """One builtin operator and the rewrites proposed for it.

    Given to a chooser. `builtin_model()` and `rewrite_model(rewrite)` build
    one-operator .tflite files (the operator's constant inputs copied, its
    other inputs made graph inputs) to time the candidates against each
    other.

    Attributes:
        name: the layer's name (its weight tensor's).
        op: the builtin operator's name, e.g. "CONV_2D".
        location: `(subgraph index, operator index)` in the file.
        rewrites: the proposed `Rewrite`s (at least one).
    """

    def __init__(self, model, subgraph, operator, location, rewrites):
        self._model = model
        self._subgraph = subgraph
        self._operator = operator
        self.location = location
        self.rewrites = list(rewrites)
        self.name = self.rewrites[0].report.name
        self.op = self.rewrites[0].report.op

    def builtin_model(self):
        """The builtin operator alone, as .tflite bytes."""
        return _pack(single_operator_model(self._model, self._subgraph, self._operator))

    def rewrite_model(self, rewrite):
        """The operator alone with `rewrite` applied, as .tflite bytes."""
        model = single_operator_model(self._model, self._subgraph, self._operator)
        (subgraph,) = model.subgraphs
        (operator,) = subgraph.operators
        rewrite.apply(ModelEditor(model), subgraph, operator)
        # Extracting again leaves out the tensors the rewrite freed.
        return _pack(single_operator_model(model, subgraph, operator))


def single_operator_model(model, subgraph, operator):
    """A `ModelT` holding only `operator` from `subgraph` of `model`.

    Constant inputs keep their data; every other input becomes a graph
    input, every output a graph output.
    """
    single = schema.ModelT()
    single.version = model.version
    single.buffers = [schema.BufferT()]  # Buffer 0: the empty sentinel.
    single.operatorCodes = [copy.deepcopy(model.operatorCodes[operator.opcodeIndex])]
    new_subgraph = schema.SubGraphT()
    new_subgraph.tensors = []
    new_index = {}

    def take(index):
        index = int(index)
        if index < 0:
            return index
        if index not in new_index:
            tensor = copy.deepcopy(subgraph.tensors[index])
            data = model.buffers[tensor.buffer].data if tensor.buffer else None
            tensor.buffer = 0
            if data is not None:
                buffer = schema.BufferT()
                buffer.data = data
                single.buffers.append(buffer)
                tensor.buffer = len(single.buffers) - 1
            new_index[index] = len(new_subgraph.tensors)
            new_subgraph.tensors.append(tensor)
        return new_index[index]

    new_operator = copy.deepcopy(operator)
    new_operator.opcodeIndex = 0
    new_operator.inputs = np.array([take(i) for i in operator.inputs], np.int32)
    new_operator.outputs = np.array([take(i) for i in operator.outputs], np.int32)
    new_operator.intermediates = None
    new_subgraph.inputs = np.array(
        [
            i
            for i in new_operator.inputs
            if i >= 0 and single.buffers[new_subgraph.tensors[i].buffer].data is None
        ],
        np.int32,
    )
    new_subgraph.outputs = new_operator.outputs.copy()
    new_subgraph.operators = [new_operator]
    single.subgraphs = [new_subgraph]
    return single


def _pack(model):
    model.buffers = [_as_aligned(buffer) for buffer in model.buffers]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())


class ModelEditor:
    """Adds constants and custom opcodes to a `ModelT`, for `Rewrite.apply`."""

    def __init__(self, model):
        self.model = model
        self._custom_opcodes = {}

    def add_constant(self, subgraph, name, array):
        """Appends a constant tensor holding `array`; returns its index."""
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
            np.dtype(np.int8): schema.TensorType.INT8,
            np.dtype(np.int32): schema.TensorType.INT32,
        }[array.dtype]
        tensor.buffer = len(self.model.buffers) - 1
        tensor.name = name.encode()
        subgraph.tensors.append(tensor)
        return len(subgraph.tensors) - 1

    def custom_opcode(self, op_type):
        """Index of the CUSTOM opcode named `op_type`, added if new."""
        if op_type not in self._custom_opcodes:
            code = schema.OperatorCodeT()
            code.builtinCode = schema.BuiltinOperator.CUSTOM
            code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
            code.customCode = op_type.encode()
            code.version = 1
            self.model.operatorCodes.append(code)
            self._custom_opcodes[op_type] = len(self.model.operatorCodes) - 1
        return self._custom_opcodes[op_type]

    def make_custom(self, operator, op_type, inputs, custom_options):
        """Turns `operator` into the CUSTOM op `op_type` in place.

        Args:
            operator: the `OperatorT` to rewrite.
            op_type: the custom op's name.
            inputs: its tensor indices, in the custom op's order.
            custom_options: its flexbuffer options, as bytes.
        """
        operator.opcodeIndex = self.custom_opcode(op_type)
        operator.inputs = np.array(inputs, np.int32)
        operator.builtinOptionsType = schema.BuiltinOptions.NONE
        operator.builtinOptions = None
        operator.customOptions = np.frombuffer(bytes(custom_options), np.uint8)
        operator.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS


# -- what the planners share -----------------------------------------------------


def conv_operands(subgraph, operator):
    """`(inputs, outputs, filter tensor, filter shape)` of a convolution.

    The inputs and outputs as lists of tensor indices; None when the
    operator has no filter input or not exactly one output.
    """
    inputs = [int(index) for index in operator.inputs]
    outputs = [int(index) for index in operator.outputs]
    if len(inputs) < 2 or len(outputs) != 1 or inputs[1] < 0:
        return None
    filter_tensor = subgraph.tensors[inputs[1]]
    return inputs, outputs, filter_tensor, tuple(int(d) for d in filter_tensor.shape)


def bias_input(inputs):
    """The bias tensor index among a convolution's inputs, or `_NO_TENSOR`."""
    return inputs[2] if len(inputs) > 2 else _NO_TENSOR


def is_constant_vector(model, subgraph, index, tensor_type, length):
    """Whether tensor `index` is a constant `tensor_type` vector of `length`."""
    tensor = subgraph.tensors[index]
    return (
        tensor.type == tensor_type
        and model.buffers[tensor.buffer].data is not None
        and [int(d) for d in tensor.shape] == [length]
    )


def add_compact_constants(editor, subgraph, name, compact, values):
    """Adds the pattern-conv ops' compact tensors; returns their indices.

    `[pattern_masks, kernel_index, values]`, from `compact`
    (`compact_format`) but with `values` (float32 or int8).
    """
    return [
        editor.add_constant(subgraph, f"{name}/pattern_masks", compact.pattern_masks),
        editor.add_constant(subgraph, f"{name}/kernel_index", compact.kernel_index),
        editor.add_constant(subgraph, f"{name}/values", values),
    ]


def pattern_conv_options(input_channels, output_channels, options, activation):
    """The flexbuffer options (bytes) of the pattern-conv ops, float and int8.

    Args:
        input_channels, output_channels: the convolution's channels.
        options: the builtin operator's `Conv2DOptionsT` or
            `DepthwiseConv2DOptionsT`.
        activation: the fused activation's name (`_ACTIVATION_NAMES`).
    """
    return bytes(
        flexbuffers.Dumps(
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
    )


# -- the pattern-conv planners ---------------------------------------------------


def plan_pattern_conv(model, subgraph, operator, limits):
    """Plans a CONV_2D as a `ClickTrainPatternConv2D` (see `_plan_pattern`)."""
    return _plan_pattern(model, subgraph, operator, limits, depthwise=False)


def plan_pattern_depthwise_conv(model, subgraph, operator, limits):
    """Plans a DEPTHWISE_CONV_2D as a `ClickTrainPatternDepthwiseConv2D`."""
    return _plan_pattern(model, subgraph, operator, limits, depthwise=True)


def _plan_pattern(model, subgraph, operator, limits, depthwise):
    """A `Rewrite`, a kept `LayerReport`, or None for a non-3x3 operator."""
    op_name = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
    operands = conv_operands(subgraph, operator)
    if operands is None:
        return None
    inputs, outputs, filter_tensor, shape = operands
    tensors = subgraph.tensors
    if len(shape) != 4 or shape[1:3] != (3, 3):
        return None  # Not a 3x3 convolution: not ours to report.
    name = (filter_tensor.name or b"").decode(errors="replace")

    def keep(reason, dense_bytes=0):
        return LayerReport(name, op_name, False, reason, dense_bytes)

    filter_data = model.buffers[filter_tensor.buffer].data
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
    bias_index = bias_input(inputs)
    if bias_index >= 0 and not is_constant_vector(
        model, subgraph, bias_index, schema.TensorType.FLOAT32, output_channels
    ):
        return keep("bias is not a constant float32 vector", dense.nbytes)
    if compact is None:
        return keep("no non-zero weight, or too many patterns", dense.nbytes)
    if compact.num_patterns > limits.max_patterns:
        return keep(
            f"{compact.num_patterns} patterns > max_patterns={limits.max_patterns}",
            dense.nbytes,
        )
    if compact.nbytes > limits.max_size_ratio * dense.nbytes:
        return keep(
            f"compact/dense size {compact.nbytes / dense.nbytes:.2f} > "
            f"max_size_ratio={limits.max_size_ratio}",
            dense.nbytes,
        )

    custom_options = pattern_conv_options(input_channels, output_channels, options, activation)
    op_type = compact_format.DEPTHWISE_CONV_OP_NAME if depthwise else compact_format.CONV_OP_NAME

    def apply(editor, target_subgraph, target_operator):
        compact_inputs = add_compact_constants(
            editor, target_subgraph, name, compact, compact.values
        )
        target_inputs = [int(index) for index in target_operator.inputs]
        editor.make_custom(
            target_operator,
            op_type,
            [target_inputs[0], *compact_inputs, bias_input(target_inputs)],
            custom_options,
        )
        return [target_inputs[1]]

    report = LayerReport(
        name,
        op_name,
        True,
        "",
        dense.nbytes,
        compact.nbytes,
        compact.num_patterns,
        int(np.count_nonzero(dense)),
        int(dense.size),
        custom_op=op_type,
    )
    timing_key = (
        op_type,
        tuple(input_shape),
        shape,
        custom_options,
        bias_index >= 0,
        compact.num_patterns,
        compact.num_kernels,
        int(compact.values.size),
    )
    return Rewrite(op_type, report, timing_key, apply)


from tf_clicktrain.tflite import pointwise_format  # noqa: E402
from tf_clicktrain.tflite import pointwise_rewrite  # noqa: E402  (imports this module)
from tf_clicktrain.tflite import int8_pattern_rewrite  # noqa: E402  (imports this module)

# Planners by builtin opcode. A planner `(model, subgraph, operator, limits)`
# returns a `Rewrite`, a `LayerReport` saying why the operator stays builtin,
# or None when the operator is not of its kind.
_PLANNERS = {
    schema.BuiltinOperator.CONV_2D: (
        int8_pattern_rewrite.plan_int8_pattern_conv,
        plan_pattern_conv,
        pointwise_rewrite.plan_sparse_conv1x1,
    ),
    schema.BuiltinOperator.DEPTHWISE_CONV_2D: (
        int8_pattern_rewrite.plan_int8_pattern_depthwise_conv,
        plan_pattern_depthwise_conv,
    ),
}


class _Rewriter:
    """Edits one model in place; see `replace_pattern_convs`."""

    def __init__(self, model, limits, choose):
        self.model = model
        self.limits = limits
        self.choose = choose
        self.editor = ModelEditor(model)
        self.reports = []
        self.orphaned_buffers = set()

    # -- one subgraph -------------------------------------------------------

    def rewrite_subgraph(self, subgraph_index, subgraph):
        orphaned_tensors = set()
        for operator_index, operator in enumerate(subgraph.operators or []):
            code = _builtin_code(self.model.operatorCodes[operator.opcodeIndex])
            location = (subgraph_index, operator_index)
            rewrites, kept = [], None
            for planner in _PLANNERS.get(code, ()):
                plan = planner(self.model, subgraph, operator, self.limits)
                if isinstance(plan, Rewrite):
                    rewrites.append(plan)
                elif plan is not None and kept is None:
                    kept = plan
            if not rewrites:
                if kept is not None:
                    self.reports.append(dataclasses.replace(kept, location=location))
                continue
            choice = self.choose(
                OperatorCandidates(self.model, subgraph, operator, location, rewrites)
            )
            self.reports.append(_report_of(choice, location))
            if choice.rewrite is not None:
                orphaned_tensors.update(choice.rewrite.apply(self.editor, subgraph, operator))
        self._drop_dead_tensors(subgraph_index, subgraph, orphaned_tensors)


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
