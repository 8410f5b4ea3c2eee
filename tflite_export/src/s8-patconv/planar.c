/* Portable planar int8 pattern conv: the input, minus its zero point, is
 * laid out once per image as zero-padded int16 channel planes, so every kept
 * tap of a kernel is one multiply-add over a contiguous run of output pixels
 * (vectorised by the compiler for stride 1) with no bounds checks; padded
 * taps read zeros, i.e. contribute nothing, as in TFLite. Sums wrap in
 * 32 bits as TFLite's int32 accumulator does: bit-identical to the scalar
 * reference. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize")
#endif

#include <string.h>

#include "clicktrain/pattern_conv_s8.h"

static int padded_extent(int input, int padding, int output, int stride,
                         int dilation) {
  const int needed = (output - 1) * stride + 2 * dilation + 1;
  return needed > padding + input ? needed : padding + input;
}

/* Bytes of the planes, rounded up so the int32 sums after them align. */
static size_t planes_bytes(size_t plane, int channels) {
  return (plane * (size_t)channels * sizeof(int16_t) + 15) / 16 * 16;
}

size_t clicktrain_s8_patconv_planar_scratch_bytes(
    const clicktrain_conv_geometry* g) {
  const size_t plane =
      (size_t)padded_extent(g->input_height, g->padding_top, g->output_height,
                            g->stride_h, g->dilation_h) *
      (size_t)padded_extent(g->input_width, g->padding_left, g->output_width,
                            g->stride_w, g->dilation_w);
  return planes_bytes(plane, g->input_channels) +
         (size_t)g->output_height * (size_t)g->output_width * sizeof(int32_t);
}

void clicktrain_s8_patconv_ukernel__planar(
    const clicktrain_conv_geometry* g, const clicktrain_pattern_weights* w,
    const int8_t* values, const clicktrain_s8_requantization* q,
    const int8_t* input, int8_t* output, void* scratch) {
  const int padded_height = padded_extent(g->input_height, g->padding_top,
                                          g->output_height, g->stride_h,
                                          g->dilation_h);
  const int padded_width = padded_extent(g->input_width, g->padding_left,
                                         g->output_width, g->stride_w,
                                         g->dilation_w);
  const size_t plane = (size_t)padded_height * (size_t)padded_width;
  const int channels = g->input_channels;
  const size_t pixels = (size_t)g->output_height * (size_t)g->output_width;
  int16_t* planes = (int16_t*)scratch;
  int32_t* acc = (int32_t*)((char*)scratch + planes_bytes(plane, channels));
  for (int b = 0; b < g->batch; ++b) {
    const int8_t* image =
        input + (size_t)b * g->input_height * g->input_width * channels;
    memset(planes, 0, plane * (size_t)channels * sizeof(int16_t));
    for (int y = 0; y < g->input_height; ++y) {
      for (int x = 0; x < g->input_width; ++x) {
        const int8_t* pixel = image + ((size_t)y * g->input_width + x) * channels;
        int16_t* target = planes + (size_t)(y + g->padding_top) * padded_width +
                          (x + g->padding_left);
        for (int c = 0; c < channels; ++c) {
          target[(size_t)c * plane] = (int16_t)(pixel[c] - q->input_zero_point);
        }
      }
    }
    int8_t* image_output = output + (size_t)b * pixels * w->output_channels;
    for (uint32_t o = 0; o < w->output_channels; ++o) {
      memset(acc, 0, pixels * sizeof(int32_t));
      uint32_t kernel = w->filter_kernel_start[o];
      const int8_t* value = values + w->filter_value_start[o];
      for (uint32_t p = 0; p < w->num_patterns; ++p) {
        const unsigned mask = w->pattern_masks[p];
        const uint32_t run = w->pattern_run_lengths[o * w->num_patterns + p];
        for (uint32_t j = 0; j < run; ++j, ++kernel) {
          const int16_t* source =
              planes + (size_t)w->kernel_input_channels[kernel] * plane;
          for (int position = 0; position < CLICKTRAIN_KERNEL_POSITIONS;
               ++position) {
            if (((mask >> position) & 1u) == 0) continue;
            /* int16 x int16 products: SSE2 / NEON widening multiplies. */
            const int16_t weight = *value++;
            if (weight == 0) continue;
            const int16_t* tap =
                source + (size_t)(position / 3) * g->dilation_h * padded_width +
                (size_t)(position % 3) * g->dilation_w;
            for (int oy = 0; oy < g->output_height; ++oy) {
              const int16_t* row = tap + (size_t)oy * g->stride_h * padded_width;
              int32_t* sums = acc + (size_t)oy * g->output_width;
              if (g->stride_w == 1) {
                for (int ox = 0; ox < g->output_width; ++ox) {
                  sums[ox] = (int32_t)((uint32_t)sums[ox] +
                                       (uint32_t)((int32_t)weight * row[ox]));
                }
              } else {
                for (int ox = 0; ox < g->output_width; ++ox) {
                  sums[ox] = (int32_t)((uint32_t)sums[ox] +
                                       (uint32_t)((int32_t)weight * row[ox * g->stride_w]));
                }
              }
            }
          }
        }
      }
      const int32_t bias = q->bias[o];
      for (size_t i = 0; i < pixels; ++i) {
        int32_t out = clicktrain_multiply_by_quantized_multiplier(
            (int32_t)((uint32_t)acc[i] + (uint32_t)bias), q->multiplier[o],
            q->shift[o]);
        out += q->output_zero_point;
        if (out < q->output_min) out = q->output_min;
        if (out > q->output_max) out = q->output_max;
        image_output[i * w->output_channels + o] = (int8_t)out;
      }
    }
  }
}
