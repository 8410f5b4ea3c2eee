"""Which layers `convert` replaces: by measured speed, by size, or by a callable."""

import time
import warnings

import keras
import numpy as np
import pytest
import tflite_helpers
from ai_edge_litert import interpreter as litert_interpreter
from ai_edge_litert import schema_py_generated as schema

from tf_clicktrain import tflite as ct_tflite
from tf_clicktrain.tflite import converter
from tf_clicktrain.tflite import model_rewrite
from tf_clicktrain.tflite import native_library
from tf_clicktrain.tflite import speed_decision

CONV = ct_tflite.compact_format.CONV_OP_NAME
DEPTHWISE = ct_tflite.compact_format.DEPTHWISE_CONV_OP_NAME
_BUILTIN_NAMES = {
    value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")
}


def _operators(tflite_bytes):
    """`(op name, output elements)` of every operator; custom ops by their name."""
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    subgraph = model.subgraphs[0]
    found = []
    for operator in subgraph.operators:
        code = model.operatorCodes[operator.opcodeIndex]
        if code.customCode:
            name = code.customCode.decode()
        else:
            name = _BUILTIN_NAMES[max(code.builtinCode, code.deprecatedBuiltinCode)]
        found.append((name, int(np.prod(subgraph.tensors[operator.outputs[0]].shape))))
    return found


class FakeTimer:
    """Times a file as the sum over its operators of cost per output element.

    `per_custom_op` adds a cost for each custom op in a file (what a split
    XNNPACK partition would cost a whole model).
    """

    def __init__(self, cost_per_element, per_custom_op=0.0):
        self.cost_per_element = cost_per_element
        self.per_custom_op = per_custom_op
        self.calls = []

    def seconds(self, tflite_bytes):
        total = 0.0
        for name, elements in _operators(tflite_bytes):
            total += self.cost_per_element.get(name, 0.0) * elements
            if name.startswith("ClickTrain"):
                total += self.per_custom_op
        return total * 1e-6

    def __call__(self, models):
        self.calls.append(dict(models))
        return {name: [self.seconds(content)] for name, content in models.items()}


class RefusingTimer:
    def __call__(self, models):
        raise AssertionError("nothing should be timed")


# Custom conv twice as fast as CONV_2D, custom depthwise 3x slower.
COSTS = {"CONV_2D": 1.0, CONV: 0.5, "DEPTHWISE_CONV_2D": 1.0, DEPTHWISE: 3.0}


def _two_convs_and_a_depthwise():
    model = keras.Sequential(
        [
            keras.Input((12, 12, 8)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="big"),
            keras.layers.Conv2D(8, 3, strides=2, padding="same", name="small"),
            keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise"),
        ]
    )
    return tflite_helpers.sparsify_model(model, np.random.default_rng(0))


@pytest.fixture(scope="module")
def sparse_model():
    return _two_convs_and_a_depthwise()


@pytest.fixture(scope="module")
def builtin_bytes(sparse_model):
    return ct_tflite.convert(sparse_model, custom_ops=False)


def _rewrite(builtin_bytes, **kwargs):
    return converter.rewrite_builtin_file(builtin_bytes, **kwargs)


def _layer(report):
    """The Keras layer a report is about."""
    return next(name for name in ("big", "small", "depthwise") if f"/{name}" in report.name)


def _replaced(reports):
    return {_layer(report): report.replaced for report in reports}


def test_custom_op_replaces_a_layer_only_where_it_measured_faster(builtin_bytes):
    timer = FakeTimer(COSTS)
    tflite_bytes, reports = _rewrite(builtin_bytes, layer_timer=timer, model_timer=timer)
    assert _replaced(reports) == {"big": True, "small": True, "depthwise": False}
    assert [name for name, _ in _operators(tflite_bytes)] == [CONV, CONV, "DEPTHWISE_CONV_2D"]
    by_name = {_layer(report): report for report in reports}
    big, depthwise = by_name["big"], by_name["depthwise"]
    assert big.decided_by == "speed" and big.custom_op == CONV
    assert big.builtin_us == pytest.approx(12 * 12 * 8) and big.custom_us == pytest.approx(6 * 12 * 8)
    assert depthwise.decided_by == "speed" and depthwise.custom_op == DEPTHWISE
    assert depthwise.custom_us == pytest.approx(3 * depthwise.builtin_us)
    assert "not faster" in depthwise.reason
    assert [report.location for report in reports] == [(0, 0), (0, 1), (0, 2)]


def test_custom_op_must_beat_the_builtin_by_the_margin(builtin_bytes):
    barely = dict(COSTS, **{CONV: 1.0 / (speed_decision.MIN_SPEEDUP * 0.99)})
    _, reports = _rewrite(builtin_bytes, layer_timer=FakeTimer(barely), model_timer=FakeTimer(barely))
    assert not any(report.replaced for report in reports)


def test_timer_sees_one_operator_files_of_the_builtin_and_the_custom_op(builtin_bytes):
    timer = FakeTimer(COSTS)
    _rewrite(builtin_bytes, layer_timer=timer, whole_model_check=False)
    assert len(timer.calls) == 3
    first = timer.calls[0]
    assert [name for name, _ in _operators(first["builtin"])] == ["CONV_2D"]
    assert [name for name, _ in _operators(first[0])] == [CONV]


def test_equal_shapes_and_sparsity_are_timed_once():
    model = keras.Sequential(
        [keras.Input((10, 10, 8))]
        + [keras.layers.Conv2D(8, 3, padding="same", name=f"conv{i}") for i in range(3)]
    )
    tflite_helpers.sparsify_model(model, np.random.default_rng(1))
    for layer in model.layers[1:]:
        layer.set_weights(model.layers[0].get_weights())
    timer = FakeTimer(COSTS)
    builtin = ct_tflite.convert(model, custom_ops=False)
    _, reports = _rewrite(builtin, layer_timer=timer, whole_model_check=False)
    assert len(timer.calls) == 1
    assert [report.replaced for report in reports] == [True, True, True]
    assert len({report.custom_us for report in reports}) == 1


def test_a_custom_op_that_fails_to_run_leaves_the_layer_builtin(builtin_bytes):
    def refusing_custom_ops(models):
        if any(speed_decision.has_custom_ops(content) for content in models.values()):
            raise RuntimeError("the delegate refused the node")
        return FakeTimer(COSTS)(models)

    _, reports = _rewrite(builtin_bytes, layer_timer=refusing_custom_ops)
    assert not any(report.replaced for report in reports)
    assert all("failed to run: the delegate refused" in report.reason for report in reports)


def test_decide_by_size_replaces_every_candidate_without_timing(builtin_bytes, sparse_model):
    tflite_bytes, reports = _rewrite(
        builtin_bytes, decide_by="size", layer_timer=RefusingTimer(), model_timer=RefusingTimer()
    )
    assert _replaced(reports) == {"big": True, "small": True, "depthwise": True}
    assert {report.decided_by for report in reports} == {"size"}
    assert all(report.builtin_us is None for report in reports)
    old_bytes, _ = model_rewrite.replace_pattern_convs(builtin_bytes)
    assert tflite_bytes == old_bytes
    assert ct_tflite.convert(sparse_model, decide_by="size") == old_bytes


def test_whole_model_check_puts_back_the_smallest_gains_until_not_slower(builtin_bytes):
    # Layer gains: big 576, small 144 (cost units). With 400 per custom op in
    # the whole file, both replaced is slower than builtin; without "small"
    # it is faster.
    layer_timer = FakeTimer(COSTS)
    model_timer = FakeTimer(COSTS, per_custom_op=400.0)
    with pytest.warns(UserWarning, match="1 of 2 custom-op layers were put back"):
        tflite_bytes, reports = _rewrite(
            builtin_bytes, layer_timer=layer_timer, model_timer=model_timer
        )
    assert _replaced(reports) == {"big": True, "small": False, "depthwise": False}
    (small,) = [report for report in reports if _layer(report) == "small"]
    assert small.decided_by == "whole-model check" and "put back" in small.reason
    assert small.custom_us < small.builtin_us  # Its own timing is kept.
    assert model_timer.seconds(tflite_bytes) <= model_timer.seconds(builtin_bytes)
    assert len(layer_timer.calls) == 3  # Putting back re-used the layer timings.


@pytest.mark.parametrize("per_custom_op", [0.0, 100.0, 400.0, 700.0, 5000.0])
def test_returned_file_is_never_slower_than_the_builtin_only_file(builtin_bytes, per_custom_op):
    model_timer = FakeTimer(COSTS, per_custom_op=per_custom_op)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tflite_bytes, _ = _rewrite(
            builtin_bytes, layer_timer=FakeTimer(COSTS), model_timer=model_timer
        )
    assert model_timer.seconds(tflite_bytes) <= model_timer.seconds(builtin_bytes)
    put_back = any("put back" in str(warning.message) for warning in caught)
    assert put_back == (per_custom_op >= 400)  # Both layers gain 720 in all.


def test_when_every_layer_is_put_back_the_builtin_file_itself_is_returned(builtin_bytes):
    with pytest.warns(UserWarning, match="2 of 2"):
        tflite_bytes, reports = _rewrite(
            builtin_bytes,
            layer_timer=FakeTimer(COSTS),
            model_timer=FakeTimer(COSTS, per_custom_op=5000.0),
        )
    assert tflite_bytes == builtin_bytes
    assert not any(report.replaced for report in reports)


def test_decide_by_callable_gets_runnable_one_operator_files(builtin_bytes):
    seen = []

    def only_standard_convs(candidate):
        seen.append(candidate)
        return candidate.report.op == "CONV_2D"

    tflite_bytes, reports = _rewrite(builtin_bytes, decide_by=only_standard_convs)
    assert _replaced(reports) == {"big": True, "small": True, "depthwise": False}
    assert {report.decided_by for report in reports} == {"callable"}
    assert [candidate.report.custom_op for candidate in seen] == [CONV, CONV, DEPTHWISE]
    for candidate in seen:
        builtin = litert_interpreter.Interpreter(model_content=candidate.builtin_model)
        custom = ct_tflite.Interpreter(model_content=candidate.custom_model)
        shape = tuple(builtin.get_input_details()[0]["shape"])
        inputs = np.random.default_rng(3).normal(size=shape).astype(np.float32)
        expected = tflite_helpers.run_interpreter(builtin, inputs)
        actual = tflite_helpers.run_interpreter(custom, inputs)
        assert tflite_helpers.max_relative_error(actual, expected) <= 1e-5


def test_decide_by_callable_must_return_a_bool(builtin_bytes):
    with pytest.raises(ValueError, match="decide_by must return True"):
        _rewrite(builtin_bytes, decide_by=lambda candidate: None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(decide_by="fast"), "decide_by"),
        (dict(num_threads=0), "num_threads"),
        (dict(num_threads=1.5), "num_threads"),
        (dict(whole_model_check="yes"), "whole_model_check"),
    ],
)
def test_bad_decision_arguments_are_refused(sparse_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ct_tflite.convert(sparse_model, **kwargs)


def test_without_the_native_library_every_layer_stays_builtin(builtin_bytes, monkeypatch):
    monkeypatch.setenv(native_library.LIBRARY_PATH_VARIABLE, "/nonexistent/library.so")
    with pytest.warns(UserWarning, match="cannot run the custom ops here"):
        tflite_bytes, reports = _rewrite(builtin_bytes)
    assert tflite_bytes == builtin_bytes
    assert not any(report.replaced for report in reports)
    assert all("speed could not be measured" in report.reason for report in reports)


def test_real_timing_decides_consistently_and_the_file_matches_keras(sparse_model, capsys):
    tflite_bytes, reports = ct_tflite.convert(sparse_model, return_report=True, verbose=True)
    printed = capsys.readouterr().out
    assert printed.count("convert: ") >= 3
    for report in reports:
        assert report.decided_by in ("speed", "whole-model check")
        assert report.builtin_us > 0 and report.custom_us > 0
        if report.decided_by == "speed":
            faster = report.builtin_us >= speed_decision.MIN_SPEEDUP * report.custom_us
            assert report.replaced == faster
    assert ct_tflite.count_pattern_ops(tflite_bytes) == sum(r.replaced for r in reports)
    interpreter = ct_tflite.Interpreter(model_content=tflite_bytes, num_threads=1)
    inputs = np.random.default_rng(4).normal(size=(1, 12, 12, 8)).astype(np.float32)
    actual = tflite_helpers.run_interpreter(interpreter, inputs)
    expected = sparse_model.predict(inputs, verbose=0)
    assert tflite_helpers.max_relative_error(actual, expected) <= 1e-4


def test_interleaved_samples_rotate_and_thread_time_leaves_out_waiting():
    calls = []

    def working():
        calls.append("working")
        sum(range(20000))

    def waiting():
        calls.append("waiting")
        time.sleep(0.02)

    wall, thread = speed_decision.interleaved_samples(
        {"working": working, "waiting": waiting}, rounds=3, sample_seconds=0.0,
        return_thread_time=True,
    )
    # Two calls each to warm up and size the samples, then one a round, in
    # rotating order.
    assert calls[4:] == ["working", "waiting", "waiting", "working", "working", "waiting"]
    assert [len(wall[name]) for name in ("working", "waiting")] == [3, 3]
    assert [len(thread[name]) for name in ("working", "waiting")] == [3, 3]
    assert min(wall["waiting"]) >= 0.02
    # Sleeping takes no CPU time (the margin absorbs a loaded machine).
    assert max(thread["waiting"]) < 0.005
    samples = speed_decision.interleaved_samples({"working": working}, 2, 0.0)
    assert list(samples) == ["working"] and len(samples["working"]) == 2
