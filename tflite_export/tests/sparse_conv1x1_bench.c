#define _POSIX_C_SOURCE 199309L
/* Native timing of one sparse 1x1 conv layer in the few-pixel mode and in
 * the SpMM (the mode other pixel counts take), from which each variant's
 * `few_pixels` limit was chosen (src/f32-spconv1x1/<variant>.c).
 *
 *   sparse_conv1x1_bench IN OUT PIXELS [KEPT_FRACTION] [THREADS]
 * prints, for every variant this CPU runs, the fastest of 200 samples of
 * microseconds per run in each mode (PIXELS images of 1x1 pixel, 0.2 of the
 * weights kept by default). Not in the Makefile; built from the library's
 * objects:
 *   make build/sparse_conv1x1_test
 *   g++ -O2 -Iinclude -Isrc -x c tests/sparse_conv1x1_bench.c -x none \
 *       $(sed 's|.*|build/&.o|' sources.txt) -lm -pthread \
 *       -o build/sparse_conv1x1_bench
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clicktrain/sparse_conv1x1.h"
#include "sparse_conv1x1_operator.h"
#include "sparse_conv1x1_weights.h"
#include "thread_pool.h"

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static uint32_t rng_state = 7;
static uint32_t next_random(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

static double time_mode(const clicktrain_spconv1x1_geometry* g,
                        const clicktrain_spconv1x1_weights* w,
                        const clicktrain_spconv1x1_ukernels* ukernels,
                        size_t limit, const float* input, float* output,
                        clicktrain_thread_pool* pool) {
  clicktrain_spconv1x1_operator op;
  if (clicktrain_spconv1x1_operator_setup(&op, g, w, ukernels, 64, limit) != 0) {
    return -1.0;
  }
  const int inner = 50;
  double best = 1e30;
  for (int sample = 0; sample < 200; ++sample) {
    const double start = now_us();
    for (int r = 0; r < inner; ++r) {
      clicktrain_spconv1x1_operator_run(&op, input, output, pool);
    }
    const double us = (now_us() - start) / inner;
    if (us < best) best = us;
  }
  clicktrain_spconv1x1_operator_release(&op);
  return best;
}

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s IN OUT PIXELS [KEPT_FRACTION] [THREADS]\n", argv[0]);
    return 2;
  }
  const int in = atoi(argv[1]), out = atoi(argv[2]), pixels = atoi(argv[3]);
  const double kept = argc > 4 ? atof(argv[4]) : 0.2;
  const int threads = argc > 5 ? atoi(argv[5]) : 1;
  if (in < 1 || out < 1 || pixels < 1 || in > 65535 || out > 65535) return 2;
  const size_t row_bytes = ((size_t)in + 7) / 8;
  uint8_t* mask = calloc((size_t)out * row_bytes, 1);
  float* values = malloc(sizeof(float) * (size_t)in * out);
  float* bias = malloc(sizeof(float) * (size_t)out);
  size_t count = 0;
  for (int o = 0; o < out; ++o) {
    bias[o] = 0.1f;
    for (int i = 0; i < in; ++i) {
      if (next_random() % 10000 < kept * 10000) {
        mask[o * row_bytes + i / 8] |= (uint8_t)(1u << (i % 8));
        values[count++] = (float)(next_random() % 200) / 100.0f - 1.0f;
      }
    }
  }
  clicktrain_spconv1x1_tensors t = {mask, (size_t)out, row_bytes, values, count,
                                    bias, (size_t)out};
  clicktrain_spconv1x1_weight_storage storage;
  char error[256];
  if (clicktrain_build_spconv1x1_weights(&t, (size_t)in, (size_t)out, &storage,
                                         error, sizeof(error)) != 0) {
    fprintf(stderr, "%s\n", error);
    return 1;
  }
  clicktrain_spconv1x1_geometry g;
  clicktrain_spconv1x1_compute_geometry(pixels, 1, 1, in, out, 1, 1, -1e30f,
                                        1e30f, &g, error, sizeof(error));
  float* input = malloc(sizeof(float) * (size_t)pixels * in);
  float* output = malloc(sizeof(float) * (size_t)pixels * out);
  for (size_t i = 0; i < (size_t)pixels * in; ++i) input[i] = 0.5f;
  clicktrain_thread_pool* pool =
      threads > 1 ? clicktrain_thread_pool_create(threads) : NULL;
  const clicktrain_spconv1x1_ukernels* sets[8];
  const size_t sets_count = clicktrain_available_spconv1x1_ukernels(sets, 8);
  for (size_t s = 0; s < sets_count; ++s) {
    const double few = time_mode(&g, &storage.weights, sets[s], SIZE_MAX,
                                 input, output, pool);
    const double spmm = time_mode(&g, &storage.weights, sets[s], 0, input,
                                  output, pool);
    printf("%-7s %5d -> %-5d pixels %2d threads %d: few-pixel %7.3f us, "
           "spmm %7.3f us (%.2fx)\n",
           sets[s]->name, in, out, pixels, threads, few, spmm, spmm / few);
  }
  clicktrain_thread_pool_destroy(pool);
  clicktrain_free_spconv1x1_weights(&storage);
  free(mask); free(values); free(bias); free(input); free(output);
  return 0;
}
