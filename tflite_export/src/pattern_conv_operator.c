#include "pattern_conv_operator.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
  kAlignment = 64,
  /* Output channels per task: one 64-byte line of NHWC output per pixel. */
  kFilterBlock = 16,
  kMaxPixelTile = 256,
};

/* Planes larger than this (in floats) run on the reference kernel. */
#define CLICKTRAIN_MAX_PLANE_FLOATS ((size_t)1 << 30)

static size_t align_up(size_t size) {
  return (size + kAlignment - 1) / kAlignment * kAlignment;
}

static size_t program_words(const clicktrain_pattern_weights* w) {
  size_t words = 0;
  for (uint32_t o = 0; o < w->output_channels; ++o) {
    words += 2;
    for (uint32_t p = 0; p < w->num_patterns; ++p) {
      const size_t run = w->pattern_run_lengths[(size_t)o * w->num_patterns + p];
      if (run == 0) continue;
      const size_t taps = (size_t)__builtin_popcount(w->pattern_masks[p]);
      words += 2 + taps + run * (1 + taps);
    }
  }
  return words;
}

/* Offset, within a channel's planes, of 3x3 position `position`. */
static size_t tap_offset(const clicktrain_patconv_operator* op, int position) {
  const clicktrain_conv_geometry* g = &op->geometry;
  const size_t ky = (size_t)(position / CLICKTRAIN_KERNEL_SIZE) * g->dilation_h;
  const size_t kx = (size_t)(position % CLICKTRAIN_KERNEL_SIZE) * g->dilation_w;
  const size_t phase = (ky % op->phases_h) * op->phases_w + kx % op->phases_w;
  return phase * op->phase_rows * op->phase_columns +
         ky / op->phases_h * op->phase_columns + kx / op->phases_w;
}

static void build_program(clicktrain_patconv_operator* op) {
  const clicktrain_pattern_weights* w = op->weights;
  clicktrain_patconv_word* word = op->program;
  uint32_t kernel = 0;
  const float* value = w->values;
  for (uint32_t o = 0; o < w->output_channels; ++o) {
    op->filter_program_start[o] = (size_t)(word - op->program);
    clicktrain_patconv_word* groups = word;
    groups->count = 0;
    word[1].weight = w->bias[o];
    word += 2;
    for (uint32_t p = 0; p < w->num_patterns; ++p) {
      const uint32_t run = w->pattern_run_lengths[(size_t)o * w->num_patterns + p];
      if (run == 0) continue;
      const unsigned mask = w->pattern_masks[p];
      const uint32_t taps = (uint32_t)__builtin_popcount(mask);
      ++groups->count;
      word[0].count = taps;
      word[1].count = run;
      word += 2;
      for (int position = 0; position < CLICKTRAIN_KERNEL_POSITIONS; ++position) {
        if ((mask >> position) & 1u) (word++)->offset = (int32_t)tap_offset(op, position);
      }
      for (uint32_t j = 0; j < run; ++j, ++kernel) {
        (word++)->offset =
            (int32_t)(w->kernel_input_channels[kernel] * op->plane_stride);
        for (uint32_t t = 0; t < taps; ++t) (word++)->weight = *value++;
      }
    }
  }
  op->filter_program_start[w->output_channels] = (size_t)(word - op->program);
}

int clicktrain_patconv_operator_setup(clicktrain_patconv_operator* op,
                                      const clicktrain_conv_geometry* geometry,
                                      const clicktrain_pattern_weights* weights,
                                      int depthwise,
                                      const clicktrain_kernel_set* kernels,
                                      int max_threads) {
  memset(op, 0, sizeof(*op));
  op->geometry = *geometry;
  op->weights = weights;
  op->kernels = kernels;
  op->depthwise = depthwise;
  op->max_threads = max_threads < 1 ? 1 : max_threads;
  const clicktrain_conv_geometry* g = geometry;
  if (kernels->planar == NULL || kernels->pixel_tile == 0 ||
      kernels->pixel_tile > kMaxPixelTile) {
    return 0;
  }
  op->phases_h = (size_t)g->stride_h;
  op->phases_w = (size_t)g->stride_w;
  op->phase_rows = (size_t)g->output_height +
                   (size_t)(2 * g->dilation_h) / op->phases_h;
  op->phase_columns = (size_t)g->output_width +
                      (size_t)(2 * g->dilation_w) / op->phases_w;
  const size_t phase_size = op->phase_rows * op->phase_columns;
  /* Overflow-safe size checks: every factor is below 2^25. */
  if (phase_size > CLICKTRAIN_MAX_PLANE_FLOATS / (op->phases_h * op->phases_w)) {
    return 0;
  }
  op->plane_stride = phase_size * op->phases_h * op->phases_w;
  if (op->plane_stride > CLICKTRAIN_MAX_PLANE_FLOATS / (size_t)g->input_channels) {
    return 0;
  }
  op->output_pixels = (size_t)g->output_height * op->phase_columns;
  /* Micro-kernels read up to a tile's worth past the last output pixel. */
  const size_t plane_floats = op->plane_stride * (size_t)g->input_channels +
                              op->phase_columns + kMaxPixelTile +
                              CLICKTRAIN_PATCONV_PIXEL_SLACK;
  if (plane_floats > (size_t)INT32_MAX) return 0;

  op->pixel_tile = kernels->pixel_tile;
  op->filter_block = (size_t)g->output_channels < kFilterBlock
                         ? (size_t)g->output_channels
                         : kFilterBlock;
  op->pixel_tiles = (op->output_pixels + op->pixel_tile - 1) / op->pixel_tile;
  op->filter_blocks =
      ((size_t)g->output_channels + op->filter_block - 1) / op->filter_block;
  op->tile_stride = op->pixel_tile + CLICKTRAIN_PATCONV_PIXEL_SLACK;

  const size_t words = program_words(weights);
  const size_t program_bytes = align_up(words * sizeof(clicktrain_patconv_word));
  const size_t starts_bytes =
      align_up(((size_t)g->output_channels + 1) * sizeof(size_t));
  const size_t planes_bytes = align_up(plane_floats * sizeof(float));
  char* memory = (char*)aligned_alloc(kAlignment,
                                      program_bytes + starts_bytes + planes_bytes);
  if (memory == NULL) return -1;
  op->program = (clicktrain_patconv_word*)memory;
  op->filter_program_start = (size_t*)(memory + program_bytes);
  op->planes = (float*)(memory + program_bytes + starts_bytes);
  /* Padding stays zero for good: runs only rewrite the interior. */
  memset(op->planes, 0, planes_bytes);
  build_program(op);
  op->fast = 1;
  return 0;
}

void clicktrain_patconv_operator_release(clicktrain_patconv_operator* op) {
  free(op->program);
  memset(op, 0, sizeof(*op));
}

/* ------------------------------------------------------------------------ */

typedef struct run_context {
  clicktrain_patconv_operator* op;
  const float* image;  /* NHWC input of the current batch element */
  float* output;       /* NHWC output of the current batch element */
} run_context;

/* NHWC input row y -> its place in every channel's planes. */
static void pack_row(void* context, size_t y) {
  const run_context* run = (const run_context*)context;
  const clicktrain_patconv_operator* op = run->op;
  const clicktrain_conv_geometry* g = &op->geometry;
  const size_t channels = (size_t)g->input_channels;
  const size_t padded_y = y + (size_t)g->padding_top;
  const size_t row = padded_y / op->phases_h;
  if (row >= op->phase_rows) return;  /* read by no output */
  const size_t phase_size = op->phase_rows * op->phase_columns;
  const size_t row_start =
      (padded_y % op->phases_h) * op->phases_w * phase_size + row * op->phase_columns;
  const float* source = run->image + y * (size_t)g->input_width * channels;
  for (size_t x = 0; x < (size_t)g->input_width; ++x, source += channels) {
    const size_t padded_x = x + (size_t)g->padding_left;
    const size_t column = padded_x / op->phases_w;
    if (column >= op->phase_columns) continue;
    float* destination =
        op->planes + row_start + (padded_x % op->phases_w) * phase_size + column;
    for (size_t c = 0; c < channels; ++c) {
      destination[c * op->plane_stride] = source[c];
    }
  }
}

/* One tile: filter block x pixel tile, computed planar then stored NHWC. */
static void compute_tile(void* context, size_t index) {
  const run_context* run = (const run_context*)context;
  const clicktrain_patconv_operator* op = run->op;
  const clicktrain_conv_geometry* g = &op->geometry;
  const size_t block = index % op->filter_blocks;
  const size_t first_pixel = index / op->filter_blocks * op->pixel_tile;
  const size_t first_filter = block * op->filter_block;
  size_t filters = (size_t)g->output_channels - first_filter;
  if (filters > op->filter_block) filters = op->filter_block;
  size_t pixels = op->output_pixels - first_pixel;
  if (pixels > op->pixel_tile) pixels = op->pixel_tile;

  float tile[kFilterBlock * (kMaxPixelTile + CLICKTRAIN_PATCONV_PIXEL_SLACK)]
      __attribute__((aligned(64)));
  op->kernels->planar(pixels, filters,
                      op->program + op->filter_program_start[first_filter],
                      op->planes + first_pixel, tile, op->tile_stride,
                      g->output_min, g->output_max);

  const size_t columns = op->phase_columns;
  const size_t output_channels = (size_t)g->output_channels;
  for (size_t i = 0; i < pixels;) {
    const size_t pixel = first_pixel + i;
    const size_t y = pixel / columns;
    size_t x = pixel % columns;
    /* The rest of this row in the tile, valid columns only. */
    size_t row_end = i + (columns - x);
    if (row_end > pixels) row_end = pixels;
    for (; i < row_end; ++i, ++x) {
      if (x >= (size_t)g->output_width) continue;
      float* destination =
          run->output + (y * (size_t)g->output_width + x) * output_channels +
          first_filter;
      const float* source = tile + i;
      for (size_t f = 0; f < filters; ++f) {
        destination[f] = source[f * op->tile_stride];
      }
    }
  }
}

void clicktrain_patconv_operator_run(clicktrain_patconv_operator* op,
                                     const float* input, float* output,
                                     clicktrain_thread_pool* pool) {
  const clicktrain_conv_geometry* g = &op->geometry;
  if (!op->fast) {
    const clicktrain_f32_patconv_fn reference =
        op->depthwise ? op->kernels->depthwise_conv : op->kernels->conv;
    reference(g, op->weights, input, output);
    return;
  }
  if (clicktrain_thread_pool_threads(pool) > op->max_threads) pool = NULL;
  const size_t input_image =
      (size_t)g->input_height * g->input_width * g->input_channels;
  const size_t output_image =
      (size_t)g->output_height * g->output_width * g->output_channels;
  run_context run = {op, input, output};
  for (int n = 0; n < g->batch; ++n) {
    run.image = input + (size_t)n * input_image;
    run.output = output + (size_t)n * output_image;
    clicktrain_thread_pool_parallelize(pool, pack_row, &run,
                                       (size_t)g->input_height);
    clicktrain_thread_pool_parallelize(pool, compute_tile, &run,
                                       op->pixel_tiles * op->filter_blocks);
  }
}
