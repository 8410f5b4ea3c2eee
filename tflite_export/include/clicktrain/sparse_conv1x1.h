/* ClickTrain sparse 1x1 (pointwise) convolution: compact weight format and
 * the compute-kernel interface.
 *
 * The contract between the exporter (tf_clicktrain/tflite/pointwise_format.py
 * writes the tensors), the op glue (src/sparse_conv1x1_node.cc and
 * src/sparse_conv1x1_weights.c validate them as untrusted input) and the
 * compute kernels (src/f32-spconv1x1/<variant>.c, which trust validated
 * weights and never see the file).
 *
 * Compact format, version 1 (custom op "ClickTrainSparseConv1x1")
 * -------------------------------------------------------------------------
 * Operator inputs:
 *   0 input          float32 [batch, height, width, input_channels]
 *   1 nonzero_mask   uint8 [output_channels, ceil(input_channels / 8)]
 *        Bit (i % 8) of byte i / 8 of row o is set when weight (o, i) is
 *        kept. Bits for i >= input_channels are zero.
 *   2 values         float32 [num_nonzeros]
 *        The kept weights, row after row, ascending input channel within a
 *        row. num_nonzeros = number of set bits in nonzero_mask.
 *   3 bias           float32 [output_channels], or absent (-1).
 * Output 0: float32 [batch, ceil(height / stride_h), ceil(width / stride_w),
 *   output_channels]; output pixel (y, x) reads input pixel
 *   (y * stride_h, x * stride_w), as TFLite's 1x1 CONV_2D (SAME and VALID
 *   padding coincide for a 1x1 filter).
 * A bit mask costs 1 bit per dense weight: less than an 8-bit index per kept
 * weight whenever more than 1 weight in 8 is kept.
 *
 * Custom options: a flexbuffer map with integer keys format_version (=1),
 *   input_channels, output_channels, stride_h, stride_w and string key
 *   fused_activation ("NONE" | "RELU" | "RELU_N1_TO_1" | "RELU6").
 */
#ifndef CLICKTRAIN_SPARSE_CONV1X1_H_
#define CLICKTRAIN_SPARSE_CONV1X1_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CLICKTRAIN_SPCONV1X1_FORMAT_VERSION 1
#define CLICKTRAIN_SPARSE_CONV1X1_OP_NAME "ClickTrainSparseConv1x1"
#define CLICKTRAIN_SPCONV1X1_MAX_CHANNELS 65535

/* Validated weights of one layer, in kernel-friendly memory: row o holds
 * kept weights input_channel[row_start[o] .. row_start[o + 1]) with values
 * at the same positions. */
typedef struct clicktrain_spconv1x1_weights {
  uint32_t input_channels;
  uint32_t output_channels;
  uint32_t num_nonzeros;
  const uint32_t* row_start;      /* [output_channels + 1] */
  const uint16_t* input_channel;  /* [num_nonzeros] */
  const float* values;            /* [num_nonzeros] */
  const float* bias;              /* [output_channels], never NULL */
} clicktrain_spconv1x1_weights;

/* Micro-kernels
 * -------------------------------------------------------------------------
 * The op glue (src/sparse_conv1x1_operator.c) runs a layer tile by tile: a
 * tile of `pixel_tile` output pixels is transposed from NHWC into a planar
 * scratch ([input_channels][pixel_tile]), every output channel is computed
 * over the whole tile with pixels along the SIMD lanes (`compute`, an SpMM
 * with each kept weight broadcast once per tile), and the planar results are
 * transposed back to NHWC. Vectorising along pixels keeps every lane useful
 * whatever the sparsity pattern, which unstructured sparsity needs (XNNPACK's
 * sparse kernels do the same in NCHW).
 *
 * `compute` runs a filter program, per output channel, in 32-bit words:
 *   count n, weight bias, then n times: offset (input_channel * pixel_tile,
 *   in floats, into the planar tile), weight value.
 * It computes the first `pixels` of the tile's pixels and may compute more,
 * up to `pixel_tile` (the scratch tail past the valid pixels holds finite
 * values the glue never copies out). *
 * Layers with few pixels per run skip all of this (`few_pixel_compute`).
 */
typedef union clicktrain_spconv1x1_word {
  int32_t offset;
  uint32_t count;
  float weight;
} clicktrain_spconv1x1_word;

typedef struct clicktrain_spconv1x1_ukernels {
  const char* name;
  /* Output pixels per tile: the register tile of `compute`. */
  size_t pixel_tile;
  /* destination[c * destination_stride + r] = source[r * source_stride + c]
   * for r < rows, c < columns (NHWC <-> planar, both directions). */
  void (*transpose)(size_t rows, size_t columns, const float* source,
                    size_t source_stride, float* destination,
                    size_t destination_stride);
  /* tile[f * pixel_tile + p] = clamp(start + sum_k w_k * planar[off_k + p])
   * for f < filters and p < pixels (1 <= pixels <= pixel_tile), where start
   * is the filter's bias word, or, when `accumulate` is set, the tile's
   * current value (the op glue splits long filters over input-channel
   * blocks that fit in L1). Returns the program past the last filter. */
  const clicktrain_spconv1x1_word* (*compute)(
      size_t filters, const clicktrain_spconv1x1_word* program,
      const float* planar, float* tile, size_t pixels, int accumulate,
      float output_min, float output_max);
  /* Block mode, for layers whose output channels come in groups of
   * CLICKTRAIN_SPCONV1X1_BLOCK keeping the same input channels:
   *   output[p * output_stride + j] = clamp(bias[j] +
   *       sum_k weights[k * width + j] * planar[offsets[k] + p])
   * for p < pixels (<= pixel_tile) and j < width = groups *
   * CLICKTRAIN_SPCONV1X1_BLOCK (groups 1 or 2: two groups that also share
   * their input channels), `output` pointing into the NHWC output. `weights`
   * and `bias` are 64-byte aligned. May read planar past `pixels`, within
   * the scratch. */
  void (*block_compute)(size_t pixels, size_t count, size_t groups,
                        const int32_t* offsets, const float* weights,
                        const float* bias, const float* planar,
                        float* output, size_t output_stride,
                        float output_min, float output_max);
  /* Most pixels per run (batch x output height x output width) for which
   * the delegate runs a layer in the few-pixel mode with these kernels:
   * where, at 80% sparsity, it measured faster than the SpMM (which does
   * 1/5 of the multiply-adds but fills whole pixel vectors and transposes
   * whatever the pixel count). 0: never. */
  size_t few_pixels;
  /* Few-pixel mode, for layers with few pixels per run (a squeeze-excite
   * conv sees one), where transposing tiles costs more than the SpMM saves:
   * a GEMV per pixel over a dense copy of the weights,
   *   output[p * output_stride + o] = clamp(bias[o] +
   *       sum_i W[i][o] * input[p * input_stride + i])
   * for p < pixels and o < output_channels, read straight from the NHWC
   * input and stored straight into the NHWC output. W is stored in panels
   * of CLICKTRAIN_SPCONV1X1_PANEL output channels so that every register
   * tile streams its weights contiguously: panel q holds output channels
   * [q * PANEL, q * PANEL + width) as [input_channels][width] floats from
   * weights + q * PANEL * input_channels, width being PANEL but for the
   * last panel, which holds what is left rounded up to
   * CLICKTRAIN_SPCONV1X1_VECTOR_FLOATS (padded with zeros, as is `bias`).
   * A pruned weight is a zero the sum includes, as in TFLite's dense conv.
   * Writes only output_channels floats per pixel. */
  void (*few_pixel_compute)(size_t pixels, size_t input_channels,
                            size_t output_channels, const float* input,
                            size_t input_stride, const float* weights,
                            const float* bias, float* output,
                            size_t output_stride, float output_min,
                            float output_max);
} clicktrain_spconv1x1_ukernels;

/* Output channels per panel of the few-pixel mode's dense weights (whole
 * register tiles of every variant), and what the last panel is rounded up
 * to (a whole vector of every variant). */
#define CLICKTRAIN_SPCONV1X1_PANEL 64
#define CLICKTRAIN_SPCONV1X1_VECTOR_FLOATS 16

/* Output channels per group of the block mode. */
#define CLICKTRAIN_SPCONV1X1_BLOCK 16

extern const clicktrain_spconv1x1_ukernels clicktrain_spconv1x1_ukernels__scalar;
extern const clicktrain_spconv1x1_ukernels clicktrain_spconv1x1_ukernels__avx2;
extern const clicktrain_spconv1x1_ukernels clicktrain_spconv1x1_ukernels__avx512;
extern const clicktrain_spconv1x1_ukernels clicktrain_spconv1x1_ukernels__neon;

/* The micro-kernels used at run time, chosen once from the CPU's features
 * (TF_CLICKTRAIN_KERNELS overrides, as for the pattern convs). */
const clicktrain_spconv1x1_ukernels* clicktrain_select_spconv1x1_ukernels(void);

/* Every variant compiled in that runs on this CPU, scalar first; for tests
 * and benchmarks. Returns the count. */
size_t clicktrain_available_spconv1x1_ukernels(
    const clicktrain_spconv1x1_ukernels** sets, size_t capacity);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_SPARSE_CONV1X1_H_ */
