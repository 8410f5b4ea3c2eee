/* The int8 pattern depthwise conv's operator: checks a built int8 layer
 * (clicktrain_s8_layer, pattern_conv_s8_operator.h) for the depthwise
 * structure, packs it into channel groups for the row micro-kernels
 * (include/clicktrain/pattern_dwconv_s8.h) and runs them.
 *
 * A run splits the output rows of each image into one band per thread;
 * per output row, the band's workspace receives the 9 tap addresses of
 * every output pixel (a padded tap points at a row of input_zero_point
 * bytes), then the row kernel computes the row, group by group of
 * channels. Memory: the packed groups (1088 bytes per 16 channels), the
 * padding row (one pixel) and per thread 9 addresses per output column. */
#ifndef CLICKTRAIN_PATTERN_DWCONV_S8_OPERATOR_H_
#define CLICKTRAIN_PATTERN_DWCONV_S8_OPERATOR_H_

#include <stddef.h>
#include <stdint.h>

#include "clicktrain/pattern_dwconv_s8.h"
#include "pattern_conv_s8_operator.h"
#include "thread_pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Checks that a layer built by clicktrain_s8_layer_build is depthwise:
 * as many input as output channels, at most one kernel per filter, on the
 * filter's own channel. Returns 0, or -1 with a message. */
int clicktrain_s8_dw_layer_check(const clicktrain_s8_layer* layer,
                                 char* error, size_t error_size);

/* Threads (hence workspaces) a run uses at most. */
#define CLICKTRAIN_S8_PATDWCONV_MAX_THREADS 64

typedef struct clicktrain_s8_patdwconv_operator {
  clicktrain_conv_geometry geometry;
  const clicktrain_s8_patdwconv_ukernels* ukernels;
  clicktrain_s8_patdwconv_group* groups;
  size_t group_count;
  clicktrain_s8_output_params output_params;
  int8_t* padding_row;           /* input_channels bytes of the zero point */
  size_t workspace_bytes;        /* 9 addresses per output column */
  const int8_t** workspaces[CLICKTRAIN_S8_PATDWCONV_MAX_THREADS];
  size_t allocated_workspaces;
  size_t scratch_bytes;          /* groups, padding row and workspaces */
  int max_threads;
} clicktrain_s8_patdwconv_operator;

/* Bytes of the groups, padding row and one workspace for this geometry
 * (what setup allocates), and of each further thread's workspace; SIZE_MAX
 * on overflow. */
size_t clicktrain_s8_patdwconv_setup_bytes(
    const clicktrain_conv_geometry* geometry);
size_t clicktrain_s8_patdwconv_workspace_bytes(
    const clicktrain_conv_geometry* geometry);

/* Prepares `op` for `geometry` (from clicktrain_compute_geometry) and a
 * checked, requantized depthwise layer (which `op` does not keep). A run on
 * more threads than one adds a workspace per thread, up to max_threads (or
 * runs on one thread if that fails). Returns 0, or -1 when out of memory. */
int clicktrain_s8_patdwconv_operator_setup(
    clicktrain_s8_patdwconv_operator* op,
    const clicktrain_conv_geometry* geometry, const clicktrain_s8_layer* layer,
    const clicktrain_s8_patdwconv_ukernels* ukernels, int max_threads);

/* output = depthwise_conv(input), NHWC int8, spread over `pool` (may be
 * NULL). */
void clicktrain_s8_patdwconv_operator_run(clicktrain_s8_patdwconv_operator* op,
                                          const int8_t* input, int8_t* output,
                                          clicktrain_thread_pool* pool);

void clicktrain_s8_patdwconv_operator_release(
    clicktrain_s8_patdwconv_operator* op);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_PATTERN_DWCONV_S8_OPERATOR_H_ */
