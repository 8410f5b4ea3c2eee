#include "pattern_conv_s8_operator.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

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
                              int depthwise, clicktrain_s8_layer* layer,
                              char* error, size_t error_size) {
  memset(layer, 0, sizeof(*layer));
  if (t->values == NULL) {
    return fail(error, error_size, "values are missing");
  }
  /* The structure check needs float values of the same count: widen the
   * int8 values (exact), which also keeps one validator and one expansion
   * (values into kernel order) for both ops. */
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
      &structure, input_channels, output_channels, depthwise,
      &layer->structure,
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
  const float* ordered = layer->structure.weights.values;
  for (size_t i = 0; i < t->values_count; ++i) {
    layer->values[i] = (int8_t)ordered[i];
  }
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

/* ------------------------------------------------------------------------
 * Micro-kernel selection. */

size_t clicktrain_s8_patconv_available_ukernels(
    const clicktrain_s8_patconv_ukernels** sets, size_t capacity) {
  size_t count = 0;
  if (count < capacity) sets[count] = &clicktrain_s8_patconv_ukernels__scalar;
  ++count;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  /* __builtin_cpu_supports also checks that the OS saves the registers. */
  if (__builtin_cpu_supports("avx2")) {
    if (count < capacity) sets[count] = &clicktrain_s8_patconv_ukernels__avx2;
    ++count;
  }
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")) {
    if (count < capacity) {
      sets[count] = &clicktrain_s8_patconv_ukernels__avx512vnni;
    }
    ++count;
  }
#elif defined(__aarch64__)
  if (count < capacity) sets[count] = &clicktrain_s8_patconv_ukernels__neon;
  ++count;
  if (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) {
    if (count < capacity) sets[count] = &clicktrain_s8_patconv_ukernels__neondot;
    ++count;
  }
#endif
  return count;
}

static const clicktrain_s8_patconv_ukernels* selected_ukernels =
    &clicktrain_s8_patconv_ukernels__scalar;
static pthread_once_t selection_once = PTHREAD_ONCE_INIT;

static void select_once(void) {
  const clicktrain_s8_patconv_ukernels* sets[8];
  size_t count = clicktrain_s8_patconv_available_ukernels(sets, 8);
  if (count > 8) count = 8;
  selected_ukernels = sets[count - 1];  /* later entries are faster */
  const char* wanted = getenv("TF_CLICKTRAIN_KERNELS");
  if (wanted == NULL) return;
  for (size_t i = 0; i < count; ++i) {
    if (strcmp(sets[i]->name, wanted) == 0) selected_ukernels = sets[i];
  }
}

const clicktrain_s8_patconv_ukernels* clicktrain_s8_patconv_select_ukernels(
    void) {
  pthread_once(&selection_once, select_once);
  return selected_ukernels;
}

/* ------------------------------------------------------------------------
 * Operator. */

enum { kTile = CLICKTRAIN_S8_PATCONV_TILE, kAlignment = 64 };

/* Packed slots per chunk, in bytes, when all slots take more than twice
 * as much (else one chunk): with 64 KB chunks the 3x3 layers of ResNet-18
 * at 8x measured 8-30% faster at 256 and 512 channels than with one chunk
 * of all slots, and 4% slower at 56x56x64 (121 KB of slots). */
enum { kChunkBytes = 64 << 10 };
/* Plane pixels gathered per transpose (a multiple of every variant's block
 * of rows). */
enum { kGatherPixels = 256 };

static size_t round_up(size_t value, size_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

/* A tap group in use: (input channel, pattern, group), as one sortable key. */
static uint64_t slot_key(uint32_t channel, uint32_t pattern, uint32_t group,
                         uint32_t patterns) {
  return ((uint64_t)channel * patterns + pattern) * 3u + group;
}

static int compare_keys(const void* a, const void* b) {
  const uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
  return x < y ? -1 : x > y;
}

static int compare_entries(const void* a, const void* b) {
  const uint32_t x = *(const uint32_t*)a, y = *(const uint32_t*)b;
  return x < y ? -1 : x > y;
}

static size_t find_slot(const uint64_t* keys, size_t count, uint64_t key) {
  size_t low = 0, high = count;
  while (high - low > 1) {
    const size_t middle = (low + high) / 2;
    if (keys[middle] <= key) low = middle; else high = middle;
  }
  return low;
}

/* The taps of a mask, in position order. */
static int mask_taps(unsigned mask, int taps[9]) {
  int count = 0;
  for (int position = 0; position < CLICKTRAIN_KERNEL_POSITIONS; ++position) {
    if ((mask >> position) & 1u) taps[count++] = position;
  }
  return count;
}

static int add_workspaces(clicktrain_s8_patconv_operator* op, size_t count) {
  if (count > CLICKTRAIN_S8_PATCONV_MAX_WORKSPACES) {
    count = CLICKTRAIN_S8_PATCONV_MAX_WORKSPACES;
  }
  while (op->allocated_workspaces < count) {
    void* workspace = aligned_alloc(kAlignment, op->workspace_bytes);
    if (workspace == NULL) return -1;
    /* Plane bytes no band writes (past the phases, the rows a short band
     * leaves) are read only for dropped pixels; initialised, they keep
     * every run deterministic. */
    memset(workspace, op->padding_value, op->planes_bytes);
    memset((uint8_t*)workspace + op->planes_bytes, 0,
           op->workspace_bytes - op->planes_bytes);
    /* The input pixel every padded tap reads: input_zero_point. */
    memset((uint8_t*)workspace + op->padding_pixel_offset,
           op->padding_value ^ 0x80, (size_t)op->geometry.input_channels);
    op->workspaces[op->allocated_workspaces++] = workspace;
    op->scratch_bytes += op->workspace_bytes;
  }
  return 0;
}

/* Band layout for `band_rows` rows; returns the workspace bytes. */
static size_t layout(clicktrain_s8_patconv_operator* op, size_t band_rows) {
  const clicktrain_conv_geometry* g = &op->geometry;
  const size_t row_reach = (size_t)(2 * g->dilation_h / g->stride_h);
  const size_t column_reach = (size_t)(2 * g->dilation_w / g->stride_w);
  op->band_rows = band_rows;
  op->columns = (size_t)g->output_width + column_reach;
  op->phase_rows = band_rows + row_reach;
  op->phase_bytes = op->phase_rows * op->columns;
  op->channel_bytes =
      round_up(op->row_phases * op->column_phases * op->phase_bytes +
                   column_reach + kTile, kAlignment);
  op->planes_bytes = op->channel_bytes * (size_t)g->input_channels;
  op->packed_offset = op->planes_bytes;
  op->accumulators_offset =
      op->packed_offset + op->chunk_slots * op->ukernels->slot_bytes;
  op->tile_offset =
      op->accumulators_offset +
      (op->chunks > 1 ? (size_t)g->output_channels * op->ukernels->accumulator_bytes
                      : 0);
  op->pixels_offset =
      op->tile_offset + round_up((size_t)g->output_channels * kTile, kAlignment);
  op->sources_offset =
      round_up(op->pixels_offset + (size_t)g->output_channels * kTile,
               kAlignment);
  op->padding_pixel_offset =
      op->sources_offset + kGatherPixels * sizeof(const uint8_t*);
  return op->padding_pixel_offset + (size_t)g->input_channels;
}

int clicktrain_s8_patconv_operator_setup(
    clicktrain_s8_patconv_operator* op,
    const clicktrain_conv_geometry* geometry, const clicktrain_s8_layer* layer,
    const clicktrain_s8_patconv_ukernels* ukernels, int max_threads) {
  memset(op, 0, sizeof(*op));
  op->geometry = *geometry;
  op->layer = layer;
  op->ukernels = ukernels;
  op->max_threads = max_threads < 1 ? 1 : max_threads;
  const clicktrain_conv_geometry* g = &op->geometry;
  const clicktrain_pattern_weights* w = &layer->structure.weights;
  const clicktrain_s8_requantization* q = &layer->requantization;
  if (g->stride_h > 64 || g->stride_w > 64 || g->output_height < 1 ||
      g->output_width < 1) {
    return 0;  /* reference kernel */
  }

  /* Slots in use, sorted: (channel, pattern, group of 4 taps). */
  if (w->num_patterns > 64) return 0;  /* reference kernel */
  int groups[64];
  for (uint32_t p = 0; p < w->num_patterns; ++p) {
    int taps[9];
    groups[p] = (mask_taps(w->pattern_masks[p], taps) + 3) / 4;
  }
  size_t entries = 0;
  for (uint32_t o = 0; o < w->output_channels; ++o) {
    for (uint32_t p = 0; p < w->num_patterns; ++p) {
      entries += (size_t)w->pattern_run_lengths[o * w->num_patterns + p] *
                 (size_t)groups[p];
    }
  }
  uint64_t* keys = (uint64_t*)malloc((entries ? entries : 1) * sizeof(uint64_t));
  if (keys == NULL) return -1;
  size_t count = 0;
  for (uint32_t o = 0; o < w->output_channels; ++o) {
    uint32_t kernel = w->filter_kernel_start[o];
    for (uint32_t p = 0; p < w->num_patterns; ++p) {
      const uint32_t run = w->pattern_run_lengths[o * w->num_patterns + p];
      for (uint32_t j = 0; j < run; ++j, ++kernel) {
        for (int group = 0; group < groups[p]; ++group) {
          keys[count++] = slot_key(w->kernel_input_channels[kernel], p,
                                   (uint32_t)group, w->num_patterns);
        }
      }
    }
  }
  qsort(keys, count, sizeof(uint64_t), compare_keys);
  size_t slots = 0;
  for (size_t i = 0; i < count; ++i) {
    if (slots == 0 || keys[i] != keys[slots - 1]) keys[slots++] = keys[i];
  }
  op->slots = slots;
  /* Chunks of slots whose packed tile stays in L2 with room to spare
   * (partial sums kept per filter between chunks). */
  const size_t chunk_budget = kChunkBytes / ukernels->slot_bytes;
  op->chunk_slots = slots <= 2 * chunk_budget ? (slots ? slots : 1) : chunk_budget;
  op->chunks = slots == 0 ? 1 : (slots + op->chunk_slots - 1) / op->chunk_slots;

  /* Phases in use and the band height: the whole image when its planes
   * take at most ~256 KB (L2-resident with the packed slots), else fewer
   * rows, at least a tile of pixels. */
  for (int i = 0; i < 64; ++i) {
    op->row_phase_index[i] = -1;
    op->column_phase_index[i] = -1;
  }
  for (int t = 0; t < 3; ++t) {
    const int row_phase = (t * g->dilation_h) % g->stride_h;
    const int column_phase = (t * g->dilation_w) % g->stride_w;
    if (op->row_phase_index[row_phase] < 0) {
      op->row_phase_index[row_phase] = (int)op->row_phases++;
    }
    if (op->column_phase_index[column_phase] < 0) {
      op->column_phase_index[column_phase] = (int)op->column_phases++;
    }
  }
  size_t band_rows = (size_t)g->output_height;
  size_t workspace = layout(op, band_rows);
  const size_t min_rows = (kTile + op->columns - 1) / op->columns;
  while (band_rows > min_rows && op->planes_bytes > ((size_t)256 << 10)) {
    band_rows = band_rows / 2 > min_rows ? band_rows / 2 : min_rows;
    workspace = layout(op, band_rows);
  }
  const size_t input_image = (size_t)g->input_height * g->input_width *
                             (size_t)g->input_channels;
  const size_t output_image = (size_t)g->output_height * g->output_width *
                              (size_t)g->output_channels;
  if (workspace > 4 * (input_image + output_image) +
                      CLICKTRAIN_S8_PATCONV_FIXED_SCRATCH_BYTES ||
      op->planes_bytes > UINT32_MAX - kTile ||
      slots * ukernels->slot_bytes > UINT32_MAX) {
    free(keys);
    op->slots = 0;
    return 0;  /* reference kernel */
  }
  op->workspace_bytes = round_up(workspace, kAlignment);

  /* Tap offsets of every slot; a group of fewer than 4 taps repeats its
   * first one (weight 0). */
  op->tap_offsets = (uint32_t*)malloc((slots ? slots : 1) * 4 * sizeof(uint32_t));
  const size_t program_words =
      (size_t)w->output_channels * op->chunks + 2 * entries;
  op->program = (uint32_t*)malloc(program_words * sizeof(uint32_t));
  op->chunk_program_start = (size_t*)malloc(op->chunks * sizeof(size_t));
  /* Per filter, its entries (slot, weights) sorted by slot, before they
   * are laid out chunk by chunk. */
  uint32_t* sorted = (uint32_t*)malloc(
      ((size_t)w->output_channels + 2 * entries) * sizeof(uint32_t));
  op->requantization = (clicktrain_s8_filter_requantization*)malloc(
      (size_t)w->output_channels * sizeof(clicktrain_s8_filter_requantization));
  if (op->tap_offsets == NULL || op->program == NULL ||
      op->chunk_program_start == NULL || sorted == NULL ||
      op->requantization == NULL) {
    free(keys);
    free(sorted);
    clicktrain_s8_patconv_operator_release(op);
    return -1;
  }
  for (size_t s = 0; s < slots; ++s) {
    const uint32_t group = (uint32_t)(keys[s] % 3u);
    const uint32_t pattern = (uint32_t)((keys[s] / 3u) % w->num_patterns);
    const uint32_t channel = (uint32_t)(keys[s] / 3u / w->num_patterns);
    int taps[9];
    const int tap_count = mask_taps(w->pattern_masks[pattern], taps);
    for (int j = 0; j < 4; ++j) {
      const int index = (int)group * 4 + j;
      const int position = taps[index < tap_count ? index : (int)group * 4];
      const int row = (position / 3) * g->dilation_h;
      const int column = (position % 3) * g->dilation_w;
      const size_t phase =
          (size_t)op->row_phase_index[row % g->stride_h] * op->column_phases +
          (size_t)op->column_phase_index[column % g->stride_w];
      op->tap_offsets[4 * s + (size_t)j] = (uint32_t)(
          channel * op->channel_bytes + phase * op->phase_bytes +
          (size_t)(row / g->stride_h) * op->columns +
          (size_t)(column / g->stride_w));
    }
  }

  /* Per filter: its entries sorted by slot (the packed tile is read in
   * order), and its requantization with the +128 of every tap folded into
   * the bias. */
  uint32_t* program = sorted;
  const uint32_t shifted_zero_point = (uint32_t)(q->input_zero_point + 128);
  for (uint32_t o = 0; o < w->output_channels; ++o) {
    uint32_t* entry = program + 1;
    uint32_t kernel = w->filter_kernel_start[o];
    const int8_t* value = layer->values + w->filter_value_start[o];
    uint32_t weight_sum = 0;
    for (uint32_t p = 0; p < w->num_patterns; ++p) {
      int taps[9];
      const int tap_count = mask_taps(w->pattern_masks[p], taps);
      const uint32_t run = w->pattern_run_lengths[o * w->num_patterns + p];
      for (uint32_t j = 0; j < run; ++j, ++kernel, value += tap_count) {
        for (int group = 0; group < groups[p]; ++group) {
          uint32_t word = 0;
          for (int t = 0; t < 4 && group * 4 + t < tap_count; ++t) {
            const int8_t weight = value[group * 4 + t];
            word |= (uint32_t)(uint8_t)weight << (8 * t);
            weight_sum += (uint32_t)(int32_t)weight;
          }
          const size_t slot = find_slot(
              keys, slots,
              slot_key(w->kernel_input_channels[kernel], p, (uint32_t)group,
                       w->num_patterns));
          *entry++ = (uint32_t)slot;
          *entry++ = word;
        }
      }
    }
    const uint32_t entry_count = (uint32_t)((entry - program - 1) / 2);
    qsort(program + 1, entry_count, 2 * sizeof(uint32_t), compare_entries);
    program[0] = entry_count;
    program = entry;

    clicktrain_s8_filter_requantization* r = &op->requantization[o];
    const int shift = q->shift[o];
    const int exponent = shift < 0 ? -shift : 0;
    r->bias = (int32_t)((uint32_t)q->bias[o] - shifted_zero_point * weight_sum);
    r->multiplier = q->multiplier[o];
    r->shift = shift;
    r->left_shift = (uint32_t)(shift > 0 ? shift : 0);
    r->right_shift = (uint32_t)(31 + exponent);
    r->reserved = 0;
    r->rounding = ((int64_t)1 << 30) +
                  (exponent > 0 ? ((int64_t)1 << (30 + exponent)) : 0);
    r->negative_rounding = exponent > 0 ? ((int64_t)1 << 31) : 0;
  }
  free(keys);
  /* Chunk by chunk, every filter's entries in it, at offsets into the
   * chunk's packed slots. */
  uint32_t* out = op->program;
  for (size_t chunk = 0; chunk < op->chunks; ++chunk) {
    op->chunk_program_start[chunk] = (size_t)(out - op->program);
    const size_t first_slot = chunk * op->chunk_slots;
    const size_t end_slot = first_slot + op->chunk_slots;
    const uint32_t* filter = sorted;
    for (uint32_t o = 0; o < w->output_channels; ++o) {
      const uint32_t filter_entries = filter[0];
      const uint32_t* entry = filter + 1;
      uint32_t* count = out++;
      *count = 0;
      for (uint32_t e = 0; e < filter_entries; ++e, entry += 2) {
        if (entry[0] < first_slot || entry[0] >= end_slot) continue;
        *out++ = (uint32_t)((entry[0] - first_slot) * ukernels->slot_bytes);
        *out++ = entry[1];
        ++*count;
      }
      filter += 1 + 2 * filter_entries;
    }
  }
  free(sorted);
  op->output_params.zero_point = q->output_zero_point;
  op->output_params.min = q->output_min;
  op->output_params.max = q->output_max;
  op->padding_value = (uint8_t)shifted_zero_point;
  op->scratch_bytes = slots * 4 * sizeof(uint32_t) +
                      program_words * sizeof(uint32_t) +
                      op->chunks * sizeof(size_t) +
                      (size_t)w->output_channels *
                          sizeof(clicktrain_s8_filter_requantization);
  if (add_workspaces(op, 1) != 0) {
    clicktrain_s8_patconv_operator_release(op);
    return -1;
  }
  op->fast = 1;
  return 0;
}

void clicktrain_s8_patconv_operator_release(
    clicktrain_s8_patconv_operator* op) {
  for (size_t i = 0; i < op->allocated_workspaces; ++i) {
    free(op->workspaces[i]);
  }
  free(op->tap_offsets);
  free(op->program);
  free(op->chunk_program_start);
  free(op->requantization);
  memset(op, 0, sizeof(*op));
}

typedef struct run_context {
  clicktrain_s8_patconv_operator* op;
  const int8_t* image;  /* NHWC input of the current batch element */
  int8_t* output;       /* NHWC output of the current batch element */
  size_t band_rows;     /* output rows per band in this run */
} run_context;

static uint8_t* claim_workspace(clicktrain_s8_patconv_operator* op,
                                size_t* claimed) {
  for (;;) {
    uint64_t used = __atomic_load_n(&op->workspaces_in_use, __ATOMIC_RELAXED);
    size_t slot = 0;
    while (slot < op->allocated_workspaces && (used >> slot) & 1u) ++slot;
    if (slot == op->allocated_workspaces) continue;  /* a task is finishing */
    if (__atomic_compare_exchange_n(&op->workspaces_in_use, &used,
                                    used | ((uint64_t)1 << slot), 0,
                                    __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
      *claimed = slot;
      return (uint8_t*)op->workspaces[slot];
    }
  }
}

static void release_workspace(clicktrain_s8_patconv_operator* op,
                              size_t slot) {
  __atomic_fetch_and(&op->workspaces_in_use, ~((uint64_t)1 << slot),
                     __ATOMIC_RELEASE);
}

/* The band's input rows -> u8 planes of every phase in use. A phase's
 * plane rows lie one after another, so its virtual pixels are transposed
 * in runs of kGatherPixels, each pixel gathered from the input or, outside
 * it, from the workspace's padding pixel. */
static void fill_planes(const run_context* run, size_t rows,
                        size_t first_row, uint8_t* workspace) {
  const clicktrain_s8_patconv_operator* op = run->op;
  const clicktrain_conv_geometry* g = &op->geometry;
  const size_t channels = (size_t)g->input_channels;
  const long stride_w = g->stride_w;
  const size_t pixel_step = (size_t)stride_w * channels;
  const size_t plane_rows = rows + (op->phase_rows - op->band_rows);
  const uint8_t** sources =
      (const uint8_t**)(workspace + op->sources_offset);
  const uint8_t* padding = workspace + op->padding_pixel_offset;
  for (int row_phase = 0; row_phase < g->stride_h && row_phase < 64; ++row_phase) {
    if (op->row_phase_index[row_phase] < 0) continue;
    for (int column_phase = 0; column_phase < g->stride_w && column_phase < 64;
         ++column_phase) {
      if (op->column_phase_index[column_phase] < 0) continue;
      const size_t phase =
          (size_t)op->row_phase_index[row_phase] * op->column_phases +
          (size_t)op->column_phase_index[column_phase];
      /* Columns j whose input column j * stride + phase - padding is inside. */
      const long shift = column_phase - g->padding_left;
      long first = shift >= 0 ? 0 : (-shift + stride_w - 1) / stride_w;
      long end = ((long)g->input_width - 1 - shift) / stride_w + 1;
      if ((long)g->input_width - 1 - shift < 0) end = 0;
      if (end > (long)op->columns) end = (long)op->columns;
      if (first > end) first = end;
      uint8_t* plane = workspace + phase * op->phase_bytes;
      size_t gathered = 0;
      for (size_t r = 0; r < plane_rows; ++r) {
        const long y = (long)(first_row + r) * g->stride_h + row_phase -
                       g->padding_top;
        const int inside = y >= 0 && y < g->input_height;
        const uint8_t* pixel =
            inside ? (const uint8_t*)run->image +
                         ((size_t)y * g->input_width +
                          (size_t)(first * stride_w + shift)) * channels
                   : NULL;
        for (size_t j = 0; j < op->columns;) {
          /* Up to the end of the run, or of the row's stretch of padding
           * or of pixels inside. */
          size_t stop = j + (kGatherPixels - gathered);
          if (!inside || (long)j >= end) {
            stop = stop < op->columns ? stop : op->columns;
            for (; j < stop; ++j) sources[gathered++] = padding;
          } else if ((long)j < first) {
            stop = stop < (size_t)first ? stop : (size_t)first;
            for (; j < stop; ++j) sources[gathered++] = padding;
          } else {
            stop = stop < (size_t)end ? stop : (size_t)end;
            for (; j < stop; ++j, pixel += pixel_step) {
              sources[gathered++] = pixel;
            }
          }
          if (gathered == kGatherPixels) {
            op->ukernels->gather_transpose(
                gathered, channels, sources,
                plane + r * op->columns + j - gathered, op->channel_bytes,
                0x80);
            gathered = 0;
          }
        }
      }
      if (gathered > 0) {
        op->ukernels->gather_transpose(
            gathered, channels, sources,
            plane + plane_rows * op->columns - gathered, op->channel_bytes,
            0x80);
      }
    }
  }
}

static void run_band(void* context, size_t band) {
  const run_context* run = (const run_context*)context;
  clicktrain_s8_patconv_operator* op = run->op;
  const clicktrain_conv_geometry* g = &op->geometry;
  const size_t first_row = band * run->band_rows;
  size_t rows = (size_t)g->output_height - first_row;
  if (rows > run->band_rows) rows = run->band_rows;
  const size_t pixels = rows * op->columns;
  const size_t width = (size_t)g->output_width;
  const size_t output_channels = (size_t)g->output_channels;
  size_t slot;
  uint8_t* workspace = claim_workspace(op, &slot);
  uint8_t* packed = workspace + op->packed_offset;
  int8_t* tile = (int8_t*)(workspace + op->tile_offset);
  uint8_t* tile_pixels = workspace + op->pixels_offset;
  fill_planes(run, rows, first_row, workspace);
  int32_t* accumulators = (int32_t*)(workspace + op->accumulators_offset);
  for (size_t start = 0; start < pixels; start += kTile) {
    for (size_t chunk = 0; chunk < op->chunks; ++chunk) {
      const size_t first_slot = chunk * op->chunk_slots;
      const size_t slots = op->slots - first_slot < op->chunk_slots
                               ? op->slots - first_slot
                               : op->chunk_slots;
      op->ukernels->pack(slots, op->tap_offsets + 4 * first_slot,
                         workspace + start, packed);
      op->ukernels->compute(output_channels,
                            op->program + op->chunk_program_start[chunk],
                            packed, accumulators, chunk == 0,
                            chunk + 1 == op->chunks, op->requantization,
                            &op->output_params, tile);
    }
    /* [filter][pixel] -> [pixel][filter], then row by row the pixels
     * inside the output. */
    const size_t end = start + kTile < pixels ? start + kTile : pixels;
    op->ukernels->transpose(output_channels, end - start,
                            (const uint8_t*)tile, kTile, tile_pixels,
                            output_channels, 0);
    for (size_t pixel = start; pixel < end;) {
      const size_t y = pixel / op->columns, x = pixel % op->columns;
      size_t row_end = pixel + (op->columns - x);
      if (row_end > end) row_end = end;
      if (x < width) {
        const size_t count = (row_end < pixel + (width - x)) ? row_end - pixel
                                                             : width - x;
        memcpy(run->output + ((first_row + y) * width + x) * output_channels,
               tile_pixels + (pixel - start) * output_channels,
               count * output_channels);
      }
      pixel = row_end;
    }
  }
  release_workspace(op, slot);
}

void clicktrain_s8_patconv_operator_run(clicktrain_s8_patconv_operator* op,
                                        const int8_t* input, int8_t* output,
                                        clicktrain_thread_pool* pool) {
  const clicktrain_conv_geometry* g = &op->geometry;
  if (!op->fast) {
    clicktrain_s8_patconv_ukernel__scalar(
        g, &op->layer->structure.weights, op->layer->values,
        &op->layer->requantization, input, output);
    return;
  }
  size_t threads = (size_t)clicktrain_thread_pool_threads(pool);
  if (threads > (size_t)op->max_threads ||
      threads > CLICKTRAIN_S8_PATCONV_MAX_WORKSPACES ||
      (threads > 1 && add_workspaces(op, threads) != 0)) {
    threads = 1;
  }
  if (threads < 2) pool = NULL;
  /* A few bands per thread, each at least a tile of pixels. */
  size_t band_rows = op->band_rows;
  if (threads > 1) {
    const size_t height = (size_t)g->output_height;
    size_t rows = (height + 2 * threads - 1) / (2 * threads);
    const size_t min_rows = (kTile + op->columns - 1) / op->columns;
    if (rows < min_rows) rows = min_rows;
    if (rows < band_rows) band_rows = rows;
  }
  const size_t bands = ((size_t)g->output_height + band_rows - 1) / band_rows;
  const size_t input_image =
      (size_t)g->input_height * g->input_width * g->input_channels;
  const size_t output_image =
      (size_t)g->output_height * g->output_width * g->output_channels;
  run_context run = {op, input, output, band_rows};
  for (int n = 0; n < g->batch; ++n) {
    run.image = input + (size_t)n * input_image;
    run.output = output + (size_t)n * output_image;
    clicktrain_thread_pool_parallelize(pool, run_band, &run, bands);
  }
}
