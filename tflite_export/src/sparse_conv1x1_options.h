/* Custom options of the sparse 1x1 conv op (a flexbuffer map, see
 * include/clicktrain/sparse_conv1x1.h), verified as untrusted input. */
#ifndef CLICKTRAIN_SPARSE_CONV1X1_OPTIONS_H_
#define CLICKTRAIN_SPARSE_CONV1X1_OPTIONS_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest options accepted from a file, in bytes (the exporter writes about
 * 120), and largest stride. */
#define CLICKTRAIN_SPCONV1X1_MAX_OPTIONS_BYTES 4096
#define CLICKTRAIN_SPCONV1X1_MAX_STRIDE 64

typedef struct clicktrain_spconv1x1_options {
  int input_channels;
  int output_channels;
  int stride_h;
  int stride_w;
  /* The fused activation as a clamp: NONE is [-inf, inf], RELU6 [0, 6]. */
  float output_min;
  float output_max;
} clicktrain_spconv1x1_options;

/* Verifies and parses custom options `data[0, size)`. Returns 0, or -1 with
 * a message naming the field in `error` on any malformed, missing,
 * out-of-range or unsupported-version field. */
int clicktrain_parse_spconv1x1_options(const void* data, size_t size,
                                       clicktrain_spconv1x1_options* options,
                                       char* error, size_t error_size);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_SPARSE_CONV1X1_OPTIONS_H_ */
