"""The Keras layer wrapper that owns a layer's pruning state."""

import inspect
import logging

import keras
import numpy as np
import tensorflow as tf

from tf_clicktrain import patterns
from tf_clicktrain.patterns.connectivity import validate_sparsity
from tf_clicktrain.patterns.library import validate_entries_per_kernel
from tf_clicktrain.pruning import eligibility
from tf_clicktrain.pruning import schedules as schedules_lib

logger = logging.getLogger(__name__)

IMPORTANCE_METHODS = ("magnitude", "taylor", "taylor_accumulated")

# Keeps the gradient of sqrt finite for groups that are already zero.
GROUP_LASSO_EPSILON = 1e-8

MISSING_CALLBACK_MESSAGE = (
    "The pruning step is not set: add tf_clicktrain.UpdatePruningStep() to "
    "the callbacks of fit() when training a model with pruning wrappers."
)


class MaskConstraint(keras.constraints.Constraint):
    """Re-applies the mask after every optimizer step.

    Keras applies a variable's constraint right after each update, so masked
    weights stay exactly zero whatever the optimizer's state (momentum, Adam
    moments) says. A constraint the layer already had runs first.
    """

    def __init__(self, mask, inner=None):
        self.mask = mask
        self.inner = inner

    def __call__(self, weight):
        if self.inner is not None:
            weight = self.inner(weight)
        return weight * keras.ops.cast(self.mask, weight.dtype)


class _WeightState:
    """The pruning variables of one pruned weight (held by the wrapper)."""

    def __init__(self, weight, kind):
        self.weight = weight
        self.kind = kind
        self.mask = None
        self.target_mask = None
        self.pattern_set = None
        self.pattern_ids = None
        self.importance = None
        self.original_constraint = None


def _global_gradient(gradient):
    """The gradient of the whole global batch, inside a replica of a strategy.

    Under `tf.distribute` each replica's gradient covers its own share of the
    batch (Keras scales the loss by 1 / replicas), and the optimizer sums
    them. The Taylor term is a square, so it must be taken of that sum, not
    summed per replica: all-reduce first, then every replica holds the same
    importance as a single-device run on the same global batch.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return gradient
    return context.all_reduce(tf.distribute.ReduceOp.SUM, gradient)


def _is_positive_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


@keras.saving.register_keras_serializable(package="tf_clicktrain")
class PatternPruningWrapper(keras.layers.Wrapper):
    """Prunes a layer's weights to patterns (3x3) or by magnitude (others).

    The wrapper owns all pruning state as Keras variables, so it is saved in
    checkpoints and `.keras` files: per pruned weight the applied mask, the
    selection's target mask, the layer's pattern set and per-kernel pattern
    ids, and the importance accumulator; plus the step, the phase and the
    group-lasso weight. The wrapped layer computes with ``weight * mask`` in
    every forward pass, and the mask is re-applied after every optimizer
    step, so masked weights are exactly zero from the hard phase on.

    Use `tf_clicktrain.prune_pattern` rather than this class directly; drive
    it with the `tf_clicktrain.UpdatePruningStep` callback.

    Args:
        layer: the layer to prune.
        schedule: a `tf_clicktrain.schedules.PruningSchedule`.
        num_patterns: K, patterns per layer.
        entries_per_kernel: weights kept in each kept 3x3 kernel.
        force_centre: only generate patterns that keep the kernel's centre.
        connectivity_sparsity: fraction of 3x3 kernels this layer removes at
            the end of the schedule, or None to follow the schedule's
            sparsity.
        unstructured_sparsity: final sparsity of non-3x3 weights, or None to
            follow the schedule's sparsity.
        importance: "magnitude" (w^2), "taylor" ((w * dL/dw)^2 of the last
            minibatch before selection) or "taylor_accumulated" (its moving
            average over the steps before selection).
        importance_decay: the moving average's decay, in [0, 1).
        soft_anneal: in the soft phase of a `ClickTrainSchedule`, also scale
            what the masks will remove from 1 down to 0 in the forward pass,
            linearly over the phase, so applying the masks costs nothing
            (default; +0.6 pp at 8x in benchmarks/README.md).
        pattern_library: optional fixed ``(K, 9)`` 0/1 pattern set used
            instead of generating one from the data.
        **kwargs: base layer arguments (e.g. ``name``).
    """

    def __init__(
        self,
        layer,
        schedule=None,
        num_patterns=4,
        entries_per_kernel=4,
        force_centre=False,
        connectivity_sparsity=None,
        unstructured_sparsity=None,
        importance="magnitude",
        importance_decay=0.99,
        pattern_library=None,
        soft_anneal=True,
        **kwargs,
    ):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                "PatternPruningWrapper wraps a Keras layer. "
                f"Received: layer={layer!r}"
            )
        if isinstance(layer, PatternPruningWrapper):
            raise ValueError(f"Layer '{layer.name}' is already wrapped for pruning.")
        if not _is_positive_int(num_patterns):
            raise ValueError(
                "num_patterns must be a positive integer. "
                f"Received: num_patterns={num_patterns!r}"
            )
        validate_entries_per_kernel(entries_per_kernel)
        for name, value in (
            ("connectivity_sparsity", connectivity_sparsity),
            ("unstructured_sparsity", unstructured_sparsity),
        ):
            if value is not None:
                validate_sparsity(value, name)
        if importance not in IMPORTANCE_METHODS:
            raise ValueError(
                f"importance must be one of {IMPORTANCE_METHODS}. "
                f"Received: importance={importance!r}"
            )
        validate_sparsity(importance_decay, "importance_decay")
        self.candidates = None
        if pattern_library is not None:
            pattern_library = np.asarray(pattern_library, np.float32)
            if (
                pattern_library.ndim != 2
                or pattern_library.shape[1] != 9
                or not np.all(np.isin(pattern_library, (0.0, 1.0)))
                or np.any(pattern_library.sum(axis=1) != entries_per_kernel)
            ):
                raise ValueError(
                    "pattern_library must be a (K, 9) array of 0/1 rows with "
                    f"entries_per_kernel={entries_per_kernel} ones each. "
                    f"Received: pattern_library with shape {pattern_library.shape}"
                )
            num_patterns = len(pattern_library)
        else:
            self.candidates = patterns.candidate_patterns(entries_per_kernel, force_centre)
            if num_patterns > len(self.candidates):
                raise ValueError(
                    f"num_patterns must be at most {len(self.candidates)}, the "
                    f"number of patterns with entries_per_kernel={entries_per_kernel} "
                    f"and force_centre={force_centre}. Received: num_patterns={num_patterns}"
                )
        if schedule is None:
            schedule = schedules_lib.ConstantSparsity(0.5, begin_step=0)
        schedule = schedules_lib.deserialize(schedule)
        kwargs.setdefault("name", f"prune_pattern_{layer.name}")
        super().__init__(layer, **kwargs)
        self.schedule = schedule
        self.num_patterns = int(num_patterns)
        self.entries_per_kernel = int(entries_per_kernel)
        self.force_centre = bool(force_centre)
        self.connectivity_sparsity = connectivity_sparsity
        self.unstructured_sparsity = unstructured_sparsity
        self.importance = importance
        self.importance_decay = float(importance_decay)
        self.pattern_library = pattern_library
        self.soft_anneal = bool(soft_anneal)
        self._states = []
        # Python-side copies of the phase and penalty, so the per-step
        # callback writes a variable only when something changes.
        self._known_phase = None
        self._known_penalty = None
        self._known_soft_keep = None
        self._known_selections = 0
        self._layer_takes_training = (
            "training" in inspect.signature(layer.call).parameters
        )

    # ------------------------------------------------------------------ build

    def build(self, input_shape=None):
        super().build(input_shape)
        weights = eligibility.prunable_weights(self.layer)
        self._states = []
        for index, weight in enumerate(weights):
            state = _WeightState(weight, eligibility.weight_kind(weight))
            base = f"{index}_{weight.name}"
            state.mask = self.add_weight(
                name=f"{base}_mask", shape=weight.shape, initializer="ones",
                trainable=False,
            )
            state.target_mask = self.add_weight(
                name=f"{base}_target_mask", shape=weight.shape, initializer="ones",
                trainable=False,
            )
            if state.kind == eligibility.PATTERN:
                num_kernels = int(np.prod(weight.shape[2:]))
                state.pattern_set = self.add_weight(
                    name=f"{base}_pattern_set", shape=(self.num_patterns, 9),
                    initializer="zeros", trainable=False,
                )
                state.pattern_ids = self.add_weight(
                    name=f"{base}_pattern_ids", shape=(num_kernels,),
                    initializer=keras.initializers.Constant(patterns.selection.REMOVED),
                    dtype="int32", trainable=False,
                )
            if self.importance != "magnitude":
                # Written locally by every replica from the all-reduced
                # gradient (see _global_gradient), so all copies are equal;
                # reads average them (a no-op without a strategy).
                state.importance = keras.Variable(
                    np.zeros(weight.shape, np.float32), trainable=False,
                    name=f"{base}_importance", aggregation="mean",
                    synchronization="on_read",
                )
                setattr(self, f"_importance_{index}", state.importance)
            state.original_constraint = weight.constraint
            weight.constraint = MaskConstraint(state.mask, weight.constraint)
            self._states.append(state)
        self.pruning_step = self.add_weight(
            name="pruning_step", shape=(), dtype="int64", trainable=False,
            initializer=keras.initializers.Constant(-1),
        )
        self.pruning_phase = self.add_weight(
            name="pruning_phase", shape=(), dtype="int32", trainable=False,
            initializer="zeros",
        )
        self.selection_count = self.add_weight(
            name="selection_count", shape=(), dtype="int32", trainable=False,
            initializer="zeros",
        )
        self.penalty_weight = self.add_weight(
            name="penalty_weight", shape=(), trainable=False, initializer="zeros",
        )
        if self.soft_anneal:
            self.soft_keep = self.add_weight(
                name="soft_keep", shape=(), trainable=False, initializer="ones",
            )
        self.built = True

    # ------------------------------------------------------------ forward pass

    def _forward_mask(self, state):
        mask = keras.ops.cast(state.mask, state.weight.dtype)
        if not self.soft_anneal:
            return mask
        # Only the soft phase pays for the fade: before it the target is all
        # ones, after it the mask already equals the target.
        def faded():
            target = keras.ops.cast(state.target_mask, state.weight.dtype)
            return mask * (target + (1.0 - target) * self.soft_keep)

        return tf.cond(self.pruning_phase == schedules_lib.SOFT, faded, lambda: mask)

    def _masked_value(self, state, training):
        weight = state.weight
        mask = self._forward_mask(state)
        if not training or state.importance is None:
            return weight * mask
        importance = state.importance
        phase = self.pruning_phase
        # "taylor" keeps only the latest minibatch's term.
        decay = self.importance_decay if self.importance == "taylor_accumulated" else 0.0

        @tf.custom_gradient
        def masked(value):
            def grad(upstream):
                # The Taylor term of the real training step: no extra pass.
                # All-reduced outside the cond: tf.distribute cannot
                # synchronize replicas inside control flow.
                total = _global_gradient(upstream)

                def accumulate():
                    taylor = tf.square(value * total)
                    return importance.assign(decay * importance + (1.0 - decay) * taylor)

                update = tf.cond(
                    phase < schedules_lib.HARD, accumulate, lambda: tf.identity(importance)
                )
                with tf.control_dependencies([update]):
                    return upstream * mask

            return value * mask, grad

        return masked(tf.convert_to_tensor(weight))

    def call(self, inputs, training=None, **kwargs):
        checks = []
        if training:
            checks.append(
                tf.debugging.assert_greater_equal(
                    self.pruning_step, tf.constant(0, tf.int64),
                    message=MISSING_CALLBACK_MESSAGE,
                )
            )
        with tf.control_dependencies(checks):
            mapping = [(s.weight, self._masked_value(s, training)) for s in self._states]
        layer_kwargs = dict(kwargs)
        if self._layer_takes_training:
            layer_kwargs["training"] = training
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            outputs = self.layer(inputs, **layer_kwargs)
        pruned = {id(s.weight) for s in self._states}
        for variable in self.layer.variables:
            if id(variable) in pruned:
                continue
            new_value = scope.get_current_value(variable)
            if new_value is not None:
                variable.assign(new_value)
        for loss in scope.losses:
            self.add_loss(loss)
        if training:
            # Only the soft phase pays for the penalty's forward and backward.
            penalty = tf.cond(
                self.penalty_weight > 0.0,
                lambda: self.penalty_weight * self._group_lasso(),
                lambda: tf.zeros((), self.penalty_weight.dtype),
            )
            self.add_loss(penalty)
        return outputs

    def _group_lasso(self):
        """Sum of group norms of what the target masks will remove."""
        total = 0.0
        for state in self._states:
            removed = state.weight * (1.0 - state.target_mask)
            if state.kind == eligibility.PATTERN:
                squares = keras.ops.sum(keras.ops.square(removed), axis=(0, 1))
            else:
                squares = keras.ops.square(removed)
            total = total + keras.ops.sum(keras.ops.sqrt(squares + GROUP_LASSO_EPSILON))
        return total

    def compute_output_shape(self, *args, **kwargs):
        return self.layer.compute_output_shape(*args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    # ------------------------------------------------- mask updates (Python)

    def update_pruning(self, step):
        """Advances the pruning state to ``step``; called by the callback.

        Selects patterns and kernels when the schedule says so (or when a
        resumed run reaches a pruned phase with no selection made yet),
        switches phases, and applies masks in the hard phase. Cheap on steps
        where the schedule changes nothing.
        """
        if not self.built:
            return
        self.pruning_step.assign(step)
        if self._known_phase is None:
            self._known_phase = int(self.pruning_phase.numpy())
            self._known_selections = int(self.selection_count.numpy())
        phase = self.schedule.phase(step)
        should_prune, _ = self.schedule(step)
        needs_selection = phase != schedules_lib.DENSE and (
            should_prune or self._known_selections == 0
        )
        if needs_selection:
            self._select(step)
        if phase != self._known_phase or (needs_selection and phase == schedules_lib.HARD):
            self.pruning_phase.assign(phase)
            self._known_phase = phase
            if phase == schedules_lib.HARD:
                self._apply_masks()
        penalty = self.schedule.penalty(step)
        if penalty != self._known_penalty:
            self.penalty_weight.assign(penalty)
            self._known_penalty = penalty
        if self.soft_anneal:
            keep = self._soft_keep_at(step, phase)
            if keep != self._known_soft_keep:
                self.soft_keep.assign(keep)
                self._known_soft_keep = keep

    def _soft_keep_at(self, step, phase):
        """1 before the soft phase, down to 0 at its end, in 1% steps."""
        schedule = self.schedule
        if phase != schedules_lib.SOFT or not isinstance(
            schedule, schedules_lib.ClickTrainSchedule
        ):
            return 1.0 if phase == schedules_lib.DENSE else 0.0
        length = max(1, schedule.hard_pruning_step - schedule.selection_step)
        progress = (step - schedule.selection_step + 1) / length
        return round(1.0 - min(1.0, progress), 2)

    def check_selection_inputs(self, step):
        """Raises `ValueError` if a selection at ``step`` would see NaN/Inf.

        The callback asks every wrapper before any of them selects, so a
        diverged layer stops training with no wrapper half-updated.
        """
        if not self.built or self.schedule.phase(step) == schedules_lib.DENSE:
            return
        should_prune, _ = self.schedule(step)
        if self._known_phase is None:
            selections = int(self.selection_count.numpy())
        else:
            selections = self._known_selections
        if should_prune or selections == 0:
            for state in self._states:
                finite = np.all(np.isfinite(state.weight.numpy())) and (
                    state.importance is None or np.all(np.isfinite(state.importance.numpy()))
                )
                if not finite:
                    self._importance_of(state)  # Raises, naming the layer and weight.

    def reset_known_state(self):
        """Forgets cached phase/penalty (after weights were restored)."""
        self._known_phase = None
        self._known_penalty = None
        self._known_soft_keep = None

    def _layer_sparsity(self, state, step):
        own = (
            self.connectivity_sparsity
            if state.kind == eligibility.PATTERN
            else self.unstructured_sparsity
        )
        if own is None:
            if state.kind == eligibility.PATTERN and isinstance(
                self.layer, keras.layers.DepthwiseConv2D
            ):
                return 0.0
            _, sparsity = self.schedule(step)
            return sparsity
        return own * self.schedule.ramp(step)

    def _importance_of(self, state):
        weight = state.weight.numpy()
        if not np.all(np.isfinite(weight)):
            raise ValueError(
                f"Layer '{self.layer.name}': weight '{state.weight.name}' contains "
                "NaN or Inf at pattern selection; training has diverged (lower "
                "the learning rate or check the data)."
            )
        if state.importance is not None:
            accumulated = np.asarray(state.importance.numpy(), np.float64)
            if not np.all(np.isfinite(accumulated)):
                raise ValueError(
                    f"Layer '{self.layer.name}': Taylor importance of "
                    f"'{state.weight.name}' contains NaN or Inf (non-finite "
                    "gradients) at pattern selection."
                )
            if accumulated.any():
                return accumulated
            logger.warning(
                "Layer '%s': no gradient has been accumulated yet, selecting "
                "patterns by magnitude.", self.layer.name,
            )
        return np.square(weight.astype(np.float64))

    def _select(self, step):
        for state in self._states:
            importance = self._importance_of(state)
            sparsity = self._layer_sparsity(state, step)
            if state.kind == eligibility.PATTERN:
                selection = patterns.select_patterns_and_kernels(
                    patterns.to_kernel_rows(importance),
                    num_patterns=self.num_patterns,
                    connectivity_sparsity=sparsity,
                    candidates=self.candidates,
                    pattern_library=self.pattern_library,
                )
                state.pattern_set.assign(selection.pattern_set)
                state.pattern_ids.assign(selection.pattern_ids)
                target = patterns.from_kernel_rows(selection.mask_rows, state.weight.shape)
            else:
                target = patterns.magnitude_mask(importance, sparsity)
            state.target_mask.assign(target.astype(np.float32))
        self.selection_count.assign_add(1)
        self._known_selections += 1

    def _apply_masks(self):
        for state in self._states:
            state.mask.assign(state.target_mask)
        self.reapply_masks()

    def reapply_masks(self):
        """Zeroes the masked entries of the weights (no-op before hard)."""
        for state in self._states:
            state.weight.assign(state.weight * state.mask)

    # ------------------------------------------------------------- inspection

    def pruned_weights(self):
        """Pairs ``(weight, kind)`` of the weights this wrapper prunes."""
        return [(s.weight, s.kind) for s in self._states]

    def masked_weight_values(self):
        """NumPy values of the pruned weights with their applied masks."""
        return [s.weight.numpy() * s.mask.numpy() for s in self._states]

    def pattern_state(self, index=0):
        """``(pattern_set, pattern_ids)`` of a pattern-pruned weight."""
        state = self._states[index]
        if state.kind != eligibility.PATTERN:
            raise ValueError(
                f"Weight {index} of '{self.layer.name}' is pruned unstructured "
                "and has no patterns."
            )
        return state.pattern_set.numpy(), state.pattern_ids.numpy()

    def restore_original_constraints(self):
        for state in self._states:
            state.weight.constraint = state.original_constraint

    # ---------------------------------------------------------- serialization

    def get_config(self):
        base_config = super().get_config()
        config = {
            "schedule": schedules_lib.serialize(self.schedule),
            "num_patterns": self.num_patterns,
            "entries_per_kernel": self.entries_per_kernel,
            "force_centre": self.force_centre,
            "connectivity_sparsity": self.connectivity_sparsity,
            "unstructured_sparsity": self.unstructured_sparsity,
            "importance": self.importance,
            "importance_decay": self.importance_decay,
            "soft_anneal": self.soft_anneal,
            "pattern_library": (
                None if self.pattern_library is None else self.pattern_library.tolist()
            ),
        }
        return {**base_config, **config}
