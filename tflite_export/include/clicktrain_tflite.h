/* The C functions libclicktrain_tflite.so exports: the whole public API of
 * the library (exports.map keeps every other symbol local).
 *
 * The headers under include/clicktrain/ are the file-format contracts and
 * kernel interfaces; this one is what a program linking or loading the
 * library calls. Its users: src/delegate.cc (the definitions), the Android
 * JNI glue (android/jni/clicktrain_delegate_jni.c) and the ctypes
 * declarations in tf_clicktrain/tflite/native_library.py, which
 * tests/tflite/test_native_api.py checks against this file and against the
 * symbols of the built library.
 *
 * Only `struct TfLiteDelegate` of LiteRT appears here, as an opaque pointer:
 * no TFLite header is needed to call these functions. The delegate is the
 * one LiteRT's external-delegate plugin loader expects
 * (ai_edge_litert.interpreter.load_delegate), so a TfLiteDelegate* returned
 * here can be handed to any interpreter of the LiteRT release the library
 * pins (clicktrain_tflite_litert_abi_version).
 */
#ifndef CLICKTRAIN_TFLITE_H_
#define CLICKTRAIN_TFLITE_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CLICKTRAIN_TFLITE_API __attribute__((visibility("default")))

struct TfLiteDelegate;

/* LiteRT's external-delegate plugin entry point. The delegate takes no
 * options: with num_options != 0 it calls report_error (when not NULL) with
 * a message naming the first key and returns NULL. Returns NULL on
 * allocation failure too. Release with tflite_plugin_destroy_delegate, after
 * every interpreter using it. */
CLICKTRAIN_TFLITE_API struct TfLiteDelegate* tflite_plugin_create_delegate(
    char** option_keys, char** option_values, size_t num_options,
    void (*report_error)(const char*));

/* Frees a delegate from tflite_plugin_create_delegate; NULL is ignored. */
CLICKTRAIN_TFLITE_API void tflite_plugin_destroy_delegate(
    struct TfLiteDelegate* delegate);

/* Custom nodes the delegate has claimed so far, over all interpreters it was
 * added to; -1 for NULL. */
CLICKTRAIN_TFLITE_API int clicktrain_tflite_claimed_nodes(
    const struct TfLiteDelegate* delegate);

/* Pattern-conv nodes that, because the delegate's memory budget (the
 * graph's declared tensor bytes + 64 MiB, src/memory_budget.h) had too
 * little left, run on one thread or on their reference kernel instead of
 * their fast path, over all interpreters; -1 for NULL. */
CLICKTRAIN_TFLITE_API int clicktrain_tflite_memory_fallbacks(
    const struct TfLiteDelegate* delegate);

/* The ai-edge-litert release (major.minor, e.g. "2.3") whose C structs the
 * library was built against. Static storage. */
CLICKTRAIN_TFLITE_API const char* clicktrain_tflite_litert_abi_version(void);

/* The compact-weights format_version the library reads
 * (include/clicktrain/pattern_conv.h). */
CLICKTRAIN_TFLITE_API int clicktrain_tflite_format_version(void);

/* Name of the float pattern-conv kernel set chosen for this CPU ("avx512",
 * "avx2", "neon", "scalar"; TF_CLICKTRAIN_KERNELS overrides it at load).
 * Static storage. */
CLICKTRAIN_TFLITE_API const char* clicktrain_tflite_kernel_name(void);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_TFLITE_H_ */
