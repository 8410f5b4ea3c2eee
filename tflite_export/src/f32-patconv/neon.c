/* NEON (arm64 Advanced SIMD) planar pattern-conv micro-kernel (contract and program format in
 * include/clicktrain/pattern_conv.h). Advanced SIMD is part of
 * every arm64 CPU: no run-time check is needed.
 *
 * Register tile: up to 8 vectors of 4 output pixels of one filter. Each
 * kernel's weights are broadcast once and reused across the whole tile; the
 * input vectors are FMA memory operands. Kernels of one pattern share their
 * four tap offsets, held in registers for the whole run.
 */
#if defined(__aarch64__)
#include <arm_neon.h>

#include "clicktrain/pattern_conv.h"

#define LANES 4

static inline __attribute__((always_inline)) const clicktrain_patconv_word*
filter_tile(const clicktrain_patconv_word* program, const float* planes,
            float* output, const int vectors, float32x4_t low, float32x4_t high) {
  float32x4_t acc[8];
  const uint32_t groups = program[0].count;
  const float32x4_t bias = vdupq_n_f32(program[1].weight);
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
        const float32x4_t w0 = vdupq_n_f32(program[1].weight);
        const float32x4_t w1 = vdupq_n_f32(program[2].weight);
        const float32x4_t w2 = vdupq_n_f32(program[3].weight);
        const float32x4_t w3 = vdupq_n_f32(program[4].weight);
        const float* p0 = base + t0;
        const float* p1 = base + t1;
        const float* p2 = base + t2;
        const float* p3 = base + t3;
#pragma GCC unroll 8
        for (int v = 0; v < vectors; ++v) {
          acc[v] = vfmaq_f32(acc[v], w0, vld1q_f32(p0 + v * LANES));
          acc[v] = vfmaq_f32(acc[v], w1, vld1q_f32(p1 + v * LANES));
          acc[v] = vfmaq_f32(acc[v], w2, vld1q_f32(p2 + v * LANES));
          acc[v] = vfmaq_f32(acc[v], w3, vld1q_f32(p3 + v * LANES));
        }
      }
    } else {
      for (uint32_t k = 0; k < kernels; ++k, program += 1 + taps) {
        const float* base = planes + program[0].offset;
        for (uint32_t t = 0; t < taps; ++t) {
          const float32x4_t w = vdupq_n_f32(program[1 + t].weight);
          const float* p = base + tap[t].offset;
#pragma GCC unroll 8
          for (int v = 0; v < vectors; ++v) {
            acc[v] = vfmaq_f32(acc[v], w, vld1q_f32(p + v * LANES));
          }
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int v = 0; v < vectors; ++v) {
    /* vmaxq/vminq propagate NaN, as the reference does for NONE. */
    float32x4_t value = vmaxq_f32(low, acc[v]);
    value = vminq_f32(high, value);
    vst1q_f32(output + v * LANES, value);
  }
  return program;
}

void clicktrain_f32_patconv_planar_ukernel__neon(
    size_t pixels, size_t filters, const clicktrain_patconv_word* program,
    const float* planes, float* output, size_t output_stride,
    float output_min, float output_max) {
  const float32x4_t low = vdupq_n_f32(output_min);
  const float32x4_t high = vdupq_n_f32(output_max);
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
