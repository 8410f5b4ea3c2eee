"""End to end on real data through tfds: train with ClickTrain, strip, save,
export to .tflite and run it in LiteRT."""

import os

import keras
import numpy as np
import pytest

import tf_clicktrain as ct
from tests.pruning.helpers import assert_pattern_sparse
from examples import offline_datasets
from examples import reference_models


def _mnist(split, count):
    data = offline_datasets.load("mnist", split, as_supervised=True).take(count)
    images, labels = [], []
    for image, label in data.as_numpy_iterator():
        images.append(image)
        labels.append(label)
    return np.stack(images).astype("float32") / 255.0, np.array(labels)


def _train_clicktrain(epochs, train_count, widths, compression):
    x, y = _mnist("train", train_count)
    steps = int(np.ceil(train_count / 64))
    schedule = ct.ClickTrainSchedule.from_budget(
        epochs, steps, connectivity_sparsity=ct.patterns.sparsity_for_compression(compression),
        penalty=1e-3,
    )
    model = ct.prune_pattern(reference_models.vgg_style_cnn(widths=widths), schedule=schedule,
                             importance="taylor_accumulated")
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0,
              callbacks=[ct.UpdatePruningStep()])
    return model


def test_clicktrain_on_mnist_trains_exports_and_runs_in_litert(tmp_path):
    model = _train_clicktrain(epochs=4, train_count=4096, widths=(8, 8, 16, 16, 32, 32),
                              compression=8.0)
    final = ct.strip_pruning(model)
    final.compile(metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x_test, y_test = _mnist("test", 1000)
    accuracy = final.evaluate(x_test, y_test, verbose=0)[1]
    assert accuracy > 0.85, accuracy

    stats = ct.model_stats(final)
    # First conv is dense, so the total is a little under 8x.
    assert 6.5 < stats.conv3x3_compression <= 8.0
    for layer in final.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.name != "conv1":
            assert_pattern_sparse(layer.kernel.numpy())

    path = str(tmp_path / "pruned.keras")
    final.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x_test[:8], verbose=0),
                               final.predict(x_test[:8], verbose=0), rtol=1e-6)

    tflite_bytes = ct.tflite.convert(final, decide_by="size")
    dense_bytes = ct.tflite.convert(final, custom_ops=False)
    assert len(tflite_bytes) < len(dense_bytes)
    interpreter = ct.tflite.Interpreter(model_content=tflite_bytes, num_threads=1)
    interpreter.allocate_tensors()
    runner = interpreter.get_signature_runner()
    input_name = next(iter(runner.get_input_details()))
    logits = next(iter(runner(**{input_name: x_test[:5]}).values()))
    expected = final.predict(x_test[:5], verbose=0)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.slow
def test_fashion_mnist_example_end_to_end(tmp_path):
    """The README's main job, shortened: dense vs ClickTrain on Fashion-MNIST."""
    import json
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(
        [sys.executable, os.path.join(repo, "examples", "clicktrain_tfds.py"),
         "--epochs=4", "--train_examples=20000", f"--output_dir={tmp_path}"],
        check=True, timeout=1800,
    )
    with open(tmp_path / "results.json") as handle:
        results = json.load(handle)
    assert results["dense"]["accuracy"] > 0.85
    # A regression guard at a 4-epoch budget (about 3 pp below dense here);
    # the accuracy goals are measured by benchmarks/accuracy.py.
    assert results["clicktrain"]["accuracy"] > results["dense"]["accuracy"] - 0.05
    assert results["clicktrain"]["conv3x3_compression"] > 7.0
    assert (tmp_path / "pruned.keras").exists()
    reloaded = keras.saving.load_model(str(tmp_path / "pruned.keras"))
    assert isinstance(reloaded, keras.Model)
    # The exported files: fp32 keeps the Keras model's accuracy, int8 stays
    # within 0.5 pp of it (issue goal 0.3 pp on the full budget), and the
    # pattern-op files are smaller than their builtin-only twins.
    files = results["tflite"]
    keras_accuracy = results["clicktrain"]["accuracy"]
    assert abs(files["fp32 pattern op"]["accuracy"] - keras_accuracy) < 0.002
    assert abs(files["int8 pattern op"]["accuracy"] - keras_accuracy) < 0.005
    assert files["fp32 pattern op"]["kb"] < files["fp32 builtin-only"]["kb"] / 4
    assert files["int8 pattern op"]["kb"] < files["int8 builtin-only"]["kb"] / 2
    assert (tmp_path / "pruned_int8.tflite").exists()
