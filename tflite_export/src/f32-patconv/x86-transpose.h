/* 8x8 float transpose with AVX (shared by the AVX2 and AVX-512 variants:
 * 256-bit shuffles are as fast as 512-bit ones per float on the cores these
 * run on, and an 8-wide tile leaves smaller scalar edges). */
#ifndef CLICKTRAIN_F32_PATCONV_X86_TRANSPOSE_H_
#define CLICKTRAIN_F32_PATCONV_X86_TRANSPOSE_H_

#include <immintrin.h>
#include <stddef.h>

#define TRANSPOSE_TILE 8

static inline __attribute__((always_inline)) void transpose_block(
    const float* source, size_t source_stride, float* destination,
    size_t destination_stride) {
  const __m256 r0 = _mm256_loadu_ps(source);
  const __m256 r1 = _mm256_loadu_ps(source + source_stride);
  const __m256 r2 = _mm256_loadu_ps(source + 2 * source_stride);
  const __m256 r3 = _mm256_loadu_ps(source + 3 * source_stride);
  const __m256 r4 = _mm256_loadu_ps(source + 4 * source_stride);
  const __m256 r5 = _mm256_loadu_ps(source + 5 * source_stride);
  const __m256 r6 = _mm256_loadu_ps(source + 6 * source_stride);
  const __m256 r7 = _mm256_loadu_ps(source + 7 * source_stride);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1);
  const __m256 t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3);
  const __m256 t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5);
  const __m256 t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7);
  const __m256 t7 = _mm256_unpackhi_ps(r6, r7);
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
  float* d = destination;
  const size_t s = destination_stride;
  _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(d + s, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(d + 2 * s, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(d + 3 * s, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(d + 4 * s, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(d + 5 * s, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(d + 6 * s, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(d + 7 * s, _mm256_permute2f128_ps(u3, u7, 0x31));
}

#endif  /* CLICKTRAIN_F32_PATCONV_X86_TRANSPOSE_H_ */
