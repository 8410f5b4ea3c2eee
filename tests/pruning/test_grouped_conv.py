"""Grouped 3x3 convolutions get patterns per group; strip and export work."""

import keras
import numpy as np
import pytest

import tf_clicktrain as ct
from tests.pruning.helpers import assert_pattern_sparse

GROUPS, NUM_PATTERNS = 2, 4


def test_each_group_loses_its_share_of_kernels_and_has_its_own_patterns():
    rng = np.random.default_rng(0)
    importance = rng.random((24, 9))
    row_groups = ct.patterns.kernel_row_groups((3, 3, 3, 8), GROUPS)
    np.testing.assert_array_equal(row_groups[:8], [0, 0, 0, 0, 1, 1, 1, 1])
    selection = ct.patterns.select_patterns_per_group(
        importance, row_groups, NUM_PATTERNS, 0.5,
        candidates=ct.patterns.candidate_patterns(4))
    assert selection.pattern_set.shape == (GROUPS * NUM_PATTERNS, 9)
    for group in range(GROUPS):
        ids = selection.pattern_ids[row_groups == group]
        assert (ids == -1).sum() == 6  # Half of the group's 12 kernels.
        kept = ids[ids != -1]
        assert np.all(kept // NUM_PATTERNS == group)
    with pytest.raises(ValueError, match="groups=3"):
        ct.patterns.kernel_row_groups((3, 3, 3, 8), 3)


def _model():
    return keras.Sequential([
        keras.Input((8, 8, 4)),
        keras.layers.Conv2D(8, 3, padding="same", name="stem"),
        keras.layers.Conv2D(8, 3, padding="same", groups=GROUPS, activation="relu",
                            name="grouped"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, name="head"),
    ])


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(2)
    pruned = ct.prune_pattern(_model(), schedule=ct.ClickTrainSchedule(1, 2))
    pruned.compile(keras.optimizers.SGD(0.05), "mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8, 8, 4)).astype("float32")
    pruned.fit(x, np.zeros((8, 3)), batch_size=4, epochs=2, verbose=0,
               callbacks=[ct.UpdatePruningStep()])
    return pruned, x


def test_grouped_conv_trains_to_per_group_patterns(trained):
    pruned, _ = trained
    wrapper = pruned.get_layer("prune_pattern_grouped")
    assert int(wrapper.pruning_phase.numpy()) == ct.schedules.HARD
    pattern_set, pattern_ids = wrapper.pattern_state(0)
    assert pattern_set.shape == (GROUPS * NUM_PATTERNS, 9)
    kernel = wrapper.layer.kernel.numpy()
    assert kernel.shape == (3, 3, 8 // GROUPS, 8)
    row_groups = ct.patterns.kernel_row_groups(kernel.shape, GROUPS)
    rows = ct.patterns.to_kernel_rows(kernel) != 0
    for group in range(GROUPS):
        assert_pattern_sparse(kernel[..., group * 4:(group + 1) * 4])
        ids = pattern_ids[row_groups == group]
        kept = ids != -1
        assert np.all(ids[kept] // NUM_PATTERNS == group)
        group_rows = rows[row_groups == group]
        assert not group_rows[~kept].any()
        assert not (group_rows[kept] & (pattern_set[ids[kept]] == 0)).any()


def test_a_pattern_id_of_another_group_is_refused_on_load(trained):
    pruned, _ = trained
    wrapper = pruned.get_layer("prune_pattern_grouped")
    ids_variable = wrapper.pruned[0].pattern_ids
    original = ids_variable.numpy()
    try:
        swapped = original.copy()
        first = np.flatnonzero(original != -1)[0]
        swapped[first] = (swapped[first] + NUM_PATTERNS) % (GROUPS * NUM_PATTERNS)
        ids_variable.assign(swapped)
        with pytest.raises(ValueError, match="'grouped'.*another group"):
            wrapper.check_state()
    finally:
        ids_variable.assign(original)


def test_grouped_conv_strips_round_trips_and_exports_as_a_builtin(trained, tmp_path):
    pruned, x = trained
    stripped = ct.strip_pruning(pruned)
    expected = pruned.predict(x, verbose=0)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    path = str(tmp_path / "grouped.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.get_layer("prune_pattern_grouped").pattern_state(0)[1],
                                  pruned.get_layer("prune_pattern_grouped").pattern_state(0)[1])

    tflite_bytes, reports = ct.tflite.convert(stripped, decide_by="size", return_report=True)
    # The converter names the grouped filter "convolution": find it by reason.
    (grouped,) = [r for r in reports if r.reason == "grouped convolution"]
    assert not grouped.replaced
    runner = ct.tflite.Interpreter(model_content=tflite_bytes).get_signature_runner()
    (output,) = runner(**{runner.get_input_details().popitem()[0]: x}).values()
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-4)
