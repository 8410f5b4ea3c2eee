import keras
import pytest

import tf_clicktrain as ct
from tf_clicktrain.pruning import schedules


def test_clicktrain_schedule_phases_and_events():
    schedule = ct.ClickTrainSchedule(
        selection_step=10, hard_pruning_step=20, connectivity_sparsity=0.5,
        reselection_steps=[15], penalty=1e-3,
    )
    # Steps are tfmot's (the first batch is step 1); the schedule's numbers
    # count steps already taken: selection on step 11, after 10 dense steps.
    assert schedule(10) == (False, 0.0)
    assert schedule(11) == (True, 0.5)
    assert schedule(16) == (True, 0.5)
    assert schedule(17) == (False, 0.5)
    assert [schedule.phase(s) for s in (0, 1, 10, 11, 20, 21, 1000)] == [
        schedules.DENSE, schedules.DENSE, schedules.DENSE, schedules.SOFT,
        schedules.SOFT, schedules.HARD, schedules.HARD,
    ]
    assert schedule.penalty(5) == 0.0
    assert schedule.penalty(12) == 1e-3
    assert schedule.penalty(21) == 0.0


def test_one_question_per_step_answers_everything():
    schedule = ct.ClickTrainSchedule(selection_step=4, hard_pruning_step=8, penalty=1e-3)
    decision = schedule.at(5)
    assert decision == schedules.ScheduleStep(
        should_prune=True, sparsity=0.5, phase=schedules.SOFT, penalty=1e-3, fade=0.75)
    assert [schedule.at(s).fade for s in (4, 6, 8, 9)] == [1.0, 0.5, 0.0, 0.0]
    constant = ct.ConstantSparsity(0.3, begin_step=2)
    assert constant.at(1).fade == 1.0 and constant.at(2).fade == 0.0
    assert constant.at(2).phase == schedules.HARD


def test_from_epochs():
    schedule = ct.ClickTrainSchedule.from_epochs(
        100, selection_epoch=2, hard_pruning_epoch=5, reselection_epochs=[3]
    )
    assert (schedule.selection_step, schedule.hard_pruning_step) == (200, 500)
    assert schedule.reselection_steps == (300,)


def test_polynomial_decay_follows_the_tfmot_formula():
    schedule = ct.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
    assert schedule(0) == (True, 0.0)
    assert schedule(5)[0] is False
    assert schedule(50)[1] == pytest.approx(0.8 * (1 - 0.5**3))
    assert schedule(100) == (True, pytest.approx(0.8))
    assert schedule(150) == (False, pytest.approx(0.8))
    assert schedule.ramp(50) == pytest.approx(1 - 0.5**3)


def test_constant_sparsity():
    schedule = ct.ConstantSparsity(0.5, begin_step=10, frequency=5)
    assert schedule(9) == (False, 0.0)
    assert schedule(10) == (True, 0.5)
    assert schedule(12) == (False, 0.5)
    assert schedule.phase(9) == schedules.DENSE
    assert schedule.phase(10) == schedules.HARD


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: ct.ClickTrainSchedule(20, 10), "hard_pruning_step"),
        (lambda: ct.ClickTrainSchedule(-1, 10), "selection_step"),
        (lambda: ct.ClickTrainSchedule(5, 10, connectivity_sparsity=1.0), "connectivity_sparsity"),
        (lambda: ct.ClickTrainSchedule(5, 10, reselection_steps=[3]), "reselection_steps"),
        (lambda: ct.ClickTrainSchedule(5, 10, penalty=-1.0), "penalty"),
        (lambda: ct.ConstantSparsity(1.5, 0), "target_sparsity"),
        (lambda: ct.ConstantSparsity(0.5, 10, end_step=5), "end_step"),
        (lambda: ct.ConstantSparsity(0.5, 0, frequency=0), "frequency"),
        (lambda: ct.PolynomialDecay(0.0, 0.5, 10, 10), "end_step"),
        (lambda: ct.PolynomialDecay(0.0, -0.1, 0, 10), "final_sparsity"),
    ],
)
def test_invalid_schedules_name_the_argument(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize(
    "schedule",
    [
        ct.ClickTrainSchedule(3, 7, 0.25, reselection_steps=[5], penalty=2e-4),
        ct.ConstantSparsity(0.3, 2, end_step=50, frequency=7),
        ct.PolynomialDecay(0.1, 0.7, 5, 60, power=2, frequency=3),
    ],
)
def test_schedules_serialize_round_trip(schedule):
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule)
    )
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    for step in range(0, 70, 3):
        assert restored(step) == schedule(step)
        assert restored.phase(step) == schedule.phase(step)


def test_from_budget_places_phases_at_fractions():
    paper = ct.ClickTrainSchedule.from_budget(190, 10, selection_fraction=65 / 190,
                                              hard_fraction=143 / 190)
    assert (paper.selection_step, paper.hard_pruning_step) == (650, 1430)
    short = ct.ClickTrainSchedule.from_budget(3, 10)
    assert short.selection_step < short.hard_pruning_step < 30
    with pytest.raises(ValueError, match="selection_fraction"):
        ct.ClickTrainSchedule.from_budget(6, 10, selection_fraction=0.8, hard_fraction=0.5)


@pytest.mark.parametrize(
    "epochs, selection_epoch, hard_epoch",
    [(4, 1, 2), (6, 1, 2), (12, 2, 4), (24, 4, 8), (2, 1, 1)],
)
def test_from_budget_defaults_select_at_a_sixth_and_harden_at_a_third(
        epochs, selection_epoch, hard_epoch):
    # The measured recipe (benchmarks/README.md): two thirds of the run fine-tune.
    schedule = ct.ClickTrainSchedule.from_budget(epochs, 469)
    assert (schedule.selection_step, schedule.hard_pruning_step) == (
        selection_epoch * 469, hard_epoch * 469)


def test_default_penalty_is_sized_to_the_soft_phase():
    # The README main job: 4 epochs of 469 steps, one soft epoch -> 2 / 469.
    main_job = ct.ClickTrainSchedule.from_budget(4, 469)
    assert main_job.penalty_value == pytest.approx(2.0 / 469) == pytest.approx(4.26e-3, abs=1e-5)
    # The same total over a longer soft phase: the weight halves.
    assert ct.ClickTrainSchedule.from_budget(12, 469).penalty_value == pytest.approx(
        main_job.penalty_value / 2)
    by_epochs = ct.ClickTrainSchedule.from_epochs(100, selection_epoch=1, hard_pruning_epoch=5)
    assert by_epochs.penalty_value == pytest.approx(schedules.SOFT_PENALTY_TOTAL / 400)
    assert by_epochs.penalty(150) == by_epochs.penalty_value
    assert by_epochs.penalty(50) == by_epochs.penalty(600) == 0.0
    # No soft phase, no penalty; an explicit penalty wins.
    assert ct.ClickTrainSchedule(10, 10).penalty_value == 0.0
    assert ct.ClickTrainSchedule.from_budget(4, 469, penalty=1e-4).penalty_value == 1e-4


def test_default_penalty_survives_serialization_as_the_default():
    schedule = ct.ClickTrainSchedule(100, 300)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule))
    assert restored.get_config()["penalty"] is None
    assert restored.penalty_value == schedule.penalty_value == pytest.approx(0.01)


def test_sparsity_for_compression():
    assert ct.patterns.sparsity_for_compression(8.0) == pytest.approx(1 - 9 / 32)
    assert ct.patterns.sparsity_for_compression(2.25) == 0.0
    with pytest.raises(ValueError, match="compression"):
        ct.patterns.sparsity_for_compression(2.0)
