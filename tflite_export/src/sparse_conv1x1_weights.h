/* Validation of a sparse 1x1 conv's weight tensors (format in
 * include/clicktrain/sparse_conv1x1.h) into kernel-ready memory.
 *
 * Pure C with no TFLite types: the delegate, the unit test and the fuzz
 * target share it.
 */
#ifndef CLICKTRAIN_SPARSE_CONV1X1_WEIGHTS_H_
#define CLICKTRAIN_SPARSE_CONV1X1_WEIGHTS_H_

#include <stddef.h>

#include "clicktrain/sparse_conv1x1.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Raw views of the tensors exactly as found in the model file; pointers
 * need not be aligned. Shapes are the tensors' declared dimensions. */
typedef struct clicktrain_spconv1x1_tensors {
  const void* nonzero_mask;  /* uint8 [mask_rows, mask_columns] */
  size_t mask_rows;
  size_t mask_columns;
  const void* values;        /* float32 [values_count] */
  size_t values_count;
  const void* bias;          /* float32 [bias_count], NULL when absent */
  size_t bias_count;
} clicktrain_spconv1x1_tensors;

/* Owns a validated copy of the weights; `weights` points into it. */
typedef struct clicktrain_spconv1x1_weight_storage {
  clicktrain_spconv1x1_weights weights;
  void* memory;
} clicktrain_spconv1x1_weight_storage;

/* Validates `tensors` against the declared channel counts and, when valid,
 * decodes them into memory owned by `storage`.
 *
 * Returns 0 on success. On failure returns -1, leaves `storage` empty and
 * writes a message naming the offending tensor into `error`.
 */
int clicktrain_build_spconv1x1_weights(
    const clicktrain_spconv1x1_tensors* tensors, size_t input_channels,
    size_t output_channels, clicktrain_spconv1x1_weight_storage* storage,
    char* error, size_t error_size);

/* Bytes clicktrain_build_spconv1x1_weights allocates for valid tensors
 * holding `values_count` kept weights (it fails on any other count), so a
 * caller can check its memory budget before building; SIZE_MAX on
 * overflow. */
size_t clicktrain_spconv1x1_weights_bytes(size_t values_count,
                                          size_t output_channels);

void clicktrain_free_spconv1x1_weights(
    clicktrain_spconv1x1_weight_storage* storage);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_SPARSE_CONV1X1_WEIGHTS_H_ */
