"""Corrupted pattern-conv options and compact buffers fail cleanly.

Every corrupted file is loaded in a subprocess (load_models.py): a crash or
out-of-bounds access would end it early and fail the test.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tflite_helpers
from ai_edge_litert import schema_py_generated as schema
import flatbuffers
from flatbuffers import flexbuffers

from tf_clicktrain import tflite as ct_tflite

INPUT_CHANNELS = 13
# Operator inputs of the pattern-conv ops.
PATTERN_MASKS, RUN_LENGTHS, KERNEL_INPUT_CHANNELS, VALUES = 1, 2, 3, 4


@pytest.fixture(scope="module")
def tflite_bytes():
    model = keras.Sequential(
        [keras.Input((6, 6, INPUT_CHANNELS)), keras.layers.Conv2D(7, 3, padding="same")]
    )
    tflite_helpers.sparsify_model(model, np.random.default_rng(0))
    return ct_tflite.convert(model, decide_by="size")


def _edit(tflite_bytes, change):
    """Returns the model with `change(model, operator)` applied to our op."""
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    (operator,) = model.subgraphs[0].operators
    change(model, operator)
    builder = flatbuffers.Builder(len(tflite_bytes))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _set_options(data):
    def change(_, operator):
        operator.customOptions = np.frombuffer(bytes(data), np.uint8)

    return change


def _set_buffer(input_position, transform, shape=None, tensor_type=None):
    def change(model, operator):
        tensor = model.subgraphs[0].tensors[operator.inputs[input_position]]
        buffer = model.buffers[tensor.buffer]
        buffer.data = np.frombuffer(transform(bytes(buffer.data)), np.uint8)
        if shape is not None:
            tensor.shape = np.array(shape, np.int32)
        if tensor_type is not None:
            tensor.type = tensor_type

    return change


def _buffer_of(tflite_bytes, input_position):
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    operator = model.subgraphs[0].operators[0]
    return bytes(model.buffers[model.subgraphs[0].tensors[operator.inputs[input_position]].buffer].data)


def _element_size(tflite_bytes, input_position):
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    tensor = model.subgraphs[0].tensors[model.subgraphs[0].operators[0].inputs[input_position]]
    return {schema.TensorType.UINT8: 1, schema.TensorType.UINT16: 2}[tensor.type]


def _options_of(tflite_bytes):
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    return bytes(model.subgraphs[0].operators[0].customOptions)


def _put_index(data, index, value, size):
    """Stores `value` at element `index`, saturating to the element size."""
    data = bytearray(data)
    value = min(int(value), (1 << (8 * size)) - 1)
    data[size * index : size * (index + 1)] = value.to_bytes(size, "little")
    return bytes(data)


def _flip_bit(data, bit):
    data = bytearray(data)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


def _run_in_subprocess(tmp_path, models):
    paths = []
    for name, content in models.items():
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(content)
        paths.append(str(path))
    script = os.path.join(os.path.dirname(__file__), "load_models.py")
    completed = subprocess.run(
        [sys.executable, script, *paths], capture_output=True, text=True, timeout=600
    )
    results = {}
    for line in completed.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[os.path.basename(result["file"])[: -len(".tflite")]] = result
    assert completed.returncode == 0, (
        f"loader crashed (exit {completed.returncode}) after {len(results)} of "
        f"{len(paths)} files; stderr tail: {completed.stderr[-2000:]}"
    )
    assert len(results) == len(paths)
    return results


def test_invalid_fields_give_clean_errors_naming_the_field(tmp_path, tflite_bytes):
    options = flexbuffers.Loads(_options_of(tflite_bytes))
    channels = _buffer_of(tflite_bytes, KERNEL_INPUT_CHANNELS)
    channel_size = _element_size(tflite_bytes, KERNEL_INPUT_CHANNELS)
    runs = _buffer_of(tflite_bytes, RUN_LENGTHS)
    run_size = _element_size(tflite_bytes, RUN_LENGTHS)
    values = _buffer_of(tflite_bytes, VALUES)
    cases = {
        "format_version_2": (_set_options(flexbuffers.Dumps({**options, "format_version": 2})), "format_version"),
        "stride_0": (_set_options(flexbuffers.Dumps({**options, "stride_h": 0})), "stride_h"),
        "padding_unknown": (_set_options(flexbuffers.Dumps({**options, "padding": "FULL"})), "padding"),
        "input_channels_wrong": (_set_options(flexbuffers.Dumps({**options, "input_channels": 12})), "channels"),
        "options_not_a_map": (_set_options(flexbuffers.Dumps([1, 2, 3])), "map"),
        "options_empty": (_set_options(b""), "custom options"),
        "channel_equals_input_channels": (
            _set_buffer(KERNEL_INPUT_CHANNELS, lambda d: _put_index(d, 3, INPUT_CHANNELS, channel_size)),
            "kernel_input_channels",
        ),
        "channel_largest": (
            _set_buffer(KERNEL_INPUT_CHANNELS, lambda d: _put_index(d, 0, 0xFFFF, channel_size)),
            "kernel_input_channels",
        ),
        "run_length_too_long": (_set_buffer(RUN_LENGTHS, lambda d: _put_index(d, 0, 200, run_size)), "kernel"),
        "run_lengths_sum_off_by_one": (
            _set_buffer(
                RUN_LENGTHS,
                lambda d: _put_index(d, 1, int.from_bytes(runs[run_size : 2 * run_size], "little") + 1, run_size),
            ),
            "kernel_input_channels",
        ),
        "empty_pattern": (_set_buffer(PATTERN_MASKS, lambda d: _put_index(d, 0, 0, 2)), "pattern_masks"),
        "pattern_with_tenth_position": (
            _set_buffer(PATTERN_MASKS, lambda d: _put_index(d, 0, 0x3FF, 2)),
            "pattern_masks",
        ),
        "values_one_short": (
            _set_buffer(VALUES, lambda d: d[:-4], shape=[len(values) // 4 - 1]),
            "values",
        ),
        "channels_one_short": (
            _set_buffer(
                KERNEL_INPUT_CHANNELS,
                lambda d: d[:-channel_size],
                shape=[len(channels) // channel_size - 1],
            ),
            "kernel_input_channels",
        ),
        "channels_as_float32": (
            _set_buffer(
                KERNEL_INPUT_CHANNELS,
                lambda d: d * (4 // channel_size),
                tensor_type=schema.TensorType.FLOAT32,
            ),
            "kernel_input_channels",
        ),
    }
    models = {name: _edit(tflite_bytes, change) for name, (change, _) in cases.items()}
    models["unchanged"] = tflite_bytes
    results = _run_in_subprocess(tmp_path, models)
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
        models[f"options_truncated_{length}"] = _edit(tflite_bytes, _set_options(options[:length]))
    for bit in rng.choice(8 * len(options), size=min(160, 8 * len(options)), replace=False):
        models[f"options_bit_{bit}"] = _edit(tflite_bytes, _set_options(_flip_bit(options, bit)))
    for position, name in ((PATTERN_MASKS, "masks"), (RUN_LENGTHS, "runs"), (KERNEL_INPUT_CHANNELS, "channels")):
        data = _buffer_of(tflite_bytes, position)
        for bit in rng.choice(8 * len(data), size=min(40, 8 * len(data)), replace=False):
            models[f"{name}_bit_{bit}"] = _edit(
                tflite_bytes, _set_buffer(position, lambda d, bit=bit: _flip_bit(d, bit))
            )
        for length in (0, len(data) // 2, len(data) - 1):
            models[f"{name}_truncated_{length}"] = _edit(
                tflite_bytes, _set_buffer(position, lambda d, length=length: d[:length])
            )
    results = _run_in_subprocess(tmp_path, models)
    # Truncations never leave a consistent file.
    truncated = [r for name, r in results.items() if "truncated" in name]
    assert all(r["outcome"] == "error" for r in truncated)
    errors = sum(r["outcome"] == "error" for r in results.values())
    # Most bit flips break a checked field; the rest give a valid, different layer.
    assert errors >= len(results) // 2, f"only {errors} of {len(results)} rejected"
