#define _POSIX_C_SOURCE 199309L
/* What one x86-64 core can do with the pattern-conv micro-kernel's loop
 * shape, measured apart from the op: the ceiling that the "% of peak"
 * columns of benchmarks/README.md are read against.
 *
 *   build/fma_ceiling_bench
 * prints GFLOP/s (best of several runs) of AVX-512 loops, each also as a
 * fraction of the first:
 *   peak          16 independent register-only FMA chains: the FMA peak.
 *   1 load/FMA    the micro-kernel's inner loop (8 vectors of 16 pixels,
 *                 two taps per step, each tap a broadcast weight and an
 *                 offset read from a tap list), every load 64-byte aligned,
 *                 all data in L1: the ceiling of any kernel in which each
 *                 kept weight needs its own input vector.
 *   split loads   the same with every load straddling two cache lines (tap
 *                 offsets a multiple of 8 floats, not 16).
 *   L2 span       the same, aligned, over 256 KB: planes served by L2.
 *   2 FMAs/load   one input vector feeding two filters' accumulators (the
 *                 loop a kernel over filter pairs that share their kernels'
 *                 channels and patterns would run).
 * Built only for x86-64 with AVX-512F; it exits with status 2 on a CPU
 * without it.
 */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define VECTORS 8
#define TAPS 400
#define OPAQUE(pointer) __asm__("" : "+r"(pointer))

static double now_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((target("avx512f"), noinline)) static float register_peak(long steps) {
  __m512 acc[16];
  const __m512 scale = _mm512_set1_ps(0.999999f), shift = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps((float)i);
  for (long k = 0; k < steps; ++k) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], scale, shift);
  }
  float sum = 0.0f;
  for (int i = 0; i < 16; ++i) sum += _mm512_reduce_add_ps(acc[i]);
  return sum;
}

/* One aligned or unaligned input load per FMA, two taps per step. */
__attribute__((target("avx512f"), noinline)) static void one_load_per_fma(
    const int* offsets, const float* weights, const float* planes, float* out) {
  __m512 acc[VECTORS];
  for (int v = 0; v < VECTORS; ++v) acc[v] = _mm512_setzero_ps();
  for (int t = 0; t < TAPS; t += 2) {
    const __m512 w0 = _mm512_set1_ps(weights[t]);
    const __m512 w1 = _mm512_set1_ps(weights[t + 1]);
    const float* p0 = planes + offsets[t];
    const float* p1 = planes + offsets[t + 1];
    OPAQUE(p0);
    OPAQUE(p1);
#pragma GCC unroll 8
    for (int v = 0; v < VECTORS; ++v) {
      acc[v] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(p0 + 16 * v), acc[v]);
      acc[v] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(p1 + 16 * v), acc[v]);
    }
  }
  for (int v = 0; v < VECTORS; ++v) _mm512_storeu_ps(out + 16 * v, acc[v]);
}

/* One aligned input load feeding two filters' accumulators. */
__attribute__((target("avx512f"), noinline)) static void two_fmas_per_load(
    const int* offsets, const float* weights, const float* planes, float* out) {
  __m512 first[VECTORS], second[VECTORS];
  for (int v = 0; v < VECTORS; ++v) first[v] = second[v] = _mm512_setzero_ps();
  for (int t = 0; t < TAPS; ++t) {
    const __m512 w0 = _mm512_set1_ps(weights[t]);
    const __m512 w1 = _mm512_set1_ps(weights[TAPS - 1 - t]);
    const float* p = planes + offsets[t];
    OPAQUE(p);
#pragma GCC unroll 8
    for (int v = 0; v < VECTORS; ++v) {
      const __m512 x = _mm512_loadu_ps(p + 16 * v);
      first[v] = _mm512_fmadd_ps(w0, x, first[v]);
      second[v] = _mm512_fmadd_ps(w1, x, second[v]);
    }
  }
  for (int v = 0; v < VECTORS; ++v) {
    _mm512_storeu_ps(out + 16 * v, first[v]);
    _mm512_storeu_ps(out + 16 * (VECTORS + v), second[v]);
  }
}

typedef void (*loop_fn)(const int*, const float*, const float*, float*);

/* Best GFLOP/s of `loop` over tap offsets spread over `span` floats, each a
 * multiple of `alignment` floats. */
static double measure(loop_fn loop, double flops_per_call, size_t span,
                      int alignment, float* planes, float* out) {
  int offsets[TAPS];
  float weights[TAPS];
  srand(1);
  for (int t = 0; t < TAPS; ++t) {
    int offset = (int)((size_t)rand() % (span / 16)) * 16;
    if (alignment % 16 != 0) offset += alignment;
    offsets[t] = offset;
    weights[t] = 1e-3f * (float)(t % 7);
  }
  double best = 1e30;
  for (int run = 0; run < 200; ++run) {
    const double start = now_seconds();
    for (int call = 0; call < 100; ++call) loop(offsets, weights, planes, out);
    const double elapsed = now_seconds() - start;
    if (elapsed < best) best = elapsed;
  }
  return 100.0 * flops_per_call / best / 1e9;
}

int main(void) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) {
    fprintf(stderr, "fma_ceiling_bench: this CPU has no AVX-512F\n");
    return 2;
  }
  const long steps = 20000000;
  double peak = 0.0;
  float checksum = 0.0f;
  for (int run = 0; run < 5; ++run) {
    const double start = now_seconds();
    checksum += register_peak(steps);
    const double gflops = (double)steps * 16 * 32 / (now_seconds() - start) / 1e9;
    if (gflops > peak) peak = gflops;
  }
  const size_t l1_span = 4096, l2_span = 65536;  /* floats: 16 KB, 256 KB */
  float* planes = aligned_alloc(64, (l2_span + 1024) * sizeof(float));
  float* out = aligned_alloc(64, 2 * VECTORS * 16 * sizeof(float));
  if (planes == NULL || out == NULL) return 1;
  for (size_t i = 0; i < l2_span + 1024; ++i) planes[i] = 1.0f;
  const double single = 2.0 * TAPS * VECTORS * 16;
  const struct {
    const char* name;
    loop_fn loop;
    double flops;
    size_t span;
    int alignment;
  } cases[] = {
      {"1 load/FMA, aligned, L1", one_load_per_fma, single, l1_span, 16},
      {"1 load/FMA, split loads, L1", one_load_per_fma, single, l1_span, 8},
      {"1 load/FMA, aligned, L2 span", one_load_per_fma, single, l2_span, 16},
      {"2 FMAs/load, aligned, L1", two_fmas_per_load, 2 * single, l1_span, 16},
  };
  printf("%-32s %9.1f GFLOP/s  100%%  (checksum %g)\n", "peak (register FMAs)", peak,
         (double)checksum);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
    const double gflops = measure(cases[i].loop, cases[i].flops, cases[i].span,
                                  cases[i].alignment, planes, out);
    printf("%-32s %9.1f GFLOP/s  %3.0f%%\n", cases[i].name, gflops,
           100.0 * gflops / peak);
  }
  free(planes);
  free(out);
  return 0;
}
