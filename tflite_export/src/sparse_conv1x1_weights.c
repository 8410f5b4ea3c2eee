#include "sparse_conv1x1_weights.h"

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

static size_t align_up(size_t size) {
  return (size + kAlignment - 1) / kAlignment * kAlignment;
}

size_t clicktrain_spconv1x1_weights_bytes(size_t values_count,
                                          size_t output_channels) {
  if (values_count > SIZE_MAX / 16 || output_channels > SIZE_MAX / 16) {
    return SIZE_MAX;
  }
  return align_up((output_channels + 1) * sizeof(uint32_t)) +
         align_up(values_count * sizeof(uint16_t)) +
         align_up(values_count * sizeof(float)) +
         align_up(output_channels * sizeof(float));
}

int clicktrain_build_spconv1x1_weights(
    const clicktrain_spconv1x1_tensors* t, size_t input_channels,
    size_t output_channels, clicktrain_spconv1x1_weight_storage* storage,
    char* error, size_t error_size) {
  memset(storage, 0, sizeof(*storage));
  if (input_channels == 0 ||
      input_channels > CLICKTRAIN_SPCONV1X1_MAX_CHANNELS) {
    return fail(error, error_size,
                "input_channels must be in [1, %d]. Received: %zu",
                CLICKTRAIN_SPCONV1X1_MAX_CHANNELS, input_channels);
  }
  if (output_channels == 0 ||
      output_channels > CLICKTRAIN_SPCONV1X1_MAX_CHANNELS) {
    return fail(error, error_size,
                "output_channels must be in [1, %d]. Received: %zu",
                CLICKTRAIN_SPCONV1X1_MAX_CHANNELS, output_channels);
  }
  const size_t row_bytes = (input_channels + 7) / 8;
  if (t->nonzero_mask == NULL || t->mask_rows != output_channels ||
      t->mask_columns != row_bytes) {
    return fail(error, error_size,
                "nonzero_mask must have shape [%zu, %zu]. Received: [%zu, %zu]",
                output_channels, row_bytes, t->mask_rows, t->mask_columns);
  }
  /* Count kept weights, rejecting bits past the last input channel. Both
   * factors are below 2^16, so no count below overflows. */
  const uint8_t* mask = (const uint8_t*)t->nonzero_mask;
  const unsigned tail_bits = (unsigned)(input_channels % 8);
  const uint8_t tail_mask =
      tail_bits == 0 ? 0 : (uint8_t)(0xFFu << tail_bits);
  size_t nonzeros = 0;
  for (size_t o = 0; o < output_channels; ++o) {
    const uint8_t* row = mask + o * row_bytes;
    if (row[row_bytes - 1] & tail_mask) {
      return fail(error, error_size,
                  "nonzero_mask row %zu marks an input channel >= %zu", o,
                  input_channels);
    }
    for (size_t b = 0; b < row_bytes; ++b) {
      nonzeros += (size_t)__builtin_popcount(row[b]);
    }
  }
  if (t->values_count != nonzeros || (nonzeros != 0 && t->values == NULL)) {
    return fail(error, error_size,
                "values must hold one weight per set bit of nonzero_mask "
                "(%zu). Received: %zu", nonzeros, t->values_count);
  }
  if (t->bias != NULL && t->bias_count != output_channels) {
    return fail(error, error_size,
                "bias must have %zu elements. Received: %zu", output_channels,
                t->bias_count);
  }

  const size_t starts_bytes = align_up((output_channels + 1) * sizeof(uint32_t));
  const size_t channel_bytes = align_up(nonzeros * sizeof(uint16_t));
  const size_t values_bytes = align_up(nonzeros * sizeof(float));
  char* memory = (char*)aligned_alloc(
      kAlignment, clicktrain_spconv1x1_weights_bytes(nonzeros, output_channels));
  if (memory == NULL) {
    return fail(error, error_size, "out of memory for %zu weights", nonzeros);
  }
  uint32_t* row_start = (uint32_t*)memory;
  uint16_t* input_channel = (uint16_t*)(memory + starts_bytes);
  float* values = (float*)(memory + starts_bytes + channel_bytes);
  float* bias = (float*)(memory + starts_bytes + channel_bytes + values_bytes);
  size_t k = 0;
  for (size_t o = 0; o < output_channels; ++o) {
    row_start[o] = (uint32_t)k;
    const uint8_t* row = mask + o * row_bytes;
    for (size_t i = 0; i < input_channels; ++i) {
      if ((row[i / 8] >> (i % 8)) & 1u) input_channel[k++] = (uint16_t)i;
    }
  }
  row_start[output_channels] = (uint32_t)k;
  if (nonzeros != 0) memcpy(values, t->values, nonzeros * sizeof(float));
  if (t->bias != NULL) {
    memcpy(bias, t->bias, output_channels * sizeof(float));
  } else {
    memset(bias, 0, output_channels * sizeof(float));
  }
  storage->memory = memory;
  storage->weights.input_channels = (uint32_t)input_channels;
  storage->weights.output_channels = (uint32_t)output_channels;
  storage->weights.num_nonzeros = (uint32_t)nonzeros;
  storage->weights.row_start = row_start;
  storage->weights.input_channel = input_channel;
  storage->weights.values = values;
  storage->weights.bias = bias;
  return 0;
}

void clicktrain_free_spconv1x1_weights(
    clicktrain_spconv1x1_weight_storage* storage) {
  free(storage->memory);
  memset(storage, 0, sizeof(*storage));
}
