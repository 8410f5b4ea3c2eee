/* Scalar reference pattern convolution: the ground truth for every faster
 * variant. Written for clarity, not speed. */
#include <stddef.h>

#include "clicktrain/pattern_conv.h"

static float clamp(float value, float low, float high) {
  /* Comparisons keep NaN as NaN, like TFLite with no fused activation. */
  if (value < low) return low;
  if (value > high) return high;
  return value;
}

void clicktrain_f32_patconv_ukernel__scalar(
    const clicktrain_conv_geometry* g, const clicktrain_pattern_weights* w,
    const float* input, float* output) {
  const size_t input_row = (size_t)g->input_width * g->input_channels;
  const size_t input_image = (size_t)g->input_height * input_row;
  for (int n = 0; n < g->batch; ++n) {
    const float* image = input + (size_t)n * input_image;
    for (int oy = 0; oy < g->output_height; ++oy) {
      for (int ox = 0; ox < g->output_width; ++ox) {
        const int top = oy * g->stride_h - g->padding_top;
        const int left = ox * g->stride_w - g->padding_left;
        float* pixel =
            output + (((size_t)n * g->output_height + oy) * g->output_width +
                      ox) * g->output_channels;
        for (uint32_t o = 0; o < w->output_channels; ++o) {
          float sum = w->bias[o];
          uint32_t kernel = w->filter_kernel_start[o];
          const float* value = w->values + w->filter_value_start[o];
          for (uint32_t p = 0; p < w->num_patterns; ++p) {
            const unsigned mask = w->pattern_masks[p];
            const uint32_t run =
                w->pattern_run_lengths[(size_t)o * w->num_patterns + p];
            for (uint32_t j = 0; j < run; ++j, ++kernel) {
              const size_t channel = w->kernel_input_channels[kernel];
              for (int position = 0; position < CLICKTRAIN_KERNEL_POSITIONS;
                   ++position) {
                if (!((mask >> position) & 1u)) continue;
                const int y = top + (position / CLICKTRAIN_KERNEL_SIZE) *
                                        g->dilation_h;
                const int x = left + (position % CLICKTRAIN_KERNEL_SIZE) *
                                         g->dilation_w;
                if (y >= 0 && y < g->input_height && x >= 0 &&
                    x < g->input_width) {
                  sum += *value *
                         image[(size_t)y * input_row +
                               (size_t)x * g->input_channels + channel];
                }
                ++value;
              }
            }
          }
          pixel[o] = clamp(sum, g->output_min, g->output_max);
        }
      }
    }
  }
}
