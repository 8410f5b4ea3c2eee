/* Scalar sparse 1x1 conv micro-kernels: the portable variant, run by the
 * same driver as the SIMD ones (template: kernel_template.h). */
#include <stddef.h>

typedef float VECTOR;
#define LANES 1
#define VECTORS 8
#define VARIANT scalar
/* Block mode register tile, pixels (one pixel of 16 or 32 channels). */
#define BLOCK_PIXELS 1
#define PAIR_PIXELS 1
/* Few-pixel mode register tile (one pixel, 8 output channels). */
#define FEW_PIXEL_ROWS 1
#define FEW_PIXEL_VECTORS 8
/* Without lanes the dense GEMV does 5x the SpMM's multiply-adds at 80%
 * sparsity: measured 2x slower at one pixel, so never taken (tests run
 * it forced). */
#define FEW_PIXELS 0

static inline VECTOR vector_load(const float* p) { return *p; }
static inline void vector_store(float* p, VECTOR v) { *p = v; }
static inline VECTOR vector_broadcast(float x) { return x; }
static inline VECTOR vector_fma(VECTOR w, VECTOR x, VECTOR acc) {
  return acc + w * x;
}
static inline VECTOR vector_add(VECTOR a, VECTOR b) { return a + b; }
/* The second operand wins when either is NaN, as x86's max/min do. */
static inline VECTOR vector_max(VECTOR a, VECTOR b) { return a > b ? a : b; }
static inline VECTOR vector_min(VECTOR a, VECTOR b) { return a < b ? a : b; }
static inline void transpose_block(const float* source, size_t source_stride,
                                   float* destination,
                                   size_t destination_stride) {
  (void)source_stride;
  (void)destination_stride;
  *destination = *source;
}

#include "f32-spconv1x1/kernel_template.h"
