/* Validation of a layer's compact weight tensors (format in
 * include/clicktrain/pattern_conv.h) into kernel-ready memory.
 *
 * Pure C with no TFLite types, so the same code serves the delegate, the unit
 * test and a fuzz target.
 */
#ifndef CLICKTRAIN_COMPACT_WEIGHTS_H_
#define CLICKTRAIN_COMPACT_WEIGHTS_H_

#include <stddef.h>

#include "clicktrain/pattern_conv.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Raw views of the compact tensors exactly as found in the model file. The
 * pointers need not be aligned; counts are element counts of each tensor.
 * format_version (1 or 2) says which of the index fields are used:
 * version 1 pattern_run_lengths and kernel_input_channels, version 2
 * kernel_index. */
typedef struct clicktrain_compact_tensors {
  const void* pattern_masks;          /* uint16 */
  size_t pattern_masks_count;
  const void* pattern_run_lengths;    /* uint8 or uint16, 2-D */
  size_t run_lengths_rows;
  size_t run_lengths_columns;
  size_t run_lengths_element_size;    /* 1 or 2 */
  const void* kernel_input_channels;  /* uint8 or uint16 */
  size_t kernel_input_channels_count;
  size_t kernel_input_channels_element_size;  /* 1 or 2 */
  const void* values;                 /* float32 */
  size_t values_count;
  const void* bias;                   /* float32, NULL when absent */
  size_t bias_count;
  int format_version;
  const void* kernel_index;           /* uint8 */
  size_t kernel_index_count;
} clicktrain_compact_tensors;

/* Owns a validated copy of the weights; `weights` points into it. */
typedef struct clicktrain_weight_storage {
  clicktrain_pattern_weights weights;
  void* memory;
} clicktrain_weight_storage;

/* Validates `tensors` against the layer's declared channel counts and, when
 * valid, copies them into aligned memory owned by `storage`.
 *
 * Returns 0 on success. On failure returns -1, leaves `storage` empty and
 * writes a message naming the offending field into `error`.
 */
int clicktrain_build_pattern_weights(const clicktrain_compact_tensors* tensors,
                                     size_t input_channels,
                                     size_t output_channels, int depthwise,
                                     clicktrain_weight_storage* storage,
                                     char* error, size_t error_size);

/* Upper bound of the bytes clicktrain_build_pattern_weights allocates for
 * `tensors` (it fails on invalid ones), computed from their format version
 * and element counts alone, before anything is read or built, so a caller
 * can check its memory budget first; SIZE_MAX on overflow. Version 2 bounds
 * the kernel count by the value count (every kernel keeps a weight). */
size_t clicktrain_pattern_weights_bytes(const clicktrain_compact_tensors* tensors,
                                        size_t output_channels);

void clicktrain_free_pattern_weights(clicktrain_weight_storage* storage);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_COMPACT_WEIGHTS_H_ */
