"""tfmot's pruning_schedule_test.py, ported to tf_clicktrain's schedules.

Every tfmot case is here, under its tfmot name in snake case. Steps are plain
integers (tfmot evaluates them as tensors in graph and eager modes; our
schedules are asked from Python by the step callback).

Differences, each asserted below:
- ``PolynomialDecay(..., begin_step=b, end_step=b)`` is refused: its formula
  divides by ``end_step - begin_step`` (tfmot accepts it and divides by 0).
"""

import keras
import pytest

import tf_clicktrain as ct

KINDS = ("constant_sparsity", "polynomial_decay")


def _schedule(kind, begin_step, end_step, frequency=10):
    if kind == "constant_sparsity":
        return ct.ConstantSparsity(0.5, begin_step, end_step, frequency)
    return ct.PolynomialDecay(0.2, 0.8, begin_step, end_step, 3, frequency)


@pytest.mark.parametrize("kind", KINDS)
def test_begin_step_greater_than_equals_zero(kind):
    for begin in (-1, -5):
        with pytest.raises(ValueError, match="begin_step"):
            _schedule(kind, begin, 1000)
    for begin in (0, 1, 100):
        _schedule(kind, begin, 1000)


@pytest.mark.parametrize("kind", KINDS)
def test_end_step_greater_than_equals_zero(kind):
    with pytest.raises(ValueError, match="end_step"):
        _schedule(kind, 10, -5)
    for end in (1, 100):
        _schedule(kind, 0, end)
    if kind == "constant_sparsity":
        _schedule(kind, 0, 0)
    else:
        with pytest.raises(ValueError, match="end_step"):
            _schedule(kind, 0, 0)


@pytest.mark.parametrize("kind", KINDS)
def test_end_step_greater_than_equals_begin_step(kind):
    with pytest.raises(ValueError, match="end_step"):
        _schedule(kind, 10, 5)
    _schedule(kind, 10, 20)
    if kind == "constant_sparsity":
        _schedule(kind, 10, 10)


@pytest.mark.parametrize("kind", KINDS)
def test_frequency_is_positive(kind):
    for frequency in (0, -1, -5):
        with pytest.raises(ValueError, match="frequency"):
            _schedule(kind, 10, 1000, frequency)
    for frequency in (1, 10):
        _schedule(kind, 10, 1000, frequency)


def _validate_sparsity(construct):
    for bad in (-0.001, -1.0, -10.0, 1.0, 10.0):
        with pytest.raises(ValueError, match="sparsity"):
            construct(bad)
    for good in (0.0, 0.001, 0.5, 0.99):
        construct(good)


def test_sparsity_value_is_valid():
    _validate_sparsity(lambda s: ct.ConstantSparsity(s, 0))
    _validate_sparsity(lambda s: ct.PolynomialDecay(s, 0.8, 0, 10))
    _validate_sparsity(lambda s: ct.PolynomialDecay(0.2, s, 0, 10))


@pytest.mark.parametrize("kind", KINDS)
def test_prunes_only_in_begin_end_step_range(kind):
    schedule = _schedule(kind, 100, 200, 1)
    for step in (90, 99, 201, 210):
        assert not schedule(step)[0], step
    for step in (100, 110, 200):
        assert schedule(step)[0], step


@pytest.mark.parametrize("kind", KINDS)
def test_only_prunes_at_valid_frequency_steps(kind):
    schedule = _schedule(kind, 100, 200, 10)
    assert not schedule(109)[0] and not schedule(111)[0]
    assert schedule(100)[0] and schedule(110)[0]


def test_prunes_forever_if_end_step_is_negative_one():
    schedule = ct.ConstantSparsity(0.5, 0, -1, 10)
    for step in (10000, 100000000):
        assert schedule(step) == (True, pytest.approx(0.5))


def test_prunes_with_constant_sparsity():
    schedule = ct.ConstantSparsity(0.5, 100, 200, 10)
    for step in (100, 110, 200):
        assert schedule(step)[1] == pytest.approx(0.5)


@pytest.mark.parametrize("schedule", [
    ct.ConstantSparsity(0.7, 10, 20, 10),
    ct.PolynomialDecay(0.2, 0.6, 10, 20, 5, 10),
])
def test_serialize_deserialize(schedule):
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule))
    assert restored.__dict__ == schedule.__dict__


def test_raises_error_if_end_step_is_negative():
    with pytest.raises(ValueError, match="end_step"):
        ct.PolynomialDecay(0.4, 0.8, 10, -1)


def test_polynomial_decay_prunes_correctly():
    schedule = ct.PolynomialDecay(0.2, 0.8, 100, 110, 3, 2)
    # tfmot's values, from tf.polynomial_decay with the same parameters.
    assert schedule(100)[1] == pytest.approx(0.2)
    assert schedule(102)[1] == pytest.approx(0.4928)
    assert schedule(105)[1] == pytest.approx(0.725)
    assert schedule(110)[1] == pytest.approx(0.8)
