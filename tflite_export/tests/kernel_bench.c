#define _POSIX_C_SOURCE 199309L
/* Native timing of one pattern-conv layer through the op's driver, for
 * profiling (perf, callgrind) without the interpreter around it.
 *
 *   build/kernel_bench SIZE IN OUT STRIDE KEPT_FRACTION [THREADS] [REPEATS] [VARIANT] [FILTER_GROUP]
 * prints the median ms per run of every kernel set this CPU runs (only
 * VARIANT when given; "all" for every set), and effective GFLOP/s on
 * non-zeros. With FILTER_GROUP G, runs of G consecutive filters keep the
 * same channels with the same patterns, as prune_pattern(filter_group=G).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clicktrain/pattern_conv.h"
#include "compact_weights.h"
#include "op_options.h"
#include "pattern_conv_operator.h"
#include "thread_pool.h"

static const uint16_t kPatterns[8] = {0x03A, 0x0B8, 0x0B2, 0x09A,
                                      0x033, 0x01E, 0x198, 0x0F0};

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int compare(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

int main(int argc, char** argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: %s SIZE IN OUT STRIDE KEPT_FRACTION [THREADS] [REPEATS] [VARIANT] [FILTER_GROUP]\n", argv[0]);
    return 2;
  }
  const int size = atoi(argv[1]), in = atoi(argv[2]), out = atoi(argv[3]);
  const int stride = atoi(argv[4]);
  const double kept = atof(argv[5]);
  const int threads = argc > 6 ? atoi(argv[6]) : 1;
  const int repeats = argc > 7 ? atoi(argv[7]) : 50;
  const char* variant = argc > 8 && strcmp(argv[8], "all") != 0 ? argv[8] : NULL;
  const int group = argc > 9 ? atoi(argv[9]) : 1;
  if (group < 1) {
    fprintf(stderr, "FILTER_GROUP must be a positive integer\n");
    return 2;
  }
  srand(1);
  uint16_t masks[8];
  memcpy(masks, kPatterns, sizeof(masks));
  uint16_t* runs = calloc((size_t)out * 8, sizeof(uint16_t));
  uint16_t* channels = malloc(sizeof(uint16_t) * (size_t)out * in);
  float* values = malloc(sizeof(float) * (size_t)out * in * 4);
  float* bias = calloc((size_t)out, sizeof(float));
  size_t kernels = 0, num_values = 0;
  int* pattern = malloc(sizeof(int) * in);
  for (int o = 0; o < out; ++o) {
    for (int i = 0; o % group == 0 && i < in; ++i) {
      pattern[i] = (rand() / (RAND_MAX + 1.0)) < kept ? rand() % 8 : -1;
    }
    for (int p = 0; p < 8; ++p) {
      for (int i = 0; i < in; ++i) {
        if (pattern[i] != p) continue;
        runs[o * 8 + p]++;
        channels[kernels++] = (uint16_t)i;
        for (int t = 0; t < 4; ++t) values[num_values++] = rand() / (float)RAND_MAX - 0.5f;
      }
    }
  }
  free(pattern);
  clicktrain_compact_tensors t = {masks, 8, runs, (size_t)out, 8, 2, channels, kernels, 2,
                                  values, num_values, bias, (size_t)out, 1, NULL, 0};
  clicktrain_weight_storage storage;
  char error[256];
  if (clicktrain_build_pattern_weights(&t, in, out, 0, &storage, error, sizeof(error))) {
    fprintf(stderr, "%s\n", error);
    return 1;
  }
  clicktrain_op_options options = {1, in, out, stride, stride, 1, 1,
                                   CLICKTRAIN_PADDING_SAME, CLICKTRAIN_ACTIVATION_NONE};
  clicktrain_conv_geometry g;
  clicktrain_compute_geometry(&options, 1, size, size, in, &g, error, sizeof(error));
  float* input = malloc(sizeof(float) * size * size * in);
  for (int i = 0; i < size * size * in; ++i) input[i] = rand() / (float)RAND_MAX;
  float* output = malloc(sizeof(float) * g.output_height * g.output_width * out);
  clicktrain_thread_pool* pool = clicktrain_thread_pool_create(threads);
  const clicktrain_kernel_set* sets[8];
  const size_t count = clicktrain_available_kernels(sets, 8);
  const double flops = 2.0 * num_values * g.output_height * g.output_width;
  double* samples = malloc(sizeof(double) * repeats);
  for (size_t s = 0; s < count; ++s) {
    if (variant != NULL && strcmp(sets[s]->name, variant) != 0) continue;
    clicktrain_patconv_operator op;
    clicktrain_patconv_operator_setup(&op, &g, &storage.weights, 0, sets[s], threads);
    clicktrain_patconv_operator_run(&op, input, output, pool);
    for (int r = 0; r < repeats; ++r) {
      const double start = now_ms();
      clicktrain_patconv_operator_run(&op, input, output, pool);
      samples[r] = now_ms() - start;
    }
    qsort(samples, repeats, sizeof(double), compare);
    const double median = samples[repeats / 2];
    printf("%-7s %dx%dx%d->%d s%d kept %.3f group %d (%zu group entries) threads %d: "
           "%.3f ms (min %.3f), %.1f GFLOP/s eff.\n",
           sets[s]->name, size, size, in, out, stride, kept, group, op.group_entries,
           threads, median, samples[0], flops / median / 1e6);
    clicktrain_patconv_operator_release(&op);
  }
  clicktrain_thread_pool_destroy(pool);
  return 0;
}
