"""LSTM / GRU / SimpleRNN (cells, RNN(cell), Bidirectional) and
MultiHeadAttention get tfmot's unstructured magnitude pruning."""

import keras
import numpy as np
import pytest

import tf_clicktrain as ct

SCHEDULE = ct.ConstantSparsity(0.5, begin_step=0)
TIMESTEPS, FEATURES = 5, 8


def _sequence_model(layer):
    inputs = keras.Input((TIMESTEPS, FEATURES))
    outputs = layer(inputs)
    return keras.Model(inputs, outputs)


def _attention_model():
    inputs = keras.Input((TIMESTEPS, FEATURES))
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="attention")(
        inputs, inputs)
    return keras.Model(inputs, attended)


LAYERS = {
    "lstm": lambda: _sequence_model(keras.layers.LSTM(8, name="lstm")),
    "gru": lambda: _sequence_model(keras.layers.GRU(8, name="gru")),
    "simple_rnn": lambda: _sequence_model(keras.layers.SimpleRNN(8, name="simple_rnn")),
    "rnn_of_lstm_cell": lambda: _sequence_model(
        keras.layers.RNN(keras.layers.LSTMCell(8), name="rnn_of_lstm_cell")),
    "stacked_cells": lambda: _sequence_model(keras.layers.RNN(
        [keras.layers.GRUCell(8), keras.layers.SimpleRNNCell(8)], name="stacked_cells")),
    "bidirectional": lambda: _sequence_model(
        keras.layers.Bidirectional(keras.layers.LSTM(8), name="bidirectional")),
    "attention": _attention_model,
}

# Kernels pruned per layer: (kernel, recurrent_kernel) per cell; 4 projections.
PRUNED_WEIGHTS = {"lstm": 2, "gru": 2, "simple_rnn": 2, "rnn_of_lstm_cell": 2,
                  "stacked_cells": 4, "bidirectional": 4, "attention": 4}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_trains_to_the_target_sparsity_strips_and_round_trips(name, tmp_path):
    keras.utils.set_random_seed(1)
    model = LAYERS[name]()
    pruned = ct.prune_pattern(model, schedule=SCHEDULE, unstructured="all")
    (wrapper,) = ct.pruning_wrappers(pruned)
    assert wrapper.layer.name == name
    pruned.compile(keras.optimizers.SGD(0.05), "mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, TIMESTEPS, FEATURES)).astype("float32")
    y = np.zeros((8,) + tuple(pruned.output_shape[1:]), "float32")
    pruned.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[ct.UpdatePruningStep()])

    weights = wrapper.pruned_weights()
    assert len(weights) == PRUNED_WEIGHTS[name]
    for weight, kind in weights:
        assert kind == "unstructured"
        value = weight.numpy()
        assert np.count_nonzero(value) == value.size - value.size // 2, weight.path

    stripped = ct.strip_pruning(pruned)
    assert not ct.pruning_wrappers(stripped)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    path = str(tmp_path / f"{name}.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    (loaded_wrapper,) = ct.pruning_wrappers(loaded)
    for (weight, _), (loaded_weight, _) in zip(weights, loaded_wrapper.pruned_weights()):
        np.testing.assert_array_equal(loaded_weight.numpy(), weight.numpy())


def test_recurrent_and_attention_layers_wait_for_unstructured_all(caplog):
    model = keras.Sequential([
        keras.Input((TIMESTEPS, FEATURES)), keras.layers.LSTM(8, return_sequences=True,
                                                              name="lstm"),
        keras.layers.GRU(4, name="gru"),
    ])
    with caplog.at_level("WARNING"):
        assert not ct.pruning_wrappers(ct.prune_pattern(model))
    lines = " ".join(record.getMessage() for record in caplog.records)
    assert "'lstm'" in lines and "'gru'" in lines and "unstructured='all'" in lines
    # Asked for directly, they are pruned whatever the policy.
    assert isinstance(ct.prune_pattern(keras.layers.LSTM(4)), ct.PatternPruningWrapper)


def test_convolutional_lstm_stays_dense_and_is_named():
    with pytest.raises(ValueError, match="'conv_lstm'.*ConvLSTM2D"):
        ct.prune_pattern(keras.layers.ConvLSTM2D(2, 3, name="conv_lstm"))


class PrunableCell(keras.layers.SimpleRNNCell, ct.PrunableLayer):
    """A custom cell that names its own weights (tfmot's PrunableLayer cells)."""

    def get_prunable_weights(self):
        return [self.recurrent_kernel]


def test_a_prunable_layer_cell_names_its_weights():
    wrapper = ct.prune_pattern(keras.layers.RNN(PrunableCell(4)), schedule=SCHEDULE)
    wrapper.build((None, TIMESTEPS, FEATURES))
    ((weight, kind),) = wrapper.pruned_weights()
    assert weight is wrapper.layer.cell.recurrent_kernel and kind == "unstructured"
