// Rotary embedding, embedding gather / scatter-add, cross-entropy and a memory read probe.

// Each row's cos and sin of its angles (float, then the same half of sin): the last table made,
// kept while positions and frequencies stay the same, so a forward's rope calls (queries and keys
// of every layer) compute the angles once. Checked value by value, so it never goes stale.
struct RopeTable {
  std::vector<int32_t> pos;
  std::vector<double> inv;
  std::vector<float> cs;
};

static const float* rope_table(Pool* pool, const int32_t* pos, int64_t rows, const double* inv_freq, int64_t half) {
  static thread_local RopeTable t;
  if (t.pos.size() == size_t(rows) && t.inv.size() == size_t(half) && std::equal(pos, pos + rows, t.pos.begin()) &&
      std::equal(inv_freq, inv_freq + half, t.inv.begin()))
    return t.cs.data();
  t.pos.assign(pos, pos + rows);
  t.inv.assign(inv_freq, inv_freq + half);
  t.cs.resize(size_t(rows * 2 * half));
  float* cs = t.cs.data();
  // a cos and a sin in double cost about what 64 element-wise operations do: threads pay off sooner
  run(top(pool, rows * half * 64), rows, [&](int64_t r, int) {
    for (int64_t i = 0; i < half; i++) {
      // angles in double, as the reference computes them
      const double angle = double(pos[r]) * inv_freq[i];
      cs[r * 2 * half + i] = float(__builtin_cos(angle));
      cs[r * 2 * half + half + i] = float(__builtin_sin(angle));
    }
  });
  return cs;
}

static void k_rope(Pool* pool, const float* x, const int32_t* pos, int64_t rows, int64_t heads, int64_t head_dim,
                   const double* inv_freq, bool inverse, float* out) {
  const int64_t half = head_dim / 2, width = heads * head_dim;
  const int64_t per = imax(1, kChunk / imax(1, width));
  const float* table = rope_table(pool, pos, rows, inv_freq, half);
  const Exec ex = top(pool, rows * width);
  run(ex, ceil_div(rows, per), [&](int64_t t, int tid) {
    float* sn = scratch<float>(ex, tid, SLOT_MISC, half);
    for (int64_t r = t * per; r < imin(rows, (t + 1) * per); r++) {
      const float* cs = table + r * 2 * half;
      for (int64_t i = 0; i < half; i++) sn[i] = inverse ? -cs[half + i] : cs[half + i];
      for (int64_t h = 0; h < heads; h++) {
        const float* xo = x + r * width + h * head_dim;
        float* o = out + r * width + h * head_dim;
        int64_t i = 0;
        for (; i + W <= half; i += W) {
          vf x1 = vload(xo + i), x2 = vload(xo + half + i), c = vload(cs + i), s = vload(sn + i);
          vstore(o + i, x1 * c - x2 * s);
          vstore(o + half + i, x2 * c + x1 * s);
        }
        for (; i < half; i++) {
          const float x1 = xo[i], x2 = xo[half + i];
          o[i] = x1 * cs[i] - x2 * sn[i];
          o[half + i] = x2 * cs[i] + x1 * sn[i];
        }
      }
    }
  });
}

static void k_embedding(Pool* pool, const float* table, const int32_t* ids, int64_t count, int64_t dim, float* out) {
  const int64_t per = imax(1, kChunk / imax(1, dim));
  run(top(pool, count * dim), ceil_div(count, per), [&](int64_t t, int) {
    for (int64_t i = t * per; i < imin(count, (t + 1) * per); i++)
      __builtin_memcpy(out + i * dim, table + int64_t(ids[i]) * dim, size_t(dim) * sizeof(float));
  });
}

// dtable[ids[i]] += dy[i]; cut by columns so repeated ids add up in order of i.
static void k_embedding_backward(Pool* pool, const int32_t* ids, int64_t count, const float* dy, int64_t dim, float* dtable) {
  constexpr int64_t CH = 256;
  run(top(pool, count * dim), ceil_div(dim, CH), [&](int64_t t, int) {
    const int64_t j0 = t * CH, nc = imin(CH, dim - j0);
    for (int64_t i = 0; i < count; i++) {
      float* o = dtable + int64_t(ids[i]) * dim + j0;
      const float* g = dy + i * dim + j0;
      int64_t c = 0;
      for (; c + W <= nc; c += W) vstore(o + c, vload(o + c) + vload(g + c));
      for (; c < nc; c++) o[c] += g[c];
    }
  });
}

static double k_cross_entropy(Pool* pool, const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                              int32_t ignore, float* dlogits) {
  int64_t count = 0;
  for (int64_t r = 0; r < rows; r++) count += targets[r] != ignore;
  const Exec ex = top(pool, rows * vocab);
  if (count == 0) {
    if (dlogits)
      chunked(ex, rows * vocab, kChunk, [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; i++) dlogits[i] = 0.f;
      });
    return __builtin_nan("");
  }
  double* loss = scratch<double>(ex, 0, SLOT_MISC, rows);
  const float inv_count = float(1.0 / double(count));
  run(ex, rows, [&](int64_t r, int) {
    const float* l = logits + r * vocab;
    float* d = dlogits ? dlogits + r * vocab : nullptr;
    const int32_t tgt = targets[r];
    if (tgt == ignore) {
      loss[r] = 0.0;
      if (d)
        for (int64_t j = 0; j < vocab; j++) d[j] = 0.f;
      return;
    }
    vf mx = vset(-__builtin_inff());
    int64_t j = 0;
    for (; j + W <= vocab; j += W) mx = vmax(mx, vload(l + j));
    float m = hmax(mx);
    for (; j < vocab; j++) m = l[j] > m ? l[j] : m;
    const vf mv = vset(m);
    vdw sv = vdw{};
    j = 0;
    for (; j + W <= vocab; j += W) sv += vwiden(vexp(vload(l + j) - mv));
    double sum = hsum(sv);
    for (; j < vocab; j++) sum += sexp(l[j] - m);
    const double lse = __builtin_log(sum) + m;
    loss[r] = lse - l[tgt];
    if (!d) return;
    // exp(l - lse) = exp((l - m) - log(sum)): shifting by m first keeps the argument exact
    const float ls = float(__builtin_log(sum));
    const vf lsv = vset(ls), ic = vset(inv_count);
    j = 0;
    for (; j + W <= vocab; j += W) vstore(d + j, vexp(vload(l + j) - mv - lsv) * ic);
    for (; j < vocab; j++) d[j] = sexp(l[j] - m - ls) * inv_count;
    d[tgt] -= inv_count;
  });
  double total = 0.0;
  for (int64_t r = 0; r < rows; r++) total += loss[r];
  return total / double(count);
}

static double k_read_sum(Pool* pool, const float* x, int64_t n, int reps) {
  const int64_t parts = pool_size(pool);
  double* sums = scratch<double>(Exec{pool, 0, true}, 0, SLOT_MISC, parts);
  run(Exec{pool, 0, true}, parts, [&](int64_t t, int) {
    const int64_t b = (n * t / parts) & ~int64_t(W - 1), e = t + 1 == parts ? n : (n * (t + 1) / parts) & ~int64_t(W - 1);
    vf a0 = vf{}, a1 = vf{}, a2 = vf{}, a3 = vf{};
    for (int rep = 0; rep < reps; rep++) {
      int64_t i = b;
      for (; i + 4 * W <= e; i += 4 * W) {
        a0 += vload(x + i);
        a1 += vload(x + i + W);
        a2 += vload(x + i + 2 * W);
        a3 += vload(x + i + 3 * W);
      }
      for (; i < e; i++) a0[0] += x[i];
    }
    sums[t] = hsum(a0 + a1 + a2 + a3);
  });
  double s = 0.0;
  for (int64_t t = 0; t < parts; t++) s += sums[t];
  return s;
}

// The index of the first largest element of x[0, n) when every element is finite, else -1 (and
// -1 for n = 0): a generation step's greedy token and its check of the logits in one call, one
// thread (a row of the vocabulary is in cache after the lm_head; 32001 logits took two JS loops
// about 65 us, this a few).
static int64_t k_argmax_finite(Pool*, const float* x, int64_t n) {
  vf mx = vset(-__builtin_inff()), bad = vset(0.f);
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    const vf v = vload(x + j);
    mx = vmax(mx, v);
    bad += v - v;  // 0 for a finite value, NaN for an infinity or a NaN (and NaN stays)
  }
  float m = hmax(mx), b = hsum(bad);
  for (; j < n; j++) {
    m = x[j] > m ? x[j] : m;
    b += x[j] - x[j];
  }
  if (n == 0 || b != 0.f) return -1;
  for (int64_t i = 0; i < n; i++)
    if (x[i] == m) return i;
  return -1;
}
