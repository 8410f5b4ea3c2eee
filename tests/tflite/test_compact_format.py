"""The compact weight format: patterns read from zeros, the kernel index, round
trips in NumPy and through the delegate, and files of format version 1."""

import os

import keras
import numpy as np
import pytest
import tflite_helpers
from ai_edge_litert import interpreter as litert_interpreter
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers

from tf_clicktrain import tflite as ct_tflite
from tf_clicktrain.tflite import compact_format

DATA = os.path.join(os.path.dirname(__file__), "data")


def _pattern_sparse_filter(rng, output_channels, input_channels, kept=0.7):
    masks = np.zeros((output_channels, 9, input_channels), np.float32)
    for o in range(output_channels):
        for i in range(input_channels):
            if rng.random() < kept:
                pattern = tflite_helpers.PATTERNS[rng.integers(4)]
                masks[o, :, i] = tflite_helpers.pattern_bits(pattern)
    values = rng.normal(size=masks.shape).astype(np.float32)
    return (values * masks).reshape(output_channels, 3, 3, input_channels)


@pytest.mark.parametrize("channels", [(3, 13), (37, 5), (1, 1), (4, 300)])
def test_encode_decode_round_trip(channels):
    rng = np.random.default_rng(0)
    dense = _pattern_sparse_filter(rng, *channels)
    dense[0] = 0  # a filter whose kernels are all removed
    dense[-1, 1, 1, -1] = 1.0  # the last pair kept: the final gap is 0
    compact = compact_format.encode_conv(dense)
    np.testing.assert_array_equal(compact_format.decode(compact, channels[1]), dense)


def test_pattern_table_is_the_set_of_non_zero_positions():
    rng = np.random.default_rng(1)
    dense = _pattern_sparse_filter(rng, 8, 6)
    compact = compact_format.encode_conv(dense)
    assert set(compact.pattern_masks.tolist()) <= set(tflite_helpers.PATTERNS)
    assert compact.num_kernels == np.count_nonzero(compact_format.kernel_masks(dense))
    assert compact.values.size == 4 * compact.num_kernels
    assert np.count_nonzero(compact.values) == np.count_nonzero(dense)


def test_index_lists_kernels_in_pair_order_with_their_patterns():
    rng = np.random.default_rng(2)
    dense = _pattern_sparse_filter(rng, 4, 9)
    compact = compact_format.encode_conv(dense)
    pairs, patterns = compact_format.kernel_pairs_and_patterns(compact)
    masks = compact_format.kernel_masks(dense).reshape(-1)
    np.testing.assert_array_equal(pairs, np.flatnonzero(masks))
    np.testing.assert_array_equal(compact.pattern_masks[patterns], masks[pairs])
    # Values follow the same order: kernel after kernel, positions ascending.
    first = dense.reshape(4, 9, 9)[pairs[0] // 9, :, pairs[0] % 9]
    np.testing.assert_array_equal(compact.values[:4], first[first != 0])


@pytest.mark.parametrize("kept", [0.28, 0.5, 0.05])
def test_kernel_index_comes_within_a_few_percent_of_the_entropy(kept):
    # Which of a 512 x 512 layer's kernels are kept, at random, plus a 2-bit
    # pattern id per kept kernel: the entropy bound, against the bytes.
    rng = np.random.default_rng(3)
    keep = rng.random((512, 512)) < kept
    masks = np.where(keep, np.asarray(tflite_helpers.PATTERNS)[rng.integers(0, 4, keep.shape)], 0)
    bits = (masks[:, None, :] >> np.arange(9)[None, :, None]) & 1
    compact = compact_format.encode_conv(bits.reshape(512, 3, 3, 512).astype(np.float32))
    density = keep.mean()
    entropy = -density * np.log2(density) - (1 - density) * np.log2(1 - density)
    bound_bytes = (keep.size * entropy + 2 * keep.sum()) / 8
    assert compact.kernel_index.nbytes <= 1.03 * bound_bytes + 16
    # Never more than a bitmap and the ids.
    assert compact.kernel_index.nbytes <= (keep.size + 2 * keep.sum()) / 8 + 16


def test_depthwise_kernels_read_their_own_channel():
    rng = np.random.default_rng(3)
    dense = _pattern_sparse_filter(rng, 1, 11).reshape(1, 3, 3, 11)
    dense[..., 4] = 0
    compact = compact_format.encode_depthwise(dense)
    pairs, _ = compact_format.kernel_pairs_and_patterns(compact)
    assert compact.pairs == 11 and 4 not in pairs
    rebuilt = compact_format.decode(compact, 11)
    diagonal = rebuilt[np.arange(11), :, :, np.arange(11)]  # [C, 3, 3]
    np.testing.assert_array_equal(diagonal.transpose(1, 2, 0), dense[0])


def test_single_pattern_layer_has_no_id_bits():
    dense = np.zeros((8, 3, 3, 8), np.float32)
    dense[:, 1, 1, :] = np.eye(8)  # every filter keeps its own channel's center
    compact = compact_format.encode_conv(dense)
    assert compact.num_patterns == 1
    np.testing.assert_array_equal(compact_format.decode(compact, 8), dense)
    # Gaps 0, then 8 seven times (pair 9 * o is filter o's channel o), then
    # 0 to the end: fewest bits with gap_bits 2 (3 + 7 * 5 + 3 = 41), and
    # no id bits.
    assert compact.kernel_index[0] == 2 and compact.kernel_index.size == 1 + 6


def test_all_zero_filter_is_not_encoded():
    assert compact_format.encode_conv(np.zeros((2, 3, 3, 2), np.float32)) is None


def test_kernel_masks_rejects_non_3x3_filters():
    with pytest.raises(ValueError, match="filter_ohwi must have shape"):
        compact_format.kernel_masks(np.zeros((2, 5, 5, 2)))


@pytest.mark.parametrize("corrupt, message", [
    (lambda index: index[:-1], "ends inside"),
    (lambda index: np.append(index, 0), "last byte"),
    (lambda index: np.concatenate([[32], index[1:]]), "gap_bits"),
    (lambda index: np.concatenate([index[:1], np.full(index.size - 1, 255)]), "ends inside"),
])
def test_decoding_a_malformed_index_names_it(corrupt, message):
    compact = compact_format.encode_conv(_pattern_sparse_filter(np.random.default_rng(4), 5, 7))
    broken = compact.__class__(**{**compact.__dict__, "kernel_index": corrupt(compact.kernel_index)})
    with pytest.raises(ValueError, match=message):
        compact_format.kernel_pairs_and_patterns(broken)


# ------------------------------------------- through the delegate, both versions


def _options(tflite_bytes):
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    return [
        flexbuffers.Loads(bytes(operator.customOptions))
        for operator in model.subgraphs[0].operators
        if operator.customOptions is not None
    ]


def _run(interpreter, inputs):
    return tflite_helpers.run_interpreter(interpreter, inputs)


@pytest.mark.parametrize("channels", [(13, 9), (300, 6)])
def test_exported_file_matches_builtin_file(channels):
    # Conv (uint8-range and > 256 input channels) and depthwise, float.
    inputs, outputs = channels
    model = keras.Sequential([
        keras.Input((7, 7, inputs)),
        keras.layers.Conv2D(outputs, 3, padding="same", activation="relu"),
        keras.layers.DepthwiseConv2D(3, padding="same"),
    ])
    tflite_helpers.sparsify_model(model, np.random.default_rng(5))
    custom = ct_tflite.convert(model, decide_by="size")
    builtin = ct_tflite.convert(model, custom_ops=False)
    assert ct_tflite.count_pattern_ops(custom) == 2
    assert [o["format_version"] for o in _options(custom)] == [compact_format.FORMAT_VERSION] * 2
    images = np.random.default_rng(6).normal(size=(2, 7, 7, inputs)).astype(np.float32)
    expected = _run(litert_interpreter.Interpreter(model_content=builtin), images)
    actual = _run(ct_tflite.Interpreter(model_content=custom, num_threads=1), images)
    assert tflite_helpers.max_relative_error(actual, expected) < 1e-5


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_files_of_format_version_1_keep_loading(kind):
    # Written by tf_clicktrain 0.1.0: a pattern conv and a pattern depthwise
    # conv (float, or int8 with int8 I/O), next to the same model's
    # builtin-only file.
    with open(os.path.join(DATA, f"format1_{kind}.tflite"), "rb") as f:
        custom = f.read()
    with open(os.path.join(DATA, f"format1_{kind}_builtin.tflite"), "rb") as f:
        builtin = f.read()
    assert [o["format_version"] for o in _options(custom)] == [1, 1]
    assert ct_tflite.count_pattern_ops(custom) == 2
    interpreter = ct_tflite.Interpreter(model_content=custom, num_threads=1)
    rng = np.random.default_rng(7)
    if kind == "int8":
        images = rng.integers(-128, 128, (2, 7, 7, 13)).astype(np.int8)
        reference = litert_interpreter.Interpreter(
            model_content=builtin,
            experimental_op_resolver_type=litert_interpreter.OpResolverType.BUILTIN_REF)
        np.testing.assert_array_equal(_run(interpreter, images), _run(reference, images))
    else:
        images = rng.normal(size=(2, 7, 7, 13)).astype(np.float32)
        expected = _run(litert_interpreter.Interpreter(model_content=builtin), images)
        assert tflite_helpers.max_relative_error(_run(interpreter, images), expected) < 1e-5
