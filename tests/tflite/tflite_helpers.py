"""Hand-made pattern-sparse Keras models, comparison helpers, and edits of
single-operator .tflite files (loaded in a subprocess) for corruption tests."""

import json
import os
import subprocess
import sys

import flatbuffers
import keras
import numpy as np
from ai_edge_litert import schema_py_generated as schema

# Four 4-of-9 patterns (bit 3 * ky + kx set when kept).
PATTERNS = (0b010111000, 0b000111010, 0b011011000, 0b000110110)
KERNEL_REMOVAL_FRACTION = 0.3


def pattern_bits(mask):
    return np.array([(mask >> position) & 1 for position in range(9)], np.float32)


def sparsify_layer(layer, rng, removed_filter=None):
    """Zeroes a 3x3 conv/depthwise kernel into the pattern form, in place.

    Each 3x3 kernel slice keeps one of `PATTERNS` or is removed entirely
    (with probability `KERNEL_REMOVAL_FRACTION`); `removed_filter` names an
    output channel whose kernels are all removed.
    """
    weights = layer.get_weights()
    kernel = weights[0]  # [3, 3, in, out] (depthwise: [3, 3, channels, 1])
    _, _, inputs, outputs = kernel.shape
    masks = np.zeros((3, 3, inputs, outputs), np.float32)
    for i in range(inputs):
        for o in range(outputs):
            if rng.random() < KERNEL_REMOVAL_FRACTION:
                continue
            masks[:, :, i, o] = pattern_bits(PATTERNS[rng.integers(len(PATTERNS))]).reshape(3, 3)
    if removed_filter is not None:
        masks[..., removed_filter] = 0
    weights[0] = kernel * masks
    if len(weights) > 1:
        weights[1] = rng.normal(size=weights[1].shape).astype(np.float32)
    layer.set_weights(weights)


def randomize_batch_norm(layer, rng):
    channels = layer.get_weights()[0].shape[0]
    layer.set_weights(
        [
            rng.uniform(0.5, 1.5, channels),
            rng.normal(size=channels),
            rng.normal(scale=0.5, size=channels),
            rng.uniform(0.5, 2.0, channels),
        ]
    )


def sparsify_model(model, rng):
    """Makes every 3x3 conv of `model` (nested ones too) pattern-sparse."""
    for layer in _all_layers(model):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            if tuple(layer.kernel_size) == (3, 3):
                sparsify_layer(layer, rng)
        elif isinstance(layer, keras.layers.BatchNormalization):
            randomize_batch_norm(layer, rng)
    return model


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def max_relative_error(actual, expected):
    """Largest absolute error relative to the largest expected magnitude."""
    expected = np.asarray(expected, np.float64)
    scale = max(np.abs(expected).max(), 1e-12)
    return float(np.abs(np.asarray(actual, np.float64) - expected).max() / scale)


def run_interpreter(interpreter, inputs):
    """Runs a single-input, single-output interpreter on a batch."""
    detail = interpreter.get_input_details()[0]
    if tuple(detail["shape"]) != inputs.shape:
        interpreter.resize_tensor_input(detail["index"], inputs.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], inputs)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def edit_operator(tflite_bytes, change):
    """Returns the file with `change(model, operator)` applied to its one operator."""
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    (operator,) = model.subgraphs[0].operators
    change(model, operator)
    builder = flatbuffers.Builder(len(tflite_bytes))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def set_options(data):
    """An `edit_operator` change: the operator's custom options become `data`."""

    def change(_, operator):
        operator.customOptions = np.frombuffer(bytes(data), np.uint8)

    return change


def set_buffer(input_position, transform, shape=None, tensor_type=None):
    """An `edit_operator` change: an input's buffer becomes `transform(bytes)`.

    `shape` and `tensor_type`, when given, replace the tensor's.
    """

    def change(model, operator):
        tensor = model.subgraphs[0].tensors[operator.inputs[input_position]]
        buffer = model.buffers[tensor.buffer]
        buffer.data = np.frombuffer(transform(bytes(buffer.data)), np.uint8)
        if shape is not None:
            tensor.shape = np.array(shape, np.int32)
        if tensor_type is not None:
            tensor.type = tensor_type

    return change


def load_in_subprocess(tmp_path, models):
    """Loads and runs `{name: tflite bytes}` in load_models.py, one subprocess.

    Returns `{name: result}` (load_models.py's JSON line per file); a crash
    of the loader fails the test.
    """
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
