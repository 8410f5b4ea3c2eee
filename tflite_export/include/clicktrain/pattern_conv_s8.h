/* ClickTrain int8 pattern-sparse 3x3 convolution: compact int8 weight format
 * and the compute-kernel interface.
 *
 * Compact format, version 1 (custom op "ClickTrainPatternConv2DInt8")
 * -------------------------------------------------------------------------
 * The float op's layout (include/clicktrain/pattern_conv.h) with int8 values,
 * an int32 bias and per-output-channel filter scales:
 *   0 input                 int8 [batch, height, width, input_channels],
 *                           per-tensor scale and zero point
 *   1 pattern_masks         uint16 [num_patterns]
 *   2 pattern_run_lengths   uint8 or uint16 [output_channels, num_patterns]
 *   3 kernel_input_channels uint8 or uint16 [num_kernels]
 *   4 values                int8 [num_values], symmetric (zero point 0)
 *   5 bias                  int32 [output_channels] (scale input_scale *
 *                           filter_scales[o]), or absent (-1)
 *   6 filter_scales         float32 [output_channels], finite and > 0
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

/* Portable planar kernel (src/s8-patconv/planar.c), the one the op runs:
 * bit-identical to the scalar reference, with a caller-provided scratch of
 * clicktrain_s8_patconv_planar_scratch_bytes(geometry) bytes, 16-byte
 * aligned. */
size_t clicktrain_s8_patconv_planar_scratch_bytes(
    const clicktrain_conv_geometry* geometry);
void clicktrain_s8_patconv_ukernel__planar(
    const clicktrain_conv_geometry* geometry,
    const clicktrain_pattern_weights* weights, const int8_t* values,
    const clicktrain_s8_requantization* requantization, const int8_t* input,
    int8_t* output, void* scratch);

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
