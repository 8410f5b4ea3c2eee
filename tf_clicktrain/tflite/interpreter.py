"""LiteRT's Interpreter with the ClickTrain pattern-conv ops available."""

import os

from ai_edge_litert import interpreter as litert_interpreter

from tf_clicktrain.tflite import flatbuffer_check
from tf_clicktrain.tflite import model_rewrite
from tf_clicktrain.tflite import native_library
from tf_clicktrain.tflite import tensor_memory


class Interpreter(litert_interpreter.Interpreter):
    """`ai_edge_litert.interpreter.Interpreter` that runs ClickTrain custom ops.

    Adds the ClickTrain delegate (which claims every
    `ClickTrainPatternConv2D` / `ClickTrainPatternDepthwiseConv2D` node) ahead
    of any `experimental_delegates` given; everything else, including
    `allocate_tensors`, `get_input_details`, `set_tensor`, `invoke`,
    `get_tensor`, `resize_tensor_input` and `get_signature_runner`, is LiteRT's
    own. Builtin ops run on LiteRT's kernels (XNNPACK by default).

    Args:
        model_path: path of a .tflite file.
        model_content: the .tflite model as bytes.
        experimental_delegates: more delegates, applied after ours.
        num_threads: threads for LiteRT's kernels.
        tensor_memory_limit: bytes the tensors of one subgraph may take once
            LiteRT has computed their shapes. By default 2x what the file
            declares (times the growth of inputs the caller resized) plus
            64 MiB, which refuses files whose op parameters inflate a
            tensor beyond its declared shape; see `tensor_memory`.
        **kwargs: passed to `ai_edge_litert.interpreter.Interpreter`.

    Raises:
        ValueError: if the model cannot be loaded: the first malformed part
            of the file (checked before LiteRT, which does not verify files
            and would drop, without a word, a node naming a missing tensor),
            LiteRT's own reason, or a pattern-conv node failing validation
            when the delegate is applied. From `allocate_tensors` (and
            signature runners), if the tensors' computed shapes exceed
            `tensor_memory_limit`.
        RuntimeError: if the native library does not match the installed
            LiteRT, or not every pattern-conv node was claimed.

    Example:

    ```python
    interpreter = ct.tflite.Interpreter(model_content=tflite_bytes, num_threads=1)
    runner = interpreter.get_signature_runner()
    outputs = runner(keras_tensor=images)
    ```
    """

    def __init__(
        self,
        model_path=None,
        model_content=None,
        experimental_delegates=None,
        num_threads=None,
        tensor_memory_limit=None,
        **kwargs,
    ):
        content = _read_model(model_path, model_content)
        flatbuffer_check.check_loadable(content, "the model")
        self._clicktrain_delegate = native_library.load_delegate()
        delegates = [self._clicktrain_delegate, *(experimental_delegates or [])]
        try:
            super().__init__(
                model_path=model_path,
                model_content=model_content,
                experimental_delegates=delegates,
                num_threads=num_threads,
                **kwargs,
            )
        except (ValueError, RuntimeError) as error:
            # LiteRT's own subclasses (e.g. UnicodeDecodeError for a name that
            # is not UTF-8) collapse to the documented base class.
            error_type = ValueError if isinstance(error, ValueError) else RuntimeError
            raise error_type(
                f"Could not load the model with the ClickTrain pattern-conv ops: {error}"
            ) from error
        expected = model_rewrite.count_pattern_ops(content)
        claimed = native_library.claimed_nodes(self._clicktrain_delegate)
        if claimed != expected:
            raise RuntimeError(
                f"The model holds {expected} ClickTrain pattern-conv ops but the "
                f"delegate claimed {claimed}."
            )
        # Every tensor allocation, including signature runners', goes through
        # the interpreter wrapper; the guard checks the planned bytes there.
        self._interpreter = tensor_memory.TensorMemoryGuard(
            self._interpreter, tensor_memory_limit
        )

    def allocate_tensors(self):
        """Allocates tensors; pattern-conv ops validate their weights here.

        Raises:
            RuntimeError: naming the failed check, if a pattern-conv op's
                options or compact weights are invalid.
            ValueError: if the tensors' computed shapes exceed
                `tensor_memory_limit`, naming the largest tensor.
        """
        try:
            return super().allocate_tensors()
        except RuntimeError as error:
            raise RuntimeError(f"Could not prepare the model: {error}") from error


def _read_model(model_path, model_content):
    if (model_path is None) == (model_content is None):
        raise ValueError(
            "Pass exactly one of model_path and model_content. Received: "
            f"model_path={model_path!r}, model_content of type {type(model_content).__name__}"
        )
    if model_content is not None:
        return bytes(model_content)
    try:
        with open(os.fspath(model_path), "rb") as model_file:
            return model_file.read()
    except OSError as error:
        raise ValueError(f"Could not read the model file {model_path!r}: {error}") from error
