"""Finds and loads the native pattern-conv delegate library.

The library (`libclicktrain_tflite.so`, built from `tflite_export/` by
`pip install` or `make -C tflite_export`) exposes LiteRT's external-delegate
plugin interface, so it loads with `ai_edge_litert.interpreter.load_delegate`.
It declares the TFLite C structs it touches itself, for the ai-edge-litert
release pinned in `tflite_export/src/litert_abi.h`; `check_runtime_version`
compares that pin with the installed runtime.
"""

import ctypes
import functools
import importlib.metadata
import os
import pathlib

LIBRARY_NAME = "libclicktrain_tflite.so"
LIBRARY_PATH_VARIABLE = "TF_CLICKTRAIN_TFLITE_LIBRARY"

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
_SOURCE_BUILD_DIR = _PACKAGE_DIR.parent.parent / "tflite_export" / "build"


def library_path():
    """Returns the path of the native delegate library.

    Looks, in order, at the `TF_CLICKTRAIN_TFLITE_LIBRARY` environment
    variable, next to this module (where `pip install` puts it), and in
    `tflite_export/build/` of a source checkout (`make -C tflite_export`).

    Raises:
        FileNotFoundError: if no library is found.
    """
    override = os.environ.get(LIBRARY_PATH_VARIABLE)
    if override:
        if not os.path.isfile(override):
            raise FileNotFoundError(
                f"{LIBRARY_PATH_VARIABLE} names a missing file. "
                f"Received: {LIBRARY_PATH_VARIABLE}={override!r}"
            )
        return override
    for directory in (_PACKAGE_DIR, _SOURCE_BUILD_DIR):
        candidate = directory / LIBRARY_NAME
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"The ClickTrain TFLite library {LIBRARY_NAME} was not found in "
        f"{_PACKAGE_DIR} or {_SOURCE_BUILD_DIR}. Reinstall tf-clicktrain with "
        "`pip install` (it compiles the library with the system C/C++ "
        "compiler) or run `make -C tflite_export` in a source checkout."
    )


# `name: (restype, argtypes)` of every `clicktrain_tflite_*` function of the
# library's public header, tflite_export/include/clicktrain_tflite.h (the
# plugin entry points there are called by LiteRT's `load_delegate`).
# tests/tflite/test_native_api.py checks this table against the header and
# the header against the library's exported symbols.
C_FUNCTIONS = {
    "clicktrain_tflite_claimed_nodes": (ctypes.c_int, (ctypes.c_void_p,)),
    "clicktrain_tflite_memory_fallbacks": (ctypes.c_int, (ctypes.c_void_p,)),
    "clicktrain_tflite_litert_abi_version": (ctypes.c_char_p, ()),
    "clicktrain_tflite_format_version": (ctypes.c_int, ()),
    "clicktrain_tflite_kernel_name": (ctypes.c_char_p, ()),
}


@functools.lru_cache(maxsize=None)
def _library(path):
    library = ctypes.CDLL(path)
    for name, (restype, argtypes) in C_FUNCTIONS.items():
        function = getattr(library, name)
        function.restype = restype
        function.argtypes = list(argtypes)
    return library


def library_info():
    """Returns facts about the native library, for diagnostics.

    Returns:
        A dict with `path`, `litert_abi_version` (the ai-edge-litert release
        whose ABI it was built for), `format_version` (of the compact weights
        it reads) and `kernels` (the compute kernels chosen for this CPU).
    """
    path = library_path()
    library = _library(path)
    return {
        "path": path,
        "litert_abi_version": library.clicktrain_tflite_litert_abi_version().decode(),
        "format_version": library.clicktrain_tflite_format_version(),
        "kernels": library.clicktrain_tflite_kernel_name().decode(),
    }


def installed_litert_version():
    """Returns the installed ai-edge-litert version string."""
    return importlib.metadata.version("ai-edge-litert")


def check_runtime_version():
    """Raises if the installed LiteRT differs from the one the library pins.

    Raises:
        RuntimeError: naming both versions when major.minor differ.
    """
    pinned = library_info()["litert_abi_version"]
    installed = installed_litert_version()
    if ".".join(installed.split(".")[:2]) != pinned:
        raise RuntimeError(
            f"The ClickTrain TFLite library was built for ai-edge-litert "
            f"{pinned}.x, but ai-edge-litert {installed} is installed. Install "
            f"ai-edge-litert=={pinned}.* or rebuild tf-clicktrain against the "
            "new runtime after updating tflite_export/src/litert_abi.h."
        )


def load_delegate():
    """Returns a new LiteRT delegate that runs the ClickTrain custom ops."""
    from ai_edge_litert import interpreter as litert_interpreter

    check_runtime_version()
    return litert_interpreter.load_delegate(library_path())


def claimed_nodes(delegate):
    """Returns how many pattern-conv nodes `delegate` has claimed."""
    library = _library(library_path())
    return library.clicktrain_tflite_claimed_nodes(
        delegate._get_native_delegate_pointer()  # pylint: disable=protected-access
    )


def memory_fallbacks(delegate):
    """Returns how many of `delegate`'s nodes gave up their fast path (ran on
    one thread or on the reference kernel) for lack of memory budget."""
    library = _library(library_path())
    return library.clicktrain_tflite_memory_fallbacks(
        delegate._get_native_delegate_pointer()  # pylint: disable=protected-access
    )
