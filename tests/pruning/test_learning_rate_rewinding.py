"""RewoundLearningRate: the schedule replayed after the masks, in the budget."""

import keras
import numpy as np
import pytest

from tf_clicktrain.pruning.learning_rate_rewinding import RewoundLearningRate


def _steps(schedule, count=None):
    count = count or schedule.total_steps
    return np.array([float(schedule(step)) for step in range(count)])


def _example_schedule():
    base = keras.optimizers.schedules.PiecewiseConstantDecay([10, 30], [0.05, 5e-3, 5e-4])
    return base, RewoundLearningRate(base, rewind_step=12, total_steps=40)


def test_rates_before_the_rewind_step_are_the_schedules():
    base, rewound = _example_schedule()
    np.testing.assert_allclose(_steps(rewound)[:12], [float(base(s)) for s in range(12)])


def test_the_replay_starts_at_the_initial_rate_and_ends_at_the_final_one():
    _, rewound = _example_schedule()
    rates = _steps(rewound)
    assert rates[11] == pytest.approx(5e-3)   # the original drop at step 10
    assert rates[12] == pytest.approx(0.05)   # rewound at the hard phase
    assert rates[-1] == pytest.approx(5e-4)
    # 28 remaining steps replay 40 (x 10/7); PiecewiseConstantDecay keeps a
    # rate up to its boundary included, so steps 12 + 7 and 12 + 21 replay
    # the boundaries 10 and 30.
    np.testing.assert_allclose(rates[12:20], 0.05)
    np.testing.assert_allclose(rates[20:34], 5e-3)
    np.testing.assert_allclose(rates[34:], 5e-4)


def test_rewind_to_starts_the_replay_later_in_the_schedule():
    base = keras.optimizers.schedules.PiecewiseConstantDecay([10, 30], [0.05, 5e-3, 5e-4])
    rewound = RewoundLearningRate(base, rewind_step=20, total_steps=40, rewind_to=11)
    rates = _steps(rewound)
    assert rates[20] == pytest.approx(5e-3)
    assert rates[-1] == pytest.approx(5e-4)


def test_round_trips_through_serialization():
    _, rewound = _example_schedule()
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(rewound))
    assert isinstance(restored, RewoundLearningRate)
    np.testing.assert_allclose(_steps(restored), _steps(rewound))


def test_drives_an_optimizer_in_fit():
    _, rewound = _example_schedule()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(rewound)
    model.compile(optimizer, "mse")
    x, y = np.ones((13, 3), "float32"), np.zeros((13, 1), "float32")
    model.fit(x, y, batch_size=1, epochs=1, verbose=0)  # 13 steps: the next is step 13
    assert float(optimizer.learning_rate) == pytest.approx(0.05)


@pytest.mark.parametrize("kwargs, message", [
    (dict(schedule=0.05), "schedule must be"),
    (dict(rewind_step=-1), "rewind_step must be"),
    (dict(rewind_step=40), "total_steps must be"),
    (dict(rewind_step=2.5), "rewind_step must be"),
    (dict(rewind_to=13), "rewind_step must be"),
])
def test_bad_arguments_are_named(kwargs, message):
    arguments = dict(schedule=keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5),
                     rewind_step=12, total_steps=40, rewind_to=0)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        RewoundLearningRate(**arguments)
