/* Scalar reference pattern depthwise convolution (depth multiplier 1): each
 * channel has at most one kept 3x3 kernel, reading its own input channel. */
#include <stddef.h>

#include "clicktrain/pattern_conv.h"

static float clamp(float value, float low, float high) {
  if (value < low) return low;
  if (value > high) return high;
  return value;
}

void clicktrain_f32_patdwconv_ukernel__scalar(
    const clicktrain_conv_geometry* g, const clicktrain_pattern_weights* w,
    const float* input, float* output) {
  const size_t channels = (size_t)g->input_channels;
  const size_t input_row = (size_t)g->input_width * channels;
  const size_t input_image = (size_t)g->input_height * input_row;
  for (uint32_t c = 0; c < w->output_channels; ++c) {
    /* The kept kernel's mask, or 0 when the channel's kernel was removed. */
    unsigned mask = 0;
    if (w->filter_kernel_start[c + 1] > w->filter_kernel_start[c]) {
      for (uint32_t p = 0; p < w->num_patterns; ++p) {
        if (w->pattern_run_lengths[(size_t)c * w->num_patterns + p] != 0) {
          mask = w->pattern_masks[p];
          break;
        }
      }
    }
    const float* kernel_values = w->values + w->filter_value_start[c];
    for (int n = 0; n < g->batch; ++n) {
      const float* image = input + (size_t)n * input_image + c;
      for (int oy = 0; oy < g->output_height; ++oy) {
        for (int ox = 0; ox < g->output_width; ++ox) {
          const int top = oy * g->stride_h - g->padding_top;
          const int left = ox * g->stride_w - g->padding_left;
          float sum = w->bias[c];
          const float* value = kernel_values;
          for (int position = 0; position < CLICKTRAIN_KERNEL_POSITIONS;
               ++position) {
            if (!((mask >> position) & 1u)) continue;
            const int y =
                top + (position / CLICKTRAIN_KERNEL_SIZE) * g->dilation_h;
            const int x =
                left + (position % CLICKTRAIN_KERNEL_SIZE) * g->dilation_w;
            if (y >= 0 && y < g->input_height && x >= 0 &&
                x < g->input_width) {
              sum += *value * image[(size_t)y * input_row + (size_t)x * channels];
            }
            ++value;
          }
          output[(((size_t)n * g->output_height + oy) * g->output_width + ox) *
                     g->output_channels + c] =
              clamp(sum, g->output_min, g->output_max);
        }
      }
    }
  }
}
