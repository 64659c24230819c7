// Packed weight rows (bf16, f16, q8_0, q4_0; layouts in src/tensor/packed.ts) decoded to f32.
// Every decoded weight is exact in f32 (a q weight is an f16 scale times a small integer), so a
// product over decoded weights differs from the reference backend only in summation order.

static inline float f16s(uint16_t h) {
#if LLAVA_X86_SIMD && defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return half_to_float(h);
#endif
}

static inline int64_t block_bytes(int fmt) { return fmt == FMT_Q8_0 ? 34 : 18; }

static inline float q_scalar(int fmt, const uint8_t* blk, int j) {
  const uint8_t* q = blk + 2;
  if (fmt == FMT_Q8_0) return float(int8_t(q[j]));
  return float(j < 16 ? (q[j] & 15) - 8 : (q[j - 16] >> 4) - 8);
}

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

// out[i] = dot(a[i][0 .. cols), packed row) for MB rows of activations at once, streaming the
// weight row once; q blocks are dotted as integers and scaled once per block.
template <int FMT, int MB>
static void packed_row_dots(const uint8_t* row, int64_t cols, const float* const* a, float* out) {
  vf acc[MB][2];
  for (int i = 0; i < MB; i++) acc[i][0] = acc[i][1] = vf{};
  if (FMT == FMT_BF16 || FMT == FMT_F16) {
    auto ld = [&](int64_t j) { return FMT == FMT_BF16 ? load_bf16(row + 2 * j) : load_f16(row + 2 * j); };
    int64_t j = 0;
    for (; j + 2 * W <= cols; j += 2 * W) {
      vf w0 = ld(j), w1 = ld(j + W);
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
  constexpr int64_t bb = FMT == FMT_Q8_0 ? 34 : 18;
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
    default: packed_row_dots_n<FMT_Q4_0>(mb, row, cols, a, out); break;
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
  constexpr int64_t bb = FMT == FMT_Q8_0 ? 34 : 18;
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

static void packed_row_axpy_any(int fmt, int64_t m, const float* a, const uint8_t* row, int64_t cols, float* part, int64_t ld) {
  switch (fmt) {
    case FMT_BF16: packed_row_axpy<FMT_BF16>(m, a, row, cols, part, ld); break;
    case FMT_F16: packed_row_axpy<FMT_F16>(m, a, row, cols, part, ld); break;
    case FMT_Q8_0: packed_row_axpy<FMT_Q8_0>(m, a, row, cols, part, ld); break;
    default: packed_row_axpy<FMT_Q4_0>(m, a, row, cols, part, ld); break;
  }
}
