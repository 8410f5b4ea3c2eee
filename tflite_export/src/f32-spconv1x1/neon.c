/* NEON (arm64) sparse 1x1 conv micro-kernels (template: kernel_template.h). */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <stddef.h>

typedef float32x4_t VECTOR;
#define LANES 4
#define VECTORS 4
#define VARIANT neon
/* Block mode register tile, pixels (32 q registers: 6 x 4 accumulators + 4 weight vectors; a pair: 2 x 8 + 8). */
#define BLOCK_PIXELS 6
#define PAIR_PIXELS 2
/* Few-pixel mode register tile (32 q registers: up to 4 x 4 accumulators, 4 weight vectors and a broadcast). */
#define FEW_PIXEL_ROWS 4
#define FEW_PIXEL_VECTORS 4
/* Not measured on hardware: at 4 lanes the dense GEMV does about as many
 * multiply-adds as the SpMM at one pixel (5/4 at 80% sparsity) and more
 * beyond, so only one-pixel layers take it, for the transposes it skips. */
#define FEW_PIXELS 1

static inline VECTOR vector_load(const float* p) { return vld1q_f32(p); }
static inline void vector_store(float* p, VECTOR v) { vst1q_f32(p, v); }
static inline VECTOR vector_broadcast(float x) { return vdupq_n_f32(x); }
static inline VECTOR vector_fma(VECTOR w, VECTOR x, VECTOR acc) {
  return vfmaq_f32(acc, w, x);
}
static inline VECTOR vector_add(VECTOR a, VECTOR b) { return vaddq_f32(a, b); }
/* NEON's max/min return NaN when either operand is NaN. */
static inline VECTOR vector_max(VECTOR a, VECTOR b) { return vmaxq_f32(a, b); }
static inline VECTOR vector_min(VECTOR a, VECTOR b) { return vminq_f32(a, b); }

static inline void transpose_block(const float* source, size_t source_stride,
                                   float* destination,
                                   size_t destination_stride) {
  const float32x4_t r0 = vld1q_f32(source);
  const float32x4_t r1 = vld1q_f32(source + source_stride);
  const float32x4_t r2 = vld1q_f32(source + 2 * source_stride);
  const float32x4_t r3 = vld1q_f32(source + 3 * source_stride);
  const float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(r0, r1));
  const float64x2_t t1 = vreinterpretq_f64_f32(vtrn2q_f32(r0, r1));
  const float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(r2, r3));
  const float64x2_t t3 = vreinterpretq_f64_f32(vtrn2q_f32(r2, r3));
  vst1q_f32(destination, vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)));
  vst1q_f32(destination + destination_stride,
            vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)));
  vst1q_f32(destination + 2 * destination_stride,
            vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)));
  vst1q_f32(destination + 3 * destination_stride,
            vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)));
}

#include "f32-spconv1x1/kernel_template.h"
#endif
