"""TFLite / LiteRT export of pattern-sparse models.

- `convert(model)`: Keras model -> .tflite bytes in which pattern-sparse 3x3
  convolutions are compact `ClickTrainPatternConv2D` /
  `ClickTrainPatternDepthwiseConv2D` custom ops and 1x1 convolutions of at
  least 70% zeros `ClickTrainSparseConv1x1` ops (`custom_ops=False`: a
  builtin-only file for stock runtimes).
- `replace_pattern_convs(tflite_bytes)`: the same rewrite on a .tflite file
  made by any converter call; `count_pattern_ops`, `LayerReport`.
- `Interpreter(...)`: LiteRT's Interpreter with those ops available.
- `compact_format`: the compact pattern-conv weight format, in NumPy;
  `pointwise_format`: the sparse 1x1 one.
- `native_library`: locating and loading the native delegate library.
- `save(model_or_bytes, path)`: writes a .tflite file atomically.

Importing this module needs only NumPy; the names that need LiteRT
(`ai-edge-litert`, `flatbuffers`: `pip install tf-clicktrain[tflite]`) load
on first use.
"""

import importlib
import os

from tf_clicktrain.tflite import compact_format
from tf_clicktrain.tflite import native_library
from tf_clicktrain.tflite.converter import convert


def save(model_or_bytes, filepath, **convert_kwargs):
    """Writes a .tflite file atomically (`tf_clicktrain.saving.write_bytes`).

    A crash or kill mid-write leaves the previous file at ``filepath`` intact.

    Args:
        model_or_bytes: the bytes of `convert`, or a stripped Keras model to
            convert first.
        filepath: destination ending in ``.tflite``.
        **convert_kwargs: passed to `convert` when a model is given.

    Example:
    ```python
    ct.tflite.save(ct.tflite.convert(final), "pruned.tflite")
    ```
    """
    # Deferred: Keras (and the saving module) are needed only here.
    import keras

    from tf_clicktrain import saving

    if not isinstance(filepath, (str, os.PathLike)) or not os.fspath(filepath).endswith(
        ".tflite"
    ):
        raise ValueError(
            f"The TFLite path must end with .tflite. Received: filepath={filepath!r}"
        )
    if isinstance(model_or_bytes, keras.Model):
        model_or_bytes = convert(model_or_bytes, **convert_kwargs)
    elif convert_kwargs:
        raise ValueError(
            "convert options apply only when a model is given. "
            f"Received: {sorted(convert_kwargs)} with bytes"
        )
    saving.write_bytes(filepath, model_or_bytes)


_NEEDS_LITERT = {
    "Interpreter": ("tf_clicktrain.tflite.interpreter", "Interpreter"),
    "LayerReport": ("tf_clicktrain.tflite.model_rewrite", "LayerReport"),
    "count_pattern_ops": ("tf_clicktrain.tflite.model_rewrite", "count_pattern_ops"),
    "replace_pattern_convs": ("tf_clicktrain.tflite.model_rewrite", "replace_pattern_convs"),
}


def __getattr__(name):
    if name not in _NEEDS_LITERT:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attribute = _NEEDS_LITERT[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"tf_clicktrain.tflite.{name} needs ai-edge-litert and flatbuffers: "
            f"pip install 'tf-clicktrain[tflite]' ({error})"
        ) from error
    return getattr(module, attribute)


def __dir__():
    return sorted([*globals(), *_NEEDS_LITERT])
