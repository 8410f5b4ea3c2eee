/* AVX-512 pattern-conv micro-kernels (template: planar-template.h).
 * Compiled with -mavx512f only; called only when the CPU has AVX-512F. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "x86-transpose.h"

typedef __m512 VECTOR;
#define LANES 16
#define VECTORS 8
#define GROUP_VECTORS 4  /* per filter of a group entry */
#define VARIANT avx512

static inline VECTOR vector_load(const float* p) { return _mm512_loadu_ps(p); }
static inline void vector_store(float* p, VECTOR v) { _mm512_storeu_ps(p, v); }
static inline VECTOR vector_broadcast(float x) { return _mm512_set1_ps(x); }
static inline VECTOR vector_fma(VECTOR w, VECTOR x, VECTOR acc) {
  return _mm512_fmadd_ps(w, x, acc);
}
static inline VECTOR vector_max(VECTOR a, VECTOR b) { return _mm512_max_ps(a, b); }
static inline VECTOR vector_min(VECTOR a, VECTOR b) { return _mm512_min_ps(a, b); }

#include "planar-template.h"
#endif
