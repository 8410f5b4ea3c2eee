/* AVX-512 sparse 1x1 conv micro-kernels (template: kernel_template.h).
 * Compiled with -mavx512f only; called only when the CPU has AVX-512F. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <stddef.h>

typedef __m512 VECTOR;
#define LANES 16
#define VECTORS 4
#define VARIANT avx512
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

static inline __attribute__((always_inline)) void transpose_block(const float* source, size_t source_stride,
                                   float* destination,
                                   size_t destination_stride) {
  __m512 r[16], t[16], u[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(source + i * source_stride);
#pragma GCC unroll 16
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  /* Per 128-bit lane k, u[4g + m] holds column 4k + m of rows 4g..4g+3. */
#pragma GCC unroll 16
  for (int i = 0; i < 16; i += 4) {
    u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
#pragma GCC unroll 16
  for (int m = 0; m < 4; ++m) {
    const __m512 even_low = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88);
    const __m512 even_high = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
    const __m512 odd_low = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xDD);
    const __m512 odd_high = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xDD);
    _mm512_storeu_ps(destination + m * destination_stride,
                     _mm512_shuffle_f32x4(even_low, even_high, 0x88));
    _mm512_storeu_ps(destination + (8 + m) * destination_stride,
                     _mm512_shuffle_f32x4(even_low, even_high, 0xDD));
    _mm512_storeu_ps(destination + (4 + m) * destination_stride,
                     _mm512_shuffle_f32x4(odd_low, odd_high, 0x88));
    _mm512_storeu_ps(destination + (12 + m) * destination_stride,
                     _mm512_shuffle_f32x4(odd_low, odd_high, 0xDD));
  }
}

#include "f32-spconv1x1/kernel_template.h"
#endif
