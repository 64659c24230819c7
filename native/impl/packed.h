// Packed weight rows (layouts in src/tensor/packed.ts and quant-blocks.ts) decoded to f32.
// bf16, f16, q8_0, q4_0: every decoded weight is exact in f32 (a q weight is an f16 scale times a
// small integer). q4_1 ... q6_k: decoded as llama.cpp's dequantize_row_* computes them in f32,
// bit for bit the reference backend's values (the products d·q are exact, so whether the compiler
// fuses the following add changes nothing). A product over decoded weights therefore differs
// from the reference backend only in summation order.

static inline float f16s(uint16_t h) {
#if LLAVA_X86_SIMD && defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return half_to_float(h);
#endif
}

static inline int64_t block_bytes(int fmt) { return kFmtBlockBytes[fmt]; }
// the formats decoded a whole block at a time (decode_block): blocks of 32 or 256 weights
static inline bool block_decoded(int fmt) { return fmt >= FMT_Q4_1; }
static inline uint32_t rd32(const uint8_t* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t(p[3]) << 24); }

// The decoders below work W lanes at a time (u8_to_i32 widens W bytes); each lane computes what
// dequantize_row_* computes for its weight.
static inline vi bit_lanes(uint32_t bits, int first) {  // lane i: bit first + i of bits
  vi lane;
  for (int i = 0; i < W; i++) lane[i] = i;  // folded to a constant
  const vu shifted = (vu{} + bits) >> (__builtin_convertvector(lane, vu) + uint32_t(first));
  return __builtin_convertvector(shifted & 1u, vi);
}

// q4_1 (no qh) and q5_0 / q5_1: w = d·(q − 16) or d·q + m
static inline void decode_q32(int fmt, const uint8_t* b, float* out) {
  const vf d = vset(f16s(rd16(b)));
  const vf m = vset(fmt == FMT_Q5_0 ? 0.f : f16s(rd16(b + 2)));
  const uint32_t qh = fmt == FMT_Q4_1 ? 0 : rd32(b + (fmt == FMT_Q5_1 ? 4 : 2));
  const uint8_t* qs = b + (fmt == FMT_Q4_1 ? 4 : fmt == FMT_Q5_0 ? 6 : 8);
  const int bias = fmt == FMT_Q5_0 ? 16 : 0;
  for (int o = 0; o < 16; o += W) {
    const vi bytes = u8_to_i32(qs + o);
    const vi lo = ((bytes & 15) | (bit_lanes(qh, o) << 4)) - bias;
    const vi hi = ((bytes >> 4) | (bit_lanes(qh, o + 16) << 4)) - bias;  // (qh = 0 for q4_1)
    vstore(out + o, __builtin_convertvector(lo, vf) * d + m);
    vstore(out + o + 16, __builtin_convertvector(hi, vf) * d + m);
  }
}

// get_scale_min_k4: 6-bit scale and min of sub-block j
static inline void scale_min_k4(int j, const uint8_t* q, int& sc, int& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// q4_k / q5_k: w = (d·sc)·q − dmin·m per sub-block of 32
static inline void decode_qk(int fmt, const uint8_t* b, float* out) {
  const float d = f16s(rd16(b)), dmin = f16s(rd16(b + 2));
  const bool five = fmt == FMT_Q5_K;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + (five ? 48 : 16);
  for (int j = 0, is = 0; j < 256; j += 64, is += 2) {
    int sc1, m1, sc2, m2;
    scale_min_k4(is, b + 4, sc1, m1);
    scale_min_k4(is + 1, b + 4, sc2, m2);
    const vf d1 = vset(d * float(sc1)), dm1 = vset(dmin * float(m1)), d2 = vset(d * float(sc2)), dm2 = vset(dmin * float(m2));
    for (int l = 0; l < 32; l += W) {
      const vi bytes = u8_to_i32(ql + j / 2 + l);
      vi lo = bytes & 15, hi = bytes >> 4;
      if (five) {
        const vi h = u8_to_i32(qh + l) >> is;
        lo += (h & 1) << 4;
        hi += ((h >> 1) & 1) << 4;
      }
      vstore(out + j + l, __builtin_convertvector(lo, vf) * d1 - dm1);
      vstore(out + j + l + 32, __builtin_convertvector(hi, vf) * d2 - dm2);
    }
  }
}

// q6_k: w = (d·sc)·(q − 32) per 16 weights
static inline void decode_q6k(const uint8_t* b, float* out) {
  const float d = f16s(rd16(b + 208));
  for (int n = 0; n < 256; n += 128) {
    const uint8_t* ql = b + n / 2;
    const uint8_t* qh = b + 128 + n / 4;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192 + n / 16);
    for (int l = 0; l < 32; l += W) {
      const vi lo = u8_to_i32(ql + l), hi = u8_to_i32(ql + l + 32), h = u8_to_i32(qh + l);
      const vi q1 = ((lo & 15) | ((h & 3) << 4)) - 32;
      const vi q2 = ((hi & 15) | (((h >> 2) & 3) << 4)) - 32;
      const vi q3 = ((lo >> 4) | (((h >> 4) & 3) << 4)) - 32;
      const vi q4 = ((hi >> 4) | (((h >> 6) & 3) << 4)) - 32;
      // the scale changes every 16 weights, and W divides 16: one scale per W lanes
      const int is = l / 16;
      const vf s1 = vset(d * float(sc[is])), s2 = vset(d * float(sc[is + 2]));
      const vf s3 = vset(d * float(sc[is + 4])), s4 = vset(d * float(sc[is + 6]));
      vstore(out + n + l, s1 * __builtin_convertvector(q1, vf));
      vstore(out + n + l + 32, s2 * __builtin_convertvector(q2, vf));
      vstore(out + n + l + 64, s3 * __builtin_convertvector(q3, vf));
      vstore(out + n + l + 96, s4 * __builtin_convertvector(q4, vf));
    }
  }
}

// One block of a block_decoded format into out[0 .. kFmtBlock[fmt]).
static inline void decode_block(int fmt, const uint8_t* b, float* out) {
  if (fmt == FMT_Q6_K) decode_q6k(b, out);
  else if (fmt >= FMT_Q4_K) decode_qk(fmt, b, out);
  else decode_q32(fmt, b, out);
}

static inline float q_scalar(int fmt, const uint8_t* blk, int j) {
  const uint8_t* q = blk + 2;
  if (fmt == FMT_Q8_0) return float(int8_t(q[j]));
  return float(j < 16 ? (q[j] & 15) - 8 : (q[j - 16] >> 4) - 8);
}

// Rows of a packed matrix in row order: pointers into w.data, or, for the whole panels of an
// interleaved matrix (kernels.h), rows of the panel gathered on first use into the reader's
// buffer, only the blocks holding columns [c0, c1) (the rest of the returned row is undefined).
// A row stays valid until a row of another panel or range is read, so a reader walking rows in
// order gathers each panel once. One reader per task (w may be null where the task has no
// packed matrix; row() is then never called).
class RowReader {
 public:
  explicit RowReader(const PackedW* w) : w_(w), whole_(w ? ilv_rows(*w) : 0) {}
  const uint8_t* row(int64_t j, int64_t c0 = 0, int64_t c1 = -1) {
    if (j >= whole_) return w_->data + j * w_->row_bytes;
    const int64_t b0 = c0 / 32, b1 = c1 < 0 ? w_->cols / 32 : (c1 + 31) / 32;
    if (j / kIlvRows != panel_ || b0 != b0_ || b1 != b1_) {
      panel_ = j / kIlvRows;
      b0_ = b0;
      b1_ = b1;
      buf_.resize(size_t(kIlvRows * w_->row_bytes));
      ilv_copy_blocks<false>(w_->fmt, ilv_panel(*w_, j), b0, b1, buf_.data(), w_->row_bytes);
    }
    return buf_.data() + j % kIlvRows * w_->row_bytes;
  }

 private:
  const PackedW* w_;
  const int64_t whole_;  // rows in interleaved panels
  int64_t panel_ = -1, b0_ = 0, b1_ = 0;
  std::vector<uint8_t> buf_;
};

// Weights [c0, c1) of one packed row into out[0 .. c1-c0).
static void dequant_range(int fmt, const uint8_t* row, int64_t c0, int64_t c1, float* out) {
  if (fmt == FMT_BF16 || fmt == FMT_F16) {
    int64_t j = c0;
    if (fmt == FMT_BF16) {
      for (; j + W <= c1; j += W) vstore(out + (j - c0), load_bf16(row + 2 * j));
      for (; j < c1; j++) out[j - c0] = bf16_to_float(rd16(row + 2 * j));
    } else {
      for (; j + W <= c1; j += W) vstore(out + (j - c0), load_f16(row + 2 * j));
      for (; j < c1; j++) out[j - c0] = f16s(rd16(row + 2 * j));
    }
    return;
  }
  if (block_decoded(fmt)) {
    const int64_t bs = kFmtBlock[fmt], bb = block_bytes(fmt);
    alignas(64) float tmp[256];
    for (int64_t b = c0 / bs; b * bs < c1; b++) {
      const int64_t base = b * bs;
      if (base >= c0 && base + bs <= c1) {
        decode_block(fmt, row + b * bb, out + (base - c0));
      } else {
        decode_block(fmt, row + b * bb, tmp);
        for (int64_t j = imax(c0, base); j < imin(c1, base + bs); j++) out[j - c0] = tmp[j - base];
      }
    }
    return;
  }
  const int64_t bb = block_bytes(fmt);
  for (int64_t b = c0 / 32; b * 32 < c1; b++) {
    const uint8_t* blk = row + b * bb;
    const float d = f16s(rd16(blk));
    const int64_t base = b * 32;
    if (base >= c0 && base + 32 <= c1) {
      float* o = out + (base - c0);
      if (fmt == FMT_Q8_0) {
        for (int v = 0; v < 32 / W; v++) vstore(o + v * W, q8_lanes(blk + 2, v) * d);
      } else {
        for (int v = 0; v < 32 / W; v++) vstore(o + v * W, q4_lanes(blk + 2, v) * d);
      }
    } else {
      for (int64_t j = imax(c0, base); j < imin(c1, base + 32); j++) out[j - c0] = d * q_scalar(fmt, blk, int(j - base));
    }
  }
}

// bf16 weights on x86 widen 2W at a time by interleaving their words with zeros in each 128-bit
// lane (two shuffles, no shifts or widening loads: about a fifth of a decode product's time), which
// leaves the values in lane order: element e of the low half is value 8·(e/4) + e%4 of the 2W, of
// the high half 8·(e/4) + 4 + e%4. The activations of those products are put in the same order
// once per call (bf16_pair_order), so each product is the same sum over the same pairs.
#if LLAVA_X86_SIMD && defined(__AVX2__)
constexpr bool kBf16Pairs = true;
static inline void load_bf16_pair(const uint8_t* p, vf& lo, vf& hi) {
#if defined(__AVX512F__)
  const __m512i w = _mm512_loadu_si512(p), z = _mm512_setzero_si512();
  lo = (vf)_mm512_unpacklo_epi16(z, w);
  hi = (vf)_mm512_unpackhi_epi16(z, w);
#else
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), z = _mm256_setzero_si256();
  lo = (vf)_mm256_unpacklo_epi16(z, w);
  hi = (vf)_mm256_unpackhi_epi16(z, w);
#endif
}
#else
constexpr bool kBf16Pairs = false;
static inline void load_bf16_pair(const uint8_t* p, vf& lo, vf& hi) {
  lo = load_bf16(p);
  hi = load_bf16(p + 2 * W);
}
#endif

// x [cols] in the order load_bf16_pair leaves bf16 weights: each whole 2W permuted, the rest as it is
static void bf16_pair_order(const float* x, int64_t cols, float* out) {
  int64_t j = 0;
  for (; j + 2 * W <= cols; j += 2 * W)
    for (int e = 0; e < W; e++) {
      out[j + e] = x[j + 8 * (e / 4) + e % 4];
      out[j + W + e] = x[j + 8 * (e / 4) + 4 + e % 4];
    }
  for (; j < cols; j++) out[j] = x[j];
}

// out[i] = dot(a[i][0 .. cols), packed row) for MB rows of activations at once, streaming the
// weight row once; q blocks are dotted as integers and scaled once per block. bf16 rows take the
// activations in bf16_pair_order where kBf16Pairs.
template <int FMT, int MB>
static void packed_row_dots(const uint8_t* row, int64_t cols, const float* const* a, float* out) {
  vf acc[MB][2];
  for (int i = 0; i < MB; i++) acc[i][0] = acc[i][1] = vf{};
  if (FMT == FMT_BF16 || FMT == FMT_F16) {
    auto ld = [&](int64_t j) { return FMT == FMT_BF16 ? load_bf16(row + 2 * j) : load_f16(row + 2 * j); };
    int64_t j = 0;
    for (; j + 2 * W <= cols; j += 2 * W) {
      vf w0, w1;
      if (FMT == FMT_BF16) {
        load_bf16_pair(row + 2 * j, w0, w1);
      } else {
        w0 = ld(j);
        w1 = ld(j + W);
      }
      for (int i = 0; i < MB; i++) {
        acc[i][0] += w0 * vload(a[i] + j);
        acc[i][1] += w1 * vload(a[i] + j + W);
      }
    }
    for (; j + W <= cols; j += W) {
      vf w0 = ld(j);
      for (int i = 0; i < MB; i++) acc[i][0] += w0 * vload(a[i] + j);
    }
    float tail[MB] = {};
    for (; j < cols; j++) {
      float wv = FMT == FMT_BF16 ? bf16_to_float(rd16(row + 2 * j)) : f16s(rd16(row + 2 * j));
      for (int i = 0; i < MB; i++) tail[i] += wv * a[i][j];
    }
    for (int i = 0; i < MB; i++) out[i] = hsum(acc[i][0] + acc[i][1]) + tail[i];
    return;
  }
  constexpr int64_t bb = kFmtBlockBytes[FMT];
  const int64_t nb = cols / 32;
  // two blocks per step, into separate accumulators (the FMA latency chain is per block)
  auto block = [&](int64_t b, int u) {
    const uint8_t* blk = row + b * bb;
    const vf d = vset(f16s(rd16(blk)));
    vf wv[32 / W];
    for (int v = 0; v < 32 / W; v++) wv[v] = FMT == FMT_Q8_0 ? q8_lanes(blk + 2, v) : q4_lanes(blk + 2, v);
    for (int i = 0; i < MB; i++) {
      const float* ai = a[i] + b * 32;
      vf bd = wv[0] * vload(ai);
      for (int v = 1; v < 32 / W; v++) bd += wv[v] * vload(ai + v * W);
      acc[i][u] += d * bd;
    }
  };
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    block(b, 0);
    block(b + 1, 1);
  }
  if (b < nb) block(b, 0);
  for (int i = 0; i < MB; i++) out[i] = hsum(acc[i][0] + acc[i][1]);
}

// The block_decoded formats: each block decoded to f32 once, then dotted with MB activation rows;
// each row's sums run in the same order whatever MB is.
template <int MB>
static void decoded_row_dots(int fmt, const uint8_t* row, int64_t cols, const float* const* a, float* out) {
  const int64_t bs = kFmtBlock[fmt], bb = block_bytes(fmt);
  alignas(64) float w[256];
  vf acc[MB][2];
  for (int i = 0; i < MB; i++) acc[i][0] = acc[i][1] = vf{};
  for (int64_t b = 0; b < cols / bs; b++) {
    decode_block(fmt, row + b * bb, w);
    for (int i = 0; i < MB; i++) {
      const float* ai = a[i] + b * bs;
      for (int64_t v = 0; v < bs; v += 2 * W) {
        acc[i][0] += vload(w + v) * vload(ai + v);
        acc[i][1] += vload(w + v + W) * vload(ai + v + W);
      }
    }
  }
  for (int i = 0; i < MB; i++) out[i] = hsum(acc[i][0] + acc[i][1]);
}

template <int FMT>
static void packed_row_dots_n(int mb, const uint8_t* row, int64_t cols, const float* const* a, float* out) {
  switch (mb) {
    case 1: packed_row_dots<FMT, 1>(row, cols, a, out); break;
    case 2: packed_row_dots<FMT, 2>(row, cols, a, out); break;
    case 3: packed_row_dots<FMT, 3>(row, cols, a, out); break;
    default: packed_row_dots<FMT, 4>(row, cols, a, out); break;
  }
}

static void packed_row_dots_any(int fmt, int mb, const uint8_t* row, int64_t cols, const float* const* a, float* out) {
  switch (fmt) {
    case FMT_BF16: packed_row_dots_n<FMT_BF16>(mb, row, cols, a, out); break;
    case FMT_F16: packed_row_dots_n<FMT_F16>(mb, row, cols, a, out); break;
    case FMT_Q8_0: packed_row_dots_n<FMT_Q8_0>(mb, row, cols, a, out); break;
    case FMT_Q4_0: packed_row_dots_n<FMT_Q4_0>(mb, row, cols, a, out); break;
    default:
      switch (mb) {
        case 1: decoded_row_dots<1>(fmt, row, cols, a, out); break;
        case 2: decoded_row_dots<2>(fmt, row, cols, a, out); break;
        case 3: decoded_row_dots<3>(fmt, row, cols, a, out); break;
        default: decoded_row_dots<4>(fmt, row, cols, a, out); break;
      }
  }
}

// part[i][0 .. cols) += a[i] * (packed row) for m rows, decoding each weight once in registers.
template <int FMT>
static void packed_row_axpy(int64_t m, const float* a, const uint8_t* row, int64_t cols, float* part, int64_t ld) {
  if (FMT == FMT_BF16 || FMT == FMT_F16) {
    int64_t j = 0;
    for (; j + W <= cols; j += W) {
      const vf w = FMT == FMT_BF16 ? load_bf16(row + 2 * j) : load_f16(row + 2 * j);
      for (int64_t i = 0; i < m; i++) {
        float* o = part + i * ld + j;
        vstore(o, vload(o) + vset(a[i]) * w);
      }
    }
    for (; j < cols; j++) {
      const float w = FMT == FMT_BF16 ? bf16_to_float(rd16(row + 2 * j)) : f16s(rd16(row + 2 * j));
      for (int64_t i = 0; i < m; i++) part[i * ld + j] += a[i] * w;
    }
    return;
  }
  constexpr int64_t bb = kFmtBlockBytes[FMT];
  for (int64_t b = 0; b < cols / 32; b++) {
    const uint8_t* blk = row + b * bb;
    const vf d = vset(f16s(rd16(blk)));
    for (int v = 0; v < 32 / W; v++) {
      const vf w = (FMT == FMT_Q8_0 ? q8_lanes(blk + 2, v) : q4_lanes(blk + 2, v)) * d;  // exact
      for (int64_t i = 0; i < m; i++) {
        float* o = part + i * ld + b * 32 + v * W;
        vstore(o, vload(o) + vset(a[i]) * w);
      }
    }
  }
}

// part[i][0 .. cols) += a[i] * (row of a block_decoded format), one block decoded at a time.
static void decoded_row_axpy(int fmt, int64_t m, const float* a, const uint8_t* row, int64_t cols, float* part, int64_t ld) {
  const int64_t bs = kFmtBlock[fmt], bb = block_bytes(fmt);
  alignas(64) float w[256];
  for (int64_t b = 0; b < cols / bs; b++) {
    decode_block(fmt, row + b * bb, w);
    for (int64_t v = 0; v < bs; v += W) {
      const vf wv = vload(w + v);
      for (int64_t i = 0; i < m; i++) {
        float* o = part + i * ld + b * bs + v;
        vstore(o, vload(o) + vset(a[i]) * wv);
      }
    }
  }
}

static void packed_row_axpy_any(int fmt, int64_t m, const float* a, const uint8_t* row, int64_t cols, float* part, int64_t ld) {
  switch (fmt) {
    case FMT_BF16: packed_row_axpy<FMT_BF16>(m, a, row, cols, part, ld); break;
    case FMT_F16: packed_row_axpy<FMT_F16>(m, a, row, cols, part, ld); break;
    case FMT_Q8_0: packed_row_axpy<FMT_Q8_0>(m, a, row, cols, part, ld); break;
    case FMT_Q4_0: packed_row_axpy<FMT_Q4_0>(m, a, row, cols, part, ld); break;
    default: decoded_row_axpy(fmt, m, a, row, cols, part, ld); break;
  }
}
