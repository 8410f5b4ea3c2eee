/* AVX-512 VNNI micro-kernels of the int8 pattern conv (interface in
 * include/clicktrain/pattern_conv_s8.h). Compiled with -mavx512f
 * -mavx512bw -mavx512vl -mavx512vnni and only called when the CPU has them.
 *
 * compute: a tile of 64 pixels is 4 zmm accumulators of 16 int32 lanes; one
 * VPDPBUSD of a packed slot vector (16 pixels x 4 u8 taps) with the
 * kernel's 4 int8 weights broadcast does 64 multiply-adds. Two accumulator
 * sets (even / odd kernels) hide the instruction's latency. Requantization
 * is TFLite's MultiplyByQuantizedMultiplier, exactly: 64-bit products of
 * the even and odd lanes, one rounding shift (see
 * clicktrain_s8_filter_requantization), then zero point and clamp. */
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>
#include <string.h>

#include "clicktrain/pattern_conv_s8.h"

enum { kTile = CLICKTRAIN_S8_PATCONV_TILE };

/* acc += u8 x s8 dot products of 4 (VPDPBUSD). Through asm: GCC copies the
 * accumulators around _mm512_dpbusd_epi32 in the hot loop. */
static inline __m512i dot4(__m512i acc, __m512i u8, __m512i s8) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
  return acc;
}

/* Slot vector j (j = 0..3) holds, in lane k, pixels 16 k + 4 j .. + 3 (the
 * in-lane byte and word interleaves of the 4 streams); compute's in-lane
 * saturating packs of its 4 result vectors restore the pixel order. */
static void pack(size_t slots, const uint32_t* tap_offsets,
                 const uint8_t* planes, uint8_t* packed) {
  for (size_t s = 0; s < slots; ++s, tap_offsets += 4, packed += 4 * kTile) {
    const __m512i a = _mm512_loadu_si512(planes + tap_offsets[0]);
    const __m512i b = _mm512_loadu_si512(planes + tap_offsets[1]);
    const __m512i c = _mm512_loadu_si512(planes + tap_offsets[2]);
    const __m512i d = _mm512_loadu_si512(planes + tap_offsets[3]);
    const __m512i ab_low = _mm512_unpacklo_epi8(a, b);
    const __m512i ab_high = _mm512_unpackhi_epi8(a, b);
    const __m512i cd_low = _mm512_unpacklo_epi8(c, d);
    const __m512i cd_high = _mm512_unpackhi_epi8(c, d);
    _mm512_store_si512(packed, _mm512_unpacklo_epi16(ab_low, cd_low));
    _mm512_store_si512(packed + 64, _mm512_unpackhi_epi16(ab_low, cd_low));
    _mm512_store_si512(packed + 128, _mm512_unpacklo_epi16(ab_high, cd_high));
    _mm512_store_si512(packed + 192, _mm512_unpackhi_epi16(ab_high, cd_high));
  }
}

/* 16 sums -> 16 requantized values plus the output zero point, in int32
 * lanes (wrapping as TFLite's int32 does; clamped after packing). */
static inline __m512i requantize(__m512i sum, __m512i multiplier,
                                 __m128i left_shift, __m128i right_shift,
                                 __m512i rounding, __m512i negative_rounding,
                                 __m512i merge, __m512i zero_point) {
  const __m512i x = _mm512_sll_epi32(sum, left_shift);
  __m512i even = _mm512_mul_epi32(x, multiplier);
  __m512i odd = _mm512_mul_epi32(_mm512_srli_epi64(x, 32), multiplier);
  const __mmask8 even_negative =
      _mm512_cmplt_epi64_mask(even, _mm512_setzero_si512());
  const __mmask8 odd_negative =
      _mm512_cmplt_epi64_mask(odd, _mm512_setzero_si512());
  even = _mm512_add_epi64(even, rounding);
  odd = _mm512_add_epi64(odd, rounding);
  even = _mm512_mask_sub_epi64(even, even_negative, even, negative_rounding);
  odd = _mm512_mask_sub_epi64(odd, odd_negative, odd, negative_rounding);
  even = _mm512_sra_epi64(even, right_shift);
  odd = _mm512_sra_epi64(odd, right_shift);
  return _mm512_add_epi32(_mm512_permutex2var_epi32(even, merge, odd),
                          zero_point);
}

static void compute(size_t filters, const uint32_t* program,
                    const uint8_t* packed, int32_t* accumulators, int first,
                    int last,
                    const clicktrain_s8_filter_requantization* requantization,
                    const clicktrain_s8_output_params* params,
                    int8_t* output) {
  const __m512i merge = _mm512_set_epi32(30, 14, 28, 12, 26, 10, 24, 8, 22, 6,
                                         20, 4, 18, 2, 16, 0);
  const __m512i zero_point = _mm512_set1_epi32(params->zero_point);
  const __m512i low = _mm512_set1_epi8((char)params->min);
  const __m512i high = _mm512_set1_epi8((char)params->max);
  for (size_t f = 0; f < filters; ++f, output += kTile) {
    int32_t* partial = accumulators + f * kTile;
    __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
    __m512i acc2 = _mm512_setzero_si512(), acc3 = _mm512_setzero_si512();
    if (!first) {
      acc0 = _mm512_load_si512(partial);
      acc1 = _mm512_load_si512(partial + 16);
      acc2 = _mm512_load_si512(partial + 32);
      acc3 = _mm512_load_si512(partial + 48);
    }
    const uint32_t count = *program++;
    for (uint32_t k = 0; k < count; ++k, program += 2) {
      const uint8_t* slot = packed + program[0];
      const __m512i w = _mm512_set1_epi32((int)program[1]);
      acc0 = dot4(acc0, _mm512_load_si512(slot), w);
      acc1 = dot4(acc1, _mm512_load_si512(slot + 64), w);
      acc2 = dot4(acc2, _mm512_load_si512(slot + 128), w);
      acc3 = dot4(acc3, _mm512_load_si512(slot + 192), w);
    }
    if (!last) {
      _mm512_store_si512(partial, acc0);
      _mm512_store_si512(partial + 16, acc1);
      _mm512_store_si512(partial + 32, acc2);
      _mm512_store_si512(partial + 48, acc3);
      continue;
    }
    const clicktrain_s8_filter_requantization* q = &requantization[f];
    const __m512i bias = _mm512_set1_epi32(q->bias);
    const __m512i multiplier = _mm512_set1_epi32(q->multiplier);
    const __m128i left_shift = _mm_cvtsi32_si128((int)q->left_shift);
    const __m128i right_shift = _mm_cvtsi32_si128((int)q->right_shift);
    const __m512i rounding = _mm512_set1_epi64(q->rounding);
    const __m512i negative_rounding = _mm512_set1_epi64(q->negative_rounding);
#define CLICKTRAIN_REQUANTIZE(a)                                             \
  requantize(_mm512_add_epi32(a, bias), multiplier,                          \
             left_shift, right_shift, rounding, negative_rounding, merge,    \
             zero_point)
    const __m512i out0 = CLICKTRAIN_REQUANTIZE(acc0);
    const __m512i out1 = CLICKTRAIN_REQUANTIZE(acc1);
    const __m512i out2 = CLICKTRAIN_REQUANTIZE(acc2);
    const __m512i out3 = CLICKTRAIN_REQUANTIZE(acc3);
#undef CLICKTRAIN_REQUANTIZE
    /* Saturating in-lane packs: lane k gets out0..out3's lane k, i.e.
     * pixels 16 k .. 16 k + 15 in order; saturation to int8 is exact under
     * the clamp that follows. */
    const __m512i bytes = _mm512_packs_epi16(_mm512_packs_epi32(out0, out1),
                                             _mm512_packs_epi32(out2, out3));
    _mm512_store_si512(output,
                       _mm512_min_epi8(_mm512_max_epi8(bytes, low), high));
  }
}

/* Transposes 16 rows x 64 columns in place: each zmm row holds four 16x16
 * byte blocks (one per 128-bit lane), transposed together by four in-lane
 * unpack stages; r[j] then holds, in lane b, column 16 b + j. Written out
 * stage by stage so that GCC keeps the 32 vectors in registers. */
#define CLICKTRAIN_UNPACK(width, out, x, y, lo, hi) \
  out[lo] = _mm512_unpacklo_##width(x, y);          \
  out[hi] = _mm512_unpackhi_##width(x, y)
static inline void transpose_block(__m512i* r) {
  __m512i a[16];
  /* a[2 i + h]: rows 2i, 2i+1 (16-bit), columns 8h..8h+7. */
  CLICKTRAIN_UNPACK(epi8, a, r[0], r[1], 0, 1);
  CLICKTRAIN_UNPACK(epi8, a, r[2], r[3], 2, 3);
  CLICKTRAIN_UNPACK(epi8, a, r[4], r[5], 4, 5);
  CLICKTRAIN_UNPACK(epi8, a, r[6], r[7], 6, 7);
  CLICKTRAIN_UNPACK(epi8, a, r[8], r[9], 8, 9);
  CLICKTRAIN_UNPACK(epi8, a, r[10], r[11], 10, 11);
  CLICKTRAIN_UNPACK(epi8, a, r[12], r[13], 12, 13);
  CLICKTRAIN_UNPACK(epi8, a, r[14], r[15], 14, 15);
  /* r[4 m + q]: rows 4m..4m+3 (32-bit), columns 4q..4q+3. */
  CLICKTRAIN_UNPACK(epi16, r, a[0], a[2], 0, 1);
  CLICKTRAIN_UNPACK(epi16, r, a[1], a[3], 2, 3);
  CLICKTRAIN_UNPACK(epi16, r, a[4], a[6], 4, 5);
  CLICKTRAIN_UNPACK(epi16, r, a[5], a[7], 6, 7);
  CLICKTRAIN_UNPACK(epi16, r, a[8], a[10], 8, 9);
  CLICKTRAIN_UNPACK(epi16, r, a[9], a[11], 10, 11);
  CLICKTRAIN_UNPACK(epi16, r, a[12], a[14], 12, 13);
  CLICKTRAIN_UNPACK(epi16, r, a[13], a[15], 14, 15);
  /* a[8 n + e]: rows 8n..8n+7 (64-bit), columns 2e, 2e+1. */
  CLICKTRAIN_UNPACK(epi32, a, r[0], r[4], 0, 1);
  CLICKTRAIN_UNPACK(epi32, a, r[1], r[5], 2, 3);
  CLICKTRAIN_UNPACK(epi32, a, r[2], r[6], 4, 5);
  CLICKTRAIN_UNPACK(epi32, a, r[3], r[7], 6, 7);
  CLICKTRAIN_UNPACK(epi32, a, r[8], r[12], 8, 9);
  CLICKTRAIN_UNPACK(epi32, a, r[9], r[13], 10, 11);
  CLICKTRAIN_UNPACK(epi32, a, r[10], r[14], 12, 13);
  CLICKTRAIN_UNPACK(epi32, a, r[11], r[15], 14, 15);
  /* r[j]: column j, rows 0..15. */
  CLICKTRAIN_UNPACK(epi64, r, a[0], a[8], 0, 1);
  CLICKTRAIN_UNPACK(epi64, r, a[1], a[9], 2, 3);
  CLICKTRAIN_UNPACK(epi64, r, a[2], a[10], 4, 5);
  CLICKTRAIN_UNPACK(epi64, r, a[3], a[11], 6, 7);
  CLICKTRAIN_UNPACK(epi64, r, a[4], a[12], 8, 9);
  CLICKTRAIN_UNPACK(epi64, r, a[5], a[13], 10, 11);
  CLICKTRAIN_UNPACK(epi64, r, a[6], a[14], 12, 13);
  CLICKTRAIN_UNPACK(epi64, r, a[7], a[15], 14, 15);
}
#undef CLICKTRAIN_UNPACK

/* Up to 16 rows (rows[i] for i < row_count) x `columns`, in blocks of 64
 * columns (transpose_block), stored column by column from the registers
 * (with a row mask when fewer than 16 rows); a block of fewer columns goes
 * through a buffer. */
static inline void transpose_rows(const uint8_t* const* rows, size_t row_count,
                                  size_t columns, uint8_t* destination,
                                  size_t destination_stride,
                                  __m512i flip_bytes) {
  const __mmask16 row_mask = (__mmask16)((1u << row_count) - 1u);
  for (size_t c0 = 0; c0 < columns; c0 += 64) {
    const size_t column_count = columns - c0 < 64 ? columns - c0 : 64;
    const __mmask64 column_mask =
        column_count == 64 ? ~(__mmask64)0
                           : (((__mmask64)1 << column_count) - 1);
    __m512i r[16];
#pragma GCC unroll 16
    for (size_t i = 0; i < 16; ++i) {
      r[i] = i < row_count
                 ? _mm512_xor_si512(
                       _mm512_maskz_loadu_epi8(column_mask, rows[i] + c0),
                       flip_bytes)
                 : _mm512_setzero_si512();
    }
    transpose_block(r);
    uint8_t* target = destination + c0 * destination_stride;
#define CLICKTRAIN_STORE_COLUMN(store, j)                     \
  store(j, _mm512_castsi512_si128(r[j]))                      \
  store(16 + (j), _mm512_extracti32x4_epi32(r[j], 1))         \
  store(32 + (j), _mm512_extracti32x4_epi32(r[j], 2))         \
  store(48 + (j), _mm512_extracti32x4_epi32(r[j], 3))
#define CLICKTRAIN_STORE_COLUMNS(store)                                     \
  CLICKTRAIN_STORE_COLUMN(store, 0) CLICKTRAIN_STORE_COLUMN(store, 1)       \
  CLICKTRAIN_STORE_COLUMN(store, 2) CLICKTRAIN_STORE_COLUMN(store, 3)       \
  CLICKTRAIN_STORE_COLUMN(store, 4) CLICKTRAIN_STORE_COLUMN(store, 5)       \
  CLICKTRAIN_STORE_COLUMN(store, 6) CLICKTRAIN_STORE_COLUMN(store, 7)       \
  CLICKTRAIN_STORE_COLUMN(store, 8) CLICKTRAIN_STORE_COLUMN(store, 9)       \
  CLICKTRAIN_STORE_COLUMN(store, 10) CLICKTRAIN_STORE_COLUMN(store, 11)     \
  CLICKTRAIN_STORE_COLUMN(store, 12) CLICKTRAIN_STORE_COLUMN(store, 13)     \
  CLICKTRAIN_STORE_COLUMN(store, 14) CLICKTRAIN_STORE_COLUMN(store, 15)
#define CLICKTRAIN_STORE_FULL(c, value) \
  _mm_storeu_si128((__m128i*)(target + (c)*destination_stride), value);
#define CLICKTRAIN_STORE_MASKED(c, value) \
  _mm_mask_storeu_epi8(target + (c)*destination_stride, row_mask, value);
    if (column_count == 64 && row_count == 16) {
      CLICKTRAIN_STORE_COLUMNS(CLICKTRAIN_STORE_FULL)
      continue;
    }
    if (column_count == 64) {
      CLICKTRAIN_STORE_COLUMNS(CLICKTRAIN_STORE_MASKED)
      continue;
    }
#undef CLICKTRAIN_STORE_MASKED
#undef CLICKTRAIN_STORE_FULL
#undef CLICKTRAIN_STORE_COLUMNS
#undef CLICKTRAIN_STORE_COLUMN
    /* buffer[j] lane b holds column 16 b + j. */
    __m512i buffer[16];
#pragma GCC unroll 16
    for (size_t j = 0; j < 16; ++j) _mm512_store_si512(&buffer[j], r[j]);
    const uint8_t* columns_bytes = (const uint8_t*)buffer;
    for (size_t c = 0; c < column_count; ++c) {
      _mm_mask_storeu_epi8(target + c * destination_stride, row_mask,
                           _mm_load_si128((const __m128i*)(
                               columns_bytes + (c % 16) * 64 + (c / 16) * 16)));
    }
  }
}

static void transpose(size_t rows, size_t columns, const uint8_t* source,
                      size_t source_stride, uint8_t* destination,
                      size_t destination_stride, uint8_t flip) {
  const __m512i flip_bytes = _mm512_set1_epi8((char)flip);
  for (size_t r0 = 0; r0 < rows; r0 += 16) {
    const size_t row_count = rows - r0 < 16 ? rows - r0 : 16;
    const uint8_t* block_rows[16];
    for (size_t i = 0; i < row_count; ++i) {
      block_rows[i] = source + (r0 + i) * source_stride;
    }
    transpose_rows(block_rows, row_count, columns, destination + r0,
                   destination_stride, flip_bytes);
  }
}

static void gather_transpose(size_t rows, size_t columns,
                             const uint8_t* const* sources,
                             uint8_t* destination, size_t destination_stride,
                             uint8_t flip) {
  const __m512i flip_bytes = _mm512_set1_epi8((char)flip);
  for (size_t r0 = 0; r0 < rows; r0 += 16) {
    const size_t row_count = rows - r0 < 16 ? rows - r0 : 16;
    transpose_rows(sources + r0, row_count, columns, destination + r0,
                   destination_stride, flip_bytes);
  }
}

const clicktrain_s8_patconv_ukernels
    clicktrain_s8_patconv_ukernels__avx512vnni = {
        .name = "avx512",
        .slot_bytes = 4 * kTile,
        .accumulator_bytes = 4 * kTile,
        .pack = pack,
        .compute = compute,
        .transpose = transpose,
        .gather_transpose = gather_transpose,
};

#endif
