/* AVX2 + FMA sparse 1x1 conv micro-kernels (template: kernel_template.h).
 * Compiled with -mavx2 -mfma only; called only when the CPU has both. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <stddef.h>

typedef __m256 VECTOR;
#define LANES 8
#define VECTORS 4
#define VARIANT avx2
/* Block mode register tile, pixels (16 ymm: 6 x 2 accumulators + 2 weight vectors; a pair: 3 x 4 + 4). */
#define BLOCK_PIXELS 6
#define PAIR_PIXELS 3
/* Few-pixel mode register tile (16 ymm: up to 2 x 4 accumulators, 4 weight vectors and a broadcast). */
#define FEW_PIXEL_ROWS 2
#define FEW_PIXEL_VECTORS 4
/* Measured (tests/sparse_conv1x1_bench.c, Zen 5): 1.5-2x faster than the SpMM at
 * 1 and 2 pixels, slower from 3 on wide layers (320 -> 1280). */
#define FEW_PIXELS 2

static inline VECTOR vector_load(const float* p) { return _mm256_loadu_ps(p); }
static inline void vector_store(float* p, VECTOR v) { _mm256_storeu_ps(p, v); }
static inline VECTOR vector_broadcast(float x) { return _mm256_set1_ps(x); }
static inline VECTOR vector_fma(VECTOR w, VECTOR x, VECTOR acc) {
  return _mm256_fmadd_ps(w, x, acc);
}
static inline VECTOR vector_add(VECTOR a, VECTOR b) { return _mm256_add_ps(a, b); }
static inline VECTOR vector_max(VECTOR a, VECTOR b) { return _mm256_max_ps(a, b); }
static inline VECTOR vector_min(VECTOR a, VECTOR b) { return _mm256_min_ps(a, b); }

static inline __attribute__((always_inline)) void transpose_block(const float* source, size_t source_stride,
                                   float* destination,
                                   size_t destination_stride) {
  __m256 r[8], t[8], u[8];
#pragma GCC unroll 16
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(source + i * source_stride);
#pragma GCC unroll 16
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  /* u[m] (rows 0-3) and u[4 + m] (rows 4-7) hold columns m and 4 + m. */
#pragma GCC unroll 16
  for (int m = 0; m < 4; ++m) {
    _mm256_storeu_ps(destination + m * destination_stride,
                     _mm256_permute2f128_ps(u[m], u[4 + m], 0x20));
    _mm256_storeu_ps(destination + (4 + m) * destination_stride,
                     _mm256_permute2f128_ps(u[m], u[4 + m], 0x31));
  }
}

#include "f32-spconv1x1/kernel_template.h"
#endif
