/* AVX2 micro-kernels of the int8 pattern conv (interface in
 * include/clicktrain/pattern_conv_s8.h), for x86-64 CPUs without AVX-512
 * VNNI. Compiled with -mavx2 and only called when the CPU has it.
 *
 * VPMADDUBSW would saturate on u8 x s8 pairs (255 x -128 x 2 overflows
 * int16), so the slots hold the taps as int16: per pixel 4 words, and
 * VPMADDWD with the kernel's 4 weights gives two exact int32 partial sums
 * per pixel (taps 0+1, 2+3), added pairwise once per filter. A tile is
 * computed in two halves of 32 pixels (8 ymm accumulators). Requantization
 * is TFLite's MultiplyByQuantizedMultiplier, exactly, as in the AVX-512
 * variant, with the 64-bit arithmetic shift AVX2 lacks built from a logical
 * shift and the sign. */
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>
#include <string.h>

#include "clicktrain/pattern_conv_s8.h"

enum { kTile = CLICKTRAIN_S8_PATCONV_TILE, kSlotBytes = 8 * kTile };

/* Slot = 16 ymm: for each 16-pixel chunk c, ymm 4 c + q holds pixels
 * (2q, 2q+1) and (8+2q, 9+2q) of the chunk, 4 int16 taps each. */
static void pack(size_t slots, const uint32_t* tap_offsets,
                 const uint8_t* planes, uint8_t* packed) {
  for (size_t s = 0; s < slots; ++s, tap_offsets += 4, packed += kSlotBytes) {
    for (size_t chunk = 0; chunk < kTile / 16; ++chunk) {
      const size_t at = 16 * chunk;
      const __m256i a = _mm256_cvtepu8_epi16(
          _mm_loadu_si128((const __m128i*)(planes + tap_offsets[0] + at)));
      const __m256i b = _mm256_cvtepu8_epi16(
          _mm_loadu_si128((const __m128i*)(planes + tap_offsets[1] + at)));
      const __m256i c = _mm256_cvtepu8_epi16(
          _mm_loadu_si128((const __m128i*)(planes + tap_offsets[2] + at)));
      const __m256i d = _mm256_cvtepu8_epi16(
          _mm_loadu_si128((const __m128i*)(planes + tap_offsets[3] + at)));
      const __m256i ab_low = _mm256_unpacklo_epi16(a, b);
      const __m256i ab_high = _mm256_unpackhi_epi16(a, b);
      const __m256i cd_low = _mm256_unpacklo_epi16(c, d);
      const __m256i cd_high = _mm256_unpackhi_epi16(c, d);
      __m256i* target = (__m256i*)(packed + 128 * chunk);
      _mm256_store_si256(target + 0, _mm256_unpacklo_epi32(ab_low, cd_low));
      _mm256_store_si256(target + 1, _mm256_unpackhi_epi32(ab_low, cd_low));
      _mm256_store_si256(target + 2, _mm256_unpacklo_epi32(ab_high, cd_high));
      _mm256_store_si256(target + 3, _mm256_unpackhi_epi32(ab_high, cd_high));
    }
  }
}

/* floor(v / 2^shift) for 31 <= shift <= 62, low 32 bits (the result fits). */
static inline __m256i shift_right_arithmetic(__m256i v, __m128i shift,
                                             __m128i fill_shift) {
  const __m256i negative = _mm256_cmpgt_epi64(_mm256_setzero_si256(), v);
  return _mm256_or_si256(_mm256_srl_epi64(v, shift),
                         _mm256_sll_epi64(negative, fill_shift));
}

/* 8 sums -> 8 requantized values plus the output zero point (int32). */
static inline __m256i requantize(
    __m256i sum, const clicktrain_s8_filter_requantization* q,
    __m256i zero_point) {
  const __m256i multiplier = _mm256_set1_epi32(q->multiplier);
  const __m256i rounding = _mm256_set1_epi64x(q->rounding);
  const __m256i negative_rounding = _mm256_set1_epi64x(q->negative_rounding);
  const __m128i right_shift = _mm_cvtsi32_si128((int)q->right_shift);
  const __m128i fill_shift = _mm_cvtsi32_si128(64 - (int)q->right_shift);
  const __m256i x = _mm256_sll_epi32(
      _mm256_add_epi32(sum, _mm256_set1_epi32(q->bias)),
      _mm_cvtsi32_si128((int)q->left_shift));
  __m256i even = _mm256_mul_epi32(x, multiplier);
  __m256i odd = _mm256_mul_epi32(_mm256_srli_epi64(x, 32), multiplier);
  const __m256i zero = _mm256_setzero_si256();
  even = _mm256_sub_epi64(
      _mm256_add_epi64(even, rounding),
      _mm256_and_si256(_mm256_cmpgt_epi64(zero, even), negative_rounding));
  odd = _mm256_sub_epi64(
      _mm256_add_epi64(odd, rounding),
      _mm256_and_si256(_mm256_cmpgt_epi64(zero, odd), negative_rounding));
  even = shift_right_arithmetic(even, right_shift, fill_shift);
  odd = shift_right_arithmetic(odd, right_shift, fill_shift);
  return _mm256_add_epi32(
      _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA), zero_point);
}

static void compute(size_t filters, const uint32_t* program,
                    const uint8_t* packed, int32_t* accumulators, int first,
                    int last,
                    const clicktrain_s8_filter_requantization* requantization,
                    const clicktrain_s8_output_params* params,
                    int8_t* output) {
  const __m256i zero_point = _mm256_set1_epi32(params->zero_point);
  const __m256i low = _mm256_set1_epi8((char)params->min);
  const __m256i high = _mm256_set1_epi8((char)params->max);
  for (size_t f = 0; f < filters; ++f, output += kTile) {
    const uint32_t count = *program++;
    const clicktrain_s8_filter_requantization* q = &requantization[f];
    for (size_t half = 0; half < 2; ++half) {
      /* Partial sums: 8 ymm per half, 2 per pixel (taps 0+1, 2+3). */
      __m256i* partial = (__m256i*)(accumulators + f * 2 * kTile) + 8 * half;
      __m256i acc[8];
      for (int i = 0; i < 8; ++i) {
        acc[i] = first ? _mm256_setzero_si256() : _mm256_load_si256(partial + i);
      }
      const size_t base = half * (kSlotBytes / 2);
      for (uint32_t k = 0; k < count; ++k) {
        const __m256i* slot =
            (const __m256i*)(packed + program[2 * k] + base);
        const __m256i w = _mm256_broadcastq_epi64(_mm_cvtepi8_epi16(
            _mm_cvtsi32_si128((int)program[2 * k + 1])));
        for (int i = 0; i < 8; ++i) {
          acc[i] = _mm256_add_epi32(
              acc[i], _mm256_madd_epi16(_mm256_load_si256(slot + i), w));
        }
      }
      if (!last) {
        for (int i = 0; i < 8; ++i) _mm256_store_si256(partial + i, acc[i]);
        continue;
      }
      /* Per 16-pixel chunk: pairwise sums give pixels 0-3 | 8-11 and
       * 4-7 | 12-15; the int16 pack puts them in order. */
      __m256i words[2];
      for (int chunk = 0; chunk < 2; ++chunk) {
        const __m256i* a = acc + 4 * chunk;
        words[chunk] = _mm256_packs_epi32(
            requantize(_mm256_hadd_epi32(a[0], a[1]), q, zero_point),
            requantize(_mm256_hadd_epi32(a[2], a[3]), q, zero_point));
      }
      /* Bytes of chunk 0 and 1 interleave by lane: restore the order. */
      const __m256i bytes = _mm256_permute4x64_epi64(
          _mm256_packs_epi16(words[0], words[1]), 0xD8);
      _mm256_storeu_si256((__m256i*)(output + 32 * half),
                          _mm256_min_epi8(_mm256_max_epi8(bytes, low), high));
    }
    program += 2 * count;
  }
}

const clicktrain_s8_patconv_ukernels clicktrain_s8_patconv_ukernels__avx2 = {
    .name = "avx2",
    .slot_bytes = kSlotBytes,
    .accumulator_bytes = 8 * kTile,
    .pack = pack,
    .compute = compute,
    .transpose = clicktrain_x8_transpose_ukernel__scalar,
    .gather_transpose = clicktrain_x8_gather_transpose_ukernel__scalar,
};

#endif
