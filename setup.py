"""Packaging for tf-clicktrain.

Besides the Python package, builds the native LiteRT delegate library that
runs the pattern-conv custom ops (sources and Makefile in tflite_export/)
with the system C/C++ compiler; nothing is downloaded. It lands next to
tf_clicktrain/tflite/native_library.py as libclicktrain_tflite.so, both for
`pip install .` and `pip install -e .`. Building it needs g++ and the
flatbuffers headers (Debian: libflatbuffers-dev); if that fails, the install
goes on with a warning and ct.tflite.Interpreter explains what is missing.
"""

import os
import platform

import setuptools
from setuptools.command import build_ext

_NATIVE_DIR = "tflite_export"
_NATIVE_LIBRARY = "tf_clicktrain.tflite.libclicktrain_tflite"
# SIMD kernel variants get their ISA's flags, and only they do, so the library
# still loads on CPUs without the ISA (tflite_export/Makefile does the same).
_X86_64_ISA_FLAGS = {
    "avx2.c": ["-mavx2", "-mfma"],
    "avx512.c": ["-mavx512f"],
    "avx512vnni.c": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"],
}


def _native_sources():
    with open(os.path.join(_NATIVE_DIR, "sources.txt"), encoding="utf-8") as listing:
        return [os.path.join(_NATIVE_DIR, line.strip()) for line in listing if line.strip()]


class _BuildNativeLibrary(build_ext.build_ext):
    """Builds the delegate as a plain shared library (no Python module)."""

    def get_ext_filename(self, fullname):
        # Called with the full dotted name or only its last component.
        if _NATIVE_LIBRARY.endswith(fullname):
            return os.path.join(*fullname.split(".")) + ".so"
        return super().get_ext_filename(fullname)

    def build_extension(self, ext):
        if ext.name == _NATIVE_LIBRARY and platform.machine().lower() in ("x86_64", "amd64"):
            variants = [s for s in ext.sources if os.path.basename(s) in _X86_64_ISA_FLAGS]
            objects = []
            for source in variants:
                objects += self.compiler.compile(
                    [source],
                    output_dir=self.build_temp,
                    macros=ext.define_macros,
                    include_dirs=ext.include_dirs,
                    extra_postargs=ext.extra_compile_args
                    + _X86_64_ISA_FLAGS[os.path.basename(source)],
                )
            ext.sources = [s for s in ext.sources if s not in variants]
            ext.extra_objects = [*(ext.extra_objects or []), *objects]
        super().build_extension(ext)

    def get_export_symbols(self, ext):
        if ext.name == _NATIVE_LIBRARY:
            return []  # Exports come from the version script, not PyInit_*.
        return super().get_export_symbols(ext)


_delegate_library = setuptools.Extension(
    _NATIVE_LIBRARY,
    sources=_native_sources(),
    include_dirs=[os.path.join(_NATIVE_DIR, "include"), os.path.join(_NATIVE_DIR, "src")],
    define_macros=[("FLATBUFFERS_LOCALE_INDEPENDENT", "0")],
    extra_compile_args=["-O2", "-g0", "-fvisibility=hidden"],
    extra_link_args=[
        "-pthread",
        "-Wl,--exclude-libs,ALL",
        "-Wl,--version-script=" + os.path.join(_NATIVE_DIR, "exports.map"),
    ],
    language="c++",
    optional=True,
)

setuptools.setup(
    name="tf-clicktrain",
    version="0.1.0",
    description=(
        "ClickTrain pattern pruning during training for Keras 3, with a "
        "fast pattern-sparse convolution op for LiteRT / TFLite."
    ),
    packages=setuptools.find_packages(include=["tf_clicktrain", "tf_clicktrain.*"]),
    ext_modules=[_delegate_library],
    cmdclass={"build_ext": _BuildNativeLibrary},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow-cpu>=2.16,<2.22",
        "keras>=3.5,<3.16",
        "numpy>=1.26",
        "tensorboard>=2.16,<2.22",
    ],
    extras_require={
        "tflite": ["ai-edge-litert>=2.3,<2.4", "flatbuffers>=24"],
        "datasets": ["tensorflow-datasets==4.9.10", "importlib_resources"],
        "report": ["matplotlib>=3.7"],
        "test": ["pytest>=8", "absl-py", "scikit-learn"],
    },
)
