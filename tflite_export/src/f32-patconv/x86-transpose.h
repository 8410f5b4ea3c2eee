/* 8x8 float transpose with AVX (shared by the AVX2 and AVX-512 variants:
 * 256-bit shuffles are as fast as 512-bit ones per float on the cores these
 * run on, and an 8-wide tile leaves smaller scalar edges). */
#ifndef CLICKTRAIN_F32_PATCONV_X86_TRANSPOSE_H_
#define CLICKTRAIN_F32_PATCONV_X86_TRANSPOSE_H_

#include <immintrin.h>
#include <stddef.h>

#define TRANSPOSE_TILE 8

/* r[i] = row i -> r[j] = column j. */
static inline __attribute__((always_inline)) void transpose_registers(
    __m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]);
  const __m256 t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]);
  const __m256 t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]);
  const __m256 t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]);
  const __m256 t7 = _mm256_unpackhi_ps(r[6], r[7]);
  /* Per 128-bit half: u0..u3 hold columns 0..3 (of the half) of rows 0..3,
   * u4..u7 the same of rows 4..7. */
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44);
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44);
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44);
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44);
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

static inline __attribute__((always_inline)) void transpose_block(
    const float* source, size_t source_stride, float* destination,
    size_t destination_stride) {
  __m256 r[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(source + i * source_stride);
  transpose_registers(r);
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    _mm256_storeu_ps(destination + i * destination_stride, r[i]);
  }
}

/* The first n (1..8) floats of v. No masked store: AMD cores microcode
 * vmaskmovps stores. */
static inline __attribute__((always_inline)) void store_first(float* d,
                                                              __m256 v,
                                                              size_t n) {
  if (n == 8) {
    _mm256_storeu_ps(d, v);
    return;
  }
  __m128 part = _mm256_castps256_ps128(v);
  if (n & 4) {
    _mm_storeu_ps(d, part);
    part = _mm256_extractf128_ps(v, 1);
    d += 4;
  }
  if (n & 2) {
    _mm_storel_pi((__m64*)d, part);
    part = _mm_movehl_ps(part, part);
    d += 2;
  }
  if (n & 1) _mm_store_ss(d, part);
}

/* 4 rows x 8 columns -> 8 rows of 4 floats. */
static inline __attribute__((always_inline)) void transpose_4x8(
    const float* source, size_t source_stride, float* destination,
    size_t destination_stride) {
  const __m256 r0 = _mm256_loadu_ps(source);
  const __m256 r1 = _mm256_loadu_ps(source + source_stride);
  const __m256 r2 = _mm256_loadu_ps(source + 2 * source_stride);
  const __m256 r3 = _mm256_loadu_ps(source + 3 * source_stride);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1);
  const __m256 t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3);
  const __m256 t3 = _mm256_unpackhi_ps(r2, r3);
  /* Columns j | j + 4 of the 4 rows. */
  const __m256 c04 = _mm256_shuffle_ps(t0, t2, 0x44);
  const __m256 c15 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 c26 = _mm256_shuffle_ps(t1, t3, 0x44);
  const __m256 c37 = _mm256_shuffle_ps(t1, t3, 0xEE);
  float* d = destination;
  const size_t s = destination_stride;
  _mm_storeu_ps(d, _mm256_castps256_ps128(c04));
  _mm_storeu_ps(d + s, _mm256_castps256_ps128(c15));
  _mm_storeu_ps(d + 2 * s, _mm256_castps256_ps128(c26));
  _mm_storeu_ps(d + 3 * s, _mm256_castps256_ps128(c37));
  _mm_storeu_ps(d + 4 * s, _mm256_extractf128_ps(c04, 1));
  _mm_storeu_ps(d + 5 * s, _mm256_extractf128_ps(c15, 1));
  _mm_storeu_ps(d + 6 * s, _mm256_extractf128_ps(c26, 1));
  _mm_storeu_ps(d + 7 * s, _mm256_extractf128_ps(c37, 1));
}

/* 8 rows x 4 columns -> 4 rows of 8 floats. */
static inline __attribute__((always_inline)) void transpose_8x4(
    const float* source, size_t source_stride, float* destination,
    size_t destination_stride) {
  const size_t s = source_stride;
  const __m256 v0 = _mm256_insertf128_ps(
      _mm256_castps128_ps256(_mm_loadu_ps(source)), _mm_loadu_ps(source + 4 * s), 1);
  const __m256 v1 = _mm256_insertf128_ps(
      _mm256_castps128_ps256(_mm_loadu_ps(source + s)), _mm_loadu_ps(source + 5 * s), 1);
  const __m256 v2 = _mm256_insertf128_ps(
      _mm256_castps128_ps256(_mm_loadu_ps(source + 2 * s)), _mm_loadu_ps(source + 6 * s), 1);
  const __m256 v3 = _mm256_insertf128_ps(
      _mm256_castps128_ps256(_mm_loadu_ps(source + 3 * s)), _mm_loadu_ps(source + 7 * s), 1);
  const __m256 t0 = _mm256_unpacklo_ps(v0, v1);
  const __m256 t1 = _mm256_unpackhi_ps(v0, v1);
  const __m256 t2 = _mm256_unpacklo_ps(v2, v3);
  const __m256 t3 = _mm256_unpackhi_ps(v2, v3);
  _mm256_storeu_ps(destination, _mm256_shuffle_ps(t0, t2, 0x44));
  _mm256_storeu_ps(destination + destination_stride, _mm256_shuffle_ps(t0, t2, 0xEE));
  _mm256_storeu_ps(destination + 2 * destination_stride, _mm256_shuffle_ps(t1, t3, 0x44));
  _mm256_storeu_ps(destination + 3 * destination_stride, _mm256_shuffle_ps(t1, t3, 0xEE));
}

/* The first `rows` x `columns` (each 1..8) of a block, with masked loads and
 * loads: the edges of a transpose cost about what a whole block does. */
static inline void transpose_masked_block(const float* source,
                                           size_t source_stride,
                                           float* destination,
                                           size_t destination_stride,
                                           size_t rows, size_t columns) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i column_mask =
      _mm256_cmpgt_epi32(_mm256_set1_epi32((int)columns), lane);
  __m256 r[8];
  /* Unrolled, so r stays in registers. */
#pragma GCC unroll 8
  for (size_t i = 0; i < 8; ++i) {
    r[i] = i < rows ? _mm256_maskload_ps(source + i * source_stride, column_mask)
                    : _mm256_setzero_ps();
  }
  transpose_registers(r);
#pragma GCC unroll 8
  for (size_t i = 0; i < 8; ++i) {
    if (i < columns) store_first(destination + i * destination_stride, r[i], rows);
  }
}

/* The first `rows` x `columns` (each 1..8, not both 8) of a block: a
 * 4-row or 4-column part by the shuffles of half a block (a 28-pixel row is
 * 3 blocks and a half), the rest masked. */
#define TRANSPOSE_HAS_PARTIAL_BLOCK 1
static inline __attribute__((always_inline)) void transpose_partial_block(const float* source,
                                           size_t source_stride,
                                           float* destination,
                                           size_t destination_stride,
                                           size_t rows, size_t columns) {
  if (columns == 8 && rows == 4) {
    transpose_4x8(source, source_stride, destination, destination_stride);
    return;
  }
  if (rows == 8 && columns == 4) {
    transpose_8x4(source, source_stride, destination, destination_stride);
    return;
  }
  transpose_masked_block(source, source_stride, destination,
                         destination_stride, rows, columns);
}

#endif  /* CLICKTRAIN_F32_PATCONV_X86_TRANSPOSE_H_ */
