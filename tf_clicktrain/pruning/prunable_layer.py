"""The protocol a custom layer implements to say which weights to prune."""

import abc


class PrunableLayer(metaclass=abc.ABCMeta):
    """Implement `get_prunable_weights` to make a custom layer prunable.

    The check is duck-typed: any layer with a callable
    ``get_prunable_weights`` is prunable, whether or not it subclasses this
    class, and subclasses of built-in layers may override the built-in
    choice the same way. Each returned weight is pruned by its shape: a
    ``(3, 3, in, out)`` kernel gets patterns and connectivity pruning, any
    other weight unstructured magnitude pruning.

    Example:
    ```python
    class MyConv(keras.layers.Layer, ct.PrunableLayer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], 8))

        def call(self, x):
            return keras.ops.conv(x, self.kernel, padding="same")

        def get_prunable_weights(self):
            return [self.kernel]
    ```
    """

    @abc.abstractmethod
    def get_prunable_weights(self):
        """Returns the list of variables to prune."""
        raise NotImplementedError


def is_prunable_layer(layer):
    """True if ``layer`` follows the `PrunableLayer` protocol."""
    return callable(getattr(layer, "get_prunable_weights", None))
