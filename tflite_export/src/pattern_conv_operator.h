/* Runs a pattern conv with the fast kernels: NHWC input -> zero-padded,
 * vector-aligned channel planes -> planar micro-kernel tiles -> NHWC output,
 * band of output rows by band, so each band's planes stay in the core's L2
 * cache between being written and being read.
 *
 * Set up once per geometry (at Prepare): the filter program with every
 * offset resolved, and the band buffers whose padding zeros are written
 * once. Pure C with no TFLite types, shared by the delegate, the unit test
 * and the fuzz target.
 *
 * Band buffer layout: per input channel, for each row phase in use and each
 * kernel column kx, a [band_buffer_rows][columns] sub-plane (and, when the
 * kernels' vectors are wider than 8 floats and columns is not a multiple of
 * them, its twin shifted by columns % vector floats, read by taps whose row
 * offset is not a whole number of vectors; layers of grouped filters have
 * 8-float rows and no twins; a strided layer's kernel column whose pixels
 * are another's shifted by whole columns, within the padding columns, reads
 * that one's sub-plane shifted and has none of its own); for the band
 * starting at output row y0,
 *   sub[phase][kx][r][x] = input((y0 + r) * stride_h + phase - padding_top,
 *                                x * stride_w + kx * dilation_w - padding_left)
 * (zero outside the input), with columns = output_width rounded up to 8.
 * Output pixel (y0 + j, x) is pixel j * columns + x of the band, and kernel
 * tap (ky, kx) reads sub[(ky * dilation_h) % stride_h][kx] at row
 * j + (ky * dilation_h) / stride_h: a constant offset that is a multiple of
 * 8 floats, so no vector load splits a cache line. A strided layer packs
 * only the input pixels its outputs read.
 *
 * Threads: a task is one band; it packs the band into a buffer of its own
 * and computes it, so no thread waits for another between packing and
 * computing. On N threads the band count is a multiple of N with equal
 * bands. An image with fewer bands than threads (small maps: 7x7x512 is
 * one band) runs N tasks per band instead, each packing the band into its
 * own buffer and computing 1/N of the filter blocks.
 *
 * The fast path is not taken (the reference kernels run, with no scratch
 * memory) when the layer holds a non-finite weight (see pattern_conv.h) or
 * when one band buffer would need more than 4x the floats of the layer's
 * input and output images plus CLICKTRAIN_PATCONV_FIXED_SCRATCH_FLOATS, so a
 * file declaring a huge dilation over a tiny input cannot make Prepare
 * allocate gigabytes.
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

#define CLICKTRAIN_PATCONV_FIXED_SCRATCH_FLOATS ((size_t)1 << 22)
/* Band buffers, hence tasks running at once. */
#define CLICKTRAIN_PATCONV_MAX_BUFFERS 64

typedef struct clicktrain_patconv_operator {
  clicktrain_conv_geometry geometry;
  const clicktrain_pattern_weights* weights;
  const clicktrain_kernel_set* kernels;
  int depthwise;
  /* 1 when the planar kernels run; 0 runs the reference kernels. */
  int fast;
  size_t row_phases;                  /* distinct row phases in use, 1..3 */
  int phase_value[3];                 /* (ky * dilation_h) % stride_h */
  /* Per kernel column: the column whose sub-plane it reads (itself, or an
   * earlier one of a strided layer, shifted by column_shift floats) and
   * that sub-plane's index among the sub_planes packed per row phase. */
  int column_source[3];
  size_t column_shift[3];
  size_t column_sub_plane[3];
  size_t sub_planes;
  size_t band_rows;                   /* output rows per band */
  size_t bands;
  size_t band_buffer_rows;            /* band_rows + kernel reach */
  size_t columns;                     /* of one sub-plane */
  size_t vector_floats;               /* the micro-kernel's vector length */
  size_t copies;                      /* 2: sub-planes have aligned twins */
  size_t twin_shift;                  /* floats a twin is shifted by */
  size_t sub_plane_stride;            /* floats per sub-plane, padded */
  size_t channel_stride;              /* floats per input channel */
  size_t pixel_tile, filter_block;
  size_t filter_blocks;
  clicktrain_patconv_word* program;
  size_t chunk_channels, chunks;      /* input channels per program chunk */
  size_t group_entries;               /* program entries for filter groups */
  size_t* chunk_program_start;        /* [filter_blocks][chunks] */
  size_t buffer_floats;               /* one band buffer, with slack */
  float* buffers[CLICKTRAIN_PATCONV_MAX_BUFFERS];  /* one per running task */
  size_t allocated_buffers;
  uint64_t buffers_in_use;            /* bit per buffer, atomic */
  /* Per buffer, the band last packed into it (plus 1; 0: none) and that
   * run's rows per band: packing the same band again leaves its rows
   * outside the input zero, as they are. */
  size_t packed_band[CLICKTRAIN_PATCONV_MAX_BUFFERS];
  size_t packed_band_rows[CLICKTRAIN_PATCONV_MAX_BUFFERS];
  size_t scratch_bytes;               /* program + allocated buffers */
  size_t tile_stride;
  int max_threads;
} clicktrain_patconv_operator;

/* Prepares `op` for `geometry` (which must come from
 * clicktrain_compute_geometry) and validated `weights`, which must outlive
 * `op`. max_threads bounds the threads any later run may use. Allocates the
 * program and one band buffer; the first run on more threads adds a buffer
 * per thread (and runs on fewer threads if that allocation fails). Returns
 * 0, or -1 on allocation failure. */
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

/* Band buffer `slot` was written by someone else since the operator's last
 * run (a buffer shared between operators): its next packing zeroes it as
 * for a new band. */
void clicktrain_patconv_operator_forget_buffer(clicktrain_patconv_operator* op,
                                               size_t slot);

void clicktrain_patconv_operator_release(clicktrain_patconv_operator* op);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_PATTERN_CONV_OPERATOR_H_ */
