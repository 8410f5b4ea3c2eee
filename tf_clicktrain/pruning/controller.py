"""Per-layer pruning decisions: selection, phases, masks (eager, NumPy).

The wrapper (`wrapper.py`) owns the Keras variables and the forward pass; the
controller reads the schedule once per step and writes those variables:
patterns and kernels chosen at selection steps, target masks, the phase, the
penalty weight, the soft phase's fade, and the masks themselves when the
hard phase starts. It keeps Python copies of what it wrote so that a step
where the schedule changes nothing costs no variable write.
"""

import logging

import numpy as np

from tf_clicktrain import patterns
from tf_clicktrain.patterns.blocks import block_mask
from tf_clicktrain.patterns.blocks import matrix_shape
from tf_clicktrain.patterns.m_by_n import m_by_n_mask
from tf_clicktrain.pruning import layer_kinds
from tf_clicktrain.pruning import schedules as schedules_lib

logger = logging.getLogger(__name__)


def _block_target(importance, sparsity, config):
    """The block mask of a weight, cut as its matrix (see `matrix_shape`).

    Blocks are scored from ``sqrt(importance)``: with magnitude importance
    (``w ** 2``) that is ``|w|``, the magnitude tfmot pools.
    """
    matrix = np.sqrt(importance).reshape(matrix_shape(importance.shape))
    mask = block_mask(matrix, sparsity, config.block_size, config.block_pooling_type)
    return mask.reshape(importance.shape)


def _select_patterns(importance, pruned, sparsity, config):
    """The `PatternSelection` of a pattern-pruned weight."""
    rows = patterns.to_kernel_rows(importance)
    row_groups = patterns.kernel_row_groups(importance.shape, pruned.groups)
    kwargs = dict(
        num_patterns=config.num_patterns,
        connectivity_sparsity=sparsity,
        candidates=config.candidates,
        pattern_library=config.pattern_library,
    )
    if pruned.filter_group == 1:
        return patterns.select_patterns_per_group(rows, row_groups, **kwargs)
    filter_rows = patterns.filter_group_rows(
        importance.shape, pruned.filter_group, pruned.groups
    )
    return patterns.select_patterns_per_filter_group(rows, row_groups, filter_rows, **kwargs)


class PruningController:
    """Drives one `PatternPruningWrapper` through its schedule.

    Args:
        wrapper: a built `PatternPruningWrapper`.
    """

    def __init__(self, wrapper):
        self.wrapper = wrapper
        self.config = wrapper.config
        self.forget()

    def forget(self):
        """Drops the Python copies (after the variables were restored)."""
        self._phase = None
        self._penalty = None
        self._fade = None
        self._selections = None

    def _read_known_state(self):
        if self._selections is None:
            self._phase = int(self.wrapper.pruning_phase.numpy())
            self._selections = int(self.wrapper.selection_count.numpy())

    def _needs_selection(self, decision):
        self._read_known_state()
        return decision.phase != schedules_lib.DENSE and (
            decision.should_prune or self._selections == 0
        )

    def check_selection_inputs(self, step):
        """Raises `ValueError` if a selection at ``step`` would see NaN/Inf.

        The step callback asks every controller before any of them selects,
        so a diverged layer stops training with no wrapper half-updated.
        """
        if self._needs_selection(self.config.schedule.at(step)):
            for pruned in self.wrapper.pruned:
                self._importance_of(pruned)  # Raises, naming layer and weight.

    def update(self, step):
        """Advances the pruning state to ``step``.

        Selects patterns and kernels when the schedule says so (or when a
        resumed run reaches a pruned phase with no selection made yet),
        switches phases, and applies masks in the hard phase.
        """
        wrapper = self.wrapper
        wrapper.pruning_step.assign(step)
        decision = self.config.schedule.at(step)
        needs_selection = self._needs_selection(decision)
        if needs_selection:
            self._select(decision, step)
        entering_hard = decision.phase == schedules_lib.HARD and (
            needs_selection or self._phase != schedules_lib.HARD
        )
        if decision.phase != self._phase:
            wrapper.pruning_phase.assign(decision.phase)
            self._phase = decision.phase
        if entering_hard:
            self._apply_masks()
        if decision.penalty != self._penalty:
            wrapper.penalty_weight.assign(decision.penalty)
            self._penalty = decision.penalty
        if wrapper.soft_keep is not None and decision.fade != self._fade:
            wrapper.soft_keep.assign(decision.fade)
            self._fade = decision.fade

    def _layer_sparsity(self, pruned, decision, step):
        own = (
            self.config.connectivity_sparsity
            if pruned.kind == layer_kinds.PATTERN
            else self.config.unstructured_sparsity
        )
        if own is not None:
            return own * self.config.schedule.ramp(step)
        if pruned.kind == layer_kinds.PATTERN and layer_kinds.keeps_every_kernel(
            self.wrapper.layer, pruned.weight
        ):
            return 0.0
        return decision.sparsity

    def _importance_of(self, pruned):
        name = self.wrapper.layer.name
        weight = pruned.weight.numpy()
        if not np.all(np.isfinite(weight)):
            raise ValueError(
                f"Layer '{name}': weight '{pruned.weight.name}' contains "
                "NaN or Inf at pattern selection; training has diverged (lower "
                "the learning rate or check the data)."
            )
        if pruned.importance is not None:
            accumulated = np.asarray(pruned.importance.numpy(), np.float64)
            if not np.all(np.isfinite(accumulated)):
                raise ValueError(
                    f"Layer '{name}': Taylor importance of "
                    f"'{pruned.weight.name}' contains NaN or Inf (non-finite "
                    "gradients) at pattern selection."
                )
            if accumulated.any():
                return accumulated
            logger.warning(
                "Layer '%s': no gradient has been accumulated yet, selecting "
                "patterns by magnitude.", name,
            )
        return np.square(weight.astype(np.float64))

    def _select(self, decision, step):
        config = self.config
        for pruned in self.wrapper.pruned:
            importance = self._importance_of(pruned)
            sparsity = self._layer_sparsity(pruned, decision, step)
            if pruned.kind == layer_kinds.PATTERN:
                selection = _select_patterns(importance, pruned, sparsity, config)
                pruned.pattern_set.assign(selection.pattern_set)
                pruned.pattern_ids.assign(selection.pattern_ids)
                target = patterns.from_kernel_rows(selection.mask_rows, pruned.weight.shape)
            elif config.sparsity_m_by_n is not None:
                target = m_by_n_mask(importance, *config.m_by_n_kept)
            elif config.uses_blocks:
                target = _block_target(importance, sparsity, config)
            else:
                target = patterns.magnitude_mask(importance, sparsity)
            pruned.target_mask.assign(target.astype(np.float32))
        self.wrapper.selection_count.assign_add(1)
        self._selections += 1

    def _apply_masks(self):
        for pruned in self.wrapper.pruned:
            pruned.mask.assign(pruned.target_mask)
        self.wrapper.reapply_masks()
