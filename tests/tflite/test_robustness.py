"""Corrupted and hostile .tflite files fail cleanly, valid ones load.

Corrupted pattern-conv options and compact buffers are loaded in a
subprocess (load_models.py): a crash or out-of-bounds access would end it
early and fail the test. Hostile options are refused within a second, files
from TensorFlow's converter run as in stock LiteRT, and every reader of
.tflite bytes raises ValueError on corrupt input.
"""

import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import tflite_helpers
from ai_edge_litert import interpreter as litert_interpreter
from ai_edge_litert import schema_py_generated as schema
import flatbuffers
from flatbuffers import flexbuffers

from tf_clicktrain import tflite as ct_tflite
from tf_clicktrain.tflite import int8_export
from tf_clicktrain.tflite import model_rewrite
from tf_clicktrain.tflite import speed_decision

INPUT_CHANNELS = 13
# Operator inputs of the pattern-conv ops (compact format version 2).
PATTERN_MASKS, KERNEL_INDEX, VALUES = 1, 2, 3


@pytest.fixture(scope="module")
def tflite_bytes():
    model = keras.Sequential(
        [keras.Input((6, 6, INPUT_CHANNELS)), keras.layers.Conv2D(7, 3, padding="same")]
    )
    tflite_helpers.sparsify_model(model, np.random.default_rng(0))
    return ct_tflite.convert(model, decide_by="size")


def _buffer_of(tflite_bytes, input_position):
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    operator = model.subgraphs[0].operators[0]
    return bytes(model.buffers[model.subgraphs[0].tensors[operator.inputs[input_position]].buffer].data)


def _options_of(tflite_bytes):
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    return bytes(model.subgraphs[0].operators[0].customOptions)


def _flip_bit(data, bit):
    data = bytearray(data)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


def test_invalid_fields_give_clean_errors_naming_the_field(tmp_path, tflite_bytes):
    options = flexbuffers.Loads(_options_of(tflite_bytes))
    index = _buffer_of(tflite_bytes, KERNEL_INDEX)
    masks = _buffer_of(tflite_bytes, PATTERN_MASKS)
    values = _buffer_of(tflite_bytes, VALUES)
    assert len(masks) == 2 * 4  # four patterns: ids of 2 bits
    cases = {
        "format_version_3": (
            tflite_helpers.set_options(flexbuffers.Dumps({**options, "format_version": 3})),
            "format_version",
        ),
        "stride_0": (
            tflite_helpers.set_options(flexbuffers.Dumps({**options, "stride_h": 0})), "stride_h"
        ),
        "padding_unknown": (
            tflite_helpers.set_options(flexbuffers.Dumps({**options, "padding": "FULL"})),
            "padding",
        ),
        "input_channels_wrong": (
            tflite_helpers.set_options(flexbuffers.Dumps({**options, "input_channels": 12})),
            "kernel_index",
        ),
        "options_not_a_map": (tflite_helpers.set_options(flexbuffers.Dumps([1, 2, 3])), "map"),
        "options_empty": (tflite_helpers.set_options(b""), "custom options"),
        "gap_bits_32": (
            tflite_helpers.set_buffer(KERNEL_INDEX, lambda d: bytes([32]) + d[1:]), "gap_bits"
        ),
        "index_one_byte_short": (
            tflite_helpers.set_buffer(KERNEL_INDEX, lambda d: d[:-1], shape=[len(index) - 1]),
            "kernel_index ends",
        ),
        "index_one_byte_long": (
            tflite_helpers.set_buffer(KERNEL_INDEX, lambda d: d + b"\0", shape=[len(index) + 1]),
            "after the end",
        ),
        "index_all_ones": (
            tflite_helpers.set_buffer(KERNEL_INDEX, lambda d: d[:1] + b"\xff" * (len(d) - 1)),
            "kernel_index",
        ),
        "index_empty_stream": (
            tflite_helpers.set_buffer(KERNEL_INDEX, lambda d: d[:1], shape=[1]),
            "kernel_index ends",
        ),
        "index_as_uint16": (
            tflite_helpers.set_buffer(
                KERNEL_INDEX, lambda d: d + d, tensor_type=schema.TensorType.UINT16
            ),
            "kernel_index",
        ),
        "pattern_id_past_the_table": (
            # The table keeps its used patterns only, in ascending order: the
            # last one's kernels now name an id beyond a 3-pattern table.
            tflite_helpers.set_buffer(PATTERN_MASKS, lambda d: d[:-2], shape=[3]),
            "pattern id 3",
        ),
        "empty_pattern": (
            tflite_helpers.set_buffer(PATTERN_MASKS, lambda d: b"\0\0" + d[2:]),
            "pattern_masks",
        ),
        "pattern_with_tenth_position": (
            tflite_helpers.set_buffer(PATTERN_MASKS, lambda d: b"\xff\x03" + d[2:]),
            "pattern_masks",
        ),
        "values_one_short": (
            tflite_helpers.set_buffer(VALUES, lambda d: d[:-4], shape=[len(values) // 4 - 1]),
            "values",
        ),
        "values_one_long": (
            tflite_helpers.set_buffer(VALUES, lambda d: d + d[:4], shape=[len(values) // 4 + 1]),
            "values",
        ),
    }
    models = {
        name: tflite_helpers.edit_operator(tflite_bytes, change)
        for name, (change, _) in cases.items()
    }
    models["unchanged"] = tflite_bytes
    results = tflite_helpers.load_in_subprocess(tmp_path, models)
    assert results["unchanged"]["outcome"] == "ok", results["unchanged"]
    for name, (_, expected_text) in cases.items():
        result = results[name]
        assert result["outcome"] == "error", f"{name} was accepted"
        assert expected_text in result["message"], (name, result["message"])


def test_truncated_and_bit_flipped_bytes_never_crash(tmp_path, tflite_bytes):
    rng = np.random.default_rng(1)
    options = _options_of(tflite_bytes)
    models = {}
    for length in range(len(options)):
        models[f"options_truncated_{length}"] = tflite_helpers.edit_operator(
            tflite_bytes, tflite_helpers.set_options(options[:length])
        )
    for bit in rng.choice(8 * len(options), size=min(160, 8 * len(options)), replace=False):
        models[f"options_bit_{bit}"] = tflite_helpers.edit_operator(
            tflite_bytes, tflite_helpers.set_options(_flip_bit(options, bit))
        )
    for position, name in ((PATTERN_MASKS, "masks"), (KERNEL_INDEX, "index")):
        data = _buffer_of(tflite_bytes, position)
        for bit in rng.choice(8 * len(data), size=min(40, 8 * len(data)), replace=False):
            models[f"{name}_bit_{bit}"] = tflite_helpers.edit_operator(
                tflite_bytes,
                tflite_helpers.set_buffer(position, lambda d, bit=bit: _flip_bit(d, bit)),
            )
        for length in (0, len(data) // 2, len(data) - 1):
            models[f"{name}_truncated_{length}"] = tflite_helpers.edit_operator(
                tflite_bytes,
                tflite_helpers.set_buffer(position, lambda d, length=length: d[:length]),
            )
    results = tflite_helpers.load_in_subprocess(tmp_path, models)
    # Truncations never leave a consistent file.
    truncated = [r for name, r in results.items() if "truncated" in name]
    assert all(r["outcome"] == "error" for r in truncated)
    errors = sum(r["outcome"] == "error" for r in results.values())
    # Most bit flips break a checked field; the rest give a valid, different layer.
    assert errors >= len(results) // 2, f"only {errors} of {len(results)} rejected"


# ------------------------------------------------- hostile options: bounded time

_FBT_INT, _FBT_VECTOR = 1, 10


def _shared_vector_options(elements, levels, width):
    """A flexbuffer whose every level is a vector of `elements` offsets to
    the one vector below it: verifying it naively visits elements**levels
    values. All values are `width` bytes wide."""
    code = {1: 0, 2: 1, 4: 2, 8: 3}[width]
    data = bytearray()

    def vector(items, type_byte):
        while len(data) % width:
            data.append(0)
        data.extend(len(items).to_bytes(width, "little"))
        start = len(data)
        for item in items:
            data.extend(item(len(data)).to_bytes(width, "little"))
        data.extend(bytes([type_byte]) * len(items))
        return start

    below = vector([lambda _: 1] * elements, _FBT_INT << 2)
    for _ in range(levels - 1):
        below = vector(
            [lambda position, below=below: position - below] * elements,
            (_FBT_VECTOR << 2) | code,
        )
    while len(data) % width:
        data.append(0)
    data.extend((len(data) - below).to_bytes(width, "little"))
    data.extend(bytes([(_FBT_VECTOR << 2) | code, width]))
    return bytes(data)


def _load_seconds(content):
    start = time.perf_counter()
    with pytest.raises((ValueError, RuntimeError)) as error:
        interpreter = ct_tflite.Interpreter(model_content=content, num_threads=1)
        interpreter.allocate_tensors()
    return time.perf_counter() - start, str(error.value)


@pytest.mark.parametrize(
    "elements, levels, width, expected",
    [
        # Just under the old 1 MiB cap, two levels: n^2 = 1e10 steps.
        (100_000, 2, 4, "custom options must be a flexbuffer of 3 to 4096 bytes"),
        # Under the cap, three levels: n^3 = 9e7 steps without a reuse tracker.
        (440, 3, 2, "custom options"),
    ],
)
def test_options_that_share_vectors_are_refused_within_a_second(
    tflite_bytes, elements, levels, width, expected
):
    options = _shared_vector_options(elements, levels, width)
    seconds, message = _load_seconds(
        tflite_helpers.edit_operator(tflite_bytes, tflite_helpers.set_options(options))
    )
    assert expected in message
    assert seconds < 1.0, f"{len(options)}-byte options took {seconds:.2f} s to refuse"


# ------------------------------------- valid converter files run, as in LiteRT

def _run_both(content, inputs):
    outputs = []
    for interpreter in (
        litert_interpreter.Interpreter(model_content=content, num_threads=1),
        ct_tflite.Interpreter(model_content=content, num_threads=1),
    ):
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], inputs)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    return outputs


def test_converter_sparse_tensors_run_as_in_stock_litert():
    rng = np.random.default_rng(3)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(48)])
    kernel = model.layers[0].kernel.numpy()
    kernel[rng.random(kernel.shape) < 0.9] = 0.0
    model.layers[0].kernel.assign(kernel)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    content = converter.convert()
    parsed = schema.ModelT.InitFromPackedBuf(content, 0)
    assert any(t.sparsity is not None for t in parsed.subgraphs[0].tensors)
    stock, ours = _run_both(content, rng.standard_normal((1, 64)).astype(np.float32))
    np.testing.assert_array_equal(ours, stock)


def test_converter_tensors_of_rank_18_run_as_in_stock_litert():
    shape = [1] * 17 + [3]

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
    def affine(x):
        return x * 2.0 + 1.0

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [affine.get_concrete_function()], affine
    )
    inputs = np.arange(3, dtype=np.float32).reshape(shape)
    stock, ours = _run_both(converter.convert(), inputs)
    np.testing.assert_array_equal(ours, stock)
    np.testing.assert_array_equal(ours.ravel(), [1.0, 3.0, 5.0])


# ------------------------------------------ messages blame the model's fault

def test_pattern_op_naming_a_missing_tensor_is_reported_as_such(tflite_bytes):
    def point_masks_at_missing_tensor(_, operator):
        inputs = np.array(operator.inputs)
        inputs[PATTERN_MASKS] = 9999
        operator.inputs = inputs

    content = tflite_helpers.edit_operator(tflite_bytes, point_masks_at_missing_tensor)
    # LiteRT alone would drop the node silently; the delegate would then
    # claim nothing and the message could only say so.
    with pytest.raises(ValueError, match=r"subgraphs\[0\]\.operators\[0\]\.inputs\[1\] is 9999"):
        ct_tflite.Interpreter(model_content=content, num_threads=1)


def test_non_utf8_custom_op_name_raises_value_error(tflite_bytes):
    def rename(model, operator):
        model.operatorCodes[operator.opcodeIndex].customCode = b"\xffClickTrain"

    content = tflite_helpers.edit_operator(tflite_bytes, rename)
    with pytest.raises(ValueError, match="custom_code is not UTF-8"):
        ct_tflite.count_pattern_ops(content)
    with pytest.raises(ValueError):
        ct_tflite.Interpreter(model_content=content, num_threads=1)


# ------------------------------------------------ every byte reader: ValueError

def _mutants(content, count, rng):
    """Yields `count` corrupted copies: bit flips, random bytes, planted
    offsets and lengths, truncations."""
    size = len(content)
    for _ in range(count):
        data = bytearray(content)
        kind = rng.integers(5)
        if kind == 0:
            for bit in rng.integers(8 * size, size=rng.integers(1, 4)):
                data[bit // 8] ^= 1 << (bit % 8)
        elif kind == 1:
            data[rng.integers(size)] = rng.integers(256)
        elif kind == 2:
            position = 4 * rng.integers(size // 4)
            value = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, size, size - 4, 1 << 20])
            data[position : position + 4] = int(value).to_bytes(4, "little")
        elif kind == 3:
            position = 2 * rng.integers(size // 2)
            data[position : position + 2] = int(rng.integers(1 << 16)).to_bytes(2, "little")
        else:
            del data[rng.integers(size) :]
        yield bytes(data)


def test_mutated_exports_raise_value_error_or_load(tflite_bytes):
    rng = np.random.default_rng(5)
    outcomes = {"ok": 0, "ValueError": 0}
    for count, readers in (
        (2000, [ct_tflite.count_pattern_ops, speed_decision.has_custom_ops]),
        (300, [model_rewrite.replace_pattern_convs, int8_export.float_operators]),
    ):
        for content in _mutants(tflite_bytes, count, rng):
            for reader in readers:
                try:
                    reader(content)
                    outcomes["ok"] += 1
                except ValueError:
                    outcomes["ValueError"] += 1
    # Both outcomes occur: the sweep reaches past the header checks.
    assert outcomes["ok"] > 100 and outcomes["ValueError"] > 100, outcomes


def test_tables_shared_many_times_are_refused_before_unpacking():
    # One tensor with a 200 KB name, listed 5,000 times: a 200 KB file that
    # the object API would unpack to 1 GB of names.
    builder = flatbuffers.Builder(0)
    name = builder.CreateString("n" * 200_000)
    schema.TensorStart(builder)
    schema.TensorAddName(builder, name)
    tensor = schema.TensorEnd(builder)
    schema.SubGraphStartTensorsVector(builder, 5000)
    for _ in range(5000):
        builder.PrependUOffsetTRelative(tensor)
    tensors = builder.EndVector()
    schema.SubGraphStart(builder)
    schema.SubGraphAddTensors(builder, tensors)
    subgraph = schema.SubGraphEnd(builder)
    schema.ModelStartSubgraphsVector(builder, 1)
    builder.PrependUOffsetTRelative(subgraph)
    subgraphs = builder.EndVector()
    schema.ModelStart(builder)
    schema.ModelAddSubgraphs(builder, subgraphs)
    builder.Finish(schema.ModelEnd(builder), file_identifier=b"TFL3")
    content = bytes(builder.Output())
    start = time.perf_counter()
    for reader in (ct_tflite.count_pattern_ops, model_rewrite.replace_pattern_convs):
        with pytest.raises(ValueError, match=r"Tensors\[\d+\]\.Name makes the .* unpack to over 4x"):
            reader(content)
    assert time.perf_counter() - start < 1.0


def test_file_without_subgraphs_is_refused_before_litert_sees_it():
    # LiteRT's Python interpreter does not verify files; its builder crashes
    # the process on this one (found by the whole-file fuzzer).
    builder = flatbuffers.Builder(0)
    schema.ModelStart(builder)
    schema.ModelAddVersion(builder, 3)
    builder.Finish(schema.ModelEnd(builder), file_identifier=b"TFL3")
    with pytest.raises(ValueError, match="the model is not a valid TFLite model: it has no subgraphs"):
        ct_tflite.Interpreter(model_content=bytes(builder.Output()))


def test_interpreter_needs_exactly_one_model_source(tmp_path):
    with pytest.raises(ValueError, match="exactly one of model_path and model_content"):
        ct_tflite.Interpreter()
    with pytest.raises(ValueError, match="Could not read the model file"):
        ct_tflite.Interpreter(model_path=str(tmp_path / "missing.tflite"))


def test_non_utf8_signature_key_raises_value_error(tflite_bytes):
    # LiteRT raises UnicodeDecodeError here (found by the whole-file fuzzer).
    def rename(model, _):
        model.signatureDefs[0].signatureKey = b"\x95serving"

    with pytest.raises(ValueError, match="Could not load the model"):
        ct_tflite.Interpreter(
            model_content=tflite_helpers.edit_operator(tflite_bytes, rename), num_threads=1
        )
