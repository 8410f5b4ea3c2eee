/* Runs a pattern conv with the fast kernels: NHWC input -> zero-padded
 * channel planes -> planar micro-kernel tiles -> NHWC output.
 *
 * Set up once per geometry (at Prepare): the filter program with every
 * offset resolved, and scratch memory whose padding zeros are written once.
 * Pure C with no TFLite types, shared by the delegate, the unit test and the
 * fuzz target.
 */
#ifndef CLICKTRAIN_PATTERN_CONV_OPERATOR_H_
#define CLICKTRAIN_PATTERN_CONV_OPERATOR_H_

#include <stddef.h>
#include <stdint.h>

#include "clicktrain/pattern_conv.h"
#include "thread_pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct clicktrain_patconv_operator {
  clicktrain_conv_geometry geometry;
  const clicktrain_pattern_weights* weights;
  const clicktrain_kernel_set* kernels;
  int depthwise;
  /* Fast path only (kernels->planar != NULL and the layer fits int32
   * offsets); otherwise the reference kernel runs. */
  int fast;
  size_t phase_rows, phase_columns;   /* of one phase sub-plane */
  size_t phases_h, phases_w;          /* = strides */
  size_t plane_stride;                /* floats per input channel */
  size_t output_pixels;               /* output_height * phase_columns */
  size_t pixel_tile, filter_block;
  size_t pixel_tiles, filter_blocks;
  clicktrain_patconv_word* program;
  size_t* filter_program_start;       /* [output_channels + 1] */
  float* planes;                      /* [input_channels][plane_stride] + slack */
  float* tiles;                       /* per thread [filter_block][tile_stride] */
  size_t tile_stride;
  int max_threads;
} clicktrain_patconv_operator;

/* Prepares `op` for `geometry` (which must come from
 * clicktrain_compute_geometry) and validated `weights`, which must outlive
 * `op`. max_threads bounds the threads any later run may use. Returns 0, or
 * -1 on allocation failure. */
int clicktrain_patconv_operator_setup(clicktrain_patconv_operator* op,
                                      const clicktrain_conv_geometry* geometry,
                                      const clicktrain_pattern_weights* weights,
                                      int depthwise,
                                      const clicktrain_kernel_set* kernels,
                                      int max_threads);

/* output = pattern_conv(input), NHWC, spread over `pool` (may be NULL). */
void clicktrain_patconv_operator_run(clicktrain_patconv_operator* op,
                                     const float* input, float* output,
                                     clicktrain_thread_pool* pool);

void clicktrain_patconv_operator_release(clicktrain_patconv_operator* op);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_PATTERN_CONV_OPERATOR_H_ */
