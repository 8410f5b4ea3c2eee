/* AVX2+FMA planar pattern-conv micro-kernel (contract and program format in
 * include/clicktrain/pattern_conv.h). Compiled with -mavx2 -mfma only; called
 * only when the CPU has both.
 *
 * Register tile: up to 8 vectors of 8 output pixels of one filter. Each
 * kernel's weights are broadcast once and reused across the whole tile; the
 * input vectors are FMA memory operands. Kernels of one pattern share their
 * four tap offsets, held in registers for the whole run.
 */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "clicktrain/pattern_conv.h"

#define LANES 8

static inline __attribute__((always_inline)) const clicktrain_patconv_word*
filter_tile(const clicktrain_patconv_word* program, const float* planes,
            float* output, const int vectors, __m256 low, __m256 high) {
  __m256 acc[8];
  const uint32_t groups = program[0].count;
  const __m256 bias = _mm256_set1_ps(program[1].weight);
#pragma GCC unroll 8
  for (int v = 0; v < vectors; ++v) acc[v] = bias;
  program += 2;
  for (uint32_t g = 0; g < groups; ++g) {
    const uint32_t taps = program[0].count;
    const uint32_t kernels = program[1].count;
    const clicktrain_patconv_word* tap = program + 2;
    program += 2 + taps;
    if (taps == 4) {
      const int32_t t0 = tap[0].offset, t1 = tap[1].offset,
                    t2 = tap[2].offset, t3 = tap[3].offset;
      for (uint32_t k = 0; k < kernels; ++k, program += 5) {
        const float* base = planes + program[0].offset;
        const __m256 w0 = _mm256_set1_ps(program[1].weight);
        const __m256 w1 = _mm256_set1_ps(program[2].weight);
        const __m256 w2 = _mm256_set1_ps(program[3].weight);
        const __m256 w3 = _mm256_set1_ps(program[4].weight);
        const float* p0 = base + t0;
        const float* p1 = base + t1;
        const float* p2 = base + t2;
        const float* p3 = base + t3;
#pragma GCC unroll 8
        for (int v = 0; v < vectors; ++v) {
          acc[v] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p0 + v * LANES), acc[v]);
          acc[v] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(p1 + v * LANES), acc[v]);
          acc[v] = _mm256_fmadd_ps(w2, _mm256_loadu_ps(p2 + v * LANES), acc[v]);
          acc[v] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(p3 + v * LANES), acc[v]);
        }
      }
    } else {
      for (uint32_t k = 0; k < kernels; ++k, program += 1 + taps) {
        const float* base = planes + program[0].offset;
        for (uint32_t t = 0; t < taps; ++t) {
          const __m256 w = _mm256_set1_ps(program[1 + t].weight);
          const float* p = base + tap[t].offset;
#pragma GCC unroll 8
          for (int v = 0; v < vectors; ++v) {
            acc[v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(p + v * LANES), acc[v]);
          }
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int v = 0; v < vectors; ++v) {
    /* max/min with the accumulator second keep NaN, as the reference does
     * for NONE (infinite bounds). */
    __m256 value = _mm256_max_ps(low, acc[v]);
    value = _mm256_min_ps(high, value);
    _mm256_storeu_ps(output + v * LANES, value);
  }
  return program;
}

void clicktrain_f32_patconv_planar_ukernel__avx2(
    size_t pixels, size_t filters, const clicktrain_patconv_word* program,
    const float* planes, float* output, size_t output_stride,
    float output_min, float output_max) {
  const __m256 low = _mm256_set1_ps(output_min);
  const __m256 high = _mm256_set1_ps(output_max);
  for (size_t f = 0; f < filters; ++f, output += output_stride) {
    const clicktrain_patconv_word* next = program;
    size_t i = 0;
    /* Whole vectors, the last one partly past `pixels` (within the slack). */
    size_t remaining = (pixels + LANES - 1) / LANES;
    for (; remaining >= 8; remaining -= 8, i += 8 * LANES) {
      next = filter_tile(program, planes + i, output + i, 8, low, high);
    }
    if (remaining >= 4) {
      next = filter_tile(program, planes + i, output + i, 4, low, high);
      i += 4 * LANES;
      remaining -= 4;
    }
    if (remaining >= 2) {
      next = filter_tile(program, planes + i, output + i, 2, low, high);
      i += 2 * LANES;
      remaining -= 2;
    }
    if (remaining >= 1) {
      next = filter_tile(program, planes + i, output + i, 1, low, high);
    }
    if (pixels == 0) break;
    program = next;
  }
}
#endif
