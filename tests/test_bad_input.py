"""Every public entry point, fed bad input: a clear error, no partial state.

Each case names the entry point and the bad value; the error must be of the
expected type and its message must name what was wrong. Cases that create
no object also check that the input object is left as it was. Corrupted
.tflite files go through ct.tflite.Interpreter in a child process (a native
crash would otherwise end pytest); the field-by-field custom-op corruptions
are in tests/tflite/test_robustness.py.
"""

import json
import logging
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tf_clicktrain as ct
from tests.conftest import random_data
from tests.conftest import small_cnn

CANDIDATES = ct.patterns.candidate_patterns(4)


def conv():
    return keras.layers.Conv2D(4, 3)


def _model_variables(model):
    return [v.numpy().copy() for v in model.variables]


# (id, callable, expected exception, text the message must contain)
CASES = [
    # prune_pattern: wrong types and out-of-range values.
    ("prune_none", lambda: ct.prune_pattern(None), ValueError, "to_prune"),
    ("prune_string", lambda: ct.prune_pattern("conv"), ValueError, "to_prune"),
    ("prune_list_with_string", lambda: ct.prune_pattern([conv(), "x"]), ValueError, "list"),
    ("prune_list_with_model", lambda: ct.prune_pattern([small_cnn()]), ValueError, "list"),
    ("num_patterns_0", lambda: ct.prune_pattern(conv(), num_patterns=0), ValueError, "num_patterns"),
    ("num_patterns_negative", lambda: ct.prune_pattern(conv(), num_patterns=-2), ValueError, "num_patterns"),
    ("num_patterns_float", lambda: ct.prune_pattern(conv(), num_patterns=1.5), ValueError, "num_patterns"),
    ("num_patterns_bool", lambda: ct.prune_pattern(conv(), num_patterns=True), ValueError, "num_patterns"),
    ("num_patterns_string", lambda: ct.prune_pattern(conv(), num_patterns="4"), ValueError, "num_patterns"),
    ("num_patterns_above_candidates", lambda: ct.prune_pattern(conv(), entries_per_kernel=9), ValueError, "num_patterns"),
    ("entries_0", lambda: ct.prune_pattern(conv(), entries_per_kernel=0), ValueError, "entries_per_kernel"),
    ("entries_10", lambda: ct.prune_pattern(conv(), entries_per_kernel=10), ValueError, "entries_per_kernel"),
    ("entries_string", lambda: ct.prune_pattern(conv(), entries_per_kernel="4"), ValueError, "entries_per_kernel"),
    ("connectivity_1", lambda: ct.prune_pattern(conv(), connectivity_sparsity=1.0), ValueError, "connectivity_sparsity"),
    ("connectivity_negative", lambda: ct.prune_pattern(conv(), connectivity_sparsity=-0.1), ValueError, "connectivity_sparsity"),
    ("connectivity_nan", lambda: ct.prune_pattern(conv(), connectivity_sparsity=float("nan")), ValueError, "connectivity_sparsity"),
    ("connectivity_string", lambda: ct.prune_pattern(conv(), connectivity_sparsity="0.5"), ValueError, "connectivity_sparsity"),
    ("connectivity_list_length", lambda: ct.prune_pattern(small_cnn(), connectivity_sparsity=[0.5]), ValueError, "one value per"),
    ("connectivity_dict_unknown", lambda: ct.prune_pattern(small_cnn(), connectivity_sparsity={"nope": 0.5}), ValueError, "nope"),
    ("connectivity_rule_out_of_range", lambda: ct.prune_pattern(small_cnn(), connectivity_sparsity=lambda i, n: 1.5), ValueError, "connectivity_sparsity"),
    ("unstructured_policy", lambda: ct.prune_pattern(small_cnn(), unstructured="dense"), ValueError, "unstructured"),
    ("unstructured_sparsity_1", lambda: ct.prune_pattern(small_cnn(), unstructured_sparsity=1.0), ValueError, "unstructured_sparsity"),
    ("importance_unknown", lambda: ct.prune_pattern(conv(), importance="fisher"), ValueError, "importance"),
    ("importance_decay_1", lambda: ct.prune_pattern(conv(), importance_decay=1.0), ValueError, "importance_decay"),
    ("library_shape", lambda: ct.prune_pattern(conv(), pattern_library=np.ones((4, 8))), ValueError, "pattern_library"),
    ("library_not_binary", lambda: ct.prune_pattern(conv(), pattern_library=np.full((4, 9), 0.5)), ValueError, "pattern_library"),
    ("library_wrong_entries", lambda: ct.prune_pattern(conv(), pattern_library=np.eye(9)[:4]), ValueError, "pattern_library"),
    ("skip_layers_string", lambda: ct.prune_pattern(small_cnn(), skip_layers="conv1"), ValueError, "skip_layers"),
    ("skip_layers_unknown", lambda: ct.prune_pattern(small_cnn(), skip_layers=["nope"]), ValueError, "nope"),
    ("schedule_int", lambda: ct.prune_pattern(conv(), schedule=42), ValueError, "schedule"),
    ("schedule_string", lambda: ct.prune_pattern(conv(), schedule="constant"), ValueError, "schedule"),
    ("schedule_unknown_class", lambda: ct.prune_pattern(conv(), schedule={"class_name": "Nope", "config": {}}), TypeError, "Nope"),
    # Models that cannot be pruned; unsupported layers asked for explicitly.
    ("empty_sequential", lambda: ct.prune_pattern(keras.Sequential([])), ValueError, "no layers"),
    ("subclassed_model", lambda: ct.prune_pattern(_Subclassed()), ValueError, "subclassed"),
    ("already_wrapped", lambda: ct.prune_pattern(ct.prune_pattern(conv())), ValueError, "already wrapped"),
    ("explicit_separable_1d", lambda: ct.prune_pattern(keras.layers.SeparableConv1D(4, 3)), ValueError, "SeparableConv1D"),
    ("explicit_depthwise_1d", lambda: ct.prune_pattern(keras.layers.DepthwiseConv1D(3)), ValueError, "DepthwiseConv1D"),
    ("explicit_conv_lstm", lambda: ct.prune_pattern(keras.layers.ConvLSTM2D(4, 3)), ValueError, "ConvLSTM2D"),
    ("explicit_batch_norm", lambda: ct.prune_pattern(keras.layers.BatchNormalization()), ValueError, "BatchNormalization"),
    ("explicit_einsum_dense", lambda: ct.prune_pattern(keras.layers.EinsumDense("ab,bc->ac", output_shape=4)), ValueError, "EinsumDense"),
    ("explicit_in_list", lambda: ct.prune_pattern([conv(), keras.layers.Dropout(0.1)]), ValueError, "Dropout"),
    ("wrapper_not_a_layer", lambda: ct.PatternPruningWrapper("conv"), ValueError, "layer"),
    # Schedules with impossible phases or values.
    ("clicktrain_hard_before_selection", lambda: ct.ClickTrainSchedule(10, 5), ValueError, "hard_pruning_step"),
    ("clicktrain_negative_selection", lambda: ct.ClickTrainSchedule(-1, 5), ValueError, "selection_step"),
    ("clicktrain_float_step", lambda: ct.ClickTrainSchedule(1.5, 5), ValueError, "selection_step"),
    ("clicktrain_reselection_before", lambda: ct.ClickTrainSchedule(5, 10, reselection_steps=[3]), ValueError, "reselection"),
    ("clicktrain_reselection_after_hard", lambda: ct.ClickTrainSchedule(5, 10, reselection_steps=[11]), ValueError, "reselection"),
    ("clicktrain_reselection_string", lambda: ct.ClickTrainSchedule(1, 5, reselection_steps="3"), ValueError, "reselection"),
    ("clicktrain_penalty_negative", lambda: ct.ClickTrainSchedule(1, 5, penalty=-1.0), ValueError, "penalty"),
    ("clicktrain_penalty_inf", lambda: ct.ClickTrainSchedule(1, 5, penalty=float("inf")), ValueError, "penalty"),
    ("clicktrain_connectivity_1", lambda: ct.ClickTrainSchedule(1, 5, connectivity_sparsity=1.0), ValueError, "connectivity_sparsity"),
    ("from_epochs_zero_steps", lambda: ct.ClickTrainSchedule.from_epochs(0, 1, 2), ValueError, "steps_per_epoch"),
    ("from_epochs_string", lambda: ct.ClickTrainSchedule.from_epochs("4", 1, 2), ValueError, "steps_per_epoch"),
    ("from_epochs_hard_before_selection", lambda: ct.ClickTrainSchedule.from_epochs(4, 3, 2), ValueError, "hard_pruning_step"),
    ("constant_sparsity_1", lambda: ct.ConstantSparsity(1.0, 0), ValueError, "target_sparsity"),
    ("constant_end_before_begin", lambda: ct.ConstantSparsity(0.5, 10, end_step=5), ValueError, "end_step"),
    ("constant_frequency_0", lambda: ct.ConstantSparsity(0.5, 0, frequency=0), ValueError, "frequency"),
    ("polynomial_end_equals_begin", lambda: ct.PolynomialDecay(0.1, 0.5, 10, 10), ValueError, "end_step"),
    ("polynomial_power_nan", lambda: ct.PolynomialDecay(0.1, 0.5, 0, 10, power=float("nan")), ValueError, "power"),
    ("polynomial_final_1", lambda: ct.PolynomialDecay(0.1, 1.0, 0, 10), ValueError, "final_sparsity"),
    # Callbacks.
    ("summaries_empty_dir", lambda: ct.PruningSummaries(""), ValueError, "log_dir"),
    ("summaries_int_dir", lambda: ct.PruningSummaries(3), ValueError, "log_dir"),
    ("summaries_update_freq_0", lambda: ct.PruningSummaries("logs", update_freq=0), ValueError, "update_freq"),
    # strip / stats / pretrained / distribute helpers.
    ("strip_none", lambda: ct.strip_pruning(None), ValueError, "strip_pruning"),
    ("strip_string", lambda: ct.strip_pruning("model"), ValueError, "strip_pruning"),
    ("model_stats_none", lambda: ct.model_stats(None), ValueError, "model_stats"),
    ("pretrained_none", lambda: ct.load_pretrained_weights(ct.prune_pattern(small_cnn()), None), ValueError, "source"),
    ("pretrained_missing_file", lambda: ct.load_pretrained_weights(ct.prune_pattern(small_cnn()), "/nonexistent/w.weights.h5"), (FileNotFoundError, OSError, ValueError), "nonexistent"),
    ("pretrained_wrong_architecture", lambda: ct.load_pretrained_weights(ct.prune_pattern(small_cnn()), small_cnn(channels=(4, 4, 4))), ValueError, "conv0"),
    ("fix_multi_worker_none", lambda: ct.distribute.fix_multi_worker_fit(None), ValueError, "model"),
    # Saving helpers.
    ("save_model_not_model", lambda: ct.save_model("model", "/tmp/x.keras"), ValueError, "model"),
    ("save_model_extension", lambda: ct.save_model(small_cnn(), "/tmp/model.h5"), ValueError, ".keras"),
    ("save_model_path_type", lambda: ct.save_model(small_cnn(), 3), ValueError, "filepath"),
    ("save_model_missing_dir", lambda: ct.save_model(small_cnn(), "/nonexistent/dir/m.keras"), FileNotFoundError, "/nonexistent/dir"),
    ("save_weights_extension", lambda: ct.save_weights(small_cnn(), "/tmp/w.h5"), ValueError, ".weights.h5"),
    ("save_tflite_not_bytes", lambda: ct.tflite.save("not bytes", "/tmp/x.tflite"), ValueError, "bytes"),
    ("save_tflite_extension", lambda: ct.tflite.save(b"TFL3", "/tmp/x.bin"), ValueError, ".tflite"),
    ("write_bytes_missing_dir", lambda: ct.saving.write_bytes("/nonexistent/dir/x", b"1"), FileNotFoundError, "/nonexistent/dir"),
    # Pattern math (public, NumPy).
    ("candidates_0", lambda: ct.patterns.candidate_patterns(0), ValueError, "entries_per_kernel"),
    ("select_bad_shape", lambda: ct.patterns.select_patterns_and_kernels(np.ones((4, 8)), 2, 0.5, candidates=CANDIDATES), ValueError, "shape"),
    ("select_nan", lambda: ct.patterns.select_patterns_and_kernels(np.full((4, 9), np.nan), 2, 0.5, candidates=CANDIDATES), ValueError, "NaN"),
    ("select_negative", lambda: ct.patterns.select_patterns_and_kernels(-np.ones((4, 9)), 2, 0.5, candidates=CANDIDATES), ValueError, "non-negative"),
    ("select_no_candidates", lambda: ct.patterns.select_patterns_and_kernels(np.ones((4, 9)), 2, 0.5), ValueError, "candidates"),
    ("select_k_too_large", lambda: ct.patterns.select_pattern_set(np.ones((4, 9)), CANDIDATES, 1000), ValueError, "num_patterns"),
    ("kernel_rows_5x5", lambda: ct.patterns.to_kernel_rows(np.ones((5, 5, 1, 1))), ValueError, "shape"),
    ("depth_increasing_1_5", lambda: ct.patterns.depth_increasing(0.2, 1.5), ValueError, "last"),
    ("kernels_to_keep_nan", lambda: ct.patterns.kernels_to_keep(np.ones(4), float("nan")), ValueError, "sparsity"),
    ("describe_2d", lambda: ct.patterns.describe_pattern_sparsity(np.ones((2, 2))), ValueError, "shape"),
    # TFLite conversion of models that cannot be converted.
    ("convert_none", lambda: ct.tflite.convert(None), ValueError, "model"),
    ("convert_wrapped_never_trained", lambda: ct.tflite.convert(ct.prune_pattern(small_cnn())), ValueError, "strip_pruning"),
    ("replace_pattern_convs_junk", lambda: ct.tflite.replace_pattern_convs(b"junk"), ValueError, "TFL3"),
    ("count_pattern_ops_junk", lambda: ct.tflite.count_pattern_ops(b"junk"), ValueError, "TFL3"),
    ("interpreter_no_model", lambda: ct.tflite.Interpreter(), ValueError, "model_path"),
    ("interpreter_missing_file", lambda: ct.tflite.Interpreter(model_path="/nonexistent.tflite"), ValueError, "nonexistent.tflite"),
    ("interpreter_empty_bytes", lambda: ct.tflite.Interpreter(model_content=b""), ValueError, "model"),
]


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3)

    def call(self, inputs):
        return self.conv(inputs)


@pytest.mark.parametrize("name,call,error,text", CASES, ids=[case[0] for case in CASES])
def test_bad_argument_raises_clear_error(name, call, error, text):
    with pytest.raises(error) as raised:
        call()
    assert text.lower() in str(raised.value).lower(), (name, str(raised.value))


def test_prune_pattern_leaves_input_model_untouched_on_error():
    model = small_cnn()
    before = _model_variables(model)
    layers_before = list(model.layers)
    with pytest.raises(ValueError, match="connectivity_sparsity"):
        ct.prune_pattern(model, connectivity_sparsity=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="skip_layers"):
        ct.prune_pattern(model, skip_layers=["missing"])
    assert list(model.layers) == layers_before
    assert not ct.pruning_wrappers(model)
    for a, b in zip(before, _model_variables(model)):
        np.testing.assert_array_equal(a, b)


def test_model_without_eligible_layer_warns_and_returns_clone(caplog):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Activation("relu")])
    with caplog.at_level(logging.WARNING):
        pruned = ct.prune_pattern(model)
    assert "no layer eligible" in caplog.text
    assert pruned is not model and not ct.pruning_wrappers(pruned)


def test_strip_never_trained_model_warns_and_returns_dense_weights(caplog):
    pruned = ct.prune_pattern(small_cnn())
    with caplog.at_level(logging.WARNING):
        stripped = ct.strip_pruning(pruned)
    assert "has not reached the hard pruning phase" in caplog.text
    assert not ct.pruning_wrappers(stripped)
    np.testing.assert_array_equal(
        stripped.get_layer("conv1").kernel.numpy(),
        pruned.get_layer("prune_pattern_conv1").layer.kernel.numpy(),
    )


def test_fit_without_update_pruning_step_names_the_callback():
    pruned = ct.prune_pattern(small_cnn())
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    x, y = random_data(16)
    with pytest.raises(Exception, match="UpdatePruningStep"):
        pruned.fit(x, y, epochs=1, batch_size=8, verbose=0)


def _pruned_before_selection(importance):
    schedule = ct.ClickTrainSchedule(selection_step=2, hard_pruning_step=4)
    pruned = ct.prune_pattern(small_cnn(), schedule=schedule, importance=importance)
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    x, y = random_data(16)
    pruned.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False,
               callbacks=[ct.UpdatePruningStep()])  # steps 0, 1: dense
    return pruned, x, y


def _pruning_state(model):
    return [
        (w.name, [v.numpy().copy() for v in w.weights if "kernel" not in v.path.split("/")[-1]
                  or "mask" in v.path or "pattern" in v.path])
        for w in ct.pruning_wrappers(model)
    ]


@pytest.mark.parametrize("layer,bad,importance", [
    ("conv2", np.nan, "magnitude"),
    ("conv2", np.inf, "magnitude"),
    ("pointwise", np.nan, "taylor_accumulated"),
])
def test_non_finite_weights_at_selection_stop_with_no_wrapper_updated(layer, bad, importance):
    pruned, x, y = _pruned_before_selection(importance)
    kernel = pruned.get_layer(f"prune_pattern_{layer}").layer.kernel
    value = kernel.numpy()
    value[0, 0, 0, 0] = bad
    kernel.assign(value)
    before = _pruning_state(pruned)
    with pytest.raises(ValueError, match=f"'{layer}'.*NaN or Inf"):
        pruned.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False,
                   callbacks=[ct.UpdatePruningStep()])
    after = _pruning_state(pruned)
    for (name, values), (_, values_after) in zip(before, after):
        for a, b in zip(values, values_after):
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert all(int(w.selection_count.numpy()) == 0 for w in ct.pruning_wrappers(pruned))


def test_non_finite_gradients_at_selection_stop_with_clear_error():
    pruned, x, y = _pruned_before_selection("taylor_accumulated")
    wrapper = pruned.get_layer("prune_pattern_conv1")
    importance = wrapper.pruned[0].importance
    value = importance.numpy()
    value[1, 1, 0, 0] = np.inf  # What an overflowing gradient leaves behind.
    importance.assign(value)
    with pytest.raises(ValueError, match="'conv1'.*Taylor importance.*NaN or Inf"):
        pruned.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False,
                   callbacks=[ct.UpdatePruningStep()])
    assert all(int(w.selection_count.numpy()) == 0 for w in ct.pruning_wrappers(pruned))


def test_strip_and_convert_never_trained_model():
    pruned = ct.prune_pattern(small_cnn())
    stripped = ct.strip_pruning(pruned)
    tflite_bytes = ct.tflite.convert(stripped, decide_by="size")  # Dense: nothing to compact.
    assert ct.tflite.count_pattern_ops(tflite_bytes) == 0


# ------------------------------------------------------------- .tflite files

def _tflite_cases(good):
    rng = np.random.default_rng(4)
    cases = {"unchanged": good, "empty": b"", "not_a_flatbuffer": b"\x00" * 64,
             "text": b"this is not a model at all"}
    for length in (4, 8, 16, 64, len(good) // 4, len(good) // 2, len(good) - 16, len(good) - 1):
        cases[f"truncated_{length}"] = good[:length]
    data = bytearray(good)
    for bit in rng.choice(8 * min(len(good), 256), size=24, replace=False):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        cases[f"header_bit_{bit}"] = bytes(flipped)
    for bit in rng.choice(8 * len(good), size=24, replace=False):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        cases[f"bit_{bit}"] = bytes(flipped)
    return cases


def test_truncated_and_bit_flipped_tflite_files_fail_cleanly(tmp_path):
    schedule = ct.ConstantSparsity(0.5, begin_step=0)
    pruned = ct.prune_pattern(small_cnn(), schedule=schedule)
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    x, y = random_data(16)
    pruned.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[ct.UpdatePruningStep()])
    good = ct.tflite.convert(ct.strip_pruning(pruned), decide_by="size")
    assert ct.tflite.count_pattern_ops(good) > 0
    paths = []
    for name, content in _tflite_cases(good).items():
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(content)
        paths.append(str(path))
    script = os.path.join(os.path.dirname(__file__), "tflite", "load_models.py")
    completed = subprocess.run([sys.executable, script, *paths], capture_output=True,
                               text=True, timeout=300)
    results = {}
    for line in completed.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[os.path.basename(result["file"])[: -len(".tflite")]] = result
    assert completed.returncode == 0, (
        f"loader crashed after {len(results)} of {len(paths)} files: {completed.stderr[-2000:]}"
    )
    assert len(results) == len(paths)
    assert results["unchanged"]["outcome"] == "ok"
    for name, result in results.items():
        if name in ("empty", "not_a_flatbuffer", "text") or name.startswith("truncated"):
            assert result["outcome"] == "error", (name, result)
            assert result["message"], name
        # A flipped bit either breaks a checked field (error) or changes a
        # weight (a valid, different model): never a crash.
        assert result["outcome"] in ("ok", "error"), (name, result)
