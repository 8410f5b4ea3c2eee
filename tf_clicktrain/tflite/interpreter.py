"""LiteRT's Interpreter with the ClickTrain pattern-conv ops available."""

import os

from ai_edge_litert import interpreter as litert_interpreter
from ai_edge_litert import schema_py_generated as schema

from tf_clicktrain.tflite import compact_format
from tf_clicktrain.tflite import flatbuffer_check
from tf_clicktrain.tflite import model_rewrite
from tf_clicktrain.tflite import native_library


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
        **kwargs: passed to `ai_edge_litert.interpreter.Interpreter`.

    Raises:
        ValueError: if the model cannot be loaded (LiteRT's reason, or the
            first malformed field of the file), a pattern-conv node names a
            tensor that does not exist, or a pattern-conv node fails
            validation when the delegate is applied.
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
        **kwargs,
    ):
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
        content = _read_model(model_path, model_content)
        expected = model_rewrite.count_pattern_ops(content)
        claimed = native_library.claimed_nodes(self._clicktrain_delegate)
        if claimed != expected:
            reasons = _dropped_pattern_ops(content)
            if reasons:
                raise ValueError(
                    "LiteRT dropped ClickTrain pattern-conv ops while loading the "
                    "model: " + "; ".join(reasons)
                )
            raise RuntimeError(
                f"The model holds {expected} ClickTrain pattern-conv ops but the "
                f"delegate claimed {claimed}."
            )

    def allocate_tensors(self):
        """Allocates tensors; pattern-conv ops validate their weights here.

        Raises:
            RuntimeError: naming the failed check, if a pattern-conv op's
                options or compact weights are invalid.
        """
        try:
            return super().allocate_tensors()
        except RuntimeError as error:
            raise RuntimeError(f"Could not prepare the model: {error}") from error


def _read_model(model_path, model_content):
    if model_content is None:
        with open(os.fspath(model_path), "rb") as model_file:
            model_content = model_file.read()
    return bytes(model_content)


def _dropped_pattern_ops(content):
    """Why LiteRT would drop pattern-conv nodes of a checked model, one line each.

    LiteRT's builder skips (without raising) a node that names a tensor
    outside its subgraph; the delegate then never sees it.
    """
    model = schema.Model.GetRootAs(content, 0)
    names = (compact_format.CONV_OP_NAME, compact_format.DEPTHWISE_CONV_OP_NAME)
    ours = {
        index: flatbuffer_check.custom_code(model.OperatorCodes(index), index)
        for index in range(model.OperatorCodesLength())
    }
    reasons = []
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        num_tensors = subgraph.TensorsLength()
        for o in range(subgraph.OperatorsLength()):
            operator = subgraph.Operators(o)
            name = ours.get(operator.OpcodeIndex())
            if name not in names:
                continue
            for role, length, read in (
                ("input", operator.InputsLength(), operator.Inputs),
                ("output", operator.OutputsLength(), operator.Outputs),
            ):
                for position in range(length):
                    index = read(position)
                    # -1 marks an omitted optional tensor.
                    if not -1 <= index < num_tensors:
                        reasons.append(
                            f"subgraph {s} operator {o} ({name}): {role} {position} is "
                            f"tensor {index}, outside the subgraph's {num_tensors} tensors"
                        )
    return reasons
