// q4_k, q5_k and q6_k forward products with integer activations (llama.cpp's Q8_K scheme; the
// exact f32 path is packed.h's). The arithmetic, the same in every variant and in
// test/native/kqdot-reference.ts:
//  1. each row of activations is cut into super-blocks of 256 values, quantized by qdot.h's
//     rule with R = 127: d = fl32(amax / 127), Q = clamp(round_half_away(fl32(x / d)), ±127)
//     (Q = 0 when d = 0; d = NaN, Q = 0 when the block holds an infinity or a NaN);
//  2. a weight super-block gives two exact integers from its integer weights q and integer
//     scales: isum = Σ_g sc_g · Σ_{v in g} Q_v·q_v over its groups g (q4_k/q5_k: 8 groups of
//     32, q in 0..31, 6-bit sc; q6_k: 16 groups of 16, q in -32..31, int8 sc) and, for
//     q4_k/q5_k, msum = Σ_g m_g · Σ_{v in g} Q_v (6-bit mins m);
//  3. per super-block in order from acc = 0: acc = fma(fl32(d_a·d), fl32(isum), acc), then for
//     q4_k/q5_k acc = fma(fl32(d_a·dmin), fl32(-msum), acc) (f32 fused multiply-adds).
// Integer sums are exact, so the instructions that form them do not change a bit.
//
// x86 (AVX2 and up): a super-block's weights are unpacked once into 8 vectors of 32 unsigned
// values (AVX-512: 4 of 64) and dotted with each activation row by vpmaddubsw (15·127·2,
// 31·127·2 and 63·127·2 all fit int16), the group scales applied by vpmaddwd (or vpdpwssd with
// VNNI); q6_k dots q + 32 and subtracts 32·Σ sc_g·ΣQ_g from the 16-value sums of the
// activations, which also give msum. The portable variant loops over integers. The addon takes
// this path for decode-sized row counts (up to 16) and rowwise products; prompts are faster on
// the exact path's f32 GEMM.

constexpr int QKK = 256;  // values per super-block

// Activation rows quantized per super-block: q [m][k], d [m][nsb], and the sums of Q over each
// 16 values, bsum [m][k / 16].
struct KActs {
  int8_t* q;
  float* d;
  int16_t* bsum;
  int64_t k, nsb;
};

static void quantize_rows_k(const Exec& ex, const float* a, int64_t m, const KActs& A) {
  chunked(ex, m, imax(1, 8192 / imax(A.k, 1)), [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; i++)
      for (int64_t b = 0; b < A.nsb; b++) {
        const int64_t o = i * A.k + b * QKK;
        int32_t total;
        quantize_block<127, QKK>(a + o, A.q + o, nullptr, A.d + i * A.nsb + b, &total);
        for (int g = 0; g < QKK / 16; g++) {
          int32_t s = 0;
          for (int l = 0; l < 16; l++) s += A.q[o + 16 * g + l];
          A.bsum[(o >> 4) + g] = int16_t(s);
        }
      }
  });
}

// acc after one super-block (step 3)
static inline float kaccumulate(int fmt, float acc, float da, const uint8_t* blk, int32_t isum, int32_t msum) {
  if (fmt == FMT_Q6_K) return fma_f32(da * f16s(rd16(blk + 208)), float(isum), acc);
  acc = fma_f32(da * f16s(rd16(blk)), float(isum), acc);
  return fma_f32(da * f16s(rd16(blk + 2)), float(-msum), acc);
}

// ---- portable: a weight super-block as integers per value ----

struct KBlockInts {
  int8_t q[QKK];    // q4_k/q5_k: 0..31; q6_k: -32..31
  int16_t sc[16];   // the scale of each 16 values
  int16_t mn[16];   // the min of each 16 values (0 for q6_k)
};

static void unpack_kblock(int fmt, const uint8_t* blk, KBlockInts& o) {
  if (fmt == FMT_Q6_K) {
    for (int n = 0; n < QKK; n += 128) {
      const uint8_t* ql = blk + n / 2;
      const uint8_t* qh = blk + 128 + n / 4;
      for (int l = 0; l < 32; l++) {
        o.q[n + l] = int8_t(((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32);
        o.q[n + l + 32] = int8_t(((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32);
        o.q[n + l + 64] = int8_t(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        o.q[n + l + 96] = int8_t(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
      }
    }
    for (int g = 0; g < 16; g++) {
      o.sc[g] = int8_t(blk[192 + g]);
      o.mn[g] = 0;
    }
    return;
  }
  const bool five = fmt == FMT_Q5_K;
  const uint8_t* qh = blk + 16;
  const uint8_t* ql = blk + (five ? 48 : 16);
  for (int j = 0; j < 4; j++)
    for (int l = 0; l < 32; l++) {
      const int h = five ? qh[l] >> (2 * j) : 0;
      o.q[64 * j + l] = int8_t((ql[32 * j + l] & 15) | ((h & 1) << 4));
      o.q[64 * j + 32 + l] = int8_t((ql[32 * j + l] >> 4) | (((h >> 1) & 1) << 4));
    }
  for (int g = 0; g < 8; g++) {
    int s, m;
    scale_min_k4(g, blk + 4, s, m);
    o.sc[2 * g] = o.sc[2 * g + 1] = int16_t(s);
    o.mn[2 * g] = o.mn[2 * g + 1] = int16_t(m);
  }
}

[[maybe_unused]] static void kqmatmul_generic(const Exec& ex, const KActs& A, int64_t m, const PackedW& w, float* c, bool acc) {
  const int64_t n = w.rows, bb = block_bytes(w.fmt);
  run(ex, ceil_div(n, 16), [&](int64_t t, int tid) {
    KBlockInts* wb = scratch<KBlockInts>(ex, tid, SLOT_B, A.nsb);
    for (int64_t j = t * 16; j < imin(n, (t + 1) * 16); j++) {
      const uint8_t* row = w.data + j * w.row_bytes;
      for (int64_t b = 0; b < A.nsb; b++) unpack_kblock(w.fmt, row + b * bb, wb[b]);
      for (int64_t i = 0; i < m; i++) {
        float sum = 0;
        for (int64_t b = 0; b < A.nsb; b++) {
          const int8_t* x = A.q + i * A.k + b * QKK;
          const int16_t* bs = A.bsum + ((i * A.k + b * QKK) >> 4);
          int32_t isum = 0, msum = 0;
          for (int g = 0; g < 16; g++) {
            int32_t dot = 0;
            for (int l = 0; l < 16; l++) dot += int32_t(x[16 * g + l]) * wb[b].q[16 * g + l];
            isum += wb[b].sc[g] * dot;
            msum += wb[b].mn[g] * bs[g];
          }
          sum = kaccumulate(w.fmt, sum, A.d[i * A.nsb + b], row + b * bb, isum, msum);
        }
        put_out(c + i * n + j, sum, acc);
      }
    }
  });
}

#if LLAVA_X86_SIMD && defined(__AVX2__)

static inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

static inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// sum + Σ pairs of scale·p (int16 lanes to int32)
static inline __m256i scaled_add(__m256i sum, __m256i scale, __m256i p) {
#ifdef LLAVA_VNNI
  return _mm256_dpwssd_epi32(sum, scale, p);
#else
  return _mm256_add_epi32(sum, _mm256_madd_epi16(scale, p));
#endif
}

#if defined(__AVX512BW__)
static inline __m512i scaled_add(__m512i sum, __m512i scale, __m512i p) {
#ifdef LLAVA_VNNI
  return _mm512_dpwssd_epi32(sum, scale, p);
#else
  return _mm512_add_epi32(sum, _mm512_madd_epi16(scale, p));
#endif
}
// AVX-512: two chunks of 32 values per vector, half the dot products' instructions
constexpr int KCH = 4;
typedef __m512i kvec;
#else
constexpr int KCH = 8;
typedef __m256i kvec;
#endif

// One weight super-block unpacked for the vector dots: values 32c .. 32c+31 in wq[c] as
// unsigned bytes (q6_k: q + 32), the scale of each value's group in sc[c] (int16 lanes: 16
// pairs of values), and the factors of the sums of Q (int16): q6_k 32·sc per 16 values,
// q4_k/q5_k the 8 mins (per 32 values) in each 128-bit half.
struct KBlock256 {
  __m256i wq[8], sc[8], bias;
  __m256i scales;  // the scales as int16 (q4_k/q5_k: 8 in the low half)
};

// the same with AVX-512: chunks 2c and 2c + 1 in wq[c] and sc[c]
struct KBlockVec {
  kvec wq[KCH], sc[KCH];
  __m256i bias;
};

template <int FMT>
static inline void unpack_kblock256(const uint8_t* blk, KBlock256& o) {
  const __m256i low4 = _mm256_set1_epi8(15);
  if (FMT == FMT_Q6_K) {
    const __m256i low2 = _mm256_set1_epi8(3);
    for (int n = 0; n < 2; n++) {
      const __m256i a = load256(blk + 64 * n), b = load256(blk + 64 * n + 32), h = load256(blk + 128 + 32 * n);
      const auto hi2 = [&](int s) { return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, s), low2), 4); };
      o.wq[4 * n] = _mm256_or_si256(_mm256_and_si256(a, low4), _mm256_slli_epi16(_mm256_and_si256(h, low2), 4));
      o.wq[4 * n + 1] = _mm256_or_si256(_mm256_and_si256(b, low4), hi2(2));
      o.wq[4 * n + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), low4), hi2(4));
      o.wq[4 * n + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), low4), hi2(6));
    }
    // sc[c] = [scale 2c x 8 | scale 2c + 1 x 8]: byte shuffles of the 16 scales as int16
    const __m256i sc = _mm256_cvtepi8_epi16(load128(blk + 192));
    o.scales = sc;
    const __m256i lo = _mm256_permute2x128_si256(sc, sc, 0x00), hi = _mm256_permute2x128_si256(sc, sc, 0x11);
    for (int c = 0; c < 4; c++) {
      const __m256i pick = _mm256_set_m128i(_mm_set1_epi16(short(0x0302 + 0x0404 * c)), _mm_set1_epi16(short(0x0100 + 0x0404 * c)));
      o.sc[c] = _mm256_shuffle_epi8(lo, pick);
      o.sc[c + 4] = _mm256_shuffle_epi8(hi, pick);
    }
    o.bias = _mm256_slli_epi16(sc, 5);  // 32·sc, subtracted
    return;
  }
  const uint8_t* ql = blk + (FMT == FMT_Q5_K ? 48 : 16);
  __m256i h = FMT == FMT_Q5_K ? load256(blk + 16) : _mm256_setzero_si256();
  const __m256i one = _mm256_set1_epi8(1);
  for (int j = 0; j < 4; j++) {
    const __m256i bits = load256(ql + 32 * j);
    o.wq[2 * j] = _mm256_and_si256(bits, low4);
    o.wq[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4);
    if (FMT == FMT_Q5_K) {  // bits 2j and 2j + 1 of qh
      o.wq[2 * j] = _mm256_or_si256(o.wq[2 * j], _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
      o.wq[2 * j + 1] = _mm256_or_si256(o.wq[2 * j + 1], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 1), one), 4));
      h = _mm256_srli_epi16(h, 2);
    }
  }
  // the 12 bytes of 6-bit scales and mins as 8 + 8 bytes (llama.cpp's utmp shuffle)
  uint32_t u[4];
  __builtin_memcpy(u, blk + 4, 12);
  u[3] = ((u[2] >> 4) & 0x0f0f0f0f) | (((u[1] >> 6) & 0x03030303) << 4);
  const uint32_t mins_lo = u[1] & 0x3f3f3f3f;
  u[1] = (u[2] & 0x0f0f0f0f) | (((u[0] >> 6) & 0x03030303) << 4);
  u[2] = mins_lo;
  u[0] &= 0x3f3f3f3f;
  const __m256i sm = _mm256_cvtepu8_epi16(_mm_set_epi32(int(u[3]), int(u[2]), int(u[1]), int(u[0])));  // scales | mins
  const __m256i sc = _mm256_permute2x128_si256(sm, sm, 0x00);
  o.scales = sm;
  for (int c = 0; c < 8; c++) o.sc[c] = _mm256_shuffle_epi8(sc, _mm256_set1_epi16(short(0x0100 + 0x0202 * c)));
  o.bias = _mm256_permute2x128_si256(sm, sm, 0x11);  // the 8 mins (both halves)
}

template <int FMT>
static inline void unpack_kblock_vec(const uint8_t* blk, KBlockVec& o) {
  KBlock256 u;
  unpack_kblock256<FMT>(blk, u);
  o.bias = u.bias;
#if defined(__AVX512BW__)
  // the scales straight from the 8 of a 128-bit half: lane L of sc[c] takes the scale of group
  // g_L (int16 word g_L of the half: bytes 2 g_L, 2 g_L + 1 by a byte shuffle)
  const auto pick = [](int g0, int g1, int g2, int g3) {
    const auto w = [](int g) { return 0x01000100 + 0x02020202 * g; };
    return _mm512_set_epi32(w(g3), w(g3), w(g3), w(g3), w(g2), w(g2), w(g2), w(g2), w(g1), w(g1), w(g1), w(g1), w(g0), w(g0), w(g0), w(g0));
  };
  const __m512i lo = _mm512_broadcast_i32x4(_mm256_castsi256_si128(u.scales));
  const __m512i hi = _mm512_broadcast_i32x4(_mm256_extracti128_si256(u.scales, 1));
  for (int c = 0; c < KCH; c++) {
    o.wq[c] = _mm512_inserti64x4(_mm512_castsi256_si512(u.wq[2 * c]), u.wq[2 * c + 1], 1);
    if (FMT == FMT_Q6_K)  // groups of 16: chunks 2c, 2c + 1 hold groups 4c .. 4c + 3
      o.sc[c] = _mm512_shuffle_epi8(c < 2 ? lo : hi, pick(4 * (c % 2), 4 * (c % 2) + 1, 4 * (c % 2) + 2, 4 * (c % 2) + 3));
    else  // groups of 32: chunk 2c in the low 256 bits, 2c + 1 in the high
      o.sc[c] = _mm512_shuffle_epi8(lo, pick(2 * c, 2 * c, 2 * c + 1, 2 * c + 1));
  }
#else
  for (int c = 0; c < KCH; c++) {
    o.wq[c] = u.wq[c];
    o.sc[c] = u.sc[c];
  }
#endif
}

// isum (and msum) of one super-block with one activation row (x: its 256 Q, bs: their 16 sums)
template <int FMT>
static inline void kblock_dot(const KBlockVec& w, const int8_t* x, const int16_t* bs, int32_t& isum, int32_t& msum) {
#if defined(__AVX512BW__)
  __m512i wide = _mm512_setzero_si512();
  for (int c = 0; c < KCH; c++) wide = scaled_add(wide, w.sc[c], _mm512_maddubs_epi16(w.wq[c], _mm512_loadu_si512(x + 64 * c)));
  const __m256i sum = _mm256_add_epi32(_mm512_castsi512_si256(wide), _mm512_extracti64x4_epi64(wide, 1));
#else
  __m256i sum = _mm256_setzero_si256();
  for (int c = 0; c < KCH; c++) sum = scaled_add(sum, w.sc[c], _mm256_maddubs_epi16(w.wq[c], load256(x + 32 * c)));
#endif
  const __m256i b = load256(bs);
  if (FMT == FMT_Q6_K) {
    isum = hsum_i32(_mm256_sub_epi32(sum, _mm256_madd_epi16(w.bias, b)));
    msum = 0;
    return;
  }
  // the sums of Q per 32 values (at most 4064: int16) times the mins; both totals at once
  const __m128i q32 = _mm_hadd_epi16(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
  const __m128i corr = _mm_madd_epi16(_mm256_castsi256_si128(w.bias), q32);
  const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
  __m128i t = _mm_hadd_epi32(s, corr);
  t = _mm_hadd_epi32(t, t);  // [isum, msum, isum, msum]
  isum = _mm_cvtsi128_si32(t);
  msum = _mm_extract_epi32(t, 1);
}

// MB activation rows (from i0) against weight rows [j0, j1): each super-block unpacked once
template <int FMT, int MB>
static void krows(const KActs& A, int64_t i0, const PackedW& w, int64_t j0, int64_t j1, float* c, bool acc) {
  constexpr int64_t BB = FMT == FMT_Q4_K ? 144 : FMT == FMT_Q5_K ? 176 : 210;
  for (int64_t j = j0; j < j1; j++) {
    const uint8_t* row = w.data + j * w.row_bytes;
    float sum[MB] = {};
    for (int64_t b = 0; b < A.nsb; b++) {
      const uint8_t* blk = row + b * BB;
      for (int64_t o = 0; o < BB; o += 64) __builtin_prefetch(blk + kPrefetchAhead + o, 0, 2);
      KBlockVec wv;
      unpack_kblock_vec<FMT>(blk, wv);
      for (int i = 0; i < MB; i++) {
        const int64_t o = (i0 + i) * A.k + b * QKK;
        int32_t isum, msum;
        kblock_dot<FMT>(wv, A.q + o, A.bsum + (o >> 4), isum, msum);
        sum[i] = kaccumulate(FMT, sum[i], A.d[(i0 + i) * A.nsb + b], blk, isum, msum);
      }
    }
    for (int i = 0; i < MB; i++) put_out(c + (i0 + i) * w.rows + j, sum[i], acc);
  }
}

// Tasks of 16 weight rows; within one, activation rows 4 at a time over those rows (in cache).
template <int FMT>
static void kqmatmul_x86(const Exec& ex, const KActs& A, int64_t m, const PackedW& w, float* c, bool acc) {
  const int64_t n = w.rows;
  run(ex, ceil_div(n, 16), [&](int64_t t, int) {
    const int64_t j0 = t * 16, j1 = imin(n, j0 + 16);
    for (int64_t i0 = 0; i0 < m; i0 += 4) {
      switch (imin(4, m - i0)) {
        case 1: krows<FMT, 1>(A, i0, w, j0, j1, c, acc); break;
        case 2: krows<FMT, 2>(A, i0, w, j0, j1, c, acc); break;
        case 3: krows<FMT, 3>(A, i0, w, j0, j1, c, acc); break;
        default: krows<FMT, 4>(A, i0, w, j0, j1, c, acc); break;
      }
    }
  }, kStream);
}

#endif  // x86 AVX2

// C[m, rows] (+)= A[m, cols] Wᵀ for a q4_k, q5_k or q6_k W, with A quantized per super-block.
static void k_packed_matmul_kqdot(Pool* pool, const float* a, const PackedW& w, float* c, int64_t m, bool acc) {
  const int64_t n = w.rows, k = w.cols, nsb = k / QKK;
  if (m <= 0 || n <= 0) return;
  const Exec ex{pool, 0, m * n * k >= (int64_t(1) << 16)};
  // one scratch area: Q (k a multiple of 256), then the 16-value sums, then d
  uint8_t* area = scratch<uint8_t>(ex, 0, SLOT_A, m * k + m * k / 8 + m * nsb * 4);
  const KActs A{reinterpret_cast<int8_t*>(area), reinterpret_cast<float*>(area + m * k + m * k / 8),
                reinterpret_cast<int16_t*>(area + m * k), k, nsb};
  quantize_rows_k(ex, a, m, A);
#if LLAVA_X86_SIMD && defined(__AVX2__)
  switch (w.fmt) {
    case FMT_Q4_K: return kqmatmul_x86<FMT_Q4_K>(ex, A, m, w, c, acc);
    case FMT_Q5_K: return kqmatmul_x86<FMT_Q5_K>(ex, A, m, w, c, acc);
    default: return kqmatmul_x86<FMT_Q6_K>(ex, A, m, w, c, acc);
  }
#else
  kqmatmul_generic(ex, A, m, w, c, acc);
#endif
}
