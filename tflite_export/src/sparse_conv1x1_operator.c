#include "sparse_conv1x1_operator.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
  kAlignment = 64,
  /* Output channels per compute call: rows of the planar output tile, and
   * whole 16x16 blocks for the transpose back to NHWC. */
  kFilterGroup = 16,
  /* Tasks per thread when a layer has few pixel tiles: enough to balance
   * load, few enough that re-packing a tile per task stays cheap. */
  kTasksPerThread = 2,
  kMaxPixelTile = 256,
  /* Bytes of planar input one channel block may take: half of a 48 KiB L1,
   * room left for the program and the results. */
  kBlockBytes = 24 * 1024,
  /* Most filters whose partial sums one slot keeps across channel blocks. */
  kMaxChunkFilters = 2048,
  /* Pixels per transpose of a chunk's results back to NHWC when the NHWC
   * row is a multiple of 2 KiB (512 channels): the chunk's filters then go
   * out pixel row by pixel row, not filter band by filter band, whose
   * 16-channel pieces of a tile's 64 rows fall in a few L1 sets at such
   * strides (ResNet-50's 28x28x128->512 and 14x14x256->1024 1.5-1.7x
   * faster, 7x7x512->2048 1.15x; at other widths it measured no faster,
   * AVX-512, 1 thread). */
  kStripePixels = 16,
  kStripeChannels = 512,
  /* Dense multiply-adds a thread of the few-pixel mode must be given to be
   * worth waking: on 2 threads 48 -> 1152 (55 K) gained ~10%, 96 -> 2304
   * 1.7x, 320 -> 1280 2.6x (tests/sparse_conv1x1_bench.c, AVX-512). */
  kFewPixelTaskWork = 16 * 1024,
};

static int fail(char* error, size_t error_size, const char* format, ...) {
  if (error != NULL && error_size > 0) {
    va_list args;
    va_start(args, format);
    vsnprintf(error, error_size, format, args);
    va_end(args);
  }
  return -1;
}

static size_t align_floats(size_t floats) {
  const size_t per_line = kAlignment / sizeof(float);
  return (floats + per_line - 1) / per_line * per_line;
}

int clicktrain_spconv1x1_compute_geometry(
    int batch, int input_height, int input_width, int input_channels,
    int output_channels, int stride_h, int stride_w, float output_min,
    float output_max, clicktrain_spconv1x1_geometry* geometry, char* error,
    size_t error_size) {
  memset(geometry, 0, sizeof(*geometry));
  const int max_side = 1 << 24;
  if (batch < 0 || input_height < 1 || input_width < 1 ||
      input_height > max_side || input_width > max_side || stride_h < 1 ||
      stride_w < 1) {
    return fail(error, error_size,
                "input must have batch >= 0, height and width in [1, 2^24] "
                "and strides >= 1. Received: input [%d, %d, %d, %d], strides "
                "%d, %d", batch, input_height, input_width, input_channels,
                stride_h, stride_w);
  }
  geometry->batch = batch;
  geometry->input_height = input_height;
  geometry->input_width = input_width;
  geometry->input_channels = input_channels;
  geometry->output_height = (input_height - 1) / stride_h + 1;
  geometry->output_width = (input_width - 1) / stride_w + 1;
  geometry->output_channels = output_channels;
  geometry->stride_h = stride_h;
  geometry->stride_w = stride_w;
  geometry->output_min = output_min;
  geometry->output_max = output_max;
  return 0;
}

/* 1 when rows a and b of `w` keep the same input channels. */
static int same_channels(const clicktrain_spconv1x1_weights* w, size_t a,
                         size_t b) {
  const uint32_t length = w->row_start[a + 1] - w->row_start[a];
  return w->row_start[b + 1] - w->row_start[b] == length &&
         memcmp(w->input_channel + w->row_start[a],
                w->input_channel + w->row_start[b],
                length * sizeof(uint16_t)) == 0;
}

/* 1 when rows [first, first + count) of `w` keep the same input channels. */
static int rows_share_channels(const clicktrain_spconv1x1_weights* w,
                               size_t first, size_t count) {
  for (size_t o = first + 1; o < first + count; ++o) {
    if (!same_channels(w, first, o)) return 0;
  }
  return 1;
}

/* Block mode: every group of CLICKTRAIN_SPCONV1X1_BLOCK output channels keeps
 * the same input channels (what block_size=(1, 16) pruning produces). */
static int has_block_structure(const clicktrain_spconv1x1_weights* w) {
  const size_t block = CLICKTRAIN_SPCONV1X1_BLOCK;
  if (w->output_channels == 0 || w->output_channels % block != 0) return 0;
  for (size_t first = 0; first < w->output_channels; first += block) {
    if (!rows_share_channels(w, first, block)) return 0;
  }
  return 1;
}

/* Units of the block mode: consecutive groups paired when their channels
 * match (block_size=(1, 32) pruning). Fills `units` when not NULL; returns
 * the unit count. */
static size_t plan_units(const clicktrain_spconv1x1_weights* w,
                         clicktrain_spconv1x1_unit* units) {
  const size_t block = CLICKTRAIN_SPCONV1X1_BLOCK;
  size_t count = 0;
  for (size_t first = 0; first < w->output_channels; ++count) {
    /* Each group's rows already match (has_block_structure). */
    const size_t groups =
        first + 2 * block <= w->output_channels && same_channels(w, first, first + block)
            ? 2
            : 1;
    if (units != NULL) {
      units[count].first_channel = first;
      units[count].groups = groups;
      units[count].count = w->row_start[first + 1] - w->row_start[first];
    }
    first += groups * block;
  }
  return count;
}

/* Sets up the block mode in one allocation: units, offsets, weights, bias,
 * then the scratch slots (as OperatorBytes in the node expects). */
static int setup_block_mode(clicktrain_spconv1x1_operator* op,
                            const clicktrain_spconv1x1_weights* w) {
  const size_t tile = op->ukernels->pixel_tile;
  const size_t units = plan_units(w, NULL);
  const size_t unit_bytes =
      align_floats(units * sizeof(clicktrain_spconv1x1_unit) / sizeof(float) + 1) *
      sizeof(float);
  size_t kept_channels = 0;
  for (size_t o = 0; o < w->output_channels; o += CLICKTRAIN_SPCONV1X1_BLOCK) {
    kept_channels += w->row_start[o + 1] - w->row_start[o];
  }
  const size_t offset_floats = align_floats(kept_channels);
  const size_t weight_floats = align_floats(w->num_nonzeros);
  const size_t bias_floats = align_floats(w->output_channels);
  /* A register tile may read up to a tile past the last channel's row. */
  op->slot_floats = align_floats(w->input_channels * tile + tile);
  const size_t scratch_floats = op->slot_floats * (size_t)op->max_threads;
  const size_t total_bytes =
      unit_bytes +
      (offset_floats + weight_floats + bias_floats + scratch_floats) * sizeof(float);
  char* memory = (char*)aligned_alloc(kAlignment, total_bytes);
  if (memory == NULL) return -1;
  op->memory = memory;
  op->memory_bytes = total_bytes;
  clicktrain_spconv1x1_unit* unit = (clicktrain_spconv1x1_unit*)memory;
  int32_t* offsets = (int32_t*)(memory + unit_bytes);
  float* weights = (float*)(offsets + offset_floats);
  float* bias = weights + weight_floats;
  op->scratch = bias + bias_floats;
  memset(op->scratch, 0, scratch_floats * sizeof(float));
  plan_units(w, unit);
  memcpy(bias, w->bias, w->output_channels * sizeof(float));
  for (size_t u = 0; u < units; ++u) {
    const size_t first = unit[u].first_channel;
    const size_t width = unit[u].groups * CLICKTRAIN_SPCONV1X1_BLOCK;
    const uint32_t start = w->row_start[first];
    for (size_t k = 0; k < unit[u].count; ++k) {
      offsets[k] = (int32_t)(w->input_channel[start + k] * tile);
      for (size_t j = 0; j < width; ++j) {
        weights[k * width + j] = w->values[w->row_start[first + j] + k];
      }
    }
    unit[u].offsets = offsets;
    unit[u].weights = weights;
    unit[u].bias = bias + first;
    offsets += unit[u].count;
    /* Each unit's weights start on a cache line (width is 16 or 32). */
    weights += unit[u].count * width;
  }
  op->block_mode = 1;
  op->units = units;
  op->unit = unit;
  return 0;
}

/* Pixels per run of `g`, or SIZE_MAX when they overflow. Sides are below
 * 2^24 and batch below 2^31 (compute_geometry). */
static size_t pixels_per_run(const clicktrain_spconv1x1_geometry* g) {
  const size_t image = (size_t)g->output_height * (size_t)g->output_width;
  if (g->batch < 0 || (size_t)g->batch > SIZE_MAX / 2 / (image == 0 ? 1 : image)) {
    return SIZE_MAX;
  }
  return (size_t)g->batch * image;
}

size_t clicktrain_spconv1x1_few_pixel_bytes(
    const clicktrain_spconv1x1_geometry* geometry, size_t few_pixel_limit) {
  const size_t pixels = pixels_per_run(geometry);
  if (pixels == SIZE_MAX) return SIZE_MAX;
  if (few_pixel_limit == 0 || pixels > few_pixel_limit) return 0;
  if (geometry->input_channels < 1 || geometry->output_channels < 1 ||
      geometry->input_channels > CLICKTRAIN_SPCONV1X1_MAX_CHANNELS ||
      geometry->output_channels > CLICKTRAIN_SPCONV1X1_MAX_CHANNELS) {
    return SIZE_MAX;
  }
  /* The padded bias, then the panels: (2^16 + 1) x 2^16 floats at most,
   * checked anyway for 32-bit size_t. */
  const size_t padded = align_floats((size_t)geometry->output_channels);
  const size_t rows = (size_t)geometry->input_channels + 1;
  if (rows > SIZE_MAX / sizeof(float) / padded) return SIZE_MAX;
  return rows * padded * sizeof(float);
}

/* Few-pixel mode: expands the compact rows into the padded bias and the
 * dense, zero-filled panels (layout in include/clicktrain/sparse_conv1x1.h),
 * one allocation of exactly clicktrain_spconv1x1_few_pixel_bytes. */
static int setup_few_pixel_mode(clicktrain_spconv1x1_operator* op,
                                const clicktrain_spconv1x1_weights* w,
                                size_t bytes) {
  _Static_assert(CLICKTRAIN_SPCONV1X1_VECTOR_FLOATS == kAlignment / sizeof(float),
                 "the last panel is padded as align_floats pads");
  if (bytes == 0 || bytes == SIZE_MAX) return -1;
  float* memory = (float*)aligned_alloc(kAlignment, bytes);
  if (memory == NULL) return -1;
  memset(memory, 0, bytes);
  const size_t input_channels = w->input_channels;
  const size_t padded = align_floats(w->output_channels);
  float* weights = memory + padded;
  memcpy(memory, w->bias, w->output_channels * sizeof(float));
  for (size_t o = 0; o < w->output_channels; ++o) {
    const size_t panel_start = o / CLICKTRAIN_SPCONV1X1_PANEL * CLICKTRAIN_SPCONV1X1_PANEL;
    const size_t width = padded - panel_start < CLICKTRAIN_SPCONV1X1_PANEL
                             ? padded - panel_start
                             : CLICKTRAIN_SPCONV1X1_PANEL;
    float* column = weights + panel_start * input_channels + (o - panel_start);
    for (uint32_t k = w->row_start[o]; k < w->row_start[o + 1]; ++k) {
      column[(size_t)w->input_channel[k] * width] = w->values[k];
    }
  }
  op->memory = memory;
  op->memory_bytes = bytes;
  op->few_pixel_mode = 1;
  op->dense_panels = (padded + CLICKTRAIN_SPCONV1X1_PANEL - 1) / CLICKTRAIN_SPCONV1X1_PANEL;
  op->dense_bias = memory;
  op->dense_weights = weights;
  return 0;
}

int clicktrain_spconv1x1_operator_setup(
    clicktrain_spconv1x1_operator* op,
    const clicktrain_spconv1x1_geometry* geometry,
    const clicktrain_spconv1x1_weights* weights,
    const clicktrain_spconv1x1_ukernels* ukernels, int max_threads,
    size_t few_pixel_limit) {
  memset(op, 0, sizeof(*op));
  const clicktrain_spconv1x1_geometry* g = geometry;
  if ((uint32_t)g->input_channels != weights->input_channels ||
      (uint32_t)g->output_channels != weights->output_channels ||
      ukernels->pixel_tile == 0 || ukernels->pixel_tile > kMaxPixelTile) {
    return -1;
  }
  op->geometry = *geometry;
  op->ukernels = ukernels;
  op->max_threads = max_threads < 1 ? 1
                    : max_threads > CLICKTRAIN_SPCONV1X1_MAX_THREADS
                        ? CLICKTRAIN_SPCONV1X1_MAX_THREADS
                        : max_threads;
  op->pixels = pixels_per_run(g);
  if (op->pixels == SIZE_MAX) return -1;
  const size_t tile = ukernels->pixel_tile;
  op->pixel_tiles = (op->pixels + tile - 1) / tile;
  const size_t few_pixel_bytes = clicktrain_spconv1x1_few_pixel_bytes(g, few_pixel_limit);
  if (few_pixel_bytes != 0 && ukernels->few_pixel_compute != NULL) {
    return setup_few_pixel_mode(op, weights, few_pixel_bytes);
  }

  const size_t input_channels = weights->input_channels;
  const size_t output_channels = weights->output_channels;
  if (input_channels * tile > (size_t)INT32_MAX) return -1;
  if (ukernels->block_compute != NULL && has_block_structure(weights)) {
    return setup_block_mode(op, weights);
  }
  const size_t nonzeros = weights->num_nonzeros;
  size_t blocks = (input_channels * tile * sizeof(float) + kBlockBytes - 1) / kBlockBytes;
  if (blocks < 1) blocks = 1;
  op->block_channels = (input_channels + blocks - 1) / blocks;
  op->channel_blocks = (input_channels + op->block_channels - 1) / op->block_channels;
  blocks = op->channel_blocks;
  /* Word and index counts: nonzeros < 2^32, blocks * channels < 2^17. */
  if (nonzeros > SIZE_MAX / 16 || blocks * output_channels > SIZE_MAX / 16) {
    return -1;
  }
  const size_t program_words =
      align_floats(2 * blocks * output_channels + 2 * nonzeros);
  const size_t starts_words =
      align_floats(blocks * output_channels * sizeof(size_t) / sizeof(float));
  const size_t groups = (output_channels + kFilterGroup - 1) / kFilterGroup;
  op->max_chunk_filters =
      blocks == 1 ? kFilterGroup
      : groups * kFilterGroup < kMaxChunkFilters ? groups * kFilterGroup
                                                 : kMaxChunkFilters;
  op->slot_floats =
      align_floats(input_channels * tile + op->max_chunk_filters * tile);
  const size_t scratch_floats = op->slot_floats * (size_t)op->max_threads;
  const size_t total_bytes =
      (program_words + starts_words + scratch_floats) * sizeof(float);
  char* memory = (char*)aligned_alloc(kAlignment, total_bytes);
  if (memory == NULL) return -1;
  op->memory = memory;
  op->memory_bytes = total_bytes;
  op->program = (clicktrain_spconv1x1_word*)memory;
  op->filter_program_start = (size_t*)(memory + program_words * sizeof(float));
  op->scratch =
      (float*)(memory + (program_words + starts_words) * sizeof(float));
  /* Tile tails past the last pixel are computed but never copied out; zero
   * them once so they hold finite values. */
  memset(op->scratch, 0, scratch_floats * sizeof(float));

  /* Row o's kept weights ascend by input channel: block b's are a run. */
  clicktrain_spconv1x1_word* word = op->program;
  for (size_t b = 0; b < blocks; ++b) {
    const size_t block_end = (b + 1) * op->block_channels;
    for (size_t o = 0; o < output_channels; ++o) {
      op->filter_program_start[b * output_channels + o] =
          (size_t)(word - op->program);
      uint32_t k = weights->row_start[o];
      const uint32_t end = weights->row_start[o + 1];
      while (k < end && weights->input_channel[k] < b * op->block_channels) ++k;
      clicktrain_spconv1x1_word* count = word;
      count->count = 0;
      word[1].weight = weights->bias[o];
      word += 2;
      for (; k < end && weights->input_channel[k] < block_end; ++k, word += 2) {
        word[0].offset = (int32_t)(weights->input_channel[k] * tile);
        word[1].weight = weights->values[k];
        ++count->count;
      }
    }
  }
  return 0;
}

void clicktrain_spconv1x1_operator_release(clicktrain_spconv1x1_operator* op) {
  free(op->memory);
  memset(op, 0, sizeof(*op));
}

/* ------------------------------------------------------------------------ */

typedef struct run_context {
  clicktrain_spconv1x1_operator* op;
  const float* input;
  float* output;
  size_t filter_chunks;
  size_t chunk_filters;
} run_context;

/* At most max_threads tasks run at once, so a free slot always exists. */
static int claim_slot(clicktrain_spconv1x1_operator* op) {
  for (;;) {
    uint64_t used = __atomic_load_n(&op->slots_in_use, __ATOMIC_RELAXED);
    for (int slot = 0; slot < op->max_threads; ++slot) {
      const uint64_t bit = (uint64_t)1 << slot;
      if (used & bit) continue;
      if (__atomic_compare_exchange_n(&op->slots_in_use, &used, used | bit, 0,
                                      __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        return slot;
      }
      break;  /* `used` was refreshed: rescan */
    }
  }
}

static void release_slot(clicktrain_spconv1x1_operator* op, int slot) {
  __atomic_fetch_and(&op->slots_in_use, ~((uint64_t)1 << slot),
                     __ATOMIC_RELEASE);
}

/* Output pixels [first, first + count) -> planar[channel][pixel - first]. */
static void pack_tile(const clicktrain_spconv1x1_operator* op,
                      const float* input, size_t first, size_t count,
                      float* planar) {
  const clicktrain_spconv1x1_geometry* g = &op->geometry;
  const size_t channels = (size_t)g->input_channels;
  const size_t tile = op->ukernels->pixel_tile;
  if (g->stride_h == 1 && g->stride_w == 1) {
    op->ukernels->transpose(count, channels, input + first * channels,
                            channels, planar, tile);
    return;
  }
  const size_t width = (size_t)g->output_width;
  const size_t height = (size_t)g->output_height;
  for (size_t done = 0; done < count;) {
    const size_t pixel = first + done;
    const size_t row = pixel / width;  /* over batch * output_height */
    const size_t x = pixel % width;
    size_t segment = width - x;
    if (segment > count - done) segment = count - done;
    const size_t n = row / height;
    const size_t y = row % height;
    const float* source =
        input + ((n * (size_t)g->input_height + y * (size_t)g->stride_h) *
                     (size_t)g->input_width +
                 x * (size_t)g->stride_w) * channels;
    op->ukernels->transpose(segment, channels, source,
                            (size_t)g->stride_w * channels, planar + done,
                            tile);
    done += segment;
  }
}

static void run_task(void* context, size_t index) {
  const run_context* run = (const run_context*)context;
  clicktrain_spconv1x1_operator* op = run->op;
  const clicktrain_spconv1x1_geometry* g = &op->geometry;
  const clicktrain_spconv1x1_ukernels* ukernels = op->ukernels;
  const size_t tile = ukernels->pixel_tile;
  const size_t first = index / run->filter_chunks * tile;
  size_t count = op->pixels - first;
  if (count > tile) count = tile;
  const size_t output_channels = (size_t)g->output_channels;
  const size_t first_filter = index % run->filter_chunks * run->chunk_filters;
  size_t end_filter = first_filter + run->chunk_filters;
  if (end_filter > output_channels) end_filter = output_channels;

  const int slot = claim_slot(op);
  float* planar = op->scratch + (size_t)slot * op->slot_floats;
  float* results = planar + (size_t)g->input_channels * tile;
  pack_tile(op, run->input, first, count, planar);
  if (op->block_mode) {
    /* Task chunks are ranges of units. */
    const size_t first_unit = index % run->filter_chunks * run->chunk_filters;
    size_t end_unit = first_unit + run->chunk_filters;
    if (end_unit > op->units) end_unit = op->units;
    for (size_t u = first_unit; u < end_unit; ++u) {
      const clicktrain_spconv1x1_unit* unit = &op->unit[u];
      ukernels->block_compute(
          count, unit->count, unit->groups, unit->offsets, unit->weights,
          unit->bias, planar,
          run->output + first * output_channels + unit->first_channel,
          output_channels, g->output_min, g->output_max);
    }
  } else if (op->channel_blocks == 1) {
    for (size_t f = first_filter; f < end_filter; f += kFilterGroup) {
      size_t filters = end_filter - f;
      if (filters > kFilterGroup) filters = kFilterGroup;
      ukernels->compute(filters, op->program + op->filter_program_start[f],
                        planar, results, count, 0, g->output_min,
                        g->output_max);
      ukernels->transpose(filters, count, results, tile,
                          run->output + first * output_channels + f,
                          output_channels);
    }
  } else {
    /* Each block of input channels stays in L1 while every filter of the
     * chunk adds its part; the clamp waits for the last block. */
    for (size_t b = 0; b < op->channel_blocks; ++b) {
      const int last = b + 1 == op->channel_blocks;
      ukernels->compute(
          end_filter - first_filter,
          op->program + op->filter_program_start[b * output_channels + first_filter],
          planar, results, count, b != 0, last ? g->output_min : -INFINITY,
          last ? g->output_max : INFINITY);
    }
    const size_t stripe_pixels =
        output_channels % kStripeChannels == 0 ? kStripePixels : count;
    for (size_t p = 0; p < count; p += stripe_pixels) {
      const size_t stripe = count - p < stripe_pixels ? count - p : stripe_pixels;
      ukernels->transpose(end_filter - first_filter, stripe, results + p, tile,
                          run->output + (first + p) * output_channels + first_filter,
                          output_channels);
    }
  }
  release_slot(op, slot);
}

/* Few-pixel mode: a task is a range of output channels over every pixel;
 * output rows are runs of equally spaced input pixels. */
typedef struct few_pixel_context {
  const clicktrain_spconv1x1_operator* op;
  const float* input;
  float* output;
  size_t chunk_channels;
} few_pixel_context;

static void run_few_pixel_task(void* context, size_t index) {
  const few_pixel_context* run = (const few_pixel_context*)context;
  const clicktrain_spconv1x1_operator* op = run->op;
  const clicktrain_spconv1x1_geometry* g = &op->geometry;
  const size_t input_channels = (size_t)g->input_channels;
  const size_t output_channels = (size_t)g->output_channels;
  const size_t first = index * run->chunk_channels;
  size_t channels = output_channels - first;
  if (channels > run->chunk_channels) channels = run->chunk_channels;
  const int unstrided = g->stride_h == 1 && g->stride_w == 1;
  /* Unstrided, every pixel of the run follows the previous one. */
  const size_t rows = unstrided ? 1 : (size_t)g->batch * (size_t)g->output_height;
  const size_t row_pixels = unstrided ? op->pixels : (size_t)g->output_width;
  for (size_t row = 0; row < rows; ++row) {
    const size_t n = row / (size_t)g->output_height;
    const size_t y = row % (size_t)g->output_height;
    const float* source =
        unstrided ? run->input
                  : run->input + (n * (size_t)g->input_height + y * (size_t)g->stride_h) *
                                     (size_t)g->input_width * input_channels;
    op->ukernels->few_pixel_compute(
        row_pixels, input_channels, channels, source,
        (size_t)g->stride_w * input_channels,
        op->dense_weights + first * input_channels, op->dense_bias + first,
        run->output + row * row_pixels * output_channels + first,
        output_channels, g->output_min, g->output_max);
  }
}

static void run_few_pixels(clicktrain_spconv1x1_operator* op,
                           const float* input, float* output,
                           clicktrain_thread_pool* pool, int threads) {
  /* Threads split the output channels in whole panels, only when each
   * gets enough multiply-adds to repay waking it. */
  const size_t panel = CLICKTRAIN_SPCONV1X1_PANEL;
  const size_t panels = op->dense_panels;
  const size_t work =
      op->pixels * (size_t)op->geometry.input_channels * panels * panel;
  size_t chunks = work / kFewPixelTaskWork;
  if (chunks > (size_t)threads) chunks = (size_t)threads;
  if (chunks > panels) chunks = panels;
  if (chunks < 1) chunks = 1;
  few_pixel_context run = {op, input, output,
                           (panels + chunks - 1) / chunks * panel};
  const size_t tasks =
      ((size_t)op->geometry.output_channels + run.chunk_channels - 1) / run.chunk_channels;
  if (tasks == 1) {
    run_few_pixel_task(&run, 0);
  } else {
    clicktrain_thread_pool_parallelize(pool, run_few_pixel_task, &run, tasks);
  }
}

void clicktrain_spconv1x1_operator_run(clicktrain_spconv1x1_operator* op,
                                       const float* input, float* output,
                                       clicktrain_thread_pool* pool) {
  if (op->pixels == 0) return;
  int threads = clicktrain_thread_pool_threads(pool);
  if (threads > op->max_threads) {
    pool = NULL;
    threads = 1;
  }
  if (op->few_pixel_mode) {
    run_few_pixels(op, input, output, pool, threads);
    return;
  }
  /* Block mode splits its units the way the other mode splits its groups
   * of kFilterGroup filters. */
  const size_t groups =
      op->block_mode
          ? op->units
          : ((size_t)op->geometry.output_channels + kFilterGroup - 1) / kFilterGroup;
  /* Split output channels only when pixel tiles alone cannot keep every
   * thread busy: each chunk re-packs its tile. */
  size_t chunks = 1;
  const size_t wanted_tasks = (size_t)threads * kTasksPerThread;
  if (threads > 1 && op->pixel_tiles < wanted_tasks) {
    chunks = (wanted_tasks + op->pixel_tiles - 1) / op->pixel_tiles;
    if (chunks > groups) chunks = groups;
  }
  size_t groups_per_chunk = (groups + chunks - 1) / chunks;
  /* Across channel blocks a slot keeps every filter's partial sums. */
  if (op->channel_blocks > 1 &&
      groups_per_chunk * kFilterGroup > op->max_chunk_filters) {
    groups_per_chunk = op->max_chunk_filters / kFilterGroup;
  }
  run_context run = {op, input, output, 0,
                     op->block_mode ? groups_per_chunk
                                    : groups_per_chunk * kFilterGroup};
  run.filter_chunks = (groups + groups_per_chunk - 1) / groups_per_chunk;
  clicktrain_thread_pool_parallelize(pool, run_task, &run,
                                     op->pixel_tiles * run.filter_chunks);
}
