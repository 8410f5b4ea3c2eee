/* The int8 pattern conv's layer state: validated weights (structure shared
 * with the float op's compact format) and the requantization TFLite derives
 * from the tensors' scales and zero points. */
#ifndef CLICKTRAIN_PATTERN_CONV_S8_OPERATOR_H_
#define CLICKTRAIN_PATTERN_CONV_S8_OPERATOR_H_

#include <stddef.h>
#include <stdint.h>

#include "clicktrain/pattern_conv_s8.h"
#include "compact_weights.h"
#include "op_options.h"

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

/* Validates `tensors` for a layer of the given channel counts and copies
 * them into `layer`. Returns 0, or -1 with a message naming the field. */
int clicktrain_s8_layer_build(const clicktrain_s8_compact_tensors* tensors,
                              size_t input_channels, size_t output_channels,
                              clicktrain_s8_layer* layer, char* error,
                              size_t error_size);

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

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_PATTERN_CONV_S8_OPERATOR_H_ */
