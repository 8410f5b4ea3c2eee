/* AVX-512 (F, BW, VL) + VNNI int8 pattern depthwise row kernel, 16
 * channels per group: the two taps of a pair loaded as one 32-byte vector,
 * sign-extended to int16, interleaved by VPERMW into the group's lane order
 * and accumulated with VPDPWSSD; TFLite's requantization with VPMULDQ and
 * VPSRAVQ; masked loads and stores for a partial group. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "clicktrain/pattern_dwconv_s8.h"

/* Element e of the interleaved pair (see pattern_dwconv_s8.h): from the
 * int16 vector [tap a's 16 channels, tap b's 16 channels]. */
static __m512i pair_order(void) {
  int16_t order[32];
  for (int e = 0; e < 32; ++e) {
    const int k = e % 8, lane = (e % 16) / 8;
    order[e] = (int16_t)((k % 2) * 16 + lane * 8 + (e >= 16 ? 4 : 0) + k / 2);
  }
  return _mm512_loadu_si512(order);
}

/* Byte c of the result: lane-order element of channel c. */
static __m128i channel_order(void) {
  int8_t order[16];
  for (int c = 0; c < 16; ++c) order[c] = (int8_t)(8 * ((c % 8) / 4) + 4 * (c / 8) + c % 4);
  return _mm_loadu_si128((const __m128i*)order);
}

/* The 64-bit parameters of the even (odd) lanes of a 16-lane vector. */
static __m512i wide_lanes(const int64_t* values, int odd) {
  const __m256i low = _mm256_loadu_si256((const __m256i*)(values + 4 * odd));
  const __m256i high = _mm256_loadu_si256((const __m256i*)(values + 8 + 4 * odd));
  return _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
}

static inline __m512i round_shift(__m512i product, __m512i rounding,
                                  __m512i negative, __m512i right_shift) {
  const __mmask8 is_negative =
      _mm512_cmplt_epi64_mask(product, _mm512_setzero_si512());
  __m512i rounded = _mm512_add_epi64(product, rounding);
  rounded = _mm512_mask_sub_epi64(rounded, is_negative, rounded, negative);
  return _mm512_srav_epi64(rounded, right_shift);
}

typedef struct requantization {
  __m512i left_shift, multiplier, multiplier_odd;
  __m512i shift_even, shift_odd, rounding_even, rounding_odd;
  __m512i negative_even, negative_odd, zero_point;
  __m128i bytes_order, low_clamp, high_clamp;
} requantization;

/* Tap pair p of a pixel, interleaved in the group's lane order. */
static inline __m512i load_pair(const int8_t* const* addresses,
                                const int* taps, uint32_t p, size_t base,
                                __mmask16 mask, __m512i order) {
  const __m128i a = _mm_maskz_loadu_epi8(mask, addresses[taps[2 * p]] + base);
  const __m128i b = _mm_maskz_loadu_epi8(mask, addresses[taps[2 * p + 1]] + base);
  const __m512i words = _mm512_cvtepi8_epi16(
      _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1));
  return _mm512_permutexvar_epi16(order, words);
}

/* TFLite's requantization of 16 sums in lane order, plus the zero point. */
static inline __m512i requantize(__m512i acc, const requantization* q) {
  const __m512i x = _mm512_sllv_epi32(acc, q->left_shift);
  const __m512i even = round_shift(_mm512_mul_epi32(x, q->multiplier),
                                   q->rounding_even, q->negative_even,
                                   q->shift_even);
  const __m512i odd = round_shift(
      _mm512_mul_epi32(_mm512_srli_epi64(x, 32), q->multiplier_odd),
      q->rounding_odd, q->negative_odd, q->shift_odd);
  return _mm512_add_epi32(
      _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32)),
      q->zero_point);
}

/* Saturated to int8, in channel order, clamped, stored. */
static inline void store(__m512i result, const requantization* q,
                         __mmask16 mask, int8_t* destination) {
  __m128i bytes =
      _mm_shuffle_epi8(_mm512_cvtsepi32_epi8(result), q->bytes_order);
  bytes = _mm_min_epi8(_mm_max_epi8(bytes, q->low_clamp), q->high_clamp);
  _mm_mask_storeu_epi8(destination, mask, bytes);
}

static void row__avx512vnni(size_t pixels, size_t channels,
                            const int8_t* const* indirection,
                            const clicktrain_s8_patdwconv_group* groups,
                            const clicktrain_s8_output_params* params,
                            int8_t* output) {
  const __m512i order = pair_order();
  const __m128i bytes_order = channel_order();
  const __m512i zero_point = _mm512_set1_epi32(params->zero_point);
  const __m128i low_clamp = _mm_set1_epi8((char)params->min);
  const __m128i high_clamp = _mm_set1_epi8((char)params->max);
  for (size_t base = 0; base < channels;
       base += CLICKTRAIN_S8_PATDWCONV_GROUP, ++groups) {
    size_t count = channels - base;
    if (count > CLICKTRAIN_S8_PATDWCONV_GROUP) {
      count = CLICKTRAIN_S8_PATDWCONV_GROUP;
    }
    const __mmask16 mask = (__mmask16)((1u << count) - 1u);
    const uint32_t pairs = groups->pairs;
    int taps[2 * CLICKTRAIN_S8_PATDWCONV_MAX_PAIRS];
    for (uint32_t t = 0; t < 2 * pairs; ++t) taps[t] = groups->taps[t];
    const __m512i* weights = (const __m512i*)groups->weights;
    const __m512i bias = _mm512_loadu_si512(groups->bias);
    const __m512i left_shift = _mm512_loadu_si512(groups->left_shift);
    const __m512i multiplier = _mm512_loadu_si512(groups->multiplier);
    const __m512i multiplier_odd = _mm512_srli_epi64(multiplier, 32);
    const __m512i shift_even = wide_lanes(groups->right_shift, 0);
    const __m512i shift_odd = wide_lanes(groups->right_shift, 1);
    const __m512i rounding_even = wide_lanes(groups->rounding, 0);
    const __m512i rounding_odd = wide_lanes(groups->rounding, 1);
    const __m512i negative_even = wide_lanes(groups->negative_rounding, 0);
    const __m512i negative_odd = wide_lanes(groups->negative_rounding, 1);
    const requantization q = {left_shift,    multiplier,   multiplier_odd,
                              shift_even,    shift_odd,    rounding_even,
                              rounding_odd,  negative_even, negative_odd,
                              zero_point,    bytes_order,  low_clamp,
                              high_clamp};
    size_t pixel = 0;
    /* Two pixels at a time: two independent VPDPWSSD chains per weight. */
    for (; pixel + 2 <= pixels; pixel += 2) {
      const int8_t* const* first = indirection + pixel * 9;
      const int8_t* const* second = first + 9;
      __m512i acc0 = bias, acc1 = bias;
      for (uint32_t p = 0; p < pairs; ++p) {
        const __m512i w = _mm512_load_si512(weights + p);
        acc0 = _mm512_dpwssd_epi32(
            acc0, load_pair(first, taps, p, base, mask, order), w);
        acc1 = _mm512_dpwssd_epi32(
            acc1, load_pair(second, taps, p, base, mask, order), w);
      }
      store(requantize(acc0, &q), &q, mask, output + pixel * channels + base);
      store(requantize(acc1, &q), &q, mask,
            output + (pixel + 1) * channels + base);
    }
    for (; pixel < pixels; ++pixel) {
      const int8_t* const* addresses = indirection + pixel * 9;
      __m512i acc = bias;
      for (uint32_t p = 0; p < pairs; ++p) {
        acc = _mm512_dpwssd_epi32(
            acc, load_pair(addresses, taps, p, base, mask, order),
            _mm512_load_si512(weights + p));
      }
      store(requantize(acc, &q), &q, mask, output + pixel * channels + base);
    }
  }
}

const clicktrain_s8_patdwconv_ukernels
    clicktrain_s8_patdwconv_ukernels__avx512vnni = {"avx512", row__avx512vnni};
#endif
