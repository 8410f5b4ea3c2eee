#include "compact_weights.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { kAlignment = 64 };

static int fail(char* error, size_t error_size, const char* format, ...) {
  if (error != NULL && error_size > 0) {
    va_list args;
    va_start(args, format);
    vsnprintf(error, error_size, format, args);
    va_end(args);
  }
  return -1;
}

/* File data may sit at any offset: read it byte-wise. */
static uint16_t load_u16(const void* base, size_t index) {
  uint16_t value;
  memcpy(&value, (const char*)base + index * sizeof(value), sizeof(value));
  return value;
}

/* An index stored as uint8 or uint16 (element_size 1 or 2). */
static uint16_t load_index(const void* base, size_t index,
                           size_t element_size) {
  if (element_size == 1) return ((const uint8_t*)base)[index];
  return load_u16(base, index);
}

static size_t align_up(size_t size) {
  return (size + kAlignment - 1) / kAlignment * kAlignment;
}

/* Bytes of the one aligned block clicktrain_build_pattern_weights
 * allocates; SIZE_MAX when that would overflow. */
static size_t storage_bytes(size_t num_patterns, size_t output_channels,
                            size_t num_kernels, size_t num_values) {
  const size_t limit = SIZE_MAX / 16;
  if (num_patterns > limit || output_channels > limit ||
      num_kernels > limit || num_values > limit ||
      (num_patterns != 0 && output_channels > limit / num_patterns)) {
    return SIZE_MAX;
  }
  return align_up(num_patterns * sizeof(uint16_t)) +
         align_up(output_channels * num_patterns * sizeof(uint16_t)) +
         align_up(num_kernels * sizeof(uint16_t)) +
         align_up(num_values * sizeof(float)) +
         align_up(output_channels * sizeof(float)) +
         2 * align_up((output_channels + 1) * sizeof(uint32_t));
}

size_t clicktrain_pattern_weights_bytes(const clicktrain_compact_tensors* t,
                                        size_t output_channels) {
  return storage_bytes(t->pattern_masks_count, output_channels,
                       t->kernel_input_channels_count, t->values_count);
}

static int popcount9(unsigned mask) {
  int count = 0;
  for (int position = 0; position < CLICKTRAIN_KERNEL_POSITIONS; ++position) {
    count += (mask >> position) & 1u;
  }
  return count;
}

int clicktrain_build_pattern_weights(const clicktrain_compact_tensors* t,
                                     size_t input_channels,
                                     size_t output_channels, int depthwise,
                                     clicktrain_weight_storage* storage,
                                     char* error, size_t error_size) {
  memset(storage, 0, sizeof(*storage));
  if (input_channels == 0 || input_channels > CLICKTRAIN_MAX_CHANNELS) {
    return fail(error, error_size,
                "input_channels must be in [1, %d]. Received: %zu",
                CLICKTRAIN_MAX_CHANNELS, input_channels);
  }
  if (output_channels == 0 || output_channels > CLICKTRAIN_MAX_CHANNELS) {
    return fail(error, error_size,
                "output_channels must be in [1, %d]. Received: %zu",
                CLICKTRAIN_MAX_CHANNELS, output_channels);
  }
  if (depthwise && input_channels != output_channels) {
    return fail(error, error_size,
                "a depthwise layer needs input_channels == output_channels. "
                "Received: %zu and %zu", input_channels, output_channels);
  }
  const size_t num_patterns = t->pattern_masks_count;
  if (t->pattern_masks == NULL || num_patterns == 0 ||
      num_patterns > CLICKTRAIN_MAX_PATTERNS) {
    return fail(error, error_size,
                "pattern_masks must hold 1 to %d patterns. Received: %zu",
                CLICKTRAIN_MAX_PATTERNS, num_patterns);
  }
  if (t->pattern_run_lengths == NULL ||
      t->run_lengths_rows != output_channels ||
      t->run_lengths_columns != num_patterns) {
    return fail(error, error_size,
                "pattern_run_lengths must have shape [%zu, %zu]. "
                "Received: [%zu, %zu]", output_channels, num_patterns,
                t->run_lengths_rows, t->run_lengths_columns);
  }
  if ((t->run_lengths_element_size != 1 && t->run_lengths_element_size != 2) ||
      (t->kernel_input_channels_element_size != 1 &&
       t->kernel_input_channels_element_size != 2)) {
    return fail(error, error_size,
                "pattern_run_lengths and kernel_input_channels must be uint8 "
                "or uint16. Received element sizes %zu and %zu",
                t->run_lengths_element_size,
                t->kernel_input_channels_element_size);
  }
  if (t->bias != NULL && t->bias_count != output_channels) {
    return fail(error, error_size,
                "bias must have %zu elements. Received: %zu", output_channels,
                t->bias_count);
  }

  int pattern_sizes[CLICKTRAIN_MAX_PATTERNS];
  for (size_t p = 0; p < num_patterns; ++p) {
    const unsigned mask = load_u16(t->pattern_masks, p);
    if (mask == 0 || mask >= (1u << CLICKTRAIN_KERNEL_POSITIONS)) {
      return fail(error, error_size,
                  "pattern_masks[%zu] must be a non-empty 9-bit mask. "
                  "Received: %u", p, mask);
    }
    pattern_sizes[p] = popcount9(mask);
  }

  /* Counts first, in 64 bits, so no later offset can overflow. */
  uint64_t num_kernels = 0;
  uint64_t num_values = 0;
  for (size_t o = 0; o < output_channels; ++o) {
    uint64_t filter_kernels = 0;
    for (size_t p = 0; p < num_patterns; ++p) {
      const uint16_t run =
          load_index(t->pattern_run_lengths, o * num_patterns + p,
                     t->run_lengths_element_size);
      filter_kernels += run;
      num_values += (uint64_t)run * (uint64_t)pattern_sizes[p];
    }
    const uint64_t max_kernels = depthwise ? 1 : input_channels;
    if (filter_kernels > max_kernels) {
      return fail(error, error_size,
                  "filter %zu lists %llu kernels, more than the %llu input "
                  "channels it can read", o,
                  (unsigned long long)filter_kernels,
                  (unsigned long long)max_kernels);
    }
    num_kernels += filter_kernels;
  }
  if (t->kernel_input_channels == NULL ||
      num_kernels != t->kernel_input_channels_count) {
    return fail(error, error_size,
                "kernel_input_channels must have %llu elements (the sum of "
                "pattern_run_lengths). Received: %zu",
                (unsigned long long)num_kernels,
                t->kernel_input_channels_count);
  }
  if (num_values > INT32_MAX) {
    return fail(error, error_size, "a layer may hold at most %d values. "
                "Received: %llu", INT32_MAX, (unsigned long long)num_values);
  }
  if (t->values == NULL || num_values != t->values_count) {
    return fail(error, error_size,
                "values must have %llu elements (kept positions of all "
                "kernels). Received: %zu", (unsigned long long)num_values,
                t->values_count);
  }

  /* Indices, filter by filter. */
  size_t kernel = 0;
  for (size_t o = 0; o < output_channels; ++o) {
    for (size_t p = 0; p < num_patterns; ++p) {
      const uint16_t run =
          load_index(t->pattern_run_lengths, o * num_patterns + p,
                     t->run_lengths_element_size);
      for (uint16_t j = 0; j < run; ++j, ++kernel) {
        const uint16_t channel =
            load_index(t->kernel_input_channels, kernel,
                       t->kernel_input_channels_element_size);
        if (channel >= input_channels) {
          return fail(error, error_size,
                      "kernel_input_channels[%zu] must be < input_channels "
                      "(%zu). Received: %u", kernel, input_channels, channel);
        }
        if (depthwise && channel != o) {
          return fail(error, error_size,
                      "kernel_input_channels[%zu] of depthwise filter %zu "
                      "must be %zu. Received: %u", kernel, o, o, channel);
        }
      }
    }
  }

  /* One aligned block: masks, run lengths, channels, values, bias, starts. */
  const size_t masks_bytes = align_up(num_patterns * sizeof(uint16_t));
  const size_t runs_bytes =
      align_up(output_channels * num_patterns * sizeof(uint16_t));
  const size_t channels_bytes = align_up((size_t)num_kernels * sizeof(uint16_t));
  const size_t values_bytes = align_up((size_t)num_values * sizeof(float));
  const size_t bias_bytes = align_up(output_channels * sizeof(float));
  const size_t starts_bytes = align_up((output_channels + 1) * sizeof(uint32_t));
  const size_t total = storage_bytes(num_patterns, output_channels,
                                     num_kernels, num_values);
  char* memory = (char*)aligned_alloc(kAlignment, total);
  if (memory == NULL) {
    return fail(error, error_size, "out of memory allocating %zu bytes", total);
  }
  memset(memory, 0, total);
  char* cursor = memory;
  uint16_t* masks = (uint16_t*)cursor;
  cursor += masks_bytes;
  uint16_t* runs = (uint16_t*)cursor;
  cursor += runs_bytes;
  uint16_t* channels = (uint16_t*)cursor;
  cursor += channels_bytes;
  float* values = (float*)cursor;
  cursor += values_bytes;
  float* bias = (float*)cursor;
  cursor += bias_bytes;
  uint32_t* kernel_start = (uint32_t*)cursor;
  cursor += starts_bytes;
  uint32_t* value_start = (uint32_t*)cursor;

  memcpy(masks, t->pattern_masks, num_patterns * sizeof(uint16_t));
  for (size_t i = 0; i < output_channels * num_patterns; ++i) {
    runs[i] = load_index(t->pattern_run_lengths, i,
                         t->run_lengths_element_size);
  }
  for (size_t i = 0; i < (size_t)num_kernels; ++i) {
    channels[i] = load_index(t->kernel_input_channels, i,
                             t->kernel_input_channels_element_size);
  }
  memcpy(values, t->values, (size_t)num_values * sizeof(float));
  if (t->bias != NULL) {
    memcpy(bias, t->bias, output_channels * sizeof(float));
  }
  uint32_t kernels_so_far = 0;
  uint32_t values_so_far = 0;
  for (size_t o = 0; o < output_channels; ++o) {
    kernel_start[o] = kernels_so_far;
    value_start[o] = values_so_far;
    for (size_t p = 0; p < num_patterns; ++p) {
      const uint32_t run = runs[o * num_patterns + p];
      kernels_so_far += run;
      values_so_far += run * (uint32_t)pattern_sizes[p];
    }
  }
  kernel_start[output_channels] = kernels_so_far;
  value_start[output_channels] = values_so_far;

  clicktrain_pattern_weights* w = &storage->weights;
  w->input_channels = (uint32_t)input_channels;
  w->output_channels = (uint32_t)output_channels;
  w->num_patterns = (uint32_t)num_patterns;
  w->num_kernels = (uint32_t)num_kernels;
  w->num_values = (uint32_t)num_values;
  w->pattern_masks = masks;
  w->pattern_run_lengths = runs;
  w->kernel_input_channels = channels;
  w->values = values;
  w->bias = bias;
  w->filter_kernel_start = kernel_start;
  w->filter_value_start = value_start;
  storage->memory = memory;
  return 0;
}

void clicktrain_free_pattern_weights(clicktrain_weight_storage* storage) {
  free(storage->memory);
  memset(storage, 0, sizeof(*storage));
}
