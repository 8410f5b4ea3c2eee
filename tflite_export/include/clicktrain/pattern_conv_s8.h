/* ClickTrain int8 pattern-sparse 3x3 convolution: compact int8 weight format
 * and the compute-kernel interface.
 *
 * Compact format, version 2 (custom op "ClickTrainPatternConv2DInt8")
 * -------------------------------------------------------------------------
 * The float op's layout (include/clicktrain/pattern_conv.h) with int8 values,
 * an int32 bias and per-output-channel filter scales:
 *   0 input          int8 [batch, height, width, input_channels],
 *                    per-tensor scale and zero point
 *   1 pattern_masks  uint16 [num_patterns]
 *   2 kernel_index   uint8 [index_bytes]
 *   3 values         int8 [num_values], symmetric (zero point 0), in pair
 *                    order
 *   4 bias           int32 [output_channels] (scale input_scale *
 *                    filter_scales[o]), or absent (-1)
 *   5 filter_scales  float32 [output_channels], finite and > 0
 * Version 1 (read, no longer written) has the float op's version 1 inputs
 * 1-4 (pattern_masks, pattern_run_lengths, kernel_input_channels, values)
 * with int8 values, then bias and filter_scales as inputs 5 and 6.
 * Output 0: int8 [batch, output_height, output_width, output_channels], with
 * a per-tensor scale and zero point.
 * Custom options: the float op's flexbuffer map (same keys and limits).
 *
 * Arithmetic is TFLite's int8 reference CONV_2D (ConvPerChannel): int32 sums
 * of value * (input - input_zero_point) over in-bounds taps (a padded tap
 * contributes nothing), plus bias, then MultiplyByQuantizedMultiplier with
 * QuantizeMultiplier(input_scale * filter_scale[o] / output_scale), plus the
 * output zero point, clamped to the fused activation's quantized range.
 */
#ifndef CLICKTRAIN_PATTERN_CONV_S8_H_
#define CLICKTRAIN_PATTERN_CONV_S8_H_

#include <stddef.h>
#include <stdint.h>

#include "clicktrain/pattern_conv.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CLICKTRAIN_PATTERN_CONV_S8_OP_NAME "ClickTrainPatternConv2DInt8"

/* Requantization of one layer, computed at Prepare from validated scales. */
typedef struct clicktrain_s8_requantization {
  int32_t input_zero_point;
  int32_t output_zero_point;
  int32_t output_min;               /* fused activation clamp, quantized */
  int32_t output_max;
  const int32_t* bias;              /* [output_channels], never NULL */
  const int32_t* multiplier;        /* [output_channels] */
  const int32_t* shift;             /* [output_channels], in [-31, 30] */
} clicktrain_s8_requantization;

/* A compute kernel. `weights` carries the validated layer structure (its
 * float `values` and `bias` are unused); `values` holds its int8 weights in
 * the same order. Geometry output_min/max are unused (see requantization). */
typedef void (*clicktrain_s8_patconv_fn)(
    const clicktrain_conv_geometry* geometry,
    const clicktrain_pattern_weights* weights, const int8_t* values,
    const clicktrain_s8_requantization* requantization, const int8_t* input,
    int8_t* output);

/* Scalar reference kernel, the ground truth for every faster variant. */
void clicktrain_s8_patconv_ukernel__scalar(
    const clicktrain_conv_geometry* geometry,
    const clicktrain_pattern_weights* weights, const int8_t* values,
    const clicktrain_s8_requantization* requantization, const int8_t* input,
    int8_t* output);

/* ------------------------------------------------------------------------
 * Tiled micro-kernels (src/s8-patconv/, driven by pattern_conv_s8_operator.c).
 *
 * The driver lays the input out as u8 channel planes (each value + 128, the
 * padding holding input_zero_point + 128) and computes output pixels in
 * tiles of CLICKTRAIN_S8_PATCONV_TILE. For a tile, `pack` writes one
 * "slot" per (input channel, pattern, group of up to 4 of the pattern's
 * taps) in use: per pixel the 4 tap values as 4 consecutive bytes
 * (packed[slot][pixel][tap]), the layout a u8 x s8 4-way dot product
 * (x86 VPDPBUSD, arm64 SDOT) consumes. `compute` then runs, per filter, its
 * program (a count, then per kernel tap group a byte offset of the slot in
 * `packed` and its 4 int8 weights as one little-endian word, 0 for missing
 * taps), accumulating int32 sums of u8 x s8 products; the +128 of every tap
 * is folded into the filter's bias. It requantizes exactly as TFLite does
 * and writes int8 output[filter][pixel]. A variant's pack and compute go
 * together: its pack may store a tile's pixels in an order of its own as
 * long as its compute writes them in pixel order. `transpose` moves a block
 * of bytes from rows to columns (NHWC <-> planar). */
#define CLICKTRAIN_S8_PATCONV_TILE 64

/* One filter's requantization in the micro-kernels' form. */
typedef struct clicktrain_s8_filter_requantization {
  /* bias - (input_zero_point + 128) * (sum of the filter's weights),
   * wrapped to 32 bits as TFLite's int32 accumulator wraps. */
  int32_t bias;
  int32_t multiplier;        /* TFLite's QuantizeMultiplier, >= 0 */
  int32_t shift;             /* TFLite's, in [-31, 30] */
  uint32_t left_shift;       /* max(shift, 0) */
  /* MultiplyByQuantizedMultiplier's two roundings as one: with
   * product = (sum << left_shift) * multiplier (64-bit), the result is
   * (product + rounding - (product < 0 ? negative_rounding : 0))
   * >> right_shift (see pattern_conv_s8_operator.c for the derivation). */
  uint32_t right_shift;      /* 31 + max(-shift, 0) */
  uint32_t reserved;
  int64_t rounding;          /* 2^30 + (shift < 0 ? 2^(30 - shift) : 0) */
  int64_t negative_rounding; /* shift < 0 ? 2^31 : 0 */
} clicktrain_s8_filter_requantization;

typedef struct clicktrain_s8_output_params {
  int32_t zero_point;
  int32_t min;   /* fused activation clamp, quantized */
  int32_t max;
} clicktrain_s8_output_params;

/* packed[s] (slot_bytes, 64-byte aligned) = the 4 byte streams
 * planes + tap_offsets[4 * s + j] (j = 0..3), TILE bytes each, interleaved. */
typedef void (*clicktrain_s8_patconv_pack_fn)(size_t slots,
                                              const uint32_t* tap_offsets,
                                              const uint8_t* planes,
                                              uint8_t* packed);
/* One chunk of slots for `filters` filters. The sums start at zero when
 * `first`, else from accumulators[f] (accumulator_bytes per filter, the
 * variant's own layout); when `last` they are requantized into
 * output[f * CLICKTRAIN_S8_PATCONV_TILE + pixel], else stored back into
 * accumulators[f] for the next chunk. */
typedef void (*clicktrain_s8_patconv_compute_fn)(
    size_t filters, const uint32_t* program, const uint8_t* packed,
    int32_t* accumulators, int first, int last,
    const clicktrain_s8_filter_requantization* requantization,
    const clicktrain_s8_output_params* params, int8_t* output);
/* destination[c * destination_stride + r] = source[r * source_stride + c]
 * ^ flip, for r < rows, c < columns. */
typedef void (*clicktrain_x8_transpose_fn)(size_t rows, size_t columns,
                                           const uint8_t* source,
                                           size_t source_stride,
                                           uint8_t* destination,
                                           size_t destination_stride,
                                           uint8_t flip);

/* destination[c * destination_stride + r] = sources[r][c] ^ flip, for
 * r < rows, c < columns: a transpose whose rows are gathered from anywhere
 * (the driver's input planes, padding pixels included). */
typedef void (*clicktrain_x8_gather_transpose_fn)(
    size_t rows, size_t columns, const uint8_t* const* sources,
    uint8_t* destination, size_t destination_stride, uint8_t flip);

typedef struct clicktrain_s8_patconv_ukernels {
  const char* name;
  /* Bytes of one packed slot (a multiple of 64): 4 * TILE for u8 taps. */
  size_t slot_bytes;
  /* Bytes of one filter's partial sums between chunks (a multiple of 64). */
  size_t accumulator_bytes;
  clicktrain_s8_patconv_pack_fn pack;
  clicktrain_s8_patconv_compute_fn compute;
  clicktrain_x8_transpose_fn transpose;
  clicktrain_x8_gather_transpose_fn gather_transpose;
} clicktrain_s8_patconv_ukernels;

/* Portable C, on every CPU. */
void clicktrain_x8_transpose_ukernel__scalar(size_t rows, size_t columns,
                                             const uint8_t* source,
                                             size_t source_stride,
                                             uint8_t* destination,
                                             size_t destination_stride,
                                             uint8_t flip);
void clicktrain_x8_gather_transpose_ukernel__scalar(
    size_t rows, size_t columns, const uint8_t* const* sources,
    uint8_t* destination, size_t destination_stride, uint8_t flip);
extern const clicktrain_s8_patconv_ukernels
    clicktrain_s8_patconv_ukernels__scalar;
#if defined(__x86_64__) || defined(_M_X64)
/* AVX2: int16 taps and VPMADDWD. */
extern const clicktrain_s8_patconv_ukernels clicktrain_s8_patconv_ukernels__avx2;
/* AVX-512 F/BW/VL + VNNI (VPDPBUSD); its name is "avx512". */
extern const clicktrain_s8_patconv_ukernels
    clicktrain_s8_patconv_ukernels__avx512vnni;
#endif
#if defined(__aarch64__)
/* NEON: int16 taps and SMLAL, on every arm64 CPU. */
extern const clicktrain_s8_patconv_ukernels clicktrain_s8_patconv_ukernels__neon;
/* NEON with the dot-product extension (SDOT on s8 taps); "neondot". */
extern const clicktrain_s8_patconv_ukernels
    clicktrain_s8_patconv_ukernels__neondot;
#endif

/* The variants this CPU runs, slowest first; returns their count. */
size_t clicktrain_s8_patconv_available_ukernels(
    const clicktrain_s8_patconv_ukernels** sets, size_t capacity);

/* The fastest variant, chosen once per process; TF_CLICKTRAIN_KERNELS
 * (a variant name: scalar, avx2, avx512, neon, neondot) overrides it when this CPU runs it. */
const clicktrain_s8_patconv_ukernels* clicktrain_s8_patconv_select_ukernels(
    void);

/* TFLite's QuantizeMultiplier: `real` as multiplier * 2^(shift - 31). */
void clicktrain_quantize_multiplier(double real, int32_t* multiplier,
                                    int* shift);

/* TFLite's MultiplyByQuantizedMultiplier (double rounding). */
int32_t clicktrain_multiply_by_quantized_multiplier(int32_t x,
                                                    int32_t multiplier,
                                                    int shift);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_PATTERN_CONV_S8_H_ */
