#include "pattern_conv_s8_operator.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char* error, size_t error_size, const char* format, ...) {
  if (error != NULL && error_size > 0) {
    va_list args;
    va_start(args, format);
    vsnprintf(error, error_size, format, args);
    va_end(args);
  }
  return -1;
}

void clicktrain_quantize_multiplier(double real, int32_t* multiplier,
                                    int* shift) {
  if (real == 0.0) {
    *multiplier = 0;
    *shift = 0;
    return;
  }
  int exponent = 0;
  const double fraction = frexp(real, &exponent);
  int64_t fixed = (int64_t)round(fraction * (double)(1ll << 31));
  if (fixed == (1ll << 31)) {
    fixed /= 2;
    ++exponent;
  }
  if (exponent < -31) {
    fixed = 0;
    exponent = 0;
  }
  *multiplier = (int32_t)fixed;
  *shift = exponent;
}

static int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  const int64_t product = (int64_t)a * (int64_t)b;
  const int64_t nudge = product >= 0 ? (1ll << 30) : (1 - (1ll << 30));
  return (int32_t)((product + nudge) / (1ll << 31));
}

static int32_t rounding_divide_by_power_of_two(int32_t x, int exponent) {
  const int32_t mask = (int32_t)((1ll << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t clicktrain_multiply_by_quantized_multiplier(int32_t x,
                                                    int32_t multiplier,
                                                    int shift) {
  const int left_shift = shift > 0 ? shift : 0;
  const int right_shift = shift > 0 ? 0 : -shift;
  /* TFLite multiplies in int32; shifts are validated to keep it exact. */
  const int32_t shifted = (int32_t)((uint32_t)x << left_shift);
  return rounding_divide_by_power_of_two(
      saturating_rounding_doubling_high_mul(shifted, multiplier), right_shift);
}

int clicktrain_s8_layer_build(const clicktrain_s8_compact_tensors* t,
                              size_t input_channels, size_t output_channels,
                              clicktrain_s8_layer* layer, char* error,
                              size_t error_size) {
  memset(layer, 0, sizeof(*layer));
  if (t->values == NULL) {
    return fail(error, error_size, "values are missing");
  }
  /* The structure check needs float values of the same count: widen the
   * int8 values (exact), which also keeps one validator for both ops. */
  float* widened = (float*)malloc((t->values_count ? t->values_count : 1) *
                                  sizeof(float));
  if (widened == NULL) return fail(error, error_size, "out of memory");
  for (size_t i = 0; i < t->values_count; ++i) {
    widened[i] = (float)((const int8_t*)t->values)[i];
  }
  clicktrain_compact_tensors structure = t->structure;
  structure.values = widened;
  structure.values_count = t->values_count;
  structure.bias = NULL;
  structure.bias_count = 0;
  const int status = clicktrain_build_pattern_weights(
      &structure, input_channels, output_channels, 0, &layer->structure,
      error, error_size);
  free(widened);
  if (status != 0) return -1;
  if (t->bias != NULL && t->bias_count != output_channels) {
    clicktrain_s8_layer_release(layer);
    return fail(error, error_size, "bias must have %zu elements. Received: %zu",
                output_channels, t->bias_count);
  }
  if (t->filter_scales == NULL || t->filter_scales_count != output_channels) {
    clicktrain_s8_layer_release(layer);
    return fail(error, error_size,
                "filter_scales must have %zu elements. Received: %zu",
                output_channels, t->filter_scales_count);
  }
  layer->values = (int8_t*)malloc(t->values_count ? t->values_count : 1);
  layer->bias = (int32_t*)calloc(output_channels, sizeof(int32_t));
  layer->filter_scales = (float*)malloc(output_channels * sizeof(float));
  layer->multiplier = (int32_t*)calloc(output_channels, sizeof(int32_t));
  layer->shift = (int32_t*)calloc(output_channels, sizeof(int32_t));
  if (layer->values == NULL || layer->bias == NULL ||
      layer->filter_scales == NULL || layer->multiplier == NULL ||
      layer->shift == NULL) {
    clicktrain_s8_layer_release(layer);
    return fail(error, error_size, "out of memory");
  }
  memcpy(layer->values, t->values, t->values_count);
  if (t->bias != NULL) {
    memcpy(layer->bias, t->bias, output_channels * sizeof(int32_t));
  }
  memcpy(layer->filter_scales, t->filter_scales,
         output_channels * sizeof(float));
  for (size_t o = 0; o < output_channels; ++o) {
    const float scale = layer->filter_scales[o];
    if (!isfinite(scale) || !(scale > 0.0f)) {
      const double shown = scale;
      clicktrain_s8_layer_release(layer);
      return fail(error, error_size,
                  "filter_scales[%zu] must be finite and > 0. Received: %g", o,
                  shown);
    }
  }
  return 0;
}

/* TFLite's CalculateActivationRangeQuantized for int8. */
static int32_t quantize_clamp(float value, float scale, int32_t zero_point) {
  const double q = (double)zero_point + (double)roundf(value / scale);
  if (q < -128.0) return -128;
  if (q > 127.0) return 127;
  return (int32_t)q;
}

int clicktrain_s8_layer_requantize(clicktrain_s8_layer* layer,
                                   float input_scale, int32_t input_zero_point,
                                   float output_scale,
                                   int32_t output_zero_point,
                                   clicktrain_activation activation,
                                   char* error, size_t error_size) {
  if (!isfinite(input_scale) || !(input_scale > 0.0f) ||
      !isfinite(output_scale) || !(output_scale > 0.0f)) {
    return fail(error, error_size,
                "input and output scales must be finite and > 0. Received: "
                "%g and %g", (double)input_scale, (double)output_scale);
  }
  if (input_zero_point < -128 || input_zero_point > 127 ||
      output_zero_point < -128 || output_zero_point > 127) {
    return fail(error, error_size,
                "input and output zero points must be in [-128, 127]. "
                "Received: %d and %d", (int)input_zero_point,
                (int)output_zero_point);
  }
  const uint32_t channels = layer->structure.weights.output_channels;
  for (uint32_t o = 0; o < channels; ++o) {
    const double real = (double)input_scale * (double)layer->filter_scales[o] /
                        (double)output_scale;
    int32_t multiplier = 0;
    int shift = 0;
    clicktrain_quantize_multiplier(real, &multiplier, &shift);
    /* TFLite's kernels take shifts up to 30 (a left shift of an int32). */
    if (!isfinite(real) || shift > 30) {
      return fail(error, error_size,
                  "input_scale * filter_scales[%u] / output_scale = %g is "
                  "too large to requantize", o, real);
    }
    layer->multiplier[o] = multiplier;
    layer->shift[o] = shift;
  }
  clicktrain_s8_requantization* q = &layer->requantization;
  q->input_zero_point = input_zero_point;
  q->output_zero_point = output_zero_point;
  q->output_min = -128;
  q->output_max = 127;
  switch (activation) {
    case CLICKTRAIN_ACTIVATION_NONE:
      break;
    case CLICKTRAIN_ACTIVATION_RELU:
      q->output_min = quantize_clamp(0.0f, output_scale, output_zero_point);
      break;
    case CLICKTRAIN_ACTIVATION_RELU6:
      q->output_min = quantize_clamp(0.0f, output_scale, output_zero_point);
      q->output_max = quantize_clamp(6.0f, output_scale, output_zero_point);
      break;
    case CLICKTRAIN_ACTIVATION_RELU_N1_TO_1:
      q->output_min = quantize_clamp(-1.0f, output_scale, output_zero_point);
      q->output_max = quantize_clamp(1.0f, output_scale, output_zero_point);
      break;
    default:
      return fail(error, error_size, "unsupported fused activation %d",
                  (int)activation);
  }
  q->bias = layer->bias;
  q->multiplier = layer->multiplier;
  q->shift = layer->shift;
  return 0;
}

void clicktrain_s8_layer_release(clicktrain_s8_layer* layer) {
  clicktrain_free_pattern_weights(&layer->structure);
  free(layer->values);
  free(layer->bias);
  free(layer->filter_scales);
  free(layer->multiplier);
  free(layer->shift);
  memset(layer, 0, sizeof(*layer));
}
