/* Native timing of one int8 pattern conv layer through the operator, for
 * profiling (perf) and comparing micro-kernel variants:
 *   build/pattern_conv_s8_bench SIZE IN OUT STRIDE KEPT [THREADS] [RUNS] [VARIANT]
 *                               [PATTERNS]
 * KEPT is the fraction of kernels kept (4 of 9 taps each; 0.28125 is 8x),
 * each with one of PATTERNS (default 4, at most 8) 4-tap patterns, the
 * library benchmarks/pattern_conv_speed.py draws from. Prints the fastest run's milliseconds (the calling
 * thread's CPU time with 1 thread, wall time otherwise) and the effective
 * int8 GOPS (non-zero multiply-adds x 2). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clicktrain/pattern_conv_s8.h"
#include "pattern_conv_s8_operator.h"

static uint32_t state = 7u;
static uint32_t next_random(void) {
  state = state * 1664525u + 1013904223u;
  return state >> 8;
}

static double now(int thread_time) {
  struct timespec t;
  clock_gettime(thread_time ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char** argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: %s SIZE IN OUT STRIDE KEPT [THREADS] [RUNS] [VARIANT]\n", argv[0]);
    return 2;
  }
  const int size = atoi(argv[1]), in = atoi(argv[2]), out = atoi(argv[3]);
  const int stride = atoi(argv[4]);
  const double kept = atof(argv[5]);
  const int threads = argc > 6 ? atoi(argv[6]) : 1;
  const int runs = argc > 7 ? atoi(argv[7]) : 100;
  const char* variant = argc > 8 && strcmp(argv[8], "all") != 0 ? argv[8] : NULL;
  int patterns = argc > 9 ? atoi(argv[9]) : 4;
  if (patterns < 1 || patterns > 8) patterns = 4;
  const uint16_t masks[8] = {0x03A, 0x0B8, 0x0B2, 0x09A, 0x033, 0x01E, 0x198, 0x0F0};
  uint16_t* runs_table = calloc((size_t)out * patterns, sizeof(uint16_t));
  uint16_t* channels = malloc((size_t)out * in * sizeof(uint16_t));
  int8_t* values = malloc((size_t)out * in * 4);
  size_t kernels = 0;
  for (int o = 0; o < out; ++o) {
    for (int p = 0; p < patterns; ++p) {
      for (int c = 0; c < in; ++c) {
        if ((double)(next_random() % 1000000) / 1e6 >= kept / patterns) continue;
        runs_table[o * patterns + p]++;
        channels[kernels++] = (uint16_t)c;
      }
    }
  }
  for (size_t i = 0; i < kernels * 4; ++i) values[i] = (int8_t)(next_random() % 255 - 127);
  int32_t* bias = calloc((size_t)out, sizeof(int32_t));
  float* scales = malloc(sizeof(float) * out);
  for (int o = 0; o < out; ++o) scales[o] = 0.01f;
  clicktrain_s8_compact_tensors t;
  memset(&t, 0, sizeof(t));
  t.structure.format_version = 1;
  t.structure.pattern_masks = masks;
  t.structure.pattern_masks_count = (size_t)patterns;
  t.structure.pattern_run_lengths = runs_table;
  t.structure.run_lengths_rows = (size_t)out;
  t.structure.run_lengths_columns = (size_t)patterns;
  t.structure.run_lengths_element_size = 2;
  t.structure.kernel_input_channels = channels;
  t.structure.kernel_input_channels_count = kernels;
  t.structure.kernel_input_channels_element_size = 2;
  t.values = values;
  t.values_count = kernels * 4;
  t.bias = bias;
  t.bias_count = (size_t)out;
  t.filter_scales = scales;
  t.filter_scales_count = (size_t)out;
  clicktrain_s8_layer layer;
  char error[256];
  if (clicktrain_s8_layer_build(&t, (size_t)in, (size_t)out, 0, &layer, error, sizeof(error)) != 0 ||
      clicktrain_s8_layer_requantize(&layer, 0.05f, 3, 0.1f, -2, CLICKTRAIN_ACTIVATION_RELU,
                                     error, sizeof(error)) != 0) {
    fprintf(stderr, "%s\n", error);
    return 1;
  }
  clicktrain_op_options options;
  memset(&options, 0, sizeof(options));
  options.format_version = 1;
  options.input_channels = in;
  options.output_channels = out;
  options.stride_h = options.stride_w = stride;
  options.dilation_h = options.dilation_w = 1;
  options.padding = CLICKTRAIN_PADDING_SAME;
  options.activation = CLICKTRAIN_ACTIVATION_RELU;
  clicktrain_conv_geometry g;
  if (clicktrain_compute_geometry(&options, 1, size, size, in, &g, error, sizeof(error)) != 0) {
    fprintf(stderr, "%s\n", error);
    return 1;
  }
  int8_t* input = malloc((size_t)size * size * in);
  int8_t* output = malloc((size_t)g.output_height * g.output_width * out);
  for (size_t i = 0; i < (size_t)size * size * in; ++i) input[i] = (int8_t)next_random();
  const double macs = (double)g.output_height * g.output_width * (double)kernels * 4;
  clicktrain_thread_pool* pool = clicktrain_thread_pool_create(threads);
  const clicktrain_s8_patconv_ukernels* sets[8];
  size_t count = clicktrain_s8_patconv_available_ukernels(sets, 8);
  if (count > 8) count = 8;
  for (size_t i = 0; i < count; ++i) {
    if (variant != NULL && strcmp(variant, sets[i]->name) != 0) continue;
    clicktrain_s8_patconv_operator op;
    if (clicktrain_s8_patconv_operator_setup(&op, &g, &layer, sets[i], threads) != 0) return 1;
    double best = 1e30;
    for (int r = 0; r < runs; ++r) {
      const double start = now(threads == 1);
      clicktrain_s8_patconv_operator_run(&op, input, output, pool);
      const double elapsed = now(threads == 1) - start;
      if (elapsed < best) best = elapsed;
    }
    printf("%-8s %dx%dx%d->%d s%d kept %.3f: %.4f ms, %.1f effective GOPS (%zu slots)\n",
           sets[i]->name, size, size, in, out, stride, kept, best * 1e3, 2 * macs / best / 1e9,
           op.slots);
    clicktrain_s8_patconv_operator_release(&op);
  }
  clicktrain_thread_pool_destroy(pool);
  return 0;
}
