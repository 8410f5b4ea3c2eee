/* Native test of the int8 pattern conv: the scalar kernel against a dense
 * int8 conv over the same taps (every geometry the options allow: strides,
 * dilations, SAME/VALID padding, channel counts needing uint16 indices), the
 * planar kernel against the scalar one, the layer builder's validation, and TFLite's QuantizeMultiplier and
 * MultiplyByQuantizedMultiplier on known values. Bit-exactness against
 * LiteRT's reference CONV_2D is tested end to end in
 * tests/tflite/test_int8_pattern_conv.py. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clicktrain/pattern_conv_s8.h"
#include "pattern_conv_s8_operator.h"

static int failures = 0;

#define CHECK(condition, ...)                 \
  do {                                        \
    if (!(condition)) {                       \
      fprintf(stderr, "FAILED: " __VA_ARGS__); \
      fprintf(stderr, "\n");                  \
      ++failures;                             \
    }                                         \
  } while (0)

static uint32_t state = 12345u;
static int next_int(int low, int high) {
  state = state * 1664525u + 1013904223u;
  return low + (int)((state >> 8) % (uint32_t)(high - low + 1));
}

static void check_quantization_arithmetic(void) {
  int32_t multiplier;
  int shift;
  clicktrain_quantize_multiplier(0.5, &multiplier, &shift);
  CHECK(multiplier == (1 << 30) && shift == 0, "QuantizeMultiplier(0.5)");
  clicktrain_quantize_multiplier(0.0009765625 * 3, &multiplier, &shift);
  CHECK(multiplier == (3 << 29) && shift == -8, "QuantizeMultiplier(3 * 2^-10)");
  clicktrain_quantize_multiplier(1e-12, &multiplier, &shift);
  CHECK(multiplier == 0 && shift == 0, "QuantizeMultiplier of a tiny scale");
  /* gemmlowp's nudge: 1.5 rounds to 2, -1.5 to -1, -2.5 to -2 (as the
   * NumPy oracle, tests/tflite/int8_conv_reference.py, computes them). */
  CHECK(clicktrain_multiply_by_quantized_multiplier(3, 1 << 30, 0) == 2, "round 1.5");
  CHECK(clicktrain_multiply_by_quantized_multiplier(-3, 1 << 30, 0) == -1, "round -1.5");
  CHECK(clicktrain_multiply_by_quantized_multiplier(-5, 1 << 30, 0) == -2, "round -2.5");
  CHECK(clicktrain_multiply_by_quantized_multiplier(1000, 1 << 30, -2) == 125,
        "1000 * 0.5 / 4");
  CHECK(clicktrain_multiply_by_quantized_multiplier(INT32_MIN, INT32_MIN, 0) == INT32_MAX,
        "saturating high multiply");
}

/* Every micro-kernel variant through the operator, serially and on a pool
 * of 2 threads, against the scalar reference's `expected` output. */
static void check_operators(const clicktrain_conv_geometry* g, const clicktrain_s8_layer* layer,
                            const int8_t* input, const int8_t* expected, size_t output_size) {
  const clicktrain_s8_patconv_ukernels* sets[8];
  size_t count = clicktrain_s8_patconv_available_ukernels(sets, 8);
  if (count > 8) count = 8;
  clicktrain_thread_pool* pool = clicktrain_thread_pool_create(2);
  int8_t* output = malloc(output_size + 1);
  for (size_t i = 0; i < count; ++i) {
    clicktrain_s8_patconv_operator op;
    CHECK(clicktrain_s8_patconv_operator_setup(&op, g, layer, sets[i], 2) == 0,
          "operator setup (%s)", sets[i]->name);
    CHECK(op.fast, "the fast path is taken (%s)", sets[i]->name);
    for (int threaded = 0; threaded < 2; ++threaded) {
      memset(output, 0x55, output_size);
      clicktrain_s8_patconv_operator_run(&op, input, output, threaded ? pool : NULL);
      CHECK(memcmp(output, expected, output_size) == 0,
            "%s%s != scalar reference: in %d out %d stride %d dilation %d pad %d,%d "
            "size %dx%d", sets[i]->name, threaded ? " (2 threads)" : "", g->input_channels,
            g->output_channels, g->stride_h, g->dilation_h, g->padding_top, g->padding_left,
            g->input_height, g->input_width);
    }
    clicktrain_s8_patconv_operator_release(&op);
  }
  free(output);
  clicktrain_thread_pool_destroy(pool);
}

/* One random layer and geometry, kernel vs dense conv. */
static void check_layer(int input_channels, int output_channels, int stride,
                        int dilation, int same, int size, int wide) {
  const int patterns = next_int(1, 4);
  uint16_t masks[4];
  for (int p = 0; p < patterns; ++p) masks[p] = (uint16_t)next_int(1, 511);
  uint16_t* runs = calloc((size_t)output_channels * patterns, sizeof(uint16_t));
  uint16_t* channels = malloc((size_t)output_channels * input_channels * sizeof(uint16_t));
  int8_t* values = malloc((size_t)output_channels * input_channels * 9);
  int8_t* dense = calloc((size_t)output_channels * 9 * input_channels, 1);
  size_t kernels = 0, num_values = 0;
  for (int o = 0; o < output_channels; ++o) {
    for (int p = 0; p < patterns; ++p) {
      for (int c = p; c < input_channels; c += patterns) {
        if (next_int(0, 2) == 0) continue;  /* a removed kernel */
        ++runs[o * patterns + p];
        channels[kernels++] = (uint16_t)c;
        for (int position = 0; position < 9; ++position) {
          if (!((masks[p] >> position) & 1)) continue;
          const int8_t weight = (int8_t)next_int(-127, 127);
          values[num_values++] = weight;
          dense[((size_t)o * 9 + position) * input_channels + c] = weight;
        }
      }
    }
  }
  int32_t* bias = malloc(sizeof(int32_t) * output_channels);
  float* scales = malloc(sizeof(float) * output_channels);
  for (int o = 0; o < output_channels; ++o) {
    bias[o] = next_int(-5000, 5000);
    scales[o] = 0.002f * (float)next_int(1, 20);
  }
  uint8_t* narrow_runs = malloc((size_t)output_channels * patterns);
  uint8_t* narrow_channels = malloc(kernels + 1);
  for (size_t i = 0; i < (size_t)output_channels * patterns; ++i) narrow_runs[i] = (uint8_t)runs[i];
  for (size_t i = 0; i < kernels; ++i) narrow_channels[i] = (uint8_t)channels[i];

  clicktrain_s8_compact_tensors t;
  memset(&t, 0, sizeof(t));
  t.structure.format_version = 1;
  t.structure.pattern_masks = masks;
  t.structure.pattern_masks_count = (size_t)patterns;
  t.structure.pattern_run_lengths = wide ? (const void*)runs : (const void*)narrow_runs;
  t.structure.run_lengths_rows = (size_t)output_channels;
  t.structure.run_lengths_columns = (size_t)patterns;
  t.structure.run_lengths_element_size = wide ? 2 : 1;
  t.structure.kernel_input_channels = wide ? (const void*)channels : (const void*)narrow_channels;
  t.structure.kernel_input_channels_count = kernels;
  t.structure.kernel_input_channels_element_size = wide ? 2 : 1;
  t.values = values;
  t.values_count = num_values;
  t.bias = bias;
  t.bias_count = (size_t)output_channels;
  t.filter_scales = scales;
  t.filter_scales_count = (size_t)output_channels;
  clicktrain_s8_layer layer;
  char error[256];
  const int built = clicktrain_s8_layer_build(&t, (size_t)input_channels,
                                              (size_t)output_channels, 0, &layer, error,
                                              sizeof(error));
  CHECK(built == 0, "layer build: %s", error);
  if (built != 0) return;
  const int input_zero_point = next_int(-20, 20), output_zero_point = next_int(-20, 20);
  const clicktrain_activation activation = (clicktrain_activation)next_int(0, 3);
  CHECK(clicktrain_s8_layer_requantize(&layer, 0.05f, input_zero_point, 0.1f,
                                       output_zero_point, activation, error,
                                       sizeof(error)) == 0, "requantize: %s", error);

  clicktrain_op_options options;
  memset(&options, 0, sizeof(options));
  options.format_version = 1;
  options.input_channels = input_channels;
  options.output_channels = output_channels;
  options.stride_h = options.stride_w = stride;
  options.dilation_h = options.dilation_w = dilation;
  options.padding = same ? CLICKTRAIN_PADDING_SAME : CLICKTRAIN_PADDING_VALID;
  options.activation = activation;
  clicktrain_conv_geometry g;
  if (clicktrain_compute_geometry(&options, 2, size, size + 1, input_channels, &g, error,
                                  sizeof(error)) != 0) {
    clicktrain_s8_layer_release(&layer);
    free(runs); free(channels); free(values); free(dense); free(bias); free(scales);
    free(narrow_runs); free(narrow_channels);
    return;  /* an input too small for VALID: nothing to compute */
  }
  const size_t input_size = (size_t)g.batch * g.input_height * g.input_width * input_channels;
  const size_t output_size =
      (size_t)g.batch * g.output_height * g.output_width * output_channels;
  int8_t* input = malloc(input_size);
  int8_t* output = malloc(output_size + 1);
  for (size_t i = 0; i < input_size; ++i) input[i] = (int8_t)next_int(-128, 127);
  clicktrain_s8_patconv_ukernel__scalar(&g, &layer.structure.weights, layer.values,
                                        &layer.requantization, input, output);
  const clicktrain_s8_requantization* q = &layer.requantization;
  check_operators(&g, &layer, input, output, output_size);
  size_t mismatches = 0;
  for (int b = 0; b < g.batch; ++b)
    for (int oy = 0; oy < g.output_height; ++oy)
      for (int ox = 0; ox < g.output_width; ++ox)
        for (int o = 0; o < output_channels; ++o) {
          int64_t acc = 0;
          for (int position = 0; position < 9; ++position) {
            const int y = oy * stride - g.padding_top + (position / 3) * dilation;
            const int x = ox * stride - g.padding_left + (position % 3) * dilation;
            if (y < 0 || y >= g.input_height || x < 0 || x >= g.input_width) continue;
            for (int c = 0; c < input_channels; ++c) {
              const int8_t* pixel =
                  input + (((size_t)b * g.input_height + y) * g.input_width + x) * input_channels;
              acc += (int64_t)dense[((size_t)o * 9 + position) * input_channels + c] *
                     (pixel[c] - input_zero_point);
            }
          }
          int32_t expected = clicktrain_multiply_by_quantized_multiplier(
              (int32_t)acc + bias[o], q->multiplier[o], q->shift[o]) + output_zero_point;
          if (expected < q->output_min) expected = q->output_min;
          if (expected > q->output_max) expected = q->output_max;
          const size_t index =
              (((size_t)b * g.output_height + oy) * g.output_width + ox) * output_channels + o;
          mismatches += output[index] != (int8_t)expected;
        }
  CHECK(mismatches == 0,
        "%zu mismatches: in %d out %d stride %d dilation %d %s size %d", mismatches,
        input_channels, output_channels, stride, dilation, same ? "SAME" : "VALID", size);
  clicktrain_s8_layer_release(&layer);
  free(runs); free(channels); free(values); free(dense); free(bias); free(scales);
  free(narrow_runs); free(narrow_channels); free(input); free(output);
}

/* The compute micro-kernels' requantization against TFLite's arithmetic at
 * its extremes: random packed taps and weights (-128..127), sums that wrap,
 * biases over the whole int32 range and every shift TFLite allows. */
static void check_requantization_extremes(void) {
  enum { kTile = CLICKTRAIN_S8_PATCONV_TILE, kFilters = 64, kKernels = 9 };
  /* Slots packed from random planes at random tap offsets, by each
   * variant's own pack (a variant may order a tile's pixels its own way). */
  enum { kPlanes = 1024 };
  uint8_t* planes = aligned_alloc(64, kPlanes + kTile);
  for (size_t i = 0; i < kPlanes + kTile; ++i) planes[i] = (uint8_t)next_int(0, 255);
  uint32_t tap_offsets[kKernels * 4];
  for (int i = 0; i < kKernels * 4; ++i) tap_offsets[i] = (uint32_t)next_int(0, kPlanes);
  uint8_t* packed = aligned_alloc(64, (size_t)kKernels * 16 * kTile);
  uint32_t program[kFilters * (1 + 2 * kKernels)];
  clicktrain_s8_filter_requantization requantization[kFilters];
  uint32_t* entry = program;
  for (int f = 0; f < kFilters; ++f) {
    const int kernels = f % (kKernels + 1);
    *entry++ = (uint32_t)kernels;
    for (int k = 0; k < kernels; ++k) {
      *entry++ = (uint32_t)next_int(0, kKernels - 1);  /* a slot, in slots */
      uint32_t word = 0;
      for (int t = 0; t < 4; ++t) {
        const int weight = f % 3 == 0 ? (next_int(0, 1) ? 127 : -128) : next_int(-128, 127);
        word |= (uint32_t)(uint8_t)weight << (8 * t);
      }
      *entry++ = word;
    }
    clicktrain_s8_filter_requantization* r = &requantization[f];
    const int shift = f < 62 ? next_int(-31, 30) : (f == 62 ? -31 : 30);
    const int exponent = shift < 0 ? -shift : 0;
    r->bias = (int32_t)(((uint32_t)next_int(0, 65535) << 16) ^ (uint32_t)next_int(0, 65535));
    r->multiplier = f % 4 == 0 ? INT32_MAX : (1 << 30) + next_int(0, (1 << 30) - 1);
    r->shift = shift;
    r->left_shift = (uint32_t)(shift > 0 ? shift : 0);
    r->right_shift = (uint32_t)(31 + exponent);
    r->reserved = 0;
    r->rounding = ((int64_t)1 << 30) + (exponent > 0 ? ((int64_t)1 << (30 + exponent)) : 0);
    r->negative_rounding = exponent > 0 ? ((int64_t)1 << 31) : 0;
  }
  const clicktrain_s8_output_params params[2] = {{-7, -128, 127}, {5, -3, 90}};
  const clicktrain_s8_patconv_ukernels* sets[8];
  size_t count = clicktrain_s8_patconv_available_ukernels(sets, 8);
  if (count > 8) count = 8;
  int8_t expected[kFilters * kTile] __attribute__((aligned(64)));
  int8_t actual[kFilters * kTile] __attribute__((aligned(64)));
  /* Each variant's program in its slot size, whole and as two chunks (the
   * first half of every filter's entries, then the rest). */
  uint32_t whole[kFilters * (1 + 2 * kKernels)];
  uint32_t chunks[2 * kFilters + 2 * kFilters * kKernels];
  int32_t* accumulators = aligned_alloc(64, (size_t)kFilters * 16 * kTile);
  for (int p = 0; p < 2; ++p) {
    for (size_t i = 0; i < count; ++i) {
      const uint32_t* from = program;
      uint32_t* to = whole;
      uint32_t* first_chunk = chunks;
      size_t first_words = 0;
      for (int f = 0; f < kFilters; ++f) {
        first_words += 1 + 2 * (from[0] / 2);
        from += 1 + 2 * from[0];
      }
      uint32_t* second_chunk = chunks + first_words;
      from = program;
      for (int f = 0; f < kFilters; ++f) {
        const uint32_t kernels = *from++;
        *to++ = kernels;
        *first_chunk++ = kernels / 2;
        *second_chunk++ = kernels - kernels / 2;
        for (uint32_t k = 0; k < kernels; ++k, from += 2) {
          const uint32_t offset = from[0] * (uint32_t)sets[i]->slot_bytes;
          uint32_t** target = k < kernels / 2 ? &first_chunk : &second_chunk;
          *to++ = offset;
          *to++ = from[1];
          *(*target)++ = offset;
          *(*target)++ = from[1];
        }
      }
      sets[i]->pack(kKernels, tap_offsets, planes, packed);
      sets[i]->compute(kFilters, whole, packed, accumulators, 1, 1, requantization, &params[p],
                       i == 0 ? expected : actual);
      if (i == 0) continue;  /* the scalar variant: the expectation */
      CHECK(memcmp(actual, expected, sizeof(actual)) == 0,
            "%s compute != scalar at extreme sums and shifts", sets[i]->name);
      memset(actual, 0, sizeof(actual));
      sets[i]->compute(kFilters, chunks, packed, accumulators, 1, 0, requantization,
                       &params[p], actual);
      sets[i]->compute(kFilters, chunks + first_words, packed, accumulators, 0, 1,
                       requantization, &params[p], actual);
      CHECK(memcmp(actual, expected, sizeof(actual)) == 0,
            "%s compute in two chunks != scalar at extreme sums and shifts", sets[i]->name);
    }
  }
  free(accumulators);
  free(packed);
  free(planes);
}

static void check_validation(void) {
  uint16_t mask = 0x1FF;
  uint8_t run = 1, channel = 0;
  int8_t values[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  float scale = 0.5f;
  clicktrain_s8_compact_tensors t;
  memset(&t, 0, sizeof(t));
  t.structure.format_version = 1;
  t.structure.pattern_masks = &mask;
  t.structure.pattern_masks_count = 1;
  t.structure.pattern_run_lengths = &run;
  t.structure.run_lengths_rows = 1;
  t.structure.run_lengths_columns = 1;
  t.structure.run_lengths_element_size = 1;
  t.structure.kernel_input_channels = &channel;
  t.structure.kernel_input_channels_count = 1;
  t.structure.kernel_input_channels_element_size = 1;
  t.values = values;
  t.values_count = 9;
  t.filter_scales = &scale;
  t.filter_scales_count = 1;
  clicktrain_s8_layer layer;
  char error[256];
  CHECK(clicktrain_s8_layer_build(&t, 1, 1, 0, &layer, error, sizeof(error)) == 0, "%s", error);
  CHECK(clicktrain_s8_layer_requantize(&layer, 0.5f, 200, 0.5f, 0, CLICKTRAIN_ACTIVATION_NONE,
                                       error, sizeof(error)) != 0 &&
            strstr(error, "zero points") != NULL,
        "an input zero point of 200 is refused");
  CHECK(clicktrain_s8_layer_requantize(&layer, 1e30f, 0, 1e-30f, 0, CLICKTRAIN_ACTIVATION_NONE,
                                       error, sizeof(error)) != 0 &&
            strstr(error, "too large") != NULL,
        "a requantization scale beyond 2^30 is refused");
  CHECK(clicktrain_s8_layer_requantize(&layer, 0.0f, 0, 0.5f, 0, CLICKTRAIN_ACTIVATION_NONE,
                                       error, sizeof(error)) != 0 &&
            strstr(error, "scales must be finite and > 0") != NULL,
        "an input scale of 0 is refused");
  CHECK(clicktrain_s8_layer_requantize(&layer, 0.5f, 0, (float)INFINITY, 0,
                                       CLICKTRAIN_ACTIVATION_NONE, error, sizeof(error)) != 0 &&
            strstr(error, "scales must be finite and > 0") != NULL,
        "an infinite output scale is refused");
  clicktrain_s8_layer_release(&layer);
  t.values_count = 8;
  CHECK(clicktrain_s8_layer_build(&t, 1, 1, 0, &layer, error, sizeof(error)) != 0 &&
            strstr(error, "values") != NULL,
        "a missing value is refused");
  t.values_count = 9;
  scale = -1.0f;
  CHECK(clicktrain_s8_layer_build(&t, 1, 1, 0, &layer, error, sizeof(error)) != 0 &&
            strstr(error, "filter_scales[0]") != NULL,
        "a negative filter scale is refused");
}

int main(void) {
  check_quantization_arithmetic();
  check_validation();
  for (int trial = 0; trial < 40; ++trial) {
    check_layer(next_int(1, 12), next_int(1, 10), next_int(1, 3), next_int(1, 2),
                next_int(0, 1), next_int(3, 9), next_int(0, 1));
  }
  check_layer(300, 3, 1, 1, 1, 5, 1);  /* channel indices beyond 255 */
  /* ResNet-like shapes: several tiles per band, stride 2, many filters. */
  check_layer(64, 64, 1, 1, 1, 14, 0);
  check_layer(32, 48, 2, 1, 1, 17, 0);
  check_layer(40, 24, 2, 2, 0, 12, 1);
  /* Planes above 256 KB: several bands, each filling its planes from the
   * input rows below the previous band's. */
  check_layer(96, 8, 1, 1, 1, 60, 0);
  check_layer(96, 8, 2, 1, 1, 110, 0);
  check_requantization_extremes();
  {
    const clicktrain_s8_patconv_ukernels* sets[8];
    size_t count = clicktrain_s8_patconv_available_ukernels(sets, 8);
    printf("pattern_conv_s8_test: tiled variants checked:");
    for (size_t i = 0; i < count && i < 8; ++i) printf(" %s", sets[i]->name);
    printf("\n");
#if defined(__aarch64__)
    /* Every arm64 CPU has NEON: its variant must be offered (and so checked). */
    int has_neon = 0;
    for (size_t i = 0; i < count && i < 8; ++i) {
      if (strcmp(sets[i]->name, "neon") == 0) has_neon = 1;
    }
    CHECK(has_neon, "the neon variant is available on arm64");
#endif
  }
  if (failures != 0) {
    fprintf(stderr, "pattern_conv_s8_test: %d checks failed\n", failures);
    return 1;
  }
  printf("pattern_conv_s8_test: all checks passed (reference, every tiled variant)\n");
  return 0;
}
