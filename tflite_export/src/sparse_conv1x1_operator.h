/* Runs a sparse 1x1 conv with the micro-kernels of
 * include/clicktrain/sparse_conv1x1.h: NHWC input -> planar pixel tiles ->
 * SpMM -> NHWC output, spread over a thread pool; or, for layers with few
 * pixels per run, a GEMV per pixel over a dense copy of the weights.
 *
 * Set up once per geometry (at Prepare): the filter program and per-thread
 * scratch, or the dense weights. Pure C with no TFLite types, shared by the
 * delegate, the unit test and the fuzz target.
 */
#ifndef CLICKTRAIN_SPARSE_CONV1X1_OPERATOR_H_
#define CLICKTRAIN_SPARSE_CONV1X1_OPERATOR_H_

#include <stddef.h>
#include <stdint.h>

#include "clicktrain/sparse_conv1x1.h"
#include "thread_pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct clicktrain_spconv1x1_geometry {
  int batch;
  int input_height;
  int input_width;
  int input_channels;
  int output_height;
  int output_width;
  int output_channels;
  int stride_h;
  int stride_w;
  /* Fused activation as a clamp: NONE is [-inf, inf], RELU6 is [0, 6]. */
  float output_min;
  float output_max;
} clicktrain_spconv1x1_geometry;

/* Most threads one operator runs on (scratch slots are claimed by bit). */
#define CLICKTRAIN_SPCONV1X1_MAX_THREADS 64

/* One unit of the block mode: output channels [first_channel,
 * first_channel + groups * CLICKTRAIN_SPCONV1X1_BLOCK), `count` kept input
 * channels, their planar offsets, weights ([count][width]) and bias. */
typedef struct clicktrain_spconv1x1_unit {
  size_t first_channel;
  size_t groups;
  size_t count;
  const int32_t* offsets;
  const float* weights;
  const float* bias;
} clicktrain_spconv1x1_unit;

typedef struct clicktrain_spconv1x1_operator {
  clicktrain_spconv1x1_geometry geometry;
  const clicktrain_spconv1x1_ukernels* ukernels;
  size_t pixels;        /* batch * output_height * output_width */
  size_t pixel_tiles;
  /* Input channels are split into blocks whose planar tile fits in L1; a
   * filter's kept weights are stored block after block. */
  size_t channel_blocks;
  size_t block_channels;
  size_t max_chunk_filters;      /* partial sums a slot holds across blocks */
  /* Block mode (output channels in groups of CLICKTRAIN_SPCONV1X1_BLOCK
   * keeping the same input channels): `units` register-tile units, each one
   * group or two groups sharing their input channels. */
  int block_mode;
  size_t units;
  const struct clicktrain_spconv1x1_unit* unit;
  /* Few-pixel mode: the weights as a dense matrix in panels of
   * CLICKTRAIN_SPCONV1X1_PANEL output channels (zeros where pruned and past
   * output_channels), its bias padded to whole panels; no program and no
   * scratch. */
  int few_pixel_mode;
  size_t dense_panels;
  const float* dense_weights;
  const float* dense_bias;
  clicktrain_spconv1x1_word* program;
  size_t* filter_program_start;  /* [channel_blocks][output_channels] */
  float* scratch;                /* max_threads slots of slot_floats */
  size_t slot_floats;
  int max_threads;
  uint64_t slots_in_use;         /* bit s: slot s is taken (atomic) */
  void* memory;
  size_t memory_bytes;           /* all the operator holds, in `memory` */
} clicktrain_spconv1x1_operator;

/* Fills `geometry` for an NHWC input; output size follows TFLite's 1x1
 * CONV_2D. Returns 0, or -1 with a message in `error`. */
int clicktrain_spconv1x1_compute_geometry(
    int batch, int input_height, int input_width, int input_channels,
    int output_channels, int stride_h, int stride_w, float output_min,
    float output_max, clicktrain_spconv1x1_geometry* geometry, char* error,
    size_t error_size);

/* Bytes the few-pixel mode's dense weights take for `geometry` (what
 * setup then allocates, in all) when it has at most `few_pixel_limit`
 * pixels per run; 0 when it has more or the limit is 0 (the mode is not
 * taken), SIZE_MAX when the size overflows or the channel counts are out
 * of range (setup then fails). Lets a caller check its memory budget
 * before setup allocates. */
size_t clicktrain_spconv1x1_few_pixel_bytes(
    const clicktrain_spconv1x1_geometry* geometry, size_t few_pixel_limit);

/* Prepares `op` for `geometry` and validated `weights` (which must agree on
 * channel counts and outlive nothing: the operator copies what it needs).
 * Layers with at most `few_pixel_limit` pixels per run take the few-pixel
 * mode (the delegate passes ukernels->few_pixels; 0 never takes it). Later runs
 * may use pools of at most `max_threads` threads (others run serially).
 * Returns 0, or -1 on allocation failure or a layer too large for 32-bit
 * program offsets. */
int clicktrain_spconv1x1_operator_setup(
    clicktrain_spconv1x1_operator* op,
    const clicktrain_spconv1x1_geometry* geometry,
    const clicktrain_spconv1x1_weights* weights,
    const clicktrain_spconv1x1_ukernels* ukernels, int max_threads,
    size_t few_pixel_limit);

/* output = sparse_conv1x1(input), NHWC, spread over `pool` (may be NULL). */
void clicktrain_spconv1x1_operator_run(clicktrain_spconv1x1_operator* op,
                                       const float* input, float* output,
                                       clicktrain_thread_pool* pool);

void clicktrain_spconv1x1_operator_release(clicktrain_spconv1x1_operator* op);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_SPARSE_CONV1X1_OPERATOR_H_ */
