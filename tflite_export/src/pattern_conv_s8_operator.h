/* The int8 pattern conv's layer state: validated weights (structure shared
 * with the float op's compact format) and the requantization TFLite derives
 * from the tensors' scales and zero points; and the operator that runs it
 * with the tiled micro-kernels (include/clicktrain/pattern_conv_s8.h).
 *
 * Operator, per band of output rows (a task of the thread pool, with a
 * workspace of its own):
 * 1. planes: the band's input as u8 channel planes (value + 128; padding
 *    holds input_zero_point + 128, so a padded tap adds nothing, as in
 *    TFLite). A strided layer keeps one plane per (row phase, column
 *    phase) in use, so that, with `columns` = output_width + the kernel's
 *    column reach, every tap of output pixel (y, x) reads byte
 *    y * columns + x of its plane plus a constant: the band's pixels form
 *    one contiguous "virtual" row of rows * columns pixels (columns beyond
 *    output_width are computed and dropped).
 * 2. per tile of 64 virtual pixels: pack the slots in use (input channel,
 *    pattern, group of 4 taps; ordered by channel then pattern, PatDNN's
 *    order) chunk by chunk (64 KB of packed slots), run every filter's
 *    program for the chunk (partial sums kept per filter between chunks),
 *    requantize after the last, and transpose the [filter][pixel] tile
 *    into the NHWC output.
 * The fast path is not taken (the scalar reference runs, with no scratch)
 * when a workspace would exceed 4x the input and output images plus
 * CLICKTRAIN_S8_PATCONV_FIXED_SCRATCH_BYTES, so no file can make Prepare
 * allocate without bound. */
#ifndef CLICKTRAIN_PATTERN_CONV_S8_OPERATOR_H_
#define CLICKTRAIN_PATTERN_CONV_S8_OPERATOR_H_

#include <stddef.h>
#include <stdint.h>

#include "clicktrain/pattern_conv_s8.h"
#include "compact_weights.h"
#include "op_options.h"
#include "thread_pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Constant inputs of one layer as found in the file (untrusted). */
typedef struct clicktrain_s8_compact_tensors {
  clicktrain_compact_tensors structure;  /* values/bias fields unused */
  const void* values;                    /* int8 */
  size_t values_count;
  const void* bias;                      /* int32, NULL when absent */
  size_t bias_count;
  const void* filter_scales;             /* float32 */
  size_t filter_scales_count;
} clicktrain_s8_compact_tensors;

typedef struct clicktrain_s8_layer {
  clicktrain_weight_storage structure;
  int8_t* values;
  int32_t* bias;
  float* filter_scales;
  int32_t* multiplier;
  int32_t* shift;
  clicktrain_s8_requantization requantization;
} clicktrain_s8_layer;

/* Validates `tensors` for a layer of the given channel counts (`depthwise`:
 * the depthwise op's structure) and expands them into `layer`, values in
 * the structure's kernel order. Returns 0, or -1 with a message naming the
 * field. */
int clicktrain_s8_layer_build(const clicktrain_s8_compact_tensors* tensors,
                              size_t input_channels, size_t output_channels,
                              int depthwise, clicktrain_s8_layer* layer,
                              char* error, size_t error_size);

/* Checks the input/output quantization and fills `layer->requantization`
 * as TFLite's PopulateConvolutionQuantizationParams and
 * CalculateActivationRangeQuantized do. Returns 0, or -1 with a message. */
int clicktrain_s8_layer_requantize(clicktrain_s8_layer* layer,
                                   float input_scale, int32_t input_zero_point,
                                   float output_scale,
                                   int32_t output_zero_point,
                                   clicktrain_activation activation,
                                   char* error, size_t error_size);

void clicktrain_s8_layer_release(clicktrain_s8_layer* layer);

#define CLICKTRAIN_S8_PATCONV_FIXED_SCRATCH_BYTES ((size_t)16 << 20)
/* Workspaces, hence tasks running at once. */
#define CLICKTRAIN_S8_PATCONV_MAX_WORKSPACES 64

typedef struct clicktrain_s8_patconv_operator {
  clicktrain_conv_geometry geometry;
  const clicktrain_s8_layer* layer;
  const clicktrain_s8_patconv_ukernels* ukernels;
  int fast;                      /* 0: the scalar reference kernel runs */
  /* Band layout (see above). */
  size_t band_rows;              /* output rows per band */
  size_t columns;                /* virtual pixels per output row */
  size_t phase_rows;             /* band_rows + the kernel's row reach */
  size_t row_phases, column_phases;
  int row_phase_index[64];       /* phase value -> index, -1 when unused */
  int column_phase_index[64];
  size_t phase_bytes;            /* phase_rows * columns */
  size_t channel_bytes;          /* all phases of a channel, with slack */
  size_t planes_bytes;
  uint8_t padding_value;         /* input_zero_point + 128 */
  /* Weights in the micro-kernels' form. */
  size_t slots;
  uint32_t* tap_offsets;         /* [slots][4], into the planes */
  size_t chunk_slots, chunks;    /* slots packed and computed at a time */
  uint32_t* program;             /* chunk by chunk, filter by filter */
  size_t* chunk_program_start;   /* [chunks], into program */
  clicktrain_s8_filter_requantization* requantization;
  clicktrain_s8_output_params output_params;
  /* Workspaces: planes, packed slots, output tile [filter][pixel] and
   * [pixel][filter], the input pixels of a run of plane pixels and the
   * padding pixel (input_zero_point in every channel). */
  size_t packed_offset, accumulators_offset, tile_offset, pixels_offset;
  size_t sources_offset, padding_pixel_offset;
  size_t workspace_bytes;
  void* workspaces[CLICKTRAIN_S8_PATCONV_MAX_WORKSPACES];
  size_t allocated_workspaces;
  uint64_t workspaces_in_use;    /* bit per workspace, atomic */
  size_t scratch_bytes;          /* program, tables and workspaces */
  int max_threads;
} clicktrain_s8_patconv_operator;

/* Prepares `op` for `geometry` (from clicktrain_compute_geometry) and a
 * layer already requantized (clicktrain_s8_layer_requantize), which must
 * outlive `op`. max_threads bounds the threads of any later run. Allocates
 * the program and one workspace; a run on more threads adds one per thread
 * (or runs on fewer threads if that fails). Returns 0, or -1 when out of
 * memory. */
int clicktrain_s8_patconv_operator_setup(
    clicktrain_s8_patconv_operator* op,
    const clicktrain_conv_geometry* geometry, const clicktrain_s8_layer* layer,
    const clicktrain_s8_patconv_ukernels* ukernels, int max_threads);

/* output = conv(input), NHWC int8, spread over `pool` (may be NULL). */
void clicktrain_s8_patconv_operator_run(clicktrain_s8_patconv_operator* op,
                                        const int8_t* input, int8_t* output,
                                        clicktrain_thread_pool* pool);

void clicktrain_s8_patconv_operator_release(
    clicktrain_s8_patconv_operator* op);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_PATTERN_CONV_S8_OPERATOR_H_ */
