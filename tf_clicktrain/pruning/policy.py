"""Pruning policies: which layers of a model `prune_pattern` may wrap.

tensorflow-model-optimization's ``pruning_policy=`` argument, with its two
methods (`PruningPolicy.allow_pruning`, `PruningPolicy.ensure_model_supports_pruning`),
plus `PruningPolicy.reason_to_skip`, which also sees the pruning
configuration (a 1x1 convolution is worth pruning for speed only at a
sparsity the sparse op accepts) and says why a layer stays dense.
"""

import abc

import keras

from tf_clicktrain.pruning.layer_walk import walk_layers
from tf_clicktrain.pruning.wrapper import PatternPruningWrapper


class PruningPolicy(abc.ABC):
    """Decides which layers of a model are pruned; checks the model first.

    `prune_pattern(model, pruning_policy=policy)` first calls
    ``policy.ensure_model_supports_pruning(model)``, then wraps a layer only
    if the library can prune it (the layer kinds and ``unstructured``) and
    ``policy.reason_to_skip(layer, config)`` is None. Subclass it for your
    own rule.

    Example:
    ```python
    class OnlyConvs(ct.PruningPolicy):
        def allow_pruning(self, layer):
            return isinstance(layer, keras.layers.Conv2D)

        def ensure_model_supports_pruning(self, model):
            if not any(isinstance(l, keras.layers.Conv2D) for l in model.layers):
                raise ValueError(f"Model '{model.name}' has no Conv2D to prune.")

    pruned = ct.prune_pattern(model, pruning_policy=OnlyConvs())
    ```
    """

    @abc.abstractmethod
    def allow_pruning(self, layer):
        """True if ``layer`` may be wrapped for pruning."""

    @abc.abstractmethod
    def ensure_model_supports_pruning(self, model):
        """Raises `ValueError`, saying why, if ``model`` does not suit the policy."""

    def reason_to_skip(self, layer, config):
        """Why ``layer`` stays dense under this policy, or None to prune it.

        Args:
            layer: a layer of the model that the library can prune.
            config: the `PruningConfig` it would be pruned with.

        Returns:
            None, or a short reason that `prune_pattern` logs with the
            layer's name. The default asks `allow_pruning`.
        """
        if self.allow_pruning(layer):
            return None
        return f"{type(self).__name__}.allow_pruning returned False"


class PruneForLatency(PruningPolicy):
    """Prunes only the layers that `tf_clicktrain.tflite.convert` makes faster.

    The .tflite export runs a pruned layer as a custom op only where the op
    beats XNNPACK's builtin; everywhere else pruning costs accuracy for
    nothing at inference. This policy prunes:

    - 3x3 `Conv2D` with ``groups=1`` and ``data_format="channels_last"``:
      patterns and connectivity pruning (`ClickTrainPatternConv2D`);
    - 1x1 `Conv2D` likewise, but only when their unstructured sparsity
      reaches the sparse 1x1 op's minimum (70% zeros: below it the dense
      builtin is as fast, and the export keeps it).

    Depthwise and separable convolutions, grouped and transposed
    convolutions, Dense, Embedding, recurrent and attention layers stay
    dense: the export keeps them builtin. (The speed decision of `convert`
    still times every candidate; this policy does not prune what it can
    never replace.)

    Raises:
        ValueError: from `ensure_model_supports_pruning`, when the model is
            not built or has no layer the export could make faster.

    Example:
    ```python
    pruned = ct.prune_pattern(
        model, pruning_schedule=ct.ConstantSparsity(0.8, 0),
        pruning_policy=ct.PruneForLatency())
    ```
    """

    def _structure_reason(self, layer):
        # Transposed, depthwise and separable convolutions are not Conv2D.
        if not isinstance(layer, keras.layers.Conv2D):
            return "the .tflite export keeps this kind of layer builtin"
        if tuple(layer.kernel_size) not in ((3, 3), (1, 1)):
            return (
                f"its kernel_size is {tuple(layer.kernel_size)}; the export "
                "speeds up 3x3 and 1x1 convolutions only"
            )
        if layer.groups != 1:
            return f"it has groups={layer.groups}; the export keeps grouped convolutions builtin"
        if layer.data_format != "channels_last":
            return "its data_format is channels_first; the export's ops are NHWC"
        return None

    def allow_pruning(self, layer):
        """True for 3x3 and 1x1 `Conv2D` layers the export can replace."""
        return self._structure_reason(layer) is None

    def reason_to_skip(self, layer, config):
        reason = self._structure_reason(layer)
        if reason is not None or tuple(layer.kernel_size) != (1, 1):
            return reason
        minimum = _min_pointwise_sparsity()
        sparsity = config.final_unstructured_sparsity
        if sparsity < minimum:
            return (
                f"1x1 convolutions are faster only at {minimum:.0%} zeros or "
                f"more, and this one would end at {sparsity:.0%}"
            )
        return None

    def ensure_model_supports_pruning(self, model):
        """Raises `ValueError` unless ``model`` is built and has a 3x3 or 1x1 Conv2D."""
        if not model.built:
            raise ValueError(
                f"PruneForLatency needs a built model (give it a keras.Input); "
                f"model '{model.name}' is not built."
            )
        layers = [
            layer.layer if isinstance(layer, PatternPruningWrapper) else layer
            for layer in walk_layers(model)
        ]
        if not any(self.allow_pruning(layer) for layer in layers):
            raise ValueError(
                f"PruneForLatency: model '{model.name}' has no layer that the "
                ".tflite export makes faster (a 3x3 or 1x1 Conv2D with groups=1 "
                "and channels_last data)."
            )


def _min_pointwise_sparsity():
    """The sparse 1x1 op's minimum sparsity (needs tf-clicktrain[tflite])."""
    # Through model_rewrite, which loads its planners (pointwise_rewrite among
    # them) in the order their imports need.
    from tf_clicktrain.tflite import model_rewrite  # pylint: disable=import-outside-toplevel

    return model_rewrite.pointwise_rewrite.MIN_SPARSITY


def validate_policy(pruning_policy):
    """Raises `ValueError` unless ``pruning_policy`` is None or a `PruningPolicy`."""
    if pruning_policy is not None and not isinstance(pruning_policy, PruningPolicy):
        raise ValueError(
            "pruning_policy must be a tf_clicktrain.PruningPolicy (e.g. "
            f"PruneForLatency()). Received: pruning_policy={pruning_policy!r}"
        )
