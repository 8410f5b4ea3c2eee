"""Edited .keras files never load into a broken pruning state.

A model trained into the hard phase is saved once; each case edits one
field of its config.json or one pruning variable in its model.weights.h5 and
must make `keras.saving.load_model` raise a `ValueError` that names the layer
(and, for variables, the variable). The same checks guard a
`tf.train.Checkpoint` restore when training starts.
"""

import io
import json
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_clicktrain as ct
from tests.conftest import random_data
from tests.conftest import small_cnn

LAYER = "conv1"
WRAPPER = f"prune_pattern_{LAYER}"
# The first wrapper's variables in model.weights.h5, in creation order.
VARIABLES = "layers/pattern_pruning_wrapper/vars"
MASK, TARGET, PATTERN_SET, PATTERN_IDS = 0, 1, 2, 3  # 4: the importance.
STEP, PHASE, SELECTIONS, PENALTY, SOFT_KEEP = 5, 6, 7, 8, 9


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    keras.utils.set_random_seed(8)
    model = ct.prune_pattern(
        small_cnn(), schedule=ct.ClickTrainSchedule(2, 4, penalty=1e-3),
        importance="taylor_accumulated",
    )
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = random_data(32)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[ct.UpdatePruningStep()])
    wrapper = model.get_layer(WRAPPER)
    assert int(wrapper.pruning_phase.numpy()) == ct.schedules.HARD
    path = tmp_path_factory.mktemp("saved") / "hard.keras"
    model.save(str(path))
    return path


def _wrapper_config(config):
    (layer,) = [l for l in config["config"]["layers"] if l["config"]["name"] == WRAPPER]
    return layer["config"]


def _tampered(source, target, edit_config=None, edit_weights=None):
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    if edit_config is not None:
        config = json.loads(members["config.json"])
        edit_config(_wrapper_config(config))
        members["config.json"] = json.dumps(config).encode()
    if edit_weights is not None:
        buffer = io.BytesIO(members["model.weights.h5"])
        with h5py.File(buffer, "r+") as weights:
            edit_weights(weights[VARIABLES])
        members["model.weights.h5"] = buffer.getvalue()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return str(target)


def _set(index, change):
    def edit(variables):
        value = variables[str(index)][()]
        value = change(np.array(value))
        del variables[str(index)]
        variables[str(index)] = value
    return edit


def _first_kept_kernel_ids(ids):
    return int(np.flatnonzero(ids >= 0)[0])


def _flip_kept_entry(mask):
    rows = ct.patterns.to_kernel_rows(mask)
    kernel = int(np.flatnonzero(rows.sum(axis=1) > 0)[0])
    position = int(np.flatnonzero(rows[kernel] == 0)[0])
    rows[kernel, position] = 1
    return ct.patterns.from_kernel_rows(rows, mask.shape).astype(mask.dtype)


def _other_pattern_id(ids):
    ids = ids.copy()
    kernel = _first_kept_kernel_ids(ids)
    ids[kernel] = (ids[kernel] + 1) % 4
    return ids


def _with_value(value):
    return lambda array: np.full_like(array, value)


def _one_entry(value):
    def change(array):
        array = array.copy()
        array.flat[0] = value
        return array
    return change


WEIGHT_CASES = {
    "mask_nan": (MASK, _one_entry(np.nan), "mask"),
    "mask_half": (MASK, _one_entry(0.5), "mask"),
    "mask_not_target_in_hard_phase": (MASK, _flip_kept_entry, "mask"),
    "target_mask_inf": (TARGET, _one_entry(np.inf), "target_mask"),
    "target_mask_two": (TARGET, _one_entry(2.0), "target_mask"),
    "target_mask_off_pattern": (TARGET, _flip_kept_entry, "target_mask"),
    "pattern_set_not_binary": (PATTERN_SET, _one_entry(0.3), "pattern_set"),
    "pattern_set_wrong_count": (PATTERN_SET, _with_value(1.0), "pattern_set"),
    "pattern_ids_too_large": (PATTERN_IDS, _one_entry(99), "pattern_ids"),
    "pattern_ids_negative": (PATTERN_IDS, _one_entry(-5), "pattern_ids"),
    "pattern_ids_other_pattern": (PATTERN_IDS, _other_pattern_id, "mask"),
    "step_int64_max": (STEP, _with_value(2**63 - 1), "pruning_step"),
    "step_below_minus_one": (STEP, _with_value(-7), "pruning_step"),
    "phase_seven": (PHASE, _with_value(7), "pruning_phase"),
    "phase_negative": (PHASE, _with_value(-1), "pruning_phase"),
    "selection_count_negative": (SELECTIONS, _with_value(-1), "selection_count"),
    "selection_count_zero_in_hard_phase": (SELECTIONS, _with_value(0), "selection_count"),
    "penalty_nan": (PENALTY, _with_value(np.nan), "penalty_weight"),
    "penalty_negative": (PENALTY, _with_value(-1.0), "penalty_weight"),
    "soft_keep_nan": (SOFT_KEEP, _with_value(np.nan), "soft_keep"),
    "soft_keep_five": (SOFT_KEEP, _with_value(5.0), "soft_keep"),
}


@pytest.mark.parametrize("case", sorted(WEIGHT_CASES))
def test_tampered_pruning_variable_is_refused_on_load(saved, tmp_path, case):
    index, change, variable = WEIGHT_CASES[case]
    path = _tampered(saved, tmp_path / f"{case}.keras", edit_weights=_set(index, change))
    with pytest.raises(ValueError) as raised:
        keras.saving.load_model(path)
    message = str(raised.value)
    assert f"'{LAYER}'" in message and variable in message, message


def _setter(key, value):
    def edit(config):
        config[key] = value
    return edit


def _schedule_field(key, value):
    def edit(config):
        config["schedule"]["config"][key] = value
    return edit


CONFIG_CASES = {
    "schedule_null": (_setter("schedule", None), "schedule"),
    "schedule_not_a_schedule": (_setter("schedule", 5), "schedule"),
    "schedule_hard_before_selection": (_schedule_field("hard_pruning_step", 1), "hard_pruning_step"),
    "schedule_negative_penalty": (_schedule_field("penalty", -1.0), "penalty"),
    "num_patterns_zero": (_setter("num_patterns", 0), "num_patterns"),
    "entries_per_kernel_ten": (_setter("entries_per_kernel", 10), "entries_per_kernel"),
    "importance_unknown": (_setter("importance", "fisher"), "importance"),
    "importance_decay_two": (_setter("importance_decay", 2.0), "importance_decay"),
    "connectivity_above_one": (_setter("connectivity_sparsity", 1.5), "connectivity_sparsity"),
    "soft_anneal_string": (_setter("soft_anneal", "yes"), "soft_anneal"),
    "pattern_library_not_binary": (_setter("pattern_library", [[0.5] * 9] * 4), "pattern_library"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_tampered_wrapper_config_is_refused_on_load(saved, tmp_path, case):
    edit, field = CONFIG_CASES[case]
    path = _tampered(saved, tmp_path / f"{case}.keras", edit_config=edit)
    with pytest.raises(ValueError) as raised:
        keras.saving.load_model(path)
    message = str(raised.value)
    assert LAYER in message and field in message, message


def test_untouched_copy_loads_and_matches(saved, tmp_path):
    path = _tampered(saved, tmp_path / "copy.keras", edit_config=lambda config: None,
                     edit_weights=lambda variables: None)
    model = keras.saving.load_model(path)
    reference = keras.saving.load_model(str(saved))
    for a, b in zip(model.variables, reference.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_tampered_checkpoint_is_refused_when_training_starts(saved, tmp_path):
    model = keras.saving.load_model(str(saved))
    wrapper = model.get_layer(WRAPPER)
    wrapper.pruned[0].pattern_ids.assign(np.full(wrapper.pruned[0].pattern_ids.shape, 42))
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    restored = keras.saving.load_model(str(saved))
    tf.train.Checkpoint(model=restored).restore(path)
    restored.compile("sgd", "sparse_categorical_crossentropy")
    x, y = random_data(16)
    with pytest.raises(ValueError, match=f"'{LAYER}'.*pattern_ids"):
        restored.fit(x, y, verbose=0, callbacks=[ct.UpdatePruningStep()])
    with pytest.raises(ValueError, match=f"'{LAYER}'.*pattern_ids"):
        ct.strip_pruning(restored)
