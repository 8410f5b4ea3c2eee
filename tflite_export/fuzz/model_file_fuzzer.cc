// libFuzzer target over whole .tflite files run by the real LiteRT runtime.
//
// The ai-edge-litert wheel exports no TfLite C API (its interpreter lives in
// libpywrap_litert_common.so with every C/C++ symbol hidden; libLiteRt.so
// exports only the LiteRt* CompiledModel API), so this target embeds Python
// and drives the runtime the way users do: model_file_harness.py loads each
// input with tf_clicktrain.tflite.Interpreter (stock LiteRT + the ClickTrain
// delegate), allocates, runs, resizes the first input (the delegate's
// Prepare then resizes its output through ResizeTensorExplicit) and runs
// again. The delegate library it loads is the ASan/UBSan + coverage build
// named by TF_CLICKTRAIN_TFLITE_LIBRARY; the runtime is not instrumented.
//
// Input: a .tflite file followed by one control byte: bits 0-1 pick 1-4
// threads, bits 2-3 the resize (none, larger, 1x1, batch 2), bit 4 LiteRT's
// default delegates (XNNPACK) on or off. Seeds: make_model_corpus.py.
//
//   make -C tflite_export fuzz-files          # FUZZ_RUNS executions
//   make -C tflite_export fuzz-files-short    # ~25 s, for CI
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#ifndef CLICKTRAIN_FUZZ_PYTHON
#error "define CLICKTRAIN_FUZZ_PYTHON as the venv's python executable"
#endif
#ifndef CLICKTRAIN_FUZZ_DIR
#error "define CLICKTRAIN_FUZZ_DIR as the directory of model_file_harness.py"
#endif

namespace {

PyObject* run_function = nullptr;

void Die(const char* what) {
  std::fprintf(stderr, "model_file_fuzzer: %s\n", what);
  if (PyErr_Occurred()) PyErr_Print();
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  // The venv's interpreter path makes Python find the venv's site-packages.
  if (PyStatus_Exception(PyConfig_SetBytesString(
          &config, &config.program_name, CLICKTRAIN_FUZZ_PYTHON)) ||
      PyStatus_Exception(Py_InitializeFromConfig(&config))) {
    Die("cannot start Python");
  }
  PyConfig_Clear(&config);
  PyObject* sys_path = PySys_GetObject("path");
  PyObject* directory = PyUnicode_FromString(CLICKTRAIN_FUZZ_DIR);
  if (sys_path == nullptr || directory == nullptr ||
      PyList_Insert(sys_path, 0, directory) != 0) {
    Die("cannot extend sys.path");
  }
  Py_DECREF(directory);
  PyObject* harness = PyImport_ImportModule("model_file_harness");
  if (harness == nullptr) Die("cannot import model_file_harness");
  run_function = PyObject_GetAttrString(harness, "run");
  if (run_function == nullptr) Die("model_file_harness has no run()");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t control = data[size - 1];
  const int threads = 1 + (control & 3);
  const int resize_mode = (control >> 2) & 3;
  const int default_delegates = (control >> 4) & 1;
  PyObject* result = PyObject_CallFunction(
      run_function, "y#iii", reinterpret_cast<const char*>(data),
      static_cast<Py_ssize_t>(size - 1), threads, resize_mode,
      default_delegates);
  if (result == nullptr) Die("run() raised");  // run() catches all it may
  Py_DECREF(result);
  return 0;
}
