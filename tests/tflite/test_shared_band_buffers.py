"""The float pattern convs of a graph share band buffers: layers of different
band layouts taking turns on them, in any order, on one or more threads,
after resizes, still match Keras."""

import keras
import numpy as np
import pytest
import tflite_helpers

from tf_clicktrain import tflite as ct_tflite

TOLERANCE = 1e-4


def _mixed_layout_model(input_shape):
    """3x3 convs of different band layouts taking turns, two of the same
    layout in a row; the stride-2 "same" convs over an odd width read, at
    their first output column, a padding column they never write (they rely
    on the buffer's zeros), right after a layer that wrote data there."""
    inputs = keras.Input(input_shape)
    a = keras.layers.Conv2D(24, 3, padding="same", activation="relu")(inputs)
    b = keras.layers.Conv2D(24, 3, padding="valid")(keras.layers.ZeroPadding2D(1)(a))
    c = keras.layers.Conv2D(24, 3, strides=2, padding="same")(b)
    d = keras.layers.Conv2D(24, 3, padding="same", activation="relu")(c)
    e = keras.layers.Conv2D(24, 3, padding="same")(d)
    f = keras.layers.DepthwiseConv2D(3, padding="same")(e)
    g = keras.layers.Conv2D(12, 3, strides=2, padding="same")(keras.layers.Add()([f, d]))
    outputs = keras.layers.Conv2D(8, 3, padding="same")(g)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("threads", [1, 2])
def test_layers_of_different_band_layouts_sharing_buffers_match_keras(threads):
    input_shape = (15, 15, 8)
    model = tflite_helpers.sparsify_model(
        _mixed_layout_model(input_shape), np.random.default_rng(11))
    tflite_bytes = ct_tflite.convert(model, decide_by="size")
    assert ct_tflite.count_pattern_ops(tflite_bytes) == 8
    interpreter = ct_tflite.Interpreter(model_content=tflite_bytes, num_threads=threads)
    rng = np.random.default_rng(3)
    # Batch 3 resizes (every node prepared again, the buffers regrown);
    # back at batch 1 the buffers hold batch 3's bands.
    for batch in (1, 1, 3, 1):
        inputs = rng.normal(size=(batch, *input_shape)).astype(np.float32)
        expected = model.predict(inputs, verbose=0)
        actual = tflite_helpers.run_interpreter(interpreter, inputs)
        error = tflite_helpers.max_relative_error(actual, expected)
        assert error <= TOLERANCE, f"batch {batch}: max relative error {error}"
