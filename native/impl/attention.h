// Fused attention on [B, T, H, D] tensors with grouped kv heads: per (batch, head, block of
// query rows) the scores S = Q Kᵀ are one matrix product, the masked softmax runs on S in
// place, and O = P V is a second product. The backward pass recomputes P per block.

constexpr int64_t QBLOCK = 64;

struct AttnView {
  const AttnShape& s;
  int64_t group, qstride, kvrow;
  explicit AttnView(const AttnShape& shape)
      : s(shape), group(shape.heads / shape.kv_heads), qstride(shape.heads * shape.head_dim),
        kvrow(shape.kv_heads * shape.head_dim) {}
  // keys visible to query row i
  int64_t limit(int64_t i) const {
    if (!s.causal) return s.tk;
    return imax(0, imin(s.tk, i + s.causal_offset + 1));
  }
  // first key visible to query row i (a sliding window hides the older ones)
  int64_t first(int64_t i) const {
    if (!s.causal || s.window <= 0) return 0;
    return imin(limit(i), imax(0, i + s.causal_offset - s.window + 1));
  }
  int64_t q_off(int64_t b, int64_t i, int64_t h) const { return ((b * s.tq + i) * s.heads + h) * s.head_dim; }
  int64_t kv_off(int64_t b, int64_t kvh) const { return b * s.kv_stride + kvh * s.head_dim; }
};

// row[0 .. n) -> exp(row - m) in place; returns their sum in double (lanes along j, then the tail)
static inline double exp_sum(float* row, int64_t n, float m) {
  const vf mv = vset(m);
  vdw sumv = vdw{};
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    vf e = vexp(vload(row + j) - mv);
    vstore(row + j, e);
    sumv += vwiden(e);
  }
  double sum = hsum(sumv);
  if (j < n) {
    // the tail's exps in one vector (each lane what sexp gives it), then added one by one: a
    // causal prompt's rows end anywhere, and one vector exp a tail element was a third of its
    // softmax
    alignas(64) float t[W];
    for (int x = 0; x < W; x++) t[x] = j + x < n ? row[j + x] - m : 0.f;
    vstore(t, vexp(vload(t)));
    for (int x = 0; j < n; j++, x++) {
      row[j] = t[x];
      sum += row[j];
    }
  }
  return sum;
}

// row[0 .. lim) (unscaled scores) -> softmax(row * scale); row[lim .. lmax) -> 0.
static void softmax_row(float* row, int64_t lim, int64_t lmax, float scale) {
  const vf sc = vset(scale);
  int64_t j = 0;
  vf mx = vset(-__builtin_inff());
  for (; j + W <= lim; j += W) {
    vf x = vload(row + j) * sc;
    vstore(row + j, x);
    mx = vmax(mx, x);
  }
  float m = hmax(mx);
  for (; j < lim; j++) {
    row[j] *= scale;
    m = row[j] > m ? row[j] : m;
  }
  const double sum = exp_sum(row, lim, m);
  const float inv = lim > 0 ? float(1.0 / sum) : 0.f;
  const vf iv = vset(inv);
  j = 0;
  for (; j + W <= lim; j += W) vstore(row + j, vload(row + j) * iv);
  for (; j < lim; j++) row[j] *= inv;
  for (j = lim; j < lmax; j++) row[j] = 0.f;
}

// S [rows, lmax] -> P in place: row r keeps its entries [first(i0 + r), limit(i0 + r)).
static void masked_softmax(const AttnView& v, int64_t i0, int64_t rows, int64_t lmax, float* S) {
  for (int64_t r = 0; r < rows; r++) {
    float* row = S + r * lmax;
    const int64_t f = v.first(i0 + r);
    for (int64_t j = 0; j < f; j++) row[j] = 0.f;
    softmax_row(row + f, v.limit(i0 + r) - f, lmax - f, v.s.scale);
  }
}


// Keys and values (the b of the dot products below, the v of pv_heads) are f32, or the f16 bits
// of a 16-bit KV cache, read as the f32 values they stand for (exactly), so every product over
// them runs the same operations on the same values as over the cache widened to f32.
static inline vf kv_load(const float* p) { return vload(p); }
static inline vf kv_load(const uint16_t* p) { return load_f16(reinterpret_cast<const uint8_t*>(p)); }
static inline float kv_at(const float* p) { return *p; }
static inline float kv_at(const uint16_t* p) { return half_to_float(*p); }

// The vector part of dot(): two accumulators along n, added; *tail = where the scalar tail starts.
template <typename T>
static inline vf dot_vec(const float* a, const T* b, int64_t n, int64_t* tail) {
  vf acc0 = vf{}, acc1 = vf{};
  int64_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    acc0 += vload(a + j) * kv_load(b + j);
    acc1 += vload(a + j + W) * kv_load(b + j + W);
  }
  for (; j + W <= n; j += W) acc0 += vload(a + j) * kv_load(b + j);
  *tail = j;
  return acc0 + acc1;
}

// dot_vec for n = ND·W, unrolled: the same operations in the same order
template <int ND, typename T>
static inline vf dot_vec_n(const float* a, const T* b) {
  vf acc0 = vf{}, acc1 = vf{};
  for (int c = 0; c + 1 < ND; c += 2) {
    acc0 += vload(a + c * W) * kv_load(b + c * W);
    acc1 += vload(a + (c + 1) * W) * kv_load(b + (c + 1) * W);
  }
  if constexpr (ND % 2 == 1) acc0 += vload(a + (ND - 1) * W) * kv_load(b + (ND - 1) * W);
  return acc0 + acc1;
}

template <typename T>
static inline float dot(const float* a, const T* b, int64_t n) {
  int64_t j;
  float s = hsum(dot_vec(a, b, n, &j));
  for (; j < n; j++) s = fmaf(a[j], kv_at(b + j), s);
  return s;
}

// out[x] = dot(a[x], b[x], n) for W pairs, bit for bit, with one vectorized lane sum
template <typename T>
static inline void dots(const float* const* a, const T* const* b, int64_t n, float* out) {
  vf v[W];
  int64_t j = 0;
  for (int x = 0; x < W; x++) v[x] = dot_vec(a[x], b[x], n, &j);
  vstore(out, hsum_many(v));
  for (int x = 0; x < W; x++)
    for (int64_t t = j; t < n; t++) out[x] = fmaf(a[x][t], kv_at(b[x] + t), out[x]);
}

// o[0 .. C·W) += p[j] · v[j · ld + (0 .. C·W)] for j = 0 .. n in order
template <int C>
static inline void pv_columns(const float* p, int64_t n, const float* v, int64_t ld, float* o) {
  vf acc[C];
  for (int c = 0; c < C; c++) acc[c] = vload(o + c * W);
  for (int64_t j = 0; j < n; j++) {
    const vf pv = vset(p[j]);
    for (int c = 0; c < C; c++) acc[c] += pv * vload(v + j * ld + c * W);
  }
  for (int c = 0; c < C; c++) vstore(o + c * W, acc[c]);
}

// Key and value rows are read a head's slice at a time (strided), which the hardware prefetcher
// follows poorly from memory: the slices this many rows ahead are prefetched.
constexpr int64_t kAttnAhead = 16;

// o[x][e .. e + C·W) += p[x][j] · v[j · ld + (0 .. C·W)] for j = 0 .. n in order, for NH heads
// that share the value rows: each output column's chain is pv_columns' (the same bits), but a
// row's C vectors are loaded once for all NH heads and the NH·C chains interleave.
template <int C, int NH, typename T>
static inline void pv_heads_n(const float* const* p, int64_t n, const T* v, int64_t ld, float* const* o, int64_t e) {
  vf acc[NH][C];
  for (int x = 0; x < NH; x++)
    for (int c = 0; c < C; c++) acc[x][c] = vload(o[x] + e + c * W);
  for (int64_t j = 0; j < n; j++) {
    vf vv[C];
    for (int c = 0; c < C; c++) {
      __builtin_prefetch(v + (j + kAttnAhead) * ld + c * W, 0, 3);
      vv[c] = kv_load(v + j * ld + c * W);
    }
    for (int x = 0; x < NH; x++) {
      const vf pv = vset(p[x][j]);
      for (int c = 0; c < C; c++) acc[x][c] += pv * vv[c];
    }
  }
  for (int x = 0; x < NH; x++)
    for (int c = 0; c < C; c++) vstore(o[x] + e + c * W, acc[x][c]);
}

template <int C, typename T>
static inline void pv_heads(int nh, const float* const* p, int64_t n, const T* v, int64_t ld, float* const* o, int64_t e) {
  switch (nh) {
    case 1: return pv_heads_n<C, 1, T>(p, n, v, ld, o, e);
    case 2: return pv_heads_n<C, 2, T>(p, n, v, ld, o, e);
    case 3: return pv_heads_n<C, 3, T>(p, n, v, ld, o, e);
    default: return pv_heads_n<C, 4, T>(p, n, v, ld, o, e);
  }
}

// Scores S[h · nj + j] of the first keys of a block, W (head, key) pairs at a time: the G heads
// of each kv head with W / G keys, each pair's dot product the same
// operations as dot() (dot_vec, the lane sum of hsum_many, the scalar tail), so the same bits
// as one key at a time, but a key row is read once for its G heads. Returns the keys scored.
template <int G, int ND, typename T>
static int64_t group_scores_g(const float* q, const T* k, const T* v, int64_t nj, const AttnView& av, float* S) {
  if constexpr (W % G != 0) return 0;
  constexpr int KEYS = W % G == 0 ? W / G : 1;
  const int64_t D = av.s.head_dim, kvh = av.s.kv_heads;
  const int64_t done = nj / KEYS * KEYS;
  for (int64_t j = 0; j < done; j += KEYS)
    for (int64_t g = 0; g < kvh; g++) {
      const float* qg = q + g * G * D;
      const T* kg = k + j * av.kvrow + g * D;
      const T* vg = v + j * av.kvrow + g * D;  // prefetched for the products with P (332 keys from memory: 19.4 -> 15.0 us)
      for (int y = 0; y < KEYS; y++)
        for (int64_t c = 0; c < D; c += 64 / int(sizeof(T))) {
          __builtin_prefetch(kg + (kAttnAhead + y) * av.kvrow + c, 0, 3);
          __builtin_prefetch(vg + (kAttnAhead + y) * av.kvrow + c, 0, 2);
        }
      // pair x: head x / KEYS, key x % KEYS, so a head's scores are KEYS adjacent lanes
      vf v[W];
      int64_t tail = ND * W;
#pragma GCC unroll 16
      for (int x = 0; x < W; x++) {
        if constexpr (ND > 0) v[x] = dot_vec_n<ND, T>(qg + (x / KEYS) * D, kg + (x % KEYS) * av.kvrow);
        else v[x] = dot_vec(qg + (x / KEYS) * D, kg + (x % KEYS) * av.kvrow, D, &tail);
      }
      alignas(64) float sc[W];
      vstore(sc, hsum_many(v));
      if (tail < D)
        for (int x = 0; x < W; x++)
          for (int64_t t = tail; t < D; t++) sc[x] = fmaf(qg[(x / KEYS) * D + t], kv_at(kg + (x % KEYS) * av.kvrow + t), sc[x]);
      vstore(sc, vload(sc) * av.s.scale);
      for (int h = 0; h < G; h++) __builtin_memcpy(S + (g * G + h) * nj + j, sc + h * KEYS, KEYS * sizeof(float));
    }
  return done;
}

template <int G, typename T>
static int64_t group_scores_d(const float* q, const T* k, const T* v, int64_t nj, const AttnView& av, float* S) {
  switch (av.s.head_dim) {  // the common head sizes unrolled
    case 4 * W: return group_scores_g<G, 4, T>(q, k, v, nj, av, S);
    case 8 * W: return group_scores_g<G, 8, T>(q, k, v, nj, av, S);
    default: return group_scores_g<G, 0, T>(q, k, v, nj, av, S);
  }
}

template <typename T>
static int64_t group_scores(const float* q, const T* k, const T* v, int64_t nj, const AttnView& av, float* S) {
  switch (av.group) {
    case 1: return group_scores_d<1, T>(q, k, v, nj, av, S);
    case 2: return group_scores_d<2, T>(q, k, v, nj, av, S);
    case 4: return group_scores_d<4, T>(q, k, v, nj, av, S);
    case 8: return group_scores_d<8, T>(q, k, v, nj, av, S);
    default: return 0;
  }
}

// Few query rows (decode), split over keys like flash-decoding: each task takes a block of
// cached positions and every head, so it reads whole K and V rows (long contiguous runs), and
// leaves a partial softmax (max, sum, unnormalised output) per head; the partials are merged in
// block order. The key blocks depend only on the length, never on the thread count. Measured
// (16 heads of 64 over 4 kv heads, f16 cache from memory, 332 / 700 keys, 1 and 2 threads):
// 128 keys 14.2 / 10.3 and 30.8 / 19.7 us, 256 keys 14.8 / 11.2 and 29.4 / 21.4, 64 slower.
constexpr int64_t KBLOCK = 128;

// One query row of a decode: its H·D query values, its sequence's key and value rows (row j at
// k + j · kvrow), the keys it sees [first, limit), and where its H·D outputs go.
template <typename T>
struct DecodeRow {
  const float* q;
  const T* k;
  const T* v;
  int64_t first, limit;
  float* out;
};

// Every row's key blocks are the tasks of one job (so the rows of a batch, whatever their
// lengths, share the threads evenly); each row's partials are then merged in block order.
template <typename T>
static void attention_decode_rows(const Exec& ex, const DecodeRow<T>* rows, int64_t nrows, const AttnView& av) {
  const AttnShape& s = av.s;
  const int64_t D = s.head_dim, H = s.heads;
  std::vector<int64_t> start(size_t(nrows) + 1, 0);  // row r's tasks: [start[r], start[r + 1])
  for (int64_t r = 0; r < nrows; r++) start[r + 1] = start[r] + ceil_div(rows[r].limit - rows[r].first, KBLOCK);
  const int64_t tasks = start[nrows];
  // per (task, head): max, sum, then D outputs
  const int64_t stride = D + 2;
  float* part = scratch<float>(ex, ex.tid, SLOT_MISC, tasks * H * stride);
  run(ex, tasks, [&](int64_t t, int tid) {
    const int64_t r = std::upper_bound(start.begin(), start.end(), t) - start.begin() - 1;
    const DecodeRow<T>& qr = rows[r];
    const int64_t j0 = qr.first + (t - start[r]) * KBLOCK, nj = imin(KBLOCK, qr.limit - j0);
    const T* k = qr.k;
    const T* v = qr.v;
    const float* qi = qr.q;
    float* S = scratch<float>(ex, tid, SLOT_S, H * nj);
    int64_t jg = 0;  // keys before jg are scored by group_scores
    if (W % av.group == 0) jg = group_scores(qi, k + j0 * av.kvrow, v + j0 * av.kvrow, nj, av, S);
    for (int64_t j = jg; j < nj; j++) {
      const T* kr = k + (j0 + j) * av.kvrow;
      int64_t h = 0;
      for (; h + W <= H; h += W) {  // W heads' lane sums at once
        const float* qa[W];
        const T* ka[W];
        for (int x = 0; x < W; x++) {
          qa[x] = qi + (h + x) * D;
          ka[x] = kr + ((h + x) / av.group) * D;
        }
        float sc[W];
        dots(qa, ka, D, sc);
        for (int x = 0; x < W; x++) S[(h + x) * nj + j] = sc[x] * s.scale;
      }
      for (; h < H; h++) S[h * nj + j] = dot(qi + h * D, kr + (h / av.group) * D, D) * s.scale;
    }
    float* pt = part + t * H * stride;
    for (int64_t h = 0; h < H; h++) {
      // each head's max, then its exps and their double sum, as softmax_row computes them
      float* row = S + h * nj;
      vf mx = vset(-__builtin_inff());
      int64_t j = 0;
      for (; j + W <= nj; j += W) mx = vmax(mx, vload(row + j));
      float m = hmax(mx);
      for (; j < nj; j++) m = row[j] > m ? row[j] : m;
      float* ph = pt + h * stride;
      ph[0] = m;
      ph[1] = float(exp_sum(row, nj, m));
      for (int64_t e = 0; e < D; e++) ph[2 + e] = 0.f;
    }
    // o += p_j v_j in order of j; the heads of a kv head, up to 4 at a time, share each load of a value row
    const T* v0 = v + j0 * av.kvrow;
    for (int64_t h0 = 0, nh = 0; h0 < H; h0 += nh) {
      nh = imin(4, (h0 / av.group + 1) * av.group - h0);  // not past the kv head
      const T* vh = v0 + (h0 / av.group) * D;
      const float* ph[4];
      float* o[4];
      for (int x = 0; x < nh; x++) {
        ph[x] = S + (h0 + x) * nj;
        o[x] = pt + (h0 + x) * stride + 2;
      }
      int64_t e = 0;
      for (; e + 4 * W <= D; e += 4 * W) pv_heads<4>(int(nh), ph, nj, vh + e, av.kvrow, o, e);
      for (; e + W <= D; e += W) pv_heads<1>(int(nh), ph, nj, vh + e, av.kvrow, o, e);
      for (int x = 0; x < nh; x++)
        for (int64_t t = e; t < D; t++)
          for (int64_t j = 0; j < nj; j++) o[x][t] = fmaf(ph[x][j], kv_at(vh + j * av.kvrow + t), o[x][t]);
    }
  });
  for (int64_t r = 0; r < nrows; r++) {
    const int64_t blocks = start[r + 1] - start[r];
    float* out = rows[r].out;
    if (blocks == 0) {
      for (int64_t x = 0; x < H * D; x++) out[x] = 0.f;
      continue;
    }
    for (int64_t h = 0; h < H; h++) {
      const float* p0 = part + start[r] * H * stride + h * stride;
      float m = p0[0];
      for (int64_t c = 1; c < blocks; c++) m = p0[c * H * stride] > m ? p0[c * H * stride] : m;
      double denom = 0.0;
      float* o = out + h * D;
      for (int64_t e = 0; e < D; e++) o[e] = 0.f;
      for (int64_t c = 0; c < blocks; c++) {
        const float* pc = p0 + c * H * stride;
        const float w = sexp(pc[0] - m);
        denom += double(w) * pc[1];
        for (int64_t e = 0; e < D; e++) o[e] += w * pc[2 + e];
      }
      const float inv = float(1.0 / denom);
      for (int64_t e = 0; e < D; e++) o[e] *= inv;
    }
  }
}

// Few query rows (decode) of a [B, T, H, D] batch over its keys.
template <typename T>
static void attention_decode(const Exec& ex, const float* q, const T* k, const T* v, float* out, const AttnView& av) {
  const AttnShape& s = av.s;
  std::vector<DecodeRow<T>> rows;
  for (int64_t b = 0; b < s.batch; b++)
    for (int64_t i = 0; i < s.tq; i++)
      rows.push_back({q + av.q_off(b, i, 0), k + av.kv_off(b, 0), v + av.kv_off(b, 0), av.first(i), av.limit(i), out + av.q_off(b, i, 0)});
  attention_decode_rows(ex, rows.data(), int64_t(rows.size()), av);
}

// One new position of each of s.batch sequences (s.tq = 1), each with its own keys and values
// (k[b], v[b]: rows of kv_heads · head_dim) of which it sees the first lengths[b] (its own
// included; a sliding window hides the older ones): row b gets what attention_decode gives it
// alone, bit for bit, and every row's key blocks share the threads in one job.
template <typename T>
static void attention_many(Pool* pool, const float* q, const T* const* k, const T* const* v, const int64_t* lengths,
                           float* out, const AttnShape& s) {
  const AttnView av(s);
  const int64_t HD = s.heads * s.head_dim;
  std::vector<DecodeRow<T>> rows;
  int64_t keys = 0;
  for (int64_t b = 0; b < s.batch; b++) {
    const int64_t first = s.window > 0 ? imax(0, lengths[b] - s.window) : 0;
    rows.push_back({q + b * HD, k[b], v[b], first, lengths[b], out + b * HD});
    keys += lengths[b] - first;
  }
  attention_decode_rows(Exec{pool, 0, keys * HD >= (int64_t(1) << 16)}, rows.data(), s.batch, av);
}

static void k_attention_many(Pool* pool, const float* q, const float* const* k, const float* const* v, const int64_t* lengths,
                             float* out, const AttnShape& s) {
  attention_many(pool, q, k, v, lengths, out, s);
}

static void k_attention_many_f16(Pool* pool, const float* q, const uint16_t* const* k, const uint16_t* const* v,
                                 const int64_t* lengths, float* out, const AttnShape& s) {
  attention_many(pool, q, k, v, lengths, out, s);
}

// op(B)[depth, n] packed into the GEMM's panels in the thread's `slot` (panel p at p · NR · depth)
static float* packed_panels(const Exec& ex, int tid, Slot slot, const BSrc& b, int64_t depth, int64_t n) {
  const int64_t pans = ceil_div(n, NR);
  float* out = scratch<float>(ex, tid, slot, pans * NR * depth);
  pack_b(b, 0, depth, n, 0, pans, out, scratch<float>(ex, tid, SLOT_T, imax(n, NR * depth)));
  return out;
}

// C[rows, n] (+)= op(A)[rows, depth] · B for B packed into the GEMM's panels (panel p at pan +
// p · NR · ldp, its row l at + l · NR): matmul's blocking (k in KC steps, the first block added
// to C only with acc), so the bits of matmul over the same B. Uses the thread's SLOT_A.
static void on_panels(const Exec& ex, int tid, const ASrc& a, int64_t rows, int64_t n, int64_t depth, const float* pan,
                      int64_t ldp, float* c, int64_t ldc, bool acc) {
  float* Ap = scratch<float>(ex, tid, SLOT_A, ceil_div(rows, MR) * MR * imin(KC, depth));
  for (int64_t pc = 0; pc < depth; pc += KC) {
    const int64_t kc = imin(KC, depth - pc);
    pack_a(a, 0, rows, pc, kc, Ap);
    for (int64_t p = 0; p < ceil_div(n, NR); p++)
      for (int64_t ir = 0; ir < rows; ir += MR)
        micro_kernel(kc, Ap + ir * kc, pan + p * NR * ldp + pc * NR, c + ir * ldc + p * NR, ldc, int(imin(MR, rows - ir)),
                     int(imin(NR, n - p * NR)), acc || pc > 0);
  }
}

static void k_attention(Pool* pool, const float* q, const float* k, const float* v, float* out, const AttnShape& s) {
  const AttnView av(s);
  const int64_t D = s.head_dim;
  if (s.tq <= 4) {
    attention_decode(Exec{pool, 0, s.batch * s.tq * s.heads * s.tk * D >= (int64_t(1) << 16)}, q, k, v, out, av);
    return;
  }
  const int64_t qb = ceil_div(s.tq, QBLOCK);
  Exec ex{pool, 0, s.batch * s.tq * s.heads * s.tk * D >= (int64_t(1) << 16)};
  // A task per (batch, head): its keys and values are packed into the product's panels once for
  // all its blocks of query rows, and each block's S = Q Kᵀ and O = P V run the GEMM's
  // micro-kernel on them, with the blocking matmul() would use (k in KC steps), so the same bits.
  // Packing them per block took a quarter of the time at CLIP's 197 tokens.
  const int64_t L = av.limit(s.tq - 1);  // the most keys a block sees
  run(ex, s.batch * s.heads, [&](int64_t t, int tid) {
    const int64_t b = t / s.heads, h = t % s.heads;
    const int64_t kvo = av.kv_off(b, h / av.group);
    const Exec inner{pool, tid, false};
    const BSrc kt{k + kvo, av.kvrow, true, nullptr, false}, vs{v + kvo, av.kvrow, false, nullptr, false};
    const bool panels = L > 0 && D <= KC;
    const float* Kp = panels ? packed_panels(ex, tid, SLOT_B, kt, D, L) : nullptr;
    const float* Vp = panels ? packed_panels(ex, tid, SLOT_P, vs, L, D) : nullptr;
    for (int64_t blk = 0; blk < qb; blk++) {
      const int64_t i0 = blk * QBLOCK, rows = imin(QBLOCK, s.tq - i0);
      const int64_t lmax = av.limit(i0 + rows - 1);
      float* o = out + av.q_off(b, i0, h);
      if (lmax <= 0) {
        for (int64_t r = 0; r < rows; r++)
          for (int64_t e = 0; e < D; e++) o[r * av.qstride + e] = 0.f;
        continue;
      }
      float* S = scratch<float>(ex, tid, SLOT_S, rows * lmax);
      const ASrc qs{q + av.q_off(b, i0, h), av.qstride, false}, ps{S, lmax, false};
      if (!panels || rows <= SMALL_M) {  // matmul's few-row path (the last block only), or a huge head
        matmul(inner, rows, lmax, D, qs, kt, S, lmax, false);
        masked_softmax(av, i0, rows, lmax, S);
        matmul(inner, rows, D, lmax, ps, vs, o, av.qstride, false);
        continue;
      }
      on_panels(ex, tid, qs, rows, lmax, D, Kp, D, S, lmax, false);
      masked_softmax(av, i0, rows, lmax, S);
      on_panels(ex, tid, ps, rows, D, lmax, Vp, L, o, av.qstride, false);
    }
  });
}

// Attention over a 16-bit (f16) KV cache. Decode reads the f16 rows as it goes (half the bytes of
// an f32 cache); a prompt's rows are widened to f32 once and take the f32 path. Either way the
// same operations run on the same values as k_attention over the cache widened to f32, so the
// results are that call's bit for bit.
static void k_attention_f16(Pool* pool, const float* q, const uint16_t* k, const uint16_t* v, float* out, const AttnShape& s) {
  const AttnView av(s);
  if (s.tq <= 4) {
    attention_decode(Exec{pool, 0, s.batch * s.tq * s.heads * s.tk * s.head_dim >= (int64_t(1) << 16)}, q, k, v, out, av);
    return;
  }
  const int64_t n = (s.batch - 1) * s.kv_stride + s.tk * av.kvrow;
  std::vector<float> kw(static_cast<size_t>(n)), vw(static_cast<size_t>(n));
  dequant_range(FMT_F16, reinterpret_cast<const uint8_t*>(k), 0, n, kw.data());
  dequant_range(FMT_F16, reinterpret_cast<const uint8_t*>(v), 0, n, vw.data());
  k_attention(pool, q, kw.data(), vw.data(), out, s);
}

static void k_attention_backward(Pool* pool, const float* q, const float* k, const float* v, const float* dout, float* dq,
                                 float* dk, float* dv, const AttnShape& s) {
  const AttnView av(s);
  const int64_t D = s.head_dim;
  const int64_t qb = ceil_div(s.tq, QBLOCK);
  Exec ex{pool, 0, s.batch * s.tq * s.heads * s.tk * D >= (int64_t(1) << 15)};
  const int64_t L = av.limit(s.tq - 1);  // the most keys a block sees
  // one task per (batch, kv head): it alone writes that head's dk and dv. As in the forward, the
  // panels of Kᵀ, Vᵀ and K are packed once for all its heads and blocks (S = Q Kᵀ, dP = dO Vᵀ,
  // dQ += dS K run the micro-kernel on them with matmul's blocking: the same bits)
  run(ex, s.batch * s.kv_heads, [&](int64_t t, int tid) {
    const int64_t b = t / s.kv_heads, kvh = t % s.kv_heads;
    const int64_t kvo = av.kv_off(b, kvh);
    const Exec inner{pool, tid, false};
    const BSrc kt{k + kvo, av.kvrow, true, nullptr, false}, vt{v + kvo, av.kvrow, true, nullptr, false}, kn{k + kvo, av.kvrow, false, nullptr, false};
    const bool panels = L > 0 && D <= KC;
    const float* Kt = panels ? packed_panels(ex, tid, SLOT_KT, kt, D, L) : nullptr;
    const float* Vt = panels ? packed_panels(ex, tid, SLOT_VT, vt, D, L) : nullptr;
    const float* Kn = panels ? packed_panels(ex, tid, SLOT_KN, kn, L, D) : nullptr;
    for (int64_t g = 0; g < av.group; g++) {
      const int64_t h = kvh * av.group + g;
      for (int64_t blk = 0; blk < qb; blk++) {
        const int64_t i0 = blk * QBLOCK, rows = imin(QBLOCK, s.tq - i0);
        const int64_t lmax = av.limit(i0 + rows - 1);
        if (lmax <= 0) continue;
        const int64_t qo = av.q_off(b, i0, h);
        float* P = scratch<float>(ex, tid, SLOT_S, rows * lmax);
        float* dP = scratch<float>(ex, tid, SLOT_P, rows * lmax);
        const bool fast = panels && rows > SMALL_M;  // else matmul's few-row path, as before
        const ASrc qs{q + qo, av.qstride, false}, os{dout + qo, av.qstride, false};
        if (fast) on_panels(ex, tid, qs, rows, lmax, D, Kt, D, P, lmax, false);
        else matmul(inner, rows, lmax, D, qs, kt, P, lmax, false);
        masked_softmax(av, i0, rows, lmax, P);
        if (fast) on_panels(ex, tid, os, rows, lmax, D, Vt, D, dP, lmax, false);
        else matmul(inner, rows, lmax, D, os, vt, dP, lmax, false);
        // dS = P (dP - sum_j P dP) scale, in place of dP
        for (int64_t r = 0; r < rows; r++) {
          const float* pr = P + r * lmax;
          float* dr = dP + r * lmax;
          vdw accv = vdw{};
          int64_t j = 0;
          for (; j + W <= lmax; j += W) accv += vwiden(vload(pr + j) * vload(dr + j));
          double pdp = hsum(accv);
          for (; j < lmax; j++) pdp += double(pr[j] * dr[j]);
          const vf pv = vset(float(pdp)), sc = vset(s.scale);
          j = 0;
          for (; j + W <= lmax; j += W) vstore(dr + j, vload(pr + j) * (vload(dr + j) - pv) * sc);
          for (; j < lmax; j++) dr[j] = pr[j] * (dr[j] - float(pdp)) * s.scale;
        }
        if (dq && fast) on_panels(ex, tid, ASrc{dP, lmax, false}, rows, D, lmax, Kn, L, dq + qo, av.qstride, true);
        else if (dq) matmul(inner, rows, D, lmax, ASrc{dP, lmax, false}, kn, dq + qo, av.qstride, true);
        if (dk)
          matmul(inner, lmax, D, rows, ASrc{dP, lmax, true}, BSrc{q + qo, av.qstride, false, nullptr, false}, dk + kvo,
                 av.kvrow, true);
        if (dv)
          matmul(inner, lmax, D, rows, ASrc{P, lmax, true}, BSrc{dout + qo, av.qstride, false, nullptr, false}, dv + kvo,
                 av.kvrow, true);
      }
    }
  });
}
