/* Portable pattern-conv micro-kernels (template: planar-template.h): the
 * same driver and register tiling with one float per "vector", for CPUs
 * without a SIMD variant. The reference kernels in scalar.c stay the ground
 * truth. */
#include <stddef.h>

typedef float VECTOR;
#define LANES 1
#define VECTORS 8
#define GROUP_VECTORS 4  /* per filter of a group entry */
#define VARIANT scalar
#define TRANSPOSE_TILE 1

static inline VECTOR vector_load(const float* p) { return *p; }
static inline void vector_store(float* p, VECTOR v) { *p = v; }
static inline VECTOR vector_broadcast(float x) { return x; }
static inline VECTOR vector_fma(VECTOR w, VECTOR x, VECTOR acc) {
  return acc + w * x;
}
/* Comparisons that keep a NaN value, as TFLite's clamp does. */
static inline VECTOR vector_max(VECTOR low, VECTOR value) {
  return value < low ? low : value;
}
static inline VECTOR vector_min(VECTOR high, VECTOR value) {
  return value > high ? high : value;
}

static inline void transpose_block(const float* source, size_t source_stride,
                                   float* destination,
                                   size_t destination_stride) {
  (void)source_stride;
  (void)destination_stride;
  *destination = *source;
}

#include "planar-template.h"
