/* NEON (arm64 Advanced SIMD) micro-kernels of the int8 pattern conv
 * (interface in include/clicktrain/pattern_conv_s8.h).
 *
 * "neon", on every arm64 CPU: the AVX2 design. A slot holds its 4 taps as
 * int16 streams of a tile (packed[slot][tap][pixel]); per kernel tap group
 * SMLAL by weight lane accumulates exact int32 sums, 16 registers of 4
 * pixels per tile.
 *
 * "neondot", when the CPU has the dot-product extension (SDOT): slots hold
 * u8 taps per pixel like the scalar variant's, stored with the +128 offset
 * removed (s8, the original input values) so that SDOT's s8 x s8 4-way dot
 * product takes them; the folded bias expects sums of u8 taps, so each
 * chunk adds 128 * (sum of its weights) per filter, which is exact in
 * 32-bit wrapping arithmetic.
 *
 * Both requantize exactly as TFLite's MultiplyByQuantizedMultiplier with
 * the 64-bit form of the two roundings (see pattern_conv_s8_operator.c). */
#if defined(__aarch64__)

#include <arm_neon.h>

#include "clicktrain/pattern_conv_s8.h"

enum { kTile = CLICKTRAIN_S8_PATCONV_TILE, kVectors = kTile / 4 };

/* 4 sums -> 4 requantized values plus the output zero point. */
static inline int32x4_t requantize(
    int32x4_t sum, const clicktrain_s8_filter_requantization* q,
    int32x4_t zero_point) {
  const int32x4_t x = vshlq_s32(vaddq_s32(sum, vdupq_n_s32(q->bias)),
                                vdupq_n_s32((int32_t)q->left_shift));
  const int32x2_t multiplier = vdup_n_s32(q->multiplier);
  const int64x2_t rounding = vdupq_n_s64(q->rounding);
  const int64x2_t negative_rounding = vdupq_n_s64(q->negative_rounding);
  const int64x2_t right_shift = vdupq_n_s64(-(int64_t)q->right_shift);
  int64x2_t low = vmull_s32(vget_low_s32(x), multiplier);
  int64x2_t high = vmull_s32(vget_high_s32(x), multiplier);
  low = vsubq_s64(vaddq_s64(low, rounding),
                  vandq_s64(vshrq_n_s64(low, 63), negative_rounding));
  high = vsubq_s64(vaddq_s64(high, rounding),
                   vandq_s64(vshrq_n_s64(high, 63), negative_rounding));
  low = vshlq_s64(low, right_shift);
  high = vshlq_s64(high, right_shift);
  return vaddq_s32(vcombine_s32(vmovn_s64(low), vmovn_s64(high)), zero_point);
}

/* Requantizes a filter's 64 sums (pixel order) into output, or stores them
 * for the next chunk. */
static inline __attribute__((always_inline)) void finish(int32x4_t* acc, int32_t* partial, int last,
                          const clicktrain_s8_filter_requantization* q,
                          const clicktrain_s8_output_params* params,
                          int8_t* output) {
  if (!last) {
#pragma GCC unroll 16
    for (int i = 0; i < kVectors; ++i) vst1q_s32(partial + 4 * i, acc[i]);
    return;
  }
  const int32x4_t zero_point = vdupq_n_s32(params->zero_point);
  const int8x16_t low = vdupq_n_s8((int8_t)params->min);
  const int8x16_t high = vdupq_n_s8((int8_t)params->max);
#pragma GCC unroll 4
  for (int i = 0; i < kVectors; i += 4) {
    const int16x8_t a = vcombine_s16(
        vqmovn_s32(requantize(acc[i], q, zero_point)),
        vqmovn_s32(requantize(acc[i + 1], q, zero_point)));
    const int16x8_t b = vcombine_s16(
        vqmovn_s32(requantize(acc[i + 2], q, zero_point)),
        vqmovn_s32(requantize(acc[i + 3], q, zero_point)));
    const int8x16_t bytes = vcombine_s8(vqmovn_s16(a), vqmovn_s16(b));
    vst1q_s8(output + 4 * i, vminq_s8(vmaxq_s8(bytes, low), high));
  }
}

static inline __attribute__((always_inline)) void start(int32x4_t* acc, const int32_t* partial, int first) {
#pragma GCC unroll 16
  for (int i = 0; i < kVectors; ++i) {
    acc[i] = first ? vdupq_n_s32(0) : vld1q_s32(partial + 4 * i);
  }
}

/* ---- neon: int16 taps, SMLAL by lane. */

enum { kWideSlotBytes = 8 * kTile };

static void pack_wide(size_t slots, const uint32_t* tap_offsets,
                      const uint8_t* planes, uint8_t* packed) {
  for (size_t s = 0; s < slots;
       ++s, tap_offsets += 4, packed += kWideSlotBytes) {
    int16_t* target = (int16_t*)packed;
    for (size_t j = 0; j < 4; ++j, target += kTile) {
      const uint8_t* stream = planes + tap_offsets[j];
      for (size_t at = 0; at < kTile; at += 16) {
        const uint8x16_t v = vld1q_u8(stream + at);
        vst1q_s16(target + at, vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(v))));
        vst1q_s16(target + at + 8, vreinterpretq_s16_u16(vmovl_high_u8(v)));
      }
    }
  }
}

#define ACCUMULATE_TAP(lane)                                               \
  do {                                                                     \
    const int16_t* taps = slot + (lane) * kTile;                           \
    _Pragma("GCC unroll 8")                                                \
    for (int i = 0; i < kVectors / 2; ++i) {                               \
      const int16x8_t v = vld1q_s16(taps + 8 * i);                         \
      acc[2 * i] = vmlal_lane_s16(acc[2 * i], vget_low_s16(v), w, (lane)); \
      acc[2 * i + 1] = vmlal_high_lane_s16(acc[2 * i + 1], v, w, (lane));  \
    }                                                                      \
  } while (0)

static void compute_wide(
    size_t filters, const uint32_t* program, const uint8_t* packed,
    int32_t* accumulators, int first, int last,
    const clicktrain_s8_filter_requantization* requantization,
    const clicktrain_s8_output_params* params, int8_t* output) {
  for (size_t f = 0; f < filters; ++f, output += kTile) {
    int32_t* partial = accumulators + f * kTile;
    int32x4_t acc[kVectors];
    start(acc, partial, first);
    const uint32_t count = *program++;
    for (uint32_t k = 0; k < count; ++k, program += 2) {
      const int16_t* slot = (const int16_t*)(packed + program[0]);
      const int16x4_t w = vget_low_s16(
          vmovl_s8(vreinterpret_s8_u32(vdup_n_u32(program[1]))));
      ACCUMULATE_TAP(0);
      ACCUMULATE_TAP(1);
      ACCUMULATE_TAP(2);
      ACCUMULATE_TAP(3);
    }
    finish(acc, partial, last, &requantization[f], params, output);
  }
}

const clicktrain_s8_patconv_ukernels clicktrain_s8_patconv_ukernels__neon = {
    .name = "neon",
    .slot_bytes = kWideSlotBytes,
    .accumulator_bytes = 4 * kTile,
    .pack = pack_wide,
    .compute = compute_wide,
    .transpose = clicktrain_x8_transpose_ukernel__scalar,
    .gather_transpose = clicktrain_x8_gather_transpose_ukernel__scalar,
};

/* ---- neondot: s8 taps per pixel, SDOT. */

enum { kDotSlotBytes = 4 * kTile };

static void pack_dot(size_t slots, const uint32_t* tap_offsets,
                     const uint8_t* planes, uint8_t* packed) {
  const uint8x16_t offset = vdupq_n_u8(0x80);
  for (size_t s = 0; s < slots;
       ++s, tap_offsets += 4, packed += kDotSlotBytes) {
    for (size_t at = 0; at < kTile; at += 16) {
      uint8x16x4_t taps;
      taps.val[0] = veorq_u8(vld1q_u8(planes + tap_offsets[0] + at), offset);
      taps.val[1] = veorq_u8(vld1q_u8(planes + tap_offsets[1] + at), offset);
      taps.val[2] = veorq_u8(vld1q_u8(planes + tap_offsets[2] + at), offset);
      taps.val[3] = veorq_u8(vld1q_u8(planes + tap_offsets[3] + at), offset);
      vst4q_u8(packed + 4 * at, taps);  /* [pixel][tap] */
    }
  }
}

/* SDOT without ISA flags for the whole file (the dispatcher only calls this
 * variant when the CPU has the dot-product extension): only these functions
 * are compiled for it. GCC declares vdotq_s32 for such functions; clang
 * before 16 declares it only when the whole file has the feature, so it
 * gets the instruction from the assembler. */
#if defined(__clang__)
#define DOTPROD_TARGET __attribute__((target("dotprod")))
#else
#define DOTPROD_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

static inline DOTPROD_TARGET int32x4_t dot_accumulate(int32x4_t acc,
                                                      int8x16_t taps,
                                                      int8x16_t weights) {
#if defined(__clang__) && !defined(__ARM_FEATURE_DOTPROD)
  __asm__("sdot %0.4s, %1.16b, %2.16b" : "+w"(acc) : "w"(taps), "w"(weights));
  return acc;
#else
  return vdotq_s32(acc, taps, weights);
#endif
}

DOTPROD_TARGET static void compute_dot(
    size_t filters, const uint32_t* program, const uint8_t* packed,
    int32_t* accumulators, int first, int last,
    const clicktrain_s8_filter_requantization* requantization,
    const clicktrain_s8_output_params* params, int8_t* output) {
  for (size_t f = 0; f < filters; ++f, output += kTile) {
    int32_t* partial = accumulators + f * kTile;
    int32x4_t acc[kVectors];
    start(acc, partial, first);
    const uint32_t count = *program++;
    uint32_t weight_sum = 0;
    for (uint32_t k = 0; k < count; ++k, program += 2) {
      const int8_t* slot = (const int8_t*)(packed + program[0]);
      const uint32_t word = program[1];
      const int8x16_t w = vreinterpretq_s8_u32(vdupq_n_u32(word));
      weight_sum += (uint32_t)((int8_t)(word & 0xFF) + (int8_t)((word >> 8) & 0xFF) +
                               (int8_t)((word >> 16) & 0xFF) + (int8_t)(word >> 24));
#pragma GCC unroll 16
      for (int i = 0; i < kVectors; ++i) {
        acc[i] = dot_accumulate(acc[i], vld1q_s8(slot + 16 * i), w);
      }
    }
    /* The u8 taps' sums: each s8 tap is its u8 tap - 128. */
    const int32x4_t offset =
        vdupq_n_s32((int32_t)(weight_sum * 128u));
#pragma GCC unroll 16
    for (int i = 0; i < kVectors; ++i) acc[i] = vaddq_s32(acc[i], offset);
    finish(acc, partial, last, &requantization[f], params, output);
  }
}

const clicktrain_s8_patconv_ukernels clicktrain_s8_patconv_ukernels__neondot = {
    .name = "neondot",
    .slot_bytes = kDotSlotBytes,
    .accumulator_bytes = 4 * kTile,
    .pack = pack_dot,
    .compute = compute_dot,
    .transpose = clicktrain_x8_transpose_ukernel__scalar,
    .gather_transpose = clicktrain_x8_gather_transpose_ukernel__scalar,
};

#endif
