#include "pattern_dwconv_s8_operator.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char* error, size_t error_size, const char* format, ...) {
  if (error != NULL && error_size > 0) {
    va_list args;
    va_start(args, format);
    vsnprintf(error, error_size, format, args);
    va_end(args);
  }
  return -1;
}

int clicktrain_s8_dw_layer_check(const clicktrain_s8_layer* layer,
                                 char* error, size_t error_size) {
  const clicktrain_pattern_weights* w = &layer->structure.weights;
  if (w->input_channels != w->output_channels) {
    return fail(error, error_size,
                "a depthwise layer needs input_channels == output_channels. "
                "Received: %u and %u", w->input_channels, w->output_channels);
  }
  for (uint32_t o = 0; o < w->output_channels; ++o) {
    const uint32_t first = w->filter_kernel_start[o];
    const uint32_t kernels = w->filter_kernel_start[o + 1] - first;
    if (kernels > 1) {
      return fail(error, error_size,
                  "depthwise filter %u has %u kernels; at most 1 allowed", o,
                  kernels);
    }
    if (kernels == 1 && w->kernel_input_channels[first] != o) {
      return fail(error, error_size,
                  "kernel_input_channels[%u] of depthwise filter %u must be "
                  "%u. Received: %u", first, o, o,
                  (unsigned)w->kernel_input_channels[first]);
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Micro-kernel selection. */

size_t clicktrain_s8_patdwconv_available_ukernels(
    const clicktrain_s8_patdwconv_ukernels** sets, size_t capacity) {
  size_t count = 0;
  if (count < capacity) sets[count] = &clicktrain_s8_patdwconv_ukernels__scalar;
  ++count;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) {
    if (count < capacity) sets[count] = &clicktrain_s8_patdwconv_ukernels__avx2;
    ++count;
  }
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")) {
    if (count < capacity) {
      sets[count] = &clicktrain_s8_patdwconv_ukernels__avx512vnni;
    }
    ++count;
  }
#elif defined(__aarch64__)
  if (count < capacity) sets[count] = &clicktrain_s8_patdwconv_ukernels__neon;
  ++count;
#endif
  return count;
}

static const clicktrain_s8_patdwconv_ukernels* selected_ukernels =
    &clicktrain_s8_patdwconv_ukernels__scalar;
static pthread_once_t selection_once = PTHREAD_ONCE_INIT;

static void select_once(void) {
  const clicktrain_s8_patdwconv_ukernels* sets[4];
  size_t count = clicktrain_s8_patdwconv_available_ukernels(sets, 4);
  if (count > 4) count = 4;
  selected_ukernels = sets[count - 1];  /* later entries are faster */
  const char* wanted = getenv("TF_CLICKTRAIN_KERNELS");
  if (wanted == NULL) return;
  for (size_t i = 0; i < count; ++i) {
    if (strcmp(sets[i]->name, wanted) == 0) selected_ukernels = sets[i];
  }
}

const clicktrain_s8_patdwconv_ukernels*
clicktrain_s8_patdwconv_select_ukernels(void) {
  pthread_once(&selection_once, select_once);
  return selected_ukernels;
}

/* ------------------------------------------------------------------------
 * Operator. */

enum { kAlignment = 64, kGroup = CLICKTRAIN_S8_PATDWCONV_GROUP };

static size_t round_up(size_t value, size_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

static size_t group_count(const clicktrain_conv_geometry* g) {
  return ((size_t)g->input_channels + kGroup - 1) / kGroup;
}

size_t clicktrain_s8_patdwconv_workspace_bytes(
    const clicktrain_conv_geometry* g) {
  const size_t columns = (size_t)g->output_width;
  if (columns > SIZE_MAX / (9 * sizeof(int8_t*)) - kAlignment) return SIZE_MAX;
  return round_up(columns ? columns * 9 * sizeof(int8_t*) : 1, kAlignment);
}

size_t clicktrain_s8_patdwconv_setup_bytes(const clicktrain_conv_geometry* g) {
  const size_t workspace = clicktrain_s8_patdwconv_workspace_bytes(g);
  const size_t groups = group_count(g);
  if (workspace == SIZE_MAX ||
      groups > SIZE_MAX / 4 / sizeof(clicktrain_s8_patdwconv_group)) {
    return SIZE_MAX;
  }
  return groups * sizeof(clicktrain_s8_patdwconv_group) +
         round_up((size_t)g->input_channels, kAlignment) + workspace;
}

/* Lane-order element of channel `c` (< 16) of a group, and the index of its
 * 64-bit parameters (see pattern_dwconv_s8.h). */
static size_t lane_of(size_t c) {
  return 8 * ((c % 8) / 4) + 4 * (c / 8) + c % 4;
}

static size_t wide_of(size_t lane) {
  const size_t half = lane / 8, i = lane % 8;
  return 8 * half + (i % 2) * 4 + i / 2;
}

/* The kept kernel's mask of channel c, 0 when it was removed. */
static unsigned channel_mask(const clicktrain_pattern_weights* w, uint32_t c) {
  if (w->filter_kernel_start[c + 1] == w->filter_kernel_start[c]) return 0;
  for (uint32_t p = 0; p < w->num_patterns; ++p) {
    if (w->pattern_run_lengths[(size_t)c * w->num_patterns + p] != 0) {
      return w->pattern_masks[p];
    }
  }
  return 0;
}

static void pack_group(const clicktrain_s8_layer* layer, size_t base,
                       size_t count, clicktrain_s8_patdwconv_group* group) {
  const clicktrain_pattern_weights* w = &layer->structure.weights;
  const clicktrain_s8_requantization* q = &layer->requantization;
  memset(group, 0, sizeof(*group));
  /* Dense 3x3 weights of the group's channels, zero where not kept. */
  int8_t dense[kGroup][9];
  memset(dense, 0, sizeof(dense));
  unsigned union_mask = 0;
  for (size_t c = 0; c < count; ++c) {
    const uint32_t channel = (uint32_t)(base + c);
    const unsigned mask = channel_mask(w, channel);
    const int8_t* value = layer->values + w->filter_value_start[channel];
    int32_t weight_sum = 0;
    for (int position = 0; position < 9; ++position) {
      if (!((mask >> position) & 1u)) continue;
      dense[c][position] = *value++;
      weight_sum += dense[c][position];
    }
    union_mask |= mask;
    const size_t lane = lane_of(c);
    group->bias[lane] = (int32_t)((uint32_t)q->bias[channel] -
                                  (uint32_t)q->input_zero_point *
                                      (uint32_t)weight_sum);
    const int shift = q->shift[channel];
    const int exponent = shift < 0 ? -shift : 0;
    group->multiplier[lane] = q->multiplier[channel];
    group->left_shift[lane] = shift > 0 ? shift : 0;
    const size_t wide = wide_of(lane);
    group->right_shift[wide] = 31 + exponent;
    group->rounding[wide] = ((int64_t)1 << 30) +
                            (exponent > 0 ? ((int64_t)1 << (30 + exponent)) : 0);
    group->negative_rounding[wide] = exponent > 0 ? ((int64_t)1 << 31) : 0;
    group->sign_bit[wide] = (int64_t)((uint64_t)1 << (63 - (31 + exponent)));
  }
  /* Lanes of missing channels keep a valid shift (their output is dropped). */
  for (size_t c = count; c < kGroup; ++c) {
    const size_t wide = wide_of(lane_of(c));
    group->right_shift[wide] = 31;
    group->sign_bit[wide] = (int64_t)1 << 32;
  }
  int taps[9], tap_count = 0;
  for (int position = 0; position < 9; ++position) {
    if ((union_mask >> position) & 1u) taps[tap_count++] = position;
  }
  group->pairs = (uint32_t)(tap_count + 1) / 2;
  for (uint32_t p = 0; p < group->pairs; ++p) {
    for (int t = 0; t < 2; ++t) {
      const int index = 2 * (int)p + t;
      const int present = index < tap_count;
      const int position = taps[present ? index : index - 1];
      group->taps[index] = (uint8_t)position;
      for (size_t c = 0; c < count; ++c) {
        const size_t lane = lane_of(c);
        group->weights[p][16 * (lane / 8) + 2 * (lane % 8) + (size_t)t] =
            present ? dense[c][position] : 0;
      }
    }
  }
}

static int add_workspaces(clicktrain_s8_patdwconv_operator* op, size_t count) {
  if (count > CLICKTRAIN_S8_PATDWCONV_MAX_THREADS) {
    count = CLICKTRAIN_S8_PATDWCONV_MAX_THREADS;
  }
  while (op->allocated_workspaces < count) {
    void* workspace = aligned_alloc(kAlignment, op->workspace_bytes);
    if (workspace == NULL) return -1;
    op->workspaces[op->allocated_workspaces++] = (const int8_t**)workspace;
    op->scratch_bytes += op->workspace_bytes;
  }
  return 0;
}

int clicktrain_s8_patdwconv_operator_setup(
    clicktrain_s8_patdwconv_operator* op,
    const clicktrain_conv_geometry* geometry, const clicktrain_s8_layer* layer,
    const clicktrain_s8_patdwconv_ukernels* ukernels, int max_threads) {
  memset(op, 0, sizeof(*op));
  op->geometry = *geometry;
  op->ukernels = ukernels;
  op->max_threads = max_threads < 1 ? 1 : max_threads;
  const clicktrain_conv_geometry* g = &op->geometry;
  const size_t channels = (size_t)g->input_channels;
  op->group_count = group_count(g);
  op->workspace_bytes = clicktrain_s8_patdwconv_workspace_bytes(g);
  const size_t padding_bytes = round_up(channels ? channels : 1, kAlignment);
  op->groups = (clicktrain_s8_patdwconv_group*)aligned_alloc(
      kAlignment, (op->group_count ? op->group_count : 1) *
                      sizeof(clicktrain_s8_patdwconv_group));
  op->padding_row = (int8_t*)aligned_alloc(kAlignment, padding_bytes);
  if (op->groups == NULL || op->padding_row == NULL) {
    clicktrain_s8_patdwconv_operator_release(op);
    return -1;
  }
  memset(op->padding_row, layer->requantization.input_zero_point,
         padding_bytes);
  for (size_t i = 0; i < op->group_count; ++i) {
    const size_t base = i * kGroup;
    pack_group(layer, base, channels - base < kGroup ? channels - base : kGroup,
               &op->groups[i]);
  }
  op->output_params.zero_point = layer->requantization.output_zero_point;
  op->output_params.min = layer->requantization.output_min;
  op->output_params.max = layer->requantization.output_max;
  op->scratch_bytes =
      op->group_count * sizeof(clicktrain_s8_patdwconv_group) + padding_bytes;
  if (add_workspaces(op, 1) != 0) {
    clicktrain_s8_patdwconv_operator_release(op);
    return -1;
  }
  return 0;
}

void clicktrain_s8_patdwconv_operator_release(
    clicktrain_s8_patdwconv_operator* op) {
  for (size_t i = 0; i < op->allocated_workspaces; ++i) {
    free((void*)op->workspaces[i]);
  }
  free(op->groups);
  free(op->padding_row);
  memset(op, 0, sizeof(*op));
}

typedef struct run_context {
  const clicktrain_s8_patdwconv_operator* op;
  const int8_t* image;  /* NHWC input of the current batch element */
  int8_t* output;       /* NHWC output of the current batch element */
  size_t bands;
} run_context;

static void run_band(void* context, size_t band) {
  const run_context* run = (const run_context*)context;
  const clicktrain_s8_patdwconv_operator* op = run->op;
  const clicktrain_conv_geometry* g = &op->geometry;
  const size_t height = (size_t)g->output_height;
  const size_t width = (size_t)g->output_width;
  const size_t channels = (size_t)g->input_channels;
  const size_t first = height * band / run->bands;
  const size_t end = height * (band + 1) / run->bands;
  const int8_t** taps = op->workspaces[band];
  for (size_t oy = first; oy < end; ++oy) {
    const int8_t* rows[3];
    for (int ky = 0; ky < 3; ++ky) {
      const long y = (long)oy * g->stride_h - g->padding_top +
                     (long)ky * g->dilation_h;
      rows[ky] = y < 0 || y >= g->input_height
                     ? NULL
                     : run->image + (size_t)y * g->input_width * channels;
    }
    for (size_t ox = 0; ox < width; ++ox) {
      const long left = (long)ox * g->stride_w - g->padding_left;
      for (int position = 0; position < 9; ++position) {
        const long x = left + (long)(position % 3) * g->dilation_w;
        const int8_t* row = rows[position / 3];
        taps[ox * 9 + (size_t)position] =
            row == NULL || x < 0 || x >= g->input_width
                ? op->padding_row
                : row + (size_t)x * channels;
      }
    }
    op->ukernels->row(width, channels, taps, op->groups, &op->output_params,
                      run->output + oy * width * channels);
  }
}

void clicktrain_s8_patdwconv_operator_run(clicktrain_s8_patdwconv_operator* op,
                                          const int8_t* input, int8_t* output,
                                          clicktrain_thread_pool* pool) {
  const clicktrain_conv_geometry* g = &op->geometry;
  size_t threads = (size_t)clicktrain_thread_pool_threads(pool);
  if (threads > (size_t)op->max_threads ||
      (threads > 1 && add_workspaces(op, threads) != 0)) {
    threads = 1;
  }
  if (threads > (size_t)g->output_height) threads = (size_t)g->output_height;
  if (threads < 2) pool = NULL;
  if (threads < 1) threads = 1;
  const size_t input_image = (size_t)g->input_height * g->input_width *
                             (size_t)g->input_channels;
  const size_t output_image = (size_t)g->output_height * g->output_width *
                              (size_t)g->output_channels;
  run_context run = {op, input, output, threads};
  for (int n = 0; n < g->batch; ++n) {
    run.image = input + (size_t)n * input_image;
    run.output = output + (size_t)n * output_image;
    clicktrain_thread_pool_parallelize(pool, run_band, &run, threads);
  }
}
