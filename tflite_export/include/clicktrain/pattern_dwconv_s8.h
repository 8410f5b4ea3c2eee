/* ClickTrain int8 pattern-sparse 3x3 depthwise convolution (depth
 * multiplier 1): format and compute-kernel interface.
 *
 * Format, versions 2 and 1 (custom op "ClickTrainPatternDepthwiseConv2DInt8")
 * -------------------------------------------------------------------------
 * The int8 pattern conv's inputs and options
 * (include/clicktrain/pattern_conv_s8.h) with the float depthwise op's
 * structure (include/clicktrain/pattern_conv.h): filter o holds at most one
 * kernel, on input channel o, and input_channels == output_channels.
 *
 * Arithmetic is TFLite's int8 reference DEPTHWISE_CONV_2D
 * (reference_integer_ops::DepthwiseConvPerChannel): per channel, the int32
 * sum of value * (input - input_zero_point) over the kept, in-bounds taps
 * (a padded tap adds nothing), plus bias, then
 * MultiplyByQuantizedMultiplier with QuantizeMultiplier(input_scale *
 * filter_scales[c] / output_scale), plus the output zero point, clamped to
 * the fused activation's quantized range.
 */
#ifndef CLICKTRAIN_PATTERN_DWCONV_S8_H_
#define CLICKTRAIN_PATTERN_DWCONV_S8_H_

#include <stddef.h>
#include <stdint.h>

#include "clicktrain/pattern_conv_s8.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CLICKTRAIN_PATTERN_DEPTHWISE_CONV_S8_OP_NAME \
  "ClickTrainPatternDepthwiseConv2DInt8"

/* Scalar reference kernel (TFLite's loop over the kept taps), the ground
 * truth for every faster variant. */
void clicktrain_s8_patdwconv_ukernel__scalar(
    const clicktrain_conv_geometry* geometry,
    const clicktrain_pattern_weights* weights, const int8_t* values,
    const clicktrain_s8_requantization* requantization, const int8_t* input,
    int8_t* output);

/* ------------------------------------------------------------------------
 * Row micro-kernels (src/s8-patdwconv/, driven by
 * pattern_dwconv_s8_operator.c).
 *
 * Channels go in groups of CLICKTRAIN_S8_PATDWCONV_GROUP; a group's taps are
 * the union of its channels' patterns (a tap no channel of the group keeps
 * is never read), taken in pairs. The driver gives, per output pixel of a
 * row, the 9 tap addresses (indirection[pixel * 9 + position]): the input
 * pixel, or a row of input_zero_point bytes where the tap falls into the
 * padding; the input zero point times the channel's weight sum is folded
 * into the bias, so a padded tap adds nothing, as in TFLite.
 *
 * "Lane order" of a group's per-channel arrays, the order in which AVX2's
 * VPMADDWD over interleaved tap pairs leaves the sums: element j (< 16) is
 * channel 8 * ((j % 8) / 4) + 4 * (j / 8) + j % 4. */
#define CLICKTRAIN_S8_PATDWCONV_GROUP 16
#define CLICKTRAIN_S8_PATDWCONV_MAX_PAIRS 5

typedef struct clicktrain_s8_patdwconv_group {
  uint32_t pairs;  /* tap pairs in use, <= CLICKTRAIN_S8_PATDWCONV_MAX_PAIRS */
  /* Positions (0..8) of tap pair p: taps[2p], taps[2p + 1]; an odd union
   * repeats its last tap with weight 0. */
  uint8_t taps[2 * CLICKTRAIN_S8_PATDWCONV_MAX_PAIRS];
  uint8_t reserved[64 - 4 - 2 * CLICKTRAIN_S8_PATDWCONV_MAX_PAIRS];
  /* weights[p][e]: e < 16 is the low half (VPUNPCKLWD of the two taps'
   * int16 vectors), e >= 16 the high half; within a half, element k is tap
   * k % 2 of the pair for channel 8 * (k / 8) + 4 * half + (k % 8) / 2
   * of the group. */
  int16_t weights[CLICKTRAIN_S8_PATDWCONV_MAX_PAIRS][32];
  /* In lane order: bias - input_zero_point * (sum of the channel's
   * weights), wrapped to 32 bits; TFLite's multiplier and max(shift, 0). */
  int32_t bias[16];
  int32_t multiplier[16];
  int32_t left_shift[16];
  /* 64-bit, per half h: lane-order elements 8h + 0, 2, 4, 6 at [8h .. 8h+4),
   * 8h + 1, 3, 5, 7 at [8h+4 .. 8h+8). The requantization of
   * clicktrain_s8_filter_requantization: (product + rounding - (product < 0
   * ? negative_rounding : 0)) >> right_shift, arithmetic; sign_bit is
   * 2^(63 - right_shift), for the shift done as a logical one. */
  int64_t right_shift[16];
  int64_t rounding[16];
  int64_t negative_rounding[16];
  int64_t sign_bit[16];
} clicktrain_s8_patdwconv_group;

/* One output row, `pixels` pixels of `channels` channels (NHWC, the row's
 * first pixel at `output`), from the tap addresses of each pixel and the
 * ceil(channels / 16) packed groups. Reads only the `channels` bytes of
 * every tap address; writes only the row's bytes. */
typedef void (*clicktrain_s8_patdwconv_row_fn)(
    size_t pixels, size_t channels, const int8_t* const* indirection,
    const clicktrain_s8_patdwconv_group* groups,
    const clicktrain_s8_output_params* params, int8_t* output);

typedef struct clicktrain_s8_patdwconv_ukernels {
  const char* name;
  clicktrain_s8_patdwconv_row_fn row;
} clicktrain_s8_patdwconv_ukernels;

/* Portable C, on every CPU. */
extern const clicktrain_s8_patdwconv_ukernels
    clicktrain_s8_patdwconv_ukernels__scalar;
#if defined(__x86_64__) || defined(_M_X64)
/* AVX2: int16 taps, VPMADDWD over tap pairs, 16 channels per group. */
extern const clicktrain_s8_patdwconv_ukernels
    clicktrain_s8_patdwconv_ukernels__avx2;
/* AVX-512 F/BW/VL + VNNI: the pair interleaved by VPERMW, VPDPWSSD, 64-bit
 * requantization with VPSRAVQ; its name is "avx512". */
extern const clicktrain_s8_patdwconv_ukernels
    clicktrain_s8_patdwconv_ukernels__avx512vnni;
#endif
#if defined(__aarch64__)
/* NEON: int16 taps and SMLAL, SQRDMULH requantization; on every arm64 CPU. */
extern const clicktrain_s8_patdwconv_ukernels
    clicktrain_s8_patdwconv_ukernels__neon;
#endif

/* The variants this CPU runs, slowest first; returns their count. */
size_t clicktrain_s8_patdwconv_available_ukernels(
    const clicktrain_s8_patdwconv_ukernels** sets, size_t capacity);

/* The fastest variant, chosen once per process; TF_CLICKTRAIN_KERNELS
 * (scalar, avx2, avx512, neon) overrides it when this CPU runs it. */
const clicktrain_s8_patdwconv_ukernels*
clicktrain_s8_patdwconv_select_ukernels(void);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_PATTERN_DWCONV_S8_H_ */
