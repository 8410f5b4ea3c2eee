"""Shared test set-up: quiet TensorFlow, deterministic seeds, small models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402



@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()


def small_cnn(input_shape=(12, 12, 3), classes=4, channels=(8, 16, 16)):
    """Conv(first, dense) -> 3x3 convs -> 1x1 conv -> GAP -> Dense."""
    layers = [keras.Input(input_shape)]
    for index, width in enumerate(channels):
        layers.append(
            keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{index}")
        )
    layers += [
        keras.layers.Conv2D(channels[-1], 1, name="pointwise"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(classes, name="classifier"),
    ]
    return keras.Sequential(layers)


def random_data(count=64, input_shape=(12, 12, 3), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count,) + tuple(input_shape)).astype("float32")
    y = rng.integers(0, classes, count)
    return x, y
