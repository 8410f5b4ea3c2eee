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
  const size_t kernels = t->format_version == 1
                             ? t->kernel_input_channels_count
                             : t->values_count;
  return storage_bytes(t->pattern_masks_count, output_channels, kernels,
                       t->values_count);
}

static int popcount9(unsigned mask) {
  int count = 0;
  for (int position = 0; position < CLICKTRAIN_KERNEL_POSITIONS; ++position) {
    count += (mask >> position) & 1u;
  }
  return count;
}

/* The storage block of a layer with these counts, carved into the arrays of
 * clicktrain_pattern_weights; masks, values and bias copied in, everything
 * else zero. Returns 0, or -1 when out of memory. */
static int allocate_storage(const clicktrain_compact_tensors* t,
                            size_t input_channels, size_t output_channels,
                            size_t num_kernels, size_t num_values,
                            clicktrain_weight_storage* storage, char* error,
                            size_t error_size) {
  const size_t num_patterns = t->pattern_masks_count;
  const size_t total = storage_bytes(num_patterns, output_channels,
                                     num_kernels, num_values);
  char* memory = total == SIZE_MAX
                     ? NULL
                     : (char*)aligned_alloc(kAlignment, total);
  if (memory == NULL) {
    return fail(error, error_size, "out of memory allocating %zu bytes", total);
  }
  memset(memory, 0, total);
  char* cursor = memory;
  uint16_t* masks = (uint16_t*)cursor;
  cursor += align_up(num_patterns * sizeof(uint16_t));
  uint16_t* runs = (uint16_t*)cursor;
  cursor += align_up(output_channels * num_patterns * sizeof(uint16_t));
  uint16_t* channels = (uint16_t*)cursor;
  cursor += align_up(num_kernels * sizeof(uint16_t));
  float* values = (float*)cursor;
  cursor += align_up(num_values * sizeof(float));
  float* bias = (float*)cursor;
  cursor += align_up(output_channels * sizeof(float));
  uint32_t* kernel_start = (uint32_t*)cursor;
  cursor += align_up((output_channels + 1) * sizeof(uint32_t));
  uint32_t* value_start = (uint32_t*)cursor;

  memcpy(masks, t->pattern_masks, num_patterns * sizeof(uint16_t));
  if (t->bias != NULL) {
    memcpy(bias, t->bias, output_channels * sizeof(float));
  }
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

/* Fills filter_kernel_start and filter_value_start from the run lengths. */
static void compute_starts(clicktrain_pattern_weights* w,
                           const int* pattern_sizes) {
  uint32_t* kernel_start = (uint32_t*)w->filter_kernel_start;
  uint32_t* value_start = (uint32_t*)w->filter_value_start;
  uint32_t kernels_so_far = 0;
  uint32_t values_so_far = 0;
  for (size_t o = 0; o < w->output_channels; ++o) {
    kernel_start[o] = kernels_so_far;
    value_start[o] = values_so_far;
    for (size_t p = 0; p < w->num_patterns; ++p) {
      const uint32_t run = w->pattern_run_lengths[o * w->num_patterns + p];
      kernels_so_far += run;
      values_so_far += run * (uint32_t)pattern_sizes[p];
    }
  }
  kernel_start[w->output_channels] = kernels_so_far;
  value_start[w->output_channels] = values_so_far;
}

/* ------------------------------------------------------------------------
 * Version 1: run lengths and input channels, already in kernel order. */

static int build_version1(const clicktrain_compact_tensors* t,
                          size_t input_channels, size_t output_channels,
                          int depthwise, const int* pattern_sizes,
                          clicktrain_weight_storage* storage, char* error,
                          size_t error_size) {
  const size_t num_patterns = t->pattern_masks_count;
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
    if (depthwise && filter_kernels > 1) {
      return fail(error, error_size,
                  "depthwise filter %zu lists %llu kernels, at most 1 "
                  "allowed", o, (unsigned long long)filter_kernels);
    }
    const uint64_t max_kernels = input_channels;
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

  if (allocate_storage(t, input_channels, output_channels, (size_t)num_kernels,
                       (size_t)num_values, storage, error, error_size) != 0) {
    return -1;
  }
  clicktrain_pattern_weights* w = &storage->weights;
  uint16_t* runs = (uint16_t*)w->pattern_run_lengths;
  uint16_t* channels = (uint16_t*)w->kernel_input_channels;
  for (size_t i = 0; i < output_channels * num_patterns; ++i) {
    runs[i] = load_index(t->pattern_run_lengths, i,
                         t->run_lengths_element_size);
  }
  for (size_t i = 0; i < (size_t)num_kernels; ++i) {
    channels[i] = load_index(t->kernel_input_channels, i,
                             t->kernel_input_channels_element_size);
  }
  memcpy((float*)w->values, t->values, (size_t)num_values * sizeof(float));
  compute_starts(w, pattern_sizes);
  return 0;
}

/* ------------------------------------------------------------------------
 * Version 2: kernel_index, a Rice-coded bit stream of gaps and pattern ids
 * in (filter, input channel) order; values in the same order. */

typedef struct kernel_index_reader {
  const uint8_t* stream;  /* the bytes after gap_bits */
  uint64_t stream_bits;
  uint64_t bit;           /* next bit to read */
  uint64_t next_byte;     /* next byte to move into `buffer` */
  uint64_t buffer;        /* bits bit.. bit + buffered - 1, the rest 0 */
  unsigned buffered;
  unsigned gap_bits;
  unsigned id_bits;
  size_t num_patterns;
  uint64_t pairs;         /* (filter, input channel) pairs of the layer */
  uint64_t next_pair;     /* first pair not yet passed */
  uint64_t kernels;       /* kernels read so far */
} kernel_index_reader;

static void start_reading(const clicktrain_compact_tensors* t, uint64_t pairs,
                          kernel_index_reader* r) {
  memset(r, 0, sizeof(*r));
  const uint8_t* bytes = (const uint8_t*)t->kernel_index;
  r->stream = bytes + 1;
  r->stream_bits = 8 * (uint64_t)(t->kernel_index_count - 1);
  r->gap_bits = bytes[0];
  while ((1u << r->id_bits) < t->pattern_masks_count) ++r->id_bits;
  r->num_patterns = t->pattern_masks_count;
  r->pairs = pairs;
}

/* Fills the buffer to at least 57 bits, or to the end of the stream. */
static void refill(kernel_index_reader* r) {
  const uint64_t stream_bytes = r->stream_bits >> 3;
  while (r->buffered <= 56 && r->next_byte < stream_bytes) {
    r->buffer |= (uint64_t)r->stream[r->next_byte++] << r->buffered;
    r->buffered += 8;
  }
}

static void consume(kernel_index_reader* r, unsigned count) {
  r->buffer = count == 64 ? 0 : r->buffer >> count;
  r->buffered -= count;
  r->bit += count;
}

/* Reads `count` (<= 32) bits as an unsigned number; the caller checked
 * that the stream holds them. */
static uint64_t read_bits(kernel_index_reader* r, unsigned count) {
  refill(r);
  const uint64_t value = r->buffer & (((uint64_t)1 << count) - 1);
  consume(r, count);
  return value;
}

/* The next kept kernel: returns 1 with its pair and pattern, 0 after the
 * final gap, -1 with a message on a malformed stream. */
static int next_kernel(kernel_index_reader* r, uint64_t* pair,
                       unsigned* pattern, char* error, size_t error_size) {
  const uint64_t left = r->pairs - r->next_pair;
  uint64_t gap = 0;
  for (;;) {  /* the quotient: one bits up to a zero, 57 at a time */
    refill(r);
    const uint64_t available = r->buffered < 57 ? r->buffered : 57;
    if (available == 0) {
      return fail(error, error_size,
                  "kernel_index ends inside the gap before kernel %llu",
                  (unsigned long long)r->kernels);
    }
    const uint64_t zeros = ~r->buffer;
    const uint64_t ones =
        zeros == 0 ? 64 : (uint64_t)__builtin_ctzll(zeros);
    const uint64_t run = ones < available ? ones : available;
    gap += run << r->gap_bits;  /* run <= 57, gap_bits <= 31: no overflow */
    if (gap > left) {
      return fail(error, error_size,
                  "kernel_index: the gap before kernel %llu runs past the "
                  "layer's %llu (filter, input channel) pairs",
                  (unsigned long long)r->kernels,
                  (unsigned long long)r->pairs);
    }
    if (ones < available) {
      consume(r, (unsigned)run + 1);  /* and the zero */
      break;
    }
    consume(r, (unsigned)run);
  }
  if (r->stream_bits - r->bit < r->gap_bits) {
    return fail(error, error_size,
                "kernel_index ends inside the gap before kernel %llu",
                (unsigned long long)r->kernels);
  }
  gap += read_bits(r, r->gap_bits);
  if (gap > left) {
    return fail(error, error_size,
                "kernel_index: the gap before kernel %llu runs past the "
                "layer's %llu (filter, input channel) pairs",
                (unsigned long long)r->kernels, (unsigned long long)r->pairs);
  }
  r->next_pair += gap;
  if (r->next_pair == r->pairs) return 0;
  if (r->stream_bits - r->bit < r->id_bits) {
    return fail(error, error_size,
                "kernel_index ends inside the pattern id of kernel %llu",
                (unsigned long long)r->kernels);
  }
  const unsigned id = (unsigned)read_bits(r, r->id_bits);
  if (id >= r->num_patterns) {
    return fail(error, error_size,
                "kernel_index: pattern id %u of kernel %llu must be < %zu "
                "(the patterns in pattern_masks)", id,
                (unsigned long long)r->kernels, r->num_patterns);
  }
  *pair = r->next_pair;
  *pattern = id;
  ++r->next_pair;
  ++r->kernels;
  return 1;
}

static int build_version2(const clicktrain_compact_tensors* t,
                          size_t input_channels, size_t output_channels,
                          int depthwise, const int* pattern_sizes,
                          clicktrain_weight_storage* storage, char* error,
                          size_t error_size) {
  const size_t num_patterns = t->pattern_masks_count;
  if (t->kernel_index == NULL || t->kernel_index_count == 0) {
    return fail(error, error_size,
                "kernel_index must hold at least its gap_bits byte");
  }
  const unsigned gap_bits = ((const uint8_t*)t->kernel_index)[0];
  if (gap_bits > CLICKTRAIN_MAX_GAP_BITS) {
    return fail(error, error_size,
                "kernel_index[0] (gap_bits) must be <= %d. Received: %u",
                CLICKTRAIN_MAX_GAP_BITS, gap_bits);
  }
  const uint64_t pairs =
      depthwise ? output_channels : (uint64_t)output_channels * input_channels;
  const uint64_t pairs_per_filter = depthwise ? 1 : input_channels;

  /* Pass 1: validate the stream, count kernels and values. */
  kernel_index_reader r;
  start_reading(t, pairs, &r);
  uint64_t num_values = 0;
  uint64_t pair;
  unsigned pattern;
  int status;
  while ((status = next_kernel(&r, &pair, &pattern, error, error_size)) == 1) {
    num_values += (uint64_t)pattern_sizes[pattern];
  }
  if (status < 0) return -1;
  const uint64_t padding = r.stream_bits - r.bit;
  if (padding >= 8) {
    return fail(error, error_size,
                "kernel_index has %llu bytes after the end of its stream",
                (unsigned long long)(padding / 8));
  }
  for (uint64_t b = r.bit; b < r.stream_bits; ++b) {
    if ((r.stream[b >> 3] >> (b & 7)) & 1u) {
      return fail(error, error_size,
                  "kernel_index: the bits after the end of the stream must "
                  "be zero");
    }
  }
  const uint64_t num_kernels = r.kernels;
  if (num_values > INT32_MAX) {
    return fail(error, error_size, "a layer may hold at most %d values. "
                "Received: %llu", INT32_MAX, (unsigned long long)num_values);
  }
  if (t->values == NULL || num_values != t->values_count) {
    return fail(error, error_size,
                "values must have %llu elements (kept positions of the %llu "
                "kernels in kernel_index). Received: %zu",
                (unsigned long long)num_values,
                (unsigned long long)num_kernels, t->values_count);
  }
  if (allocate_storage(t, input_channels, output_channels, (size_t)num_kernels,
                       (size_t)num_values, storage, error, error_size) != 0) {
    return -1;
  }
  clicktrain_pattern_weights* w = &storage->weights;
  uint16_t* runs = (uint16_t*)w->pattern_run_lengths;
  uint16_t* channels = (uint16_t*)w->kernel_input_channels;
  float* values = (float*)w->values;

  /* Pass 2: run lengths (a filter holds at most 65535 kernels). Pairs
   * ascend, so the filter advances without a division. */
  start_reading(t, pairs, &r);
  size_t o = 0;
  uint64_t filter_end = pairs_per_filter;
  while (next_kernel(&r, &pair, &pattern, NULL, 0) == 1) {
    while (pair >= filter_end) {
      ++o;
      filter_end += pairs_per_filter;
    }
    ++runs[o * num_patterns + pattern];
  }
  compute_starts(w, pattern_sizes);

  /* Pass 3: each kernel to the next slot of its pattern in its filter. */
  uint32_t kernel_slot[CLICKTRAIN_MAX_PATTERNS];
  uint32_t value_slot[CLICKTRAIN_MAX_PATTERNS];
  size_t filter = SIZE_MAX;
  const char* file_values = (const char*)t->values;
  start_reading(t, pairs, &r);
  o = 0;
  filter_end = pairs_per_filter;
  while (next_kernel(&r, &pair, &pattern, NULL, 0) == 1) {
    while (pair >= filter_end) {
      ++o;
      filter_end += pairs_per_filter;
    }
    if (o != filter) {
      filter = o;
      uint32_t kernel = w->filter_kernel_start[o];
      uint32_t value = w->filter_value_start[o];
      for (size_t p = 0; p < num_patterns; ++p) {
        const uint32_t run = runs[o * num_patterns + p];
        kernel_slot[p] = kernel;
        value_slot[p] = value;
        kernel += run;
        value += run * (uint32_t)pattern_sizes[p];
      }
    }
    channels[kernel_slot[pattern]++] =
        (uint16_t)(depthwise ? o : pair - (filter_end - pairs_per_filter));
    const size_t size = (size_t)pattern_sizes[pattern];
    memcpy(values + value_slot[pattern], file_values, size * sizeof(float));
    value_slot[pattern] += (uint32_t)size;
    file_values += size * sizeof(float);
  }
  return 0;
}

int clicktrain_build_pattern_weights(const clicktrain_compact_tensors* t,
                                     size_t input_channels,
                                     size_t output_channels, int depthwise,
                                     clicktrain_weight_storage* storage,
                                     char* error, size_t error_size) {
  memset(storage, 0, sizeof(*storage));
  if (t->format_version < CLICKTRAIN_PATTERN_OLDEST_FORMAT_VERSION ||
      t->format_version > CLICKTRAIN_PATTERN_FORMAT_VERSION) {
    return fail(error, error_size,
                "unsupported compact format_version %d (this build reads "
                "versions %d to %d)", t->format_version,
                CLICKTRAIN_PATTERN_OLDEST_FORMAT_VERSION,
                CLICKTRAIN_PATTERN_FORMAT_VERSION);
  }
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
  return t->format_version == 1
             ? build_version1(t, input_channels, output_channels, depthwise,
                              pattern_sizes, storage, error, error_size)
             : build_version2(t, input_channels, output_channels, depthwise,
                              pattern_sizes, storage, error, error_size);
}

void clicktrain_free_pattern_weights(clicktrain_weight_storage* storage) {
  free(storage->memory);
  memset(storage, 0, sizeof(*storage));
}
