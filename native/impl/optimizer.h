// The optimizer's kernels: AdamW's update, the sum of squares of the gradient-norm clipping,
// zeroing. Chunks are cut by size only, so results never depend on the thread count.

// Every product and sum of the update is rounded on its own, in double, as the reference
// (JavaScript numbers) does it: no fused multiply-adds, so the two agree bit for bit.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

// torch.optim.AdamW for one tensor: decoupled weight decay, Adam moments, bias-corrected step.
// One pass over p, g, m, v; each stored value rounds to float as the reference's stores do.
static void k_adamw(Pool* pool, float* p, const float* g, float* m, float* v, int64_t n, double decay, double beta1,
                    double beta2, double step_size, double bias2_sqrt, double eps) {
  const double c1 = 1.0 - beta1, c2 = 1.0 - beta2;
  chunked(top(pool, n), n, kChunk, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) {
      const double gi = g[i];
      const float w = float(double(p[i]) * decay);
      const float mi = float(double(m[i]) + (gi - double(m[i])) * c1);
      const float vi = float(double(v[i]) * beta2 + c2 * gi * gi);
      m[i] = mi;
      v[i] = vi;
      p[i] = float(double(w) - (step_size * double(mi)) / (std::sqrt(double(vi)) / bias2_sqrt + eps));
    }
  });
}

#pragma GCC pop_options

// Σ x² in double: squares of floats are exact in double, so only the sums round. Eight lanes
// per chunk (whatever the vector width), then the lanes and the chunks in order.
static double k_sum_squares(Pool* pool, const float* x, int64_t n) {
  const int64_t tasks = ceil_div(n, kChunk);
  double* partial = scratch<double>(Exec{pool, 0, false}, 0, SLOT_PARTIAL, tasks);
  chunked(top(pool, n), n, kChunk, [&](int64_t b, int64_t e, int) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = b;
    for (; i + 8 <= e; i += 8)
      for (int l = 0; l < 8; l++) acc[l] += double(x[i + l]) * double(x[i + l]);
    for (int l = 0; i < e; i++, l++) acc[l] += double(x[i]) * double(x[i]);
    for (int w = 4; w > 0; w /= 2)
      for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    partial[b / kChunk] = acc[0];
  });
  double s = 0;
  for (int64_t t = 0; t < tasks; t++) s += partial[t];
  return s;
}

static void k_zero(Pool* pool, float* x, int64_t n) {
  chunked(top(pool, n), n, kChunk, [&](int64_t b, int64_t e, int) { std::memset(x + b, 0, size_t(e - b) * sizeof(float)); });
}
