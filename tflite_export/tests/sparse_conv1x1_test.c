/* Native unit test of the sparse 1x1 conv: every micro-kernel variant, run
 * through the operator serially and on 2 threads, in each of its modes
 * (SpMM, block, few-pixel), against a dense NHWC convolution in double
 * precision; each variant's transpose against an element copy; and the
 * weight validator against malformed tensors.
 *
 * Build and run with `make test`. Exits non-zero on any failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clicktrain/sparse_conv1x1.h"
#include "sparse_conv1x1_operator.h"
#include "sparse_conv1x1_weights.h"
#include "thread_pool.h"

static const clicktrain_spconv1x1_ukernels* variants[8];
static size_t num_variants = 0;
static clicktrain_thread_pool* two_threads = NULL;
static int failures = 0;

#define EXPECT(condition, ...)                              \
  do {                                                      \
    if (!(condition)) {                                     \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);  \
      fprintf(stderr, __VA_ARGS__);                         \
      fprintf(stderr, "\n");                                \
      ++failures;                                           \
    }                                                       \
  } while (0)

static uint32_t rng_state = 2024;
static uint32_t next_random(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}
static float random_float(void) {
  return (float)(next_random() % 20001) / 10000.0f - 1.0f;
}

/* A random sparse layer: the dense [out][in] matrix and its compact form,
 * encoded the way the exporter encodes it. Row 1 is left empty. With
 * `block` > 0, each run of `block` output rows keeps the same input
 * channels (block-pruned; the operator's block mode) and the first run is
 * left empty instead. */
typedef struct layer {
  int in_channels, out_channels;
  float* dense;
  float* bias;
  uint8_t* mask;
  float* values;
  size_t num_values;
} layer;

static void make_layer(layer* l, int in_channels, int out_channels,
                       int percent_kept, int block) {
  memset(l, 0, sizeof(*l));
  l->in_channels = in_channels;
  l->out_channels = out_channels;
  const size_t row_bytes = ((size_t)in_channels + 7) / 8;
  l->dense = calloc((size_t)out_channels * in_channels, sizeof(float));
  l->bias = malloc(sizeof(float) * out_channels);
  l->mask = calloc((size_t)out_channels * row_bytes, 1);
  l->values = malloc(sizeof(float) * ((size_t)out_channels * in_channels + 1));
  uint8_t* run_keeps = calloc((size_t)in_channels + 1, 1);
  for (int o = 0; o < out_channels; ++o) {
    l->bias[o] = random_float();
    if (block > 0 && o % block == 0) {
      for (int i = 0; i < in_channels; ++i) {
        run_keeps[i] = o > 0 && (int)(next_random() % 100) < percent_kept;
      }
    }
    for (int i = 0; i < in_channels; ++i) {
      if (block > 0 ? !run_keeps[i]
                    : o == 1 || (int)(next_random() % 100) >= percent_kept) {
        continue;
      }
      const float w = random_float();
      l->dense[(size_t)o * in_channels + i] = w;
      l->mask[o * row_bytes + i / 8] |= (uint8_t)(1u << (i % 8));
      l->values[l->num_values++] = w;
    }
  }
  free(run_keeps);
}

static void free_layer(layer* l) {
  free(l->dense);
  free(l->bias);
  free(l->mask);
  free(l->values);
}

static clicktrain_spconv1x1_tensors tensors_of(const layer* l) {
  clicktrain_spconv1x1_tensors t;
  t.nonzero_mask = l->mask;
  t.mask_rows = (size_t)l->out_channels;
  t.mask_columns = ((size_t)l->in_channels + 7) / 8;
  t.values = l->values;
  t.values_count = l->num_values;
  t.bias = l->bias;
  t.bias_count = (size_t)l->out_channels;
  return t;
}

static void dense_reference(const clicktrain_spconv1x1_geometry* g,
                            const layer* l, const float* input,
                            float* output) {
  for (int n = 0; n < g->batch; ++n)
    for (int y = 0; y < g->output_height; ++y)
      for (int x = 0; x < g->output_width; ++x) {
        const float* pixel =
            input + (((size_t)n * g->input_height + (size_t)y * g->stride_h) *
                         g->input_width +
                     (size_t)x * g->stride_w) * g->input_channels;
        float* out = output + (((size_t)n * g->output_height + y) *
                                   g->output_width + x) * g->output_channels;
        for (int o = 0; o < g->output_channels; ++o) {
          double sum = l->bias[o];
          for (int i = 0; i < g->input_channels; ++i) {
            sum += (double)l->dense[(size_t)o * g->input_channels + i] * pixel[i];
          }
          float value = (float)sum;
          if (value < g->output_min) value = g->output_min;
          if (value > g->output_max) value = g->output_max;
          out[o] = value;
        }
      }
}

static void check_layer(int batch, int height, int width, int in_channels,
                        int out_channels, int stride_h, int stride_w,
                        int percent_kept, float output_min, float output_max,
                        int block) {
  layer l;
  make_layer(&l, in_channels, out_channels, percent_kept, block);
  char error[256] = "";
  clicktrain_spconv1x1_geometry g;
  EXPECT(clicktrain_spconv1x1_compute_geometry(
             batch, height, width, in_channels, out_channels, stride_h,
             stride_w, output_min, output_max, &g, error, sizeof(error)) == 0,
         "%s", error);
  EXPECT(g.output_height == (height + stride_h - 1) / stride_h &&
             g.output_width == (width + stride_w - 1) / stride_w,
         "output size %dx%d for %dx%d at strides %d, %d", g.output_height,
         g.output_width, height, width, stride_h, stride_w);
  clicktrain_spconv1x1_tensors t = tensors_of(&l);
  clicktrain_spconv1x1_weight_storage storage;
  EXPECT(clicktrain_build_spconv1x1_weights(&t, (size_t)in_channels,
                                            (size_t)out_channels, &storage,
                                            error, sizeof(error)) == 0,
         "%s", error);
  const size_t in_size = (size_t)batch * height * width * in_channels;
  const size_t out_size =
      (size_t)batch * g.output_height * g.output_width * out_channels;
  float* input = malloc(sizeof(float) * (in_size + 1));
  float* expected = malloc(sizeof(float) * (out_size + 1));
  float* actual = malloc(sizeof(float) * (out_size + 1));
  for (size_t i = 0; i < in_size; ++i) input[i] = random_float();
  dense_reference(&g, &l, input, expected);
  /* Each layer runs with the variant's few-pixel limit (the delegate's),
   * and forced into the SpMM (limit 0) and into the few-pixel mode (any
   * pixel count). */
  const size_t pixels = (size_t)batch * g.output_height * g.output_width;
  for (size_t run = 0; run < 6 * num_variants; ++run) {
    const clicktrain_spconv1x1_ukernels* ukernels = variants[run / 6];
    clicktrain_thread_pool* pool = run % 2 ? two_threads : NULL;
    const size_t limits[3] = {ukernels->few_pixels, 0, SIZE_MAX};
    const size_t limit = limits[run / 2 % 3];
    memset(actual, 0xFF, sizeof(float) * (out_size + 1));
    clicktrain_spconv1x1_operator op;
    EXPECT(clicktrain_spconv1x1_operator_setup(&op, &g, &storage.weights,
                                               ukernels, 2, limit) == 0,
           "%s: operator setup failed", ukernels->name);
    const int few_pixel_mode = limit > 0 && pixels <= limit;
    EXPECT(op.few_pixel_mode == few_pixel_mode,
           "%s: few-pixel mode %d, expected %d (%zu pixels, limit %zu)",
           ukernels->name, op.few_pixel_mode, few_pixel_mode, pixels, limit);
    /* The delegate's budget check relies on this being exact. */
    EXPECT(!few_pixel_mode || op.memory_bytes == clicktrain_spconv1x1_few_pixel_bytes(&g, limit),
           "%s: few-pixel mode holds %zu bytes, few_pixel_bytes says %zu",
           ukernels->name, op.memory_bytes, clicktrain_spconv1x1_few_pixel_bytes(&g, limit));
    /* Runs of 16 (or 32) rows sharing their channels take the block mode. */
    const int block_mode = !few_pixel_mode && block > 0 &&
                           block % CLICKTRAIN_SPCONV1X1_BLOCK == 0 &&
                           out_channels % CLICKTRAIN_SPCONV1X1_BLOCK == 0;
    EXPECT(op.block_mode == block_mode, "%s: block mode %d, expected %d (block %d)",
           ukernels->name, op.block_mode, block_mode, block);
    clicktrain_spconv1x1_operator_run(&op, input, actual, pool);
    clicktrain_spconv1x1_operator_release(&op);
    double largest_error = 0.0, largest_output = 1e-30;
    for (size_t i = 0; i < out_size; ++i) {
      const double diff = fabs((double)actual[i] - expected[i]);
      if (!(diff <= largest_error)) largest_error = diff;
      if (fabs(expected[i]) > largest_output) largest_output = fabs(expected[i]);
    }
    uint32_t guard;
    memcpy(&guard, &actual[out_size], sizeof(guard));
    EXPECT(guard == 0xFFFFFFFFu, "%s wrote past the output", ukernels->name);
    EXPECT(largest_error / largest_output <= 1e-5,
           "%s threads=%d batch=%d %dx%dx%d->%d strides=%d,%d kept=%d%% "
           "block=%d clamp=[%g, %g] few-pixel=%d: max relative error %g",
           ukernels->name, pool ? 2 : 1, batch, height, width, in_channels,
           out_channels, stride_h, stride_w, percent_kept, block, output_min,
           output_max, few_pixel_mode, largest_error / largest_output);
  }
  free(input);
  free(expected);
  free(actual);
  clicktrain_free_spconv1x1_weights(&storage);
  free_layer(&l);
}

/* The few-pixel mode sums every weight, pruned ones as zeros, as TFLite's
 * dense conv does: a NaN or infinite input makes NaN of every output of its
 * pixel (0 * Inf), and a NaN kept weight of its output channel. Every
 * variant must give NaN exactly where the dense reference does, through
 * the clamp, and the reference's values elsewhere. */
static void check_non_finite_few_pixels(int batch, int out_channels) {
  layer l;
  make_layer(&l, 20, out_channels, 30, 0);
  /* Output 2 keeps input 5 as NaN; the values are re-encoded in mask
   * order around it. */
  l.dense[(size_t)2 * 20 + 5] = NAN;
  l.mask[2 * 3 + 5 / 8] |= 1u << (5 % 8);
  l.num_values = 0;
  for (int o = 0; o < out_channels; ++o) {
    for (int i = 0; i < 20; ++i) {
      if (l.mask[o * 3 + i / 8] & (1u << (i % 8))) {
        l.values[l.num_values++] = l.dense[(size_t)o * 20 + i];
      }
    }
  }
  char error[256] = "";
  clicktrain_spconv1x1_geometry g;
  clicktrain_spconv1x1_compute_geometry(batch, 1, 1, 20, out_channels, 1, 1,
                                        0.0f, 6.0f, &g, error, sizeof(error));
  clicktrain_spconv1x1_tensors t = tensors_of(&l);
  clicktrain_spconv1x1_weight_storage storage;
  EXPECT(clicktrain_build_spconv1x1_weights(&t, 20, (size_t)out_channels,
                                            &storage, error, sizeof(error)) == 0,
         "%s", error);
  const size_t in_size = (size_t)batch * 20;
  const size_t out_size = (size_t)batch * out_channels;
  float* input = malloc(sizeof(float) * in_size);
  float* expected = malloc(sizeof(float) * out_size);
  float* actual = malloc(sizeof(float) * out_size);
  for (size_t i = 0; i < in_size; ++i) input[i] = random_float();
  /* With one pixel, only the NaN weight: a non-finite input would leave
   * no finite output to compare. */
  if (batch > 1) input[3] = NAN;                /* pixel 0 */
  if (batch > 2) input[2 * 20 + 7] = INFINITY;  /* pixel 2 */
  dense_reference(&g, &l, input, expected);
  size_t finite = 0;
  for (size_t i = 0; i < out_size; ++i) finite += isfinite(expected[i]) != 0;
  EXPECT(finite > 0 && finite < out_size,
         "the test layer should give both finite and non-finite outputs");
  for (size_t run = 0; run < 2 * num_variants; ++run) {
    const clicktrain_spconv1x1_ukernels* ukernels = variants[run / 2];
    clicktrain_spconv1x1_operator op;
    EXPECT(clicktrain_spconv1x1_operator_setup(&op, &g, &storage.weights,
                                               ukernels, 2, SIZE_MAX) == 0 &&
               op.few_pixel_mode,
           "%s: no few-pixel mode for %d pixels", ukernels->name, batch);
    clicktrain_spconv1x1_operator_run(&op, input, actual,
                                      run % 2 ? two_threads : NULL);
    clicktrain_spconv1x1_operator_release(&op);
    size_t mismatches = 0;
    for (size_t i = 0; i < out_size; ++i) {
      if (isnan(expected[i])) {
        mismatches += !isnan(actual[i]);
      } else {
        mismatches += !(fabs(actual[i] - expected[i]) <= 1e-5);
      }
    }
    EXPECT(mismatches == 0,
           "%s batch=%d ->%d: %zu outputs differ from the dense reference "
           "with non-finite inputs and weights", ukernels->name, batch,
           out_channels, mismatches);
  }
  free(input);
  free(expected);
  free(actual);
  clicktrain_free_spconv1x1_weights(&storage);
  free_layer(&l);
}

static void expect_rejected(const clicktrain_spconv1x1_tensors* t, size_t in,
                            size_t out, const char* what) {
  clicktrain_spconv1x1_weight_storage storage;
  char error[256] = "";
  EXPECT(clicktrain_build_spconv1x1_weights(t, in, out, &storage, error,
                                            sizeof(error)) != 0,
         "validator accepted %s", what);
  EXPECT(storage.memory == NULL, "validator kept memory for %s", what);
  EXPECT(error[0] != '\0', "validator gave no message for %s", what);
}

static void check_validation(void) {
  layer l;
  make_layer(&l, 13, 5, 40, 0);
  const clicktrain_spconv1x1_tensors t = tensors_of(&l);
  clicktrain_spconv1x1_tensors bad;
  bad = t; bad.values_count -= 1;
  expect_rejected(&bad, 13, 5, "a short values tensor");
  bad = t; bad.values_count += 1;
  expect_rejected(&bad, 13, 5, "a long values tensor");
  bad = t; bad.mask_rows = 4;
  expect_rejected(&bad, 13, 5, "a mask with too few rows");
  bad = t; bad.mask_columns = 1;
  expect_rejected(&bad, 13, 5, "a mask too narrow for 13 channels");
  bad = t; bad.bias_count = 4;
  expect_rejected(&bad, 13, 5, "a short bias");
  bad = t; bad.nonzero_mask = NULL;
  expect_rejected(&bad, 13, 5, "a missing mask");
  expect_rejected(&t, 0, 5, "zero input channels");
  expect_rejected(&t, 13, 0, "zero output channels");
  expect_rejected(&t, 13, 70000, "70000 output channels");
  /* Bit 13 of a row of 13 channels names channel 13: out of range. */
  uint8_t* mask = malloc(5 * 2);
  memcpy(mask, l.mask, 5 * 2);
  bad = t; bad.nonzero_mask = mask;
  mask[2 * 2 + 1] |= 1u << 5;
  bad.values_count += (l.mask[2 * 2 + 1] >> 5) & 1u ? 0 : 1;
  expect_rejected(&bad, 13, 5, "a mask bit past the last input channel");
  free(mask);

  clicktrain_spconv1x1_weight_storage storage;
  char error[256];
  bad = t; bad.bias = NULL; bad.bias_count = 0;
  EXPECT(clicktrain_build_spconv1x1_weights(&bad, 13, 5, &storage, error,
                                            sizeof(error)) == 0,
         "a layer without bias was rejected: %s", error);
  EXPECT(storage.weights.bias[3] == 0.0f, "absent bias is not zero");
  EXPECT(storage.weights.num_nonzeros == l.num_values,
         "counted %u kept weights, expected %zu", storage.weights.num_nonzeros,
         l.num_values);
  clicktrain_free_spconv1x1_weights(&storage);
  free_layer(&l);
}

static void check_case(int batch, int height, int width, int in_channels,
                       int out_channels, int stride_h, int stride_w,
                       int percent_kept, float output_min, float output_max) {
  check_layer(batch, height, width, in_channels, out_channels, stride_h,
              stride_w, percent_kept, output_min, output_max, 0);
}

/* Every variant's transpose (NHWC <-> planar) over sizes around its whole
 * blocks (16 and 8 floats for AVX-512, 8 for AVX2, 4 for NEON) and their
 * edges, with strides wider than a row: the result must be an exact copy,
 * and floats between the rows of the destination must stay untouched. */
static void check_transposes(void) {
  const size_t sizes[] = {1, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 23, 24, 25, 31, 32, 33, 40, 49, 64};
  const size_t count = sizeof(sizes) / sizeof(sizes[0]);
  const size_t most = 64, pad = 3;
  float* source = malloc(sizeof(float) * most * (most + pad));
  float* destination = malloc(sizeof(float) * most * (most + pad));
  for (size_t v = 0; v < num_variants; ++v) {
    for (size_t a = 0; a < count; ++a) {
      for (size_t b = 0; b < count; ++b) {
        const size_t rows = sizes[a], columns = sizes[b];
        const size_t source_stride = columns + pad, destination_stride = rows + pad;
        for (size_t i = 0; i < rows * source_stride; ++i) source[i] = (float)i;
        for (size_t i = 0; i < columns * destination_stride; ++i) destination[i] = -1.0f;
        variants[v]->transpose(rows, columns, source, source_stride, destination,
                               destination_stride);
        size_t wrong = 0;
        for (size_t c = 0; c < columns; ++c) {
          for (size_t r = 0; r < destination_stride; ++r) {
            const float want = r < rows ? source[r * source_stride + c] : -1.0f;
            wrong += destination[c * destination_stride + r] != want;
          }
        }
        EXPECT(wrong == 0, "%s: transpose of %zu x %zu: %zu floats wrong",
               variants[v]->name, rows, columns, wrong);
      }
    }
  }
  free(source);
  free(destination);
}

int main(void) {
  num_variants = clicktrain_available_spconv1x1_ukernels(variants, 8);
  two_threads = clicktrain_thread_pool_create(2);
  EXPECT(two_threads != NULL, "could not start a thread pool");
  printf("sparse_conv1x1_test: variants:");
  for (size_t i = 0; i < num_variants; ++i) printf(" %s", variants[i]->name);
  printf("\n");
  const float inf = INFINITY;
  /* Channel counts around every block size, remainders of every pixel
   * tile, strides, batches, all four clamps, dense to empty layers. */
  const int channels[][2] = {{1, 1}, {3, 17}, {16, 16}, {17, 33},
                             {40, 7}, {64, 48}, {100, 130}};
  for (size_t c = 0; c < sizeof(channels) / sizeof(channels[0]); ++c) {
    check_case(1, 9, 7, channels[c][0], channels[c][1], 1, 1, 25, -inf, inf);
    check_case(2, 5, 13, channels[c][0], channels[c][1], 2, 1, 60, 0.0f, inf);
    check_case(1, 11, 10, channels[c][0], channels[c][1], 3, 2, 10, 0.0f, 6.0f);
  }
  check_case(1, 7, 7, 96, 40, 1, 1, 100, -1.0f, 1.0f);
  check_case(1, 8, 8, 32, 20, 1, 1, 0, -inf, inf);
  check_case(3, 1, 1, 24, 19, 1, 1, 30, -inf, inf);
  check_case(0, 4, 4, 8, 8, 1, 1, 30, -inf, inf);
  check_case(1, 14, 14, 96, 144, 1, 1, 20, 0.0f, 6.0f);
  check_case(1, 7, 7, 320, 96, 1, 1, 15, -inf, inf);
  /* Enough input channels for several L1 channel blocks in every variant,
   * with a clamp that only the last block may apply. */
  check_case(1, 3, 5, 1700, 37, 1, 2, 20, -0.5f, 0.5f);
  check_case(2, 4, 4, 800, 20, 1, 1, 50, 0.0f, inf);
  /* 512 output channels over several channel blocks: the results go back
   * to NHWC in stripes of 16 pixels (21 pixels: a stripe and a remainder). */
  check_case(1, 3, 7, 200, 512, 1, 1, 20, 0.0f, 6.0f);
  /* Block mode: groups of 16 output channels sharing their input channels
   * (the first group empty), pairs of groups that share them too, a layer
   * mixing pairs and single groups (48 = a pair + one), every register-tile
   * remainder of the pixels, strides, batches and clamps; rows of 8 that do
   * not fill a group stay in the other mode. */
  check_layer(1, 9, 7, 24, 16, 1, 1, 40, -inf, inf, 16);
  check_layer(2, 5, 13, 40, 64, 2, 1, 30, 0.0f, inf, 16);
  check_layer(1, 11, 10, 17, 48, 3, 2, 50, 0.0f, 6.0f, 32);
  check_layer(1, 14, 14, 96, 144, 1, 1, 20, 0.0f, 6.0f, 16);
  check_layer(1, 7, 7, 320, 96, 1, 1, 15, -inf, inf, 32);
  check_layer(3, 1, 1, 24, 32, 1, 1, 30, -1.0f, 1.0f, 16);
  check_layer(1, 3, 5, 1700, 32, 1, 2, 20, -0.5f, 0.5f, 16);
  check_layer(1, 6, 6, 30, 40, 1, 1, 50, -inf, inf, 8);
  /* Few-pixel mode (squeeze-excite convs see one pixel per image): 1 to 3
   * channels, output counts around every vector, register tile and panel,
   * batch > 1, pixels spread by strides; 1, 2, 3, 8 and 9 pixels put every
   * variant's limit (0, 1, 2 or 8) and one past it. */
  const int few_channels[][2] = {{1, 1}, {2, 3}, {3, 5}, {48, 1152},
                                 {1152, 48}, {28, 672}, {672, 28}, {17, 33},
                                 {40, 7}, {96, 4}, {5, 130}, {64, 69}};
  for (size_t c = 0; c < sizeof(few_channels) / sizeof(few_channels[0]); ++c) {
    const int in = few_channels[c][0], out = few_channels[c][1];
    check_case(1, 1, 1, in, out, 1, 1, 20, -inf, inf);
    check_case(2, 1, 1, in, out, 1, 1, 40, 0.0f, inf);
    check_case(3, 1, 1, in, out, 1, 1, 20, 0.0f, 6.0f);
    check_case(8, 1, 1, in, out, 1, 1, 30, -1.0f, 1.0f);
    check_case(9, 1, 1, in, out, 1, 1, 30, -inf, inf);
  }
  check_case(1, 3, 3, 24, 19, 2, 2, 30, -inf, inf);  /* 2x2 output pixels */
  check_case(2, 1, 3, 10, 21, 1, 2, 50, 0.0f, 6.0f);
  check_case(1, 2, 4, 13, 37, 1, 1, 20, -inf, inf);
  check_case(2, 5, 5, 130, 200, 4, 3, 20, 0.0f, 6.0f);  /* 2 x 2x2 pixels */
  check_layer(1, 1, 1, 40, 64, 1, 1, 30, 0.0f, inf, 16);  /* block-pruned */
  check_transposes();
  check_non_finite_few_pixels(1, 37);
  check_non_finite_few_pixels(3, 16);
  check_validation();
  clicktrain_thread_pool_destroy(two_threads);
  if (failures != 0) {
    fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  printf("sparse_conv1x1_test: all checks passed (variant: %s)\n",
         clicktrain_select_spconv1x1_ukernels()->name);
  return 0;
}
