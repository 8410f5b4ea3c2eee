"""Bounds the tensor memory LiteRT plans for a model, before it is touched.

A .tflite file declares every tensor's shape, but LiteRT recomputes the
shapes when it prepares the graph, from the ops' own parameters. A corrupt or
hostile file can declare small tensors and give an op parameters (paddings,
block sizes, strides) that inflate its output: a 5 KB file declaring 4 MB of
tensors then plans 19 GB. Planning only reserves address space; the memory
is touched when the model runs.

`TensorMemoryGuard` sits between `tf_clicktrain.tflite.Interpreter` and
LiteRT's interpreter wrapper, so every path that allocates tensors goes
through it (`allocate_tensors`, signature runners). After each allocation
that follows a shape change it sums the bytes of the planned tensors and
refuses, with a ValueError naming the largest tensor, a plan above

    2 x declared tensor bytes x input growth + FIXED_BYTES

where the input growth is how much the caller enlarged the inputs it resized
(at least 1). Once refused, running the graph raises the same error until a
later allocation fits. Tensors whose shape is only known while the model
runs (dynamic tensors) are allocated during `invoke` and are not covered.

A signature runner resizes its inputs and allocates on every call, mostly to
unchanged shapes; the guard then adds no shape reads and, while nothing is
left to check or refuse, runs `AllocateTensors` and `Invoke` straight on
LiteRT's wrapper: a call costs about 0.5 us more than in stock LiteRT.
"""

import math

import numpy as np

# Room for models whose declared shapes are placeholders (e.g. 0-element or
# scalar shapes filled in at preparation).
FIXED_BYTES = 64 << 20

_ALL_SUBGRAPHS = -1
_INT32 = np.dtype(np.int32)


class TensorMemoryGuard:
    """Wraps LiteRT's interpreter wrapper; checks each tensor plan it makes.

    Args:
        wrapper: the `_pywrap_litert_interpreter_wrapper.InterpreterWrapper`
            of a loaded model.
        limit_bytes: a fixed limit on the planned tensor bytes of a subgraph,
            replacing the rule above; None for the rule.
    """

    def __init__(self, wrapper, limit_bytes=None):
        self._wrapper = wrapper
        self._limit_bytes = limit_bytes
        self._declared = [
            _tensor_bytes(wrapper, subgraph) for subgraph in range(wrapper.NumSubgraphs())
        ]
        self._resized = [set() for _ in self._declared]
        self._unchecked = set(range(len(self._declared)))
        self._refusal = [None] * len(self._declared)
        # `(subgraph, tensor)`: the int32 bytes of the input shapes this guard
        # has seen, so that a resize to the same shape (which every signature
        # runner call makes) costs no shape reads.
        self._input_shapes = {}
        self._use_fast_paths()

    def __getattr__(self, name):
        # Only for names the guard does not define. Each bound method is kept
        # on the instance, so later calls skip this lookup (signature runners
        # call SetTensor and GetTensor through here on every call).
        if "_wrapper" not in self.__dict__:  # Not initialized (e.g. copy.copy).
            raise AttributeError(name)
        value = getattr(self._wrapper, name)
        if callable(value):
            self.__dict__[name] = value
        return value

    def _use_fast_paths(self):
        """Runs AllocateTensors and Invoke straight on LiteRT's wrapper while
        there is nothing to check or refuse; the guarded methods otherwise."""
        refused = any(refusal is not None for refusal in self._refusal)
        if self._unchecked or refused:
            self.__dict__.pop("AllocateTensors", None)
        else:
            self.__dict__["AllocateTensors"] = self._wrapper.AllocateTensors
        if refused:
            self.__dict__.pop("Invoke", None)
        else:
            self.__dict__["Invoke"] = self._wrapper.Invoke

    def ResizeInputTensor(self, i, value, strict, subgraph_index=0):  # pylint: disable=invalid-name
        """LiteRT's ResizeInputTensor; a new shape is checked at the next allocation."""
        key = (subgraph_index, i)
        known = self._input_shapes.get(key)
        # LiteRT takes only int32 shapes and sets the tensor to exactly the
        # shape given, so equal bytes mean an unchanged shape. Anything else
        # (lists, other dtypes, a shape not seen yet) reads the shape around
        # the call.
        if known is None or type(value) is not np.ndarray or value.dtype is not _INT32:
            return self._resize_reading_shapes(i, value, strict, subgraph_index)
        try:
            result = self._wrapper.ResizeInputTensor(i, value, strict, subgraph_index)
        except BaseException:
            # The shape may have changed before LiteRT raised.
            self._read_shape(i, subgraph_index, known)
            raise
        shape = value.tobytes()
        if shape != known:
            self._input_shapes[key] = shape
            self._note_resize(subgraph_index, i)
        return result

    def _resize_reading_shapes(self, i, value, strict, subgraph_index):
        before = np.asarray(self._wrapper.TensorSize(i, subgraph_index), _INT32).tobytes()
        try:
            return self._wrapper.ResizeInputTensor(i, value, strict, subgraph_index)
        finally:
            # Also when LiteRT raised: the shape may have changed before it did.
            self._read_shape(i, subgraph_index, before)

    def _read_shape(self, i, subgraph_index, before):
        """Caches input `i`'s shape; notes a resize if it differs from `before`."""
        after = np.asarray(self._wrapper.TensorSize(i, subgraph_index), _INT32).tobytes()
        self._input_shapes[(subgraph_index, i)] = after
        if after != before:
            self._note_resize(subgraph_index, i)

    def _note_resize(self, subgraph_index, i):
        self._resized[subgraph_index].add(i)
        self._unchecked.add(subgraph_index)
        self._use_fast_paths()

    def AllocateTensors(self, subgraph_index=_ALL_SUBGRAPHS):  # pylint: disable=invalid-name
        """LiteRT's AllocateTensors, then the check of the planned bytes.

        Raises:
            ValueError: if a subgraph's planned tensors exceed the limit.
        """
        result = self._wrapper.AllocateTensors(subgraph_index)
        subgraphs = (
            range(len(self._declared)) if subgraph_index == _ALL_SUBGRAPHS else [subgraph_index]
        )
        for subgraph in subgraphs:
            if subgraph in self._unchecked:
                self._unchecked.discard(subgraph)
                self._refusal[subgraph] = self._check(subgraph)
        self._use_fast_paths()
        refusal = next((self._refusal[s] for s in subgraphs if self._refusal[s]), None)
        if refusal is not None:
            # LiteRT counts the references to this object to detect numpy
            # views of tensor memory; the traceback must not hold one.
            del self
            raise ValueError(refusal)
        return result

    def Invoke(self, subgraph_index=0):  # pylint: disable=invalid-name
        """LiteRT's Invoke, unless the subgraph's tensor plan was refused."""
        refusal = self._refusal[subgraph_index]
        if refusal is not None:
            del self  # As in AllocateTensors.
            raise ValueError(refusal)
        return self._wrapper.Invoke(subgraph_index)

    def _check(self, subgraph):
        planned = _tensor_bytes(self._wrapper, subgraph)
        declared = self._declared[subgraph]
        if self._limit_bytes is not None:
            limit = self._limit_bytes
            rule = f"the limit of {_megabytes(limit)} given as tensor_memory_limit"
        else:
            resized = sorted(self._resized[subgraph])
            growth = max(
                1.0,
                sum(planned[i] for i in resized) / max(1, sum(declared[i] for i in resized)),
            )
            limit = 2 * sum(declared) * growth + FIXED_BYTES
            rule = (
                f"2 x the {_megabytes(sum(declared))} its file declares"
                + (f" x {growth:.3g} (the resized inputs' growth)" if growth > 1 else "")
                + f" + {_megabytes(FIXED_BYTES)}"
            )
        total = sum(planned)
        if total <= limit:
            return None
        largest = int(np.argmax(planned))
        return (
            f"The model's tensors need {_megabytes(total)} once LiteRT has computed "
            f"their shapes, more than {rule}. The largest is tensor {largest} "
            f"{self._wrapper.TensorName(largest, subgraph)!r} of shape "
            f"{[int(d) for d in self._wrapper.TensorSize(largest, subgraph)]} "
            f"({_megabytes(planned[largest])}; the file declares "
            f"{_megabytes(declared[largest])}): an op's parameters inflate it, "
            "which a corrupt or hostile file does. Refusing to run the model; pass "
            "tensor_memory_limit= (bytes) to the Interpreter to allow it."
        )


def _tensor_bytes(wrapper, subgraph):
    sizes = []
    for i in range(wrapper.NumTensors(subgraph)):
        dtype = wrapper.TensorType(i, subgraph)
        itemsize = np.dtype(dtype).itemsize if dtype is not None else 1
        # Python integers: a hostile shape's product overflows any fixed width.
        elements = math.prod(max(int(d), 0) for d in wrapper.TensorSize(i, subgraph))
        sizes.append(elements * itemsize)
    return sizes


def _megabytes(count):
    if count < 1e6:
        return f"{int(count):,} bytes"
    return f"{count / 1e6:,.1f} MB"
