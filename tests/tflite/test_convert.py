"""Exported pattern-sparse models match Keras when run in LiteRT."""

import keras
import numpy as np
import pytest
import tflite_helpers
from ai_edge_litert import interpreter as litert_interpreter
from ai_edge_litert import schema_py_generated as schema

import tf_clicktrain as ct
from tf_clicktrain import tflite as ct_tflite

TOLERANCE = 1e-4
BATCH_SIZES = (1, 5)


def _custom_op_names(tflite_bytes):
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    names = []
    for subgraph in model.subgraphs:
        for operator in subgraph.operators:
            code = model.operatorCodes[operator.opcodeIndex]
            if code.customCode is not None:
                names.append(code.customCode.decode())
    return names


def _assert_matches_keras(model, tflite_bytes, input_shape, expected_pattern_ops):
    assert ct_tflite.count_pattern_ops(tflite_bytes) == expected_pattern_ops
    interpreter = ct_tflite.Interpreter(model_content=tflite_bytes, num_threads=1)
    rng = np.random.default_rng(7)
    for batch in BATCH_SIZES:
        inputs = rng.normal(size=(batch, *input_shape)).astype(np.float32)
        expected = model.predict(inputs, verbose=0)
        actual = tflite_helpers.run_interpreter(interpreter, inputs)
        error = tflite_helpers.max_relative_error(actual, expected)
        assert error <= TOLERANCE, f"batch {batch}: max relative error {error}"
    return interpreter


CONV_CASES = {
    "3to13_stride1_same_bias": dict(inputs=3, filters=13, strides=1, padding="same"),
    "13to37_stride2_same_relu": dict(inputs=13, filters=37, strides=2, padding="same", activation="relu"),
    "37to3_stride1_valid_nobias_relu6": dict(inputs=37, filters=3, strides=1, padding="valid", use_bias=False, activation="relu6"),
    "13to13_stride2_valid": dict(inputs=13, filters=13, strides=2, padding="valid"),
    "13to13_stride2x1_same": dict(inputs=13, filters=13, strides=(2, 1), padding="same"),
    "3to13_dilation2_same_relu": dict(inputs=3, filters=13, dilation_rate=2, padding="same", activation="relu"),
    "13to37_dilation2_valid_nobias": dict(inputs=13, filters=37, dilation_rate=2, padding="valid", use_bias=False),
    # More than 256 input channels: uint16 channel indices.
    "300to5_wide_indices": dict(inputs=300, filters=5, padding="same"),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_pattern_conv_matches_keras(case):
    config = dict(CONV_CASES[case])
    input_shape = (11, 10, config.pop("inputs"))
    model = keras.Sequential([keras.Input(input_shape), keras.layers.Conv2D(kernel_size=3, **config)])
    tflite_helpers.sparsify_model(model, np.random.default_rng(0))
    tflite_bytes = ct_tflite.convert(model, decide_by="size")
    assert _custom_op_names(tflite_bytes) == [ct_tflite.compact_format.CONV_OP_NAME]
    _assert_matches_keras(model, tflite_bytes, input_shape, 1)


@pytest.mark.parametrize(
    "config",
    [
        dict(padding="same", activation="relu6"),
        dict(strides=2, padding="valid"),
        dict(dilation_rate=2, padding="same", use_bias=False),
    ],
    ids=["same_relu6", "stride2_valid", "dilation2_nobias"],
)
def test_pattern_depthwise_conv_matches_keras(config):
    input_shape = (12, 9, 13)
    model = keras.Sequential(
        [keras.Input(input_shape), keras.layers.DepthwiseConv2D(kernel_size=3, **config)]
    )
    tflite_helpers.sparsify_model(model, np.random.default_rng(1))
    tflite_bytes = ct_tflite.convert(model, decide_by="size")
    assert _custom_op_names(tflite_bytes) == [ct_tflite.compact_format.DEPTHWISE_CONV_OP_NAME]
    _assert_matches_keras(model, tflite_bytes, input_shape, 1)


def test_folded_batch_norm_and_relu_survive_export():
    input_shape = (10, 10, 13)
    model = keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(37, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(13, 3, padding="same", activation="relu"),
        ]
    )
    tflite_helpers.sparsify_model(model, np.random.default_rng(2))
    tflite_bytes = ct_tflite.convert(model, decide_by="size")
    # BatchNorm folded into the first conv, activations fused: only our ops.
    assert _custom_op_names(tflite_bytes) == [ct_tflite.compact_format.CONV_OP_NAME] * 2
    assert len(schema.ModelT.InitFromPackedBuf(tflite_bytes, 0).subgraphs[0].operators) == 2
    _assert_matches_keras(model, tflite_bytes, input_shape, 2)


def test_filter_with_all_kernels_removed_outputs_its_bias():
    input_shape = (8, 8, 13)
    conv = keras.layers.Conv2D(5, 3, padding="same")
    model = keras.Sequential([keras.Input(input_shape), conv])
    tflite_helpers.sparsify_layer(conv, np.random.default_rng(3), removed_filter=2)
    tflite_bytes = ct_tflite.convert(model, decide_by="size")
    interpreter = _assert_matches_keras(model, tflite_bytes, input_shape, 1)
    outputs = tflite_helpers.run_interpreter(
        interpreter, np.ones((1, *input_shape), np.float32)
    )
    np.testing.assert_allclose(outputs[..., 2], conv.get_weights()[1][2], rtol=1e-6)


def _residual_model(input_shape):
    inputs = keras.Input(input_shape)
    stem = keras.layers.Conv2D(13, 3, padding="same", activation="relu")(inputs)
    branch = keras.Sequential(
        [
            keras.Input(stem.shape[1:]),
            keras.layers.Conv2D(13, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.DepthwiseConv2D(3, padding="same"),
        ],
        name="nested_branch",
    )(stem)
    merged = keras.layers.Add()([stem, branch])
    down = keras.layers.Conv2D(37, 3, strides=2, padding="same", activation="relu6")(merged)
    shortcut = keras.layers.Conv2D(37, 1, strides=2)(merged)
    outputs = keras.layers.Add()([down, shortcut])
    return keras.Model(inputs, outputs)


def test_functional_model_with_residual_adds_and_nested_sequential():
    input_shape = (12, 12, 3)
    model = tflite_helpers.sparsify_model(_residual_model(input_shape), np.random.default_rng(4))
    tflite_bytes, reports = ct_tflite.convert(model, decide_by="size", return_report=True)
    assert sum(report.replaced for report in reports) == 4
    _assert_matches_keras(model, tflite_bytes, input_shape, 4)


def test_dense_conv_stays_builtin():
    input_shape = (8, 8, 13)
    model = keras.Sequential([keras.Input(input_shape), keras.layers.Conv2D(13, 3)])
    tflite_bytes, reports = ct_tflite.convert(model, return_report=True)
    assert _custom_op_names(tflite_bytes) == []
    assert [report.replaced for report in reports] == [False]
    assert "max_size_ratio" in reports[0].reason


def test_builtin_only_export_runs_on_stock_litert():
    input_shape = (12, 12, 3)
    model = tflite_helpers.sparsify_model(_residual_model(input_shape), np.random.default_rng(5))
    tflite_bytes = ct_tflite.convert(model, custom_ops=False)
    assert _custom_op_names(tflite_bytes) == []
    interpreter = litert_interpreter.Interpreter(model_content=tflite_bytes, num_threads=1)
    inputs = np.random.default_rng(6).normal(size=(2, *input_shape)).astype(np.float32)
    actual = tflite_helpers.run_interpreter(interpreter, inputs)
    assert tflite_helpers.max_relative_error(actual, model.predict(inputs, verbose=0)) <= TOLERANCE


def test_signature_is_preserved():
    input_shape = (12, 12, 3)
    model = tflite_helpers.sparsify_model(_residual_model(input_shape), np.random.default_rng(7))
    builtin_bytes = ct_tflite.convert(model, custom_ops=False)
    tflite_bytes = ct_tflite.convert(model, decide_by="size")
    interpreter = ct_tflite.Interpreter(model_content=tflite_bytes)
    stock = litert_interpreter.Interpreter(model_content=builtin_bytes)
    assert interpreter.get_signature_list() == stock.get_signature_list()
    (key,) = interpreter.get_signature_list()
    (input_name,) = interpreter.get_signature_list()[key]["inputs"]
    inputs = np.random.default_rng(8).normal(size=(3, *input_shape)).astype(np.float32)
    outputs = interpreter.get_signature_runner(key)(**{input_name: inputs})
    (actual,) = outputs.values()
    assert tflite_helpers.max_relative_error(actual, model.predict(inputs, verbose=0)) <= TOLERANCE


def test_model_path_and_file_size_shrink_with_compression(tmp_path):
    input_shape = (16, 16, 32)
    model = keras.Sequential(
        [keras.Input(input_shape), keras.layers.Conv2D(64, 3, padding="same"),
         keras.layers.Conv2D(64, 3, padding="same")]
    )
    tflite_helpers.sparsify_model(model, np.random.default_rng(9))
    dense_bytes = ct_tflite.convert(model, custom_ops=False)
    tflite_bytes, reports = ct_tflite.convert(model, decide_by="size", return_report=True)
    kept = sum(report.kept_weights for report in reports)
    total = sum(report.total_weights for report in reports)
    compression = total / kept
    size_ratio = len(tflite_bytes) / len(dense_bytes)
    assert size_ratio <= 1.2 / compression, (size_ratio, compression)
    path = tmp_path / "pruned.tflite"
    path.write_bytes(tflite_bytes)
    interpreter = ct_tflite.Interpreter(model_path=str(path))
    inputs = np.random.default_rng(10).normal(size=(1, *input_shape)).astype(np.float32)
    actual = tflite_helpers.run_interpreter(interpreter, inputs)
    assert tflite_helpers.max_relative_error(actual, model.predict(inputs, verbose=0)) <= TOLERANCE


def test_model_pruned_by_the_core_trains_exports_and_runs():
    input_shape = (12, 12, 3)
    model = keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4),
        ]
    )
    schedule = ct.ClickTrainSchedule(selection_step=2, hard_pruning_step=4, connectivity_sparsity=0.5)
    pruned = ct.prune_pattern(model, schedule=schedule)
    pruned.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(11)
    images = rng.normal(size=(64, *input_shape)).astype(np.float32)
    labels = rng.integers(0, 4, size=64)
    pruned.fit(images, labels, batch_size=8, epochs=1, verbose=0, callbacks=[ct.UpdatePruningStep()])
    final = ct.strip_pruning(pruned)
    tflite_bytes, reports = ct_tflite.convert(final, decide_by="size", return_report=True)
    assert sum(report.replaced for report in reports) == 2  # the first conv stays dense
    _assert_matches_keras(final, tflite_bytes, input_shape, 2)


def test_unstripped_model_is_refused_with_a_hint():
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3), keras.layers.Conv2D(8, 3)]
    )
    pruned = ct.prune_pattern(model, schedule=ct.ClickTrainSchedule(selection_step=1, hard_pruning_step=2))
    with pytest.raises(ValueError, match="strip_pruning"):
        ct_tflite.convert(pruned)
