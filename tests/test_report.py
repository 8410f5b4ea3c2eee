"""The pattern report: figures as data, the PNG, the TensorBoard image."""

import glob

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_clicktrain as ct
from tests.conftest import random_data
from tests.conftest import small_cnn

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Three 4-entry patterns (positions 3 * row + column).
CROSS = (1, 3, 4, 5)
CORNER = (0, 1, 3, 4)
DIAGONAL = (0, 4, 8, 2)


def _row(positions):
    row = np.zeros(9, np.float32)
    row[list(positions)] = 1.0
    return row


def _hand_made_model():
    """A dense first conv, then a 2 -> 3 conv with known patterns."""
    model = keras.Sequential([
        keras.Input((6, 6, 1)),
        keras.layers.Conv2D(2, 3, padding="same", name="first"),
        keras.layers.Conv2D(3, 3, padding="same", name="patterned"),
    ])
    # Kernel rows in to_kernel_rows order: 6 kernels (2 inputs x 3 outputs).
    rows = np.stack([
        _row(CROSS), _row(CROSS), _row(CORNER),
        np.zeros(9, np.float32), _row(CROSS), _row(DIAGONAL),
    ])
    values = rows * np.random.default_rng(0).uniform(0.5, 1.5, rows.shape)
    layer = model.get_layer("patterned")
    layer.kernel.assign(ct.patterns.from_kernel_rows(values, layer.kernel.shape))
    return model


def test_hand_made_model_read_from_zeros():
    reports = ct.report.pattern_report(_hand_made_model())
    assert [r.name for r in reports] == ["patterned"]
    (report,) = reports
    assert report.source == "zeros" and report.phase is None
    assert report.num_kernels == 6
    assert report.kept_kernels == 5 and report.removed_kernels == 1
    # Most used first, ties in position order.
    expected = [CROSS, CORNER, DIAGONAL]
    assert [tuple(np.flatnonzero(p)) for p in report.patterns] == [
        tuple(sorted(p)) for p in expected
    ]
    np.testing.assert_array_equal(report.counts, [3, 1, 1])
    assert report.num_patterns_in_use == 3
    assert report.nonzero == 20
    assert report.compression == pytest.approx(54 / 20)
    assert report.pattern_ids is None


def test_dense_convs_only_on_request():
    reports = ct.report.pattern_report(_hand_made_model(), include_dense=True)
    first = reports[0]
    assert first.name == "first"
    assert first.kept_kernels == first.num_kernels == 2
    np.testing.assert_array_equal(first.patterns, np.ones((1, 9)))
    np.testing.assert_array_equal(first.counts, [2])


def test_png_written(tmp_path):
    path = str(tmp_path / "report.png")
    assert ct.report.plot_pattern_report(_hand_made_model(), path) == path
    with open(path, "rb") as handle:
        data = handle.read()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000
    image = tf.io.decode_png(data)
    assert image.shape[0] > 100 and image.shape[1] > 300


def _trained_wrapped_model():
    schedule = ct.ClickTrainSchedule(
        selection_step=2, hard_pruning_step=4, connectivity_sparsity=0.5)
    pruned = ct.prune_pattern(small_cnn(), schedule=schedule,
                              importance="taylor_accumulated")
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    x, y = random_data(96)
    pruned.fit(x, y, epochs=2, batch_size=16, verbose=0,
               callbacks=[ct.UpdatePruningStep()])
    return pruned


def test_trained_wrapped_model_and_its_stripped_copy(tmp_path):
    pruned = _trained_wrapped_model()
    reports = ct.report.pattern_report(pruned)
    wrappers = {w.layer.name: w for w in ct.pruning_wrappers(pruned)}
    # conv0 is left dense, the 1x1 conv is pruned unstructured: not reported.
    assert [r.name for r in reports] == ["conv1", "conv2"]
    for report in reports:
        pattern_set, pattern_ids = wrappers[report.name].pattern_state(0)
        assert report.source == "wrapper" and report.phase == "hard"
        np.testing.assert_array_equal(report.patterns, pattern_set)
        np.testing.assert_array_equal(report.pattern_ids, pattern_ids)
        kept = pattern_ids[pattern_ids >= 0]
        np.testing.assert_array_equal(report.counts, np.bincount(kept, minlength=4))
        assert report.kept_kernels == kept.size == report.num_kernels // 2
        assert report.counts.sum() == report.kept_kernels
        assert (report.patterns.sum(axis=1) == 4).all()

    # Read back from the zeros, the stripped model gives the same figures
    # (the used patterns, most used first).
    stripped = ct.report.pattern_report(ct.strip_pruning(pruned))
    assert [r.name for r in stripped] == ["conv1", "conv2"]
    for wrapped, plain in zip(reports, stripped):
        assert plain.kept_kernels == wrapped.kept_kernels
        assert plain.nonzero == wrapped.nonzero
        used = {tuple(p): c for p, c in zip(wrapped.patterns.tolist(), wrapped.counts) if c}
        assert {tuple(p): c for p, c in zip(plain.patterns.tolist(), plain.counts)} == used
        assert list(plain.counts) == sorted(plain.counts, reverse=True)

    for model, name in ((pruned, "wrapped.png"), (ct.strip_pruning(pruned), "plain.png")):
        path = tmp_path / name
        ct.report.plot_pattern_report(model, str(path))
        assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_before_selection_and_without_pattern_layers(tmp_path):
    schedule = ct.ClickTrainSchedule(selection_step=100, hard_pruning_step=200,
                                     connectivity_sparsity=0.5)
    pruned = ct.prune_pattern(small_cnn(), schedule=schedule)
    pruned.build((None, 12, 12, 3))
    reports = ct.report.pattern_report(pruned)
    assert [r.name for r in reports] == ["conv1", "conv2"]
    for report in reports:
        assert not report.selected and report.phase == "dense"
        assert report.kept_kernels == report.num_kernels
        assert report.patterns.shape == (0, 9) and report.compression == 1.0
    ct.report.plot_pattern_report(pruned, str(tmp_path / "dense.png"))

    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert ct.report.pattern_report(dense) == []
    ct.report.plot_pattern_report(dense, str(tmp_path / "empty.png"))
    assert (tmp_path / "empty.png").read_bytes().startswith(PNG_SIGNATURE)


def test_many_patterns_are_summed_up_in_the_drawing():
    model = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.Conv2D(8, 3, name="c")])
    kernel = model.layers[0].kernel.numpy()
    kernel[np.random.default_rng(1).random(kernel.shape) < 0.5] = 0.0
    model.layers[0].kernel.assign(kernel)
    (report,) = ct.report.pattern_report(model)
    assert report.counts.sum() == report.kept_kernels
    assert len(report.patterns) > 5
    fig = ct.report.pattern_report_figure([report], max_patterns=5)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(t.startswith(f"+{len(report.patterns) - 5} more") for t in texts)
    with pytest.raises(ValueError, match="max_patterns"):
        ct.report.pattern_report_figure([report], max_patterns=0)


def _image_tags(log_dir):
    steps = {}
    for path in glob.glob(f"{log_dir}/*tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "pruning/pattern_report":
                    steps.setdefault(value.tag, []).append(event.step)
    return steps


@pytest.mark.parametrize("update_freq", ["epoch", 2])
def test_pruning_summaries_log_the_report_image_per_epoch(tmp_path, update_freq):
    pruned = ct.prune_pattern(small_cnn(), schedule=ct.ConstantSparsity(0.5, begin_step=0))
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    x, y = random_data(32)
    log_dir = str(tmp_path / "logs")
    pruned.fit(x, y, epochs=2, batch_size=16, verbose=0,
               callbacks=[ct.UpdatePruningStep(),
                          ct.PruningSummaries(log_dir, update_freq=update_freq)])
    # Steps are numbered as in tfmot: the epochs end after batches 2 and 4.
    assert _image_tags(log_dir) == {"pruning/pattern_report": [2, 4]}


def test_pruning_summaries_without_matplotlib(tmp_path, monkeypatch):
    def no_matplotlib(*args, **kwargs):
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(ct.report, "pattern_report_png", no_matplotlib)
    pruned = ct.prune_pattern(small_cnn(), schedule=ct.ConstantSparsity(0.5, begin_step=0))
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    x, y = random_data(32)
    log_dir = str(tmp_path / "logs")
    summaries = ct.PruningSummaries(log_dir)
    pruned.fit(x, y, epochs=2, batch_size=16, verbose=0,
               callbacks=[ct.UpdatePruningStep(), summaries])
    assert not summaries.pattern_report
    assert _image_tags(log_dir) == {}


def test_pruning_summaries_report_can_be_turned_off(tmp_path):
    pruned = ct.prune_pattern(small_cnn(), schedule=ct.ConstantSparsity(0.5, begin_step=0))
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    x, y = random_data(16)
    log_dir = str(tmp_path / "logs")
    pruned.fit(x, y, epochs=1, batch_size=16, verbose=0,
               callbacks=[ct.UpdatePruningStep(),
                          ct.PruningSummaries(log_dir, pattern_report=False)])
    assert _image_tags(log_dir) == {}
