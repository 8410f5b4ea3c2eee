/* Native test of the int8 pattern depthwise conv: the scalar reference
 * kernel against a dense int8 depthwise conv over the same taps, every row
 * micro-kernel variant (through the operator, serially and on 2 threads)
 * against the scalar reference, over strides, dilations, SAME/VALID
 * padding, channel counts that fill a group of 16 or not, every fused
 * activation, biases over the whole int32 range and every shift TFLite
 * allows; and the depthwise structure check. Bit-exactness against LiteRT's
 * reference DEPTHWISE_CONV_2D is tested end to end in
 * tests/tflite/test_int8_depthwise_pattern_conv.py. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clicktrain/pattern_dwconv_s8.h"
#include "op_options.h"
#include "pattern_dwconv_s8_operator.h"

static int failures = 0;

#define CHECK(condition, ...)                 \
  do {                                        \
    if (!(condition)) {                       \
      fprintf(stderr, "FAILED: " __VA_ARGS__); \
      fprintf(stderr, "\n");                  \
      ++failures;                             \
    }                                         \
  } while (0)

static uint32_t state = 2024u;
static uint32_t next_bits(void) {
  state = state * 1664525u + 1013904223u;
  return state;
}
static int next_int(int low, int high) {
  return low + (int)((next_bits() >> 8) % (uint32_t)(high - low + 1));
}

/* A random depthwise layer's tensors, as the exporter writes them. */
typedef struct test_layer {
  int channels;
  uint16_t masks[4];
  int patterns;
  uint8_t runs[4 * 1024];
  uint8_t kernel_channels[1024];
  int8_t values[9 * 1024];
  int8_t dense[1024][9];
  int32_t bias[1024];
  float scales[1024];
  size_t kernels, num_values;
} test_layer;

static void make_layer(test_layer* t, int channels, int extreme) {
  memset(t, 0, sizeof(*t));
  t->channels = channels;
  t->patterns = next_int(1, 4);
  for (int p = 0; p < t->patterns; ++p) t->masks[p] = (uint16_t)next_int(1, 511);
  for (int c = 0; c < channels; ++c) {
    if (next_int(0, 4) == 0) continue; /* a removed kernel */
    const int p = next_int(0, t->patterns - 1);
    t->runs[c * t->patterns + p] = 1;
    t->kernel_channels[t->kernels++] = (uint8_t)c;
    for (int position = 0; position < 9; ++position) {
      if (!((t->masks[p] >> position) & 1)) continue;
      const int8_t weight = (int8_t)next_int(-127, 127);
      t->values[t->num_values++] = weight;
      t->dense[c][position] = weight;
    }
  }
  for (int c = 0; c < channels; ++c) {
    /* Extreme: biases over the whole int32 range (sums wrap as TFLite's)
     * and filter scales giving every shift from -31 to 30. */
    t->bias[c] = extreme ? (int32_t)next_bits() : next_int(-5000, 5000);
    t->scales[c] = extreme ? ldexpf(1.0f + (float)next_int(0, 99) / 100.0f,
                                    next_int(-32, 28))
                           : 0.002f * (float)next_int(1, 20);
  }
}

static int build(const test_layer* t, clicktrain_s8_layer* layer, char* error,
                 size_t error_size) {
  clicktrain_s8_compact_tensors tensors;
  memset(&tensors, 0, sizeof(tensors));
  tensors.structure.pattern_masks = t->masks;
  tensors.structure.pattern_masks_count = (size_t)t->patterns;
  tensors.structure.pattern_run_lengths = t->runs;
  tensors.structure.run_lengths_rows = (size_t)t->channels;
  tensors.structure.run_lengths_columns = (size_t)t->patterns;
  tensors.structure.run_lengths_element_size = 1;
  tensors.structure.kernel_input_channels = t->kernel_channels;
  tensors.structure.kernel_input_channels_count = t->kernels;
  tensors.structure.kernel_input_channels_element_size = 1;
  tensors.values = t->values;
  tensors.values_count = t->num_values;
  tensors.bias = t->bias;
  tensors.bias_count = (size_t)t->channels;
  tensors.filter_scales = t->scales;
  tensors.filter_scales_count = (size_t)t->channels;
  tensors.structure.format_version = 1;
  if (clicktrain_s8_layer_build(&tensors, (size_t)t->channels,
                                (size_t)t->channels, 1, layer, error,
                                error_size) != 0) {
    return -1;
  }
  if (clicktrain_s8_dw_layer_check(layer, error, error_size) != 0) {
    clicktrain_s8_layer_release(layer);
    return -1;
  }
  return 0;
}

/* Every row micro-kernel through the operator, serially and on a pool of 2
 * threads, against the scalar reference's `expected` output. */
static void check_operators(const clicktrain_conv_geometry* g,
                            const clicktrain_s8_layer* layer,
                            const int8_t* input, const int8_t* expected,
                            size_t output_size) {
  const clicktrain_s8_patdwconv_ukernels* sets[4];
  size_t count = clicktrain_s8_patdwconv_available_ukernels(sets, 4);
  if (count > 4) count = 4;
  clicktrain_thread_pool* pool = clicktrain_thread_pool_create(2);
  int8_t* output = malloc(output_size + 1);
  for (size_t i = 0; i < count; ++i) {
    clicktrain_s8_patdwconv_operator op;
    CHECK(clicktrain_s8_patdwconv_operator_setup(&op, g, layer, sets[i], 2) == 0,
          "operator setup (%s)", sets[i]->name);
    for (int threaded = 0; threaded < 2; ++threaded) {
      memset(output, 0x55, output_size + 1);
      clicktrain_s8_patdwconv_operator_run(&op, input, output,
                                           threaded ? pool : NULL);
      CHECK(memcmp(output, expected, output_size) == 0 &&
                output[output_size] == 0x55,
            "%s%s != scalar reference: channels %d stride %d dilation %d pad "
            "%d,%d size %dx%d", sets[i]->name, threaded ? " (2 threads)" : "",
            g->input_channels, g->stride_h, g->dilation_h, g->padding_top,
            g->padding_left, g->input_height, g->input_width);
    }
    clicktrain_s8_patdwconv_operator_release(&op);
  }
  free(output);
  clicktrain_thread_pool_destroy(pool);
}

static void check_layer(int channels, int stride, int dilation, int same,
                        int size, int extreme) {
  static test_layer t;
  make_layer(&t, channels, extreme);
  clicktrain_s8_layer layer;
  char error[256];
  const int built = build(&t, &layer, error, sizeof(error));
  CHECK(built == 0, "layer build: %s", error);
  if (built != 0) return;
  const int input_zero_point = next_int(-128, 127);
  const int output_zero_point = next_int(-128, 127);
  const clicktrain_activation activation = (clicktrain_activation)next_int(0, 3);
  if (clicktrain_s8_layer_requantize(&layer, 0.05f, input_zero_point, 0.1f,
                                     output_zero_point, activation, error,
                                     sizeof(error)) != 0) {
    /* An extreme scale TFLite cannot requantize either (shift > 30). */
    CHECK(extreme, "requantize: %s", error);
    clicktrain_s8_layer_release(&layer);
    return;
  }
  clicktrain_op_options options;
  memset(&options, 0, sizeof(options));
  options.format_version = 1;
  options.input_channels = options.output_channels = channels;
  options.stride_h = options.stride_w = stride;
  options.dilation_h = options.dilation_w = dilation;
  options.padding = same ? CLICKTRAIN_PADDING_SAME : CLICKTRAIN_PADDING_VALID;
  options.activation = activation;
  clicktrain_conv_geometry g;
  if (clicktrain_compute_geometry(&options, 2, size, size + 1, channels, &g,
                                  error, sizeof(error)) != 0) {
    clicktrain_s8_layer_release(&layer);
    return; /* an input too small for VALID: nothing to compute */
  }
  const size_t input_size =
      (size_t)g.batch * g.input_height * g.input_width * channels;
  const size_t output_size =
      (size_t)g.batch * g.output_height * g.output_width * channels;
  int8_t* input = malloc(input_size);
  int8_t* output = malloc(output_size + 1);
  for (size_t i = 0; i < input_size; ++i) input[i] = (int8_t)next_int(-128, 127);
  clicktrain_s8_patdwconv_ukernel__scalar(&g, &layer.structure.weights,
                                          layer.values, &layer.requantization,
                                          input, output);
  const clicktrain_s8_requantization* q = &layer.requantization;
  size_t mismatches = 0;
  for (int b = 0; b < g.batch; ++b)
    for (int oy = 0; oy < g.output_height; ++oy)
      for (int ox = 0; ox < g.output_width; ++ox)
        for (int c = 0; c < channels; ++c) {
          int32_t acc = 0;
          for (int position = 0; position < 9; ++position) {
            const int y = oy * stride - g.padding_top + (position / 3) * dilation;
            const int x = ox * stride - g.padding_left + (position % 3) * dilation;
            if (y < 0 || y >= g.input_height || x < 0 || x >= g.input_width) continue;
            const int8_t in =
                input[(((size_t)b * g.input_height + y) * g.input_width + x) *
                          channels + c];
            acc += t.dense[c][position] * (in - input_zero_point);
          }
          const int32_t sum = (int32_t)((uint32_t)acc + (uint32_t)t.bias[c]);
          int32_t expected = (int32_t)(
              (uint32_t)clicktrain_multiply_by_quantized_multiplier(
                  sum, q->multiplier[c], q->shift[c]) +
              (uint32_t)output_zero_point);
          if (expected < q->output_min) expected = q->output_min;
          if (expected > q->output_max) expected = q->output_max;
          const size_t index =
              (((size_t)b * g.output_height + oy) * g.output_width + ox) *
                  channels + c;
          mismatches += output[index] != (int8_t)expected;
        }
  CHECK(mismatches == 0,
        "reference: %zu mismatches: channels %d stride %d dilation %d %s size %d",
        mismatches, channels, stride, dilation, same ? "SAME" : "VALID", size);
  check_operators(&g, &layer, input, output, output_size);
  clicktrain_s8_layer_release(&layer);
  free(input);
  free(output);
}

static void check_validation(void) {
  static test_layer t;
  clicktrain_s8_layer layer;
  char error[256];
  make_layer(&t, 8, 0);
  while (t.kernels < 2) make_layer(&t, 8, 0);
  t.kernel_channels[1] = t.kernel_channels[0];  /* not the filter's channel */
  CHECK(build(&t, &layer, error, sizeof(error)) != 0 &&
            strstr(error, "kernel_input_channels") != NULL,
        "a kernel on another channel is refused (%s)", error);
  /* Two kernels in one filter (the next filter then has none). */
  make_layer(&t, 8, 0);
  memset(t.runs, 0, sizeof(t.runs));
  t.patterns = 1;
  t.masks[0] = 0x1FF;
  t.kernels = 2;
  t.kernel_channels[0] = 0;
  t.kernel_channels[1] = 1;
  t.runs[0] = 2;
  t.num_values = 18;
  CHECK(build(&t, &layer, error, sizeof(error)) != 0 &&
            strstr(error, "at most 1") != NULL,
        "a filter of 2 kernels is refused (%s)", error);
}

int main(void) {
  const clicktrain_s8_patdwconv_ukernels* sets[4];
  const size_t variants = clicktrain_s8_patdwconv_available_ukernels(sets, 4);
  const int channel_counts[] = {1, 7, 16, 24, 33, 96, 144};
  for (size_t i = 0; i < sizeof(channel_counts) / sizeof(channel_counts[0]); ++i) {
    for (int stride = 1; stride <= 2; ++stride) {
      for (int dilation = 1; dilation <= 2; ++dilation) {
        for (int same = 0; same <= 1; ++same) {
          check_layer(channel_counts[i], stride, dilation, same, next_int(1, 9), 0);
          check_layer(channel_counts[i], stride, dilation, same, next_int(4, 9), 1);
        }
      }
    }
  }
  for (int round = 0; round < 40; ++round) {
    check_layer(next_int(1, 80), next_int(1, 3), next_int(1, 3), next_int(0, 1),
                next_int(1, 12), next_int(0, 1));
  }
  check_validation();
  if (failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("pattern_dwconv_s8_test: OK (%zu variants)\n", variants);
  return 0;
}
