"""Sparse 1x1 convs export as ClickTrainSparseConv1x1 ops and run correctly.

Covers the bit-mask format (pointwise_format), the rewrite of 1x1 CONV_2D
(pointwise_rewrite through model_rewrite), Keras-vs-LiteRT agreement through
the native op, and clean errors for corrupted options and weights (loaded in
a subprocess, as in test_robustness.py).
"""

import contextlib
import io

import keras
import numpy as np
import pytest
import tflite_helpers
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers

from tf_clicktrain import tflite as ct_tflite
from tf_clicktrain.tflite import model_rewrite
from tf_clicktrain.tflite import pointwise_format
from tf_clicktrain.tflite import pointwise_rewrite

SPARSITY = 0.8
# Operator inputs of ClickTrainSparseConv1x1.
NONZERO_MASK, VALUES = 1, 2


def _sparsify_pointwise(model, rng, sparsity=SPARSITY):
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1):
            weights = layer.get_weights()
            weights[0] = weights[0] * (rng.random(weights[0].shape) >= sparsity)
            if len(weights) > 1:
                weights[1] = rng.normal(size=weights[1].shape).astype(np.float32)
            layer.set_weights(weights)
    return model


def _assert_matches_keras(model, content, rng, runs, output_shape, tolerance=1e-4):
    """The file's outputs equal Keras' for each (batch, threads) in `runs`."""
    for batch, threads in runs:
        images = rng.normal(size=(batch, *model.input_shape[1:])).astype(np.float32)
        interpreter = ct_tflite.Interpreter(model_content=content, num_threads=threads)
        actual = tflite_helpers.run_interpreter(interpreter, images)
        expected = model.predict(images, verbose=0)
        assert actual.shape == expected.shape == (batch, *output_shape)
        assert tflite_helpers.max_relative_error(actual, expected) <= tolerance


def _builtin_bytes(model):
    with contextlib.redirect_stdout(io.StringIO()):
        return ct_tflite.convert(model, custom_ops=False)


@pytest.fixture(scope="module")
def pointwise_model():
    """1x1 convs with odd channel counts, strides 1 and 2, every clamp."""
    inputs = keras.Input((11, 9, 13))
    x = keras.layers.Conv2D(40, 1, activation="relu")(inputs)
    x = keras.layers.Conv2D(24, 1, strides=2, use_bias=False)(x)
    x = keras.layers.Conv2D(70, 1, activation="relu6")(x)
    x = keras.layers.Conv2D(17, 1)(x)
    model = keras.Model(inputs, x)
    return _sparsify_pointwise(model, np.random.default_rng(0))


def test_format_round_trip_keeps_every_weight():
    rng = np.random.default_rng(1)
    dense = rng.normal(size=(9, 21)).astype(np.float32) * (rng.random((9, 21)) > 0.7)
    dense[3] = 0.0
    compact = pointwise_format.encode(dense.reshape(9, 1, 1, 21))
    assert compact.nonzero_mask.shape == (9, 3)
    assert compact.num_nonzeros == np.count_nonzero(dense)
    assert compact.nbytes == 9 * 3 + 4 * np.count_nonzero(dense)
    np.testing.assert_array_equal(pointwise_format.decode(compact, 21), dense)


def test_format_rejects_bad_shapes_and_inconsistent_tensors():
    with pytest.raises(ValueError, match="filter_oi must have shape"):
        pointwise_format.encode(np.ones((4, 3, 3, 2)))
    compact = pointwise_format.encode(np.eye(4, 13, dtype=np.float32))
    with pytest.raises(ValueError, match="nonzero_mask must have shape"):
        pointwise_format.decode(compact, 17)
    short = pointwise_format.SparsePointwiseWeights(compact.nonzero_mask, compact.values[:-1])
    with pytest.raises(ValueError, match="one weight per set bit"):
        pointwise_format.decode(short, 13)
    mask = compact.nonzero_mask.copy()
    mask[0, 1] |= 1 << 7  # channel 15 of 13
    with pytest.raises(ValueError, match="input channels >= 13"):
        pointwise_format.decode(pointwise_format.SparsePointwiseWeights(mask, compact.values), 13)


def test_sparse_1x1_model_matches_keras_and_shrinks(pointwise_model):
    builtin = _builtin_bytes(pointwise_model)
    rewritten, reports = model_rewrite.replace_pattern_convs(builtin)
    assert [report.replaced for report in reports] == [True] * 4, reports
    assert {report.custom_op for report in reports} == {pointwise_format.OP_NAME}
    assert ct_tflite.count_pattern_ops(rewritten) == 4
    assert len(rewritten) < 0.45 * len(builtin)
    _assert_matches_keras(pointwise_model, rewritten, np.random.default_rng(2),
                          runs=((1, 1), (2, 2)), output_shape=(6, 5, 17))


def _block_sparsify_pointwise(model, rng, block, sparsity=SPARSITY):
    """Zeroes whole blocks of one input channel x `block` consecutive output
    channels, as block_size=(1, block) pruning leaves a 1x1 kernel."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1):
            kernel, bias = layer.get_weights()
            size = block if kernel.shape[-1] % block == 0 else 1
            blocks = kernel.reshape(-1, size)
            blocks[rng.random(len(blocks)) < sparsity] = 0.0
            layer.set_weights([kernel, rng.normal(size=bias.shape).astype(np.float32)])
    return model


@pytest.mark.parametrize("block", [16, 32])
def test_block_pruned_1x1_model_matches_keras(block):
    # 32, 64 and 48 output channels run the op's block mode (48 = a 32-wide
    # unit + a 16-wide one at block 32); 24 does not divide into blocks.
    inputs = keras.Input((9, 7, 24))
    x = keras.layers.Conv2D(32, 1, activation="relu")(inputs)
    x = keras.layers.Conv2D(64, 1, strides=2)(x)
    x = keras.layers.Conv2D(48, 1, activation="relu6")(x)
    x = keras.layers.Conv2D(24, 1)(x)
    model = _block_sparsify_pointwise(keras.Model(inputs, x), np.random.default_rng(7), block)
    builtin = _builtin_bytes(model)
    rewritten, reports = model_rewrite.replace_pattern_convs(builtin)
    assert [report.replaced for report in reports] == [True] * 4, reports
    _assert_matches_keras(model, rewritten, np.random.default_rng(8),
                          runs=((1, 1), (3, 2)), output_shape=(5, 4, 24))


def test_squeeze_excite_block_matches_keras():
    # The squeeze and excite convs see one pixel per image: the op's
    # few-pixel mode (batch 1 and 3), with channel counts that fill neither
    # a vector nor a register tile.
    inputs = keras.Input((7, 5, 37))
    squeezed = keras.layers.GlobalAveragePooling2D(keepdims=True)(inputs)
    x = keras.layers.Conv2D(9, 1, activation="swish")(squeezed)
    x = keras.layers.Conv2D(37, 1, activation="sigmoid")(x)
    outputs = keras.layers.Multiply()([inputs, x])
    model = _sparsify_pointwise(keras.Model(inputs, outputs), np.random.default_rng(9))
    with contextlib.redirect_stdout(io.StringIO()):
        content = ct_tflite.convert(model, decide_by="size")
    assert ct_tflite.count_pattern_ops(content) == 2
    _assert_matches_keras(model, content, np.random.default_rng(10),
                          runs=((1, 1), (3, 2)), output_shape=(7, 5, 37), tolerance=1e-5)


def test_barely_sparse_1x1_stays_builtin():
    model = keras.Sequential([keras.Input((4, 4, 16)), keras.layers.Conv2D(16, 1)])
    _sparsify_pointwise(model, np.random.default_rng(3), sparsity=0.3)
    rewritten, (report,) = model_rewrite.replace_pattern_convs(_builtin_bytes(model))
    assert not report.replaced
    assert "sparsity" in report.reason and str(pointwise_rewrite.MIN_SPARSITY) in report.reason
    assert ct_tflite.count_pattern_ops(rewritten) == 0


# -- corrupted files -----------------------------------------------------------


@pytest.fixture(scope="module")
def single_layer_bytes():
    model = keras.Sequential([keras.Input((5, 5, 13)), keras.layers.Conv2D(6, 1)])
    _sparsify_pointwise(model, np.random.default_rng(4), sparsity=0.85)
    rewritten, (report,) = model_rewrite.replace_pattern_convs(_builtin_bytes(model))
    assert report.replaced
    return rewritten


def _with_options(**changes):
    def change(_, operator):
        options = flexbuffers.Loads(bytes(operator.customOptions))
        operator.customOptions = np.frombuffer(bytes(flexbuffers.Dumps({**options, **changes})), np.uint8)

    return change


def _values_one_short(model, operator):
    tensor = model.subgraphs[0].tensors[operator.inputs[VALUES]]
    buffer = model.buffers[tensor.buffer]
    buffer.data = buffer.data[:-4]
    tensor.shape = np.array([len(buffer.data) // 4], np.int32)


def _set_bit(data, byte, bit):
    data = bytearray(data)
    data[byte] |= 1 << bit
    return bytes(data)


def test_corrupted_options_and_weights_give_clean_errors(tmp_path, single_layer_bytes):
    cases = {
        "format_version_2": (_with_options(format_version=2), "format_version"),
        "input_channels_wrong": (_with_options(input_channels=12), "channels"),
        "output_channels_zero": (_with_options(output_channels=0), "output_channels"),
        "stride_0": (_with_options(stride_w=0), "stride_w"),
        "activation_unknown": (_with_options(fused_activation="TANH"), "fused_activation"),
        "options_not_a_map": (tflite_helpers.set_options(flexbuffers.Dumps([1, 2])), "map"),
        "options_empty": (tflite_helpers.set_options(b""), "custom options"),
        "options_too_long": (tflite_helpers.set_options(b"\0" * 5000), "custom options"),
        # Row 0, byte 1 holds channels 8..15 of 13: bit 5 is channel 13.
        "mask_bit_past_last_channel": (
            tflite_helpers.set_buffer(NONZERO_MASK, lambda d: _set_bit(d, 1, 5)),
            "input channel >= 13",
        ),
        "mask_extra_kept_weight": (
            tflite_helpers.set_buffer(NONZERO_MASK, lambda d: bytes([0xFF, 0x1F]) + d[2:]),
            "values",
        ),
        "mask_wrong_shape": (
            tflite_helpers.set_buffer(NONZERO_MASK, lambda d: d[:-2], shape=[5, 2]),
            "nonzero_mask must have shape",
        ),
        "mask_as_int8": (
            tflite_helpers.set_buffer(
                NONZERO_MASK, lambda d: d, tensor_type=schema.TensorType.INT8
            ),
            "nonzero_mask",
        ),
        "values_one_short": (_values_one_short, "values"),
    }
    models = {
        name: tflite_helpers.edit_operator(single_layer_bytes, change)
        for name, (change, _) in cases.items()
    }
    models["unchanged"] = single_layer_bytes
    results = tflite_helpers.load_in_subprocess(tmp_path, models)
    assert results["unchanged"]["outcome"] == "ok", results["unchanged"]
    for name, (_, expected_text) in cases.items():
        assert results[name]["outcome"] == "error", f"{name} was accepted"
        assert expected_text in results[name]["message"], (name, results[name]["message"])
