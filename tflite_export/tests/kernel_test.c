/* Native unit test: every pattern-conv kernel variant against a dense direct
 * convolution, and the compact-weight validator against malformed weights.
 *
 * Build and run with `make test`. Exits non-zero on the first failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clicktrain/pattern_conv.h"
#include "compact_weights.h"
#include "op_options.h"
#include "pattern_conv_operator.h"
#include "thread_pool.h"

/* Every kernel set compiled in that this CPU runs (the scalar reference
 * first), each run through the op's driver serially and on 2 threads. */
static const clicktrain_kernel_set* kernel_sets[8];
static size_t num_kernel_sets = 0;
static clicktrain_thread_pool* two_threads = NULL;

static int failures = 0;

#define EXPECT(condition, ...)                         \
  do {                                                 \
    if (!(condition)) {                                \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                    \
      fprintf(stderr, "\n");                           \
      ++failures;                                      \
    }                                                  \
  } while (0)

static uint32_t rng_state = 12345;
static uint32_t next_random(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}
static float random_float(void) {
  return (float)(next_random() % 20001) / 10000.0f - 1.0f;
}

/* A random pattern-sparse layer: dense OHWI filter with zeros, and the same
 * layer in compact form (built the way the exporter builds it). */
typedef struct layer {
  int in_channels, out_channels, depthwise;
  float* dense; /* [out][3][3][in] (depthwise: in == 1 slot used, channel o) */
  float* bias;
  uint16_t masks[4];
  int num_patterns;
  uint16_t* runs;
  uint16_t* channels;
  float* values;
  size_t num_kernels, num_values;
  int* pattern_of; /* [out][per_filter], -1 for a removed kernel */
} layer;

static const uint16_t kPatterns[4] = {0x0BA, 0x1B0, 0x03A, 0x0D8};

/* make_layer's filter groups (not depthwise): with G > 1, filters
 * [g * G, (g + 1) * G) keep the same input channels with the same patterns,
 * as prune_pattern(filter_group=G) prunes, except filter 9, whose first
 * kernel differs from its group's. */
static int filter_group = 1;

static void make_layer(layer* l, int in_channels, int out_channels,
                       int depthwise) {
  memset(l, 0, sizeof(*l));
  l->in_channels = in_channels;
  l->out_channels = out_channels;
  l->depthwise = depthwise;
  l->num_patterns = 4;
  memcpy(l->masks, kPatterns, sizeof(kPatterns));
  const int per_filter = depthwise ? 1 : in_channels;
  l->dense = calloc((size_t)out_channels * 9 * in_channels, sizeof(float));
  l->bias = malloc(sizeof(float) * out_channels);
  l->runs = calloc((size_t)out_channels * 4, sizeof(uint16_t));
  l->channels = malloc(sizeof(uint16_t) * out_channels * per_filter + 2);
  l->values = malloc(sizeof(float) * out_channels * per_filter * 9 + 4);
  /* Pattern of each (o, i) kernel, -1 when removed. */
  int* pattern_of = malloc(sizeof(int) * out_channels * per_filter);
  const int group = depthwise ? 1 : filter_group;
  for (int o = 0; o < out_channels; ++o) {
    l->bias[o] = random_float();
    for (int j = 0; j < per_filter; ++j) {
      const int removed = (next_random() % 3 == 0) || (o / group == 1);
      pattern_of[o * per_filter + j] =
          o % group != 0 ? pattern_of[(o - o % group) * per_filter + j]
          : removed      ? -1
                         : (int)(next_random() % 4);
    }
  }
  if (group > 1 && out_channels > 9) {
    pattern_of[9 * per_filter] = pattern_of[9 * per_filter] < 0 ? 0 : -1;
  }
  for (int o = 0; o < out_channels; ++o) {
    for (int p = 0; p < 4; ++p) {
      for (int j = 0; j < per_filter; ++j) {
        if (pattern_of[o * per_filter + j] != p) continue;
        const int channel = depthwise ? o : j;
        l->runs[o * 4 + p]++;
        l->channels[l->num_kernels++] = (uint16_t)channel;
        for (int position = 0; position < 9; ++position) {
          if (!((kPatterns[p] >> position) & 1)) continue;
          const float w = random_float();
          l->values[l->num_values++] = w;
          l->dense[((size_t)o * 9 + position) * in_channels + channel] = w;
        }
      }
    }
  }
  l->pattern_of = pattern_of;
}

static void free_layer(layer* l) {
  free(l->dense);
  free(l->bias);
  free(l->runs);
  free(l->channels);
  free(l->values);
  free(l->pattern_of);
}

static clicktrain_compact_tensors compact_of(const layer* l) {
  clicktrain_compact_tensors t;
  memset(&t, 0, sizeof(t));
  t.format_version = 1;
  t.pattern_masks = l->masks;
  t.pattern_masks_count = (size_t)l->num_patterns;
  t.pattern_run_lengths = l->runs;
  t.run_lengths_rows = (size_t)l->out_channels;
  t.run_lengths_columns = (size_t)l->num_patterns;
  t.run_lengths_element_size = 2;
  t.kernel_input_channels = l->channels;
  t.kernel_input_channels_count = l->num_kernels;
  t.kernel_input_channels_element_size = 2;
  t.values = l->values;
  t.values_count = l->num_values;
  t.bias = l->bias;
  t.bias_count = (size_t)l->out_channels;
  return t;
}

static void dense_reference(const clicktrain_conv_geometry* g, const layer* l,
                            const float* input, float* output) {
  for (int n = 0; n < g->batch; ++n)
    for (int oy = 0; oy < g->output_height; ++oy)
      for (int ox = 0; ox < g->output_width; ++ox)
        for (int o = 0; o < g->output_channels; ++o) {
          double sum = l->bias[o];
          for (int ky = 0; ky < 3; ++ky)
            for (int kx = 0; kx < 3; ++kx) {
              const int y = oy * g->stride_h - g->padding_top + ky * g->dilation_h;
              const int x = ox * g->stride_w - g->padding_left + kx * g->dilation_w;
              if (y < 0 || y >= g->input_height || x < 0 || x >= g->input_width)
                continue;
              for (int i = 0; i < g->input_channels; ++i) {
                sum += (double)l->dense[((size_t)o * 9 + ky * 3 + kx) *
                                            g->input_channels + i] *
                       input[(((size_t)n * g->input_height + y) * g->input_width +
                              x) * g->input_channels + i];
              }
            }
          float value = (float)sum;
          if (value < g->output_min) value = g->output_min;
          if (value > g->output_max) value = g->output_max;
          output[(((size_t)n * g->output_height + oy) * g->output_width + ox) *
                     g->output_channels + o] = value;
        }
}

static void check_case(int batch, int height, int width, int in_channels,
                       int out_channels, int stride, int dilation,
                       clicktrain_padding padding,
                       clicktrain_activation activation, int depthwise) {
  layer l;
  make_layer(&l, in_channels, depthwise ? in_channels : out_channels,
             depthwise);
  clicktrain_op_options options;
  memset(&options, 0, sizeof(options));
  options.format_version = 1;
  options.input_channels = in_channels;
  options.output_channels = l.out_channels;
  options.stride_h = options.stride_w = stride;
  options.dilation_h = options.dilation_w = dilation;
  options.padding = padding;
  options.activation = activation;
  clicktrain_conv_geometry g;
  char error[256];
  EXPECT(clicktrain_compute_geometry(&options, batch, height, width,
                                     in_channels, &g, error,
                                     sizeof(error)) == 0, "%s", error);
  clicktrain_weight_storage storage;
  clicktrain_compact_tensors t = compact_of(&l);
  EXPECT(clicktrain_build_pattern_weights(&t, (size_t)in_channels,
                                          (size_t)l.out_channels, depthwise,
                                          &storage, error,
                                          sizeof(error)) == 0,
         "%s", error);
  const size_t in_size = (size_t)batch * height * width * in_channels;
  const size_t out_size =
      (size_t)batch * g.output_height * g.output_width * l.out_channels;
  float* input = malloc(sizeof(float) * in_size);
  float* expected = malloc(sizeof(float) * out_size);
  float* actual = malloc(sizeof(float) * out_size);
  for (size_t i = 0; i < in_size; ++i) input[i] = random_float();
  dense_reference(&g, &l, input, expected);
  for (size_t run = 0; run < 2 * num_kernel_sets; ++run) {
    const clicktrain_kernel_set* set = kernel_sets[run / 2];
    clicktrain_thread_pool* pool = run % 2 ? two_threads : NULL;
    memset(actual, 0xFF, sizeof(float) * out_size);
    clicktrain_patconv_operator op;
    EXPECT(clicktrain_patconv_operator_setup(&op, &g, &storage.weights,
                                             depthwise, set, 2) == 0,
           "operator setup failed");
    EXPECT(op.fast == (set->planar != NULL), "%s: fast path not taken",
           set->name);
    /* Group entries exactly when filter groups share their taps (random
     * filters over 3+ channels practically never do). */
    if (filter_group == 4 && in_channels >= 256) {
      EXPECT(op.chunks > 1, "%s: one chunk for %d channels", set->name,
             in_channels);
    }
    if (!depthwise && filter_group == 4 && l.out_channels >= 4) {
      EXPECT(op.group_entries > 0, "%s: no group entry for filter groups",
             set->name);
    } else if (!depthwise && in_channels >= 3) {
      EXPECT(op.group_entries == 0, "%s: %zu group entries without groups",
             set->name, op.group_entries);
    }
    clicktrain_patconv_operator_run(&op, input, actual, pool);
    clicktrain_patconv_operator_release(&op);
    /* Normwise: the largest error relative to the largest output. */
    double largest_error = 0.0, largest_output = 1e-30;
    for (size_t i = 0; i < out_size; ++i) {
      const double diff = fabs((double)actual[i] - expected[i]);
      if (!(diff <= largest_error)) largest_error = diff;
      if (fabs(expected[i]) > largest_output) largest_output = fabs(expected[i]);
    }
    const double worst = largest_error / largest_output;
    EXPECT(worst <= 1e-5,
           "%s %s batch=%d %dx%dx%d->%d stride=%d dilation=%d padding=%d "
           "activation=%d: max relative error %g",
           set->name, depthwise ? "depthwise" : "conv", batch, height,
           width, in_channels, l.out_channels, stride, dilation, padding,
           activation, worst);
  }
  free(input);
  free(expected);
  free(actual);
  clicktrain_free_pattern_weights(&storage);
  free_layer(&l);
}

/* Builds `l` as weights and a geometry (stride 1, SAME, no activation). */
static void prepare(const layer* l, int height, int width, int dilation,
                    clicktrain_weight_storage* storage,
                    clicktrain_conv_geometry* g) {
  clicktrain_op_options options;
  memset(&options, 0, sizeof(options));
  options.format_version = 1;
  options.input_channels = l->in_channels;
  options.output_channels = l->out_channels;
  options.stride_h = options.stride_w = 1;
  options.dilation_h = options.dilation_w = dilation;
  options.padding = CLICKTRAIN_PADDING_SAME;
  options.activation = CLICKTRAIN_ACTIVATION_NONE;
  char error[256];
  EXPECT(clicktrain_compute_geometry(&options, 1, height, width,
                                     l->in_channels, g, error,
                                     sizeof(error)) == 0, "%s", error);
  clicktrain_compact_tensors t = compact_of(l);
  EXPECT(clicktrain_build_pattern_weights(&t, (size_t)l->in_channels,
                                          (size_t)l->out_channels,
                                          l->depthwise, storage, error,
                                          sizeof(error)) == 0, "%s", error);
}

/* One operator run again and again, as an interpreter does: serially, on 2
 * threads (other band sizes), serially again, each time on a new input.
 * Buffers keep the zero rows of the band they last held; a band packed into
 * a buffer that held another band must not see that band's rows. */
static void check_reused_operator(int height, int width, int in_channels,
                                  int out_channels) {
  layer l;
  make_layer(&l, in_channels, out_channels, 0);
  clicktrain_weight_storage storage;
  clicktrain_conv_geometry g;
  prepare(&l, height, width, 1, &storage, &g);
  const size_t in_size = (size_t)height * width * in_channels;
  const size_t out_size =
      (size_t)g.output_height * g.output_width * out_channels;
  float* input = malloc(sizeof(float) * in_size);
  float* expected = malloc(sizeof(float) * out_size);
  float* actual = malloc(sizeof(float) * out_size);
  for (size_t s = 0; s < num_kernel_sets; ++s) {
    clicktrain_patconv_operator op;
    EXPECT(clicktrain_patconv_operator_setup(&op, &g, &storage.weights, 0,
                                             kernel_sets[s], 2) == 0,
           "operator setup failed");
    for (int run = 0; run < 4; ++run) {
      for (size_t i = 0; i < in_size; ++i) input[i] = random_float();
      dense_reference(&g, &l, input, expected);
      clicktrain_patconv_operator_run(&op, input, actual,
                                      run % 2 ? two_threads : NULL);
      size_t wrong = 0;
      for (size_t i = 0; i < out_size; ++i) {
        wrong += !(fabs(actual[i] - expected[i]) <= 1e-4 * (1 + fabs(expected[i])));
      }
      EXPECT(wrong == 0, "%s: reused %dx%dx%d->%d operator, run %d: %zu "
             "outputs wrong", kernel_sets[s]->name, height, width,
             in_channels, out_channels, run, wrong);
    }
    clicktrain_patconv_operator_release(&op);
  }
  free(input);
  free(expected);
  free(actual);
  clicktrain_free_pattern_weights(&storage);
  free_layer(&l);
}

/* TFLite's reference conv skips taps in the padding, so a NaN or infinite
 * weight next to the border must not reach the border outputs through
 * 0 * Inf. Every variant must give the scalar reference's outputs exactly
 * where they are non-finite, and to 1e-5 elsewhere. */
static void check_non_finite_weights(int depthwise) {
  layer l;
  make_layer(&l, 6, 6, depthwise);
  /* Every kept tap of the first kernel of every filter non-finite. */
  for (size_t v = 0; v < l.num_values; v += 8) {
    l.values[v] = (v / 8) % 2 ? NAN : INFINITY;
  }
  clicktrain_weight_storage storage;
  clicktrain_conv_geometry g;
  prepare(&l, 7, 9, 1, &storage, &g);
  const size_t in_size = (size_t)7 * 9 * 6;
  const size_t out_size = (size_t)7 * 9 * 6;
  float input[7 * 9 * 6], expected[7 * 9 * 6], actual[7 * 9 * 6];
  for (size_t i = 0; i < in_size; ++i) input[i] = random_float();
  (depthwise ? clicktrain_f32_patdwconv_ukernel__scalar
             : clicktrain_f32_patconv_ukernel__scalar)(&g, &storage.weights,
                                                      input, expected);
  size_t finite = 0;
  for (size_t i = 0; i < out_size; ++i) finite += isfinite(expected[i]) != 0;
  EXPECT(finite > 0 && finite < out_size,
         "the test layer should give both finite and non-finite outputs");
  for (size_t run = 0; run < 2 * num_kernel_sets; ++run) {
    const clicktrain_kernel_set* set = kernel_sets[run / 2];
    clicktrain_patconv_operator op;
    EXPECT(clicktrain_patconv_operator_setup(&op, &g, &storage.weights,
                                             depthwise, set, 2) == 0,
           "operator setup failed");
    clicktrain_patconv_operator_run(&op, input, actual,
                                    run % 2 ? two_threads : NULL);
    clicktrain_patconv_operator_release(&op);
    size_t mismatches = 0;
    for (size_t i = 0; i < out_size; ++i) {
      if (isfinite(expected[i])) {
        mismatches += !(fabs(actual[i] - expected[i]) <= 1e-5);
      } else if (isnan(expected[i])) {
        mismatches += !isnan(actual[i]);
      } else {
        mismatches += actual[i] != expected[i];
      }
    }
    EXPECT(mismatches == 0,
           "%s %s: %zu outputs differ from the reference with non-finite "
           "weights", set->name, depthwise ? "depthwise" : "conv", mismatches);
  }
  clicktrain_free_pattern_weights(&storage);
  free_layer(&l);
}

/* A tiny input with a huge dilation (a crafted file) must not make setup
 * allocate planes for the dilation: scratch stays within the documented
 * bound, and the result still matches a dense convolution. */
static void check_scratch_bound(void) {
  layer l;
  make_layer(&l, 4000, 2, 0);
  clicktrain_weight_storage storage;
  clicktrain_conv_geometry g;
  prepare(&l, 1, 1, 64, &storage, &g);
  float* input = malloc(sizeof(float) * 4000);
  for (int i = 0; i < 4000; ++i) input[i] = random_float();
  float expected[2], actual[2];
  dense_reference(&g, &l, input, expected);
  const size_t bound_bytes =
      sizeof(float) * (4 * (4000 + 2) + CLICKTRAIN_PATCONV_FIXED_SCRATCH_FLOATS);
  for (size_t s = 0; s < num_kernel_sets; ++s) {
    clicktrain_patconv_operator op;
    EXPECT(clicktrain_patconv_operator_setup(&op, &g, &storage.weights, 0,
                                             kernel_sets[s], 2) == 0,
           "operator setup failed");
    EXPECT(op.scratch_bytes <= bound_bytes,
           "%s: %zu bytes of scratch for a 1x1 input, more than %zu",
           kernel_sets[s]->name, op.scratch_bytes, bound_bytes);
    clicktrain_patconv_operator_run(&op, input, actual, two_threads);
    clicktrain_patconv_operator_release(&op);
    for (int o = 0; o < 2; ++o) {
      EXPECT(fabs(actual[o] - expected[o]) <= 1e-4 * (1 + fabs(expected[o])),
             "%s: huge dilation output %d is %g, expected %g",
             kernel_sets[s]->name, o, actual[o], expected[o]);
    }
  }
  /* An ordinary layer takes the fast path within the same bound. */
  clicktrain_free_pattern_weights(&storage);
  free_layer(&l);
  make_layer(&l, 64, 64, 0);
  prepare(&l, 56, 56, 1, &storage, &g);
  for (size_t s = 0; s < num_kernel_sets; ++s) {
    clicktrain_patconv_operator op;
    EXPECT(clicktrain_patconv_operator_setup(&op, &g, &storage.weights, 0,
                                             kernel_sets[s], 2) == 0,
           "operator setup failed");
    EXPECT(op.fast, "%s: a 56x56x64 layer missed the fast path",
           kernel_sets[s]->name);
    EXPECT(op.scratch_bytes <= sizeof(float) * 56 * 56 * 64,
           "%s: %zu bytes of scratch for a 56x56x64 layer",
           kernel_sets[s]->name, op.scratch_bytes);
    clicktrain_patconv_operator_release(&op);
  }
  clicktrain_free_pattern_weights(&storage);
  free_layer(&l);
  free(input);
}

static void expect_rejected(const clicktrain_compact_tensors* t, size_t in,
                            size_t out, int depthwise, const char* what) {
  clicktrain_weight_storage storage;
  char error[256] = "";
  const int status = clicktrain_build_pattern_weights(t, in, out, depthwise,
                                                      &storage, error,
                                                      sizeof(error));
  EXPECT(status != 0, "validator accepted %s", what);
  EXPECT(storage.memory == NULL, "validator kept memory for %s", what);
  EXPECT(error[0] != '\0', "validator gave no message for %s", what);
}

static void check_validation(void) {
  layer l;
  make_layer(&l, 5, 4, 0);
  clicktrain_compact_tensors t = compact_of(&l);
  clicktrain_compact_tensors bad;

  bad = t; bad.kernel_input_channels_count -= 1;
  expect_rejected(&bad, 5, 4, 0, "a short kernel_input_channels");
  bad = t; bad.values_count += 1;
  expect_rejected(&bad, 5, 4, 0, "a long values tensor");
  bad = t; bad.run_lengths_rows = 3;
  expect_rejected(&bad, 5, 4, 0, "run lengths of the wrong shape");
  bad = t; bad.kernel_input_channels_element_size = 4;
  expect_rejected(&bad, 5, 4, 0, "32-bit kernel_input_channels");
  bad = t; bad.bias_count = 2;
  expect_rejected(&bad, 5, 4, 0, "a short bias");
  bad = t; bad.pattern_masks_count = 0;
  expect_rejected(&bad, 5, 4, 0, "an empty pattern table");
  expect_rejected(&t, 0, 4, 0, "zero input channels");

  uint16_t masks[4];
  memcpy(masks, l.masks, sizeof(masks));
  bad = t; bad.pattern_masks = masks;
  masks[2] = 0;
  expect_rejected(&bad, 5, 4, 0, "an empty pattern");
  masks[2] = 512;
  expect_rejected(&bad, 5, 4, 0, "a pattern with a tenth position");

  uint16_t* channels = malloc(sizeof(uint16_t) * l.num_kernels);
  memcpy(channels, l.channels, sizeof(uint16_t) * l.num_kernels);
  bad = t; bad.kernel_input_channels = channels;
  channels[l.num_kernels - 1] = 5;
  expect_rejected(&bad, 5, 4, 0, "an input channel == input_channels");
  channels[0] = 0xFFFF;
  expect_rejected(&bad, 5, 4, 0, "input channel 65535");
  free(channels);

  uint16_t* runs = malloc(sizeof(uint16_t) * 16);
  memcpy(runs, l.runs, sizeof(uint16_t) * 16);
  bad = t; bad.pattern_run_lengths = runs;
  runs[0] = 6;
  expect_rejected(&bad, 5, 4, 0, "a filter with more kernels than inputs");
  runs[0] = 0xFFFF;
  expect_rejected(&bad, 5, 4, 0, "run length 65535");
  free(runs);
  free_layer(&l);

  make_layer(&l, 6, 6, 1);
  t = compact_of(&l);
  expect_rejected(&t, 6, 5, 1, "depthwise with in != out channels");
  channels = malloc(sizeof(uint16_t) * l.num_kernels);
  memcpy(channels, l.channels, sizeof(uint16_t) * l.num_kernels);
  bad = t; bad.kernel_input_channels = channels;
  channels[0] = (uint16_t)((channels[0] + 1) % 6);
  expect_rejected(&bad, 6, 6, 1, "a depthwise kernel reading another channel");
  free(channels);
  free_layer(&l);
}

/* ------------------------------------------------------------------------
 * Compact format version 2: the exporter's encoding, written here as
 * pattern_conv.h specifies it, expands to the same memory as version 1. */

typedef struct encoded_layer {
  uint8_t* index;
  size_t index_count;
  size_t stream_bits;
  float* values; /* pair order */
} encoded_layer;

static void put_bits(encoded_layer* e, uint64_t value, unsigned count) {
  for (unsigned b = 0; b < count; ++b, ++e->stream_bits) {
    if ((value >> b) & 1u) {
      e->index[1 + e->stream_bits / 8] |= (uint8_t)(1u << (e->stream_bits % 8));
    }
  }
}

static void put_gap(encoded_layer* e, uint64_t gap, unsigned gap_bits) {
  for (uint64_t q = gap >> gap_bits; q > 0; --q) put_bits(e, 1, 1);
  put_bits(e, 0, 1);
  put_bits(e, gap, gap_bits);
}

static encoded_layer encode_version2(const layer* l, unsigned gap_bits) {
  const size_t per_filter = l->depthwise ? 1 : (size_t)l->in_channels;
  const size_t pairs = (size_t)l->out_channels * per_filter;
  unsigned id_bits = 0;
  while ((1u << id_bits) < (unsigned)l->num_patterns) ++id_bits;
  encoded_layer e;
  e.stream_bits = 0;
  e.index = calloc(2 + (pairs + (l->num_kernels + 1) * (gap_bits + 1 + id_bits)) / 8,
                   1);
  e.index[0] = (uint8_t)gap_bits;
  e.values = malloc(sizeof(float) * (l->num_values + 1));
  size_t value = 0, previous_end = 0;
  for (size_t pair = 0; pair < pairs; ++pair) {
    const int p = l->pattern_of[pair];
    if (p < 0) continue;
    put_gap(&e, pair - previous_end, gap_bits);
    put_bits(&e, (uint64_t)p, id_bits);
    previous_end = pair + 1;
    const size_t o = pair / per_filter;
    const size_t channel = l->depthwise ? o : pair % per_filter;
    for (int position = 0; position < 9; ++position) {
      if ((l->masks[p] >> position) & 1u) {
        e.values[value++] =
            l->dense[(o * 9 + (size_t)position) * (size_t)l->in_channels + channel];
      }
    }
  }
  put_gap(&e, pairs - previous_end, gap_bits);
  e.index_count = 1 + (e.stream_bits + 7) / 8;
  return e;
}

static clicktrain_compact_tensors version2_of(const layer* l,
                                              const encoded_layer* e) {
  clicktrain_compact_tensors t;
  memset(&t, 0, sizeof(t));
  t.format_version = 2;
  t.pattern_masks = l->masks;
  t.pattern_masks_count = (size_t)l->num_patterns;
  t.kernel_index = e->index;
  t.kernel_index_count = e->index_count;
  t.values = e->values;
  t.values_count = l->num_values;
  t.bias = l->bias;
  t.bias_count = (size_t)l->out_channels;
  return t;
}

static int same_weights(const clicktrain_pattern_weights* a,
                        const clicktrain_pattern_weights* b) {
  const size_t o = a->output_channels;
  return a->input_channels == b->input_channels && o == b->output_channels &&
         a->num_patterns == b->num_patterns &&
         a->num_kernels == b->num_kernels && a->num_values == b->num_values &&
         !memcmp(a->pattern_masks, b->pattern_masks, 2 * a->num_patterns) &&
         !memcmp(a->pattern_run_lengths, b->pattern_run_lengths,
                 2 * o * a->num_patterns) &&
         !memcmp(a->kernel_input_channels, b->kernel_input_channels,
                 2 * (size_t)a->num_kernels) &&
         !memcmp(a->values, b->values, 4 * (size_t)a->num_values) &&
         !memcmp(a->bias, b->bias, 4 * o) &&
         !memcmp(a->filter_kernel_start, b->filter_kernel_start, 4 * (o + 1)) &&
         !memcmp(a->filter_value_start, b->filter_value_start, 4 * (o + 1));
}

static void check_version2_expands_as_version1(int in, int out, int depthwise,
                                               unsigned gap_bits) {
  layer l;
  make_layer(&l, in, out, depthwise);
  encoded_layer e = encode_version2(&l, gap_bits);
  clicktrain_compact_tensors v1 = compact_of(&l);
  clicktrain_compact_tensors v2 = version2_of(&l, &e);
  clicktrain_weight_storage a, b;
  char error[256];
  EXPECT(clicktrain_build_pattern_weights(&v1, (size_t)in, (size_t)out,
                                          depthwise, &a, error,
                                          sizeof(error)) == 0, "%s", error);
  EXPECT(clicktrain_build_pattern_weights(&v2, (size_t)in, (size_t)out,
                                          depthwise, &b, error,
                                          sizeof(error)) == 0,
         "version 2, %dx%d depthwise=%d gap_bits=%u: %s", in, out, depthwise,
         gap_bits, error);
  if (a.memory != NULL && b.memory != NULL) {
    EXPECT(same_weights(&a.weights, &b.weights),
           "version 2 of a %dx%d layer (depthwise=%d, gap_bits=%u) expands "
           "differently from version 1", in, out, depthwise, gap_bits);
  }
  EXPECT(clicktrain_pattern_weights_bytes(&v2, (size_t)out) >=
             clicktrain_pattern_weights_bytes(&v1, (size_t)out),
         "version 2's memory bound is below what it allocates");
  clicktrain_free_pattern_weights(&a);
  clicktrain_free_pattern_weights(&b);
  free(e.index);
  free(e.values);
  free_layer(&l);
}

static void check_version2_validation(void) {
  layer l;
  make_layer(&l, 7, 6, 0);
  encoded_layer e = encode_version2(&l, 1);
  clicktrain_compact_tensors t = version2_of(&l, &e);
  clicktrain_compact_tensors bad;
  uint8_t* index = malloc(e.index_count + 2);

  bad = t; bad.format_version = 3;
  expect_rejected(&bad, 7, 6, 0, "format version 3");
  bad = t; bad.kernel_index_count = 0;
  expect_rejected(&bad, 7, 6, 0, "an empty kernel_index");
  bad = t; bad.kernel_index_count -= 1;
  expect_rejected(&bad, 7, 6, 0, "a truncated kernel_index");
  memcpy(index, e.index, e.index_count);
  index[e.index_count] = 0;
  bad = t; bad.kernel_index = index; bad.kernel_index_count += 1;
  expect_rejected(&bad, 7, 6, 0, "a byte after the stream");
  bad = t; bad.values_count -= 1;
  expect_rejected(&bad, 7, 6, 0, "a short values tensor");
  bad = t; bad.values_count += 1;
  expect_rejected(&bad, 7, 6, 0, "a long values tensor");
  expect_rejected(&t, 7, 5, 0, "a stream running past the layer's pairs");
  expect_rejected(&t, 7, 7, 0, "a stream ending before the layer's pairs");
  bad = t; bad.pattern_masks_count = 3; /* id 3 stays 2 bits, >= 3 */
  expect_rejected(&bad, 7, 6, 0, "a pattern id >= num_patterns");

  memcpy(index, e.index, e.index_count);
  index[0] = CLICKTRAIN_MAX_GAP_BITS + 1;
  bad = t; bad.kernel_index = index;
  expect_rejected(&bad, 7, 6, 0, "gap_bits 32");
  if (e.stream_bits % 8 != 0) {
    memcpy(index, e.index, e.index_count);
    index[e.index_count - 1] |= 0x80;
    expect_rejected(&bad, 7, 6, 0, "a padding bit set");
  }
  memset(index + 1, 0xFF, e.index_count - 1);
  index[0] = 0;
  expect_rejected(&bad, 7, 6, 0, "a stream of one bits");
  memset(index + 1, 0x00, e.index_count - 1);
  expect_rejected(&bad, 7, 6, 0, "a stream of zero bits");
  free(index);
  free(e.index);
  free(e.values);
  free_layer(&l);

  /* A depthwise stream reading more pairs than channels. */
  make_layer(&l, 6, 6, 1);
  e = encode_version2(&l, 0);
  t = version2_of(&l, &e);
  expect_rejected(&t, 5, 5, 1, "a depthwise stream of 6 pairs for 5 channels");
  free(e.index);
  free(e.values);
  free_layer(&l);
}

static void check_options(void) {
  clicktrain_op_options options;
  char error[256];
  const unsigned char garbage[] = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT(clicktrain_parse_op_options(garbage, sizeof(garbage), &options, error,
                                     sizeof(error)) != 0,
         "garbage options were accepted");
  EXPECT(clicktrain_parse_op_options(NULL, 0, &options, error,
                                     sizeof(error)) != 0,
         "empty options were accepted");
}

int main(void) {
  num_kernel_sets = clicktrain_available_kernels(kernel_sets, 8);
  two_threads = clicktrain_thread_pool_create(2);
  EXPECT(two_threads != NULL, "could not start a thread pool");
  printf("kernel_test: kernel sets:");
  for (size_t i = 0; i < num_kernel_sets; ++i) printf(" %s", kernel_sets[i]->name);
  printf("\n");
  const int channel_counts[][2] = {{3, 13}, {13, 37}, {37, 3}, {16, 16}};
  for (size_t c = 0; c < sizeof(channel_counts) / sizeof(channel_counts[0]);
       ++c) {
    for (int stride = 1; stride <= 2; ++stride) {
      for (int padding = 0; padding <= 1; ++padding) {
        check_case(1 + (int)c % 2, 9, 7, channel_counts[c][0],
                   channel_counts[c][1], stride, 1,
                   (clicktrain_padding)padding, CLICKTRAIN_ACTIVATION_NONE, 0);
        check_case(2, 8, 11, channel_counts[c][0], 0, stride, 1 + padding,
                   (clicktrain_padding)padding, CLICKTRAIN_ACTIVATION_RELU6,
                   1);
      }
    }
    check_case(1, 10, 10, channel_counts[c][0], channel_counts[c][1], 1, 2,
               CLICKTRAIN_PADDING_SAME, CLICKTRAIN_ACTIVATION_RELU, 0);
  }
  /* Shapes that exercise every register-tile remainder, strides/dilations
   * up to 3, odd channel counts, and layer sizes like the benchmarks. */
  check_case(1, 7, 7, 32, 40, 1, 1, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  check_case(1, 14, 14, 24, 19, 2, 1, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_RELU, 0);
  check_case(1, 23, 17, 5, 7, 3, 2, CLICKTRAIN_PADDING_VALID,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  check_case(1, 19, 21, 9, 9, 1, 3, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  check_case(2, 28, 28, 33, 18, 1, 1, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_RELU6, 0);
  check_case(1, 31, 29, 20, 0, 2, 2, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 1);
  /* 8 buffer rows of 32 columns: 1 KB sub-planes, padded by a cache line. */
  check_case(1, 6, 32, 8, 12, 1, 1, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  /* AVX-512 row alignment: 56 columns padded to 64; 40 and 24 columns read
   * twins shifted by 8 floats for odd rows (7x7 above too), also at
   * dilation 2 and stride 2. */
  check_case(1, 5, 56, 6, 10, 1, 1, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_RELU, 0);
  check_case(1, 6, 40, 7, 9, 1, 2, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  check_case(2, 9, 47, 5, 6, 2, 1, CLICKTRAIN_PADDING_VALID,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  /* Strided layers whose kernel columns read an earlier column's sub-plane
   * shifted by whole columns (kx 2 from kx 0 at stride 2; kx 1 and 2 from
   * kx 0 at stride 2, dilation 2; kx 2 from kx 0 shifted by 3 at dilation
   * 3), with padding on the left (odd widths), and the shapes that pack
   * their own sub-planes instead: no padding column to shift into (16
   * output columns), a shift past the padding columns, VALID padding whose
   * last column the shifted read would miss. */
  check_case(1, 12, 12, 9, 10, 2, 2, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  check_case(1, 9, 9, 7, 9, 2, 3, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  check_case(2, 7, 29, 6, 5, 2, 1, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_RELU, 0);
  check_case(1, 6, 32, 5, 6, 2, 1, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  check_case(1, 13, 13, 4, 7, 2, 3, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  check_case(1, 9, 13, 5, 6, 2, 1, CLICKTRAIN_PADDING_VALID,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  /* Filter groups of 4: group entries beside single filters (tails, the
   * broken group), an all-removed group (filters 4-7), several chunks,
   * every group register-tile remainder, strides, dilations, and the
   * 8-float rows (no padding to 64, no twins) of grouped layers. */
  filter_group = 4;
  check_case(1, 9, 7, 13, 37, 1, 1, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  check_case(2, 8, 11, 16, 16, 2, 1, CLICKTRAIN_PADDING_VALID,
             CLICKTRAIN_ACTIVATION_RELU6, 0);
  check_case(1, 7, 7, 32, 40, 1, 1, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_RELU, 0);
  check_case(1, 14, 14, 24, 20, 2, 1, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  check_case(1, 10, 10, 5, 12, 1, 2, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  check_case(1, 5, 56, 6, 8, 1, 1, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  check_case(1, 6, 40, 7, 12, 1, 2, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_RELU, 0);
  check_case(2, 28, 28, 96, 64, 1, 1, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  check_case(1, 28, 28, 16, 16, 2, 1, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  check_case(1, 11, 21, 12, 8, 2, 2, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_RELU, 0);
  check_case(1, 9, 32, 8, 8, 2, 1, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_NONE, 0);
  /* Several chunks: filter 9's group runs as single filters in the chunk
   * holding channel 0 and as a group entry in the others. */
  check_case(1, 14, 14, 600, 12, 1, 1, CLICKTRAIN_PADDING_SAME,
             CLICKTRAIN_ACTIVATION_RELU, 0);
  filter_group = 1;
  check_reused_operator(56, 56, 64, 64);
  check_reused_operator(7, 7, 512, 40);
  check_non_finite_weights(0);
  check_non_finite_weights(1);
  check_scratch_bound();
  check_validation();
  const int version2_shapes[][3] = {{13, 37, 0}, {37, 3, 0}, {1, 1, 0},
                                    {64, 9, 0}, {16, 16, 1}, {5, 5, 1}};
  for (size_t c = 0; c < sizeof(version2_shapes) / sizeof(version2_shapes[0]);
       ++c) {
    for (unsigned gap_bits = 0; gap_bits <= 5; gap_bits += 1 + gap_bits) {
      check_version2_expands_as_version1(version2_shapes[c][0],
                                         version2_shapes[c][1],
                                         version2_shapes[c][2], gap_bits);
    }
  }
  check_version2_validation();
  check_options();
  clicktrain_thread_pool_destroy(two_threads);
  if (failures != 0) {
    fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  printf("kernel_test: all checks passed (kernels: %s)\n",
         clicktrain_select_kernels()->name);
  return 0;
}
