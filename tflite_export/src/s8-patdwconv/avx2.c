/* AVX2 int8 pattern depthwise row kernel: 16 channels per group, the two
 * taps of a pair sign-extended to int16, interleaved and multiplied by
 * their weights with VPMADDWD (int32 sums in lane order), then TFLite's
 * requantization in 64-bit lanes (VPMULDQ). */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <string.h>

#include "clicktrain/pattern_dwconv_s8.h"

/* 16 int8 of a tap as int16; a group of fewer channels reads only them. */
static inline __m256i load_tap(const int8_t* tap, size_t count) {
  if (count == CLICKTRAIN_S8_PATDWCONV_GROUP) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)tap));
  }
  int8_t partial[CLICKTRAIN_S8_PATDWCONV_GROUP] = {0};
  memcpy(partial, tap, count);
  return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)partial));
}

typedef struct half_params {
  __m256i left_shift, multiplier, multiplier_odd;
  __m256i right_shift_even, right_shift_odd;
  __m256i rounding_even, rounding_odd;
  __m256i negative_even, negative_odd;
  __m256i sign_even, sign_odd;
} half_params;

static inline void load_half(const clicktrain_s8_patdwconv_group* g,
                             size_t half, half_params* p) {
  p->left_shift = _mm256_loadu_si256((const __m256i*)(g->left_shift + 8 * half));
  p->multiplier = _mm256_loadu_si256((const __m256i*)(g->multiplier + 8 * half));
  p->multiplier_odd = _mm256_srli_epi64(p->multiplier, 32);
  p->right_shift_even = _mm256_loadu_si256((const __m256i*)(g->right_shift + 8 * half));
  p->right_shift_odd = _mm256_loadu_si256((const __m256i*)(g->right_shift + 8 * half + 4));
  p->rounding_even = _mm256_loadu_si256((const __m256i*)(g->rounding + 8 * half));
  p->rounding_odd = _mm256_loadu_si256((const __m256i*)(g->rounding + 8 * half + 4));
  p->negative_even =
      _mm256_loadu_si256((const __m256i*)(g->negative_rounding + 8 * half));
  p->negative_odd =
      _mm256_loadu_si256((const __m256i*)(g->negative_rounding + 8 * half + 4));
  p->sign_even = _mm256_loadu_si256((const __m256i*)(g->sign_bit + 8 * half));
  p->sign_odd = _mm256_loadu_si256((const __m256i*)(g->sign_bit + 8 * half + 4));
}

/* (product + rounding - (product < 0 ? negative : 0)) >> right_shift. */
static inline __m256i round_shift(__m256i product, __m256i rounding,
                                  __m256i negative, __m256i right_shift,
                                  __m256i sign) {
  const __m256i is_negative =
      _mm256_cmpgt_epi64(_mm256_setzero_si256(), product);
  const __m256i rounded =
      _mm256_sub_epi64(_mm256_add_epi64(product, rounding),
                       _mm256_and_si256(is_negative, negative));
  /* Arithmetic shift as a logical one with the sign bit folded back. */
  const __m256i shifted = _mm256_srlv_epi64(rounded, right_shift);
  return _mm256_sub_epi64(_mm256_xor_si256(shifted, sign), sign);
}

static inline __m256i requantize(__m256i acc, const half_params* p) {
  const __m256i x = _mm256_sllv_epi32(acc, p->left_shift);
  const __m256i even = _mm256_mul_epi32(x, p->multiplier);
  const __m256i odd =
      _mm256_mul_epi32(_mm256_srli_epi64(x, 32), p->multiplier_odd);
  const __m256i low = round_shift(even, p->rounding_even, p->negative_even,
                                  p->right_shift_even, p->sign_even);
  const __m256i high = round_shift(odd, p->rounding_odd, p->negative_odd,
                                   p->right_shift_odd, p->sign_odd);
  return _mm256_blend_epi32(low, _mm256_slli_epi64(high, 32), 0xAA);
}

static void row__avx2(size_t pixels, size_t channels,
                      const int8_t* const* indirection,
                      const clicktrain_s8_patdwconv_group* groups,
                      const clicktrain_s8_output_params* params,
                      int8_t* output) {
  const __m256i zero_point = _mm256_set1_epi32(params->zero_point);
  const __m128i low_clamp = _mm_set1_epi8((char)params->min);
  const __m128i high_clamp = _mm_set1_epi8((char)params->max);
  for (size_t base = 0; base < channels;
       base += CLICKTRAIN_S8_PATDWCONV_GROUP, ++groups) {
    size_t count = channels - base;
    if (count > CLICKTRAIN_S8_PATDWCONV_GROUP) {
      count = CLICKTRAIN_S8_PATDWCONV_GROUP;
    }
    half_params low_params, high_params;
    load_half(groups, 0, &low_params);
    load_half(groups, 1, &high_params);
    const __m256i bias_low = _mm256_loadu_si256((const __m256i*)groups->bias);
    const __m256i bias_high =
        _mm256_loadu_si256((const __m256i*)(groups->bias + 8));
    const uint32_t pairs = groups->pairs;
    const __m256i* weights = (const __m256i*)groups->weights;
    for (size_t pixel = 0; pixel < pixels; ++pixel) {
      const int8_t* const* taps = indirection + pixel * 9;
      __m256i acc_low = bias_low, acc_high = bias_high;
      for (uint32_t p = 0; p < pairs; ++p) {
        const __m256i a = load_tap(taps[groups->taps[2 * p]] + base, count);
        const __m256i b = load_tap(taps[groups->taps[2 * p + 1]] + base, count);
        acc_low = _mm256_add_epi32(
            acc_low, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b),
                                       _mm256_load_si256(weights + 2 * p)));
        acc_high = _mm256_add_epi32(
            acc_high, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b),
                                        _mm256_load_si256(weights + 2 * p + 1)));
      }
      const __m256i out_low =
          _mm256_add_epi32(requantize(acc_low, &low_params), zero_point);
      const __m256i out_high =
          _mm256_add_epi32(requantize(acc_high, &high_params), zero_point);
      /* Per 128-bit half: channels 0-3 of low, 0-3 of high -> 0..7. */
      const __m256i words = _mm256_packs_epi32(out_low, out_high);
      const __m256i bytes = _mm256_permute4x64_epi64(
          _mm256_packs_epi16(words, words), 0x08);
      __m128i result = _mm256_castsi256_si128(bytes);
      result = _mm_min_epi8(_mm_max_epi8(result, low_clamp), high_clamp);
      int8_t* destination = output + pixel * channels + base;
      if (count == CLICKTRAIN_S8_PATDWCONV_GROUP) {
        _mm_storeu_si128((__m128i*)destination, result);
      } else {
        int8_t partial[CLICKTRAIN_S8_PATDWCONV_GROUP];
        _mm_storeu_si128((__m128i*)partial, result);
        memcpy(destination, partial, count);
      }
    }
  }
}

const clicktrain_s8_patdwconv_ukernels clicktrain_s8_patdwconv_ukernels__avx2 =
    {"avx2", row__avx2};
#endif
