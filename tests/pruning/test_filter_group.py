"""filter_group: runs of a 3x3 conv's filters share kernels and patterns."""

import keras
import numpy as np
import pytest

import tf_clicktrain as ct
from tf_clicktrain.pruning.config import PruningConfig
from tests.conftest import random_data
from tests.pruning.helpers import assert_wrapper_consistent

FILTER_GROUP = 4
INPUT_SHAPE = (10, 10, 3)


def _model():
    """Plain convs of 16 and 12 filters, a 10-filter conv (a partial run),
    a grouped conv (runs inside each group) and a depthwise conv."""
    return keras.Sequential([
        keras.Input(INPUT_SHAPE),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv16"),
        keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="conv12"),
        keras.layers.Conv2D(10, 3, padding="same", activation="relu", name="conv10"),
        keras.layers.Conv2D(12, 3, padding="same", groups=2, activation="relu",
                            name="grouped"),
        keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4, name="classifier"),
    ])


def _assert_filter_groups_agree(kernel, filter_group, groups=1):
    """Each run of filters keeps the same taps of every input channel."""
    per_group = kernel.shape[3] // groups
    nonzero = kernel != 0
    for group_start in range(0, kernel.shape[3], per_group):
        group_end = group_start + per_group
        for start in range(group_start, group_end, filter_group):
            run = nonzero[..., start:min(start + filter_group, group_end)]
            assert np.all(run == run[..., :1]), f"filters from {start}"


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(3)
    pruned = ct.prune_pattern(
        _model(), schedule=ct.ClickTrainSchedule(2, 4, connectivity_sparsity=0.5),
        filter_group=FILTER_GROUP,
    )
    pruned.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    x, y = random_data(32, INPUT_SHAPE)
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[ct.UpdatePruningStep()])
    return pruned, x


def test_pruned_kernels_share_masks_in_filter_groups_after_fit_and_strip(trained):
    pruned, _ = trained
    stripped = ct.strip_pruning(pruned)
    for name, groups in (("conv16", 1), ("conv12", 1), ("conv10", 1), ("grouped", 2)):
        kernel = stripped.get_layer(name).kernel.numpy()
        _assert_filter_groups_agree(kernel, FILTER_GROUP, groups)
        assert_wrapper_consistent(pruned.get_layer(f"prune_pattern_{name}"),
                                  max_patterns=4 * groups)
        # Half the kernels are removed and every run still has kept kernels.
        removed = ~ct.patterns.to_kernel_rows(kernel).any(axis=1)
        assert 0.4 <= removed.mean() <= 0.6, name
    # Pattern ids agree inside runs too (not only the zeros).
    _, ids = pruned.get_layer("prune_pattern_conv16").pattern_state(0)
    ids = ids.reshape(8, 16)
    assert np.all(ids.reshape(8, 4, FILTER_GROUP) == ids.reshape(8, 4, FILTER_GROUP)[..., :1])


def test_depthwise_kernels_are_left_to_per_kernel_patterns(trained):
    pruned, _ = trained
    wrapper = pruned.get_layer("prune_pattern_depthwise")
    assert wrapper.filter_group == FILTER_GROUP
    assert wrapper.pruned[0].filter_group == 1
    assert_wrapper_consistent(wrapper)


def test_filter_group_survives_config_and_keras_round_trips(trained, tmp_path):
    pruned, x = trained
    wrapper = pruned.get_layer("prune_pattern_conv12")
    config = wrapper.get_config()
    assert config["filter_group"] == FILTER_GROUP
    assert type(wrapper).from_config(config).filter_group == FILTER_GROUP
    path = str(tmp_path / "filter_group.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("prune_pattern_conv12").filter_group == FILTER_GROUP
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("filters, groups, expected", [(64, 1, 4), (63, 1, 1), (128, 2, 4),
                                                       (96, 2, 1)])
def test_by_default_convs_with_64_filters_per_group_are_grouped_by_4(filters, groups,
                                                                      expected):
    assert PruningConfig(ct.ConstantSparsity(0.5, 0)).filter_group is None
    wrapper = ct.PatternPruningWrapper(keras.layers.Conv2D(filters, 3, groups=groups))
    wrapper.build((None, 8, 8, 2 * groups))
    assert wrapper.filter_group is None
    assert wrapper.pruned[0].filter_group == expected


def test_an_explicit_filter_group_applies_to_narrow_convs_too():
    wrapper = ct.PatternPruningWrapper(keras.layers.Conv2D(8, 3), filter_group=4)
    wrapper.build((None, 8, 8, 2))
    assert wrapper.pruned[0].filter_group == 4


def test_configs_saved_without_filter_group_restore_as_1():
    wrapper = ct.PatternPruningWrapper(keras.layers.Conv2D(64, 3))
    config = wrapper.get_config()
    assert config["filter_group"] is None
    assert type(wrapper).from_config(config).filter_group is None
    # A model saved before filter groups existed pruned every filter alone.
    del config["filter_group"]
    restored = type(wrapper).from_config(config)
    restored.build((None, 8, 8, 2))
    assert restored.pruned[0].filter_group == 1


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "4"])
def test_bad_filter_group_is_rejected_naming_the_argument(value):
    with pytest.raises(ValueError, match="filter_group must be a positive integer"):
        ct.prune_pattern(_model(), filter_group=value)
    with pytest.raises(ValueError, match="filter_group must be a positive integer"):
        ct.PatternPruningWrapper(keras.layers.Conv2D(4, 3), filter_group=value)


def test_filter_grouped_model_converts_and_matches_keras(trained):
    pruned, x = trained
    stripped = ct.strip_pruning(pruned)
    expected = stripped.predict(x, verbose=0)
    tflite_bytes, reports = ct.tflite.convert(stripped, decide_by="size", return_report=True)
    assert [r for r in reports if r.replaced], reports
    runner = ct.tflite.Interpreter(model_content=tflite_bytes).get_signature_runner()
    (output,) = runner(**{runner.get_input_details().popitem()[0]: x}).values()
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-4)
