/* NEON (arm64) int8 pattern depthwise row kernel, 16 channels per group:
 * each tap's bytes widened to int16 and multiplied by its weights with
 * SMLAL into int32 sums in the group's lane order (VLD2 splits the packed
 * tap pairs into the two taps' weights); TFLite's requantization as its
 * NEON kernels do it (SQRDMULH, then the rounding shift with gemmlowp's
 * fix-up), which equals MultiplyByQuantizedMultiplier. */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

#include "clicktrain/pattern_dwconv_s8.h"

/* The 16 bytes of a tap; a group of fewer channels reads only them. */
static inline int8x16_t load_tap(const int8_t* tap, size_t count) {
  if (count == CLICKTRAIN_S8_PATDWCONV_GROUP) return vld1q_s8(tap);
  int8_t partial[CLICKTRAIN_S8_PATDWCONV_GROUP] = {0};
  memcpy(partial, tap, count);
  return vld1q_s8(partial);
}

/* Lane-order quarter q of the sums: channels 0-3, 8-11, 4-7, 12-15. */
static inline int32x4_t requantize(int32x4_t acc, int32x4_t left_shift,
                                   int32x4_t multiplier, int32x4_t right_shift) {
  const int32x4_t x = vqrdmulhq_s32(vshlq_s32(acc, left_shift), multiplier);
  const int32x4_t fixup = vshrq_n_s32(vandq_s32(x, right_shift), 31);
  return vrshlq_s32(vqaddq_s32(x, fixup), right_shift);
}

static void row__neon(size_t pixels, size_t channels,
                      const int8_t* const* indirection,
                      const clicktrain_s8_patdwconv_group* groups,
                      const clicktrain_s8_output_params* params,
                      int8_t* output) {
  const int32x4_t zero_point = vdupq_n_s32(params->zero_point);
  const int8x16_t low_clamp = vdupq_n_s8((int8_t)params->min);
  const int8x16_t high_clamp = vdupq_n_s8((int8_t)params->max);
  for (size_t base = 0; base < channels;
       base += CLICKTRAIN_S8_PATDWCONV_GROUP, ++groups) {
    size_t count = channels - base;
    if (count > CLICKTRAIN_S8_PATDWCONV_GROUP) {
      count = CLICKTRAIN_S8_PATDWCONV_GROUP;
    }
    const uint32_t pairs = groups->pairs;
    int taps[2 * CLICKTRAIN_S8_PATDWCONV_MAX_PAIRS];
    /* Per pair: tap a's and tap b's weights of the low half (channels
     * 0-3, 8-11) and of the high half (4-7, 12-15). */
    int16x8x2_t low[CLICKTRAIN_S8_PATDWCONV_MAX_PAIRS];
    int16x8x2_t high[CLICKTRAIN_S8_PATDWCONV_MAX_PAIRS];
    for (uint32_t p = 0; p < pairs; ++p) {
      taps[2 * p] = groups->taps[2 * p];
      taps[2 * p + 1] = groups->taps[2 * p + 1];
      low[p] = vld2q_s16(groups->weights[p]);
      high[p] = vld2q_s16(groups->weights[p] + 16);
    }
    int32x4_t bias[4], left_shift[4], multiplier[4], right_shift[4];
    for (int q = 0; q < 4; ++q) {
      bias[q] = vld1q_s32(groups->bias + 4 * q);
      left_shift[q] = vld1q_s32(groups->left_shift + 4 * q);
      multiplier[q] = vld1q_s32(groups->multiplier + 4 * q);
      /* right_shift is 31 + max(-shift, 0): the rounding shift is by
       * max(-shift, 0), as a negative left shift. */
      int32_t shifts[4];
      for (int i = 0; i < 4; ++i) {
        const size_t lane = (size_t)(4 * q + i), half = lane / 8, k = lane % 8;
        shifts[i] = 31 - (int32_t)groups->right_shift[8 * half + (k % 2) * 4 + k / 2];
      }
      right_shift[q] = vld1q_s32(shifts);
    }
    for (size_t pixel = 0; pixel < pixels; ++pixel) {
      const int8_t* const* addresses = indirection + pixel * 9;
      /* acc[0]: channels 0-3, acc[1]: 8-11, acc[2]: 4-7, acc[3]: 12-15. */
      int32x4_t acc[4] = {bias[0], bias[1], bias[2], bias[3]};
      for (uint32_t p = 0; p < pairs; ++p) {
        const int8x16_t a = load_tap(addresses[taps[2 * p]] + base, count);
        const int8x16_t b = load_tap(addresses[taps[2 * p + 1]] + base, count);
        const int16x8_t a_low = vmovl_s8(vget_low_s8(a));    /* 0-7 */
        const int16x8_t a_high = vmovl_high_s8(a);           /* 8-15 */
        const int16x8_t b_low = vmovl_s8(vget_low_s8(b));
        const int16x8_t b_high = vmovl_high_s8(b);
        /* low[p].val[0]: tap a of channels 0-3 then 8-11. */
        acc[0] = vmlal_s16(acc[0], vget_low_s16(a_low), vget_low_s16(low[p].val[0]));
        acc[0] = vmlal_s16(acc[0], vget_low_s16(b_low), vget_low_s16(low[p].val[1]));
        acc[1] = vmlal_s16(acc[1], vget_low_s16(a_high), vget_high_s16(low[p].val[0]));
        acc[1] = vmlal_s16(acc[1], vget_low_s16(b_high), vget_high_s16(low[p].val[1]));
        acc[2] = vmlal_s16(acc[2], vget_high_s16(a_low), vget_low_s16(high[p].val[0]));
        acc[2] = vmlal_s16(acc[2], vget_high_s16(b_low), vget_low_s16(high[p].val[1]));
        acc[3] = vmlal_s16(acc[3], vget_high_s16(a_high), vget_high_s16(high[p].val[0]));
        acc[3] = vmlal_s16(acc[3], vget_high_s16(b_high), vget_high_s16(high[p].val[1]));
      }
      int32x4_t out[4];
      for (int q = 0; q < 4; ++q) {
        out[q] = vaddq_s32(requantize(acc[q], left_shift[q], multiplier[q],
                                      right_shift[q]),
                           zero_point);
      }
      /* Channel order: 0-3 (acc 0), 4-7 (acc 2), 8-11 (acc 1), 12-15. */
      const int16x8_t first = vcombine_s16(vqmovn_s32(out[0]), vqmovn_s32(out[2]));
      const int16x8_t second = vcombine_s16(vqmovn_s32(out[1]), vqmovn_s32(out[3]));
      int8x16_t bytes = vcombine_s8(vqmovn_s16(first), vqmovn_s16(second));
      bytes = vminq_s8(vmaxq_s8(bytes, low_clamp), high_clamp);
      int8_t* destination = output + pixel * channels + base;
      if (count == CLICKTRAIN_S8_PATDWCONV_GROUP) {
        vst1q_s8(destination, bytes);
      } else {
        int8_t partial[CLICKTRAIN_S8_PATDWCONV_GROUP];
        vst1q_s8(partial, bytes);
        memcpy(destination, partial, count);
      }
    }
  }
}

const clicktrain_s8_patdwconv_ukernels clicktrain_s8_patdwconv_ukernels__neon =
    {"neon", row__neon};
#endif
