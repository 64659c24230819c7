// q8_0 and q4_0 forward products with integer activations (the default; packed.h has the
// exact f32 path). The arithmetic, the same in every variant and in test/native/qdot-reference.ts:
//  1. each row of activations is cut into blocks of 32 values x; a block's scale is
//     d = fl32(amax / R) and its integers Q = clamp(round_half_away(fl32(x / d)), -R, R), with
//     R = 127 for q4_0 weights (int8, llama.cpp's Q8_0) and R = 32512 = 127·256 for q8_0
//     weights (16 bits: int8 activations would double the error of 8-bit weights). Q = 0 when
//     d = 0; d = NaN and Q = 0 when the block holds an infinity or a NaN;
//  2. a block of a weight row (integers w, f16 scale dw) gives the exact integer isum = Σ Q·w;
//  3. out = acc after acc = fma(s_b, fl32(isum_b), acc) over the blocks in order from acc = 0,
//     with s_b = fl32(d_b · dw_b) and fma an f32 fused multiply-add (one rounding).
// So every variant, thread count and row count gives bit-identical results.
//
// Integer dot products take bytes, so 16-bit activations are split into two int8 digits,
// Q = 255·hi + lo with hi, lo in [-127, 127], dotted separately and combined exactly.
// x86 (AVX2 and up): more rows than a decode batch (prefill) repack 16 weight rows into a panel
// whose vectors hold a 4-byte group (VNNI) or a 2-value pair (AVX2) of each row, so broadcast
// activations accumulate whole block dot products in registers. With VNNI, up to 8 rows
// (decode, one sequence or a batch) build the same vectors in registers per block and use them
// at once; without, up to 8 rows do the same with 8 weight rows in a 256-bit vector. With VNNI
// (LLAVA_VNNI: kern_avx512.cc compiles this file again under target("avx512vnni")) weights
// enter vpdpbusd as unsigned bytes (q4_0: the nibble w + 8; q8_0: w + 128) and the bias times
// ΣQ of the activation block is subtracted; AVX2 uses vpmaddubsw on nibbles (q4_0 decode) or
// vpmaddwd on int16 (q8_0 decode, prefill): the 16-bit Q needs no digits there.

constexpr int QK = 32;  // values per quantized block

// Software prefetch into L2 this far ahead of the weights being read (bytes), for every weight
// stream here and in kqdot.h: measured from memory at one thread, 8-32 KiB took the row-order
// q8_0 / q4_0 kernels from 0.64 / 0.61 to 0.78 / 0.66 of the read bandwidth; the panel kernels'
// figures are at prefetch_panels_ahead.
constexpr int64_t kPrefetchAhead = 16384;

typedef int8_t vq __attribute__((vector_size(W)));  // W int8 lanes

// Activation rows quantized per block: the digits q (and lo: 16-bit activations only) [m][k],
// d and ΣQ [m][nb].
struct QActs {
  int8_t* q;
  int8_t* lo;
  float* d;
  int32_t* sum;
  int64_t k, nb;
};

// the activation integers' range ±R for a weight format (see the rule above)
template <int FMT>
constexpr int32_t levels() {
  return FMT == FMT_Q8_0 ? 127 * 256 : 127;
}

// One block of N activations (the rule above; N = 256 for the K formats, kqdot.h): R = 127
// gives q = Q; otherwise the digits q = hi and lo of Q = 255·hi + lo.
template <int32_t R, int N = QK>
static void quantize_block(const float* x, int8_t* q, int8_t* lo, float* d, int32_t* sum) {
  const vi abs_mask = vi{} + 0x7fffffff;
  vf amax = vf{};
  vi bad = vi{};
  for (int v = 0; v < N / W; v++) {
    const vf a = (vf)((vi)vload(x + v * W) & abs_mask);
    bad |= ~(vi)(a <= vset(3.4028234663852886e38f));  // set for inf and NaN
    amax = a > amax ? a : amax;
  }
  const bool all_finite = !any_lane(bad);
  const float dv = hmax(amax) / float(R);
  if (!all_finite || dv == 0.f) {
    for (int j = 0; j < N; j++) q[j] = 0;
    if (R != 127)
      for (int j = 0; j < N; j++) lo[j] = 0;
    *d = all_finite ? 0.f : __builtin_nanf("");
    *sum = 0;
    return;
  }
  vi total = vi{};
  for (int v = 0; v < N / W; v++) {
    const vf y = vload(x + v * W) / vset(dv);
    const vi t = __builtin_convertvector(y, vi);  // toward zero
    const vf ft = __builtin_convertvector(t, vf);
    // half away from zero: one more in magnitude when |y - t| >= 1/2 (t ± 1/2 is exact)
    vi r = t - (vi)(y >= ft + 0.5f) + (vi)(y <= ft - 0.5f);
    r = r > R ? vi{} + R : r;
    r = r < -R ? vi{} - R : r;
    total += r;
    if (R == 127) {
      const vq b = __builtin_convertvector(r, vq);
      __builtin_memcpy(q + v * W, &b, W);
    } else {
      // hi = the integer nearest Q / 255 (never a tie: 255 is odd; Q times the f32 reciprocal is
      // off by far less than the 1/510 to the nearest half), lo = Q - 255·hi in [-127, 127]
      const vf h = __builtin_convertvector(r, vf) * (1.f / 255.f);
      const vi hi = __builtin_convertvector(h + (vf)(((vi)h & ~abs_mask) | (vi)vset(0.5f)), vi);
      const vq bh = __builtin_convertvector(hi, vq), bl = __builtin_convertvector(r - 255 * hi, vq);
      __builtin_memcpy(q + v * W, &bh, W);
      __builtin_memcpy(lo + v * W, &bl, W);
    }
  }
  *d = dv;
  *sum = hsum_int(total);
}

template <int FMT>
static void quantize_rows(const Exec& ex, const float* a, int64_t m, const QActs& A) {
  chunked(ex, m, imax(1, 8192 / imax(A.k, 1)), [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; i++)
      for (int64_t b = 0; b < A.nb; b++) {
        const int64_t o = i * A.k + b * QK;
        quantize_block<levels<FMT>()>(a + o, A.q + o, A.lo ? A.lo + o : nullptr, A.d + i * A.nb + b, A.sum + i * A.nb + b);
      }
  });
}

static inline void put_out(float* c, float v, bool acc) { *c = acc ? *c + v : v; }

// fl32(a·b + c) with one rounding. Without an FMA instruction: a·b is exact in double (24 + 24
// bits), the sum is rounded to odd in double (53 >= 24 + 2 bits), and rounding that to f32
// gives the correctly rounded result (Boldo & Melquiond, "Emulation of FMA and correctly
// rounded sums: proved algorithms using rounding to odd").
static inline float fma_f32(float a, float b, float c) {
#if defined(__FMA__) || defined(__aarch64__) || defined(__FP_FAST_FMAF)
  return __builtin_fmaf(a, b, c);
#else
  const double p = double(a) * double(b), cd = double(c);
  double s = p + cd;
  const double bv = s - p, err = (p - (s - bv)) + (cd - bv);  // s + err = p + c exactly (TwoSum)
  if (err != 0 && s - s == 0) {
    uint64_t bits;
    __builtin_memcpy(&bits, &s, 8);
    if ((bits & 1) == 0) bits += (err > 0) == (s > 0) ? 1 : uint64_t(-1);  // to the odd neighbour
    __builtin_memcpy(&s, &bits, 8);
  }
  return float(s);
#endif
}

// ---- portable: whole weight rows as integers, one output at a time ----

// Row `row` of a q matrix as integer weights w[k] and block scales dw[nb].
static void unpack_row_int(int fmt, const uint8_t* row, int64_t nb, int8_t* w, float* dw) {
  const int64_t bb = block_bytes(fmt);
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t* blk = row + b * bb;
    dw[b] = f16s(rd16(blk));
    int8_t* o = w + b * QK;
    if (fmt == FMT_Q8_0) {
      __builtin_memcpy(o, blk + 2, QK);
    } else {
      for (int j = 0; j < 16; j++) {
        o[j] = int8_t((blk[2 + j] & 15) - 8);
        o[j + 16] = int8_t((blk[2 + j] >> 4) - 8);
      }
    }
  }
}

static float qdot_row_generic(const int8_t* w, const float* dw, const QActs& A, int64_t i) {
  const int8_t* x = A.q + i * A.k;
  const int8_t* lo = A.lo ? A.lo + i * A.k : nullptr;
  float acc = 0;
  for (int64_t b = 0; b < A.nb; b++) {
    int32_t isum = 0;
    for (int j = 0; j < QK; j++) {
      const int32_t xq = lo ? 255 * x[b * QK + j] + lo[b * QK + j] : x[b * QK + j];
      isum += xq * int32_t(w[b * QK + j]);
    }
    acc = fma_f32(A.d[i * A.nb + b] * dw[b], float(isum), acc);
  }
  return acc;
}

[[maybe_unused]] static void qmatmul_generic(const Exec& ex, const QActs& A, int64_t m, const PackedW& w, float* c, bool acc) {
  const int64_t n = w.rows;
  run(ex, ceil_div(n, 16), [&](int64_t t, int tid) {
    int8_t* wi = scratch<int8_t>(ex, tid, SLOT_B, A.k);
    float* dw = scratch<float>(ex, tid, SLOT_S, A.nb);
    RowReader rows(&w);
    for (int64_t j = t * 16; j < imin(n, (t + 1) * 16); j++) {
      unpack_row_int(w.fmt, rows.row(j), A.nb, wi, dw);
      for (int64_t i = 0; i < m; i++) put_out(c + i * n + j, qdot_row_generic(wi, dw, A, i), acc);
    }
  });
}

#if LLAVA_X86_SIMD && defined(__AVX2__)

#ifdef LLAVA_VNNI
constexpr bool kVnni = true;
#else
constexpr bool kVnni = false;
#endif

// What the raw integer dot of a block adds to Σ Q·w per unit of ΣQ: q4_0 weights enter as
// nibbles (w + 8); with VNNI q8_0 weights enter as w + 128; AVX2 dots q8_0 exactly.
template <int FMT>
constexpr int32_t raw_bias() {
  return FMT == FMT_Q4_0 ? 8 : (kVnni ? 128 : 0);
}

// int8 digits per activation value (16-bit activations: hi and lo)
template <int FMT>
constexpr int digits() {
  return levels<FMT>() == 127 ? 1 : 2;
}

template <int FMT>
constexpr int64_t block_size() {
  return kFmtBlockBytes[FMT];
}

static inline __m128i load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
static inline int32_t load32(const void* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

// ---- many activation rows (prefill): panels of 16 weight rows ----
//
// VNNI panel, per block: 8 groups of 4 values x 16 rows, 4 bytes each ([b][g][row][4], u8).
// Otherwise, per block: 16 pairs x 16 rows, two int16 each ([b][p][row][2]), and the
// activations enter as int16 Q (vpmaddwd: no saturation, no bias, no digits).
constexpr int PANEL = 16;
static_assert(PANEL == kIlvRows, "an interleaved panel is a panel");
constexpr int64_t kPanelBlockBytes = kVnni ? QK * PANEL : 2 * QK * PANEL;
// activation rows per register tile (AVX-512: 8 + 8, or 8 + 16 with two digits, of the 32
// registers accumulate; AVX2: 6 + 6 of 16)
#if defined(__AVX512BW__)
constexpr int kPanelRows = 8;
#else
constexpr int kPanelRows = 3;
#endif

// the f16 scales of block `off` of 8 rows, as f32
static inline __m256 rows_scales8(const uint8_t* const* rowp, int64_t off) {
  const auto h = [&](int r) { return short(rd16(rowp[r] + off)); };
  return _mm256_cvtph_ps(_mm_setr_epi16(h(0), h(1), h(2), h(3), h(4), h(5), h(6), h(7)));
}

// r[c] = 8 dwords of row c  ->  r[q] = dword q of rows 0..7
static inline void transpose8x8(__m256i* r) {
  __m256i t[8], s[8];
  for (int i = 0; i < 4; i++) {
    t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; h++) {  // rows 0-3, then 4-7
    const __m256i* u = t + 4 * h;
    s[4 * h + 0] = _mm256_unpacklo_epi64(u[0], u[2]);
    s[4 * h + 1] = _mm256_unpackhi_epi64(u[0], u[2]);
    s[4 * h + 2] = _mm256_unpacklo_epi64(u[1], u[3]);
    s[4 * h + 3] = _mm256_unpackhi_epi64(u[1], u[3]);
  }
  for (int q = 0; q < 4; q++) {
    r[q] = _mm256_permute2x128_si256(s[q], s[4 + q], 0x20);
    r[q + 4] = _mm256_permute2x128_si256(s[q], s[4 + q], 0x31);
  }
}

// VNNI: the 32 weights of a block (q points past the scale) as unsigned bytes (see raw_bias)
template <int FMT>
static inline __m256i block_bytes_u8(const uint8_t* q) {
  if (FMT == FMT_Q4_0) {
    const __m128i b = load128(q);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), _mm256_set1_epi8(15));
  }
  return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)), _mm256_set1_epi8(char(0x80)));
}

// AVX2: the 32 signed weights of a block as two vectors of 16 int16 (values 0-15, 16-31)
template <int FMT>
static inline void block_int16(const uint8_t* q, __m256i& lo, __m256i& hi) {
  if (FMT == FMT_Q4_0) {
    const __m128i b = load128(q), m = _mm_set1_epi8(15), e = _mm_set1_epi8(8);
    lo = _mm256_cvtepi8_epi16(_mm_sub_epi8(_mm_and_si128(b, m), e));
    hi = _mm256_cvtepi8_epi16(_mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), m), e));
  } else {
    lo = _mm256_cvtepi8_epi16(load128(q));
    hi = _mm256_cvtepi8_epi16(load128(q + 16));
  }
}

// `ahead`: the bytes from a weight row to the same row of the next panel, whose blocks are
// prefetched as this panel's are packed: 16 short streams defeat the hardware prefetcher.
// Measured (one thread, 32001 x 1024 from memory, 8 rows, VNNI): q4_0 2.9 -> 1.5 ms (the decode
// kernel a pass per 2 rows before), q8_0 4.5 -> 2.7 ms.
template <int FMT>
static void pack_panel(const uint8_t* const* rowp, int64_t nb, int64_t ahead, uint8_t* panel, float* scales) {
  for (int64_t b = 0; b < nb; b++) {
    const int64_t off = b * block_size<FMT>();
    uint8_t* pb = panel + b * kPanelBlockBytes;
    if (off % 64 < block_size<FMT>())  // once per cache line of each row
      for (int r = 0; r < PANEL; r++) __builtin_prefetch(rowp[r] + ahead + off, 0, 3);
    for (int h = 0; h < 2; h++) {  // rows 0-7, 8-15
      const uint8_t* const* rp = rowp + 8 * h;
      if (kVnni) {
        __m256i r[8];
        for (int c = 0; c < 8; c++) r[c] = block_bytes_u8<FMT>(rp[c] + off + 2);
        transpose8x8(r);
        for (int g = 0; g < 8; g++) _mm256_store_si256(reinterpret_cast<__m256i*>(pb + g * 64 + h * 32), r[g]);
      } else {
        __m256i lo[8], hi[8];
        for (int c = 0; c < 8; c++) block_int16<FMT>(rp[c] + off + 2, lo[c], hi[c]);
        transpose8x8(lo);
        transpose8x8(hi);
        for (int p = 0; p < 8; p++) {
          _mm256_store_si256(reinterpret_cast<__m256i*>(pb + p * 64 + h * 32), lo[p]);
          _mm256_store_si256(reinterpret_cast<__m256i*>(pb + (p + 8) * 64 + h * 32), hi[p]);
        }
      }
      _mm256_store_ps(scales + b * PANEL + 8 * h, rows_scales8(rp, off));
    }
  }
}

// The cache lines kPrefetchAhead bytes past block b of the interleaved panel at p. One
// contiguous stream, yet the hardware prefetcher alone leaves the batched decode kernels
// waiting: measured (one thread, VNNI, 8 rows, from memory) 1024 x 2816 q4_0 222 -> 104 us,
// 32001 x 1024 q8_0 3.4 -> 1.8 ms, against 138 and 2.5 ms in row order; 8-32 KiB ahead alike.
template <int FMT>
static inline void prefetch_ilv_block(const uint8_t* p, int64_t b) {
  const uint8_t* q = p + b * ilv_block_bytes(FMT) + kPrefetchAhead;
  for (int64_t l = 0; l < ilv_block_bytes(FMT); l += 64) __builtin_prefetch(q + l, 0, 3);
}

// pack_panel from a whole panel of an interleaved matrix (kernels.h). VNNI: the group vectors
// are the interleaved bytes as unsigned (see raw_bias); otherwise the rows are gathered (into rows_buf,
// 16 rows) for pack_panel: the int16 pairs need the same work from either layout.
template <int FMT>
static void pack_panel_ilv(const uint8_t* ilv, int64_t nb, int64_t row_bytes, uint8_t* rows_buf, uint8_t* panel, float* scales) {
  if (!kVnni) {
    const uint8_t* rowp[PANEL];
    ilv_copy_blocks<FMT, false>(ilv, 0, nb, rows_buf, row_bytes);
    for (int r = 0; r < PANEL; r++) rowp[r] = rows_buf + r * row_bytes;
    return pack_panel<FMT>(rowp, nb, 0, panel, scales);
  }
  for (int64_t b = 0; b < nb; b++) {
    prefetch_ilv_block<FMT>(ilv, b);
    const uint8_t* q = ilv + b * ilv_block_bytes(FMT);
    uint8_t* pb = panel + b * kPanelBlockBytes;
    for (int h = 0; h < 2; h++) {  // rows 0-7, 8-15
      const auto load = [&](int u) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 + 64 * u + 32 * h)); };
      const auto store = [&](int g, __m256i v) { _mm256_store_si256(reinterpret_cast<__m256i*>(pb + g * 64 + h * 32), v); };
      if (FMT == FMT_Q4_0) {
        const __m256i mask = _mm256_set1_epi8(15);
        for (int u = 0; u < 4; u++) {
          store(u, _mm256_and_si256(load(u), mask));
          store(u + 4, _mm256_and_si256(_mm256_srli_epi16(load(u), 4), mask));
        }
      } else {
        for (int g = 0; g < 8; g++) store(g, _mm256_xor_si256(load(g), _mm256_set1_epi8(char(0x80))));
      }
      _mm256_store_ps(scales + b * PANEL + 8 * h, _mm256_cvtph_ps(load128(q + 16 * h)));
    }
  }
}

// 4-byte units of a block of one activation row, as the register tiles read them: VNNI: the 8
// groups of 4 values, each digit (u = group · digits + digit); otherwise 16 pairs of int16 Q.
template <int FMT>
constexpr int units() {
  return kVnni ? 8 * digits<FMT>() : 16;
}

// The activations in the order the register tiles read them, so a tile needs one pointer and
// constant offsets: for each group of kPanelRows rows (the last may have fewer: mr), per
// block, the units [u][i], then d [i], then -bias·ΣQ [i] (VNNI; see raw_bias) of the mr rows.
template <int FMT>
static void pack_acts(const Exec& ex, const QActs& A, int64_t m, int32_t* out) {
  constexpr int U = units<FMT>(), D = digits<FMT>();
  const auto q = [&](int64_t e) { return D == 2 ? 255 * A.q[e] + A.lo[e] : int32_t(A.q[e]); };
  run(ex, ceil_div(m, kPanelRows), [&](int64_t group, int) {
    const int64_t i0 = group * kPanelRows;
    const int mr = int(imin(kPanelRows, m - i0));
    for (int64_t b = 0; b < A.nb; b++) {
      int32_t* o = out + i0 * A.nb * (U + 2) + b * (U + 2) * mr;
      for (int i = 0; i < mr; i++) {
        const int64_t row = i0 + i, e = row * A.k + b * QK;
        for (int u = 0; u < U; u++) {
          if (kVnni) {
            o[u * mr + i] = load32((u % D == 0 ? A.q : A.lo) + e + 4 * (u / D));
          } else {
            o[u * mr + i] = int32_t(uint32_t(uint16_t(q(e + 2 * u))) | uint32_t(uint16_t(q(e + 2 * u + 1))) << 16);
          }
        }
        __builtin_memcpy(o + U * mr + i, A.d + row * A.nb + b, 4);
        o[(U + 1) * mr + i] = -raw_bias<FMT>() * A.sum[row * A.nb + b];
      }
    }
  });
}

// MR activation rows (packed by pack_acts, from xp) x 16 weight rows over all blocks:
// out[i * 16 + r] = output (i, row r).
template <int FMT, int MR>
static void panel_tile(const uint8_t* panel, const float* scales, int64_t nb, const int32_t* xp, float* out) {
  constexpr int U = units<FMT>();
  const auto dx = [&](const int32_t* xb, int i) {
    float d;
    __builtin_memcpy(&d, xb + U * MR + i, 4);
    return d;
  };
#if defined(__AVX512BW__)
  // one 512-bit vector holds the 16 rows
  __m512 acc[MR];
  for (int i = 0; i < MR; i++) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t* pb = panel + b * kPanelBlockBytes;
    const int32_t* xb = xp + b * (U + 2) * MR;
    __m512i ia[MR];
#ifdef LLAVA_VNNI
    // the last digit accumulates into ia (from -bias·ΣQ), the hi digit of two into ih
    constexpr int D = digits<FMT>();
    __m512i ih[MR];
    for (int i = 0; i < MR; i++) {
      ia[i] = _mm512_set1_epi32(xb[(U + 1) * MR + i]);
      ih[i] = _mm512_setzero_si512();
    }
    for (int g = 0; g < QK / 4; g++) {
      const __m512i w = _mm512_load_si512(pb + g * 64);
      for (int i = 0; i < MR; i++) {
        if (D == 2) ih[i] = _mm512_dpbusd_epi32(ih[i], w, _mm512_set1_epi32(xb[g * D * MR + i]));
        ia[i] = _mm512_dpbusd_epi32(ia[i], w, _mm512_set1_epi32(xb[(g * D + D - 1) * MR + i]));
      }
    }
    if (D == 2)
      for (int i = 0; i < MR; i++) ia[i] = _mm512_add_epi32(ia[i], _mm512_sub_epi32(_mm512_slli_epi32(ih[i], 8), ih[i]));
#else
    for (int i = 0; i < MR; i++) ia[i] = _mm512_setzero_si512();
    for (int p = 0; p < QK / 2; p++) {
      const __m512i w = _mm512_load_si512(pb + p * 64);
      for (int i = 0; i < MR; i++) ia[i] = _mm512_add_epi32(ia[i], _mm512_madd_epi16(w, _mm512_set1_epi32(xb[p * MR + i])));
    }
#endif
    const __m512 dw = _mm512_load_ps(scales + b * PANEL);
    for (int i = 0; i < MR; i++)
      acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(dx(xb, i)), dw), _mm512_cvtepi32_ps(ia[i]), acc[i]);
  }
  for (int i = 0; i < MR; i++) _mm512_storeu_ps(out + i * PANEL, acc[i]);
#else
  // AVX2: two 256-bit vectors of 8 rows (int16 pairs)
  __m256 acc[MR][2];
  for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t* pb = panel + b * kPanelBlockBytes;
    const int32_t* xb = xp + b * (U + 2) * MR;
    __m256i ia[MR][2];
    for (int i = 0; i < MR; i++) ia[i][0] = ia[i][1] = _mm256_setzero_si256();
    for (int p = 0; p < QK / 2; p++) {
      const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(pb + p * 64));
      const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(pb + p * 64 + 32));
      for (int i = 0; i < MR; i++) {
        const __m256i x = _mm256_set1_epi32(xb[p * MR + i]);
        ia[i][0] = _mm256_add_epi32(ia[i][0], _mm256_madd_epi16(w0, x));
        ia[i][1] = _mm256_add_epi32(ia[i][1], _mm256_madd_epi16(w1, x));
      }
    }
    const __m256 dw0 = _mm256_load_ps(scales + b * PANEL), dw1 = _mm256_load_ps(scales + b * PANEL + 8);
    for (int i = 0; i < MR; i++) {
      const __m256 d = _mm256_set1_ps(dx(xb, i));
      acc[i][0] = _mm256_fmadd_ps(_mm256_mul_ps(d, dw0), _mm256_cvtepi32_ps(ia[i][0]), acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(_mm256_mul_ps(d, dw1), _mm256_cvtepi32_ps(ia[i][1]), acc[i][1]);
    }
  }
  for (int i = 0; i < MR; i++) {
    _mm256_storeu_ps(out + i * PANEL, acc[i][0]);
    _mm256_storeu_ps(out + i * PANEL + 8, acc[i][1]);
  }
#endif
}

// panel_tile for mr = 1 .. MR rows
template <int FMT, int MR = kPanelRows>
static void panel_tile_n(int mr, const uint8_t* panel, const float* scales, int64_t nb, const int32_t* xp, float* out) {
  if constexpr (MR > 1) {
    if (mr < MR) return panel_tile_n<FMT, MR - 1>(mr, panel, scales, nb, xp, out);
  }
  panel_tile<FMT, MR>(panel, scales, nb, xp, out);
}

template <int FMT>
static void qmatmul_panels(const Exec& ex, const QActs& A, int64_t m, const PackedW& w, float* c, bool acc) {
  constexpr int U = units<FMT>();
  const int64_t n = w.rows;
  int32_t* xp = scratch<int32_t>(ex, ex.tid, SLOT_T, m * A.nb * (U + 2));
  pack_acts<FMT>(ex, A, m, xp);
  const int64_t whole = ilv_rows(w);
  run(ex, ceil_div(n, PANEL), [&](int64_t t, int tid) {
    const int64_t j0 = t * PANEL;
    const uint8_t* rowp[PANEL];
    for (int r = 0; r < PANEL; r++) rowp[r] = w.data + imin(j0 + r, n - 1) * w.row_bytes;  // repeats the last row
    uint8_t* panel = scratch<uint8_t>(ex, tid, SLOT_B, A.nb * kPanelBlockBytes);
    float* scales = scratch<float>(ex, tid, SLOT_S, A.nb * PANEL);
    if (j0 < whole)
      pack_panel_ilv<FMT>(w.data + j0 * w.row_bytes, A.nb, w.row_bytes, kVnni ? nullptr : scratch<uint8_t>(ex, tid, SLOT_P, PANEL * w.row_bytes), panel, scales);
    else
      pack_panel<FMT>(rowp, A.nb, PANEL * w.row_bytes, panel, scales);
    const int nr = int(imin(PANEL, n - j0));
    for (int64_t i0 = 0; i0 < m; i0 += kPanelRows) {
      const int mr = int(imin(kPanelRows, m - i0));
      alignas(64) float out[kPanelRows * PANEL];
      panel_tile_n<FMT>(mr, panel, scales, A.nb, xp + i0 * A.nb * (U + 2), out);
      for (int i = 0; i < mr; i++)
        for (int r = 0; r < nr; r++) put_out(c + (i0 + i) * n + j0 + r, out[i * PANEL + r], acc);
    }
  });
}

#ifndef LLAVA_VNNI
// ---- a batch of decode rows without VNNI: 8 weight rows side by side ----
//
// A 256-bit vector holds a 4-byte group of 8 weight rows (16-byte loads and a 4x4 dword
// transpose per 128-bit half, built per block and never stored), the activations are broadcast,
// so each block's dot product lands in a lane with no horizontal sum, and every weight block is
// read and unpacked once per step for all MB activation rows. q4_0: nibbles · int8 Q
// (vpmaddubsw; 8 groups sum in int16: 8·2·15·127 fits) minus 8·ΣQ. q8_0: int8 weights widened to
// int16 times the 16-bit Q (vpmaddwd), two 4-row halves summed pairwise at the end, which leaves
// lane l holding row kQ8Lane[l]. The same rows of a panel ahead are prefetched as a panel is
// read: 8 short streams defeat the hardware prefetcher.
constexpr int SPANEL = 8;
constexpr int kQ8Lane[SPANEL] = {0, 1, 4, 5, 2, 3, 6, 7};

// Bytes from a panel's rows to the same rows of the panel they prefetch: whole panels, at least
// 16 KiB. Measured (one thread, avx2, from memory, q4_0 m = 1): the next panel only (4.6 KiB
// for 1024 columns) 1.13 / 0.091 ms for 32001 / 2816 x 1024, 16 KiB 0.97 / 0.081; 32 KiB no
// better.
static inline int64_t prefetch_panels_ahead(int64_t panel_bytes) {
  return panel_bytes * ceil_div(kPrefetchAhead, panel_bytes);
}

template <int FMT>
constexpr int stream_lane_row(int l) {
  return FMT == FMT_Q8_0 ? kQ8Lane[l] : l;
}

// dword u (0-3) of the 16 bytes at offset o of each of the 8 rows: lane r = row r
static inline void stream_dwords8(const uint8_t* const* rows, int64_t o, __m256i* v) {
  __m256i z[4], t[4];
  for (int k = 0; k < 4; k++)  // z[k]: rows k and k + 4
    z[k] = _mm256_inserti128_si256(_mm256_castsi128_si256(load128(rows[k] + o)), load128(rows[k + 4] + o), 1);
  t[0] = _mm256_unpacklo_epi32(z[0], z[1]);
  t[1] = _mm256_unpackhi_epi32(z[0], z[1]);
  t[2] = _mm256_unpacklo_epi32(z[2], z[3]);
  t[3] = _mm256_unpackhi_epi32(z[2], z[3]);
  v[0] = _mm256_unpacklo_epi64(t[0], t[2]);
  v[1] = _mm256_unpackhi_epi64(t[0], t[2]);
  v[2] = _mm256_unpacklo_epi64(t[1], t[3]);
  v[3] = _mm256_unpackhi_epi64(t[1], t[3]);
}

template <int FMT, int MB>
static void qmatmul_stream8(const Exec& ex, const QActs& A, const PackedW& w, float* c, bool acc) {
  constexpr int64_t BB = block_size<FMT>();
  const int64_t n = w.rows;
  // q8_0: the 16-bit activations Q = 255·hi + lo as int16, [MB][k]
  int16_t* q16 = nullptr;
  if (FMT == FMT_Q8_0) {
    q16 = scratch<int16_t>(ex, ex.tid, SLOT_T, MB * A.k);
    for (int64_t e = 0; e < MB * A.k; e++) q16[e] = int16_t(255 * A.q[e] + A.lo[e]);
  }
  const int64_t ahead = prefetch_panels_ahead(SPANEL * w.row_bytes);
  const int64_t whole = ilv_rows(w);
  run(ex, ceil_div(n, SPANEL), [&](int64_t t, int) {
    const int64_t j0 = t * SPANEL;
    // in an interleaved panel: the 16-byte scale slice and 32-byte group slices of these 8 rows
    const bool ilv = j0 < whole;
    const uint8_t* panel = ilv_panel(w, j0);
    const int64_t half = j0 % kIlvRows / SPANEL;
    const uint8_t* rows[SPANEL];  // in row order, for stream_dwords8
    const uint8_t* lanes[SPANEL];  // in lane order, for the scales
    for (int r = 0; r < SPANEL; r++) {
      rows[r] = w.data + imin(j0 + r, n - 1) * w.row_bytes;  // repeats the last row
      lanes[r] = w.data + imin(j0 + stream_lane_row<FMT>(r), n - 1) * w.row_bytes;
    }
    __m256 sum[MB];
    for (int i = 0; i < MB; i++) sum[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < A.nb; b++) {
      const int64_t off = b * BB;
      const uint8_t* ib = panel + b * ilv_block_bytes(FMT);
      if (ilv && half == 0)
        prefetch_ilv_block<FMT>(panel, b);
      else if (!ilv && off % 64 < BB)  // once per cache line of each row: the same rows of a panel ahead
        for (int r = 0; r < SPANEL; r++) __builtin_prefetch(rows[r] + ahead + off, 0, 3);
      const __m256 dw = !ilv ? rows_scales8(lanes, off)
                        : FMT == FMT_Q8_0 ? _mm256_permutevar8x32_ps(_mm256_cvtph_ps(load128(ib + 16 * half)), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kQ8Lane)))
                                          : _mm256_cvtph_ps(load128(ib + 16 * half));
      if (FMT == FMT_Q4_0) {
        __m256i v[4], wg[8];  // group g (values 4g .. 4g+3) as nibbles
        if (ilv)
          for (int u = 0; u < 4; u++) v[u] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ib + 32 + 64 * u + 32 * half));
        else
          stream_dwords8(rows, off + 2, v);
        const __m256i mask = _mm256_set1_epi8(15);
        for (int u = 0; u < 4; u++) {
          wg[u] = _mm256_and_si256(v[u], mask);
          wg[u + 4] = _mm256_and_si256(_mm256_srli_epi16(v[u], 4), mask);
        }
        for (int i = 0; i < MB; i++) {
          const int8_t* x = A.q + i * A.k + b * QK;
          __m256i s16 = _mm256_maddubs_epi16(wg[0], _mm256_set1_epi32(load32(x)));
          for (int g = 1; g < 8; g++) s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(wg[g], _mm256_set1_epi32(load32(x + 4 * g))));
          const __m256i ia = _mm256_sub_epi32(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)), _mm256_set1_epi32(8 * A.sum[i * A.nb + b]));
          sum[i] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(A.d[i * A.nb + b]), dw), _mm256_cvtepi32_ps(ia), sum[i]);
        }
      } else {
        __m256i wg[8], lo[8], hi[8];  // group g as bytes, then as int16 of rows 0-3 (lo) and 4-7 (hi)
        if (ilv) {
          for (int g = 0; g < 8; g++) wg[g] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ib + 32 + 64 * g + 32 * half));
        } else {
          stream_dwords8(rows, off + 2, wg);
          stream_dwords8(rows, off + 18, wg + 4);
        }
        for (int g = 0; g < 8; g++) {
          lo[g] = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(wg[g]));
          hi[g] = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(wg[g], 1));
        }
        for (int i = 0; i < MB; i++) {
          const int16_t* x = q16 + i * A.k + b * QK;
          __m256i al = _mm256_setzero_si256(), ah = _mm256_setzero_si256();
          for (int g = 0; g < 8; g++) {
            int64_t x4;
            __builtin_memcpy(&x4, x + 4 * g, 8);
            const __m256i xv = _mm256_set1_epi64x(x4);
            al = _mm256_add_epi32(al, _mm256_madd_epi16(lo[g], xv));
            ah = _mm256_add_epi32(ah, _mm256_madd_epi16(hi[g], xv));
          }
          const __m256i ia = _mm256_hadd_epi32(al, ah);
          sum[i] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(A.d[i * A.nb + b]), dw), _mm256_cvtepi32_ps(ia), sum[i]);
        }
      }
    }
    const int nr = int(imin(SPANEL, n - j0));
    for (int i = 0; i < MB; i++) {
      alignas(32) float out[SPANEL];
      _mm256_store_ps(out, sum[i]);
      for (int l = 0; l < SPANEL; l++)
        if (stream_lane_row<FMT>(l) < nr) put_out(c + i * n + j0 + stream_lane_row<FMT>(l), out[l], acc);
    }
  }, kStream);
}
#endif

#ifdef LLAVA_VNNI
// ---- a batch of decode rows (VNNI): panels of 16 weight rows built in registers ----
//
// Like the panels above, one 512-bit vector holds a 4-byte group of 16 weight rows, so the
// activations are broadcast and each block's dot product lands in a lane with no reduction; but
// the vectors are built per block from the rows as read (16-byte loads and a 4x4 dword
// transpose) and used at once for all MB activation rows, never stored. The transpose leaves
// lane p holding row kStreamRow[p].
constexpr int kStreamRow[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};

// dword u (0-3) of the 16 bytes at offset o of each block b of the 16 rows, lane p = row kStreamRow[p]
static inline void stream_dwords(const uint8_t* const* rowp, int64_t o, __m512i* v) {
  __m512i z[4], t[4];
  for (int k = 0; k < 4; k++) {  // z[k]: rows 4k .. 4k+3, one per 128-bit lane
    z[k] = _mm512_castsi128_si512(load128(rowp[4 * k] + o));
    for (int j = 1; j < 4; j++) z[k] = _mm512_inserti32x4(z[k], load128(rowp[4 * k + j] + o), j);
  }
  t[0] = _mm512_unpacklo_epi32(z[0], z[1]);
  t[1] = _mm512_unpackhi_epi32(z[0], z[1]);
  t[2] = _mm512_unpacklo_epi32(z[2], z[3]);
  t[3] = _mm512_unpackhi_epi32(z[2], z[3]);
  v[0] = _mm512_unpacklo_epi64(t[0], t[2]);
  v[1] = _mm512_unpackhi_epi64(t[0], t[2]);
  v[2] = _mm512_unpacklo_epi64(t[1], t[3]);
  v[3] = _mm512_unpackhi_epi64(t[1], t[3]);
}

// Activation rows whose dot products with a block's 8 weight vectors run interleaved (all their
// accumulators and the weight vectors stay in registers): 8 with one digit, 4 with two.
template <int FMT>
constexpr int kStreamChunk = digits<FMT>() == 2 ? 4 : 8;

// Block b of R activation rows from row i0 dotted with the block's weight vectors wg (16 weight
// rows), accumulated into sum[0 .. R). The integer sums are exact, so how they are split does not
// change a bit: each row sums its 8 groups in P interleaved chains (P = 2 for one or two rows, so
// a chain is not 8 dependent vpdpbusd long; more rows interleave anyway), ΣQ·bias is subtracted
// at the end, then the one fused multiply-add of rule 3.
template <int FMT, int R>
static inline void stream_block_rows(const __m512i* wg, __m512 dw, const QActs& A, int64_t i0, int64_t b, __m512* sum) {
  constexpr int D = digits<FMT>(), P = R <= 2 ? 2 : 1;
  constexpr int kShift = FMT == FMT_Q4_0 ? 3 : 7;  // log2 raw_bias
  static_assert(raw_bias<FMT>() == 1 << kShift, "the bias is a power of two");
  __m512i ia[R][P], ih[R][P];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 2
    for (int p = 0; p < P; p++) ia[r][p] = ih[r][p] = _mm512_setzero_si512();
#pragma GCC unroll 8
  for (int g = 0; g < 8; g++)
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      const int64_t e = (i0 + r) * A.k + b * QK + 4 * g;
      if (D == 2) ih[r][g % P] = _mm512_dpbusd_epi32(ih[r][g % P], wg[g], _mm512_set1_epi32(load32(A.q + e)));
      ia[r][g % P] = _mm512_dpbusd_epi32(ia[r][g % P], wg[g], _mm512_set1_epi32(load32((D == 2 ? A.lo : A.q) + e)));
    }
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) {
    __m512i s = P == 2 ? _mm512_add_epi32(ia[r][0], ia[r][P - 1]) : ia[r][0];
    if (D == 2) {
      const __m512i h = P == 2 ? _mm512_add_epi32(ih[r][0], ih[r][P - 1]) : ih[r][0];
      s = _mm512_add_epi32(s, _mm512_sub_epi32(_mm512_slli_epi32(h, 8), h));
    }
    const int64_t x = (i0 + r) * A.nb + b;
    s = _mm512_sub_epi32(s, _mm512_slli_epi32(_mm512_set1_epi32(A.sum[x]), kShift));
    sum[r] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(A.d[x]), dw), _mm512_cvtepi32_ps(s), sum[r]);
  }
}

// Block b of the 16 rows of an interleaved panel (kernels.h) at p: the group vectors as
// stream_dwords leaves them, but lane p = row p, and the rows' scales.
template <int FMT>
static inline void ilv_block16(const uint8_t* p, int64_t b, __m512i* wg, __m512& dw) {
  const uint8_t* q = p + b * ilv_block_bytes(FMT);
  if (FMT == FMT_Q4_0) {
    const __m512i mask = _mm512_set1_epi8(15);
    for (int u = 0; u < 4; u++) {
      const __m512i v = _mm512_loadu_si512(q + 32 + 64 * u);
      wg[u] = _mm512_and_si512(v, mask);
      wg[u + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
    }
  } else {
    for (int g = 0; g < 8; g++) wg[g] = _mm512_xor_si512(_mm512_loadu_si512(q + 32 + 64 * g), _mm512_set1_epi8(char(0x80)));
  }
  dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));
}

// Weight rows j0 .. j0+15 (the last row repeated past n) against the MB activation rows. ILV:
// a whole panel of an interleaved matrix, read as one contiguous stream; otherwise 16 rows in
// row order, transposed per block.
template <int FMT, int MB, bool ILV>
static void stream_panel(const QActs& A, const PackedW& w, int64_t j0, float* c, bool acc) {
  constexpr int64_t BB = block_size<FMT>();
  const int64_t n = w.rows;
  const uint8_t* rowp[PANEL];  // in lane order, for the scales
  const uint8_t* rows[PANEL];  // in row order, for stream_dwords
  for (int p = 0; p < PANEL; p++) {
    rowp[p] = w.data + imin(j0 + kStreamRow[p], n - 1) * w.row_bytes;  // repeats the last row
    rows[p] = w.data + imin(j0 + p, n - 1) * w.row_bytes;
  }
  __m512 sum[MB];
  for (int i = 0; i < MB; i++) sum[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < A.nb; b++) {
    __m512i wg[8];  // group g (values 4g .. 4g+3) as unsigned bytes (see raw_bias)
    __m512 dw;
    if (ILV) {
      prefetch_ilv_block<FMT>(rows[0], b);
      ilv_block16<FMT>(rows[0], b, wg, dw);
    } else {
      const int64_t off = b * BB;
      if (off % 64 < BB)  // once per cache line of each row: the same rows of the next panel
        for (int r = 0; r < PANEL; r++) __builtin_prefetch(rows[r] + PANEL * w.row_bytes + off, 0, 3);
      if (FMT == FMT_Q4_0) {
        __m512i v[4];
        stream_dwords(rows, off + 2, v);
        const __m512i mask = _mm512_set1_epi8(15);
        for (int u = 0; u < 4; u++) {
          wg[u] = _mm512_and_si512(v[u], mask);
          wg[u + 4] = _mm512_and_si512(_mm512_srli_epi16(v[u], 4), mask);
        }
      } else {
        const __m512i bias = _mm512_set1_epi8(char(0x80));
        stream_dwords(rows, off + 2, wg);
        stream_dwords(rows, off + 18, wg + 4);
        for (int g = 0; g < 8; g++) wg[g] = _mm512_xor_si512(wg[g], bias);
      }
      dw = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(rows_scales8(rowp, off))),
                                               _mm256_castps_pd(rows_scales8(rowp + 8, off)), 1));
    }
    stream_block_rows<FMT, (MB < kStreamChunk<FMT> ? MB : kStreamChunk<FMT>)>(wg, dw, A, 0, b, sum);
    if constexpr (MB > kStreamChunk<FMT>) stream_block_rows<FMT, MB - kStreamChunk<FMT>>(wg, dw, A, kStreamChunk<FMT>, b, sum + kStreamChunk<FMT>);
  }
  const int nr = int(imin(PANEL, n - j0));
  for (int i = 0; i < MB; i++) {
    alignas(64) float out[PANEL];
    _mm512_store_ps(out, sum[i]);
    for (int p = 0; p < PANEL; p++) {
      const int r = ILV ? p : kStreamRow[p];
      if (r < nr) put_out(c + i * n + j0 + r, out[p], acc);
    }
  }
}

template <int FMT, int MB>
static void qmatmul_stream(const Exec& ex, const QActs& A, const PackedW& w, float* c, bool acc) {
  const int64_t whole = ilv_rows(w);
  run(ex, ceil_div(w.rows, PANEL), [&](int64_t t, int) {
    if (t * PANEL < whole) stream_panel<FMT, MB, true>(A, w, t * PANEL, c, acc);
    else stream_panel<FMT, MB, false>(A, w, t * PANEL, c, acc);
  }, kStream);
}
#endif

template <int FMT>
static void qmatmul_x86(const Exec& ex, const QActs& A, int64_t m, const PackedW& w, float* c, bool acc) {
#ifdef LLAVA_VNNI
  // measured (one thread, 2816 x 1024 q4_0 in cache / 32001 x 1024 from memory): against the
  // decode kernel below, 1 row 0.039 / 0.44 ms against 0.043 / 0.50, 2 rows 0.050 against 0.068;
  // against the panels, 4 rows 0.064 against 0.099, 8 rows 0.106 / 1.18 against 0.127 / 1.42
  if (m <= 8) {
    switch (m) {
      case 1: return qmatmul_stream<FMT, 1>(ex, A, w, c, acc);
      case 2: return qmatmul_stream<FMT, 2>(ex, A, w, c, acc);
      case 3: return qmatmul_stream<FMT, 3>(ex, A, w, c, acc);
      case 4: return qmatmul_stream<FMT, 4>(ex, A, w, c, acc);
      case 5: return qmatmul_stream<FMT, 5>(ex, A, w, c, acc);
      case 6: return qmatmul_stream<FMT, 6>(ex, A, w, c, acc);
      case 7: return qmatmul_stream<FMT, 7>(ex, A, w, c, acc);
      default: return qmatmul_stream<FMT, 8>(ex, A, w, c, acc);
    }
  }
#else
  // measured (one thread, avx2, from memory) against the kernel that read the weight rows in
  // order: q8_0 1 row 4096 x 4096 0.64 against 1.53 ms; against the panels, 8 rows of
  // 32001 x 1024 q4_0 5.2 against 11.9 ms
  if (m <= 8) {
    switch (m) {
      case 1: return qmatmul_stream8<FMT, 1>(ex, A, w, c, acc);
      case 2: return qmatmul_stream8<FMT, 2>(ex, A, w, c, acc);
      case 3: return qmatmul_stream8<FMT, 3>(ex, A, w, c, acc);
      case 4: return qmatmul_stream8<FMT, 4>(ex, A, w, c, acc);
      case 5: return qmatmul_stream8<FMT, 5>(ex, A, w, c, acc);
      case 6: return qmatmul_stream8<FMT, 6>(ex, A, w, c, acc);
      case 7: return qmatmul_stream8<FMT, 7>(ex, A, w, c, acc);
      default: return qmatmul_stream8<FMT, 8>(ex, A, w, c, acc);
    }
  }
#endif
  qmatmul_panels<FMT>(ex, A, m, w, c, acc);
}

#endif  // x86 AVX2

// C[m, rows] (+)= A[m, cols] Wᵀ for a q8_0 or q4_0 W, with A quantized to integers per block.
static void k_packed_matmul_qdot(Pool* pool, const float* a, const PackedW& w, float* c, int64_t m, bool acc) {
  const int64_t n = w.rows, k = w.cols, nb = k / QK;
  if (m <= 0 || n <= 0) return;
  const Exec ex{pool, 0, m * n * k >= (int64_t(1) << 16)};
  // one scratch area: the digit planes (64-byte aligned, k a multiple of 32), then d and ΣQ
  const bool two = w.fmt == FMT_Q8_0;
  const int64_t qbytes = ceil_div(m * k, 64) * 64;
  uint8_t* area = scratch<uint8_t>(ex, 0, SLOT_A, (two ? 2 : 1) * qbytes + m * nb * 8);
  uint8_t* rest = area + (two ? 2 : 1) * qbytes;
  const QActs A{reinterpret_cast<int8_t*>(area), two ? reinterpret_cast<int8_t*>(area + qbytes) : nullptr,
                reinterpret_cast<float*>(rest), reinterpret_cast<int32_t*>(rest + m * nb * 4), k, nb};
  if (two) quantize_rows<FMT_Q8_0>(ex, a, m, A);
  else quantize_rows<FMT_Q4_0>(ex, a, m, A);
#if LLAVA_X86_SIMD && defined(__AVX2__)
  if (two) qmatmul_x86<FMT_Q8_0>(ex, A, m, w, c, acc);
  else qmatmul_x86<FMT_Q4_0>(ex, A, m, w, c, acc);
#else
  qmatmul_generic(ex, A, m, w, c, acc);
#endif
}
