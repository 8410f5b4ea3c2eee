"""The int8 pattern conv (`ClickTrainPatternConv2DInt8`) end to end.

A QAT model's int8 file with its pattern-sparse 3x3 convs rewritten to the
custom op (decide_by="size") computes exactly what the builtin-only int8 file
computes on LiteRT's reference kernels, and what `int8_conv_reference` says;
the file is smaller; corrupted options, weights and quantization are refused
with an error naming what is wrong.
"""

import json
import os
import re
import subprocess
import sys

import flatbuffers
import keras
import numpy as np
import pytest
from ai_edge_litert import interpreter as litert_interpreter
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers

import int8_conv_reference as reference
from tflite_helpers import set_buffer
import tf_clicktrain as ct
from tf_clicktrain.tflite import int8_pattern_rewrite
from tf_clicktrain.tflite import model_rewrite
from tf_clicktrain.tflite import native_library

# Operator inputs of the custom op (include/clicktrain/pattern_conv_s8.h).
PATTERN_MASKS, KERNEL_INDEX, VALUES, BIAS, FILTER_SCALES = range(1, 6)


def _pattern_model(stride, padding, activation, seed, channels=(8, 16), size=9, taps=4,
                   kept=0.5):
    rng = np.random.default_rng(seed)
    in_channels, out_channels = channels
    model = keras.Sequential([
        keras.Input((size, size, in_channels), name="image"),
        keras.layers.Conv2D(out_channels, 3, strides=stride, padding=padding,
                            activation=activation),
    ])
    conv = model.layers[0]
    kernels = in_channels * out_channels
    # A library of 4 patterns of 4 taps, as pattern pruning leaves it.
    library = np.zeros((4, 9), np.float32)
    np.put_along_axis(library, np.argsort(rng.random((4, 9)), axis=1)[:, :taps], 1.0, axis=1)
    keep = library[rng.integers(0, 4, kernels)]
    keep *= (rng.random(kernels) < kept)[:, None]
    keep = keep.reshape(in_channels, out_channels, 3, 3).transpose(2, 3, 0, 1)
    conv.kernel.assign(conv.kernel.numpy() * keep)
    conv.bias.assign(rng.normal(0, 0.2, out_channels).astype("float32"))
    qat = ct.quantize_model(model)
    qat(rng.normal(0, 1, (32, size, size, in_channels)).astype("float32"), training=True)
    return qat


def _convert_both(qat, io_type="int8"):
    builtin = ct.tflite.convert(qat, custom_ops=False, inference_input_type=io_type,
                                inference_output_type=io_type)
    custom, reports = ct.tflite.convert(qat, decide_by="size", inference_input_type=io_type,
                                        inference_output_type=io_type, return_report=True)
    return builtin, custom, reports


def _run(interpreter, inputs):
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(inputs.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, inputs)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _reference_kernels(tflite_bytes):
    return litert_interpreter.Interpreter(
        model_content=tflite_bytes,
        experimental_op_resolver_type=litert_interpreter.OpResolverType.BUILTIN_REF)


@pytest.mark.parametrize("stride, padding, activation", [
    (1, "same", "relu"), (2, "same", None), (1, "valid", "relu6"), (2, "valid", "relu")])
def test_custom_op_matches_litert_reference_conv_bit_for_bit(stride, padding, activation):
    qat = _pattern_model(stride, padding, activation, seed=stride + len(padding))
    builtin, custom, reports = _convert_both(qat)
    (report,) = reports
    assert report.replaced and report.custom_op == int8_pattern_rewrite.OP_NAME, report
    assert report.decided_by == "size"
    assert ct.tflite.count_pattern_ops(custom) == 1
    inputs = np.random.default_rng(5).integers(-128, 128, (2, 9, 9, 8)).astype(np.int8)
    expected = _run(_reference_kernels(builtin), inputs)
    actual = _run(ct.tflite.Interpreter(model_content=custom, num_threads=1), inputs)
    assert actual.dtype == np.int8
    np.testing.assert_array_equal(actual, expected)


def test_custom_op_matches_numpy_oracle_on_the_files_own_operands():
    qat = _pattern_model(1, "same", None, seed=11, channels=(300, 5), size=6)
    builtin, custom, _ = _convert_both(qat)
    # 13.5 kB of dense int8 weights; file-level overhead is a few hundred bytes.
    assert len(custom) < 0.5 * len(builtin)
    model = schema.ModelT.InitFromPackedBuf(builtin, 0)
    (subgraph,) = model.subgraphs
    (operator,) = subgraph.operators
    data_input, filters, bias = (subgraph.tensors[i] for i in operator.inputs)
    output = subgraph.tensors[operator.outputs[0]]

    def data(tensor, dtype):
        return np.asarray(model.buffers[tensor.buffer].data, np.uint8).view(dtype).reshape(
            tensor.shape)

    input_scale = float(data_input.quantization.scale[0])
    output_scale = float(output.quantization.scale[0])
    multipliers, shifts = zip(*[
        reference.quantize_multiplier(input_scale * float(scale) / output_scale)
        for scale in np.asarray(filters.quantization.scale, np.float32)])
    inputs = np.random.default_rng(6).integers(-128, 128, (1, 6, 6, 300)).astype(np.int8)
    pad, out = reference.same_padding(6, 1)
    expected = reference.conv2d_int8(
        inputs, int(data_input.quantization.zeroPoint[0]), data(filters, np.int8),
        data(bias, np.int32), multipliers, shifts, int(output.quantization.zeroPoint[0]), 1,
        ((pad, pad), (out, out)))
    # 300 input channels: kernels past input channel 255 in the index.
    actual = _run(ct.tflite.Interpreter(model_content=custom, num_threads=1), inputs)
    np.testing.assert_array_equal(actual, expected)


def test_float_io_file_keeps_quantize_edges_and_matches_builtin_reference():
    qat = _pattern_model(1, "same", "relu", seed=3)
    builtin, custom, _ = _convert_both(qat, io_type="float32")
    images = np.random.default_rng(7).normal(0, 1, (1, 9, 9, 8)).astype(np.float32)
    expected = _run(_reference_kernels(builtin), images)
    actual = _run(ct.tflite.Interpreter(model_content=custom, num_threads=1), images)
    np.testing.assert_array_equal(actual, expected)


def test_dense_int8_conv_stays_builtin_with_a_reason():
    model = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.Conv2D(4, 3, padding="same")])
    qat = ct.quantize_model(model)
    qat(np.random.default_rng(0).normal(0, 1, (8, 6, 6, 4)).astype("float32"), training=True)
    _, reports = ct.tflite.convert(qat, decide_by="size", return_report=True)
    (report,) = reports
    assert not report.replaced
    assert report.custom_op == int8_pattern_rewrite.OP_NAME
    assert "max_size_ratio" in report.reason


# -- corrupted files -----------------------------------------------------------


@pytest.fixture(scope="module")
def single_layer_bytes():
    # Float I/O so that load_models.py can feed it.
    _, custom, _ = _convert_both(_pattern_model(1, "same", "relu", seed=9), io_type="float32")
    return custom


def _edit(tflite_bytes, change):
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    (operator,) = [
        op for op in model.subgraphs[0].operators
        if model.operatorCodes[op.opcodeIndex].customCode == int8_pattern_rewrite.OP_NAME.encode()
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


def _values_one_short(model, operator):
    tensor = model.subgraphs[0].tensors[operator.inputs[VALUES]]
    buffer = model.buffers[tensor.buffer]
    buffer.data = buffer.data[:-1]
    tensor.shape = np.array([len(buffer.data)], np.int32)


def _index_one_byte_short(model, operator):
    tensor = model.subgraphs[0].tensors[operator.inputs[KERNEL_INDEX]]
    buffer = model.buffers[tensor.buffer]
    buffer.data = buffer.data[:-1]
    tensor.shape = np.array([len(buffer.data)], np.int32)


def _with_scale(value):
    return set_buffer(FILTER_SCALES, lambda d: np.float32(value).tobytes() + d[4:])


def _with_activation_quantization(scale=None, zero_point=None):
    def change(model, operator):
        tensor = model.subgraphs[0].tensors[operator.inputs[0]]
        if scale is not None:
            tensor.quantization.scale = np.array([scale], np.float32)
        if zero_point is not None:
            tensor.quantization.zeroPoint = np.array([zero_point], np.int64)

    return change


def _load_in_subprocess(tmp_path, models):
    paths = []
    for name, content in models.items():
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(content)
        paths.append(str(path))
    script = os.path.join(os.path.dirname(__file__), "load_models.py")
    completed = subprocess.run(
        [sys.executable, script, *paths], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    results = {}
    for line in completed.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[os.path.basename(result["file"])[: -len(".tflite")]] = result
    assert len(results) == len(paths)
    return results


def test_corrupted_options_weights_and_quantization_give_clean_errors(
        tmp_path, single_layer_bytes):
    cases = {
        "format_version_3": (_with_options(format_version=3), "format_version"),
        "format_version_1": (_with_options(format_version=1), "inputs (compact format version 1)"),
        "input_channels_wrong": (_with_options(input_channels=7), "kernel_index"),
        "padding_unknown": (_with_options(padding="FULL"), "padding"),
        "activation_unknown": (_with_options(fused_activation="TANH"), "fused_activation"),
        "mask_too_wide": (
            set_buffer(PATTERN_MASKS, lambda d: b"\xff\xff" + d[2:]), "pattern_masks[0]"),
        "gap_bits_32": (set_buffer(KERNEL_INDEX, lambda d: b"\x20" + d[1:]), "gap_bits"),
        "index_one_byte_short": (_index_one_byte_short, "kernel_index ends"),
        "values_one_short": (_values_one_short, "values must have"),
        "values_as_uint8": (
            set_buffer(VALUES, lambda d: d, tensor_type=schema.TensorType.UINT8), "'values'"),
        "bias_as_float": (
            set_buffer(BIAS, lambda d: d, tensor_type=schema.TensorType.FLOAT32), "bias"),
        "scale_zero": (_with_scale(0.0), "filter_scales[0]"),
        "scale_negative": (_with_scale(-1.0), "filter_scales[0]"),
        "scale_nan": (_with_scale(np.nan), "filter_scales[0]"),
        "scales_one_short": (
            set_buffer(FILTER_SCALES, lambda d: d[:-4], shape=[15]), "filter_scales"),
    }
    models = {name: _edit(single_layer_bytes, change) for name, (change, _) in cases.items()}
    models["unchanged"] = single_layer_bytes
    results = _load_in_subprocess(tmp_path, models)
    assert results["unchanged"]["outcome"] == "ok", results["unchanged"]
    for name, (_, expected_text) in cases.items():
        assert results[name]["outcome"] == "error", f"{name} was accepted"
        assert expected_text in results[name]["message"], (name, results[name]["message"])


def test_activation_zero_point_out_of_int8_range_is_refused_at_load():
    # The op refuses it too (pattern_conv_s8_test.c); the file check comes
    # first, since LiteRT's XNNPACK delegate crashes on such tensors.
    _, custom, _ = _convert_both(_pattern_model(1, "same", "relu", seed=9))
    corrupted = _edit(custom, _with_activation_quantization(zero_point=300))
    with pytest.raises(ValueError, match=re.escape("zero_point[0] is 300, outside [-128, 128)")):
        ct.tflite.Interpreter(model_content=corrupted, num_threads=1)


@pytest.mark.parametrize("scale", [np.inf, 0.0])
def test_bad_activation_scale_is_refused_at_load(scale):
    # The op refuses it too (pattern_conv_s8_test.c); the file check comes
    # first, since LiteRT's XNNPACK delegate crashes on such tensors.
    _, custom, _ = _convert_both(_pattern_model(1, "same", "relu", seed=9))
    corrupted = _edit(custom, _with_activation_quantization(scale=scale))
    with pytest.raises(ValueError, match=r"quantization\.scale\[0\] is .*positive normal float"):
        ct.tflite.Interpreter(model_content=corrupted, num_threads=1)


def test_planner_ignores_float_convs():
    model = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.Conv2D(4, 3)])
    builtin = ct.tflite.convert(model, custom_ops=False)
    parsed = schema.ModelT.InitFromPackedBuf(builtin, 0)
    (operator,) = parsed.subgraphs[0].operators
    limits = model_rewrite.PlanLimits(64, 0.8)
    assert int8_pattern_rewrite.plan_int8_pattern_conv(
        parsed, parsed.subgraphs[0], operator, limits) is None


def test_speed_decision_keeps_a_layer_builtin_when_xnnpack_is_faster():
    # Only kernels removed (70% kept, all 9 taps, which the op computes as 3
    # groups of 4): about the dense work, at a fraction of XNNPACK's dense
    # efficiency, so the never-slower rule keeps the builtin.
    qat = _pattern_model(1, "same", "relu", seed=2, channels=(64, 64), size=28, taps=9,
                         kept=0.7)
    tflite_bytes, reports = ct.tflite.convert(qat, inference_input_type="int8",
                                              inference_output_type="int8", return_report=True)
    (report,) = reports
    assert not report.replaced
    assert report.decided_by == "speed"
    assert report.custom_op == int8_pattern_rewrite.OP_NAME
    assert report.custom_us > report.builtin_us
    assert ct.tflite.count_pattern_ops(tflite_bytes) == 0


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


def _int8_variants_for_this_cpu():
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    variants = ["scalar"]
    if " avx2" in flags:
        variants.append("avx2")
    if all(f" {flag}" in flags for flag in ("avx512f", "avx512bw", "avx512vl", "avx512_vnni")):
        variants.append("avx512")
    if os.uname().machine == "aarch64":
        variants.append("neon")
        if " asimddp" in flags:
            variants.append("neondot")
    return variants


def test_every_kernel_variant_matches_litert_reference_bit_for_bit(tmp_path):
    # Strides 1 and 2, SAME and VALID, RELU / RELU6 / none, odd sizes and
    # channel counts, batch 2; each variant (chosen once per
    # process, so each in a child loading only LiteRT) on 1 and 2 threads.
    rng = np.random.default_rng(11)
    image = keras.Input((15, 13, 24), name="image")
    x = keras.layers.Conv2D(40, 3, padding="same", activation="relu")(image)
    x = keras.layers.Conv2D(33, 3, strides=2, padding="valid")(x)
    x = keras.layers.Conv2D(20, 3, padding="valid", activation="relu6")(x)
    model = keras.Model(image, x)
    library = np.zeros((4, 9), np.float32)
    np.put_along_axis(library, np.argsort(rng.random((4, 9)), axis=1)[:, :4], 1.0, axis=1)
    for conv in model.layers[1:]:
        _, _, inputs, outputs = conv.kernel.shape
        keep = library[rng.integers(0, 4, inputs * outputs)]
        keep *= (rng.random(inputs * outputs) < 0.4)[:, None]
        keep = keep.reshape(inputs, outputs, 3, 3).transpose(2, 3, 0, 1)
        conv.kernel.assign(conv.kernel.numpy() * keep)
    qat = ct.quantize_model(model)
    qat(rng.normal(0, 1, (16, 15, 13, 24)).astype("float32"), training=True)
    builtin, custom, _ = _convert_both(qat)
    assert ct.tflite.count_pattern_ops(custom) == 3
    inputs = rng.integers(-128, 128, (2, 15, 13, 24)).astype(np.int8)
    expected = _run(_reference_kernels(builtin), inputs)
    model_path, inputs_path = tmp_path / "custom.tflite", tmp_path / "inputs.npy"
    model_path.write_bytes(custom)
    np.save(inputs_path, inputs)
    for variant in _int8_variants_for_this_cpu():
        for threads in (1, 2):
            completed = subprocess.run(
                [sys.executable, "-c", _VARIANT_CHILD, str(model_path), str(inputs_path),
                 str(threads), native_library.library_path()],
                capture_output=True, text=True, timeout=120,
                env=dict(os.environ, TF_CLICKTRAIN_KERNELS=variant, TF_CPP_MIN_LOG_LEVEL="3"))
            assert completed.returncode == 0, completed.stderr[-2000:]
            actual = np.load(str(inputs_path) + ".out.npy")
            np.testing.assert_array_equal(actual, expected, err_msg=f"{variant}, {threads} threads")
