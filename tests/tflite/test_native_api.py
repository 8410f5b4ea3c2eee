"""The library's public C header is the one list of its exported functions.

`tflite_export/include/clicktrain_tflite.h` declares every function the
library exports; the ctypes declarations in `native_library.C_FUNCTIONS`
must say the same, and the built library must export exactly those symbols.
"""

import ctypes
import pathlib
import re
import shutil
import subprocess

import pytest

from tf_clicktrain.tflite import native_library

HEADER = (pathlib.Path(__file__).resolve().parents[2]
          / "tflite_export" / "include" / "clicktrain_tflite.h")

# C type (whitespace-normalised, parameter name removed) -> ctypes type.
_CTYPES = {
    "void": None,
    "int": ctypes.c_int,
    "size_t": ctypes.c_size_t,
    "const char*": ctypes.c_char_p,
    "char**": ctypes.POINTER(ctypes.c_char_p),
    "struct TfLiteDelegate*": ctypes.c_void_p,
    "const struct TfLiteDelegate*": ctypes.c_void_p,
}


_TYPE_WORDS = {"void", "int", "size_t", "char"}


def _c_type(declaration):
    """The ctypes type of one C return type or parameter declaration."""
    tokens = declaration.replace("*", " * ").split()
    if "(" in tokens[-1] or "(" in declaration:
        return "function pointer"
    if len(tokens) > 1 and tokens[-1] != "*" and tokens[-1] not in _TYPE_WORDS:
        tokens.pop()  # the parameter's name
    text = " ".join(tokens).replace(" *", "*")
    if text not in _CTYPES:
        raise AssertionError(f"C type {text!r} has no ctypes mapping in this test")
    return _CTYPES[text]


def _split_parameters(text):
    """Top-level comma split (function-pointer parameters hold parentheses)."""
    parameters, depth, current = [], 0, ""
    for character in text:
        if character == "," and depth == 0:
            parameters.append(current)
            current = ""
            continue
        depth += character == "("
        depth -= character == ")"
        current += character
    if current.strip():
        parameters.append(current)
    return [] if [p.strip() for p in parameters] == ["void"] else parameters


def header_functions():
    """`{name: (restype, argtypes)}` of every function the header declares."""
    text = re.sub(r"/\*.*?\*/", " ", HEADER.read_text(), flags=re.DOTALL)
    text = re.sub(r"^\s*#.*$", " ", text, flags=re.MULTILINE)  # preprocessor lines
    functions = {}
    for match in re.finditer(r"CLICKTRAIN_TFLITE_API\s+([^;]*?)\b(\w+)\s*\((.*?)\)\s*;",
                             text, flags=re.DOTALL):
        restype, name, parameters = match.groups()
        # A function-pointer parameter closes its own parentheses; re-read
        # the whole parameter list up to the declaration's last ')'.
        start = match.start(3)
        end = text.index(";", start)
        parameters = text[start:text.rindex(")", start, end)]
        functions[name] = (_c_type(restype),
                           tuple(_c_type(p) for p in _split_parameters(parameters)))
    return functions


def test_header_parses_every_exported_declaration():
    functions = header_functions()
    assert set(functions) == {
        "tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate",
        *native_library.C_FUNCTIONS,
    }
    assert functions["tflite_plugin_create_delegate"][1][3] == "function pointer"


def test_ctypes_declarations_match_the_header():
    functions = header_functions()
    for name, (restype, argtypes) in native_library.C_FUNCTIONS.items():
        assert name in functions, f"{name} is not declared in {HEADER.name}"
        assert functions[name] == (restype, tuple(argtypes)), name
    undeclared = {name for name in functions if name.startswith("clicktrain_tflite_")}
    assert undeclared <= set(native_library.C_FUNCTIONS), (
        f"declared in {HEADER.name} but not in native_library.C_FUNCTIONS: "
        f"{sorted(undeclared - set(native_library.C_FUNCTIONS))}")


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils' nm")
def test_library_exports_exactly_the_header_functions():
    path = native_library.library_path()
    listing = subprocess.run(["nm", "-D", "--defined-only", path], check=True,
                             capture_output=True, text=True).stdout
    exported = {line.split()[-1] for line in listing.splitlines()
                if len(line.split()) == 3 and line.split()[1] == "T"}
    assert exported == set(header_functions())


def test_declared_functions_are_callable():
    info = native_library.library_info()
    assert info["kernels"] and info["litert_abi_version"]
    assert native_library._library(native_library.library_path()  # pylint: disable=protected-access
                                   ).clicktrain_tflite_claimed_nodes(None) == -1
