"""Pruning schedules: when masks change, how sparse, and in which phase.

Every schedule is a serializable object with
``__call__(step) -> (should_prune, sparsity)`` as in
tensorflow-model-optimization; the wrapper asks it one question per step,
`at(step)`, whose `ScheduleStep` also holds the phase, the group-lasso
penalty and the soft phase's fade.

Steps are numbered as in tensorflow-model-optimization: the first training
batch is step 1 (step 0 is before training), so after ``n`` batches the
wrapper's ``pruning_step`` is ``n``.

Phases:
- ``DENSE``: ordinary training; Taylor importance accumulates.
- ``SOFT``: patterns and removed kernels are chosen; a group-lasso penalty
  (weight `penalty(step)`) pulls what will be removed towards zero, but no
  mask is applied yet.
- ``HARD``: masks are applied in every forward pass and after every optimizer
  step; fine-tuning.

For pattern-pruned layers ``sparsity`` is the *connectivity* sparsity, the
fraction of whole 3x3 kernels removed; the kept kernels then keep
``entries_per_kernel`` of their 9 weights. For unstructured layers (1x1 convs,
Dense) it is the fraction of weights removed.
"""

import dataclasses
import math

import keras

from tf_clicktrain.patterns.connectivity import validate_sparsity

DENSE = 0
SOFT = 1
HARD = 2
PHASE_NAMES = {DENSE: "dense", SOFT: "soft", HARD: "hard"}


def _validate_step(value, name, minimum=0):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{name} must be an integer >= {minimum}. Received: {name}={value!r}"
        )


def _validate_end_step(begin_step, end_step):
    if isinstance(end_step, bool) or not isinstance(end_step, int):
        raise ValueError(f"end_step must be an integer. Received: end_step={end_step!r}")
    if end_step != -1 and end_step < begin_step:
        raise ValueError(
            "end_step must be -1 (never end) or >= begin_step. "
            f"Received: begin_step={begin_step}, end_step={end_step}"
        )


@dataclasses.dataclass(frozen=True)
class ScheduleStep:
    """What a schedule says about one step.

    Attributes:
        should_prune: masks (patterns, kept kernels, weights) are recomputed.
        sparsity: the target sparsity at this step.
        phase: `DENSE`, `SOFT` or `HARD`.
        penalty: the group-lasso weight.
        fade: the factor, in [0, 1], by which the forward pass scales what
            the target masks will remove (1 before the soft phase, 0 in the
            hard phase; used with ``soft_anneal``).
    """

    should_prune: bool
    sparsity: float
    phase: int
    penalty: float
    fade: float


class PruningSchedule:
    """Base class of the pruning schedules.

    Subclasses implement `__call__`, `phase`, `get_config` and may override
    `penalty` (0 by default), `fade` and `final_sparsity`.
    """

    def __call__(self, step):
        """Returns ``(should_prune, sparsity)`` at an integer ``step``.

        ``should_prune`` says that masks (patterns, kept kernels, weights) are
        recomputed at this step; ``sparsity`` is the target at this step.
        """
        raise NotImplementedError

    def phase(self, step):
        """Returns `DENSE`, `SOFT` or `HARD` for an integer ``step``."""
        raise NotImplementedError

    def penalty(self, step):
        """The group-lasso weight at ``step``; 0 outside the soft phase."""
        del step
        return 0.0

    def fade(self, step):
        """The forward-pass factor of what the masks will remove, in [0, 1]."""
        return 1.0 if self.phase(step) == DENSE else 0.0

    def at(self, step):
        """Everything the schedule says about ``step``, as a `ScheduleStep`."""
        should_prune, sparsity = self(step)
        return ScheduleStep(
            should_prune=bool(should_prune),
            sparsity=float(sparsity),
            phase=self.phase(step),
            penalty=float(self.penalty(step)),
            fade=float(self.fade(step)),
        )

    @property
    def final_sparsity(self):
        """The sparsity the schedule ends at."""
        raise NotImplementedError

    def ramp(self, step):
        """Fraction of the final sparsity reached at ``step``, in [0, 1].

        Layers with their own target sparsity prune to that target times this
        fraction, so one schedule can drive layers with different targets.
        """
        _, sparsity = self(step)
        if self.final_sparsity > 0:
            return min(1.0, sparsity / self.final_sparsity)
        return 0.0 if self.phase(step) == DENSE else 1.0

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="tf_clicktrain")
class ConstantSparsity(PruningSchedule):
    """Magnitude-style pruning at a constant sparsity from ``begin_step``.

    Masks are hard from ``begin_step`` and recomputed every ``frequency``
    steps until ``end_step`` (-1: until training ends), as in
    tensorflow-model-optimization.

    Args:
        target_sparsity: fraction in [0, 1).
        begin_step: first step that prunes.
        end_step: last step that may prune, or -1.
        frequency: steps between mask updates.

    Example:
    ```python
    schedule = ConstantSparsity(0.5, begin_step=0, frequency=100)
    schedule(0)    # (True, 0.5)
    schedule(50)   # (False, 0.5)
    ```
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        validate_sparsity(target_sparsity, "target_sparsity")
        _validate_step(begin_step, "begin_step")
        _validate_end_step(begin_step, end_step)
        _validate_step(frequency, "frequency", minimum=1)
        self.target_sparsity = float(target_sparsity)
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency

    def _in_window(self, step):
        return step >= self.begin_step and (self.end_step == -1 or step <= self.end_step)

    def __call__(self, step):
        should_prune = self._in_window(step) and (
            (step - self.begin_step) % self.frequency == 0
        )
        sparsity = self.target_sparsity if step >= self.begin_step else 0.0
        return should_prune, sparsity

    def phase(self, step):
        return HARD if step >= self.begin_step else DENSE

    @property
    def final_sparsity(self):
        return self.target_sparsity

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="tf_clicktrain")
class PolynomialDecay(PruningSchedule):
    """Gradual pruning: sparsity rises polynomially from initial to final.

    ``sparsity(step) = final + (initial - final) * (1 - progress) ** power``
    with ``progress`` going from 0 at ``begin_step`` to 1 at ``end_step``
    (tensorflow-model-optimization's formula). Masks are hard from
    ``begin_step`` and recomputed every ``frequency`` steps up to
    ``end_step``.

    Args:
        initial_sparsity: sparsity at ``begin_step``, in [0, 1).
        final_sparsity: sparsity from ``end_step`` on, in [0, 1).
        begin_step: first step that prunes.
        end_step: step at which ``final_sparsity`` is reached (> begin_step).
        power: exponent of the polynomial.
        frequency: steps between mask updates.
    """

    def __init__(
        self,
        initial_sparsity,
        final_sparsity,
        begin_step,
        end_step,
        power=3,
        frequency=100,
    ):
        validate_sparsity(initial_sparsity, "initial_sparsity")
        validate_sparsity(final_sparsity, "final_sparsity")
        _validate_step(begin_step, "begin_step")
        _validate_step(end_step, "end_step")
        if end_step <= begin_step:
            raise ValueError(
                "end_step must be greater than begin_step. "
                f"Received: begin_step={begin_step}, end_step={end_step}"
            )
        _validate_step(frequency, "frequency", minimum=1)
        if not isinstance(power, (int, float)) or not power > 0:
            raise ValueError(f"power must be a positive number. Received: power={power!r}")
        self.initial_sparsity = float(initial_sparsity)
        self.final_sparsity_value = float(final_sparsity)
        self.begin_step = begin_step
        self.end_step = end_step
        self.power = power
        self.frequency = frequency

    def _sparsity(self, step):
        if step < self.begin_step:
            return 0.0
        progress = min(1.0, (step - self.begin_step) / (self.end_step - self.begin_step))
        return self.final_sparsity_value + (
            self.initial_sparsity - self.final_sparsity_value
        ) * (1.0 - progress) ** self.power

    def __call__(self, step):
        in_window = self.begin_step <= step <= self.end_step
        should_prune = in_window and (
            (step - self.begin_step) % self.frequency == 0 or step == self.end_step
        )
        return should_prune, self._sparsity(step)

    def phase(self, step):
        return HARD if step >= self.begin_step else DENSE

    @property
    def final_sparsity(self):
        return self.final_sparsity_value

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity_value,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="tf_clicktrain")
class ClickTrainSchedule(PruningSchedule):
    """ClickTrain's phases: dense warm-up, selection, soft, hard.

    Its step arguments count optimizer steps already taken, so phases start
    on epoch boundaries (`from_epochs`):

    - the first ``selection_step`` steps: dense training while importance
      accumulates;
    - after ``selection_step`` steps (on tfmot-numbered step
      ``selection_step + 1``): pattern generation and selection plus
      connectivity pruning (again after every count in
      ``reselection_steps``);
    - until ``hard_pruning_step`` steps are taken: soft phase, group-lasso
      penalty of weight ``penalty`` on what the masks will remove;
    - after ``hard_pruning_step`` steps: masks applied, patterns kept,
      fine-tuning to the end.

    Args:
        selection_step: step of the first pattern selection.
        hard_pruning_step: first step of the hard phase
            (>= ``selection_step``; equal means no soft phase).
        connectivity_sparsity: fraction of 3x3 kernels removed, in [0, 1).
        reselection_steps: further selections, each in
            ``(selection_step, hard_pruning_step]``.
        penalty: group-lasso weight (lambda) in the soft phase, >= 0, or
            None (default) to size it to the soft phase:
            ``SOFT_PENALTY_TOTAL / soft_steps``, so the penalty summed over
            the phase is the same at every budget (see `default_penalty`).

    Example:
    ```python
    steps_per_epoch = 469
    schedule = ClickTrainSchedule.from_epochs(
        steps_per_epoch, selection_epoch=3, hard_pruning_epoch=6,
        connectivity_sparsity=0.5)
    schedule.penalty_value   # 2.0 / (3 * 469) = 1.42e-3
    ```
    """

    # Where `from_budget` places selection and the hard phase by default.
    SELECTION_FRACTION = 1 / 6
    HARD_FRACTION = 1 / 3

    def __init__(
        self,
        selection_step,
        hard_pruning_step,
        connectivity_sparsity=0.5,
        reselection_steps=(),
        penalty=None,
    ):
        _validate_step(selection_step, "selection_step")
        _validate_step(hard_pruning_step, "hard_pruning_step")
        if hard_pruning_step < selection_step:
            raise ValueError(
                "hard_pruning_step must be >= selection_step (the phases are "
                "warm-up, selection, soft, hard). Received: "
                f"selection_step={selection_step}, hard_pruning_step={hard_pruning_step}"
            )
        validate_sparsity(connectivity_sparsity, "connectivity_sparsity")
        reselection_steps = tuple(reselection_steps or ())
        for step in reselection_steps:
            if (
                isinstance(step, bool)
                or not isinstance(step, int)
                or not selection_step < step <= hard_pruning_step
            ):
                raise ValueError(
                    "Every reselection step must be an integer in "
                    f"(selection_step, hard_pruning_step] = ({selection_step}, "
                    f"{hard_pruning_step}]. Received: reselection_steps={reselection_steps}"
                )
        self.penalty_given = penalty
        if penalty is None:
            penalty = default_penalty(selection_step, hard_pruning_step)
        if (
            isinstance(penalty, bool)
            or not isinstance(penalty, (int, float))
            or not math.isfinite(penalty)
            or penalty < 0
        ):
            raise ValueError(
                "penalty must be None (sized to the soft phase) or a finite "
                f"number >= 0. Received: penalty={penalty!r}"
            )
        self.selection_step = selection_step
        self.hard_pruning_step = hard_pruning_step
        self.connectivity_sparsity = float(connectivity_sparsity)
        self.reselection_steps = tuple(sorted(set(reselection_steps)))
        self.penalty_value = float(penalty)

    @classmethod
    def from_epochs(
        cls,
        steps_per_epoch,
        selection_epoch,
        hard_pruning_epoch,
        reselection_epochs=(),
        **kwargs,
    ):
        """Builds the schedule from epoch boundaries (0-based epochs).

        Args:
            steps_per_epoch: optimizer steps per epoch, >= 1.
            selection_epoch: epoch at whose start selection happens.
            hard_pruning_epoch: epoch at whose start the hard phase begins.
            reselection_epochs: epochs at whose start selection is repeated.
            **kwargs: the other constructor arguments.
        """
        _validate_step(steps_per_epoch, "steps_per_epoch", minimum=1)
        for name, value in (
            ("selection_epoch", selection_epoch),
            ("hard_pruning_epoch", hard_pruning_epoch),
        ):
            _validate_step(value, name)
        return cls(
            selection_step=selection_epoch * steps_per_epoch,
            hard_pruning_step=hard_pruning_epoch * steps_per_epoch,
            reselection_steps=[e * steps_per_epoch for e in reselection_epochs],
            **kwargs,
        )

    @classmethod
    def from_budget(cls, epochs, steps_per_epoch, selection_fraction=None,
                    hard_fraction=None, **kwargs):
        """The phases placed at fractions of an epoch budget.

        The defaults select at 1/6 of the epochs and start the hard phase at
        1/3 (`SELECTION_FRACTION`, `HARD_FRACTION`), leaving two thirds of
        the run to fine-tune at useful learning rates: at budgets of a few
        epochs this measured 1.7 pp better (three seeds, 4 epochs) than the
        authors' VGG shape (190 epochs: selection at epoch 65, hard phase
        from 143; pass ``selection_fraction=65 / 190, hard_fraction=143 /
        190`` for it) in benchmarks/README.md. Phases start on epoch boundaries, with at least
        one epoch of warm-up and of soft phase when the budget allows. The
        penalty, unless given, is sized to the soft phase (see the class).

        Args:
            epochs: total training epochs, >= 2.
            steps_per_epoch: optimizer steps per epoch.
            selection_fraction: where selection happens, in (0, 1).
            hard_fraction: where the hard phase starts, in
                [selection_fraction, 1).
            **kwargs: the other constructor arguments.
        """
        _validate_step(epochs, "epochs", minimum=2)
        if selection_fraction is None:
            selection_fraction = cls.SELECTION_FRACTION
        if hard_fraction is None:
            hard_fraction = cls.HARD_FRACTION
        if not 0.0 < selection_fraction <= hard_fraction < 1.0:
            raise ValueError(
                "Expected 0 < selection_fraction <= hard_fraction < 1. Received: "
                f"selection_fraction={selection_fraction}, hard_fraction={hard_fraction}"
            )
        selection = max(1, round(epochs * selection_fraction))
        hard = min(max(selection + 1, round(epochs * hard_fraction)), epochs - 1)
        hard = max(hard, selection)
        return cls.from_epochs(
            steps_per_epoch, selection_epoch=selection, hard_pruning_epoch=hard, **kwargs
        )

    def __call__(self, step):
        taken = step - 1  # Optimizer steps before this one.
        should_prune = taken == self.selection_step or taken in self.reselection_steps
        sparsity = self.connectivity_sparsity if taken >= self.selection_step else 0.0
        return should_prune, sparsity

    def phase(self, step):
        taken = step - 1
        if taken < self.selection_step:
            return DENSE
        if taken < self.hard_pruning_step:
            return SOFT
        return HARD

    def penalty(self, step):
        return self.penalty_value if self.phase(step) == SOFT else 0.0

    def fade(self, step):
        """1 before the soft phase, down to 0 at its last step, in 1% steps."""
        phase = self.phase(step)
        if phase != SOFT:
            return 1.0 if phase == DENSE else 0.0
        length = max(1, self.hard_pruning_step - self.selection_step)
        progress = (step - self.selection_step) / length
        return round(1.0 - min(1.0, progress), 2)

    @property
    def final_sparsity(self):
        return self.connectivity_sparsity

    def get_config(self):
        return {
            "selection_step": self.selection_step,
            "hard_pruning_step": self.hard_pruning_step,
            "connectivity_sparsity": self.connectivity_sparsity,
            "reselection_steps": list(self.reselection_steps),
            "penalty": self.penalty_given,
        }


# The default group-lasso weight summed over the soft phase's steps. With SGD
# a penalised weight moves by about ``learning_rate * penalty`` per step, so
# over the phase it travels ``learning_rate * SOFT_PENALTY_TOTAL``: 0.1 at the
# example's learning rate of 0.05. The authors' lambda (1.5e-4 to 8e-4 over
# ~30k soft steps at lr 0.01) sums to 4.6-24 and travels 0.05-0.24.
SOFT_PENALTY_TOTAL = 2.0


def default_penalty(selection_step, hard_pruning_step):
    """The group-lasso weight sized to a soft phase: total / soft steps.

    Returns 0 when there is no soft phase (``hard_pruning_step <=
    selection_step``).

    Example:
    ```python
    default_penalty(469, 938)   # 2.0 / 469 = 4.26e-3 (the main job)
    ```
    """
    soft_steps = hard_pruning_step - selection_step
    return SOFT_PENALTY_TOTAL / soft_steps if soft_steps > 0 else 0.0


def serialize(schedule):
    """Serializes a schedule for a layer config."""
    return keras.saving.serialize_keras_object(schedule)


def deserialize(config):
    """Inverse of `serialize`; passes schedule objects through."""
    if isinstance(config, PruningSchedule):
        return config
    schedule = keras.saving.deserialize_keras_object(config)
    if not isinstance(schedule, PruningSchedule):
        raise ValueError(
            "schedule must be a tf_clicktrain PruningSchedule (e.g. "
            f"ClickTrainSchedule, ConstantSparsity). Received: schedule={schedule!r}"
        )
    return schedule
