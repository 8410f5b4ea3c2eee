/* Custom options of the pattern-conv ops (a flexbuffer map, see
 * include/clicktrain/pattern_conv.h) and the convolution geometry they imply.
 */
#ifndef CLICKTRAIN_OP_OPTIONS_H_
#define CLICKTRAIN_OP_OPTIONS_H_

#include <stddef.h>

#include "clicktrain/pattern_conv.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum clicktrain_padding {
  CLICKTRAIN_PADDING_SAME = 0,
  CLICKTRAIN_PADDING_VALID = 1,
} clicktrain_padding;

/* Values match TFLite's ActivationFunctionType. */
typedef enum clicktrain_activation {
  CLICKTRAIN_ACTIVATION_NONE = 0,
  CLICKTRAIN_ACTIVATION_RELU = 1,
  CLICKTRAIN_ACTIVATION_RELU_N1_TO_1 = 2,
  CLICKTRAIN_ACTIVATION_RELU6 = 3,
} clicktrain_activation;

typedef struct clicktrain_op_options {
  int format_version;
  int input_channels;
  int output_channels;
  int stride_h;
  int stride_w;
  int dilation_h;
  int dilation_w;
  clicktrain_padding padding;
  clicktrain_activation activation;
} clicktrain_op_options;

/* Largest stride and dilation accepted from a file. */
#define CLICKTRAIN_MAX_STRIDE 64
#define CLICKTRAIN_MAX_DILATION 64

/* Largest custom options accepted from a file, in bytes. The exporter's
 * options are a flexbuffer map of a few integers and two short strings,
 * about 160 bytes; the bound keeps the cost of verifying hostile options
 * (linear in their size with the reuse tracker, but key scans can still
 * overlap) far below a millisecond. */
#define CLICKTRAIN_MAX_OPTIONS_BYTES 4096

/* Verifies and parses custom options `data[0, size)`, at most
 * CLICKTRAIN_MAX_OPTIONS_BYTES bytes.
 *
 * Returns 0 on success, -1 with a message in `error` on any malformed,
 * missing, out-of-range or unsupported-version field.
 */
int clicktrain_parse_op_options(const void* data, size_t size,
                                clicktrain_op_options* options, char* error,
                                size_t error_size);

/* Computes the output size and padding for an NHWC input of the given size,
 * as TFLite's CONV_2D does. Returns 0, or -1 with a message in `error`. */
int clicktrain_compute_geometry(const clicktrain_op_options* options,
                                int batch, int input_height, int input_width,
                                int input_channels,
                                clicktrain_conv_geometry* geometry,
                                char* error, size_t error_size);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_OP_OPTIONS_H_ */
