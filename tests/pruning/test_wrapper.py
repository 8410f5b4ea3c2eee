"""Behaviour of wrapped layers during and after training."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_clicktrain as ct
from tests.conftest import random_data
from tests.conftest import small_cnn
from tests.pruning.helpers import assert_pattern_sparse
from tests.pruning.helpers import assert_wrapper_consistent


def _fit(model, optimizer="sgd", epochs=3, schedule=None, **prune_kwargs):
    schedule = schedule or ct.ClickTrainSchedule(
        selection_step=4, hard_pruning_step=8, connectivity_sparsity=0.5
    )
    pruned = ct.prune_pattern(model, schedule=schedule, **prune_kwargs)
    pruned.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    x, y = random_data(64)
    pruned.fit(x, y, epochs=epochs, batch_size=16, verbose=0,
               callbacks=[ct.UpdatePruningStep()])
    return pruned


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.05, momentum=0.9),
        lambda: keras.optimizers.Adam(1e-2),
        lambda: keras.optimizers.AdamW(1e-2, weight_decay=1e-3),
    ],
    ids=["sgd_momentum", "adam", "adamw"],
)
def test_pruned_kernels_stay_pattern_sparse_after_fit(optimizer):
    pruned = _fit(small_cnn(), optimizer=optimizer())
    for wrapper in ct.pruning_wrappers(pruned):
        if wrapper.layer.name == "pointwise":
            kernel = wrapper.layer.kernel.numpy()
            assert np.count_nonzero(kernel) == kernel.size // 2
            continue
        described = assert_wrapper_consistent(wrapper)
        assert described.removed_kernels == described.num_kernels // 2


def test_masked_weights_are_zero_in_checkpoints(tmp_path):
    pruned = _fit(small_cnn(), optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    path = str(tmp_path / "ckpt.weights.h5")
    pruned.save_weights(path)
    fresh = ct.prune_pattern(small_cnn())
    fresh.load_weights(path)
    assert_pattern_sparse(fresh.get_layer("prune_pattern_conv1").layer.kernel.numpy())
    assert_pattern_sparse(fresh.get_layer("prune_pattern_conv2").layer.kernel.numpy())


def test_training_without_the_callback_fails_loudly():
    pruned = ct.prune_pattern(small_cnn())
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    x, y = random_data(16)
    with pytest.raises(Exception, match="UpdatePruningStep"):
        pruned.fit(x, y, verbose=0)


def test_unwrapped_layers_optimizer_and_metrics_behave_as_without_pruning():
    # A schedule that never leaves the dense phase must not change training.
    never = ct.ClickTrainSchedule(selection_step=10_000, hard_pruning_step=10_000)
    x, y = random_data(64)
    results = []
    for prune in (False, True):
        keras.utils.set_random_seed(7)
        model = small_cnn()
        if prune:
            model = ct.prune_pattern(model, schedule=never)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                      "sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0,
                            callbacks=[ct.UpdatePruningStep()] if prune else [])
        final = ct.strip_pruning(model) if prune else model
        results.append((history.history, [w.numpy() for w in final.weights],
                        [v.numpy() for v in model.optimizer.variables]))
    (hist_a, weights_a, opt_a), (hist_b, weights_b, opt_b) = results
    assert hist_a.keys() == hist_b.keys()
    for key in hist_a:
        np.testing.assert_allclose(hist_a[key], hist_b[key], rtol=1e-5)
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert len(opt_a) == len(opt_b)
    for a, b in zip(opt_a, opt_b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_soft_phase_penalty_shrinks_what_will_be_removed():
    schedule = ct.ClickTrainSchedule(selection_step=2, hard_pruning_step=10_000, penalty=0.05)
    # Kernel by kernel (filter_group=1): the kernels selected for removal
    # are then each among the layer's smallest.
    pruned = _fit(small_cnn(), optimizer=keras.optimizers.SGD(0.05), epochs=6,
                  schedule=schedule, filter_group=1)
    wrapper = pruned.get_layer("prune_pattern_conv2")
    kernel = wrapper.layer.kernel.numpy()
    target = wrapper.pruned[0].target_mask.numpy()
    removed = np.abs(kernel[target == 0]).mean()
    kept = np.abs(kernel[target == 1]).mean()
    assert removed < 0.5 * kept
    # Soft phase: nothing is masked yet.
    assert int(wrapper.pruning_phase.numpy()) == ct.schedules.SOFT
    assert np.count_nonzero(kernel) == kernel.size


def test_taylor_importance_accumulates_from_the_training_step():
    pruned = _fit(small_cnn(), importance="taylor_accumulated", epochs=1,
                  schedule=ct.ClickTrainSchedule(selection_step=100, hard_pruning_step=200))
    wrapper = pruned.get_layer("prune_pattern_conv1")
    importance = wrapper.pruned[0].importance.numpy()
    assert np.all(importance >= 0) and importance.sum() > 0


@pytest.mark.parametrize("importance", ["magnitude", "taylor", "taylor_accumulated"])
def test_every_importance_gives_pattern_sparse_layers(importance):
    pruned = _fit(small_cnn(), importance=importance)
    assert_wrapper_consistent(pruned.get_layer("prune_pattern_conv1"))


def test_depthwise_gets_patterns_per_channel_kernel():
    model = keras.Sequential([
        keras.Input((12, 12, 3)),
        keras.layers.Conv2D(8, 3, padding="same", name="stem"),
        keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4),
    ])
    pruned = _fit(model)
    kernel = pruned.get_layer("prune_pattern_dw").layer.kernel.numpy()
    described = assert_pattern_sparse(kernel)
    assert described.removed_kernels == 0


def test_custom_prunable_layer_is_pruned_by_its_protocol():
    @keras.saving.register_keras_serializable(package="tests")
    class PatternConv(keras.layers.Layer, ct.PrunableLayer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], 8), name="kernel")

        def call(self, x):
            return keras.ops.conv(x, self.kernel, padding="same")

        def get_prunable_weights(self):
            return [self.kernel]

    model = keras.Sequential([
        keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3, name="stem"),
        PatternConv(name="custom"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4),
    ])
    pruned = _fit(model)
    assert_wrapper_consistent(pruned.get_layer("prune_pattern_custom"))


def test_subclass_of_builtin_conv_is_eligible():
    class MyConv(keras.layers.Conv2D):
        pass

    assert isinstance(ct.prune_pattern(MyConv(4, 3)), ct.PatternPruningWrapper)


def test_nan_weights_at_selection_are_a_clear_error():
    pruned = ct.prune_pattern(small_cnn(), schedule=ct.ConstantSparsity(0.5, begin_step=0))
    pruned.build((None, 12, 12, 3))
    wrapper = pruned.get_layer("prune_pattern_conv1")
    kernel = wrapper.layer.kernel
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    with pytest.raises(ValueError, match="conv1.*NaN"):
        wrapper.update_pruning(1)


def test_polynomial_decay_ramps_connectivity():
    schedule = ct.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=8, frequency=2)
    pruned = _fit(small_cnn(), schedule=schedule)
    described = assert_wrapper_consistent(pruned.get_layer("prune_pattern_conv2"))
    assert described.removed_kernels == int(0.75 * described.num_kernels)


def test_one_minibatch_taylor_keeps_only_the_last_step():
    schedule = ct.ClickTrainSchedule(selection_step=1000, hard_pruning_step=2000)
    pruned = ct.prune_pattern(small_cnn(), schedule=schedule, importance="taylor")
    pruned.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    x, y = random_data(32)
    callbacks = [ct.UpdatePruningStep()]
    pruned.fit(x[:16], y[:16], batch_size=16, verbose=0, callbacks=callbacks)
    pruned.fit(x[16:], y[16:], batch_size=16, verbose=0, callbacks=callbacks)
    wrapper = pruned.get_layer("prune_pattern_conv1")
    kernel = wrapper.layer.kernel
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y[16:], pruned(x[16:]))
        loss = keras.ops.mean(loss)
    gradient = tape.gradient(loss, kernel)
    expected = np.square(kernel.numpy() * gradient.numpy())
    np.testing.assert_allclose(wrapper.pruned[0].importance.numpy(), expected,
                               rtol=1e-3, atol=1e-9)


def test_soft_anneal_fades_removed_weights_out_of_the_forward_pass():
    schedule = ct.ClickTrainSchedule(selection_step=2, hard_pruning_step=10, penalty=0.0)
    pruned = ct.prune_pattern(small_cnn(), schedule=schedule, soft_anneal=True)
    pruned.build((None, 12, 12, 3))
    wrapper = pruned.get_layer("prune_pattern_conv1")
    state = wrapper.pruned[0]
    keeps = []
    for step in range(1, 13):  # tfmot numbering: the first batch is step 1.
        wrapper.update_pruning(step)
        keeps.append(float(wrapper.soft_keep.numpy()))
        if step == 6:
            # Mid soft phase: removed entries are scaled, kept ones whole.
            forward = wrapper._forward_mask(state).numpy()
            target = state.target_mask.numpy()
            np.testing.assert_allclose(forward[target == 1], 1.0)
            np.testing.assert_allclose(forward[target == 0], keeps[-1])
    assert keeps[:2] == [1.0, 1.0]
    assert keeps[2] == pytest.approx(0.88) and keeps[9] == 0.0 and keeps[11] == 0.0
    assert all(a >= b for a, b in zip(keeps, keeps[1:]))
    # Hard phase: the forward mask is exactly the target.
    np.testing.assert_array_equal(wrapper._forward_mask(state).numpy(),
                                  state.target_mask.numpy())


def test_soft_anneal_trains_to_pattern_sparse_layers():
    pruned = _fit(small_cnn(), soft_anneal=True)
    assert_wrapper_consistent(pruned.get_layer("prune_pattern_conv1"))


def test_wrapper_refuses_an_unprunable_layer_at_construction():
    with pytest.raises(ValueError, match="'recurrent'.*ConvLSTM2D"):
        ct.PatternPruningWrapper(keras.layers.ConvLSTM2D(4, 3, name="recurrent"))
    # Embedding, which failed at build with AttributeError: 'kernel', prunes.
    wrapper = ct.PatternPruningWrapper(keras.layers.Embedding(10, 4, name="words"))
    wrapper.build((None, 3))
    assert wrapper.pruned_weights()[0][0] is wrapper.layer.embeddings


def test_from_config_leaves_the_callers_dict_alone():
    config = ct.prune_pattern(keras.layers.Conv2D(4, 3, name="c")).get_config()
    before = json.dumps(config, sort_keys=True)
    first = ct.PatternPruningWrapper.from_config(config)
    second = ct.PatternPruningWrapper.from_config(config)
    assert json.dumps(config, sort_keys=True) == before
    assert first.layer.name == second.layer.name == "c"


def _dense_model():
    return keras.Sequential([keras.Input((10,)), keras.layers.Dense(10, name="dense")])


def _fit_dense(schedule, batches):
    pruned = ct.prune_pattern(_dense_model(), schedule=schedule, unstructured="all")
    pruned.compile("sgd", "mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batches, 10)).astype("float32")
    pruned.fit(x, x, batch_size=1, epochs=1, shuffle=False, verbose=0,
               callbacks=[ct.UpdatePruningStep()])
    wrapper = ct.pruning_wrappers(pruned)[0]
    return wrapper, np.count_nonzero(wrapper.pruned[0].mask.numpy() == 0)


def test_steps_are_numbered_as_in_tfmot():
    # tfmot: the first batch is step 1, so this schedule reaches its end
    # step, and its final sparsity, on the fourth batch.
    schedule = ct.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=4, frequency=2)
    wrapper, removed = _fit_dense(schedule, batches=4)
    assert int(wrapper.pruning_step.numpy()) == 4
    assert removed == 80


@pytest.mark.parametrize("schedule, removed", [
    (ct.ConstantSparsity(0.29, begin_step=0), 29),
    (ct.PolynomialDecay(0.2, 0.5, begin_step=1, end_step=100), 20),
])
def test_sparsity_counts_are_not_rounded_down_by_floating_point(schedule, removed):
    assert _fit_dense(schedule, batches=1)[1] == removed


def test_kernel_counts_are_not_rounded_down_by_floating_point():
    # Kernel by kernel: 0.29 of the 100 kernels.
    layer = ct.prune_pattern(keras.layers.Conv2D(10, 3, name="c"),
                             schedule=ct.ConstantSparsity(0.29, begin_step=0),
                             filter_group=1)
    layer.build((None, 6, 6, 10))
    layer.update_pruning(1)
    assert int((layer.pattern_state(0)[1] == -1).sum()) == 29
