"""The Keras layer wrapper that owns a layer's pruning state."""

import copy
import inspect

import keras
import numpy as np
import tensorflow as tf

from tf_clicktrain import patterns
from tf_clicktrain.pruning import layer_kinds
from tf_clicktrain.pruning import schedules as schedules_lib
from tf_clicktrain.pruning import state_checks
from tf_clicktrain.pruning.config import PruningConfig
from tf_clicktrain.pruning.config import resolve_schedule
from tf_clicktrain.pruning.controller import PruningController

# Keeps the gradient of sqrt finite for groups that are already zero.
GROUP_LASSO_EPSILON = 1e-8
# filter_group=None (the default) groups the filters of a 3x3 `Conv2D` in
# runs of DEFAULT_FILTER_GROUP when it has at least MIN_GROUPED_FILTERS
# filters per conv group. Narrower convs are cheap, and grouping their few
# filters cost accuracy (MNIST, widths 8-32 at 8x: -0.6 points with the
# 32-filter convs grouped, and one run in five collapsed with all grouped).
DEFAULT_FILTER_GROUP = 4
MIN_GROUPED_FILTERS = 64

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


class PrunedWeight:
    """The pruning variables of one pruned weight (owned by the wrapper).

    Attributes:
        weight: the layer's variable being pruned.
        kind: `layer_kinds.PATTERN` or `layer_kinds.UNSTRUCTURED`.
        mask: the applied 0/1 mask (all ones before the hard phase).
        target_mask: the selection's 0/1 mask.
        groups: G, the convolution's groups (1 but for grouped convs);
            each group has its own K patterns.
        filter_group: filters that share keep/remove decisions and patterns
            per input channel (1 but for `Conv2D` kernels pruned with
            ``filter_group``).
        pattern_set: ``(G * K, 9)`` 0/1 patterns (pattern kind only); rows
            ``[g * K, (g + 1) * K)`` are group ``g``'s.
        pattern_ids: per-kernel index into ``pattern_set``, -1 for removed
            kernels (pattern kind only).
        importance: the Taylor importance accumulator, or None for
            magnitude importance.
    """

    def __init__(self, weight, kind, groups=1, filter_group=1):
        self.weight = weight
        self.kind = kind
        self.groups = groups
        self.filter_group = filter_group
        self.mask = None
        self.target_mask = None
        self.pattern_set = None
        self.pattern_ids = None
        self.importance = None

    def variables(self):
        """``(name, variable)`` of the pruning variables that exist."""
        names = ("mask", "target_mask", "pattern_set", "pattern_ids", "importance")
        return [(n, getattr(self, n)) for n in names if getattr(self, n) is not None]


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


@keras.saving.register_keras_serializable(package="tf_clicktrain")
class PatternPruningWrapper(keras.layers.Wrapper):
    """Prunes a layer's weights to patterns (3x3) or by magnitude (others).

    The wrapper owns all pruning state as Keras variables, tracked by every
    saver (`.keras`, `.weights.h5`, `tf.train.Checkpoint`, SavedModel) and
    checked against its invariants on load: per pruned weight the applied mask, the
    selection's target mask, the layer's pattern set and per-kernel pattern
    ids, and the importance accumulator; plus the step, the phase and the
    group-lasso weight. The wrapped layer computes with ``weight * mask`` in
    every forward pass, and the mask is re-applied after every optimizer
    step, so masked weights are exactly zero from the hard phase on.

    Use `tf_clicktrain.prune_pattern` rather than this class directly; drive
    it with the `tf_clicktrain.UpdatePruningStep` callback. The decisions
    (selection, phases, masks) are made by its `PruningController`.

    Args:
        layer: the layer to prune; a layer that cannot be pruned raises
            `ValueError` here, naming it.
        schedule: a `tf_clicktrain.schedules.PruningSchedule`; default
            ``ConstantSparsity(0.5, begin_step=0)``.
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
        pruning_schedule: tensorflow-model-optimization's name for
            ``schedule`` (give one of the two).
        sparsity_m_by_n: ``(m, n)`` such as ``(2, 4)``: unstructured weights
            lose the ``m`` smallest of every ``n`` consecutive input-channel
            entries (tfmot's meaning: ``m`` zeros of ``n``) instead of
            following the schedule's sparsity (kept through save and load). The input-channel count must be a
            multiple of ``n``.
        block_size: ``(height, width)``: unstructured weights are pruned in
            whole blocks of this size, as tfmot's ``block_size`` (default
            ``(1, 1)``, single weights). Applies to 2-D weights (Dense,
            Embedding, recurrent kernels) and 1x1 convolution kernels (as
            their ``(in, out)`` matrix); other unstructured weights raise
            `ValueError` at build.
        block_pooling_type: how a block is scored from its weights'
            magnitudes: "AVG" (default) or "MAX".
        filter_group: G: a 3x3 `Conv2D` kernel's runs of G consecutive
            filters (within a conv group) keep or remove each input channel
            together, with one pattern (1: every filter on its own; None,
            the default: 4 for convs with at least 64 filters per conv
            group, else 1). See `tf_clicktrain.prune_pattern`.
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
        pruning_schedule=None,
        sparsity_m_by_n=None,
        block_size=(1, 1),
        block_pooling_type="AVG",
        filter_group=None,
        **kwargs,
    ):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                "PatternPruningWrapper wraps a Keras layer. "
                f"Received: layer={layer!r}"
            )
        if isinstance(layer, PatternPruningWrapper):
            raise ValueError(f"Layer '{layer.name}' is already wrapped for pruning.")
        layer_kinds.pruning_kind(layer, explicit=True)  # Raises, naming the layer.
        self.config = PruningConfig(
            schedule=resolve_schedule(schedule, pruning_schedule),
            num_patterns=num_patterns,
            entries_per_kernel=entries_per_kernel,
            force_centre=force_centre,
            connectivity_sparsity=connectivity_sparsity,
            unstructured_sparsity=unstructured_sparsity,
            importance=importance,
            importance_decay=importance_decay,
            pattern_library=pattern_library,
            soft_anneal=soft_anneal,
            sparsity_m_by_n=sparsity_m_by_n,
            block_size=block_size,
            block_pooling_type=block_pooling_type,
            filter_group=filter_group,
        )
        kwargs.setdefault("name", f"prune_pattern_{layer.name}")
        super().__init__(layer, **kwargs)
        self.pruned = []
        self.soft_keep = None
        self.controller = None
        self._layer_takes_training = (
            "training" in inspect.signature(layer.call).parameters
        )

    # Read-only views of the config, under tfmot's and the constructor's names.
    schedule = property(lambda self: self.config.schedule)
    pruning_schedule = schedule
    num_patterns = property(lambda self: self.config.num_patterns)
    entries_per_kernel = property(lambda self: self.config.entries_per_kernel)
    force_centre = property(lambda self: self.config.force_centre)
    connectivity_sparsity = property(lambda self: self.config.connectivity_sparsity)
    unstructured_sparsity = property(lambda self: self.config.unstructured_sparsity)
    importance = property(lambda self: self.config.importance)
    importance_decay = property(lambda self: self.config.importance_decay)
    pattern_library = property(lambda self: self.config.pattern_library)
    soft_anneal = property(lambda self: self.config.soft_anneal)
    sparsity_m_by_n = property(lambda self: self.config.sparsity_m_by_n)
    block_size = property(lambda self: self.config.block_size)
    block_pooling_type = property(lambda self: self.config.block_pooling_type)
    filter_group = property(lambda self: self.config.filter_group)

    # ------------------------------------------------------------------ build

    def build(self, input_shape=None):
        super().build(input_shape)
        self.pruned = []
        # The creation order below is the order of the variables in .keras and
        # .weights.h5 files: keep it, or files saved before will not load.
        for index, weight in enumerate(layer_kinds.prunable_weights(self.layer)):
            pruned = PrunedWeight(
                weight, layer_kinds.weight_kind(self.layer, weight), self._groups_of(weight),
                self._filter_group_of(weight),
            )
            base = f"{index}_{weight.name}"
            pruned.mask = self.add_weight(
                name=f"{base}_mask", shape=weight.shape, initializer="ones",
                trainable=False,
            )
            pruned.target_mask = self.add_weight(
                name=f"{base}_target_mask", shape=weight.shape, initializer="ones",
                trainable=False,
            )
            if pruned.kind == layer_kinds.PATTERN:
                num_kernels = int(np.prod(weight.shape[2:]))
                pruned.pattern_set = self.add_weight(
                    name=f"{base}_pattern_set",
                    shape=(pruned.groups * self.num_patterns, 9),
                    initializer="zeros", trainable=False,
                )
                pruned.pattern_ids = self.add_weight(
                    name=f"{base}_pattern_ids", shape=(num_kernels,),
                    initializer=keras.initializers.Constant(patterns.selection.REMOVED),
                    dtype="int32", trainable=False,
                )
            if self.importance != "magnitude":
                # Written locally by every replica from the all-reduced
                # gradient (see _global_gradient), so all copies are equal;
                # reads average them (a no-op without a strategy).
                pruned.importance = keras.Variable(
                    np.zeros(weight.shape, np.float32), trainable=False,
                    name=f"{base}_importance", aggregation="mean",
                    synchronization="on_read",
                )
            # Attributes make every saver see the variables: TensorFlow's
            # tracking (tf.train.Checkpoint, SavedModel) follows attributes,
            # not the Python list `pruned`.
            for name, variable in pruned.variables():
                setattr(self, f"{name}_{index}", variable)
            if pruned.kind == layer_kinds.UNSTRUCTURED:
                self._check_unstructured_shape(weight)
            weight.constraint = MaskConstraint(pruned.mask, weight.constraint)
            self.pruned.append(pruned)
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
        self.controller = PruningController(self)
        self.built = True

    def _groups_of(self, weight):
        """The groups of a grouped convolution's kernel, else 1."""
        if weight is getattr(self.layer, "kernel", None):
            return int(getattr(self.layer, "groups", 1))
        return 1

    def _filter_group_of(self, weight):
        """``filter_group`` for a `Conv2D` kernel, else 1.

        Depthwise kernels have one kernel per channel (and multiplier): no
        run of filters shares an input there.
        """
        if not (isinstance(self.layer, keras.layers.Conv2D) and weight is self.layer.kernel):
            return 1
        if self.filter_group is not None:
            return self.filter_group
        filters_per_group = self.layer.filters // max(1, self.layer.groups)
        return DEFAULT_FILTER_GROUP if filters_per_group >= MIN_GROUPED_FILTERS else 1

    def _check_unstructured_shape(self, weight):
        """Raises `ValueError` if M-by-N or block sparsity cannot cut ``weight``."""
        shape = tuple(weight.shape)
        if self.sparsity_m_by_n:
            m, n = self.sparsity_m_by_n
            if len(shape) < 2 or shape[-2] % n:
                raise ValueError(
                    f"Layer '{self.layer.name}': sparsity_m_by_n=({m}, {n}) "
                    f"needs an input-channel count that is a multiple of {n}; "
                    f"weight '{weight.name}' has shape {shape}."
                )
        if self.config.uses_blocks and patterns.blocks.matrix_shape(shape) is None:
            raise ValueError(
                f"Layer '{self.layer.name}': block_size={self.block_size} applies "
                "to 2-dimensional weights and 1x1 convolution kernels; weight "
                f"'{weight.name}' has shape {shape}. Use block_size=(1, 1) for "
                "this layer."
            )

    # ------------------------------------------------------------ forward pass

    def _forward_mask(self, pruned):
        mask = keras.ops.cast(pruned.mask, pruned.weight.dtype)
        if not self.soft_anneal:
            return mask
        # Only the soft phase pays for the fade: before it the target is all
        # ones, after it the mask already equals the target.
        def faded():
            target = keras.ops.cast(pruned.target_mask, pruned.weight.dtype)
            return mask * (target + (1.0 - target) * self.soft_keep)

        return tf.cond(self.pruning_phase == schedules_lib.SOFT, faded, lambda: mask)

    def _masked_value(self, pruned, training):
        weight = pruned.weight
        mask = self._forward_mask(pruned)
        if not training or pruned.importance is None:
            return weight * mask
        importance = pruned.importance
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

    def call(self, inputs, *args, training=None, **kwargs):
        # *args: layers called with several tensors, e.g. attention(query, value).
        checks = []
        if training:
            checks.append(
                tf.debugging.assert_greater_equal(
                    self.pruning_step, tf.constant(1, tf.int64),
                    message=MISSING_CALLBACK_MESSAGE,
                )
            )
        with tf.control_dependencies(checks):
            mapping = [(s.weight, self._masked_value(s, training)) for s in self.pruned]
        layer_kwargs = dict(kwargs)
        if self._layer_takes_training:
            layer_kwargs["training"] = training
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            outputs = self.layer(inputs, *args, **layer_kwargs)
        pruned_ids = {id(s.weight) for s in self.pruned}
        for variable in self.layer.variables:
            if id(variable) in pruned_ids:
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
        for pruned in self.pruned:
            removed = pruned.weight * (1.0 - pruned.target_mask)
            if pruned.kind == layer_kinds.PATTERN:
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

        See `PruningController.update`. A no-op before the layer is built.
        """
        if self.built:
            self.controller.update(step)

    def check_selection_inputs(self, step):
        """Raises `ValueError` if a selection at ``step`` would see NaN/Inf."""
        if self.built:
            self.controller.check_selection_inputs(step)

    def check_state(self):
        """Raises `ValueError` if a pruning variable breaks its invariants.

        Run on every load (`.keras`, `.weights.h5`) and by the step callback
        and `strip_pruning`, which also catch a `tf.train.Checkpoint`
        restore. The message names the layer and the variable.
        """
        if self.built:
            state_checks.check_wrapper_state(self)

    def reset_known_state(self):
        """Re-reads the pruning variables (after they were restored)."""
        if self.built:
            self.check_state()
            self.controller.forget()

    def reapply_masks(self):
        """Zeroes the masked entries of the weights (no-op before hard)."""
        for pruned in self.pruned:
            pruned.weight.assign(pruned.weight * pruned.mask)

    # ------------------------------------------------------------- inspection

    def pruned_weights(self):
        """Pairs ``(weight, kind)`` of the weights this wrapper prunes."""
        return [(s.weight, s.kind) for s in self.pruned]

    def masked_weight_values(self):
        """NumPy values of the pruned weights with their applied masks."""
        return [s.weight.numpy() * s.mask.numpy() for s in self.pruned]

    def pattern_state(self, index=0):
        """``(pattern_set, pattern_ids)`` of a pattern-pruned weight."""
        pruned = self.pruned[index]
        if pruned.kind != layer_kinds.PATTERN:
            raise ValueError(
                f"Weight {index} of '{self.layer.name}' is pruned unstructured "
                "and has no patterns."
            )
        return pruned.pattern_set.numpy(), pruned.pattern_ids.numpy()

    # ---------------------------------------------------------- serialization

    def get_config(self):
        base_config = super().get_config()
        return {**base_config, **self.config.to_config()}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = copy.deepcopy(config)
        # Saved before filter groups existed: every filter on its own.
        config.setdefault("filter_group", 1)
        name = config.get("name", "?")
        if "schedule" in config and config["schedule"] is None:
            raise ValueError(
                f"Layer '{name}': its config has schedule=None; a saved "
                "pruning wrapper always records its schedule."
            )
        layer = keras.saving.deserialize_keras_object(
            config.pop("layer"), custom_objects=custom_objects
        )
        try:
            return cls(layer, **config)
        except ValueError as error:
            raise ValueError(f"Layer '{name}': {error}") from error

    def load_own_variables(self, store):
        super().load_own_variables(store)
        self.reset_known_state()
