"""tfmot's prune_integration_test.py, the cases that apply, ported.

Ported: the custom training loop reaching the target sparsity, the
per-layer "prunes, trains, strips, saves and reloads" cases for the layer
kinds tf_clicktrain prunes, and the RNN cases (LSTM, GRU, SimpleRNN, and an
RNN of several cells).

Not applicable: ``tf.keras.experimental.PeepholeLSTMCell`` in the
several-cells case (Keras 3 has no such cell); the TF1 graph-mode and
``tf.keras.experimental`` SavedModel cases (TF1 APIs); the
``sparsity_m_by_n`` cases (tfmot's ``sparsity_2x4`` flag and its internal
``pruning_obj``; M-by-N is tested in tests/pruning/test_m_by_n.py); the
tfmot-internal registry cases (prune_registry). tfmot's file has no
block-sparsity case (a TODO there).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_clicktrain as ct


def _sparsity(weights):
    values = np.concatenate([np.ravel(w) for w in weights])
    return 1.0 - np.count_nonzero(values) / values.size


def test_prunes_model_custom_training_loop_reaches_target_sparsity():
    pruned_model = ct.prune_pattern(
        keras.Sequential([keras.Input((10,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(5, activation="softmax")]),
        pruning_schedule=ct.ConstantSparsity(target_sparsity=0.5, begin_step=0, frequency=1),
        unstructured="all",
    )
    batch_size = 20
    rng = np.random.default_rng(0)
    x_train = rng.random((batch_size, 10)).astype("float32")
    y_train = keras.utils.to_categorical(rng.integers(0, 5, (batch_size, 1)), 5)
    loss = keras.losses.categorical_crossentropy
    optimizer = keras.optimizers.SGD()
    step_callback = ct.UpdatePruningStep()
    step_callback.set_model(pruned_model)
    pruned_model.optimizer = optimizer
    step_callback.on_train_begin()
    for _ in range(2):
        step_callback.on_train_batch_begin(batch=-1)
        with tf.GradientTape() as tape:
            loss_value = loss(y_train, pruned_model(x_train, training=True))
        grads = tape.gradient(loss_value, pruned_model.trainable_variables)
        optimizer.apply_gradients(zip(grads, pruned_model.trainable_variables))
        step_callback.on_epoch_end(batch=-1)
    kernels = [w.pruned_weights()[0][0].numpy() for w in ct.pruning_wrappers(pruned_model)]
    assert _sparsity(kernels) == pytest.approx(0.5)


LAYERS = {
    "dense": (lambda: keras.layers.Dense(8), (6,)),
    "conv2d_3x3": (lambda: keras.layers.Conv2D(8, 3), (8, 8, 4)),
    "conv2d_1x1": (lambda: keras.layers.Conv2D(8, 1), (8, 8, 4)),
    "conv1d": (lambda: keras.layers.Conv1D(8, 3), (10, 4)),
    "separable_conv2d": (lambda: keras.layers.SeparableConv2D(8, 3), (8, 8, 4)),
    "depthwise_conv2d": (lambda: keras.layers.DepthwiseConv2D(3), (8, 8, 4)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_prunes_single_layer_trains_strips_and_reloads(name, tmp_path):
    make_layer, input_shape = LAYERS[name]
    model = keras.Sequential([
        keras.Input(input_shape),
        ct.prune_pattern(make_layer(), pruning_schedule=ct.ConstantSparsity(0.5, 0)),
        keras.layers.Flatten(), keras.layers.Dense(2),
    ])
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8,) + input_shape).astype("float32")
    y = rng.integers(0, 2, 8)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[ct.UpdatePruningStep()])
    path = str(tmp_path / "pruned.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    stripped = ct.strip_pruning(reloaded)
    assert not ct.pruning_wrappers(stripped)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    kernel = stripped.layers[0].get_weights()[0]
    assert 0 < np.count_nonzero(kernel) < kernel.size


def _fit_rnn_to_half_sparsity(layer):
    model = keras.Sequential([
        keras.Input((3, 4)),
        ct.prune_pattern(layer, pruning_schedule=ct.ConstantSparsity(0.5, 0, -1, 1)),
    ])
    model.compile("sgd", "mse")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((32, 3, 4)).astype("float32")
    model.fit(x, rng.standard_normal((32,) + model.output_shape[1:]), verbose=0,
              callbacks=[ct.UpdatePruningStep()])
    (wrapper,) = ct.pruning_wrappers(model)
    assert _sparsity([w.numpy() for w, _ in wrapper.pruned_weights()]) == pytest.approx(0.5)
    np.testing.assert_allclose(ct.strip_pruning(model).predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer_type", [keras.layers.LSTM, keras.layers.GRU,
                                        keras.layers.SimpleRNN])
def test_rnn_layers_single_cell_reach_target_sparsity(layer_type):
    _fit_rnn_to_half_sparsity(layer_type(10))


def test_rnn_layers_with_rnn_cell_params_reach_target_sparsity():
    _fit_rnn_to_half_sparsity(keras.layers.RNN([
        keras.layers.LSTMCell(10), keras.layers.GRUCell(10), keras.layers.SimpleRNNCell(10)]))
