"""The step callback and TensorBoard summaries."""

import glob

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_clicktrain as ct
from tests.conftest import random_data
from tests.conftest import small_cnn


def _read_tags(log_dir):
    tags = {}
    for path in glob.glob(f"{log_dir}/*tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    return tags


def test_summaries_log_sparsity_kernels_and_patterns(tmp_path):
    pruned = ct.prune_pattern(small_cnn(), schedule=ct.ConstantSparsity(0.5, begin_step=0))
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    x, y = random_data(32)
    log_dir = str(tmp_path / "logs")
    pruned.fit(x, y, epochs=2, batch_size=16, verbose=0,
               callbacks=[ct.UpdatePruningStep(), ct.PruningSummaries(log_dir)])
    tags = _read_tags(log_dir)
    for name in ("conv1", "conv2"):
        for scalar in ("sparsity", "kernels_kept", "patterns_in_use", "pattern_usage"):
            assert f"pruning/{name}/{scalar}" in tags
    assert "pruning/pointwise/sparsity" in tags
    # tfmot numbering: after 2 and 4 batches.
    assert tags["pruning/conv1/sparsity"] == [2, 4]


def test_step_continues_across_fit_calls():
    pruned = ct.prune_pattern(small_cnn(), schedule=ct.ConstantSparsity(0.5, begin_step=0))
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    x, y = random_data(32)
    for _ in range(2):
        pruned.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[ct.UpdatePruningStep()])
    assert int(ct.pruning_wrappers(pruned)[0].pruning_step.numpy()) == 4


@pytest.mark.parametrize("bad", ["", None, 3])
def test_summaries_reject_bad_log_dir(bad):
    with pytest.raises(ValueError, match="log_dir"):
        ct.PruningSummaries(bad)


def test_stats_report_compression():
    pruned = ct.prune_pattern(small_cnn(), schedule=ct.ConstantSparsity(0.5, begin_step=0))
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    x, y = random_data(32)
    pruned.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[ct.UpdatePruningStep()])
    stats = ct.model_stats(ct.strip_pruning(pruned))
    conv1 = next(s for s in stats.layers if s.name == "conv1")
    assert conv1.kernels_kept == conv1.num_kernels // 2
    assert conv1.nonzero == conv1.kernels_kept * 4
    expected = stats.conv3x3_weights / stats.conv3x3_nonzero
    assert stats.conv3x3_compression == pytest.approx(expected)
    assert stats.conv3x3_compression > 3
    assert "3x3 conv compression" in stats.table()
    assert np.isfinite(stats.model_compression)
