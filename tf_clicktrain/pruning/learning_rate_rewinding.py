"""Learning-rate rewinding after the masks are applied.

Pruning during training applies its masks part-way through a learning-rate
schedule; by then the rate has often dropped. Learning-rate rewinding (Renda,
Frankle & Carbin, ICLR 2020) retrains the pruned network with the schedule
replayed from an earlier point. With a fixed budget the replay is squeezed
into the steps that remain:

    rate(step) = schedule(step)                                  step < rewind_step
    rate(step) = schedule(rewind_to + (step - rewind_step) * s)  otherwise,
    s = (total_steps - rewind_to) / (total_steps - rewind_step)

so the hard phase again starts at the rate of step ``rewind_to`` and ends at
the schedule's final rate on the last step.
"""

import keras


def _validate_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}. Received: {name}={value!r}")


@keras.saving.register_keras_serializable(package="tf_clicktrain")
class RewoundLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule replayed from ``rewind_to`` at ``rewind_step``.

    Args:
        schedule: the learning-rate schedule of the whole run (a Keras
            ``LearningRateSchedule``).
        rewind_step: the optimizer step from which the schedule is replayed,
            e.g. the ClickTrain schedule's ``hard_pruning_step``.
        total_steps: the run's optimizer steps (epochs * steps per epoch).
        rewind_to: the step of ``schedule`` the replay starts from (0: the
            initial rate); at most ``rewind_step``.

    Raises:
        ValueError: if ``schedule`` is not a ``LearningRateSchedule`` or the
            steps are not integers with 0 <= rewind_to <= rewind_step <
            total_steps.

    Example:
    ```python
    rate = ct.RewoundLearningRate(
        keras.optimizers.schedules.PiecewiseConstantDecay([469, 1407], [0.05, 5e-3, 5e-4]),
        rewind_step=schedule.hard_pruning_step, total_steps=4 * 469)
    model.compile(keras.optimizers.SGD(rate, momentum=0.9), ...)
    ```
    """

    def __init__(self, schedule, rewind_step, total_steps, rewind_to=0):
        if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            raise ValueError(
                "schedule must be a keras.optimizers.schedules.LearningRateSchedule. "
                f"Received: schedule={schedule!r}")
        _validate_int(rewind_to, "rewind_to", 0)
        _validate_int(rewind_step, "rewind_step", rewind_to)
        _validate_int(total_steps, "total_steps", rewind_step + 1)
        self.schedule = schedule
        self.rewind_step = rewind_step
        self.total_steps = total_steps
        self.rewind_to = rewind_to

    def replayed_step(self, step):
        """The step of ``schedule`` whose rate ``step`` takes (float)."""
        step = keras.ops.cast(step, "float32")
        stretch = (self.total_steps - self.rewind_to) / (self.total_steps - self.rewind_step)
        replayed = self.rewind_to + (step - self.rewind_step) * stretch
        return keras.ops.where(step < self.rewind_step, step, replayed)

    def __call__(self, step):
        return self.schedule(keras.ops.floor(self.replayed_step(step)))

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "rewind_step": self.rewind_step,
            "total_steps": self.total_steps,
            "rewind_to": self.rewind_to,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)
