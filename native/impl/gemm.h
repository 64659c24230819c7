// f32 matrix products. Large products are blocked like BLIS: B is packed into NR-column
// panels of KC rows, A into MR-row panels, and an MR x NR register tile accumulates over KC.
// Products with few rows of A (decode) stream B once instead, which is what bounds them.
// The K blocking is fixed, so each C element is summed in the same order for any thread count.

constexpr int NR = 2 * W;
constexpr int MR = 6;
// A 6 x 2W tile keeps 12 accumulators in registers (of 32 zmm / 16 ymm / 16 xmm). Measured on
// Zen 5 VMs: on one with half-rate 512-bit FMA the tile ran at the core's peak (~117 GFLOP/s, as
// did 4x64, 8x32, 12x32); on one with full-rate FMA (271-280 GFLOP/s a core by a pure FMA loop)
// at 240-250 in large products, and 8x32, 12x32, KC = 256 or 384 were no faster. KC = 512 beats
// 256 on the first (fewer passes over C).
constexpr int64_t KC = W >= 8 ? 512 : 256;
// Products with at most this many rows of A take the streaming path.
constexpr int64_t SMALL_M = 4;

// op(A)(i, l) = trans ? p[l * ld + i] : p[i * ld + l]
struct ASrc {
  const float* p;
  int64_t ld;
  bool trans;
};
// op(B)(l, j): f32 (trans ? p[j * ld + l] : p[l * ld + j]), or a packed W with
// op(B)(l, j) = wtrans ? W[l][j] : W[j][l]
struct BSrc {
  const float* p;
  int64_t ld;
  bool trans;
  const PackedW* w;
  bool wtrans;
};

// Zeroes an MR x NR register tile (rows of c0 | c1) and starts fetching the C tile it ends in.
static inline void tile_begin(vf* c0, vf* c1, const float* C, int64_t ldc) {
#pragma GCC unroll 16
  for (int r = 0; r < MR; r++) {
    c0[r] = c1[r] = vf{};
    __builtin_prefetch(C + r * ldc, 1, 3);
    __builtin_prefetch(C + r * ldc + NR - 1, 1, 3);
  }
}

// The register tile into C's mr x nr corner, stored or added.
static inline void store_tile(const vf* c0, const vf* c1, float* C, int64_t ldc, int mr, int nr, bool add) {
  if (mr == MR && nr == NR) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
      float* cr = C + r * ldc;
      if (add) {
        vstore(cr, vload(cr) + c0[r]);
        vstore(cr + W, vload(cr + W) + c1[r]);
      } else {
        vstore(cr, c0[r]);
        vstore(cr + W, c1[r]);
      }
    }
    return;
  }
  alignas(64) float tile[MR * NR];
  for (int r = 0; r < MR; r++) {
    vstore(tile + r * NR, c0[r]);
    vstore(tile + r * NR + W, c1[r]);
  }
  for (int r = 0; r < mr; r++)
    for (int c = 0; c < nr; c++) C[r * ldc + c] = add ? C[r * ldc + c] + tile[r * NR + c] : tile[r * NR + c];
}

static void micro_kernel(int64_t kc, const float* __restrict A, const float* __restrict B, float* C, int64_t ldc, int mr,
                         int nr, bool add) {
  vf c0[MR], c1[MR];
  tile_begin(c0, c1, C, ldc);
  for (int64_t p = 0; p < kc; p++) {
    vf b0 = vload(B), b1 = vload(B + W);
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
      vf a = vset(A[r]);
      c0[r] += a * b0;
      c1[r] += a * b1;
    }
    A += MR;
    B += NR;
  }
  store_tile(c0, c1, C, ldc, mr, nr, add);
}

#if LLAVA_X86_SIMD && defined(__AVX512F__)
// dst[kk * 6 + r] = rows[r][kk] for kk < 16: the 6 rows' 16 columns interleaved in registers. The
// row pairs (0, 1), (2, 3), (4, 5) interleave into 64-bit pairs, and each output vector takes
// its eight pairs column by column from the three pair vectors.
static inline void interleave6x16(const float* const* rows, float* dst) {
  static_assert(MR == 6, "the interleave is written for 6-row panels");
  const __m512i lo32 = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi32 = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  __m512d p[3][2];  // [row pair][columns 0-7, 8-15]
  for (int q = 0; q < 3; q++) {
    const __m512 a = _mm512_loadu_ps(rows[2 * q]), b = _mm512_loadu_ps(rows[2 * q + 1]);
    p[q][0] = _mm512_castps_pd(_mm512_permutex2var_ps(a, lo32, b));
    p[q][1] = _mm512_castps_pd(_mm512_permutex2var_ps(a, hi32, b));
  }
  // 64-bit slot s of the 24 per half: column s / 3 of pair s % 3; pairs 0 and 1 by one
  // two-source permute, pair 2 by a masked permute over it
  alignas(64) static constexpr int64_t kAB[3][8] = {{0, 8, 0, 1, 9, 0, 2, 10}, {0, 3, 11, 0, 4, 12, 0, 5}, {13, 0, 6, 14, 0, 7, 15, 0}};
  alignas(64) static constexpr int64_t kC[3][8] = {{0, 0, 0, 0, 0, 1, 0, 0}, {2, 0, 0, 3, 0, 0, 4, 0}, {0, 5, 0, 0, 6, 0, 0, 7}};
  static constexpr __mmask8 kMaskC[3] = {0x24, 0x49, 0x92};
  for (int h = 0; h < 2; h++)
    for (int o = 0; o < 3; o++) {
      __m512d v = _mm512_permutex2var_pd(p[0][h], _mm512_load_si512(kAB[o]), p[1][h]);
      v = _mm512_mask_permutexvar_pd(v, kMaskC[o], _mm512_load_si512(kC[o]), p[2][h]);
      _mm512_storeu_pd(reinterpret_cast<double*>(dst + (h * 3 + o) * 16), v);
    }
}
#endif

// op(A)[i0 .. i0+mc, p0 .. p0+kc) into MR-row panels, k-major, zero-padded.
static void pack_a(const ASrc& A, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* out) {
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int mr = int(imin(MR, mc - ir));
    float* dst = out + ir * kc;
    if (!A.trans) {
      int64_t k0 = 0;
#if LLAVA_X86_SIMD && defined(__AVX512F__)
      if (mr == MR)
        for (; k0 + 16 <= kc; k0 += 16) {
          const float* rows[MR];
          for (int r = 0; r < MR; r++) rows[r] = A.p + (i0 + ir + r) * A.ld + p0 + k0;
          interleave6x16(rows, dst + k0 * MR);
        }
#endif
      for (int r = 0; r < mr; r++) {
        const float* src = A.p + (i0 + ir + r) * A.ld + p0;
        for (int64_t kk = k0; kk < kc; kk++) dst[kk * MR + r] = src[kk];
      }
      for (int r = mr; r < MR; r++)
        for (int64_t kk = 0; kk < kc; kk++) dst[kk * MR + r] = 0.f;
    } else {
      int64_t kk = 0;
#if LLAVA_X86_SIMD && defined(__AVX512F__)
      // a row of Aᵀ gives a panel row: one masked load and store (the rest zero), not 6 + 6 scalar
      // copies (a prompt attention's backward, whose dV = Pᵀ dO reads P so: 16% of it)
      const __mmask16 have = __mmask16((1u << mr) - 1), row = __mmask16((1u << MR) - 1);
      for (; kk < kc; kk++) _mm512_mask_storeu_ps(dst + kk * MR, row, _mm512_maskz_loadu_ps(have, A.p + (p0 + kk) * A.ld + i0 + ir));
#endif
      for (; kk < kc; kk++) {
        const float* src = A.p + (p0 + kk) * A.ld + i0 + ir;
        for (int r = 0; r < mr; r++) dst[kk * MR + r] = src[r];
        for (int r = mr; r < MR; r++) dst[kk * MR + r] = 0.f;
      }
    }
  }
}

// dst[kk * NR + c] = rows[c][kk] for c < nr, kk < kc (a panel from rows of Bᵀ); zero for c >= nr.
// W x W blocks are transposed in registers; the same stretch of the rows `ahead` floats further
// (the next panel's) is prefetched.
static void transpose_into_panel(const float* const* rows, int nr, int64_t kc, float* dst, int64_t ahead = 0) {
  for (int cb = 0; cb < NR; cb += W) {
    if (cb + W <= nr) {
      int64_t kk = 0;
      for (; kk + W <= kc; kk += W) {
        vf v[W];
        if (ahead)
          for (int x = 0; x < W; x++) __builtin_prefetch(rows[cb + x] + kk + ahead, 0, 3);
        for (int x = 0; x < W; x++) v[x] = vload(rows[cb + x] + kk);
        transpose(v);
        for (int y = 0; y < W; y++) vstore(dst + (kk + y) * NR + cb, v[y]);
      }
      for (; kk < kc; kk++)
        for (int x = 0; x < W; x++) dst[kk * NR + cb + x] = rows[cb + x][kk];
    } else {
      for (int64_t kk = 0; kk < kc; kk++)
        for (int x = 0; x < W; x++) dst[kk * NR + cb + x] = cb + x < nr ? rows[cb + x][kk] : 0.f;
    }
  }
}

// Panels [pb, pe) of op(B)[p0 .. p0+kc, 0 .. n) (panel q covers columns q*NR .. and lands at
// out + (q - pb) * NR * kc). tmp holds max((pe - pb) * NR, NR * kc) floats.
static void pack_b(const BSrc& B, int64_t p0, int64_t kc, int64_t n, int64_t pb, int64_t pe, float* out, float* tmp) {
  out -= pb * NR * kc;
  if (B.w && B.wtrans) {
    // rows of W are rows of op(B): decode each row's column range once
    const int64_t c0 = pb * NR, c1 = imin(n, pe * NR);
    RowReader rows(B.w);
    for (int64_t kk = 0; kk < kc; kk++) {
      dequant_range(B.w->fmt, rows.row(p0 + kk, c0, c1), c0, c1, tmp);
      for (int64_t q = pb; q < pe; q++) {
        const int64_t j = q * NR;
        const int nr = int(imin(NR, n - j));
        float* dst = out + q * NR * kc + kk * NR;
        const float* src = tmp + (j - c0);
        for (int c = 0; c < nr; c++) dst[c] = src[c];
        for (int c = nr; c < NR; c++) dst[c] = 0.f;
      }
    }
    return;
  }
  if (!B.w && !B.trans) {
    // rows of op(B) in memory, 16 rows at a time across the panels: the rows' stretches are read
    // whole and each panel gets 16 consecutive rows (a panel at a time read a 128-byte strip of
    // every row; a row at a time wrote to every panel, 64 KiB apart: the same cache sets). The
    // next panels' stretch of the same rows is fetched meanwhile (a 64 x 1024 x 32001 product at
    // one thread, 64 columns a task: 29.9 -> 24.1 ms).
    constexpr int64_t kRows = 16;
    const int64_t width = (pe - pb) * NR;
    for (int64_t k0 = 0; k0 < kc; k0 += kRows) {
      if (pe * NR < n)
        for (int64_t kk = k0; kk < imin(kc, k0 + kRows); kk++)
          for (int64_t c = 0; c < width; c += 16) __builtin_prefetch(B.p + (p0 + kk) * B.ld + pe * NR + c, 0, 3);
      for (int64_t q = pb; q < pe; q++) {
        const int64_t j = q * NR;
        const int nr = int(imin(NR, n - j));
        for (int64_t kk = k0; kk < imin(kc, k0 + kRows); kk++) {
          const float* src = B.p + (p0 + kk) * B.ld + j;
          float* dst = out + q * NR * kc + kk * NR;
          if (nr == NR) {
            vstore(dst, vload(src));
            vstore(dst + W, vload(src + W));
          } else {
            for (int c = 0; c < nr; c++) dst[c] = src[c];
            for (int c = nr; c < NR; c++) dst[c] = 0.f;
          }
        }
      }
    }
    return;
  }
  RowReader wrows(B.w);
  for (int64_t q = pb; q < pe; q++) {
    const int64_t j = q * NR;
    const int nr = int(imin(NR, n - j));
    // column c of the panel is row j + c of Bᵀ (decoded first when packed)
    const float* rows[NR];
    for (int c = 0; c < nr; c++) {
      if (B.w) {
        dequant_range(B.w->fmt, wrows.row(j + c, p0, p0 + kc), p0, p0 + kc, tmp + c * kc);
        rows[c] = tmp + c * kc;
      } else {
        rows[c] = B.p + (j + c) * B.ld + p0;
      }
    }
    // the next panel's rows, the next task's too (a thread takes runs of consecutive tasks)
    transpose_into_panel(rows, nr, kc, out + q * NR * kc, B.w || (q + 1) * NR >= n ? 0 : NR * B.ld);
  }
}

// MICRO multiplies packed panels; the packing itself only moves 32-bit units, so a micro-kernel
// over pairs of bf16 (kern_avx512bf16.cc) reuses it unchanged.
//
// A task is a block of up to kBlockRows rows of A by kTaskCols columns of B, over one KC block of
// K. A thread packs its block's rows of A once for the tasks it runs in a row (their panels,
// 768 KiB with AVX-512, 384 KiB with AVX2, stay in its L2), and packs the task's columns of B
// right before multiplying them, so they are in its own cache. Packing a whole block of B first,
// then sharing its panels, had each core read panels the other had packed: at 2 threads a 197 x
// 3072 x 768 product took 1.9-2.7 ms against 3.8 at one, now 1.8-1.9. With few columns (LoRA's
// rank, say) the rows are cut finer, so that every thread has tasks. Each C element is summed in
// the same K order whatever the threads or the blocking: the same bits as before.
constexpr int64_t kBlockRows = (W >= 16 ? 64 : 32) * MR, kTaskCols = 64;

typedef void (*MicroKernel)(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, int mr, int nr, bool add);

template <MicroKernel MICRO = micro_kernel>
static void gemm_blocked(const Exec& ex, int64_t m, int64_t n, int64_t k, const ASrc& A, const BSrc& B, float* C,
                         int64_t ldc, bool acc) {
  const int64_t threads = ex.par ? pool_size(ex.pool) : 1;
  const int64_t npan = ceil_div(n, NR);
  // a task's columns are whole 32-column groups, so packed q blocks are decoded whole
  const int64_t unit = imax(1, kTaskCols / NR);
  const int64_t units = ceil_div(npan, unit);
  // row blocks: at most kBlockRows rows, and with several threads enough blocks for about 4 tasks
  // a thread, down to 8 register tiles a block
  const int64_t want = threads > 1 ? imin(ceil_div(4 * threads, units), ceil_div(m, 8 * MR)) : 1;
  const int64_t block = ceil_div(ceil_div(m, imax(want, ceil_div(m, kBlockRows))), MR) * MR;
  const int64_t blocks = ceil_div(m, block);
  for (int64_t pc = 0; pc < k; pc += KC) {
    const int64_t kc = imin(KC, k - pc);
    const bool add = acc || pc > 0;
    std::vector<int64_t> packed(size_t(pool_size(ex.pool)), -1);  // the row block of each thread's A panels
    run(ex, blocks * units, [&](int64_t t, int tid) {
      const int64_t ib = t / units, u = t % units;
      const int64_t r0 = ib * block, rows = imin(block, m - r0);
      float* Ap = scratch<float>(ex, tid, SLOT_A, ceil_div(block, MR) * MR * kc);
      if (packed[tid] != ib) pack_a(A, r0, rows, pc, kc, Ap);
      packed[tid] = ib;
      const int64_t pb = u * unit, pe = imin(npan, pb + unit);
      float* Bp = scratch<float>(ex, tid, SLOT_B, unit * NR * kc);
      pack_b(B, pc, kc, n, pb, pe, Bp, scratch<float>(ex, tid, SLOT_T, imax(unit * NR, NR * kc)));
      for (int64_t q = pb; q < pe; q++) {
        const int64_t j = q * NR;
        const int nr = int(imin(NR, n - j));
        for (int64_t ir = 0; ir < rows; ir += MR)
          MICRO(kc, Ap + ir * kc, Bp + (q - pb) * NR * kc, C + (r0 + ir) * ldc + j, ldc, int(imin(MR, rows - ir)), nr, add);
      }
    });
  }
}

// ---- few rows of A: stream B once ----

// Software prefetch of each row of B this many floats ahead of the dot products, so that a batch
// of rows computes while the weights arrive: measured (one thread, 32001 x 1024 from memory)
// 8 rows 8.1 -> 6.4 ms, 1 row 3.6 -> 3.1 ms, against 2 KiB ahead.
constexpr int64_t kDotPrefetch = 4096;

// Dot products of rows of A with rows of B, an MB x NB tile at a time. Each dot product is one
// vector accumulator along K in K order, then the fixed lane sum and a scalar tail: the same
// operations whatever the tile, so a row of A gets the same results alone as in a batch
// (`rowwise`). The NB columns hide the latency of the accumulator chains, and each load of B
// serves MB rows of A.
template <int MB, int NB>
static void f32_dot_tile(const float* const* a, const float* const* b, int64_t k, float* out, int64_t ldo) {
  vf acc[MB][NB];
  for (int i = 0; i < MB; i++)
    for (int j = 0; j < NB; j++) acc[i][j] = vf{};
  int64_t l = 0;
  for (; l + W <= k; l += W) {
    vf bv[NB];
    for (int j = 0; j < NB; j++) {
      __builtin_prefetch(b[j] + l + kDotPrefetch, 0, 3);
      bv[j] = vload(b[j] + l);
    }
    for (int i = 0; i < MB; i++) {
      const vf av = vload(a[i] + l);
      for (int j = 0; j < NB; j++) acc[i][j] += av * bv[j];
    }
  }
  for (int i = 0; i < MB; i++)
    for (int j = 0; j < NB; j++) {
      float tail = 0.f;
      for (int64_t t = l; t < k; t++) tail += a[i][t] * b[j][t];
      out[i * ldo + j] = hsum(acc[i][j]) + tail;
    }
}

// Rows of B per tile and the most rows of A the registers hold beside them. One row of A with
// AVX2 or AVX-512 takes one row of B at a time instead: one stream from memory, which the
// hardware prefetcher follows best (measured, one thread, 32001 x 1024 from memory, AVX-512
// 3.2 ms against 4.0 with 4 rows of B, AVX2 2.8 against 3.6; in cache, AVX2 loses 40% on the
// latency of the one chain). Narrower vectors need the 4 chains. An 8 x 3 tile (AVX-512) took
// twice as long as two passes of 4 x 4.
constexpr int DOT_NB = 4;
constexpr int DOT_MB = W >= 16 ? 4 : 2;
constexpr int DOT_NB_ONE_ROW = W >= 8 ? 1 : DOT_NB;

// out[i * ldo + j] = dot(a[i], b[j]) for mb <= DOT_MB rows and nb <= DOT_NB columns
template <int MB, int NB = MB == 1 ? DOT_NB_ONE_ROW : DOT_NB>
static void f32_dot_rows(int nb, const float* const* a, const float* const* b, int64_t k, float* out, int64_t ldo) {
  int j = 0;
  for (; j + NB <= nb; j += NB) f32_dot_tile<MB, NB>(a, b + j, k, out + j, ldo);
  for (; j < nb; j++) f32_dot_tile<MB, 1>(a, b + j, k, out + j, ldo);
}

static void f32_dots(int mb, int nb, const float* const* a, const float* const* b, int64_t k, float* out, int64_t ldo) {
  switch (mb) {
    case 1: return f32_dot_rows<1>(nb, a, b, k, out, ldo);
    case 2: return f32_dot_rows<2>(nb, a, b, k, out, ldo);
    case 3: if constexpr (DOT_MB >= 3) return f32_dot_rows<3>(nb, a, b, k, out, ldo);
            [[fallthrough]];
    default: return f32_dot_rows<DOT_MB>(nb, a, b, k, out, ldo);
  }
}

// buf[i][0 .. nc) += sum over r < R of a[r * SMALL_M + i] * rows[r][0 .. nc), added in order of r
// (the same sums as R single-row updates, with one load and store of buf per R rows)
template <int R>
static inline void axpy_rows_multi(int64_t m, const float* a, const float* const* rows, int64_t nc, float* buf, int64_t ldbuf) {
  for (int64_t i = 0; i < m; i++) {
    vf sv[R];
    for (int r = 0; r < R; r++) sv[r] = vset(a[r * SMALL_M + i]);
    float* o = buf + i * ldbuf;
    int64_t c = 0;
    for (; c + W <= nc; c += W) {
      vf x = vload(o + c);
      for (int r = 0; r < R; r++) x += sv[r] * vload(rows[r] + c);
      vstore(o + c, x);
    }
    for (; c < nc; c++) {
      float x = o[c];
      for (int r = 0; r < R; r++) x += a[r * SMALL_M + i] * rows[r][c];
      o[c] = x;
    }
  }
}

// buf[i][0 .. nc) += a[i] * row[0 .. nc) for each of m rows (a sequential sum per element)
static inline void axpy_rows(int64_t m, const float* a, const float* row, int64_t nc, float* buf, int64_t ldbuf) {
  for (int64_t i = 0; i < m; i++) {
    const float s = a[i];
    const vf sv = vset(s);
    float* o = buf + i * ldbuf;
    int64_t c = 0;
    for (; c + W <= nc; c += W) vstore(o + c, vload(o + c) + sv * vload(row + c));
    for (; c < nc; c++) o[c] += s * row[c];
  }
}

// Columns per task when the columns of C are cut for threads.
constexpr int64_t kColChunk = 1024;
// Rows of B per task of the row-streaming path: at least kMinRowBlock, at most kMaxRowBlocks tasks.
constexpr int64_t kMinRowBlock = 64, kMaxRowBlocks = 32;
constexpr int64_t kRowChunk = 16;   // rows of B per task of the dot-product paths

// Few rows of A, or any number on the dot-product path (a `rowwise` product: each row of C is
// computed as the one-row product would compute it, so a batch of decode steps gives each
// sequence the results it gets alone).
static void gemv_small(const Exec& ex, int64_t m, int64_t n, int64_t k, const ASrc& A, const BSrc& B, float* C,
                       int64_t ldc, bool acc) {
  // the rows of op(A), contiguous
  const float* arow_small[SMALL_M];
  std::vector<const float*> arow_many(m > SMALL_M ? m : 0);
  const float** arow = m > SMALL_M ? arow_many.data() : arow_small;
  if (A.trans) {
    float* t = scratch<float>(ex, ex.tid, SLOT_T, m * k);
    for (int64_t l = 0; l < k; l++)
      for (int64_t i = 0; i < m; i++) t[i * k + l] = A.p[l * A.ld + i];
    for (int64_t i = 0; i < m; i++) arow[i] = t + i * k;
  } else {
    for (int64_t i = 0; i < m; i++) arow[i] = A.p + i * A.ld;
  }
  auto put = [&](int64_t i, int64_t j, float s) { C[i * ldc + j] = acc ? C[i * ldc + j] + s : s; };
  const bool dots = B.w ? !B.wtrans : B.trans;
  if (dots && B.w && B.w->fmt == FMT_BF16 && kBf16Pairs) {
    // the activations in the order bf16 weights widen in (packed_row_dots)
    float* t = scratch<float>(ex, ex.tid, SLOT_P, m * k);
    for (int64_t i = 0; i < m; i++) {
      bf16_pair_order(arow[i], k, t + i * k);
      arow[i] = t + i * k;
    }
  }
  if (dots) {
    // C[i, j] = dot(op(A) row i, B row j); each row of C is summed as it would be alone
    run(ex, ceil_div(n, kRowChunk), [&](int64_t t, int) {
      const int64_t j1 = imin(n, (t + 1) * kRowChunk);
      if (B.w) {
        float out[4];
        RowReader rows(B.w);
        for (int64_t j = t * kRowChunk; j < j1; j++) {
          const uint8_t* row = rows.row(j);
          for (int64_t i0 = 0; i0 < m; i0 += 4) {
            const int mb = int(imin(4, m - i0));
            packed_row_dots_any(B.w->fmt, mb, row, k, arow + i0, out);
            for (int i = 0; i < mb; i++) put(i0 + i, j, out[i]);
          }
        }
        return;
      }
      for (int64_t j = t * kRowChunk; j < j1; j += DOT_NB) {
        const int nb = int(imin(DOT_NB, j1 - j));
        const float* brow[DOT_NB];
        for (int c = 0; c < nb; c++) brow[c] = B.p + (j + c) * B.ld;
        for (int64_t i0 = 0; i0 < m; i0 += DOT_MB) {
          const int mb = int(imin(DOT_MB, m - i0));
          float out[DOT_MB * DOT_NB];
          f32_dots(mb, nb, arow + i0, brow, k, out, DOT_NB);
          for (int i = 0; i < mb; i++)
            for (int c = 0; c < nb; c++) put(i0 + i, j + c, out[i * DOT_NB + c]);
        }
      }
    }, kStream);
    return;
  }
  // C[i, :] = sum over l of op(A)[i, l] * B row l. Each task streams a block of whole rows of B
  // (long contiguous reads) into its own partial sums; the partials are then added in block
  // order, so the result does not depend on which thread ran which block.
  const int64_t rb = imax(kMinRowBlock, ceil_div(k, kMaxRowBlocks));
  const int64_t blocks = ceil_div(k, rb);
  const int64_t width = ceil_div(n, W) * W;  // partial rows padded to whole vectors
  float* partial = scratch<float>(ex, ex.tid, SLOT_PARTIAL, blocks * m * width);
  run(ex, blocks, [&](int64_t t, int) {
    float* part = partial + t * m * width;
    for (int64_t x = 0; x < m * width; x++) part[x] = 0.f;
    RowReader wrows(B.w);
    float a[4 * SMALL_M];
    int64_t l = t * rb;
    const int64_t lend = imin(k, (t + 1) * rb);
    if (!B.w) {
      // four rows of B per pass over the partial sums
      for (; l + 4 <= lend; l += 4) {
        const float* rows[4];
        for (int r = 0; r < 4; r++) {
          rows[r] = B.p + (l + r) * B.ld;
          for (int64_t i = 0; i < m; i++) a[r * SMALL_M + i] = arow[i][l + r];
        }
        axpy_rows_multi<4>(m, a, rows, n, part, width);
      }
    }
    for (; l < lend; l++) {
      bool any = false;
      for (int64_t i = 0; i < m; i++) {
        a[i] = arow[i][l];
        any |= a[i] != 0.f;
      }
      if (B.w) {
        if (!any) continue;  // like the reference: a zero gradient row adds nothing
        packed_row_axpy_any(B.w->fmt, m, a, wrows.row(l), n, part, width);
      } else {
        axpy_rows(m, a, B.p + l * B.ld, n, part, width);
      }
    }
  });
  chunked(ex, n, kColChunk, [&](int64_t j0, int64_t j1, int) {
    for (int64_t i = 0; i < m; i++) {
      int64_t j = j0;
      for (; j + W <= j1; j += W) {
        vf s = vload(partial + i * width + j);
        for (int64_t t = 1; t < blocks; t++) s += vload(partial + (t * m + i) * width + j);
        float* c = C + i * ldc + j;
        vstore(c, acc ? vload(c) + s : s);
      }
      for (; j < j1; j++) {
        float s = partial[i * width + j];
        for (int64_t t = 1; t < blocks; t++) s += partial[(t * m + i) * width + j];
        put(i, j, s);
      }
    }
  });
}

static void matmul(const Exec& ex, int64_t m, int64_t n, int64_t k, const ASrc& A, const BSrc& B, float* C, int64_t ldc,
                   bool acc, bool rowwise = false) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!acc)
      for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) C[i * ldc + j] = 0.f;
    return;
  }
  const bool dots = (B.w ? !B.wtrans : B.trans) && !A.trans;
  if (m <= SMALL_M || (rowwise && dots)) gemv_small(ex, m, n, k, A, B, C, ldc, acc);
  else gemm_blocked(ex, m, n, k, A, B, C, ldc, acc);
}

static void k_gemm(Pool* pool, int64_t m, int64_t n, int64_t k, const float* a, bool ta, const float* b, bool tb, float* c,
                   bool acc, bool rowwise) {
  Exec ex{pool, 0, m * n * k >= (int64_t(1) << 18)};
  ASrc A{a, ta ? m : k, ta};
  BSrc B{b, tb ? k : n, tb, nullptr, false};
  matmul(ex, m, n, k, A, B, c, n, acc, rowwise);
}

static void k_packed_matmul(Pool* pool, const float* a, const PackedW& w, float* c, int64_t m, bool transposed, bool acc,
                            bool rowwise) {
  // forward: C[m, rows] = A[m, cols] Wᵀ; transposed: C[m, cols] = A[m, rows] W
  const int64_t n = transposed ? w.cols : w.rows, k = transposed ? w.rows : w.cols;
  Exec ex{pool, 0, m * n * k >= (int64_t(1) << 16)};
  ASrc A{a, k, false};
  BSrc B{nullptr, 0, false, &w, transposed};
  matmul(ex, m, n, k, A, B, c, n, acc, rowwise);
}
