/* Portable tiled micro-kernels of the int8 pattern conv (interface in
 * include/clicktrain/pattern_conv_s8.h): plain C, on every CPU, and the
 * ground truth the SIMD variants are tested against. Requantization calls
 * TFLite's MultiplyByQuantizedMultiplier as the reference kernel does. */
#include <string.h>

#include "clicktrain/pattern_conv_s8.h"

enum { kTile = CLICKTRAIN_S8_PATCONV_TILE };

static void pack(size_t slots, const uint32_t* tap_offsets,
                 const uint8_t* planes, uint8_t* packed) {
  for (size_t s = 0; s < slots; ++s, tap_offsets += 4, packed += 4 * kTile) {
    for (size_t j = 0; j < 4; ++j) {
      const uint8_t* stream = planes + tap_offsets[j];
      for (size_t pixel = 0; pixel < kTile; ++pixel) {
        packed[4 * pixel + j] = stream[pixel];
      }
    }
  }
}

static void compute(size_t filters, const uint32_t* program,
                    const uint8_t* packed, int32_t* accumulators, int first,
                    int last,
                    const clicktrain_s8_filter_requantization* requantization,
                    const clicktrain_s8_output_params* params,
                    int8_t* output) {
  for (size_t f = 0; f < filters; ++f, output += kTile) {
    uint32_t acc[kTile];
    if (first) {
      memset(acc, 0, sizeof(acc));
    } else {
      memcpy(acc, accumulators + f * kTile, sizeof(acc));
    }
    const uint32_t count = *program++;
    for (uint32_t k = 0; k < count; ++k, program += 2) {
      const uint8_t* slot = packed + program[0];
      const uint32_t word = program[1];
      const int32_t w0 = (int8_t)(word & 0xFF);
      const int32_t w1 = (int8_t)((word >> 8) & 0xFF);
      const int32_t w2 = (int8_t)((word >> 16) & 0xFF);
      const int32_t w3 = (int8_t)(word >> 24);
      for (size_t pixel = 0; pixel < kTile; ++pixel) {
        const uint8_t* taps = slot + 4 * pixel;
        acc[pixel] += (uint32_t)(w0 * taps[0] + w1 * taps[1] + w2 * taps[2] +
                                 w3 * taps[3]);
      }
    }
    if (!last) {
      memcpy(accumulators + f * kTile, acc, sizeof(acc));
      continue;
    }
    const clicktrain_s8_filter_requantization* q = &requantization[f];
    for (size_t pixel = 0; pixel < kTile; ++pixel) {
      int32_t out = clicktrain_multiply_by_quantized_multiplier(
          (int32_t)(acc[pixel] + (uint32_t)q->bias), q->multiplier, q->shift);
      out = (int32_t)((uint32_t)out + (uint32_t)params->zero_point);
      if (out < params->min) out = params->min;
      if (out > params->max) out = params->max;
      output[pixel] = (int8_t)out;
    }
  }
}

/* 8x8 blocks in eight 64-bit words (little-endian byte order), then the
 * edges byte by byte. */
static uint64_t load64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, sizeof(v));
  return v;
}

static void swap_bits(uint64_t* a, uint64_t* b, int width, uint64_t low_mask) {
  const uint64_t x = *a, y = *b;
  *a = (x & low_mask) | ((y << width) & ~low_mask);
  *b = ((x >> width) & low_mask) | (y & ~low_mask);
}

/* Up to 8 rows (rows[i] for i < row_count) x `columns`: 8 x 8 byte blocks
 * transposed in 64-bit words when all 8 rows are there, else byte by byte. */
static void transpose_rows(const uint8_t* const* rows, size_t row_count,
                           size_t columns, uint8_t* destination,
                           size_t destination_stride, uint8_t flip) {
  if (row_count < 8) {
    for (size_t i = 0; i < row_count; ++i) {
      for (size_t c = 0; c < columns; ++c) {
        destination[c * destination_stride + i] = rows[i][c] ^ flip;
      }
    }
    return;
  }
  const uint64_t flip8 = 0x0101010101010101ull * flip;
  size_t c = 0;
  for (; c + 8 <= columns; c += 8) {
    uint64_t v[8];
    for (int i = 0; i < 8; ++i) v[i] = load64(rows[i] + c) ^ flip8;
    for (int i = 0; i < 8; i += 2) {
      swap_bits(&v[i], &v[i + 1], 8, 0x00FF00FF00FF00FFull);
    }
    for (int i = 0; i < 8; i += 4) {
      swap_bits(&v[i], &v[i + 2], 16, 0x0000FFFF0000FFFFull);
      swap_bits(&v[i + 1], &v[i + 3], 16, 0x0000FFFF0000FFFFull);
    }
    for (int i = 0; i < 4; ++i) {
      swap_bits(&v[i], &v[i + 4], 32, 0x00000000FFFFFFFFull);
    }
    for (int i = 0; i < 8; ++i) {
      memcpy(destination + (c + i) * destination_stride, &v[i], 8);
    }
  }
  for (; c < columns; ++c) {
    for (size_t i = 0; i < 8; ++i) {
      destination[c * destination_stride + i] = rows[i][c] ^ flip;
    }
  }
}

void clicktrain_x8_transpose_ukernel__scalar(size_t rows, size_t columns,
                                             const uint8_t* source,
                                             size_t source_stride,
                                             uint8_t* destination,
                                             size_t destination_stride,
                                             uint8_t flip) {
  for (size_t r = 0; r < rows; r += 8) {
    const size_t row_count = rows - r < 8 ? rows - r : 8;
    const uint8_t* block_rows[8];
    for (size_t i = 0; i < row_count; ++i) {
      block_rows[i] = source + (r + i) * source_stride;
    }
    transpose_rows(block_rows, row_count, columns, destination + r,
                   destination_stride, flip);
  }
}

void clicktrain_x8_gather_transpose_ukernel__scalar(
    size_t rows, size_t columns, const uint8_t* const* sources,
    uint8_t* destination, size_t destination_stride, uint8_t flip) {
  for (size_t r = 0; r < rows; r += 8) {
    const size_t row_count = rows - r < 8 ? rows - r : 8;
    transpose_rows(sources + r, row_count, columns, destination + r,
                   destination_stride, flip);
  }
}

const clicktrain_s8_patconv_ukernels clicktrain_s8_patconv_ukernels__scalar = {
    .name = "scalar",
    .slot_bytes = 4 * kTile,
    .accumulator_bytes = 4 * kTile,
    .pack = pack,
    .compute = compute,
    .transpose = clicktrain_x8_transpose_ukernel__scalar,
    .gather_transpose = clicktrain_x8_gather_transpose_ukernel__scalar,
};
