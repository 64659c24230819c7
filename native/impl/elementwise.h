// Elementwise kernels, activations and their backward passes. Outputs may alias inputs.

static void k_add(Pool* pool, const float* x, const float* y, float* out, int64_t n) {
  chunked(top(pool, n), n, kChunk, [&](int64_t b, int64_t e, int) {
    int64_t i = b;
    for (; i + W <= e; i += W) vstore(out + i, vload(x + i) + vload(y + i));
    for (; i < e; i++) out[i] = x[i] + y[i];
  });
}

static void k_add_broadcast(Pool* pool, const float* x, const float* y, int64_t ny, float* out, int64_t n) {
  const int64_t rows = n / ny;
  const int64_t per = imax(1, kChunk / ny);
  run(top(pool, n), ceil_div(rows, per), [&](int64_t t, int) {
    for (int64_t r = t * per; r < imin(rows, (t + 1) * per); r++) {
      const float* xr = x + r * ny;
      float* o = out + r * ny;
      int64_t j = 0;
      for (; j + W <= ny; j += W) vstore(o + j, vload(xr + j) + vload(y + j));
      for (; j < ny; j++) o[j] = xr[j] + y[j];
    }
  });
}

static void k_mul(Pool* pool, const float* x, const float* y, float* out, int64_t n) {
  chunked(top(pool, n), n, kChunk, [&](int64_t b, int64_t e, int) {
    int64_t i = b;
    for (; i + W <= e; i += W) vstore(out + i, vload(x + i) * vload(y + i));
    for (; i < e; i++) out[i] = x[i] * y[i];
  });
}

// x * s in double, rounded once: the reference multiplies by the double s, not by float(s)
static void k_scale(Pool* pool, const float* x, double s, float* out, int64_t n) {
  chunked(top(pool, n), n, kChunk, [&](int64_t b, int64_t e, int) {
    int64_t i = b;
    for (; i + W <= e; i += W) vstore(out + i, narrow(vwiden(vload(x + i)) * s));
    for (; i < e; i++) out[i] = float(double(x[i]) * s);
  });
}

// x + y * s, y * s rounded to float first (as k_scale gives it, then k_add): a LoRA output in one pass
static void k_add_scaled(Pool* pool, const float* x, const float* y, double s, float* out, int64_t n) {
  chunked(top(pool, n), n, kChunk, [&](int64_t b, int64_t e, int) {
    int64_t i = b;
    for (; i + W <= e; i += W) vstore(out + i, vload(x + i) + narrow(vwiden(vload(y + i)) * s));
    for (; i < e; i++) out[i] = x[i] + float(double(y[i]) * s);
  });
}

static void k_accumulate(Pool* pool, float* y, const float* x, int64_t n) { k_add(pool, y, x, y, n); }

// Dropout: out[i] = x[i] times the mask, which is 0 when the i-th number of the mulberry32 stream
// of src/util/random.ts after `state` is below p, else 1 / (1 - p) rounded to float. That number
// depends on state + (i + 1) · step alone, so every element is drawn on its own, by any thread,
// and the mask is the stream's bit for bit; the backward pass draws it again for the gradient
// instead of keeping it.
static void k_dropout(Pool* pool, uint32_t state, double p, const float* x, float* out, int64_t n) {
  constexpr uint32_t kStep = 0x6d2b79f5u;  // MULBERRY_STEP
  const float keep = float(1.0 / (1.0 - p));
  // u / 2^32 < p exactly when the integer u < ceil(p · 2^32) (p · 2^32 is exact in double): a
  // 32-bit compare, which the loop below runs in vectors (one core, 845 K elements: 1.73 ns an
  // element as a scalar loop with the double compare, 0.11 in vectors)
  const double limit = std::ceil(p * 4294967296.0);
  const bool all = limit >= 4294967296.0;  // every number is below p
  const uint32_t below = all ? 0 : uint32_t(limit);
  chunked(top(pool, n), n, kChunk, [&](int64_t b, int64_t e, int) {
    // locals, not the captured references: a float stored through `o` could be `keep`, and GCC
    // then keeps the loop scalar
    const uint32_t s0 = state + uint32_t(b + 1) * kStep, lim = below;
    const float k = all ? 0.f : keep;
    const float* xi = x + b;
    float* o = out + b;
    for (int64_t i = 0; i < e - b; i++) {
      uint32_t t = s0 + uint32_t(i) * kStep;
      t = (t ^ (t >> 15)) * (t | 1u);
      t ^= t + (t ^ (t >> 7)) * (t | 61u);
      o[i] = xi[i] * ((t ^ (t >> 14)) < lim ? 0.f : k);
    }
  });
}

// out[j] = sum over rows of x[r, j], summed in double per column (like the reference).
static void k_sum_rows(Pool* pool, const float* x, int64_t rows, int64_t len, float* out) {
  constexpr int64_t CH = 256;
  run(top(pool, rows * len), ceil_div(len, CH), [&](int64_t t, int) {
    const int64_t j0 = t * CH, nc = imin(CH, len - j0);
    double acc[CH];
    for (int64_t c = 0; c < nc; c++) acc[c] = 0.0;
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = x + r * len + j0;
      for (int64_t c = 0; c < nc; c++) acc[c] += xr[c];
    }
    for (int64_t c = 0; c < nc; c++) out[j0 + c] = float(acc[c]);
  });
}

// ---- activations ----
constexpr float kSqrt1_2 = 0.70710678118654752440f;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr float kTanhC = 0.79788456080286535588f;  // sqrt(2 / pi)

static inline vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }

// The normal CDF Φ(x) and exp(-x²/2) for gelu. Φ(-|x|) = erfc(z)/2 with z = |x|/√2 is
// evaluated as exp(-z²) R(z)/2 with R(z) = erfc(z) exp(z²) a degree-10 polynomial in
// t = 1/(1 + z/2) (least-squares fit on z in [0, 9.6], 5e-8 relative), so the tail keeps its
// relative accuracy where 1 + erf(x) would cancel; x² is split exactly so exp(-x²/2) stays
// accurate for large |x|. Relative error of Φ: a few 1e-7.
static inline void normal_cdf(vf x, vf& cdf, vf& gauss) {
  const vf ax = x < 0.f ? -x : x;
  const vf p = x * x;
  vf e = vexp(-0.5f * p) * (1.0f - 0.5f * product_error(x, x, p));
  e = ax > 14.0f ? vf{} : e;  // exp(-98) is below float range; also keeps inf and NaN apart
  const vf t = 1.0f / (1.0f + (0.5f * kSqrt1_2) * ax);
  vf r = vset(3.030606173e-02f);
  r = r * t + -2.242135406e-01f;
  r = r * t + 6.756538153e-01f;
  r = r * t + -1.015539408e+00f;
  r = r * t + 7.275415063e-01f;
  r = r * t + -2.774042487e-01f;
  r = r * t + 2.953322232e-01f;
  r = r * t + 2.207846940e-01f;
  r = r * t + 2.857249379e-01f;
  r = r * t + 2.818037868e-01f;
  r = r * t + 1.018706098e-05f;
  const vf q = 0.5f * e * r;  // Φ(-|x|)
  cdf = x >= 0.f ? 1.0f - q : q;
  cdf = x != x ? x : cdf;
  gauss = e;
}

template <int ACT>
static inline vf act_v(vf x) {
  if (ACT == ACT_GELU) {
    vf cdf, g;
    normal_cdf(x, cdf, g);
    return x * cdf;
  }
  if (ACT == ACT_QUICK_GELU) return x * vsigmoid(1.702f * x);
  if (ACT == ACT_SILU) return x * vsigmoid(x);
  if (ACT == ACT_GELU_TANH) return x * vsigmoid(2.0f * kTanhC * (x + 0.044715f * x * x * x));
  return x > 0.f ? x : vf{};  // relu
}

template <int ACT>
static inline vf act_grad_v(vf x) {
  if (ACT == ACT_GELU) {
    vf cdf, g;
    normal_cdf(x, cdf, g);
    return cdf + x * g * float(kInvSqrt2Pi);
  }
  if (ACT == ACT_QUICK_GELU) {
    vf s = vsigmoid(1.702f * x);
    return s + 1.702f * x * s * (1.0f - s);
  }
  if (ACT == ACT_SILU) {
    vf s = vsigmoid(x);
    return s * (1.0f + x * (1.0f - s));
  }
  if (ACT == ACT_GELU_TANH) {
    // 0.5 (1 + tanh u) = sigmoid(2u) and 1 - tanh² u = 4 s (1 - s)
    vf s = vsigmoid(2.0f * kTanhC * (x + 0.044715f * x * x * x));
    return s + 2.0f * x * s * (1.0f - s) * kTanhC * (1.0f + 3.0f * 0.044715f * x * x);
  }
  return x > 0.f ? vset(1.f) : vf{};
}

template <int ACT>
static void act_range(const float* x, float* out, int64_t b, int64_t e) {
  int64_t i = b;
  for (; i + W <= e; i += W) vstore(out + i, act_v<ACT>(vload(x + i)));
  if (i < e) {
    vf t = vf{};
    for (int64_t j = i; j < e; j++) t[j - i] = x[j];
    t = act_v<ACT>(t);
    for (int64_t j = i; j < e; j++) out[j] = t[j - i];
  }
}

template <int ACT>
static void act_grad_range(const float* x, const float* dy, float* dx, int64_t b, int64_t e) {
  int64_t i = b;
  for (; i + W <= e; i += W) vstore(dx + i, vload(dx + i) + vload(dy + i) * act_grad_v<ACT>(vload(x + i)));
  if (i < e) {
    vf t = vf{};
    for (int64_t j = i; j < e; j++) t[j - i] = x[j];
    t = act_grad_v<ACT>(t);
    for (int64_t j = i; j < e; j++) dx[j] += dy[j] * t[j - i];
  }
}

static void k_activation(Pool* pool, int act, const float* x, float* out, int64_t n) {
  chunked(top(pool, n), n, kChunk, [&](int64_t b, int64_t e, int) {
    switch (act) {
      case ACT_GELU: act_range<ACT_GELU>(x, out, b, e); break;
      case ACT_QUICK_GELU: act_range<ACT_QUICK_GELU>(x, out, b, e); break;
      case ACT_SILU: act_range<ACT_SILU>(x, out, b, e); break;
      case ACT_GELU_TANH: act_range<ACT_GELU_TANH>(x, out, b, e); break;
      default: act_range<ACT_RELU>(x, out, b, e); break;
    }
  });
}

static void k_activation_backward(Pool* pool, int act, const float* x, const float* dy, float* dx, int64_t n) {
  chunked(top(pool, n), n, kChunk, [&](int64_t b, int64_t e, int) {
    switch (act) {
      case ACT_GELU: act_grad_range<ACT_GELU>(x, dy, dx, b, e); break;
      case ACT_QUICK_GELU: act_grad_range<ACT_QUICK_GELU>(x, dy, dx, b, e); break;
      case ACT_SILU: act_grad_range<ACT_SILU>(x, dy, dx, b, e); break;
      case ACT_GELU_TANH: act_grad_range<ACT_GELU_TANH>(x, dy, dx, b, e); break;
      default: act_grad_range<ACT_RELU>(x, dy, dx, b, e); break;
    }
  });
}
