/* Portable int8 pattern depthwise conv: TFLite's reference
 * DepthwiseConvPerChannel over the kept taps (the ground truth), and the
 * row micro-kernel over packed channel groups (the fast path's portable
 * variant, also arm64's). */
#include <string.h>

#include "clicktrain/pattern_dwconv_s8.h"

void clicktrain_s8_patdwconv_ukernel__scalar(
    const clicktrain_conv_geometry* g, const clicktrain_pattern_weights* w,
    const int8_t* values, const clicktrain_s8_requantization* q,
    const int8_t* input, int8_t* output) {
  const size_t channels = (size_t)g->input_channels;
  const size_t input_image =
      (size_t)g->input_height * (size_t)g->input_width * channels;
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
    const int8_t* kernel_values = values + w->filter_value_start[c];
    for (int n = 0; n < g->batch; ++n) {
      const int8_t* image = input + (size_t)n * input_image + c;
      for (int oy = 0; oy < g->output_height; ++oy) {
        for (int ox = 0; ox < g->output_width; ++ox) {
          const int top = oy * g->stride_h - g->padding_top;
          const int left = ox * g->stride_w - g->padding_left;
          int32_t acc = 0;
          const int8_t* value = kernel_values;
          for (int position = 0; position < CLICKTRAIN_KERNEL_POSITIONS;
               ++position) {
            if (!((mask >> position) & 1u)) continue;
            const int y = top + (position / 3) * g->dilation_h;
            const int x = left + (position % 3) * g->dilation_w;
            const int32_t weight = *value++;
            if (y < 0 || y >= g->input_height || x < 0 ||
                x >= g->input_width) {
              continue;
            }
            const int32_t in =
                image[((size_t)y * g->input_width + (size_t)x) * channels];
            acc += weight * (in - q->input_zero_point);
          }
          /* TFLite sums in int32: wrap as it does, without overflow. */
          const int32_t sum = (int32_t)((uint32_t)acc + (uint32_t)q->bias[c]);
          int32_t out = clicktrain_multiply_by_quantized_multiplier(
              sum, q->multiplier[c], q->shift[c]);
          out = (int32_t)((uint32_t)out + (uint32_t)q->output_zero_point);
          if (out < q->output_min) out = q->output_min;
          if (out > q->output_max) out = q->output_max;
          output[(((size_t)n * g->output_height + oy) * g->output_width +
                  ox) * channels + c] = (int8_t)out;
        }
      }
    }
  }
}

/* Lane-order element of channel `c` (< 16) of a group, and the index of
 * its 64-bit parameters (see pattern_dwconv_s8.h). */
static size_t lane_of(size_t c) {
  return 8 * ((c % 8) / 4) + 4 * (c / 8) + c % 4;
}

static size_t wide_of(size_t lane) {
  const size_t half = lane / 8, i = lane % 8;
  return 8 * half + (i % 2) * 4 + i / 2;
}

static void row__scalar(size_t pixels, size_t channels,
                        const int8_t* const* indirection,
                        const clicktrain_s8_patdwconv_group* groups,
                        const clicktrain_s8_output_params* params,
                        int8_t* output) {
  for (size_t base = 0; base < channels;
       base += CLICKTRAIN_S8_PATDWCONV_GROUP, ++groups) {
    size_t count = channels - base;
    if (count > CLICKTRAIN_S8_PATDWCONV_GROUP) {
      count = CLICKTRAIN_S8_PATDWCONV_GROUP;
    }
    for (size_t pixel = 0; pixel < pixels; ++pixel) {
      const int8_t* const* taps = indirection + pixel * 9;
      for (size_t c = 0; c < count; ++c) {
        const size_t lane = lane_of(c);
        const size_t half = lane / 8, k = 2 * (lane % 8);
        uint32_t acc = (uint32_t)groups->bias[lane];
        for (uint32_t p = 0; p < groups->pairs; ++p) {
          const int16_t* weights = groups->weights[p] + 16 * half + k;
          acc += (uint32_t)(weights[0] * taps[groups->taps[2 * p]][base + c]);
          acc += (uint32_t)(weights[1] *
                            taps[groups->taps[2 * p + 1]][base + c]);
        }
        const size_t wide = wide_of(lane);
        const int32_t shifted =
            (int32_t)(acc << (uint32_t)groups->left_shift[lane]);
        const int64_t product =
            (int64_t)shifted * (int64_t)groups->multiplier[lane];
        const int64_t rounded =
            product + groups->rounding[wide] -
            (product < 0 ? groups->negative_rounding[wide] : 0);
        int32_t out = (int32_t)(rounded >> groups->right_shift[wide]);
        out = (int32_t)((uint32_t)out + (uint32_t)params->zero_point);
        if (out < params->min) out = params->min;
        if (out > params->max) out = params->max;
        output[pixel * channels + base + c] = (int8_t)out;
      }
    }
  }
}

const clicktrain_s8_patdwconv_ukernels clicktrain_s8_patdwconv_ukernels__scalar =
    {"scalar", row__scalar};
