#include "pattern_conv_operator.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
  kAlignment = 64,
  /* Sub-plane rows are a multiple of this many floats (32 bytes), so every
   * tap offset keeps vector loads within cache lines. */
  kColumnAlignment = 8,
  kMaxColumnPaddingDivisor = 6,
  /* Filters per block: each chunk's planes, loaded into L1 once per block,
   * feed this many filters; the block's output tile (pixel_tile floats per
   * filter, 18 KB for AVX-512) stays in L1 too. */
  kFilterBlock = 32,
  kMaxPixelTile = 256,
  /* A band buffer this size stays in a core's L2 cache next to the weights
   * and the output tiles. */
  kBandBufferBytes = 512 * 1024,
  /* A chunk's tile of planes this size is read from L2 once per filter
   * block; measured best from 28 to 40 KB with 32-filter blocks at 4x and
   * 8x compression (larger than L1: the tile's rows a filter reads are a
   * part of it). Sparser layers have fewer kernels per filter and chunk,
   * so each chunk's fixed cost (the filter header, the partial sums loaded
   * and stored) weighs more: their chunks grow in proportion, up to 2x
   * (12x compression: 48 KB, 1-5% faster than 32 KB on ResNet-18's 3x3
   * layers; 64 KB at 4x is 4-5% slower). */
  kChunkBytes = 32 * 1024,
  /* Layers whose filters come in groups (group entries, each plane load
   * feeding 4 FMAs) run best with chunks this large, i.e. most often one
   * chunk: 1.1-1.25x faster than 32 KB on ResNet-18's 3x3 layers at 8x,
   * flat from 128 KB to 384 KB. */
  kGroupChunkBytes = 256 * 1024,
  /* Kept weights per dense weight (1/compression) at which chunks start
   * growing, as kChunkDensityNumerator / kChunkDensityDenominator. */
  kChunkDensityNumerator = 1,
  kChunkDensityDenominator = 8,
  kKernelColumns = CLICKTRAIN_KERNEL_SIZE,
  /* Tiles start on 64-byte boundaries and hold whole 512-bit vectors. */
  kTileAlignment = 16,
  kAliasingFloats = 1024 / sizeof(float),
};

static size_t align_up(size_t size, size_t alignment) {
  return (size + alignment - 1) / alignment * alignment;
}

static size_t phase_index(const clicktrain_patconv_operator* op, int ky) {
  const int value = ky * op->geometry.dilation_h % op->geometry.stride_h;
  size_t index = 0;
  while (op->phase_value[index] != value) ++index;
  return index;
}

static void valid_columns(const clicktrain_conv_geometry* g, int kx,
                          long* first, long* end);

/* Fills op->column_source, column_shift, column_sub_plane and sub_planes
 * (after op->columns and op->copies): kernel column kx of a strided layer
 * whose input pixels at output column x are those of an earlier kernel
 * column at x + shift (shift > 0 whole columns) reads that column's
 * sub-plane `shift` floats further on, when the reads past the row's last
 * output column stay within its zero padding columns: no sub-plane of its
 * own is packed. */
static void share_columns(clicktrain_patconv_operator* op) {
  const clicktrain_conv_geometry* g = &op->geometry;
  op->sub_planes = 0;
  for (int kx = 0; kx < kKernelColumns; ++kx) {
    op->column_source[kx] = kx;
    op->column_shift[kx] = 0;
    for (int source = 0; g->stride_w > 1 && op->copies == 1 && source < kx;
         ++source) {
      if (op->column_source[source] != source) continue;
      const long distance = (long)(kx - source) * g->dilation_w;
      if (distance % g->stride_w != 0) continue;
      const long columns = distance / g->stride_w;
      long first, end, source_first, source_end;
      valid_columns(g, kx, &first, &end);
      valid_columns(g, source, &source_first, &source_end);
      if (first + columns < source_first || end + columns > source_end ||
          (size_t)g->output_width + (size_t)columns > op->columns) {
        continue;
      }
      op->column_source[kx] = source;
      op->column_shift[kx] = (size_t)columns;
      break;
    }
    op->column_sub_plane[kx] = op->column_source[kx] == kx
                                   ? op->sub_planes++
                                   : op->column_sub_plane[op->column_source[kx]];
  }
}

/* Offset, within a channel's planes, of sub-plane kx of row phase `phase`
 * (twin 1: its copy shifted by op->twin_shift floats). */
static size_t sub_plane_offset(const clicktrain_patconv_operator* op,
                               size_t phase, size_t kx, size_t twin) {
  return ((phase * op->sub_planes + op->column_sub_plane[kx]) * op->copies +
          twin) *
         op->sub_plane_stride;
}

/* Offset, within a channel's planes, of 3x3 position `position`: a multiple
 * of the kernels' vector length, so no load splits a cache line. */
static size_t tap_offset(const clicktrain_patconv_operator* op, int position) {
  const clicktrain_conv_geometry* g = &op->geometry;
  const int ky = position / CLICKTRAIN_KERNEL_SIZE;
  const int column = position % CLICKTRAIN_KERNEL_SIZE;
  const size_t kx = (size_t)op->column_source[column];
  const size_t row = (size_t)(ky * g->dilation_h / g->stride_h);
  const size_t twin = op->copies > 1 && (row * op->columns) % op->vector_floats != 0;
  return sub_plane_offset(op, phase_index(op, ky), kx, twin) +
         row * op->columns - twin * op->twin_shift + op->column_shift[column];
}

/* Pixels per tile for a band of `rows` output rows: equal tiles of whole
 * vectors, so no tile is a short tail. */
static size_t tile_pixels(const clicktrain_patconv_operator* op, size_t rows) {
  const size_t band_pixels = rows * op->columns;
  const size_t tiles = (band_pixels + op->pixel_tile - 1) / op->pixel_tile;
  return align_up((band_pixels + tiles - 1) / tiles, kTileAlignment);
}

/* One tap of a filter in a chunk: its offset in the planes and weight. */
typedef struct tap_pair {
  int32_t offset;
  float weight;
} tap_pair;

static int compare_tap_offsets(const void* a, const void* b) {
  const int32_t x = ((const tap_pair*)a)->offset;
  const int32_t y = ((const tap_pair*)b)->offset;
  return (x > y) - (x < y);
}

/* Filter o's taps on input channels [first_channel, end_channel) ->
 * `taps`, in ascending offset order (channel by channel, so the loads walk
 * the chunk's planes forward); returns their count. */
static size_t collect_taps(const clicktrain_patconv_operator* op, size_t o,
                           size_t first_channel, size_t end_channel,
                           tap_pair* taps) {
  const clicktrain_pattern_weights* w = op->weights;
  size_t count = 0;
  uint32_t kernel = w->filter_kernel_start[o];
  const float* value = w->values + w->filter_value_start[o];
  for (uint32_t p = 0; p < w->num_patterns; ++p) {
    const uint32_t run = w->pattern_run_lengths[o * w->num_patterns + p];
    const unsigned mask = w->pattern_masks[p];
    const uint32_t size = (uint32_t)__builtin_popcount(mask);
    for (uint32_t j = 0; j < run; ++j, value += size) {
      const size_t channel = w->kernel_input_channels[kernel + j];
      if (channel < first_channel || channel >= end_channel) continue;
      uint32_t t = 0;
      for (int position = 0; position < CLICKTRAIN_KERNEL_POSITIONS;
           ++position) {
        if (!((mask >> position) & 1u)) continue;
        taps[count].offset = (int32_t)(channel * op->channel_stride +
                                       tap_offset(op, position));
        taps[count].weight = value[t++];
        ++count;
      }
    }
    kernel += run;
  }
  /* Offsets are distinct: one per (channel, position). */
  qsort(taps, count, sizeof(tap_pair), compare_tap_offsets);
  return count;
}

static uint32_t chunk_flags(const clicktrain_patconv_operator* op,
                            size_t chunk) {
  return (chunk > 0 ? CLICKTRAIN_PATCONV_ACCUMULATE : 0u) |
         (chunk + 1 == op->chunks ? CLICKTRAIN_PATCONV_FINAL : 0u);
}

/* The most taps one filter has in one chunk: a bound on collect_taps. */
static size_t most_taps_per_filter(const clicktrain_patconv_operator* op) {
  const clicktrain_pattern_weights* w = op->weights;
  size_t most_kernels = 0;
  for (size_t o = 0; o < w->output_channels; ++o) {
    const size_t kernels = w->filter_kernel_start[o + 1] - w->filter_kernel_start[o];
    if (kernels > most_kernels) most_kernels = kernels;
  }
  if (most_kernels > op->chunk_channels) most_kernels = op->chunk_channels;
  return most_kernels * CLICKTRAIN_KERNEL_POSITIONS;
}

/* Writes the filter program (or, with program == NULL, only counts its
 * words), filter block by block, chunk of input channels by chunk: a group
 * entry for each CLICKTRAIN_PATCONV_GROUP_FILTERS filters (aligned) whose
 * taps in the chunk have the same offsets, and one entry per filter
 * otherwise, its taps as one flat list of (offset, weight) pairs. A flat
 * list runs as one loop per filter and chunk: grouping a filter's taps by
 * pattern measured 1.1-1.6x slower at 8x compression, from the mispredicted
 * exits of the many short group loops. `scratch` holds the taps of a group's
 * filters in a chunk. */
static size_t emit_program(clicktrain_patconv_operator* op,
                           clicktrain_patconv_word* program,
                           tap_pair* scratch) {
  enum { kGroup = CLICKTRAIN_PATCONV_GROUP_FILTERS };
  const clicktrain_pattern_weights* w = op->weights;
  const size_t output_channels = w->output_channels;
  const size_t most_taps = most_taps_per_filter(op);
  size_t n = 0;
  op->group_entries = 0;
  for (size_t block = 0; block < op->filter_blocks; ++block) {
    const size_t first_filter = block * op->filter_block;
    size_t end_filter = first_filter + op->filter_block;
    if (end_filter > output_channels) end_filter = output_channels;
    for (size_t chunk = 0; chunk < op->chunks; ++chunk) {
      if (program != NULL) {
        op->chunk_program_start[block * op->chunks + chunk] = n;
      }
      const size_t first_channel = chunk * op->chunk_channels;
      size_t end_channel = first_channel + op->chunk_channels;
      if (end_channel > w->input_channels) end_channel = w->input_channels;
      for (size_t o = first_filter; o < end_filter;) {
        const size_t filters =
            !op->depthwise && end_filter - o >= kGroup ? kGroup : 1;
        size_t taps[kGroup];
        int same = filters == kGroup;
        for (size_t f = 0; f < filters; ++f) {
          tap_pair* list = scratch + f * most_taps;
          taps[f] = collect_taps(op, o + f, first_channel, end_channel, list);
          for (size_t t = 0; same && f > 0 && t < taps[f]; ++t) {
            same = list[t].offset == scratch[t].offset;
          }
          same = same && taps[f] == taps[0];
        }
        if (same) {
          if (program != NULL) {
            clicktrain_patconv_word* entry = program + n;
            entry[0].count = (uint32_t)taps[0] | chunk_flags(op, chunk) |
                             CLICKTRAIN_PATCONV_GROUP;
            for (size_t f = 0; f < kGroup; ++f) {
              entry[1 + f].weight = w->bias[o + f];
            }
            for (size_t t = 0; t < taps[0]; ++t) {
              clicktrain_patconv_word* word = entry + 1 + kGroup + t * (1 + kGroup);
              word[0].offset = scratch[t].offset;
              for (size_t f = 0; f < kGroup; ++f) {
                word[1 + f].weight = scratch[f * most_taps + t].weight;
              }
            }
          }
          n += 1 + kGroup + (1 + kGroup) * taps[0];
          op->group_entries++;
          o += kGroup;
          continue;
        }
        for (size_t f = 0; f < filters; ++f) {
          if (program != NULL) {
            const tap_pair* list = scratch + f * most_taps;
            program[n].count = (uint32_t)taps[f] | chunk_flags(op, chunk);
            program[n + 1].weight = w->bias[o + f];
            for (size_t t = 0; t < taps[f]; ++t) {
              program[n + 2 + 2 * t].offset = list[t].offset;
              program[n + 3 + 2 * t].weight = list[t].weight;
            }
          }
          n += 2 + 2 * taps[f];
        }
        o += filters;
      }
    }
  }
  return n;
}

/* 1 when at least half of the layer's aligned runs of
 * CLICKTRAIN_PATCONV_GROUP_FILTERS filters keep the same input channels
 * with the same patterns (the program then holds mostly group entries). */
static int filters_mostly_grouped(const clicktrain_pattern_weights* w) {
  enum { kGroup = CLICKTRAIN_PATCONV_GROUP_FILTERS };
  size_t runs = 0, grouped = 0;
  for (size_t o = 0; o + kGroup <= w->output_channels; o += kGroup, ++runs) {
    const uint32_t kernels = w->filter_kernel_start[o + 1] - w->filter_kernel_start[o];
    int same = 1;
    for (size_t f = o + 1; same && f < o + kGroup; ++f) {
      same = w->filter_kernel_start[f + 1] - w->filter_kernel_start[f] == kernels &&
             memcmp(w->pattern_run_lengths + f * w->num_patterns,
                    w->pattern_run_lengths + o * w->num_patterns,
                    w->num_patterns * sizeof(uint16_t)) == 0 &&
             memcmp(w->kernel_input_channels + w->filter_kernel_start[f],
                    w->kernel_input_channels + w->filter_kernel_start[o],
                    kernels * sizeof(uint16_t)) == 0;
    }
    grouped += (size_t)same;
  }
  return runs > 0 && 2 * grouped >= runs;
}

static int weights_are_finite(const clicktrain_pattern_weights* w) {
  for (uint32_t i = 0; i < w->num_values; ++i) {
    if (!isfinite(w->values[i])) return 0;
  }
  return 1;
}

/* Grows the band buffers to `count`; their padding zeros are written here,
 * once. Returns 0, or -1 when an allocation fails (the buffers allocated so
 * far stay usable). */
static int add_buffers(clicktrain_patconv_operator* op, size_t count) {
  if (count > CLICKTRAIN_PATCONV_MAX_BUFFERS) count = CLICKTRAIN_PATCONV_MAX_BUFFERS;
  const size_t bytes = op->buffer_floats * sizeof(float);
  while (op->allocated_buffers < count) {
    float* buffer = (float*)aligned_alloc(kAlignment, bytes);
    if (buffer == NULL) return -1;
    memset(buffer, 0, bytes);
    op->buffers[op->allocated_buffers++] = buffer;
    op->scratch_bytes += bytes;
  }
  return 0;
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
  if (kernels->planar == NULL || kernels->transpose == NULL ||
      kernels->pixel_tile == 0 || kernels->pixel_tile > kMaxPixelTile ||
      kernels->pixel_tile % kTileAlignment != 0 ||
      !weights_are_finite(weights)) {
    return 0;
  }
  for (int ky = 0; ky < CLICKTRAIN_KERNEL_SIZE; ++ky) {
    const int value = ky * g->dilation_h % g->stride_h;
    size_t index = 0;
    while (index < op->row_phases && op->phase_value[index] != value) ++index;
    if (index == op->row_phases) op->phase_value[op->row_phases++] = value;
  }
  /* Overflow-safe sizes: every factor is below 2^25 and checked against a
   * bound that is itself far below SIZE_MAX. */
  const size_t input_image =
      (size_t)g->input_height * g->input_width * g->input_channels;
  const size_t output_image =
      (size_t)g->output_height * g->output_width * g->output_channels;
  const size_t scratch_limit =
      4 * (input_image + output_image) + CLICKTRAIN_PATCONV_FIXED_SCRATCH_FLOATS;
  const size_t reach = (size_t)(2 * g->dilation_h / g->stride_h);
  const size_t channels = (size_t)g->input_channels;
  /* Vector loads that straddle two cache lines cost two. With vectors wider
   * than the column alignment (AVX-512), rows are padded to whole vectors
   * when that adds at most 1/kMaxColumnPaddingDivisor of the pixels (56 ->
   * 64 columns); otherwise (7 -> 8 columns) a row offset that is not a
   * whole number of vectors reads a twin of the sub-plane shifted by the
   * remainder, so every load is aligned: 1.1-1.4x at 8x compression.
   * Layers of grouped filters load each input vector once per 4 FMAs, so
   * split loads cost them little (6-8% when 2 of 3 loads split) and neither
   * is worth it: 8-float rows measured 4% faster at 56x56 and 7% at 7x7
   * (no padding columns to compute, no twins to copy). */
  op->vector_floats = kernels->vector_floats;
  op->columns = align_up((size_t)g->output_width, kColumnAlignment);
  op->copies = 1;
  const int grouped = !depthwise && filters_mostly_grouped(weights);
  if (!grouped && op->vector_floats > kColumnAlignment &&
      op->vector_floats % kColumnAlignment == 0 &&
      op->columns % op->vector_floats != 0) {
    const size_t padded = align_up(op->columns, op->vector_floats);
    if ((padded - (size_t)g->output_width) * kMaxColumnPaddingDivisor <=
        (size_t)g->output_width) {
      op->columns = padded;
    } else {
      op->copies = 2;
      op->twin_shift = op->columns % op->vector_floats;
    }
  }
  share_columns(op);
  /* Floats of one buffer row (all channels, phases, kernel columns and
   * twins). */
  const size_t row_floats =
      channels * op->row_phases * op->sub_planes * op->copies *
      op->columns;
  if (reach + 1 > scratch_limit / row_floats) return 0;
  /* Bands fill about kBandBufferBytes, at least one output row and at least
   * a pixel tile: a thinner band of a small, deep map (7x7x512) would cut
   * the register tiles short and pack its kernel reach over and over. */
  size_t band_rows = kBandBufferBytes / sizeof(float) / row_floats;
  band_rows = band_rows > reach + 1 ? band_rows - reach : 1;
  const size_t tile_rows = (kernels->pixel_tile + op->columns - 1) / op->columns;
  if (band_rows < tile_rows && tile_rows + reach <= scratch_limit / row_floats) {
    band_rows = tile_rows;
  }
  if (band_rows > (size_t)g->output_height) band_rows = (size_t)g->output_height;
  /* Equal bands: no short last band. */
  op->bands = ((size_t)g->output_height + band_rows - 1) / band_rows;
  op->band_rows = ((size_t)g->output_height + op->bands - 1) / op->bands;
  op->band_buffer_rows = op->band_rows + reach;
  /* Sub-planes a multiple of 1 KB long would put the taps a tile reads, one
   * per sub-plane and channel, on a quarter of the L1 sets (4 KB apart
   * alias): those get one cache line more. Other lengths measured best
   * unpadded. */
  op->sub_plane_stride =
      align_up(op->band_buffer_rows * op->columns, kTileAlignment);
  if (op->sub_plane_stride % kAliasingFloats == 0) {
    op->sub_plane_stride += kAlignment / sizeof(float);
  }
  op->channel_stride =
      op->row_phases * op->sub_planes * op->copies *
      op->sub_plane_stride;
  /* Past the last sub-plane: the register tiles' slack, and the shift of a
   * kernel column sharing it (less than kColumnAlignment). */
  op->buffer_floats = align_up(op->channel_stride * channels +
                                   CLICKTRAIN_PATCONV_PIXEL_SLACK +
                                   kColumnAlignment,
                               kAlignment / sizeof(float));
  if (op->buffer_floats > scratch_limit ||
      op->buffer_floats > (size_t)INT32_MAX) {
    return 0;
  }

  op->pixel_tile = kernels->pixel_tile;
  op->filter_block = (size_t)g->output_channels < kFilterBlock
                         ? (size_t)g->output_channels
                         : kFilterBlock;
  op->filter_blocks =
      ((size_t)g->output_channels + op->filter_block - 1) / op->filter_block;
  op->tile_stride = op->pixel_tile + CLICKTRAIN_PATCONV_PIXEL_SLACK;

  /* Chunks of input channels whose tile of planes fits the L1 cache, so it
   * is read from L2 once per filter block rather than once per filter.
   * Depthwise filters share no channel: one chunk. */
  const size_t tile_bytes_per_channel =
      op->row_phases * op->sub_planes * op->copies *
      (tile_pixels(op, op->band_rows) + reach * op->columns) * sizeof(float);
  /* chunk = kChunkBytes * clamp((1/8) / density, 1, 2), density = kept
   * weights / dense weights; in 64-bit, num_values < 2^32. */
  const uint64_t dense_weights = (uint64_t)CLICKTRAIN_KERNEL_POSITIONS *
                                 channels * (size_t)g->output_channels;
  uint64_t chunk_bytes = grouped ? kGroupChunkBytes : kChunkBytes;
  if (!grouped && (uint64_t)weights->num_values * kChunkDensityDenominator <
                      dense_weights * kChunkDensityNumerator) {
    chunk_bytes = (uint64_t)kChunkBytes * dense_weights * kChunkDensityNumerator /
                  ((uint64_t)kChunkDensityDenominator *
                   (weights->num_values > 0 ? weights->num_values : 1));
    if (chunk_bytes > 2 * (uint64_t)kChunkBytes) chunk_bytes = 2 * (uint64_t)kChunkBytes;
  }
  op->chunk_channels =
      depthwise ? channels : (size_t)(chunk_bytes / tile_bytes_per_channel);
  if (op->chunk_channels < 1) op->chunk_channels = 1;
  if (op->chunk_channels > channels) op->chunk_channels = channels;
  op->chunks = (channels + op->chunk_channels - 1) / op->chunk_channels;
  op->chunk_channels = (channels + op->chunks - 1) / op->chunks;

  /* The taps of one group of filters in one chunk: at most 4 x 9 x 8 bytes
   * per kernel of the layer's largest filter. */
  tap_pair* scratch = (tap_pair*)malloc(
      (CLICKTRAIN_PATCONV_GROUP_FILTERS * most_taps_per_filter(op) + 1) *
      sizeof(tap_pair));
  if (scratch == NULL) return -1;
  const size_t words = emit_program(op, NULL, scratch);
  const size_t program_bytes =
      align_up(words * sizeof(clicktrain_patconv_word), kAlignment);
  const size_t starts_bytes = align_up(
      op->filter_blocks * op->chunks * sizeof(size_t), kAlignment);
  char* memory = (char*)aligned_alloc(kAlignment, program_bytes + starts_bytes);
  if (memory == NULL) {
    free(scratch);
    return -1;
  }
  op->program = (clicktrain_patconv_word*)memory;
  op->chunk_program_start = (size_t*)(memory + program_bytes);
  op->scratch_bytes = program_bytes + starts_bytes;
  if (add_buffers(op, 1) != 0) {
    free(scratch);
    free(memory);
    op->program = NULL;
    return -1;
  }
  emit_program(op, op->program, scratch);
  free(scratch);
  op->fast = 1;
  return 0;
}

void clicktrain_patconv_operator_forget_buffer(clicktrain_patconv_operator* op,
                                               size_t slot) {
  op->packed_band[slot] = 0;
  op->packed_band_rows[slot] = 0;
}

void clicktrain_patconv_operator_release(clicktrain_patconv_operator* op) {
  for (size_t i = 0; i < op->allocated_buffers; ++i) free(op->buffers[i]);
  free(op->program);
  memset(op, 0, sizeof(*op));
}

/* ------------------------------------------------------------------------ */

typedef struct run_context {
  clicktrain_patconv_operator* op;
  const float* image;  /* NHWC input of the current batch element */
  float* output;       /* NHWC output of the current batch element */
  size_t band_rows;    /* output rows per band in this run */
  /* Tasks per band, each packing the band and computing its share of the
   * filter blocks: 1, or the thread count for images with fewer bands than
   * threads. */
  size_t filter_groups;
} run_context;

static float* claim_buffer(clicktrain_patconv_operator* op, size_t* claimed) {
  for (;;) {
    uint64_t used = __atomic_load_n(&op->buffers_in_use, __ATOMIC_RELAXED);
    size_t slot = 0;
    while (slot < op->allocated_buffers && (used >> slot) & 1u) ++slot;
    if (slot == op->allocated_buffers) continue;  /* a task is finishing */
    if (__atomic_compare_exchange_n(&op->buffers_in_use, &used,
                                    used | ((uint64_t)1 << slot), 0,
                                    __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
      *claimed = slot;
      return op->buffers[slot];
    }
  }
}

static void release_buffer(clicktrain_patconv_operator* op, size_t slot) {
  __atomic_fetch_and(&op->buffers_in_use, ~((uint64_t)1 << slot),
                     __ATOMIC_RELEASE);
}

/* Output columns [*first, *end) whose kernel column kx reads inside the
 * input; empty when *first >= *end. */
static void valid_columns(const clicktrain_conv_geometry* g, int kx,
                          long* first, long* end) {
  const long shift = (long)kx * g->dilation_w - g->padding_left;
  const long stride = g->stride_w;
  /* x * stride + shift in [0, input_width). */
  *first = shift >= 0 ? 0 : (-shift + stride - 1) / stride;
  const long last_input = (long)g->input_width - 1 - shift;
  *end = last_input < 0 ? 0 : last_input / stride + 1;
  if (*end > g->output_width) *end = g->output_width;
}

/* Sub-plane kx of phase p, rows `rows`, from the NHWC input: one transpose
 * per row. Rows outside the input are zeroed unless `zero_rows_kept` (the
 * buffer last held this band: they are still zero); columns outside it stay
 * zero from add_buffers. */
static void transpose_sub_plane(const run_context* run, size_t band, size_t p,
                                int kx, size_t rows, int zero_rows_kept,
                                float* buffer) {
  const clicktrain_patconv_operator* op = run->op;
  const clicktrain_conv_geometry* g = &op->geometry;
  const size_t channels = (size_t)g->input_channels;
  const long first_row = (long)(band * run->band_rows);
  long first, end;
  valid_columns(g, kx, &first, &end);
  float* sub_plane = buffer + sub_plane_offset(op, p, (size_t)kx, 0);
  for (size_t r = 0; r < rows; ++r) {
    float* destination = sub_plane + r * op->columns;
    const long y = (first_row + (long)r) * g->stride_h + op->phase_value[p] -
                   g->padding_top;
    if (y < 0 || y >= g->input_height) {
      for (size_t c = 0; !zero_rows_kept && c < channels; ++c) {
        memset(destination + c * op->channel_stride, 0,
               op->columns * sizeof(float));
      }
      continue;
    }
    if (first >= end) continue;
    const long x =
        first * g->stride_w + (long)kx * g->dilation_w - g->padding_left;
    const float* source =
        run->image + ((size_t)y * g->input_width + (size_t)x) * channels;
    op->kernels->transpose((size_t)(end - first), channels, source,
                           (size_t)g->stride_w * channels, destination + first,
                           op->channel_stride);
  }
}

/* row[first, end): mostly one column (a 3x3 kernel's padding), stored
 * directly rather than through a memset call per row and channel. */
static inline void zero_columns(float* row, size_t first, size_t end) {
  if (end == first + 1) {
    row[first] = 0.0f;
  } else if (end > first) {
    memset(row + first, 0, (end - first) * sizeof(float));
  }
}

/* The input rows band `band` reads -> `buffer`. Within a row phase, the
 * sub-plane of kernel column kx holds, at output column x, the same input
 * pixel as that of column kx' at x + (kx - kx') * dilation / stride when that
 * is a whole number of columns: such a sub-plane is copied, channel by
 * channel, from an already transposed one (the widest first), and only its
 * padding columns are zeroed, instead of transposing the input again. */
static void pack_band(const run_context* run, size_t band, int zero_rows_kept,
                      float* buffer) {
  const clicktrain_patconv_operator* op = run->op;
  const clicktrain_conv_geometry* g = &op->geometry;
  const size_t channels = (size_t)g->input_channels;
  /* The run's bands may be narrower than the buffers. */
  const size_t rows =
      run->band_rows + (op->band_buffer_rows - op->band_rows);
  const size_t block = rows * op->columns;
  const size_t zero_end =
      g->stride_w > 1 ? op->columns : (size_t)g->output_width;
  long first[kKernelColumns], end[kKernelColumns];
  int order[kKernelColumns];
  for (int kx = 0; kx < kKernelColumns; ++kx) {
    valid_columns(g, kx, &first[kx], &end[kx]);
    /* Widest valid range first (stable), so copies find a source. */
    int i = kx;
    while (i > 0 && end[order[i - 1]] - first[order[i - 1]] < end[kx] - first[kx]) {
      order[i] = order[i - 1];
      --i;
    }
    order[i] = kx;
  }
  for (size_t p = 0; p < op->row_phases; ++p) {
    int transposed[kKernelColumns];
    size_t count = 0;
    for (int k = 0; k < kKernelColumns; ++k) {
      const int kx = order[k];
      if (op->column_source[kx] != kx) continue;
      int source_kx = -1;
      long shift = 0;
      for (size_t j = 0; j < count && first[kx] < end[kx]; ++j) {
        const long distance = (long)(kx - transposed[j]) * g->dilation_w;
        if (distance % g->stride_w != 0) continue;
        shift = distance / g->stride_w;
        if (first[kx] + shift >= first[transposed[j]] &&
            end[kx] + shift <= end[transposed[j]]) {
          source_kx = transposed[j];
          break;
        }
      }
      if (source_kx < 0) {
        transpose_sub_plane(run, band, p, kx, rows, zero_rows_kept, buffer);
        transposed[count++] = kx;
        continue;
      }
      const float* source =
          buffer + sub_plane_offset(op, p, (size_t)source_kx, 0);
      float* destination = buffer + sub_plane_offset(op, p, (size_t)kx, 0);
      /* Elements whose source lies outside the block land in padding
       * columns, zeroed below. */
      const size_t low = shift < 0 ? (size_t)-shift : 0;
      const size_t high = shift > 0 ? block - (size_t)shift : block;
      for (size_t c = 0; c < channels; ++c) {
        float* plane = destination + c * op->channel_stride;
        memcpy(plane + low, source + c * op->channel_stride + low + shift,
               (high - low) * sizeof(float));
        for (size_t r = 0; r < rows; ++r) {
          float* row = plane + r * op->columns;
          zero_columns(row, 0, (size_t)first[kx]);
          /* Of a strided layer, the padding columns too: a kernel column
           * sharing this sub-plane would read them as zeros. */
          zero_columns(row, (size_t)end[kx], zero_end);
        }
      }
    }
    /* Twins: the pixels a tap with an unaligned row offset reads all lie
     * below block - twin_shift. */
    for (size_t kx = 0; op->copies > 1 && kx < kKernelColumns; ++kx) {
      const float* source = buffer + sub_plane_offset(op, p, kx, 0);
      float* twin = buffer + sub_plane_offset(op, p, kx, 1);
      for (size_t c = 0; c < channels; ++c) {
        memcpy(twin + c * op->channel_stride,
               source + c * op->channel_stride + op->twin_shift,
               (block - op->twin_shift) * sizeof(float));
      }
    }
  }
}

/* Pixels [first_pixel, first_pixel + pixels) of the band, filter block
 * `block`: computed planar into a tile, then stored NHWC. */
static void compute_tile(const run_context* run, const float* buffer,
                         size_t band, size_t first_pixel, size_t pixels,
                         size_t block) {
  const clicktrain_patconv_operator* op = run->op;
  const clicktrain_conv_geometry* g = &op->geometry;
  const size_t first_filter = block * op->filter_block;
  size_t filters = (size_t)g->output_channels - first_filter;
  if (filters > op->filter_block) filters = op->filter_block;

  float tile[kFilterBlock * (kMaxPixelTile + CLICKTRAIN_PATCONV_PIXEL_SLACK)]
      __attribute__((aligned(64)));
  for (size_t chunk = 0; chunk < op->chunks; ++chunk) {
    op->kernels->planar(
        pixels, filters,
        op->program + op->chunk_program_start[block * op->chunks + chunk],
        buffer + first_pixel, tile, op->tile_stride, g->output_min,
        g->output_max);
  }

  /* Row by row, the valid columns of each output row in the tile. */
  const size_t columns = op->columns;
  const size_t width = (size_t)g->output_width;
  const size_t output_channels = (size_t)g->output_channels;
  for (size_t i = 0; i < pixels;) {
    const size_t pixel = first_pixel + i;
    const size_t y = band * run->band_rows + pixel / columns;
    const size_t x = pixel % columns;
    size_t row_end = i + (columns - x);
    if (row_end > pixels) row_end = pixels;
    if (x < width) {
      size_t count = row_end - i;
      if (count > width - x) count = width - x;
      op->kernels->transpose(
          filters, count, tile + i, op->tile_stride,
          run->output + (y * width + x) * output_channels + first_filter,
          output_channels);
    }
    i = row_end;
  }
}

/* All pixels of band `band` for filter blocks [first_block, end_block). */
static void compute_band(const run_context* run, const float* buffer,
                         size_t band, size_t first_block, size_t end_block) {
  const clicktrain_patconv_operator* op = run->op;
  size_t rows = (size_t)op->geometry.output_height - band * run->band_rows;
  if (rows > run->band_rows) rows = run->band_rows;
  const size_t band_pixels = rows * op->columns;
  const size_t tile_size = tile_pixels(op, rows);
  for (size_t first = 0; first < band_pixels; first += tile_size) {
    size_t pixels = band_pixels - first;
    if (pixels > tile_size) pixels = tile_size;
    for (size_t block = first_block; block < end_block; ++block) {
      compute_tile(run, buffer, band, first, pixels, block);
    }
  }
}

/* Task band * filter_groups + group: packs the band into a free buffer and
 * computes the group's filter blocks. */
static void band_task(void* context, size_t index) {
  const run_context* run = (const run_context*)context;
  clicktrain_patconv_operator* op = run->op;
  const size_t band = index / run->filter_groups;
  const size_t group = index % run->filter_groups;
  size_t slot;
  float* buffer = claim_buffer(op, &slot);
  const int zero_rows_kept = op->packed_band[slot] == band + 1 &&
                             op->packed_band_rows[slot] == run->band_rows;
  op->packed_band[slot] = band + 1;
  op->packed_band_rows[slot] = run->band_rows;
  pack_band(run, band, zero_rows_kept, buffer);
  compute_band(run, buffer, band, group * op->filter_blocks / run->filter_groups,
               (group + 1) * op->filter_blocks / run->filter_groups);
  release_buffer(op, slot);
}

/* Output rows per band for a run on `threads` threads (more than one): the
 * band count is a multiple of `threads` (at least op->bands, so a band fits
 * its buffer) chosen by simulating the pool's greedy task assignment, each
 * band costing its pixels plus a share for packing its rows and kernel
 * reach; equal bands, one or a few per thread, keep every thread busy to
 * the end and pack each input row at most a few times. */
static size_t balanced_band_rows(const clicktrain_patconv_operator* op,
                                 size_t threads) {
  const size_t height = (size_t)op->geometry.output_height;
  const size_t reach = op->band_buffer_rows - op->band_rows;
  size_t best_rows = op->band_rows;
  size_t best_cost = SIZE_MAX;
  const size_t first_k = (op->bands + threads - 1) / threads;
  for (size_t k = first_k; k < first_k + 4 && k * threads <= height; ++k) {
    const size_t rows = (height + k * threads - 1) / (k * threads);
    size_t load[CLICKTRAIN_PATCONV_MAX_BUFFERS] = {0};
    size_t cost = 0;
    for (size_t first = 0; first < height; first += rows) {
      const size_t band = height - first < rows ? height - first : rows;
      /* Packing a row costs about a quarter of computing it. */
      const size_t task = 4 * band + band + reach;
      size_t least = 0;
      for (size_t t = 1; t < threads; ++t) {
        if (load[t] < load[least]) least = t;
      }
      load[least] += task;
      if (load[least] > cost) cost = load[least];
    }
    if (cost < best_cost) {
      best_cost = cost;
      best_rows = rows;
    }
  }
  return best_rows;
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
  size_t threads = (size_t)clicktrain_thread_pool_threads(pool);
  /* Every thread of the pool needs a band buffer of its own. */
  if (threads > (size_t)op->max_threads ||
      threads > CLICKTRAIN_PATCONV_MAX_BUFFERS ||
      (threads > 1 && add_buffers(op, threads) != 0)) {
    threads = 1;
  }
  if (threads < 2) pool = NULL;
  const size_t input_image =
      (size_t)g->input_height * g->input_width * g->input_channels;
  const size_t output_image =
      (size_t)g->output_height * g->output_width * g->output_channels;
  run_context run = {op, input, output, op->band_rows, 1};
  if (threads > 1 && op->bands < threads) {
    /* Fewer bands than threads (small maps: 7x7x512 is one band): every
     * thread packs a band into its own buffer, in its own L2 cache, and
     * computes a part of the filters. Packing is a few % of such a layer;
     * sharing one packed band between cores measured 20-40% slower, the
     * other core's half of the planes being read from a remote cache. */
    run.filter_groups = threads;
    if (run.filter_groups > op->filter_blocks) run.filter_groups = op->filter_blocks;
  } else if (threads > 1) {
    run.band_rows = balanced_band_rows(op, threads);
  }
  const size_t bands = ((size_t)g->output_height + run.band_rows - 1) / run.band_rows;
  for (int n = 0; n < g->batch; ++n) {
    run.image = input + (size_t)n * input_image;
    run.output = output + (size_t)n * output_image;
    clicktrain_thread_pool_parallelize(pool, band_task, &run,
                                       bands * run.filter_groups);
  }
}

