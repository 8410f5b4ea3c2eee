/* AVX-512 sparse 1x1 conv micro-kernels (template: kernel_template.h).
 * Compiled with -mavx512f only; called only when the CPU has AVX-512F. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <stddef.h>

typedef __m512 VECTOR;
#define LANES 16
#define VECTORS 4
#define VARIANT avx512
#define TRANSPOSE_BLOCK 16
#define TRANSPOSE_SMALL_BLOCK 8
/* Block mode register tile, pixels (32 zmm: 14 accumulators + the weight vector; a pair: 7 x 2). */
#define BLOCK_PIXELS 14
#define PAIR_PIXELS 7
/* Few-pixel mode register tile (32 zmm: up to 4 x 4 accumulators, 4 weight vectors and a broadcast). */
#define FEW_PIXEL_ROWS 4
#define FEW_PIXEL_VECTORS 4
/* Measured (tests/sparse_conv1x1_bench.c, Zen 5): 1.1-4x faster than the SpMM up
 * to 8 pixels, slower from 12 on wide layers (320 -> 1280). */
#define FEW_PIXELS 8

static inline VECTOR vector_load(const float* p) { return _mm512_loadu_ps(p); }
static inline void vector_store(float* p, VECTOR v) { _mm512_storeu_ps(p, v); }
static inline VECTOR vector_broadcast(float x) { return _mm512_set1_ps(x); }
static inline VECTOR vector_fma(VECTOR w, VECTOR x, VECTOR acc) {
  return _mm512_fmadd_ps(w, x, acc);
}
static inline VECTOR vector_add(VECTOR a, VECTOR b) { return _mm512_add_ps(a, b); }
static inline VECTOR vector_max(VECTOR a, VECTOR b) { return _mm512_max_ps(a, b); }
static inline VECTOR vector_min(VECTOR a, VECTOR b) { return _mm512_min_ps(a, b); }

/* 8 x 8 transpose for the edges of a 16 x 16 tiling (24- and 40-channel
 * layers would otherwise copy a third of their floats one by one): each
 * register is loaded as two 128-bit halves from rows r and r + 4, so only
 * the two in-lane steps shuffle. */
static inline __attribute__((always_inline)) void transpose_small_block(
    const float* source, size_t source_stride, float* destination,
    size_t destination_stride) {
  __m256 r[8], t[8];
#pragma GCC unroll 8
  for (int i = 0; i < 4; ++i) {
    /* r[i]: columns 0-3, r[4 + i]: columns 4-7, of rows i (low half) and
     * 4 + i (high half). */
    r[i] = _mm256_insertf128_ps(
        _mm256_castps128_ps256(_mm_loadu_ps(source + i * source_stride)),
        _mm_loadu_ps(source + (4 + i) * source_stride), 1);
    r[4 + i] = _mm256_insertf128_ps(
        _mm256_castps128_ps256(_mm_loadu_ps(source + i * source_stride + 4)),
        _mm_loadu_ps(source + (4 + i) * source_stride + 4), 1);
  }
#pragma GCC unroll 8
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  /* The 64-bit unpacks finish the 4 x 4 transposes of both halves: output
   * row 4h + m holds column 4h + m of rows 0-3 (low half) and 4-7. */
#pragma GCC unroll 8
  for (int h = 0; h < 2; ++h) {
    const __m256d a = _mm256_castps_pd(t[4 * h]), b = _mm256_castps_pd(t[4 * h + 1]);
    const __m256d c = _mm256_castps_pd(t[4 * h + 2]), d = _mm256_castps_pd(t[4 * h + 3]);
    float* out = destination + (size_t)(4 * h) * destination_stride;
    _mm256_storeu_ps(out, _mm256_castpd_ps(_mm256_unpacklo_pd(a, c)));
    _mm256_storeu_ps(out + destination_stride, _mm256_castpd_ps(_mm256_unpackhi_pd(a, c)));
    _mm256_storeu_ps(out + 2 * destination_stride, _mm256_castpd_ps(_mm256_unpacklo_pd(b, d)));
    _mm256_storeu_ps(out + 3 * destination_stride, _mm256_castpd_ps(_mm256_unpackhi_pd(b, d)));
  }
}

/* 16 x 16 transpose: register y[k] of column group g (columns 4g..4g+3)
 * is loaded as four 128-bit pieces, rows k, 4 + k, 8 + k and 12 + k, so
 * the cross-lane steps are done by the loads and only the two in-lane
 * steps shuffle (32 shuffles instead of 64: 1.45x faster than the
 * all-shuffle transpose in L1 on Zen 5); every output row is one whole
 * 64-byte store (8 x 8 blocks' half-line stores ran ResNet-50's 512- to
 * 2048-channel outputs up to 1.3x slower). */
static inline __attribute__((always_inline)) void transpose_block(
    const float* source, size_t source_stride, float* destination,
    size_t destination_stride) {
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    __m512 y[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const float* column = source + 4 * g + (size_t)k * source_stride;
      __m512 v = _mm512_castps128_ps512(_mm_loadu_ps(column));
      v = _mm512_insertf32x4(v, _mm_loadu_ps(column + 4 * source_stride), 1);
      v = _mm512_insertf32x4(v, _mm_loadu_ps(column + 8 * source_stride), 2);
      y[k] = _mm512_insertf32x4(v, _mm_loadu_ps(column + 12 * source_stride), 3);
    }
    const __m512d t0 = _mm512_castps_pd(_mm512_unpacklo_ps(y[0], y[1]));
    const __m512d t1 = _mm512_castps_pd(_mm512_unpackhi_ps(y[0], y[1]));
    const __m512d t2 = _mm512_castps_pd(_mm512_unpacklo_ps(y[2], y[3]));
    const __m512d t3 = _mm512_castps_pd(_mm512_unpackhi_ps(y[2], y[3]));
    float* out = destination + (size_t)(4 * g) * destination_stride;
    _mm512_storeu_ps(out, _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2)));
    _mm512_storeu_ps(out + destination_stride, _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2)));
    _mm512_storeu_ps(out + 2 * destination_stride, _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3)));
    _mm512_storeu_ps(out + 3 * destination_stride, _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3)));
  }
}

#include "f32-spconv1x1/kernel_template.h"
#endif
