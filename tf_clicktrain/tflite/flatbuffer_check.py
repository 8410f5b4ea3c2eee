"""Bounds check of a .tflite flatbuffer before the generated reader parses it.

The `flatbuffers` Python package has no verifier: LiteRT's generated reader
(`ai_edge_litert.schema_py_generated`) follows offsets and vector lengths as
found, so corrupt bytes surface as `struct.error`, `IndexError` or garbage,
and a file whose tables share children (a vector of n offsets to one big
table) makes the object API unpack n copies. `check_model` walks every table,
vector and string the object API (`ModelT.InitFromPackedBuf`) would read and
raises `ValueError` naming the first one that lies outside the buffer, or
when the file unpacks to far more than its own size.

The layout of each table (which vtable slot holds a scalar of what size, a
string, a table, a vector or a union) is read off the generated reader
itself, so it always matches the schema version that will parse the file.
"""

import functools
import struct

from ai_edge_litert import schema_py_generated as schema
from flatbuffers import number_types
import numpy as np

_UOFFSET = struct.Struct("<I")
_SOFFSET = struct.Struct("<i")
_VOFFSET = struct.Struct("<H")
# Deepest nesting of tables accepted (LiteRT's own verifier uses 64).
MAX_DEPTH = 64
# A valid file unpacks to about its own size (only vtables are shared); the
# check refuses files that would unpack to more than this multiple of it,
# plus a fixed allowance for tiny files.
MAX_EXPANSION = 4
_EXPANSION_ALLOWANCE = 1 << 20
# The zero points an 8-bit tensor can hold, [low, high). LiteRT's XNNPACK
# delegate crashes the process (a null pointer, in LiteRT 2.3) on an int8
# tensor whose zero point is outside its range.
_ZERO_POINT_RANGES = {schema.TensorType.INT8: (-128, 128), schema.TensorType.UINT8: (0, 256)}
# Integer types whose quantization scales LiteRT's kernels and its XNNPACK
# delegate read. The delegate crashes the process on a scale that is not a
# positive normal float, or on several scales for a rank-0 tensor.
_QUANTIZED_TYPES = frozenset((
    schema.TensorType.INT4, schema.TensorType.INT8, schema.TensorType.UINT8,
    schema.TensorType.INT16, schema.TensorType.INT32,
))


class _Field:
    """How one vtable slot of a table is read by the generated reader."""

    __slots__ = ("name", "slot", "kind", "size", "target", "type_slot")

    def __init__(self, name, slot, kind, size=0, target=None, type_slot=None):
        self.name = name  # accessor name, e.g. "Tensors"
        self.slot = slot  # byte offset of the field's entry in the vtable
        # "scalar", "string", "table", "scalars" (vector), "strings",
        # "tables" or "union".
        self.kind = kind
        self.size = size  # scalar / vector element size in bytes
        self.target = target  # table name, or union member {type: table}
        self.type_slot = type_slot  # vtable slot of a union's type byte


def _flags_size(names):
    for name in names:
        if name.endswith("Flags") and name not in ("UOffsetTFlags", "VOffsetTFlags"):
            return getattr(number_types, name).bytewidth
    return 0


def _table_classes():
    return {
        name: value
        for name, value in vars(schema).items()
        if isinstance(value, type) and "GetRootAs" in vars(value) and "Init" in vars(value)
    }


def _union_members(creator_name, tables):
    union_enum = getattr(schema, creator_name[: -len("Creator")])
    return {
        value: member
        for member, value in vars(union_enum).items()
        if not member.startswith("_") and member in tables
    }


def _read_field(table_name, accessor_name, function, tables):
    code = function.__code__
    names = code.co_names
    slot = next(c for c in code.co_consts if isinstance(c, int) and not isinstance(c, bool))
    is_vector = "Vector" in names
    referenced = [n for n in names if n in tables]
    if "Union" in names:
        return _Field(accessor_name, slot, "union")
    if "String" in names:
        return _Field(accessor_name, slot, "strings" if is_vector else "string")
    if "Indirect" in names:
        if len(referenced) != 1:
            raise RuntimeError(f"cannot tell the table type of {table_name}.{accessor_name}")
        return _Field(accessor_name, slot, "tables" if is_vector else "table", target=referenced[0])
    size = _flags_size(names)
    if "Get" not in names or not size:
        raise RuntimeError(f"unknown field kind for {table_name}.{accessor_name}: {names}")
    return _Field(accessor_name, slot, "scalars" if is_vector else "scalar", size=size)


@functools.lru_cache(maxsize=None)
def table_layouts():
    """Returns {table name: [_Field, ...]} for every table of the schema."""
    tables = _table_classes()
    skipped_suffixes = ("AsNumpy", "Length", "IsNone", "BufferHasIdentifier")
    layouts = {}
    for table_name, table_class in tables.items():
        fields = {}
        for accessor_name, function in vars(table_class).items():
            if (
                not callable(function)
                or not hasattr(function, "__code__")
                or accessor_name in ("Init",)
                or accessor_name.startswith("GetRootAs")
                or accessor_name.endswith(skipped_suffixes)
            ):
                continue
            fields[accessor_name] = _read_field(table_name, accessor_name, function, tables)
        object_class = getattr(schema, table_name + "T", None)
        unpack_names = object_class._UnPack.__code__.co_names if object_class else ()
        creators = [n for n in unpack_names if n.endswith("Creator")]
        for field in fields.values():
            if field.kind != "union":
                continue
            creator = field.name + "Creator"
            if creator not in creators:
                if len(creators) != 1:
                    raise RuntimeError(f"cannot tell the union type of {table_name}.{field.name}")
                creator = creators[0]
            field.target = _union_members(creator, tables)
            field.type_slot = fields[field.name + "Type"].slot
        layouts[table_name] = sorted(fields.values(), key=lambda f: f.slot)
    return layouts


class _Walker:
    """Walks one buffer; see `check_model`."""

    def __init__(self, data, what):
        self.data = data
        self.size = len(data)
        self.what = what
        self.layouts = table_layouts()
        self.budget = MAX_EXPANSION * self.size + _EXPANSION_ALLOWANCE

    def fail(self, path, problem):
        raise ValueError(f"{self.what} is not a valid TFLite flatbuffer: {'.'.join(path)} {problem}")

    def spend(self, path, amount):
        self.budget -= amount
        if self.budget < 0:
            self.fail(
                path,
                f"makes the {self.size}-byte file unpack to over {MAX_EXPANSION}x its size "
                "(tables or vectors shared many times)",
            )

    def read(self, packer, position, path, what):
        if position < 0 or position + packer.size > self.size:
            self.fail(path, f"has its {what} at byte {position}, outside the {self.size}-byte buffer")
        return packer.unpack_from(self.data, position)[0]

    def indirect(self, position, path):
        return position + self.read(_UOFFSET, position, path, "offset")

    def vector(self, position, element_size, path):
        """Returns (start, length) of the vector whose offset is at `position`."""
        start = self.indirect(position, path)
        length = self.read(_UOFFSET, start, path, "length")
        end = start + 4 + length * element_size
        if end > self.size:
            self.fail(path, f"declares {length} elements ending at byte {end}, past the {self.size}-byte buffer")
        self.spend(path, 4 + length * element_size)
        return start + 4, length

    def table(self, position, table_name, path, depth):
        if depth > MAX_DEPTH:
            self.fail(path, f"nests tables deeper than {MAX_DEPTH}")
        vtable = position - self.read(_SOFFSET, position, path, "table")
        vtable_size = self.read(_VOFFSET, vtable, path, "vtable")
        object_size = self.read(_VOFFSET, vtable + 2, path, "vtable")
        if vtable_size < 4 or vtable_size % 2 or vtable + vtable_size > self.size:
            self.fail(path, f"has a {vtable_size}-byte vtable at byte {vtable}, not within the buffer")
        if object_size < 4 or position + object_size > self.size:
            self.fail(path, f"is a {object_size}-byte table at byte {position}, not within the buffer")
        self.spend(path, object_size)
        for field in self.layouts[table_name]:
            if field.slot >= vtable_size:
                continue
            offset = _VOFFSET.unpack_from(self.data, vtable + field.slot)[0]
            if offset == 0:
                continue
            field_size = field.size if field.kind == "scalar" else 4
            if offset + field_size > object_size:
                self.fail(
                    path + (field.name,),
                    f"lies at byte {offset} of a {object_size}-byte table",
                )
            self.field(position + offset, position, vtable, vtable_size, field, path, depth)

    def field(self, position, table_position, vtable, vtable_size, field, path, depth):
        path = path + (field.name,)
        kind = field.kind
        if kind == "scalar":
            return
        if kind == "string":
            self.vector(position, 1, path)
        elif kind == "table":
            self.table(self.indirect(position, path), field.target, path, depth + 1)
        elif kind == "scalars":
            self.vector(position, field.size, path)
        elif kind in ("strings", "tables"):
            start, length = self.vector(position, 4, path)
            for index in range(length):
                element_path = path[:-1] + (f"{field.name}[{index}]",)
                element = start + 4 * index
                if kind == "strings":
                    self.vector(element, 1, element_path)
                else:
                    self.table(self.indirect(element, element_path), field.target, element_path, depth + 1)
        elif kind == "union":
            union_type = 0
            if field.type_slot < vtable_size:
                type_offset = _VOFFSET.unpack_from(self.data, vtable + field.type_slot)[0]
                if type_offset:
                    union_type = self.data[table_position + type_offset]
            member = field.target.get(union_type)
            if member is not None:  # the reader ignores unknown member types
                self.table(self.indirect(position, path), member, path, depth + 1)


def check_model(tflite_bytes, what="tflite_bytes"):
    """Raises ValueError unless `tflite_bytes` is safe for the generated reader.

    Checks the 'TFL3' identifier, then that every table, vtable, string and
    vector reachable from the `Model` root lies inside the buffer, that
    tables nest at most `MAX_DEPTH` deep, and that the file does not unpack
    to more than `MAX_EXPANSION` times its size.

    Args:
        tflite_bytes: the .tflite file (bytes).
        what: how to name the input in the error message.

    Raises:
        ValueError: naming the first field that fails.
    """
    data = bytes(tflite_bytes)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(f"{what} is not a TFLite flatbuffer (no 'TFL3' identifier).")
    walker = _Walker(data, what)
    walker.table(walker.indirect(0, ("Model",)), "Model", ("Model",), 0)


def custom_code(operator_code, index):
    """Returns an `OperatorCode`'s custom op name as text ("" when unset).

    Raises:
        ValueError: if the name is not UTF-8.
    """
    raw = operator_code.CustomCode() or b""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"operator_codes[{index}].custom_code is not UTF-8 text. Received: {raw[:64]!r}"
        ) from error


def _items(value):
    """A list or numpy array field of the object API, or [] when unset."""
    return [] if value is None else value


def _check_single_writer(operator, o, s, writers, what):
    """Each tensor is written by one operator, which does not also read it.

    An operator resizes its outputs at Prepare; a second writer, prepared
    earlier for the old size, would write past the tensor's new end.
    """
    inputs = {int(index) for index in _items(operator.inputs)}
    for i, index in enumerate(_items(operator.outputs)):
        index = int(index)
        if index < 0:
            continue
        where = f"subgraphs[{s}].operators[{o}].outputs[{i}]"
        if index in inputs:
            raise ValueError(
                f"{what} is not a valid TFLite model: {where} is tensor {index}, "
                f"which the operator also reads"
            )
        if index in writers:
            raise ValueError(
                f"{what} is not a valid TFLite model: {where} is tensor {index}, "
                f"which operators[{writers[index]}] also writes"
            )
        writers[index] = o


def _check_scales(tensor, where, what):
    """Raises ValueError unless the quantization scales of an integer tensor
    are positive normal floats, one per tensor or one per entry of the
    quantized dimension."""
    scales = np.asarray(_items(tensor.quantization.scale), np.float32).reshape(-1)
    bad = np.flatnonzero(~(np.isfinite(scales) & (scales >= np.finfo(np.float32).tiny)))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{what} is not a valid TFLite model: {where}.quantization.scale[{i}] "
            f"is {float(scales[i])!r}; a scale must be a positive normal float"
        )
    if len(scales) <= 1:
        return
    shape = [int(size) for size in _items(tensor.shape)]
    dimension = int(tensor.quantization.quantizedDimension)
    if not 0 <= dimension < len(shape) or shape[dimension] != len(scales):
        raise ValueError(
            f"{what} is not a valid TFLite model: {where} has {len(scales)} quantization "
            f"scales for quantized_dimension {dimension} of shape {shape}; per-channel "
            f"quantization needs one scale per entry of that dimension"
        )


def check_indices(model, what="tflite_bytes"):
    """Raises ValueError unless `model` has a subgraph and every index in it
    names an existing entry.

    Covers what a rewrite of the unpacked model, or LiteRT's model builder,
    follows: operator opcode and
    tensor indices, subgraph inputs and outputs, tensor buffers, signature
    subgraphs and tensors, and metadata buffers; that no tensor has two
    writers and no operator writes a tensor it reads; the zero points of
    8-bit tensors, which must fit their type; and the quantization scales of
    integer tensors: positive normal floats, one per tensor or one per entry
    of the quantized dimension (LiteRT's XNNPACK delegate, applied by
    default, crashes the process on any other).

    Args:
        model: a `schema_py_generated.ModelT` (from a checked file).
        what: how to name the input in the error message.

    Raises:
        ValueError: naming the first index out of range.
    """
    subgraphs = _items(model.subgraphs)
    if len(subgraphs) == 0:
        raise ValueError(f"{what} is not a valid TFLite model: it has no subgraphs")
    num_codes = len(_items(model.operatorCodes))
    num_buffers = len(_items(model.buffers))

    def check(value, low, high, where):
        if not low <= int(value) < high:
            raise ValueError(
                f"{what} is not a valid TFLite model: {where} is {int(value)}, "
                f"outside [{low}, {high})"
            )

    for s, subgraph in enumerate(subgraphs):
        num_tensors = len(_items(subgraph.tensors))
        for name in ("inputs", "outputs"):
            for i, index in enumerate(_items(getattr(subgraph, name))):
                check(index, 0, num_tensors, f"subgraphs[{s}].{name}[{i}]")
        for t, tensor in enumerate(_items(subgraph.tensors)):
            check(tensor.buffer, 0, max(num_buffers, 1), f"subgraphs[{s}].tensors[{t}].buffer")
            zero_point_range = _ZERO_POINT_RANGES.get(tensor.type)
            if zero_point_range is not None and tensor.quantization is not None:
                for z, zero_point in enumerate(_items(tensor.quantization.zeroPoint)):
                    check(
                        zero_point,
                        *zero_point_range,
                        f"subgraphs[{s}].tensors[{t}].quantization.zero_point[{z}]",
                    )
            if tensor.type in _QUANTIZED_TYPES and tensor.quantization is not None:
                _check_scales(tensor, f"subgraphs[{s}].tensors[{t}]", what)
        writers = {}
        for o, operator in enumerate(_items(subgraph.operators)):
            check(operator.opcodeIndex, 0, num_codes, f"subgraphs[{s}].operators[{o}].opcode_index")
            for name in ("inputs", "outputs", "intermediates"):
                for i, index in enumerate(_items(getattr(operator, name))):
                    # -1 marks an omitted optional input.
                    check(index, -1, num_tensors, f"subgraphs[{s}].operators[{o}].{name}[{i}]")
            _check_single_writer(operator, o, s, writers, what)
    for d, signature in enumerate(_items(model.signatureDefs)):
        check(signature.subgraphIndex, 0, len(subgraphs), f"signature_defs[{d}].subgraph_index")
        num_tensors = len(_items(subgraphs[signature.subgraphIndex].tensors))
        for name in ("inputs", "outputs"):
            for i, entry in enumerate(_items(getattr(signature, name))):
                check(entry.tensorIndex, 0, num_tensors, f"signature_defs[{d}].{name}[{i}].tensor_index")
    for m, metadata in enumerate(_items(model.metadata)):
        check(metadata.buffer, 0, num_buffers, f"metadata[{m}].buffer")
    for i, index in enumerate(_items(model.metadataBuffer)):
        check(index, 0, num_buffers, f"metadata_buffer[{i}]")


def check_loadable(tflite_bytes, what="tflite_bytes"):
    """`check_model`, then `check_indices` on the unpacked model.

    LiteRT's Python interpreter builds a model without verifying it, and its
    builder dereferences missing required parts (a file without subgraphs
    crashes the process): run this before handing it untrusted bytes.

    Raises:
        ValueError: naming the first malformed part.
    """
    check_model(tflite_bytes, what)
    check_indices(schema.ModelT.InitFromPackedBuf(bytes(tflite_bytes), 0), what)
