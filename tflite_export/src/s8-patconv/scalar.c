/* Scalar int8 pattern conv: TFLite's reference ConvPerChannel restricted to
 * the kept taps of each kernel. */
#include "clicktrain/pattern_conv_s8.h"

void clicktrain_s8_patconv_ukernel__scalar(
    const clicktrain_conv_geometry* g, const clicktrain_pattern_weights* w,
    const int8_t* values, const clicktrain_s8_requantization* q,
    const int8_t* input, int8_t* output) {
  const int channels = g->input_channels;
  for (int b = 0; b < g->batch; ++b) {
    const int8_t* image =
        input + (size_t)b * g->input_height * g->input_width * channels;
    for (int oy = 0; oy < g->output_height; ++oy) {
      for (int ox = 0; ox < g->output_width; ++ox) {
        const int y0 = oy * g->stride_h - g->padding_top;
        const int x0 = ox * g->stride_w - g->padding_left;
        int8_t* pixel =
            output + (((size_t)b * g->output_height + oy) * g->output_width +
                      ox) * g->output_channels;
        for (uint32_t o = 0; o < w->output_channels; ++o) {
          int64_t acc = 0;
          uint32_t kernel = w->filter_kernel_start[o];
          const int8_t* value = values + w->filter_value_start[o];
          for (uint32_t p = 0; p < w->num_patterns; ++p) {
            const unsigned mask = w->pattern_masks[p];
            const uint32_t run =
                w->pattern_run_lengths[o * w->num_patterns + p];
            for (uint32_t j = 0; j < run; ++j, ++kernel) {
              const int c = w->kernel_input_channels[kernel];
              for (int position = 0; position < CLICKTRAIN_KERNEL_POSITIONS;
                   ++position) {
                if (((mask >> position) & 1u) == 0) continue;
                const int y = y0 + (position / 3) * g->dilation_h;
                const int x = x0 + (position % 3) * g->dilation_w;
                const int32_t weight = *value++;
                if (y < 0 || y >= g->input_height || x < 0 ||
                    x >= g->input_width) {
                  continue;
                }
                const int32_t in =
                    image[((size_t)y * g->input_width + x) * channels + c];
                acc += weight * (in - q->input_zero_point);
              }
            }
          }
          /* TFLite sums in int32: wrap as it does, without overflow. */
          const int32_t sum = (int32_t)((uint32_t)acc + (uint32_t)q->bias[o]);
          int32_t out = clicktrain_multiply_by_quantized_multiplier(
              sum, q->multiplier[o], q->shift[o]);
          out += q->output_zero_point;
          if (out < q->output_min) out = q->output_min;
          if (out > q->output_max) out = q->output_max;
          pixel[o] = (int8_t)out;
        }
      }
    }
  }
}
