// Layer norm and RMS norm with their backward passes. Row statistics are summed in double like
// the reference; weight gradients are column sums over rows, cut by columns so each is summed
// in a fixed order.

static inline double row_sum(const float* x, int64_t dim) {
  vdw acc = vdw{};
  int64_t j = 0;
  for (; j + W <= dim; j += W) acc += vwiden(vload(x + j));
  double s = hsum(acc);
  for (; j < dim; j++) s += x[j];
  return s;
}

static inline double row_sq_dev(const float* x, int64_t dim, double mean) {
  vdw acc = vdw{};
  int64_t j = 0;
  for (; j + W <= dim; j += W) {
    vdw d = vwiden(vload(x + j)) - mean;
    acc += d * d;
  }
  double s = hsum(acc);
  for (; j < dim; j++) s += (x[j] - mean) * (x[j] - mean);
  return s;
}

static inline void ln_stats(const float* x, int64_t dim, double eps, double& mean, double& rstd) {
  mean = row_sum(x, dim) / double(dim);
  rstd = 1.0 / __builtin_sqrt(row_sq_dev(x, dim, mean) / double(dim) + eps);
}

static inline int64_t rows_per_task(int64_t dim) { return imax(1, kChunk / imax(1, dim)); }

static void k_layer_norm(Pool* pool, const float* x, const float* w, const float* b, int64_t rows, int64_t dim, double eps,
                         float* out) {
  const int64_t per = rows_per_task(dim);
  run(top(pool, rows * dim), ceil_div(rows, per), [&](int64_t t, int) {
    for (int64_t r = t * per; r < imin(rows, (t + 1) * per); r++) {
      const float* xr = x + r * dim;
      float* o = out + r * dim;
      double mean, rstd;
      ln_stats(xr, dim, eps, mean, rstd);
      int64_t j = 0;
      for (; j + W <= dim; j += W) vstore(o + j, narrow((vwiden(vload(xr + j)) - mean) * rstd) * vload(w + j) + vload(b + j));
      for (; j < dim; j++) o[j] = float((xr[j] - mean) * rstd) * w[j] + b[j];
    }
  });
}

static void k_layer_norm_backward(Pool* pool, const float* x, const float* w, const float* dy, int64_t rows, int64_t dim,
                                  double eps, float* dx, float* dw, float* db) {
  const Exec ex = top(pool, rows * dim);
  double* stats = scratch<double>(ex, 0, SLOT_MISC, 2 * rows);
  const int64_t per = rows_per_task(dim);
  run(ex, ceil_div(rows, per), [&](int64_t t, int) {
    for (int64_t r = t * per; r < imin(rows, (t + 1) * per); r++) {
      const float *xr = x + r * dim, *gr = dy + r * dim;
      double mean, rstd;
      ln_stats(xr, dim, eps, mean, rstd);
      stats[2 * r] = mean;
      stats[2 * r + 1] = rstd;
      if (!dx) continue;
      vdw sg = vdw{}, sgx = vdw{};
      int64_t j = 0;
      for (; j + W <= dim; j += W) {
        vdw xh = (vwiden(vload(xr + j)) - mean) * rstd;
        vdw g = vwiden(vload(gr + j)) * vwiden(vload(w + j));
        sg += g;
        sgx += g * xh;
      }
      double sumG = hsum(sg), sumGX = hsum(sgx);
      for (; j < dim; j++) {
        double xh = (xr[j] - mean) * rstd, g = double(gr[j]) * w[j];
        sumG += g;
        sumGX += g * xh;
      }
      const double mg = sumG / double(dim), mgx = sumGX / double(dim);
      float* dr = dx + r * dim;
      j = 0;
      for (; j + W <= dim; j += W) {
        vdw xh = (vwiden(vload(xr + j)) - mean) * rstd;
        vdw g = vwiden(vload(gr + j)) * vwiden(vload(w + j));
        vstore(dr + j, vload(dr + j) + narrow(rstd * (g - mg - xh * mgx)));
      }
      for (; j < dim; j++) {
        double xh = (xr[j] - mean) * rstd, g = double(gr[j]) * w[j];
        dr[j] += float(rstd * (g - mg - xh * mgx));
      }
    }
  });
  if (!dw && !db) return;
  constexpr int64_t CH = 128;
  run(ex, ceil_div(dim, CH), [&](int64_t t, int) {
    const int64_t j0 = t * CH, nc = imin(CH, dim - j0);
    double aw[CH], ab[CH];
    for (int64_t c = 0; c < nc; c++) aw[c] = ab[c] = 0.0;
    for (int64_t r = 0; r < rows; r++) {
      const float *xr = x + r * dim + j0, *gr = dy + r * dim + j0;
      const double mean = stats[2 * r], rstd = stats[2 * r + 1];
      for (int64_t c = 0; c < nc; c++) {
        aw[c] += double(gr[c]) * ((xr[c] - mean) * rstd);
        ab[c] += gr[c];
      }
    }
    for (int64_t c = 0; c < nc; c++) {
      if (dw) dw[j0 + c] += float(aw[c]);
      if (db) db[j0 + c] += float(ab[c]);
    }
  });
}

static inline double rms_inv(const float* x, int64_t dim, double eps) {
  vdw acc = vdw{};
  int64_t j = 0;
  for (; j + W <= dim; j += W) {
    vdw v = vwiden(vload(x + j));
    acc += v * v;
  }
  double s = hsum(acc);
  for (; j < dim; j++) s += double(x[j]) * x[j];
  return 1.0 / __builtin_sqrt(s / double(dim) + eps);
}

static void k_rms_norm(Pool* pool, const float* x, const float* w, int64_t rows, int64_t dim, double eps, float* out) {
  const int64_t per = rows_per_task(dim);
  run(top(pool, rows * dim), ceil_div(rows, per), [&](int64_t t, int) {
    for (int64_t r = t * per; r < imin(rows, (t + 1) * per); r++) {
      const float* xr = x + r * dim;
      float* o = out + r * dim;
      const double rr = rms_inv(xr, dim, eps);
      int64_t j = 0;
      for (; j + W <= dim; j += W) vstore(o + j, vload(w + j) * narrow(vwiden(vload(xr + j)) * rr));
      for (; j < dim; j++) o[j] = w[j] * float(xr[j] * rr);
    }
  });
}

static void k_rms_norm_backward(Pool* pool, const float* x, const float* w, const float* dy, int64_t rows, int64_t dim,
                                double eps, float* dx, float* dw) {
  const Exec ex = top(pool, rows * dim);
  double* rinv = scratch<double>(ex, 0, SLOT_MISC, rows);
  const int64_t per = rows_per_task(dim);
  run(ex, ceil_div(rows, per), [&](int64_t t, int) {
    for (int64_t r = t * per; r < imin(rows, (t + 1) * per); r++) {
      const float *xr = x + r * dim, *gr = dy + r * dim;
      const double rr = rms_inv(xr, dim, eps);
      rinv[r] = rr;
      if (!dx) continue;
      vdw acc = vdw{};
      int64_t j = 0;
      for (; j + W <= dim; j += W) acc += vwiden(vload(w + j)) * vwiden(vload(gr + j)) * vwiden(vload(xr + j));
      double dot = hsum(acc);
      for (; j < dim; j++) dot += double(w[j]) * gr[j] * xr[j];
      const double c = rr * rr * rr * dot / double(dim);
      float* dr = dx + r * dim;
      j = 0;
      for (; j + W <= dim; j += W) {
        vdw v = rr * vwiden(vload(w + j)) * vwiden(vload(gr + j)) - c * vwiden(vload(xr + j));
        vstore(dr + j, vload(dr + j) + narrow(v));
      }
      for (; j < dim; j++) dr[j] += float(rr * w[j] * gr[j] - c * xr[j]);
    }
  });
  if (!dw) return;
  constexpr int64_t CH = 128;
  run(ex, ceil_div(dim, CH), [&](int64_t t, int) {
    const int64_t j0 = t * CH, nc = imin(CH, dim - j0);
    double aw[CH];
    for (int64_t c = 0; c < nc; c++) aw[c] = 0.0;
    for (int64_t r = 0; r < rows; r++) {
      const float *xr = x + r * dim + j0, *gr = dy + r * dim + j0;
      const double rr = rinv[r];
      for (int64_t c = 0; c < nc; c++) aw[c] += double(gr[c]) * xr[c] * rr;
    }
    for (int64_t c = 0; c < nc; c++) dw[j0 + c] += float(aw[c]);
  });
}
