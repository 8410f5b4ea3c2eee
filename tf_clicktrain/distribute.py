"""Helpers for training pruned models under `tf.distribute` strategies.

Pruning itself needs nothing special under a strategy: create (or load) and
compile the model inside ``strategy.scope()`` and pass
`tf_clicktrain.UpdatePruningStep` to ``fit`` as usual. Masks, pattern sets
and pattern ids are mirrored variables written by the callback on every
worker from the same all-reduced importance, so every replica selects the
same patterns.

`fix_multi_worker_fit` works around a Keras 3 (<= 3.15 with TensorFlow 2.21
at least) failure that affects any model, pruned or not, under
`tf.distribute.MultiWorkerMirroredStrategy`: before the first step, ``fit``
reduces one distributed input batch with ``strategy.reduce`` to learn its
shapes, which that strategy rejects for a nested batch such as ``(x, y)``
("Attempt to convert a value (PerReplica...) to a Tensor"); and after each
step it averages the scalar logs with ``strategy.reduce(..., axis=0)``,
which fails on scalars ("Invalid reduction dimension 0").
"""

import keras
import tensorflow as tf


def fix_multi_worker_fit(model):
    """Lets ``model.fit`` start under `MultiWorkerMirroredStrategy`.

    Keras builds a model's compiled loss and metrics from the shapes of one
    input batch before training; under a multi-worker strategy that batch is
    distributed and Keras' cross-worker reduce of it fails. This replaces
    that step, for this model only, by reading the batch's local replica
    values (same shapes, no communication). It also gives the scalar logs
    of each train/test step a leading axis so that Keras' average over
    workers works (the logs callbacks see are the usual scalars). Call it
    once after ``compile`` on every worker. It does nothing for other
    strategies.

    Args:
        model: a compiled Keras model created under the strategy's scope.

    Returns:
        The model.

    Example:
    ```python
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = ct.prune_pattern(build_model(), schedule=schedule)
        model.compile(...)
    ct.distribute.fix_multi_worker_fit(model)
    model.fit(dataset, callbacks=[ct.UpdatePruningStep()])
    ```
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"fix_multi_worker_fit takes a Keras model. Received: model={model!r}"
        )
    strategy = getattr(model, "_distribute_strategy", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model
    if not hasattr(model, "_maybe_symbolic_build") or not hasattr(model, "_symbolic_build"):
        return model

    def local_batch(batch):
        def local(value):
            if isinstance(value, tf.distribute.DistributedValues):
                return strategy.experimental_local_results(value)[0]
            return value

        return tf.nest.map_structure(local, batch)

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = local_batch(next(batches))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)  # pylint: disable=protected-access

    model._maybe_symbolic_build = maybe_symbolic_build  # pylint: disable=protected-access

    # Keras averages each step's logs over workers with
    # strategy.reduce("MEAN", value, axis=0), which needs a leading axis:
    # give scalar logs one (the reduce then returns the scalar average).
    def with_leading_axis(outputs):
        def expand(value):
            if isinstance(value, tf.Tensor) and value.shape.rank == 0:
                return tf.reshape(value, [1])
            return value

        return tf.nest.map_structure(expand, outputs)

    for name in ("train_step", "test_step"):
        step = getattr(model, name)
        setattr(model, name, lambda data, step=step: with_leading_axis(step(data)))
    return model
