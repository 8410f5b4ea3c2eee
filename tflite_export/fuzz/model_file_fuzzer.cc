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
// Input: a .tflite file followed by one control byte (decoded by
// model_file_harness.run_input): bits 0-1 pick 1-4 threads, bits 2-3 the
// resize (none, larger, 1x1, batch 2), bit 4 LiteRT's default delegates
// (XNNPACK) on or off. Seeds: make_model_corpus.py.
//
// LiteRT's kernels, XNNPACK and numpy are not instrumented: a write of theirs
// out of bounds shows up only later, when ASan meets the damaged memory while
// running another input. With CLICKTRAIN_FUZZ_RING=<directory> the target
// writes each input to <directory>/input-<n % size>, then the count of inputs
// started so far to <directory>/count, before running it, so the last
// CLICKTRAIN_FUZZ_RING_SIZE (default 256) inputs survive an abort;
// input_ring.py lists them in order, and `model_file_harness.py --ring
// <directory>` replays them in one process as here (under valgrind; under
// ASan, pass the list to this target, which runs its file arguments one
// after the other).
//
//   make -C tflite_export fuzz-files          # FUZZ_RUNS executions
//   make -C tflite_export fuzz-files-short    # ~25 s, for CI
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#ifndef CLICKTRAIN_FUZZ_PYTHON
#error "define CLICKTRAIN_FUZZ_PYTHON as the venv's python executable"
#endif
#ifndef CLICKTRAIN_FUZZ_DIR
#error "define CLICKTRAIN_FUZZ_DIR as the directory of model_file_harness.py"
#endif

namespace {

PyObject* run_function = nullptr;

// The ring of recent inputs (empty directory: off).
std::string ring_directory;
unsigned long ring_size = 256;
unsigned long long ring_count = 0;

void Die(const char* what) {
  std::fprintf(stderr, "model_file_fuzzer: %s\n", what);
  if (PyErr_Occurred()) PyErr_Print();
  std::abort();
}

void WriteFile(const std::string& path, const void* data, size_t size) {
  errno = 0;
  FILE* file = std::fopen(path.c_str(), "wb");
  const bool written = file != nullptr &&
                       std::fwrite(data, 1, size, file) == size;
  if (file != nullptr && std::fclose(file) != 0) file = nullptr;
  if (file == nullptr || !written) {
    Die(("cannot write " + path + ": " + std::strerror(errno)).c_str());
  }
}

// Writes the input to its slot, then the count of inputs started.
void RecordInput(const uint8_t* data, size_t size) {
  if (ring_directory.empty()) return;
  WriteFile(ring_directory + "/input-" + std::to_string(ring_count % ring_size),
            data, size);
  ++ring_count;
  const std::string count = std::to_string(ring_count) + " " +
                            std::to_string(ring_size) + "\n";
  WriteFile(ring_directory + "/count", count.data(), count.size());
}

void ConfigureRing() {
  const char* directory = std::getenv("CLICKTRAIN_FUZZ_RING");
  if (directory == nullptr || directory[0] == '\0') return;
  ring_directory = directory;
  if (const char* size = std::getenv("CLICKTRAIN_FUZZ_RING_SIZE")) {
    ring_size = std::strtoul(size, nullptr, 10);
    if (ring_size == 0) Die("CLICKTRAIN_FUZZ_RING_SIZE must be at least 1");
  }
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
  run_function = PyObject_GetAttrString(harness, "run_input");
  if (run_function == nullptr) Die("model_file_harness has no run_input()");
  ConfigureRing();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  RecordInput(data, size);
  PyObject* result = PyObject_CallFunction(
      run_function, "y#", reinterpret_cast<const char*>(data),
      static_cast<Py_ssize_t>(size));
  if (result == nullptr) Die("run_input() raised");  // it catches all it may
  Py_DECREF(result);
  return 0;
}
