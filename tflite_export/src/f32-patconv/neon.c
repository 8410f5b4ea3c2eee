/* NEON (arm64 Advanced SIMD) pattern-conv micro-kernels (template:
 * planar-template.h). Advanced SIMD is part of every arm64 CPU: no run-time
 * check is needed. */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <stddef.h>

typedef float32x4_t VECTOR;
#define LANES 4
#define VECTORS 8
#define GROUP_VECTORS 4  /* per filter of a group entry */
#define VARIANT neon
#define TRANSPOSE_TILE 4

static inline VECTOR vector_load(const float* p) { return vld1q_f32(p); }
static inline void vector_store(float* p, VECTOR v) { vst1q_f32(p, v); }
static inline VECTOR vector_broadcast(float x) { return vdupq_n_f32(x); }
static inline VECTOR vector_fma(VECTOR w, VECTOR x, VECTOR acc) {
  return vfmaq_f32(acc, w, x);
}
/* FMAX/FMIN return NaN when either input is NaN, as TFLite's clamp keeps a
 * NaN value. */
static inline VECTOR vector_max(VECTOR a, VECTOR b) { return vmaxq_f32(a, b); }
static inline VECTOR vector_min(VECTOR a, VECTOR b) { return vminq_f32(a, b); }

static inline __attribute__((always_inline)) void transpose_block(const float* source, size_t source_stride,
                                   float* destination,
                                   size_t destination_stride) {
  const float32x4_t a0 = vld1q_f32(source);
  const float32x4_t a1 = vld1q_f32(source + source_stride);
  const float32x4_t a2 = vld1q_f32(source + 2 * source_stride);
  const float32x4_t a3 = vld1q_f32(source + 3 * source_stride);
  const float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(a0, a1));
  const float64x2_t t1 = vreinterpretq_f64_f32(vtrn2q_f32(a0, a1));
  const float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(a2, a3));
  const float64x2_t t3 = vreinterpretq_f64_f32(vtrn2q_f32(a2, a3));
  vst1q_f32(destination, vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)));
  vst1q_f32(destination + destination_stride,
            vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)));
  vst1q_f32(destination + 2 * destination_stride,
            vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)));
  vst1q_f32(destination + 3 * destination_stride,
            vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)));
}

#include "planar-template.h"
#endif
