/* ClickTrain pattern-sparse 3x3 convolution: compact weight format and the
 * compute-kernel interface.
 *
 * This header is the contract between three parties:
 *   - the exporter (tf_clicktrain/tflite), which writes the compact tensors,
 *   - the op glue (src/delegate.cc, src/compact_weights.c), which validates
 *     them as untrusted input and builds a `clicktrain_pattern_weights`,
 *   - the compute kernels (src/f32-patconv/<variant>.c, ...), which trust a
 *     validated `clicktrain_pattern_weights` and never see the file.
 *
 * Compact format, version 2 (custom ops "ClickTrainPatternConv2D" and
 * "ClickTrainPatternDepthwiseConv2D"), written by the exporter
 * -------------------------------------------------------------------------
 * Operator inputs:
 *   0 input          float32 [batch, height, width, input_channels]
 *   1 pattern_masks  uint16  [num_patterns]
 *        The layer's pattern table. Bit (3 * ky + kx) is set when position
 *        (ky, kx) of a 3x3 kernel is kept. 1 <= popcount, mask < 512,
 *        1 <= num_patterns <= 511.
 *   2 kernel_index   uint8   [index_bytes]
 *        Which (filter, input channel) pairs keep a kernel, and the pattern
 *        of each kept kernel, as one bit stream. The layer's pairs are
 *        numbered o * input_channels + i (depthwise: pair o is filter o on
 *        its own input channel o; there are output_channels of them).
 *        Byte 0 is gap_bits (0..31), the Rice parameter of the gaps. Bytes
 *        1.. hold the stream, bit n in bit (n % 8) of byte 1 + n / 8. For
 *        every kept kernel, in pair order: the gap (pairs skipped since the
 *        previous kept kernel, or since pair 0), then its pattern id; after
 *        the last kernel, one more gap: the pairs left to the end. A gap g
 *        is Rice-coded: (g >> gap_bits) one bits, a zero bit, then the low
 *        gap_bits bits of g, least significant first. A pattern id (an
 *        index into pattern_masks, < num_patterns) takes
 *        id_bits = ceil(log2(num_patterns)) bits, least significant first
 *        (none for a single pattern). The stream ends in the last byte;
 *        the bits after its end are zero. Gaps are geometric at random
 *        kernel removal, for which Rice codes come within a few percent of
 *        the entropy: at 8x (28% of kernels kept) with gap_bits 1, 0.86
 *        bits per pair (a bitmap takes 1), plus id_bits per kept kernel.
 *   3 values         float32 [num_values]
 *        The kept weights, kernel after kernel in pair order, each kernel's
 *        kept positions in ascending bit order. num_values = sum over kept
 *        kernels of popcount(pattern_masks[id]).
 *   4 bias           float32 [output_channels], or absent (-1).
 * Output 0: float32 [batch, output_height, output_width, output_channels].
 *
 * Compact format, version 1 (read, no longer written)
 * -------------------------------------------------------------------------
 * Inputs 0 and 1 as in version 2, then:
 *   2 pattern_run_lengths   uint8 or uint16 [output_channels, num_patterns]
 *        Number of kept kernels of pattern p in filter o. A filter's kept
 *        kernels are stored grouped by pattern (PatDNN's filter-kernel
 *        reordering): first the run of pattern 0, then pattern 1, ...
 *   3 kernel_input_channels uint8 or uint16 [num_kernels]
 *        Input channel of each kept kernel, filter after filter, in the order
 *        above. num_kernels = sum(pattern_run_lengths). Depthwise: filter o
 *        has at most one kernel and its input channel is o.
 *   4 values                float32 [num_values], kernel after kernel in
 *        the order above, kept positions in ascending bit order.
 *   5 bias                  float32 [output_channels], or absent (-1).
 *
 * Either version is expanded at Prepare into the same kernel-ready memory
 * (clicktrain_pattern_weights below: version 1's order, each filter's
 * kernels grouped by pattern, by input channel within a pattern), so the
 * kernels never see the file.
 *
 * Custom options: a flexbuffer map with integer keys
 *   format_version (1 or 2), input_channels, output_channels, stride_h,
 *   stride_w, dilation_h, dilation_w, and string keys padding ("SAME" |
 *   "VALID") and fused_activation ("NONE" | "RELU" | "RELU_N1_TO_1" |
 *   "RELU6"). Output sizes and SAME padding follow TFLite's CONV_2D exactly.
 */
#ifndef CLICKTRAIN_PATTERN_CONV_H_
#define CLICKTRAIN_PATTERN_CONV_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version the exporter writes; files of versions
 * CLICKTRAIN_PATTERN_OLDEST_FORMAT_VERSION.. still load. */
#define CLICKTRAIN_PATTERN_FORMAT_VERSION 2
#define CLICKTRAIN_PATTERN_OLDEST_FORMAT_VERSION 1
#define CLICKTRAIN_PATTERN_CONV_OP_NAME "ClickTrainPatternConv2D"
#define CLICKTRAIN_PATTERN_DEPTHWISE_CONV_OP_NAME \
  "ClickTrainPatternDepthwiseConv2D"

/* A 3x3 kernel has 9 positions; masks are 9-bit. */
#define CLICKTRAIN_KERNEL_SIZE 3
#define CLICKTRAIN_KERNEL_POSITIONS 9
#define CLICKTRAIN_MAX_PATTERNS 511
/* Channel indices and run lengths are at most uint16 in the file. */
#define CLICKTRAIN_MAX_CHANNELS 65535
/* Largest Rice parameter of kernel_index's gaps (format version 2). */
#define CLICKTRAIN_MAX_GAP_BITS 31

/* Shapes and parameters of one convolution call. */
typedef struct clicktrain_conv_geometry {
  int batch;
  int input_height;
  int input_width;
  int input_channels;
  int output_height;
  int output_width;
  int output_channels;
  int stride_h;
  int stride_w;
  int dilation_h;
  int dilation_w;
  /* Rows/columns of implicit zeros before the first input row/column. */
  int padding_top;
  int padding_left;
  /* Fused activation as a clamp: NONE is [-inf, inf], RELU6 is [0, 6]. */
  float output_min;
  float output_max;
} clicktrain_conv_geometry;

/* Validated compact weights of one layer, in kernel-friendly memory.
 *
 * The layer in version 1's layout (see the format above), whichever version
 * the file holds, plus two prefix sums so a
 * kernel can start any filter directly (and split filters across threads):
 * filter o's kernels are kernel_input_channels[filter_kernel_start[o] ..
 * filter_kernel_start[o + 1]) and its values start at
 * values[filter_value_start[o]].
 */
typedef struct clicktrain_pattern_weights {
  uint32_t input_channels;
  uint32_t output_channels;
  uint32_t num_patterns;
  uint32_t num_kernels;
  uint32_t num_values;
  const uint16_t* pattern_masks;          /* [num_patterns] */
  const uint16_t* pattern_run_lengths;    /* [output_channels][num_patterns] */
  const uint16_t* kernel_input_channels;  /* [num_kernels] */
  const float* values;                    /* [num_values] */
  const float* bias;                      /* [output_channels], never NULL */
  const uint32_t* filter_kernel_start;    /* [output_channels + 1] */
  const uint32_t* filter_value_start;     /* [output_channels + 1] */
} clicktrain_pattern_weights;

/* A compute kernel: output = clamp(conv(input, weights) + bias).
 *
 * input is NHWC [batch, input_height, input_width, input_channels], output is
 * NHWC [batch, output_height, output_width, output_channels]. Kernels may
 * assume the geometry and weights were validated by the op glue (every index
 * in range, counts consistent) and must not read outside those bounds.
 */
typedef void (*clicktrain_f32_patconv_fn)(
    const clicktrain_conv_geometry* geometry,
    const clicktrain_pattern_weights* weights, const float* input,
    float* output);

/* Scalar reference kernels, the ground truth for every faster variant. */
void clicktrain_f32_patconv_ukernel__scalar(
    const clicktrain_conv_geometry* geometry,
    const clicktrain_pattern_weights* weights, const float* input,
    float* output);
void clicktrain_f32_patdwconv_ukernel__scalar(
    const clicktrain_conv_geometry* geometry,
    const clicktrain_pattern_weights* weights, const float* input,
    float* output);

/* Fast kernels: planar micro-kernels over a filter program
 * -------------------------------------------------------------------------
 * The op glue (src/pattern_conv_operator.c) converts the NHWC input into
 * zero-padded channel planes in which every tap of the layer is a constant,
 * vector-aligned offset from the output pixel, and the layer's weights into
 * a "filter program" in which every such offset is resolved for the
 * geometry. A micro-kernel then computes a tile of output planes:
 *
 *   output[f * output_stride + i] = clamp(bias_f + sum over kernels k of f,
 *       sum over taps t of k: weight[k][t] * planes[plane_k + tap_t + i])
 *
 * for filters f < filters and pixels i < pixels; the op glue transposes the
 * tile back to NHWC. Vectorising along i reuses each broadcast weight across
 * a whole register tile of output pixels.
 *
 * Program, per filter, in 32-bit words:
 *   count header (number of taps n | flags), weight bias,
 *   then n times: offset (plane of the kernel + tap within it), weight.
 * One flat list per filter runs as one loop, with no branch that depends on
 * the patterns.
 * Filter groups: when CLICKTRAIN_PATCONV_GROUP_FILTERS consecutive filters
 * (the first a multiple of that count) have the same taps in a chunk (the
 * same kept input channels, each with the same pattern, as
 * `prune_pattern(filter_group=4)` prunes), the program may hold one entry
 * for all of them instead:
 *   count header (n | flags | CLICKTRAIN_PATCONV_GROUP), the G biases,
 *   then n times: offset, then the G filters' weights of that tap;
 * so each input vector loaded feeds G FMAs instead of one.
 * The op glue may split a filter's kernels into chunks of input channels,
 * run one after the other on the same output tile (so one chunk's planes
 * stay in the L1 cache for all filters of a block): the flags say whether
 * the sums start from the bias or from the tile (ACCUMULATE) and whether
 * this is the last chunk (FINAL: clamp; otherwise store the raw sums).
 * Every offset is a multiple of 8 floats and `planes` is 64-byte aligned, so
 * vector loads never split a cache line. Micro-kernels may read and write up
 * to CLICKTRAIN_PATCONV_PIXEL_SLACK - 1 elements past `pixels` (in the planes
 * and in each output row); the op glue allocates that slack.
 *
 * Padded taps: the fast path multiplies taps that fall into the padding by
 * zero, which equals TFLite's reference CONV_2D (padded taps are skipped)
 * for finite weights. A layer holding a NaN or infinite weight runs the
 * scalar reference kernels on every CPU, so a non-finite weight next to the
 * padding never turns a border output into NaN on one CPU and not another.
 */
#define CLICKTRAIN_PATCONV_PIXEL_SLACK 16
#define CLICKTRAIN_PATCONV_TAPS_MASK 0x1FFFFFFFu
#define CLICKTRAIN_PATCONV_GROUP 0x20000000u
#define CLICKTRAIN_PATCONV_GROUP_FILTERS 4
#define CLICKTRAIN_PATCONV_ACCUMULATE 0x40000000u
#define CLICKTRAIN_PATCONV_FINAL 0x80000000u

typedef union clicktrain_patconv_word {
  int32_t offset;
  uint32_t count;
  float weight;
} clicktrain_patconv_word;

typedef void (*clicktrain_f32_patconv_planar_fn)(
    size_t pixels, size_t filters, const clicktrain_patconv_word* program,
    const float* planes, float* output, size_t output_stride,
    float output_min, float output_max);

/* destination[c * destination_stride + r] = source[r * source_stride + c]
 * for r < rows, c < columns: NHWC <-> planar conversions. */
typedef void (*clicktrain_x32_transpose_fn)(size_t rows, size_t columns,
                                            const float* source,
                                            size_t source_stride,
                                            float* destination,
                                            size_t destination_stride);

#define CLICKTRAIN_DECLARE_PATCONV_VARIANT(variant)                        \
  void clicktrain_f32_patconv_planar_ukernel__##variant(                   \
      size_t pixels, size_t filters, const clicktrain_patconv_word* program, \
      const float* planes, float* output, size_t output_stride,            \
      float output_min, float output_max);                                 \
  void clicktrain_x32_transpose_ukernel__##variant(                        \
      size_t rows, size_t columns, const float* source,                    \
      size_t source_stride, float* destination, size_t destination_stride);
CLICKTRAIN_DECLARE_PATCONV_VARIANT(scalar)
CLICKTRAIN_DECLARE_PATCONV_VARIANT(avx2)
CLICKTRAIN_DECLARE_PATCONV_VARIANT(avx512)
CLICKTRAIN_DECLARE_PATCONV_VARIANT(neon)
#undef CLICKTRAIN_DECLARE_PATCONV_VARIANT

/* The kernels used at run time, chosen once from the CPU's features. Every
 * set runs the same driver with its own micro-kernels; `conv` /
 * `depthwise_conv` are the reference kernels, which the op glue calls for
 * layers the fast path does not take (see pattern_conv_operator.h). */
typedef struct clicktrain_kernel_set {
  const char* name;
  clicktrain_f32_patconv_fn conv;
  clicktrain_f32_patconv_fn depthwise_conv;
  clicktrain_f32_patconv_planar_fn planar;
  /* Output pixels per task: a multiple of the micro-kernel's register tile. */
  size_t pixel_tile;
  /* Floats per vector of the planar micro-kernel. */
  size_t vector_floats;
  clicktrain_x32_transpose_fn transpose;
} clicktrain_kernel_set;

const clicktrain_kernel_set* clicktrain_select_kernels(void);

/* Every kernel set compiled into this library that runs on this CPU,
 * reference first; for tests and benchmarks. Returns the count. */
size_t clicktrain_available_kernels(const clicktrain_kernel_set** sets,
                                    size_t capacity);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_PATTERN_CONV_H_ */
