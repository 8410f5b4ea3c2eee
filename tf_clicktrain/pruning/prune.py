"""Public entry points: wrap a model for pruning, strip the wrappers."""

import contextlib
import logging
import numbers

import keras

from tf_clicktrain.pruning import layer_kinds
from tf_clicktrain.pruning import schedules as schedules_lib
from tf_clicktrain.pruning.config import PruningConfig
from tf_clicktrain.pruning.config import resolve_schedule
from tf_clicktrain.pruning.layer_walk import walk_layers
from tf_clicktrain.pruning.policy import validate_policy
from tf_clicktrain.pruning.wrapper import PatternPruningWrapper

logger = logging.getLogger(__name__)


def _copy_layer(layer):
    """A fresh layer with the same config and, if built, the same weights.

    Operations of a Functional model that are not layers (``x + 3.0``,
    ``keras.ops`` calls) hold no state and are returned as they are.
    """
    if not isinstance(layer, keras.layers.Layer):
        return layer
    copy = layer.__class__.from_config(layer.get_config())
    if layer.built:
        build_config = layer.get_build_config()
        if build_config is not None:
            copy.build_from_config(build_config)
        copy.set_weights(layer.get_weights())
    return copy


def _resolve_connectivity(connectivity_sparsity, pattern_layers):
    """Per-layer connectivity sparsity for the pattern-pruned layers."""
    count = len(pattern_layers)
    if connectivity_sparsity is None or isinstance(connectivity_sparsity, numbers.Number):
        return {layer.name: connectivity_sparsity for layer in pattern_layers}
    if isinstance(connectivity_sparsity, dict):
        unknown = set(connectivity_sparsity) - {layer.name for layer in pattern_layers}
        if unknown:
            raise ValueError(
                "connectivity_sparsity names layers that are not pattern-pruned: "
                f"{sorted(unknown)}. Pattern-pruned layers: "
                f"{[layer.name for layer in pattern_layers]}"
            )
        return {layer.name: connectivity_sparsity.get(layer.name) for layer in pattern_layers}
    if callable(connectivity_sparsity):
        return {
            layer.name: float(connectivity_sparsity(index, count))
            for index, layer in enumerate(pattern_layers)
        }
    if isinstance(connectivity_sparsity, (list, tuple)):
        if len(connectivity_sparsity) != count:
            raise ValueError(
                "connectivity_sparsity as a list needs one value per "
                f"pattern-pruned layer ({count}: "
                f"{[layer.name for layer in pattern_layers]}). "
                f"Received: {len(connectivity_sparsity)} values"
            )
        return {layer.name: value for layer, value in zip(pattern_layers, connectivity_sparsity)}
    raise ValueError(
        "connectivity_sparsity must be None, a number, a list, a dict of layer "
        "names or a callable(index, count). "
        f"Received: connectivity_sparsity={connectivity_sparsity!r}"
    )


def prune_pattern(
    to_prune,
    schedule=None,
    num_patterns=4,
    entries_per_kernel=4,
    force_centre=False,
    connectivity_sparsity=None,
    unstructured="pointwise",
    unstructured_sparsity=None,
    importance="magnitude",
    importance_decay=0.99,
    pattern_library=None,
    soft_anneal=True,
    skip_first_conv=True,
    skip_layers=(),
    pruning_schedule=None,
    sparsity_m_by_n=None,
    block_size=(1, 1),
    block_pooling_type="AVG",
    filter_group=None,
    pruning_policy=None,
    **kwargs,
):
    """Wraps the eligible layers of a layer, list of layers or model.

    The analogue of tensorflow-model-optimization's ``prune_low_magnitude``
    for ClickTrain pattern pruning, on Keras 3. Eligible layers:

    - `Conv2D` 3x3 (any strides, dilation and padding): each kept kernel
      keeps ``entries_per_kernel`` weights in one of the layer's
      ``num_patterns`` patterns; whole kernels are removed (connectivity).
      A grouped conv is pruned group by group: each group loses its share
      of kernels and has its own ``num_patterns`` patterns;
    - `DepthwiseConv2D` 3x3: patterns per channel kernel (no kernel removal
      unless ``connectivity_sparsity`` names the layer);
    - `SeparableConv2D` 3x3: patterns on its depthwise kernel (no kernel
      removal by default), unstructured sparsity on its pointwise kernel;
    - `Conv2D` 1x1, `Dense`, `Embedding`, `Conv1D`, `Conv3D`, transposed
      convolutions and other kernel sizes, `LSTM` / `GRU` / `SimpleRNN`
      (each cell's kernel and recurrent kernel, also in ``RNN(cell)``,
      stacked cells and `Bidirectional`) and `MultiHeadAttention` (its
      query, key, value and output kernels): unstructured magnitude pruning
      (as tfmot's), as ``unstructured`` says, in blocks with
      ``block_size``, or in tfmot's 2:4 style with ``sparsity_m_by_n``;
    - any layer implementing `tf_clicktrain.PrunableLayer`.

    A layer with weights that is left dense for another reason than the
    ``unstructured`` policy (ConvLSTM, 1-D separable and depthwise
    convolutions, RNNs of custom cells, or a ``pruning_policy``) is logged,
    naming it and why.

    Models (Sequential or Functional, nested models included) are cloned:
    the input model is left untouched and the copy keeps its weights, so
    pretrained weights can be loaded before wrapping (or after, into the
    returned model). In a model, other layers are left alone, and layers
    already wrapped are kept as they are (copied with their pruning state,
    as tfmot keeps them); a layer or list of layers passed directly must all
    be prunable.

    Args:
        to_prune: a layer, a list of layers, or a Sequential/Functional model.
        schedule: a `tf_clicktrain.schedules.PruningSchedule`; default
            ``ConstantSparsity(0.5, begin_step=0)``.
        num_patterns: K, patterns per layer (default 4).
        entries_per_kernel: weights kept per 3x3 kernel, 1..9 (default 4).
        force_centre: generate only patterns that keep the centre.
        connectivity_sparsity: fraction of 3x3 kernels removed per layer:
            None (follow the schedule's sparsity), a number, a list with one
            value per pattern-pruned layer in model order, a dict from layer
            name to value, or a callable ``(index, count) -> value`` such as
            `tf_clicktrain.patterns.depth_increasing`.
        unstructured: which layers of a model without 3x3 patterns get
            unstructured magnitude pruning: "none", "pointwise" (1x1 convs,
            the default, as in the paper) or "all" (also Dense, Embedding,
            Conv1D/Conv3D, transposed convs and other kernel sizes).
        unstructured_sparsity: their final sparsity, or None for the
            schedule's.
        importance: "magnitude", "taylor" or "taylor_accumulated".
        importance_decay: decay of the accumulated Taylor estimate.
        pattern_library: optional fixed ``(K, 9)`` 0/1 pattern set.
        soft_anneal: in a `ClickTrainSchedule`'s soft phase, also fade what
            the masks will remove out of the forward pass (1 -> 0).
        skip_first_conv: leave a model's first convolution dense (as the
            paper does).
        skip_layers: names of layers to leave dense.
        pruning_schedule: tensorflow-model-optimization's name for
            ``schedule`` (give one of the two).
        sparsity_m_by_n: ``(m, n)``, e.g. ``(2, 4)``: unstructured layers
            zero ``m`` of every ``n`` consecutive input-channel weights (as
            tfmot).
        block_size: ``(height, width)``: unstructured 2-D weights and 1x1
            kernels lose whole blocks, as tfmot's ``block_size``.
        block_pooling_type: "AVG" or "MAX", how a block is scored.
        filter_group: G: each 3x3 `Conv2D` kernel's output channels are
            cut into runs of G consecutive filters (within each conv group
            of a grouped conv; a last, smaller run when G does not divide
            the channel count), and for every input channel the G kernels
            of a run are kept or removed together and share one pattern.
            Selection ranks a run's kernels by their summed importance, so
            the fraction removed is that of runs. The exported ``.tflite``
            op loads each input vector once for the run's filters:
            1.3-1.6x faster per layer than G=1 at 8x compression. The
            default, None, uses G=4 for convs with at least 64 filters per
            conv group and G=1 (every filter on its own) for narrower ones,
            which are cheap and lost accuracy when grouped; on Fashion-MNIST
            at 8x, G=4 measured the same accuracy as G=1 and G=8 0.4 points
            less (`benchmarks/README.md`). Depthwise kernels
            (`DepthwiseConv2D`, `SeparableConv2D`) are not affected.
        pruning_policy: a `tf_clicktrain.PruningPolicy` (for a model), e.g.
            `tf_clicktrain.PruneForLatency`: it checks the model first and
            leaves dense, with a log line, every layer it does not allow.
        **kwargs: passed to every `PatternPruningWrapper` (base layer
            arguments such as ``dtype``), as ``prune_low_magnitude`` does.

    Returns:
        The same kind of object with eligible layers wrapped in
        `PatternPruningWrapper`.

    Raises:
        ValueError: on invalid arguments or an ineligible layer passed
            directly, before any state is created.

    Example:
    ```python
    import keras
    import tf_clicktrain as ct

    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    pruned = ct.prune_pattern(
        model, schedule=ct.ClickTrainSchedule(selection_step=100,
                                              hard_pruning_step=200))
    ```
    """
    layer_kinds.validate_unstructured_policy(unstructured)
    if isinstance(skip_layers, str):
        raise ValueError(
            "skip_layers must be a list of layer names. "
            f"Received: skip_layers={skip_layers!r}"
        )
    skip_layers = set(skip_layers)
    wrapper_kwargs = dict(
        schedule=resolve_schedule(schedule, pruning_schedule),
        num_patterns=num_patterns,
        entries_per_kernel=entries_per_kernel,
        force_centre=force_centre,
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
    # Validates every argument once, before anything is cloned or built.
    config = PruningConfig(**wrapper_kwargs)
    validate_policy(pruning_policy)
    wrapper_kwargs.update(kwargs)

    if isinstance(to_prune, PatternPruningWrapper):
        raise ValueError(f"Layer '{to_prune.name}' is already wrapped for pruning.")
    single_layer = isinstance(to_prune, keras.layers.Layer) and not isinstance(
        to_prune, keras.Model
    )
    if "name" in kwargs and not single_layer:
        raise ValueError(
            "name= applies to a single layer; the wrappers of a model or list "
            f"are named prune_pattern_<layer>. Received: name={kwargs['name']!r}"
        )
    if isinstance(to_prune, keras.Model):
        return _prune_model(
            to_prune, wrapper_kwargs, connectivity_sparsity, unstructured,
            skip_first_conv, skip_layers, pruning_policy, config,
        )
    if pruning_policy is not None:
        raise ValueError(
            "pruning_policy= applies to a model: it checks the whole model and "
            "chooses among its layers. Received a layer or list with "
            f"pruning_policy={pruning_policy!r}"
        )
    if isinstance(to_prune, (list, tuple)):
        for layer in to_prune:
            if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
                raise ValueError(
                    "prune_pattern takes a layer, a list of layers or a model. "
                    f"Received a list containing: {layer!r}"
                )
        kinds = [layer_kinds.pruning_kind(layer, unstructured, explicit=True) for layer in to_prune]
        pattern_layers = [l for l, k in zip(to_prune, kinds) if k == layer_kinds.PATTERN]
        per_layer = _resolve_connectivity(connectivity_sparsity, pattern_layers)
        return [
            PatternPruningWrapper(
                layer, connectivity_sparsity=per_layer.get(layer.name), **wrapper_kwargs
            )
            for layer in to_prune
        ]
    if isinstance(to_prune, keras.layers.Layer):
        kind = layer_kinds.pruning_kind(to_prune, unstructured, explicit=True)
        per_layer = _resolve_connectivity(
            connectivity_sparsity, [to_prune] if kind == layer_kinds.PATTERN else []
        )
        return PatternPruningWrapper(
            to_prune, connectivity_sparsity=per_layer.get(to_prune.name), **wrapper_kwargs
        )
    raise ValueError(
        "prune_pattern takes a Keras layer, a list of layers, or a Sequential "
        f"or Functional model. Received: to_prune={to_prune!r}"
    )


def _prune_model(model, wrapper_kwargs, connectivity_sparsity, unstructured,
                 skip_first_conv, skip_layers, pruning_policy, config):
    if not (isinstance(model, keras.Sequential) or _is_functional(model)):
        raise ValueError(
            "prune_pattern clones Sequential and Functional models only; for "
            f"a subclassed model ('{type(model).__name__}'), wrap its layers in "
            "__init__ with tf_clicktrain.prune_pattern(layer)."
        )
    if pruning_policy is not None:
        pruning_policy.ensure_model_supports_pruning(model)
    layers = list(walk_layers(model))
    if not layers:
        raise ValueError(
            f"prune_pattern: model '{model.name}' has no layers (an empty "
            "model cannot be pruned or cloned)."
        )
    unknown = skip_layers - {layer.name for layer in layers}
    if unknown:
        raise ValueError(
            f"skip_layers names layers that are not in the model: {sorted(unknown)}"
        )
    first_conv = next(
        (layer for layer in layers if layer_kinds.is_conv(_unwrapped(layer))), None
    )
    chosen = {}
    for layer in layers:
        if layer.name in skip_layers or (skip_first_conv and layer is first_conv):
            continue
        kind = layer_kinds.pruning_kind(layer, unstructured)
        if kind is not None and pruning_policy is not None:
            reason = pruning_policy.reason_to_skip(layer, config)
            if reason is not None:
                logger.warning(
                    "prune_pattern: layer '%s' (%s) is left dense by %s: %s.",
                    layer.name, type(layer).__name__, type(pruning_policy).__name__, reason,
                )
                kind = None
        if kind is not None:
            chosen[id(layer)] = kind
    pattern_layers = [
        layer for layer in layers if chosen.get(id(layer)) == layer_kinds.PATTERN
    ]
    per_layer = _resolve_connectivity(connectivity_sparsity, pattern_layers)
    if not chosen:
        logger.warning(
            "prune_pattern: model '%s' has no layer eligible for pruning "
            "(3x3 Conv2D/DepthwiseConv2D, 1x1 Conv2D, Dense or PrunableLayer); "
            "it is returned unchanged (cloned).", model.name,
        )

    def clone(layer):
        copy = _copy_layer(layer)
        if id(layer) in chosen:
            return PatternPruningWrapper(
                copy, connectivity_sparsity=per_layer.get(layer.name), **wrapper_kwargs
            )
        return copy

    pruned = keras.models.clone_model(model, clone_function=clone, recursive=True)
    return pruned


def _unwrapped(layer):
    return layer.layer if isinstance(layer, PatternPruningWrapper) else layer


def _is_functional(model):
    # Functional models are the ones with a graph of inputs and outputs.
    return isinstance(model, keras.Model) and type(model).__name__ == "Functional"


def strip_pruning(model):
    """Replaces every pruning wrapper by its layer, with the masks applied.

    Args:
        model: a model (Sequential, Functional or subclassed), a single
            wrapper, or a list of layers.

    Returns:
        For Sequential/Functional models a new model of plain Keras layers
        whose pruned weights are pattern-sparse (the input is left intact).
        A subclassed model is stripped in place and returned: each attribute
        holding a wrapper then holds the plain layer.

    Example:
    ```python
    final = ct.strip_pruning(pruned_model)
    final.save("pruned.keras")
    ```
    """
    if isinstance(model, PatternPruningWrapper):
        return _strip_layer(model)
    if isinstance(model, (list, tuple)):
        return [strip_pruning(layer) for layer in model]
    if not isinstance(model, keras.Model):
        raise ValueError(
            "strip_pruning takes a model, a pruning wrapper or a list of "
            f"layers. Received: {model!r}"
        )
    if isinstance(model, keras.Sequential) or _is_functional(model):

        def clone(layer):
            if isinstance(layer, PatternPruningWrapper):
                return _strip_layer(layer)
            return _copy_layer(layer)

        return keras.models.clone_model(model, clone_function=clone, recursive=True)
    _strip_subclassed_in_place(model)
    return model


def _strip_layer(wrapper):
    wrapper.check_state()
    if wrapper.built and int(wrapper.pruning_phase.numpy()) != schedules_lib.HARD:
        logger.warning(
            "strip_pruning: layer '%s' has not reached the hard pruning phase "
            "(phase: %s); its weights are returned unmasked.",
            wrapper.layer.name,
            schedules_lib.PHASE_NAMES[int(wrapper.pruning_phase.numpy())],
        )
    layer = _copy_layer(wrapper.layer)
    if wrapper.built:
        masked = {
            id(weight): value
            for (weight, _), value in zip(
                wrapper.pruned_weights(), wrapper.masked_weight_values()
            )
        }
        values = [
            masked.get(id(variable), variable.numpy()) for variable in wrapper.layer.weights
        ]
        layer.set_weights(values)
    return layer


def _strip_subclassed_in_place(model):
    for name, value in list(vars(model).items()):
        if name.startswith("_"):
            continue
        if isinstance(value, PatternPruningWrapper):
            _replace_sublayer(model, name, value, _strip_layer(value))
        elif isinstance(value, keras.Model):
            _strip_subclassed_in_place(value)


def _replace_sublayer(parent, name, old, new):
    # Keras locks a built layer's tracker and has no public way to swap a
    # sub-layer; its own quantization code edits the tracker the same way.
    parent._tracker.replace_tracked_value("layers", old, new)
    object.__setattr__(parent, name, new)


@contextlib.contextmanager
def prune_scope():
    """Custom-object scope for loading models saved with pruning wrappers.

    The library registers its classes with
    ``keras.saving.register_keras_serializable``, so ``keras.saving.load_model``
    finds them once ``tf_clicktrain`` is imported; this scope is for code
    written against tensorflow-model-optimization's ``prune_scope``.

    Example:
    ```python
    with ct.prune_scope():
        model = keras.saving.load_model("pruned_in_progress.keras")
    ```
    """
    objects = {
        "PatternPruningWrapper": PatternPruningWrapper,
        "ConstantSparsity": schedules_lib.ConstantSparsity,
        "PolynomialDecay": schedules_lib.PolynomialDecay,
        "ClickTrainSchedule": schedules_lib.ClickTrainSchedule,
    }
    with keras.saving.custom_object_scope(objects):
        yield


def pruning_wrappers(model):
    """All `PatternPruningWrapper` layers of a model, nested ones included.

    Walks Sequential/Functional layers and the attributes of subclassed
    models and custom layers, so hand-wrapped layers are found too.
    """
    return [
        layer for layer in walk_layers(model, into_sublayers=True)
        if isinstance(layer, PatternPruningWrapper)
    ]
