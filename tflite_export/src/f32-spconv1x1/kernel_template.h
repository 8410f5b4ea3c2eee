/* The sparse 1x1 conv micro-kernels, written once for every ISA.
 *
 * Included by <variant>.c after it defines a small vector vocabulary:
 *   VECTOR, LANES              vector type and its float lanes
 *   VECTORS                    vectors per pixel tile (pixel_tile = LANES * VECTORS)
 *   vector_load(p), vector_store(p, v), vector_broadcast(x),
 *   vector_fma(w, x, acc) = acc + w * x, vector_add(a, b),
 *   vector_max(a, b), vector_min(a, b)   (NaN in b propagates, as TFLite's clamp)
 *   transpose_block(source, source_stride, destination, destination_stride)
 *                              a TRANSPOSE_BLOCK x TRANSPOSE_BLOCK transpose
 *   TRANSPOSE_BLOCK            its side (optional, LANES by default)
 *   transpose_small_block, TRANSPOSE_SMALL_BLOCK
 *                              a smaller square transpose for the edges
 *                              (optional)
 *   BLOCK_PIXELS, PAIR_PIXELS  block mode register tile rows (optional)
 *   FEW_PIXEL_ROWS, FEW_PIXEL_VECTORS
 *                              few-pixel mode register tile: pixels x output
 *                              vectors (optional)
 *   FEW_PIXELS                 most pixels per run the delegate runs in the
 *                              few-pixel mode (measured, per variant)
 *   VARIANT                    the variant's name, a bare token
 * Contract of the functions: include/clicktrain/sparse_conv1x1.h.
 */
#include <stddef.h>
#include <stdint.h>

#include "clicktrain/sparse_conv1x1.h"

#define SPCONV1X1_PASTE(a, b) a##b
#define SPCONV1X1_NAME(prefix, variant) SPCONV1X1_PASTE(prefix, variant)
#define SPCONV1X1_STRING(x) #x
#define SPCONV1X1_QUOTE(x) SPCONV1X1_STRING(x)

enum { kPixelTile = LANES * VECTORS };

#ifndef TRANSPOSE_BLOCK
#define TRANSPOSE_BLOCK LANES
#endif

/* Rows [r0, r1) x columns [c0, c1), element by element. */
static void transpose_elements(size_t r0, size_t r1, size_t c0, size_t c1,
                               const float* source, size_t source_stride,
                               float* destination, size_t destination_stride) {
  for (size_t r = r0; r < r1; ++r) {
    for (size_t c = c0; c < c1; ++c) {
      destination[c * destination_stride + r] = source[r * source_stride + c];
    }
  }
}

/* Rows [r0, r1) x columns [c0, c1): TRANSPOSE_SMALL_BLOCK-square blocks
 * (transpose_small_block) where the variant has them, then element
 * copies. */
static void transpose_edges(size_t r0, size_t r1, size_t c0, size_t c1,
                            const float* source, size_t source_stride,
                            float* destination, size_t destination_stride) {
#ifdef TRANSPOSE_SMALL_BLOCK
  const size_t small = TRANSPOSE_SMALL_BLOCK;
  const size_t r_end = r0 + (r1 - r0) / small * small;
  const size_t c_end = c0 + (c1 - c0) / small * small;
  for (size_t r = r0; r < r_end; r += small) {
    for (size_t c = c0; c < c_end; c += small) {
      transpose_small_block(source + r * source_stride + c, source_stride,
                            destination + c * destination_stride + r,
                            destination_stride);
    }
  }
  transpose_elements(r0, r_end, c_end, c1, source, source_stride, destination,
                     destination_stride);
  r0 = r_end;
#endif
  transpose_elements(r0, r1, c0, c1, source, source_stride, destination,
                     destination_stride);
}

/* Whole TRANSPOSE_BLOCK-square blocks, then the edges. */
static void transpose(size_t rows, size_t columns, const float* source,
                      size_t source_stride, float* destination,
                      size_t destination_stride) {
  const size_t block = TRANSPOSE_BLOCK;
  const size_t full_rows = rows - rows % block;
  const size_t full_columns = columns - columns % block;
  for (size_t r = 0; r < full_rows; r += block) {
    for (size_t c = 0; c < full_columns; c += block) {
      transpose_block(source + r * source_stride + c, source_stride,
                      destination + c * destination_stride + r,
                      destination_stride);
    }
  }
  if (full_columns < columns) {
    transpose_edges(0, full_rows, full_columns, columns, source, source_stride,
                    destination, destination_stride);
  }
  if (full_rows < rows) {
    transpose_edges(full_rows, rows, 0, columns, source, source_stride,
                    destination, destination_stride);
  }
}

/* Two accumulator sets take alternate kept weights, so 2 * vectors FMA
 * chains are in flight: enough to cover FMA latency at 2 FMAs per cycle.
 * `vectors` is a constant in every caller, so each count compiles to its
 * own register-allocated loop. */
static inline __attribute__((always_inline)) const clicktrain_spconv1x1_word*
compute_vectors(size_t filters, const clicktrain_spconv1x1_word* program,
                const float* planar, float* tile, const int vectors,
                int accumulate, VECTOR low, VECTOR high) {
  for (size_t f = 0; f < filters; ++f, tile += kPixelTile) {
    uint32_t remaining = program[0].count;
    VECTOR even[VECTORS], odd[VECTORS];
    const VECTOR bias = vector_broadcast(program[1].weight);
    const VECTOR zero = vector_broadcast(0.0f);
#pragma GCC unroll 16
    for (int v = 0; v < vectors; ++v) {
      even[v] = accumulate ? vector_load(tile + v * LANES) : bias;
      odd[v] = zero;
    }
    program += 2;
    for (; remaining >= 2; remaining -= 2, program += 4) {
      const float* a = planar + program[0].offset;
      const float* b = planar + program[2].offset;
      const VECTOR wa = vector_broadcast(program[1].weight);
      const VECTOR wb = vector_broadcast(program[3].weight);
#pragma GCC unroll 16
      for (int v = 0; v < vectors; ++v) {
        even[v] = vector_fma(wa, vector_load(a + v * LANES), even[v]);
        odd[v] = vector_fma(wb, vector_load(b + v * LANES), odd[v]);
      }
    }
    if (remaining != 0) {
      const float* a = planar + program[0].offset;
      const VECTOR wa = vector_broadcast(program[1].weight);
#pragma GCC unroll 16
      for (int v = 0; v < vectors; ++v) {
        even[v] = vector_fma(wa, vector_load(a + v * LANES), even[v]);
      }
      program += 2;
    }
#pragma GCC unroll 16
    for (int v = 0; v < vectors; ++v) {
      const VECTOR sum = vector_add(even[v], odd[v]);
      vector_store(tile + v * LANES, vector_min(high, vector_max(low, sum)));
    }
  }
  return program;
}

/* A tile's last pixels take only the vectors they need. */
static const clicktrain_spconv1x1_word* compute(
    size_t filters, const clicktrain_spconv1x1_word* program,
    const float* planar, float* tile, size_t pixels, int accumulate,
    float output_min, float output_max) {
  const VECTOR low = vector_broadcast(output_min);
  const VECTOR high = vector_broadcast(output_max);
  const size_t needed = (pixels + LANES - 1) / LANES;
#define SPCONV1X1_VECTORS(count) \
  compute_vectors(filters, program, planar, tile, count, accumulate, low, high)
  switch (needed) {
#if VECTORS > 1
    case 1: return SPCONV1X1_VECTORS(1);
#endif
#if VECTORS > 2
    case 2: return SPCONV1X1_VECTORS(2);
#endif
#if VECTORS > 3
    case 3: return SPCONV1X1_VECTORS(3);
#endif
#if VECTORS > 4
    case 4: return SPCONV1X1_VECTORS(4);
#endif
#if VECTORS > 5
    case 5: return SPCONV1X1_VECTORS(5);
#endif
#if VECTORS > 6
    case 6: return SPCONV1X1_VECTORS(6);
#endif
#if VECTORS > 7
    case 7: return SPCONV1X1_VECTORS(7);
#endif
    default: return SPCONV1X1_VECTORS(VECTORS);
  }
#undef SPCONV1X1_VECTORS
}

/* Block mode: output channels in groups of CLICKTRAIN_SPCONV1X1_BLOCK that
 * keep the same input channels (block-pruned 1x1 convs). A register tile is
 * `rows` pixels x one group (or two groups sharing their channels) of
 * output channels; each kept channel loads its weight vectors once and
 * broadcasts each pixel's input into them, and the tile is stored straight
 * into the NHWC output: no transpose back. */
#ifndef BLOCK_PIXELS
#define BLOCK_PIXELS 1
#endif
#ifndef PAIR_PIXELS
#define PAIR_PIXELS 1
#endif
enum { kBlockVectors = CLICKTRAIN_SPCONV1X1_BLOCK / LANES };
_Static_assert(CLICKTRAIN_SPCONV1X1_BLOCK % LANES == 0,
               "a block is a whole number of vectors");

static inline __attribute__((always_inline)) void block_rows(
    size_t count, const int32_t* offsets, const float* weights,
    const float* bias, const float* planar, float* output,
    size_t output_stride, const int rows, const int rows_stored,
    const int groups, VECTOR low, VECTOR high) {
  enum { kMaxVectors = 2 * kBlockVectors };
  const int vectors = groups * kBlockVectors;
  VECTOR acc[BLOCK_PIXELS > PAIR_PIXELS ? BLOCK_PIXELS : PAIR_PIXELS][kMaxVectors];
#pragma GCC unroll 16
  for (int m = 0; m < rows; ++m) {
#pragma GCC unroll 16
    for (int j = 0; j < vectors; ++j) acc[m][j] = vector_load(bias + j * LANES);
  }
  for (size_t k = 0; k < count; ++k) {
    const float* x = planar + offsets[k];
    const float* w = weights + k * (size_t)vectors * LANES;
    VECTOR wv[kMaxVectors];
#pragma GCC unroll 16
    for (int j = 0; j < vectors; ++j) wv[j] = vector_load(w + j * LANES);
#pragma GCC unroll 16
    for (int m = 0; m < rows; ++m) {
      const VECTOR xb = vector_broadcast(x[m]);
#pragma GCC unroll 16
      for (int j = 0; j < vectors; ++j) acc[m][j] = vector_fma(wv[j], xb, acc[m][j]);
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < rows; ++m) {
    if (m >= rows_stored) break;
#pragma GCC unroll 16
    for (int j = 0; j < vectors; ++j) {
      vector_store(output + (size_t)m * output_stride + j * LANES,
                   vector_min(high, vector_max(low, acc[m][j])));
    }
  }
}

static void block_compute(size_t pixels, size_t count, size_t groups,
                          const int32_t* offsets, const float* weights,
                          const float* bias, const float* planar,
                          float* output, size_t output_stride,
                          float output_min, float output_max) {
  const VECTOR low = vector_broadcast(output_min);
  const VECTOR high = vector_broadcast(output_max);
  const int rows = groups == 2 ? PAIR_PIXELS : BLOCK_PIXELS;
  /* The last register tile may read planar columns past `pixels` (finite
   * scratch within the tile row or the next); only its valid rows are
   * stored. */
  for (size_t p = 0; p < pixels; p += (size_t)rows) {
    const size_t left = pixels - p;
    const int stored = left < (size_t)rows ? (int)left : rows;
    if (groups == 2) {
      block_rows(count, offsets, weights, bias, planar + p,
                 output + p * output_stride, output_stride, PAIR_PIXELS, stored,
                 2, low, high);
    } else {
      block_rows(count, offsets, weights, bias, planar + p,
                 output + p * output_stride, output_stride, BLOCK_PIXELS,
                 stored, 1, low, high);
    }
  }
}

/* Few-pixel mode: a GEMV per pixel over the dense, zero-padded weights
 * (panels of [input_channels][CLICKTRAIN_SPCONV1X1_PANEL]), no transposes.
 * A register tile is
 * `rows` pixels x `vectors` output vectors: each input channel loads its
 * weight vectors once for every row's broadcast input. When a tile has few
 * accumulators (one pixel, a narrow layer), input channels are dealt
 * round-robin to `splits` sets of them so that about kFewPixelChains FMA
 * chains are in flight, enough to hide the FMA latency. */
#ifndef FEW_PIXEL_ROWS
#define FEW_PIXEL_ROWS 1
#endif
#ifndef FEW_PIXEL_VECTORS
#define FEW_PIXEL_VECTORS 4
#endif
enum {
  kFewPixelChains = 8,
  kFewPixelMaxSplits = kFewPixelChains,
  kFewPixelTileChannels = FEW_PIXEL_VECTORS * LANES,
};
_Static_assert(CLICKTRAIN_SPCONV1X1_PANEL % kFewPixelTileChannels == 0 &&
                   CLICKTRAIN_SPCONV1X1_VECTOR_FLOATS % LANES == 0,
               "a panel holds whole register tiles, the last whole vectors");

static inline __attribute__((always_inline)) void few_pixel_tile(
    size_t input_channels, const float* input, size_t input_stride,
    const float* weights, size_t weight_stride, const float* bias,
    float* output, size_t output_stride, size_t last_lanes, const int rows,
    const int vectors, VECTOR low, VECTOR high) {
  const int per_split = rows * vectors;
  const int splits = per_split >= kFewPixelChains
                         ? 1
                         : (kFewPixelChains + per_split - 1) / per_split;
  VECTOR acc[kFewPixelMaxSplits][FEW_PIXEL_ROWS][FEW_PIXEL_VECTORS];
  const VECTOR zero = vector_broadcast(0.0f);
#pragma GCC unroll 16
  for (int s = 0; s < splits; ++s) {
#pragma GCC unroll 16
    for (int m = 0; m < rows; ++m) {
#pragma GCC unroll 16
      for (int v = 0; v < vectors; ++v) {
        acc[s][m][v] = s == 0 ? vector_load(bias + v * LANES) : zero;
      }
    }
  }
  size_t i = 0;
  for (; i + (size_t)splits <= input_channels; i += (size_t)splits) {
#pragma GCC unroll 16
    for (int s = 0; s < splits; ++s) {
      const float* w = weights + (i + (size_t)s) * weight_stride;
      VECTOR wv[FEW_PIXEL_VECTORS];
#pragma GCC unroll 16
      for (int v = 0; v < vectors; ++v) wv[v] = vector_load(w + v * LANES);
#pragma GCC unroll 16
      for (int m = 0; m < rows; ++m) {
        const VECTOR x = vector_broadcast(input[(size_t)m * input_stride + i + (size_t)s]);
#pragma GCC unroll 16
        for (int v = 0; v < vectors; ++v) acc[s][m][v] = vector_fma(wv[v], x, acc[s][m][v]);
      }
    }
  }
  for (; i < input_channels; ++i) {
    const float* w = weights + i * weight_stride;
#pragma GCC unroll 16
    for (int m = 0; m < rows; ++m) {
      const VECTOR x = vector_broadcast(input[(size_t)m * input_stride + i]);
#pragma GCC unroll 16
      for (int v = 0; v < vectors; ++v) {
        acc[0][m][v] = vector_fma(vector_load(w + v * LANES), x, acc[0][m][v]);
      }
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < rows; ++m) {
    float* out = output + (size_t)m * output_stride;
#pragma GCC unroll 16
    for (int v = 0; v < vectors; ++v) {
      VECTOR sum = acc[0][m][v];
#pragma GCC unroll 16
      for (int s = 1; s < splits; ++s) sum = vector_add(sum, acc[s][m][v]);
      const VECTOR result = vector_min(high, vector_max(low, sum));
      if (v + 1 < vectors || last_lanes == LANES) {
        vector_store(out + v * LANES, result);
      } else {
        /* The row's last vector: its padding lanes stay unwritten. */
        float lanes[LANES];
        vector_store(lanes, result);
        for (size_t l = 0; l < last_lanes; ++l) out[v * LANES + l] = lanes[l];
      }
    }
  }
}

/* Every tile of output channels for `rows` pixels; the last tile takes only
 * the vectors it needs. */
static inline __attribute__((always_inline)) void few_pixel_rows(
    size_t input_channels, size_t output_channels, const float* input,
    size_t input_stride, const float* weights, const float* bias,
    float* output, size_t output_stride, const int rows, VECTOR low,
    VECTOR high) {
  const size_t vector = CLICKTRAIN_SPCONV1X1_VECTOR_FLOATS;
  const size_t padded = (output_channels + vector - 1) / vector * vector;
  for (size_t o = 0; o < output_channels; o += kFewPixelTileChannels) {
    const size_t panel_start = o / CLICKTRAIN_SPCONV1X1_PANEL * CLICKTRAIN_SPCONV1X1_PANEL;
    const size_t panel = padded - panel_start < CLICKTRAIN_SPCONV1X1_PANEL
                             ? padded - panel_start
                             : CLICKTRAIN_SPCONV1X1_PANEL;
    const float* tile_weights =
        weights + panel_start * input_channels + (o - panel_start);
    const size_t left = output_channels - o;
    const size_t vectors =
        left >= kFewPixelTileChannels ? FEW_PIXEL_VECTORS : (left + LANES - 1) / LANES;
    const size_t last_lanes = left >= kFewPixelTileChannels ? LANES : left - (vectors - 1) * LANES;
#define SPCONV1X1_FEW_PIXEL_TILE(count)                                        \
  few_pixel_tile(input_channels, input, input_stride, tile_weights, panel,    \
                 bias + o, output + o, output_stride, last_lanes, rows, count, \
                 low, high)
    switch (vectors) {
#if FEW_PIXEL_VECTORS > 1
      case 1: SPCONV1X1_FEW_PIXEL_TILE(1); break;
#endif
#if FEW_PIXEL_VECTORS > 2
      case 2: SPCONV1X1_FEW_PIXEL_TILE(2); break;
#endif
#if FEW_PIXEL_VECTORS > 3
      case 3: SPCONV1X1_FEW_PIXEL_TILE(3); break;
#endif
#if FEW_PIXEL_VECTORS > 4
      case 4: SPCONV1X1_FEW_PIXEL_TILE(4); break;
#endif
#if FEW_PIXEL_VECTORS > 5
      case 5: SPCONV1X1_FEW_PIXEL_TILE(5); break;
#endif
#if FEW_PIXEL_VECTORS > 6
      case 6: SPCONV1X1_FEW_PIXEL_TILE(6); break;
#endif
#if FEW_PIXEL_VECTORS > 7
      case 7: SPCONV1X1_FEW_PIXEL_TILE(7); break;
#endif
      default: SPCONV1X1_FEW_PIXEL_TILE(FEW_PIXEL_VECTORS); break;
    }
#undef SPCONV1X1_FEW_PIXEL_TILE
  }
}

static void few_pixel_compute(size_t pixels, size_t input_channels,
                              size_t output_channels, const float* input,
                              size_t input_stride, const float* weights,
                              const float* bias, float* output,
                              size_t output_stride, float output_min,
                              float output_max) {
  const VECTOR low = vector_broadcast(output_min);
  const VECTOR high = vector_broadcast(output_max);
  for (size_t p = 0; p < pixels; p += FEW_PIXEL_ROWS) {
    const size_t left = pixels - p;
    const size_t rows = left < FEW_PIXEL_ROWS ? left : FEW_PIXEL_ROWS;
#define SPCONV1X1_FEW_PIXEL_ROWS(count)                                        \
  few_pixel_rows(input_channels, output_channels, input + p * input_stride,    \
                 input_stride, weights, bias, output + p * output_stride,      \
                 output_stride, count, low, high)
    switch (rows) {
#if FEW_PIXEL_ROWS > 1
      case 1: SPCONV1X1_FEW_PIXEL_ROWS(1); break;
#endif
#if FEW_PIXEL_ROWS > 2
      case 2: SPCONV1X1_FEW_PIXEL_ROWS(2); break;
#endif
#if FEW_PIXEL_ROWS > 3
      case 3: SPCONV1X1_FEW_PIXEL_ROWS(3); break;
#endif
      default: SPCONV1X1_FEW_PIXEL_ROWS(FEW_PIXEL_ROWS); break;
    }
#undef SPCONV1X1_FEW_PIXEL_ROWS
  }
}
_Static_assert(FEW_PIXEL_ROWS <= 4, "few_pixel_compute dispatches up to 4 rows");
_Static_assert(FEW_PIXEL_VECTORS <= 8, "few_pixel_rows dispatches up to 8 vectors");

const clicktrain_spconv1x1_ukernels SPCONV1X1_NAME(
    clicktrain_spconv1x1_ukernels__, VARIANT) = {
    SPCONV1X1_QUOTE(VARIANT),
    kPixelTile,
    transpose,
    compute,
    block_compute,
    FEW_PIXELS,
    few_pixel_compute,
};
