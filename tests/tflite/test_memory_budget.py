"""The delegate's memory stays within the file's declared tensors + 64 MiB.

Hostile files declare a few hundred KB of tensors but pattern convs whose
fast path would pack tens of MB per thread (a huge input-channel count times
a large dilation over a tiny input), several of them. Each is run in a fresh
LiteRT process (peak_rss.py) on 1-4 threads; its peak RSS may grow by at
most 2x the declared tensor bytes + the delegate's fixed bound + what a tiny
model costs the same process (the runtime's own baseline). Valid models
still take every fast path and match Keras.
"""

import json
import os
import subprocess
import sys

import flatbuffers
import keras
import numpy as np
import pytest
import tflite_helpers
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers

from tf_clicktrain import tflite as ct_tflite
from tf_clicktrain.tflite import native_library

FIXED_BOUND = 64 << 20  # kMemoryBudgetFixedBytes, src/memory_budget.h
ELEMENT_SIZE = {
    schema.TensorType.FLOAT32: 4,
    schema.TensorType.INT32: 4,
    schema.TensorType.UINT16: 2,
    schema.TensorType.INT16: 2,
    schema.TensorType.UINT8: 1,
    schema.TensorType.INT8: 1,
    schema.TensorType.INT64: 8,
}


def declared_tensor_bytes(content):
    """Bytes of the tensors the first subgraph's operators read or write."""
    subgraph = schema.ModelT.InitFromPackedBuf(content, 0).subgraphs[0]
    used = {
        index
        for operator in subgraph.operators
        for index in [*operator.inputs, *operator.outputs]
        if index >= 0
    }
    return sum(
        int(np.prod(subgraph.tensors[i].shape, dtype=np.int64)) * ELEMENT_SIZE[subgraph.tensors[i].type]
        for i in used
    )


def custom_op_names(content):
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    return [
        model.operatorCodes[operator.opcodeIndex].customCode.decode()
        for operator in model.subgraphs[0].operators
        if model.operatorCodes[operator.opcodeIndex].customCode
    ]


def _branches(input_shape, branches, make_layer, seed):
    inputs = keras.Input(input_shape)
    outputs = [make_layer()(inputs) for _ in range(branches)]
    model = keras.Model(inputs, keras.layers.Concatenate()(outputs) if branches > 1 else outputs[0])
    return _sparsified(model, seed)


def _sparsified(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1):
            kernel, bias = layer.get_weights()
            kernel *= rng.random(kernel.shape) < 0.3
            layer.set_weights([kernel, bias])
    return tflite_helpers.sparsify_model(model, rng)


def _with_dilation(content, dilation):
    """The file with every pattern conv's options declaring `dilation`.

    (TensorFlow's converter would wrap a dilated conv in SPACE_TO_BATCH_ND,
    whose runtime-sized tensors are LiteRT's, not the delegate's.)"""
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    for operator in model.subgraphs[0].operators:
        if operator.customOptions is not None:
            options = flexbuffers.Loads(bytes(operator.customOptions))
            options.update(dilation_h=dilation, dilation_w=dilation)
            operator.customOptions = np.frombuffer(bytes(flexbuffers.Dumps(options)), np.uint8)
    builder = flatbuffers.Builder(len(content))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory):
    """{name: (path, bytes)} of files whose fast paths would need far more
    memory than they declare."""
    directory = tmp_path_factory.mktemp("hostile")
    conv = lambda: keras.layers.Conv2D(1, 3, padding="same")  # noqa: E731
    models = {
        # Issue 12's file: 64,523 input channels, dilation 64, a 1x1 input.
        "wide_dilated": (_branches((1, 1, 64523), 1, conv, 0), 64),
        # Eight convs whose band buffers (13 MB per thread each) pass every
        # per-layer cap, over one 128 KB input. 16 columns: a whole number
        # of vectors for every kernel set, so no aligned twin sub-planes
        # (which would double the buffer past the per-layer cap).
        "many_dilated": (_branches((1, 16, 2048), 8, conv, 1), 16),
    }
    files = {}
    for name, (model, dilation) in models.items():
        content = _with_dilation(ct_tflite.convert(model, decide_by="size"), dilation)
        assert custom_op_names(content).count("ClickTrainPatternConv2D") >= 1, name
        path = directory / f"{name}.tflite"
        path.write_bytes(content)
        files[name] = (str(path), content)
    return files


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    model = keras.Sequential([keras.Input((6, 6, 5)), keras.layers.Conv2D(7, 3, padding="same")])
    path = tmp_path_factory.mktemp("tiny") / "tiny.tflite"
    path.write_bytes(ct_tflite.convert(_sparsified(model, 2), decide_by="size"))
    return str(path)


def _peak_rss(threads, baseline_model, models):
    script = os.path.join(os.path.dirname(__file__), "peak_rss.py")
    completed = subprocess.run(
        [sys.executable, script, native_library.library_path(), str(threads), baseline_model, *models],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("name", ["wide_dilated", "many_dilated"])
def test_hostile_files_stay_within_twice_their_declared_tensors(
    hostile_files, tiny_file, name, threads
):
    path, content = hostile_files[name]
    declared = declared_tensor_bytes(content)
    result = _peak_rss(threads, tiny_file, [path])
    assert result["errors"] == [""]
    runtime_baseline = result["baseline"] - result["start"]
    growth = result["peak"] - result["start"]
    assert growth <= 2 * declared + FIXED_BOUND + runtime_baseline, (
        f"peak RSS grew by {growth / 2**20:.1f} MiB for {declared / 2**20:.2f} MiB of "
        f"declared tensors (runtime baseline {runtime_baseline / 2**20:.1f} MiB)"
    )
    # The budget, not luck, kept it there: some layer gave up its fast path.
    assert result["memory_fallbacks"] >= 1


def test_node_whose_single_thread_scratch_cannot_fit_is_refused_naming_it(tmp_path, tiny_file):
    # Sparse 1x1 convs over 65,535 channels of 9 pixels (more than any
    # variant's few-pixel limit, so they tile): each needs a 16 MiB tile of
    # scratch per thread, and has no kernel without one.
    model = _branches((1, 9, 65535), 6, lambda: keras.layers.Conv2D(1, 1), 3)
    content = ct_tflite.convert(model, decide_by="size")
    assert custom_op_names(content).count("ClickTrainSparseConv1x1") >= 5
    path = tmp_path / "wide_pointwise.tflite"
    path.write_bytes(content)
    (error,) = _peak_rss(1, tiny_file, [str(path)])["errors"]
    assert "ClickTrainSparseConv1x1Kernel: node" in error
    assert "bytes for its scratch on one thread, but only" in error
    assert "of the delegate's memory budget of" in error


def _resnet_like(seed):
    inputs = keras.Input((32, 32, 16))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    for filters, stride in ((32, 1), (64, 2), (64, 1)):
        shortcut = x
        y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = keras.layers.BatchNormalization()(y)
        y = keras.layers.ReLU()(y)
        y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
        y = keras.layers.BatchNormalization()(y)
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = keras.layers.Conv2D(filters, 1, strides=stride)(shortcut)
        x = keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))
    return _sparsified(keras.Model(inputs, x), seed)


@pytest.mark.parametrize("threads", [1, 4])
def test_resnet_like_export_keeps_every_fast_path(threads):
    model = _resnet_like(4)
    content = ct_tflite.convert(model, decide_by="size")
    assert custom_op_names(content).count("ClickTrainPatternConv2D") >= 6
    images = np.random.default_rng(5).normal(size=(1, 32, 32, 16)).astype(np.float32)
    interpreter = ct_tflite.Interpreter(model_content=content, num_threads=threads)
    outputs = tflite_helpers.run_interpreter(interpreter, images)
    assert tflite_helpers.max_relative_error(outputs, model(images)) < 1e-4
    delegate = interpreter._clicktrain_delegate  # pylint: disable=protected-access
    assert native_library.memory_fallbacks(delegate) == 0
