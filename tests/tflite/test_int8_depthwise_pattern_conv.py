"""The int8 pattern depthwise conv (`ClickTrainPatternDepthwiseConv2DInt8`).

In a full-integer file (QAT model, or float model with
representative_dataset), pattern-sparse DepthwiseConv2D layers become the
custom op, which computes exactly what LiteRT's reference int8
DEPTHWISE_CONV_2D computes on the builtin-only file, on every kernel
variant and thread count; the speed decision keeps a layer builtin where
XNNPACK measured faster; corrupted options, weights and quantization are
refused with an error naming what is wrong.
"""

import os
import subprocess
import sys

import flatbuffers
import keras
import numpy as np
import pytest
from ai_edge_litert import interpreter as litert_interpreter
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers

from tflite_helpers import load_in_subprocess
from tflite_helpers import set_buffer
from tflite_helpers import set_options
import tf_clicktrain as ct
from tf_clicktrain.tflite import converter
from tf_clicktrain.tflite import int8_pattern_rewrite
from tf_clicktrain.tflite import native_library

OP_NAME = int8_pattern_rewrite.DEPTHWISE_OP_NAME
# Operator inputs (include/clicktrain/pattern_conv_s8.h).
PATTERN_MASKS, KERNEL_INDEX, VALUES, BIAS, FILTER_SCALES = range(1, 6)
# The shared compact format spends a byte per channel and pattern; these
# tests are about the op, not about when it is worth its size.
SIZE_RATIO = 4.0


def _sparsify(layer, rng, removed=0.3):
    """Each channel keeps one of 4 patterns of 4 taps, or loses its kernel."""
    channels = layer.kernel.shape[2]
    library = np.zeros((4, 9), np.float32)
    np.put_along_axis(library, np.argsort(rng.random((4, 9)), axis=1)[:, :4], 1.0, axis=1)
    keep = library[rng.integers(0, 4, channels)] * (rng.random(channels) >= removed)[:, None]
    layer.kernel.assign(layer.kernel.numpy() * keep.T.reshape(3, 3, channels, 1))
    layer.bias.assign(rng.normal(0, 0.3, channels).astype("float32"))


def _depthwise_model(rng, shape=(15, 13, 40)):
    """Strides 1 and 2, SAME and VALID, RELU6 / RELU / none; 40 channels:
    two full groups of 16 and a partial one. (TensorFlow's converter writes
    a Keras dilated depthwise conv as SPACE_TO_BATCH_ND + DEPTHWISE_CONV_2D
    + BATCH_TO_SPACE_ND: dilation is tested on an edited file.)"""
    model = keras.Sequential([
        keras.Input(shape, name="image"),
        keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6"),
        keras.layers.DepthwiseConv2D(3, strides=2, padding="valid"),
        keras.layers.DepthwiseConv2D(3, padding="same", activation="relu"),
        keras.layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu6"),
    ])
    for layer in model.layers:
        _sparsify(layer, rng)
    return model


def _io(io_type):
    return dict(inference_input_type=io_type, inference_output_type=io_type)


def _convert_both(model, io_type="int8", **kwargs):
    builtin = ct.tflite.convert(model, custom_ops=False, **_io(io_type), **kwargs)
    custom, reports = ct.tflite.convert(model, decide_by="size", max_size_ratio=SIZE_RATIO,
                                        return_report=True, **_io(io_type), **kwargs)
    return builtin, custom, reports


def _run(interpreter, inputs):
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(inputs.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, inputs)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _reference(tflite_bytes, inputs):
    return _run(litert_interpreter.Interpreter(
        model_content=tflite_bytes,
        experimental_op_resolver_type=litert_interpreter.OpResolverType.BUILTIN_REF), inputs)


@pytest.fixture(scope="module")
def qat_files():
    rng = np.random.default_rng(3)
    qat = ct.quantize_model(_depthwise_model(rng))
    qat(rng.normal(0, 1, (16, 15, 13, 40)).astype("float32"), training=True)
    return _convert_both(qat)


def test_qat_file_matches_litert_reference_depthwise_bit_for_bit(qat_files):
    builtin, custom, reports = qat_files
    assert [report.custom_op for report in reports] == [OP_NAME] * 4
    assert all(report.replaced and report.decided_by == "size" for report in reports), reports
    assert all(report.op == "DEPTHWISE_CONV_2D" for report in reports)
    assert ct.tflite.count_pattern_ops(custom) == 4
    inputs = np.random.default_rng(5).integers(-128, 128, (2, 15, 13, 40)).astype(np.int8)
    expected = _reference(builtin, inputs)
    for threads in (1, 2):
        actual = _run(ct.tflite.Interpreter(model_content=custom, num_threads=threads), inputs)
        assert actual.dtype == np.int8
        np.testing.assert_array_equal(actual, expected, err_msg=f"{threads} threads")


def test_post_training_quantized_file_matches_litert_reference():
    rng = np.random.default_rng(8)
    model = keras.Sequential([
        keras.Input((10, 10, 24)),
        keras.layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu6"),
        keras.layers.DepthwiseConv2D(3, padding="valid"),
    ])
    for layer in model.layers:
        _sparsify(layer, rng, removed=0.0)
    calibration = rng.normal(0, 1, (8, 1, 10, 10, 24)).astype(np.float32)

    def representative_dataset():
        for image in calibration:
            yield [image]

    builtin, custom, reports = _convert_both(
        model, io_type="float32", representative_dataset=representative_dataset)
    assert [report.replaced for report in reports] == [True, True], reports
    assert ct.tflite.count_pattern_ops(custom) == 2
    images = rng.normal(0, 1, (3, 10, 10, 24)).astype(np.float32)
    np.testing.assert_array_equal(
        _run(ct.tflite.Interpreter(model_content=custom, num_threads=1), images),
        _reference(builtin, images))


@pytest.mark.parametrize("dilation", [(2, 2), (3, 2)])
def test_dilated_layer_matches_litert_reference(qat_files, dilation):
    builtin, _, _ = qat_files

    def dilate(model):
        for operator in model.subgraphs[0].operators:
            if model.operatorCodes[operator.opcodeIndex].builtinCode == (
                    schema.BuiltinOperator.DEPTHWISE_CONV_2D):
                options = operator.builtinOptions
                if options.padding == schema.Padding.SAME:  # output shapes unchanged
                    options.dilationHFactor, options.dilationWFactor = dilation

    model = schema.ModelT.InitFromPackedBuf(builtin, 0)
    dilate(model)
    builder = flatbuffers.Builder(len(builtin))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dilated = bytes(builder.Output())
    custom, reports = converter.rewrite_builtin_file(
        dilated, decide_by="size", max_size_ratio=SIZE_RATIO)
    assert ct.tflite.count_pattern_ops(custom) == 4, reports
    inputs = np.random.default_rng(6).integers(-128, 128, (1, 15, 13, 40)).astype(np.int8)
    np.testing.assert_array_equal(
        _run(ct.tflite.Interpreter(model_content=custom, num_threads=2), inputs),
        _reference(dilated, inputs))


def test_file_with_both_int8_pattern_ops_matches_litert_reference():
    # A 3x3 conv then a depthwise conv, each its int8 custom op. (No
    # builtin conv after them: XNNPACK's int8 conv, which runs builtins in
    # ct.tflite.Interpreter, may differ from the reference kernel by 1.)
    rng = np.random.default_rng(12)
    model = keras.Sequential([
        keras.Input((12, 12, 8)),
        keras.layers.Conv2D(24, 3, padding="same", activation="relu6"),
        keras.layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu6"),
    ])
    conv, depthwise = model.layers[0], model.layers[1]
    _sparsify(depthwise, rng)
    keep = np.zeros((3, 3, 8, 24), np.float32)
    keep[1, :, :, :] = 1.0  # one 3-tap pattern in every kernel
    conv.kernel.assign(conv.kernel.numpy() * keep)
    qat = ct.quantize_model(model)
    qat(rng.normal(0, 1, (16, 12, 12, 8)).astype("float32"), training=True)
    builtin, custom, reports = _convert_both(qat)
    replaced = sorted(report.custom_op for report in reports if report.replaced)
    assert replaced == [int8_pattern_rewrite.OP_NAME, OP_NAME], reports
    inputs = rng.integers(-128, 128, (1, 12, 12, 8)).astype(np.int8)
    np.testing.assert_array_equal(
        _run(ct.tflite.Interpreter(model_content=custom, num_threads=1), inputs),
        _reference(builtin, inputs))


def test_custom_ops_false_keeps_builtin_depthwise(qat_files):
    builtin, _, _ = qat_files
    assert ct.tflite.count_pattern_ops(builtin) == 0


def test_dense_int8_depthwise_stays_builtin_with_a_reason():
    model = keras.Sequential([keras.Input((6, 6, 8)), keras.layers.DepthwiseConv2D(3)])
    qat = ct.quantize_model(model)
    qat(np.random.default_rng(0).normal(0, 1, (8, 6, 6, 8)).astype("float32"), training=True)
    _, reports = ct.tflite.convert(qat, decide_by="size", return_report=True)
    (report,) = reports
    assert not report.replaced
    assert report.custom_op == OP_NAME
    assert "max_size_ratio" in report.reason


def test_depth_multiplier_2_stays_builtin():
    model = keras.Sequential([
        keras.Input((6, 6, 4)), keras.layers.DepthwiseConv2D(3, depth_multiplier=2)])
    keep = np.zeros((3, 3, 4, 2), np.float32)
    keep[1] = 1.0  # the middle row of every kernel: one pattern
    layer = model.layers[0]
    layer.kernel.assign(layer.kernel.numpy() * keep)
    qat = ct.quantize_model(model)
    qat(np.random.default_rng(0).normal(0, 1, (8, 6, 6, 4)).astype("float32"), training=True)
    tflite_bytes, reports = ct.tflite.convert(qat, decide_by="size",
                                              max_size_ratio=SIZE_RATIO, return_report=True)
    (report,) = reports
    assert not report.replaced
    assert report.reason == "depth multiplier is not 1"
    assert ct.tflite.count_pattern_ops(tflite_bytes) == 0


class _OpCostTimer:
    """Times a file as a fixed cost per operator kind (custom ops by name)."""

    def __init__(self, costs):
        self.costs = costs

    def __call__(self, models):
        timings = {}
        for name, content in models.items():
            model = schema.ModelT.InitFromPackedBuf(content, 0)
            total = 0.0
            for operator in model.subgraphs[0].operators:
                code = model.operatorCodes[operator.opcodeIndex]
                kind = code.customCode.decode() if code.customCode else "builtin"
                total += self.costs[kind]
            timings[name] = [total * 1e-6]
        return timings


@pytest.mark.parametrize("custom_cost, replaced", [(0.5, True), (2.0, False)])
def test_speed_decision_replaces_only_where_the_custom_op_measured_faster(
        qat_files, custom_cost, replaced):
    builtin, _, _ = qat_files
    timer = _OpCostTimer({"builtin": 1.0, OP_NAME: custom_cost})
    tflite_bytes, reports = converter.rewrite_builtin_file(
        builtin, max_size_ratio=SIZE_RATIO, layer_timer=timer, model_timer=timer)
    assert [report.replaced for report in reports] == [replaced] * 4
    assert all(report.decided_by == "speed" for report in reports)
    assert ct.tflite.count_pattern_ops(tflite_bytes) == (4 if replaced else 0)


_VARIANT_CHILD = r"""
import sys
import numpy as np
from ai_edge_litert import interpreter as litert
model_path, inputs_path, threads, library = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
interpreter = litert.Interpreter(model_path=model_path,
                                 experimental_delegates=[litert.load_delegate(library)],
                                 num_threads=threads)
inputs = np.load(inputs_path)
index = interpreter.get_input_details()[0]["index"]
interpreter.resize_tensor_input(index, list(inputs.shape))
interpreter.allocate_tensors()
interpreter.set_tensor(index, inputs)
interpreter.invoke()
np.save(inputs_path + ".out.npy",
        interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
"""


def _depthwise_variants_for_this_cpu():
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    variants = ["scalar"]
    if " avx2" in flags:
        variants.append("avx2")
    if all(f" {flag}" in flags for flag in ("avx512f", "avx512bw", "avx512vl", "avx512_vnni")):
        variants.append("avx512")
    if os.uname().machine == "aarch64":
        variants.append("neon")
    return variants


def test_every_kernel_variant_matches_litert_reference_bit_for_bit(tmp_path, qat_files):
    # Each variant is chosen once per process: each runs in a child loading
    # only LiteRT, on 1 and 2 threads.
    builtin, custom, _ = qat_files
    inputs = np.random.default_rng(9).integers(-128, 128, (2, 15, 13, 40)).astype(np.int8)
    expected = _reference(builtin, inputs)
    model_path, inputs_path = tmp_path / "custom.tflite", tmp_path / "inputs.npy"
    model_path.write_bytes(custom)
    np.save(inputs_path, inputs)
    for variant in _depthwise_variants_for_this_cpu():
        for threads in (1, 2):
            completed = subprocess.run(
                [sys.executable, "-c", _VARIANT_CHILD, str(model_path), str(inputs_path),
                 str(threads), native_library.library_path()],
                capture_output=True, text=True, timeout=120,
                env=dict(os.environ, TF_CLICKTRAIN_KERNELS=variant, TF_CPP_MIN_LOG_LEVEL="3"))
            assert completed.returncode == 0, completed.stderr[-2000:]
            actual = np.load(str(inputs_path) + ".out.npy")
            np.testing.assert_array_equal(actual, expected, err_msg=f"{variant}, {threads} threads")


# -- corrupted files -----------------------------------------------------------


@pytest.fixture(scope="module")
def single_layer_bytes():
    # Float I/O so that load_models.py can feed it; 16 channels.
    rng = np.random.default_rng(4)
    model = keras.Sequential([
        keras.Input((8, 8, 16)), keras.layers.DepthwiseConv2D(3, padding="same")])
    _sparsify(model.layers[0], rng, removed=0.0)
    qat = ct.quantize_model(model)
    qat(rng.normal(0, 1, (8, 8, 8, 16)).astype("float32"), training=True)
    _, custom, reports = _convert_both(qat, io_type="float32")
    assert ct.tflite.count_pattern_ops(custom) == 1, reports
    return custom


def _edit(tflite_bytes, change):
    """`change(model, operator)` applied to the file's custom op."""
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    (operator,) = [
        op for op in model.subgraphs[0].operators
        if model.operatorCodes[op.opcodeIndex].customCode == OP_NAME.encode()
    ]
    change(model, operator)
    builder = flatbuffers.Builder(len(tflite_bytes))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _with_options(**changes):
    def change(_, operator):
        options = flexbuffers.Loads(bytes(operator.customOptions))
        operator.customOptions = np.frombuffer(
            bytes(flexbuffers.Dumps({**options, **changes})), np.uint8)

    return change


def _index_one_byte_short(model, operator):
    tensor = model.subgraphs[0].tensors[operator.inputs[KERNEL_INDEX]]
    buffer = model.buffers[tensor.buffer]
    buffer.data = buffer.data[:-1]
    tensor.shape = np.array([len(buffer.data)], np.int32)


def _values_one_short(model, operator):
    tensor = model.subgraphs[0].tensors[operator.inputs[VALUES]]
    buffer = model.buffers[tensor.buffer]
    buffer.data = buffer.data[:-1]
    tensor.shape = np.array([len(buffer.data)], np.int32)


def test_corrupted_options_weights_and_quantization_give_clean_errors(
        tmp_path, single_layer_bytes):
    cases = {
        "format_version_3": (_with_options(format_version=3), "format_version"),
        "output_channels_wrong": (_with_options(output_channels=8), "input_channels == output_channels"),
        "channels_differ": (_with_options(input_channels=32), "input_channels == output_channels"),
        "stride_zero": (_with_options(stride_h=0), "stride_h"),
        "padding_unknown": (_with_options(padding="FULL"), "padding"),
        "options_garbage": (set_options(b"\x01\x02\x03"), "options"),
        "gap_bits_32": (set_buffer(KERNEL_INDEX, lambda d: b"\x20" + d[1:]), "gap_bits"),
        "index_one_byte_short": (_index_one_byte_short, "kernel_index ends"),
        "values_one_short": (_values_one_short, "values must have"),
        "bias_as_float": (
            set_buffer(BIAS, lambda d: d, tensor_type=schema.TensorType.FLOAT32), "bias"),
        "scale_zero": (
            set_buffer(FILTER_SCALES, lambda d: np.float32(0).tobytes() + d[4:]),
            "filter_scales[0]"),
        "scale_nan": (
            set_buffer(FILTER_SCALES, lambda d: np.float32(np.nan).tobytes() + d[4:]),
            "filter_scales[0]"),
    }
    models = {name: _edit(single_layer_bytes, change) for name, (change, _) in cases.items()}
    models["unchanged"] = single_layer_bytes
    results = load_in_subprocess(tmp_path, models)
    assert results["unchanged"]["outcome"] == "ok", results["unchanged"]
    for name, (_, expected_text) in cases.items():
        assert results[name]["outcome"] == "error", f"{name} was accepted"
        assert expected_text in results[name]["message"], (name, results[name]["message"])
        assert "ClickTrainPatternDepthwiseConv2DInt8" in results[name]["message"] or (
            name == "options_garbage"), (name, results[name]["message"])
