/* The planar pattern-conv micro-kernel and the NHWC <-> planar transpose,
 * written once for every ISA (contract and program format in
 * include/clicktrain/pattern_conv.h).
 *
 * Included by <variant>.c after it defines a small vector vocabulary:
 *   VECTOR, LANES              vector type and its float lanes
 *   VECTORS                    most vectors in a register tile; the pixel
 *                              tile is LANES * VECTORS output pixels
 *   vector_load(p), vector_store(p, v), vector_broadcast(x),
 *   vector_fma(w, x, acc) = acc + w * x,
 *   vector_max(a, b), vector_min(a, b)   (NaN in b propagates, as TFLite's
 *                                         clamp with infinite bounds)
 *   TRANSPOSE_TILE, transpose_block(source, source_stride, destination,
 *                                   destination_stride)
 *                              a TRANSPOSE_TILE x TRANSPOSE_TILE transpose
 *   VARIANT                    the variant's name, a bare token
 *
 * Register tile: up to VECTORS vectors of LANES output pixels of one filter.
 * Each tap's weight is broadcast once and reused across the whole tile; the
 * input vectors are FMA memory operands. The filter's taps are one flat
 * list, two per loop step.
 */
#include <stddef.h>
#include <stdint.h>

#include "clicktrain/pattern_conv.h"

#define PATCONV_PASTE(a, b) a##b
#define PATCONV_NAME(prefix, variant) PATCONV_PASTE(prefix, variant)

#define PATCONV_INLINE static inline __attribute__((always_inline))
#define PATCONV_OPAQUE(pointer) __asm__("" : "+r"(pointer))

/* One register tile of `vectors` vectors for one filter; returns the start
 * of the next filter's program. */
PATCONV_INLINE const clicktrain_patconv_word* filter_tile(
    const clicktrain_patconv_word* program, const float* planes,
    float* output, const int vectors, VECTOR low, VECTOR high) {
  VECTOR acc[VECTORS];
  const uint32_t header = program[0].count;
  const uint32_t taps = header & CLICKTRAIN_PATCONV_TAPS_MASK;
  if (header & CLICKTRAIN_PATCONV_ACCUMULATE) {
    /* A middle chunk without taps leaves the partial sums as they are. */
    if (taps == 0 && !(header & CLICKTRAIN_PATCONV_FINAL)) return program + 2;
#pragma GCC unroll 8
    for (int v = 0; v < vectors; ++v) acc[v] = vector_load(output + v * LANES);
  } else {
    const VECTOR bias = vector_broadcast(program[1].weight);
#pragma GCC unroll 8
    for (int v = 0; v < vectors; ++v) acc[v] = bias;
  }
  const clicktrain_patconv_word* tap = program + 2;
  const clicktrain_patconv_word* const end = tap + 2 * (size_t)taps;
  /* Two taps per step; an odd list ends with one. */
  for (; tap + 4 <= end; tap += 4) {
    const VECTOR w0 = vector_broadcast(tap[1].weight);
    const VECTOR w1 = vector_broadcast(tap[3].weight);
    const float* p0 = planes + tap[0].offset;
    const float* p1 = planes + tap[2].offset;
    /* Opaque to the optimiser: loads address p + constant. */
    PATCONV_OPAQUE(p0);
    PATCONV_OPAQUE(p1);
#pragma GCC unroll 8
    for (int v = 0; v < vectors; ++v) {
      acc[v] = vector_fma(w0, vector_load(p0 + v * LANES), acc[v]);
      acc[v] = vector_fma(w1, vector_load(p1 + v * LANES), acc[v]);
    }
  }
  if (tap < end) {
    const VECTOR w0 = vector_broadcast(tap[1].weight);
    const float* p0 = planes + tap[0].offset;
    PATCONV_OPAQUE(p0);
#pragma GCC unroll 8
    for (int v = 0; v < vectors; ++v) {
      acc[v] = vector_fma(w0, vector_load(p0 + v * LANES), acc[v]);
    }
  }
  if (header & CLICKTRAIN_PATCONV_FINAL) {
#pragma GCC unroll 8
    for (int v = 0; v < vectors; ++v) {
      VECTOR value = vector_max(low, acc[v]);
      value = vector_min(high, value);
      vector_store(output + v * LANES, value);
    }
  } else {
#pragma GCC unroll 8
    for (int v = 0; v < vectors; ++v) vector_store(output + v * LANES, acc[v]);
  }
  return end;
}

#define GROUP CLICKTRAIN_PATCONV_GROUP_FILTERS

/* One register tile of `vectors` (at most GROUP_VECTORS) vectors for each
 * of the GROUP filters of a group entry: each input vector loaded feeds
 * GROUP FMAs. Returns the start of the next entry. */
PATCONV_INLINE const clicktrain_patconv_word* group_tile(
    const clicktrain_patconv_word* program, const float* planes,
    float* output, size_t output_stride, const int vectors, VECTOR low,
    VECTOR high) {
  VECTOR acc[GROUP][GROUP_VECTORS];
  const uint32_t header = program[0].count;
  const uint32_t taps = header & CLICKTRAIN_PATCONV_TAPS_MASK;
  const clicktrain_patconv_word* tap = program + 1 + GROUP;
  const clicktrain_patconv_word* const end = tap + (1 + GROUP) * (size_t)taps;
  if (header & CLICKTRAIN_PATCONV_ACCUMULATE) {
    if (taps == 0 && !(header & CLICKTRAIN_PATCONV_FINAL)) return end;
#pragma GCC unroll 4
    for (int g = 0; g < GROUP; ++g) {
#pragma GCC unroll 8
      for (int v = 0; v < vectors; ++v) {
        acc[g][v] = vector_load(output + g * output_stride + v * LANES);
      }
    }
  } else {
#pragma GCC unroll 4
    for (int g = 0; g < GROUP; ++g) {
      const VECTOR bias = vector_broadcast(program[1 + g].weight);
#pragma GCC unroll 8
      for (int v = 0; v < vectors; ++v) acc[g][v] = bias;
    }
  }
  for (; tap < end; tap += 1 + GROUP) {
    const float* p = planes + tap[0].offset;
    PATCONV_OPAQUE(p);
    VECTOR w[GROUP];
#pragma GCC unroll 4
    for (int g = 0; g < GROUP; ++g) w[g] = vector_broadcast(tap[1 + g].weight);
#pragma GCC unroll 8
    for (int v = 0; v < vectors; ++v) {
      const VECTOR x = vector_load(p + v * LANES);
#pragma GCC unroll 4
      for (int g = 0; g < GROUP; ++g) acc[g][v] = vector_fma(w[g], x, acc[g][v]);
    }
  }
#pragma GCC unroll 4
  for (int g = 0; g < GROUP; ++g) {
#pragma GCC unroll 8
    for (int v = 0; v < vectors; ++v) {
      VECTOR value = acc[g][v];
      if (header & CLICKTRAIN_PATCONV_FINAL) {
        value = vector_min(high, vector_max(low, value));
      }
      vector_store(output + g * output_stride + v * LANES, value);
    }
  }
  return end;
}

_Static_assert(VECTORS == 8, "the tail below covers 1 to 7 vectors");
_Static_assert(GROUP_VECTORS == 2 || GROUP_VECTORS == 4,
               "the group tail below covers 1 to 3 vectors");

/* A group entry over the whole pixel range: register tiles of
 * GROUP_VECTORS vectors, each one pass over the entry. */
PATCONV_INLINE const clicktrain_patconv_word* group_entry(
    size_t pixels, const clicktrain_patconv_word* program,
    const float* planes, float* output, size_t output_stride, VECTOR low,
    VECTOR high) {
  const clicktrain_patconv_word* next = program;
  size_t i = 0;
  size_t remaining = (pixels + LANES - 1) / LANES;
  for (; remaining >= GROUP_VECTORS;
       remaining -= GROUP_VECTORS, i += GROUP_VECTORS * LANES) {
    next = group_tile(program, planes + i, output + i, output_stride,
                      GROUP_VECTORS, low, high);
  }
  const float* p = planes + i;
  float* o = output + i;
  switch (remaining) {
    case 1: next = group_tile(program, p, o, output_stride, 1, low, high); break;
#if GROUP_VECTORS > 2
    case 2: next = group_tile(program, p, o, output_stride, 2, low, high); break;
    case 3: next = group_tile(program, p, o, output_stride, 3, low, high); break;
#endif
    default: break;
  }
  return next;
}

void PATCONV_NAME(clicktrain_f32_patconv_planar_ukernel__, VARIANT)(
    size_t pixels, size_t filters, const clicktrain_patconv_word* program,
    const float* planes, float* output, size_t output_stride,
    float output_min, float output_max) {
  const VECTOR low = vector_broadcast(output_min);
  const VECTOR high = vector_broadcast(output_max);
  if (pixels == 0) return;
  for (size_t f = 0; f < filters; ++f, output += output_stride) {
    if (program[0].count & CLICKTRAIN_PATCONV_GROUP) {
      program = group_entry(pixels, program, planes, output, output_stride,
                            low, high);
      f += GROUP - 1;
      output += (GROUP - 1) * output_stride;
      continue;
    }
    const clicktrain_patconv_word* next = program;
    size_t i = 0;
    /* Whole vectors, the last one partly past `pixels` (within the slack). */
    size_t remaining = (pixels + LANES - 1) / LANES;
    for (; remaining >= VECTORS; remaining -= VECTORS, i += VECTORS * LANES) {
      next = filter_tile(program, planes + i, output + i, VECTORS, low, high);
    }
    /* Each tail size has its own unrolled copy: one pass over the program. */
    const float* p = planes + i;
    float* o = output + i;
    switch (remaining) {
      case 1: next = filter_tile(program, p, o, 1, low, high); break;
      case 2: next = filter_tile(program, p, o, 2, low, high); break;
      case 3: next = filter_tile(program, p, o, 3, low, high); break;
      case 4: next = filter_tile(program, p, o, 4, low, high); break;
      case 5: next = filter_tile(program, p, o, 5, low, high); break;
      case 6: next = filter_tile(program, p, o, 6, low, high); break;
      case 7: next = filter_tile(program, p, o, 7, low, high); break;
      default: break;
    }
    program = next;
  }
}

void PATCONV_NAME(clicktrain_x32_transpose_ukernel__, VARIANT)(
    size_t rows, size_t columns, const float* source, size_t source_stride,
    float* destination, size_t destination_stride) {
  const size_t full_rows = rows - rows % TRANSPOSE_TILE;
  const size_t full_columns = columns - columns % TRANSPOSE_TILE;
#ifdef TRANSPOSE_HAS_PARTIAL_BLOCK
  for (size_t r = 0; r < rows; r += TRANSPOSE_TILE) {
    const size_t block_rows = rows - r < TRANSPOSE_TILE ? rows - r : TRANSPOSE_TILE;
    for (size_t c = 0; c < columns; c += TRANSPOSE_TILE) {
      const float* block_source = source + r * source_stride + c;
      float* block_destination = destination + c * destination_stride + r;
      if (block_rows == TRANSPOSE_TILE && c < full_columns) {
        transpose_block(block_source, source_stride, block_destination,
                        destination_stride);
      } else {
        transpose_partial_block(block_source, source_stride,
                                block_destination, destination_stride,
                                block_rows, columns - c < TRANSPOSE_TILE
                                                ? columns - c
                                                : TRANSPOSE_TILE);
      }
    }
  }
  return;
#endif
  for (size_t r = 0; r < full_rows; r += TRANSPOSE_TILE) {
    for (size_t c = 0; c < full_columns; c += TRANSPOSE_TILE) {
      transpose_block(source + r * source_stride + c, source_stride,
                      destination + c * destination_stride + r,
                      destination_stride);
    }
    for (size_t c = full_columns; c < columns; ++c) {
      for (size_t i = r; i < r + TRANSPOSE_TILE; ++i) {
        destination[c * destination_stride + i] = source[i * source_stride + c];
      }
    }
  }
  for (size_t r = full_rows; r < rows; ++r) {
    for (size_t c = 0; c < columns; ++c) {
      destination[c * destination_stride + r] = source[r * source_stride + c];
    }
  }
}
