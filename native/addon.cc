// N-API bindings of the native backend: argument checks, then a call into the kernel table.
// Inputs are the caller's typed arrays, used in place (no copies); outputs are preallocated by
// the caller. Every length is checked before a kernel touches memory, so a bad call throws a
// JavaScript error instead of corrupting memory.
#include <node_api.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>

#include "kernels.h"

using namespace llava;

namespace {

struct State {
  Pool* pool = nullptr;
  const KernelTable* kernels = nullptr;
  bool bf16_dot = false;  // opt-in: bf16 weights times bf16-rounded activations
};

constexpr size_t kMaxArgs = 20;

// One call's arguments. Getters return false after throwing a JavaScript error.
struct Call {
  napi_env env;
  State* state = nullptr;
  napi_value argv[kMaxArgs];
  size_t argc = kMaxArgs;
  const char* op;

  Call(napi_env e, napi_callback_info info, const char* name) : env(e), op(name) {
    void* data = nullptr;
    napi_get_cb_info(env, info, &argc, argv, nullptr, &data);
    state = static_cast<State*>(data);
    for (size_t i = argc; i < kMaxArgs; i++) napi_get_undefined(env, &argv[i]);
  }

  bool fail(const char* what, bool range = true) {
    char msg[320];
    std::snprintf(msg, sizeof msg, "native %s: %s", op, what);
    if (range) napi_throw_range_error(env, nullptr, msg);
    else napi_throw_type_error(env, nullptr, msg);
    return false;
  }

  bool is_null(size_t i) {
    napi_valuetype t;
    napi_typeof(env, argv[i], &t);
    return t == napi_null || t == napi_undefined;
  }

  template <class T>
  bool typed(size_t i, napi_typedarray_type want, const char* name, T*& ptr, int64_t& len, bool nullable = false) {
    if (nullable && is_null(i)) {
      ptr = nullptr;
      len = 0;
      return true;
    }
    napi_typedarray_type type;
    size_t length = 0;
    void* data = nullptr;
    // fails (without throwing) on anything that is not a typed array
    if (napi_get_typedarray_info(env, argv[i], &type, &length, &data, nullptr, nullptr) != napi_ok || type != want) {
      char msg[128];
      std::snprintf(msg, sizeof msg, "%s must be a %s", name,
                    want == napi_float32_array   ? "Float32Array"
                    : want == napi_int32_array   ? "Int32Array"
                    : want == napi_float64_array ? "Float64Array"
                                                 : "Uint8Array");
      return fail(msg, false);
    }
    ptr = static_cast<T*>(data);
    len = int64_t(length);
    return true;
  }
  bool f32(size_t i, const char* name, float*& p, int64_t& n, bool nullable = false) {
    return typed(i, napi_float32_array, name, p, n, nullable);
  }
  bool i32(size_t i, const char* name, int32_t*& p, int64_t& n) { return typed(i, napi_int32_array, name, p, n); }

  bool num(size_t i, const char* name, double& v) {
    if (napi_get_value_double(env, argv[i], &v) != napi_ok) {
      char msg[96];
      std::snprintf(msg, sizeof msg, "%s must be a number", name);
      return fail(msg, false);
    }
    return true;
  }
  // a whole number in [lo, 2^52]
  bool count(size_t i, const char* name, int64_t& v, int64_t lo = 0) {
    double d;
    if (!num(i, name, d)) return false;
    if (!(d >= double(lo) && d <= 4503599627370496.0 && std::floor(d) == d)) {
      char msg[128];
      std::snprintf(msg, sizeof msg, "%s must be a whole number >= %lld, got %g", name, (long long)lo, d);
      return fail(msg);
    }
    v = int64_t(d);
    return true;
  }
  // true only for the boolean true (anything else, e.g. undefined, is false)
  bool flag(size_t i, bool& v) {
    if (napi_get_value_bool(env, argv[i], &v) != napi_ok) v = false;
    return true;
  }
  bool need(bool ok, const char* fmt, long long a = 0, long long b = 0, long long c = 0) {
    if (ok) return true;
    char msg[256];
    std::snprintf(msg, sizeof msg, fmt, a, b, c);
    return fail(msg);
  }
  // a * b without overflow past 2^62
  static bool mul_ok(int64_t a, int64_t b) { return a == 0 || b <= (int64_t(1) << 62) / a; }

  napi_value undefined() {
    napi_value u;
    napi_get_undefined(env, &u);
    return u;
  }
  napi_value number(double d) {
    napi_value v;
    napi_create_double(env, d, &v);
    return v;
  }
};

#define CHECK(expr) \
  if (!(expr)) return nullptr

napi_value Gemm(napi_env env, napi_callback_info info) {
  Call c(env, info, "gemm");
  float *a, *b, *out;
  int64_t na, nb, nc, m, n, k;
  bool ta, tb, acc;
  CHECK(c.f32(0, "a", a, na) && c.f32(1, "b", b, nb) && c.f32(2, "c", out, nc));
  CHECK(c.count(3, "m", m) && c.count(4, "n", n) && c.count(5, "k", k));
  c.flag(6, ta), c.flag(7, tb), c.flag(8, acc);
  CHECK(c.need(Call::mul_ok(m, k) && Call::mul_ok(k, n) && Call::mul_ok(m, n), "sizes too large"));
  CHECK(c.need(na >= m * k, "a has %lld values, needs m*k = %lld", na, m * k));
  CHECK(c.need(nb >= k * n, "b has %lld values, needs k*n = %lld", nb, k * n));
  CHECK(c.need(nc >= m * n, "c has %lld values, needs m*n = %lld", nc, m * n));
  c.state->kernels->gemm(c.state->pool, m, n, k, a, ta, b, tb, out, acc);
  return c.undefined();
}

napi_value PackedMatmul(napi_env env, napi_callback_info info) {
  // (a, data, format, rows, cols, c, m, transposed, accumulate, exactQuant)
  Call c(env, info, "packedMatmul");
  float *a, *out;
  uint8_t* data;
  int64_t na, nd, nc, fmt, rows, cols, m;
  bool transposed, acc, exact_quant;
  CHECK(c.f32(0, "a", a, na) && c.typed(1, napi_uint8_array, "packed data", data, nd) && c.f32(5, "c", out, nc));
  CHECK(c.count(2, "format", fmt) && c.count(3, "rows", rows) && c.count(4, "cols", cols) && c.count(6, "m", m));
  c.flag(7, transposed), c.flag(8, acc), c.flag(9, exact_quant);
  CHECK(c.need(fmt <= FMT_Q4_0, "unknown packed format code %lld", fmt));
  const bool quant = fmt == FMT_Q8_0 || fmt == FMT_Q4_0;
  CHECK(c.need(!quant || cols % 32 == 0, "a q format needs a column count that is a multiple of 32, got %lld", cols));
  const int64_t row_bytes = quant ? cols / 32 * (fmt == FMT_Q8_0 ? 34 : 18) : cols * 2;
  CHECK(c.need(Call::mul_ok(rows, row_bytes) && Call::mul_ok(m, rows) && Call::mul_ok(m, cols), "sizes too large"));
  CHECK(c.need(nd >= rows * row_bytes, "packed data has %lld bytes, needs %lld", nd, rows * row_bytes));
  const int64_t in = transposed ? rows : cols, outc = transposed ? cols : rows;
  CHECK(c.need(na >= m * in, "a has %lld values, needs %lld", na, m * in));
  CHECK(c.need(nc >= m * outc, "c has %lld values, needs %lld", nc, m * outc));
  PackedW w{int(fmt), rows, cols, row_bytes, data};
  const KernelTable* k = c.state->kernels;
  // the bf16 dot product pays off for prefill-sized m; decode is bound by memory either way
  if (c.state->bf16_dot && k->packed_matmul_bf16dot && fmt == FMT_BF16 && !transposed && m > 4 && cols % 2 == 0)
    k->packed_matmul_bf16dot(c.state->pool, a, w, out, m, acc);
  else if (quant && !transposed && !exact_quant)  // integer activations; the input gradient stays exact
    k->packed_matmul_qdot(c.state->pool, a, w, out, m, acc);
  else
    k->packed_matmul(c.state->pool, a, w, out, m, transposed, acc);
  return c.undefined();
}

// (x, y, out): n = out.length
napi_value Binary(napi_env env, napi_callback_info info, const char* name, bool mul) {
  Call c(env, info, name);
  float *x, *y, *out;
  int64_t nx, ny, n;
  CHECK(c.f32(0, "x", x, nx) && c.f32(1, "y", y, ny) && c.f32(2, "out", out, n));
  CHECK(c.need(nx >= n && ny >= n, "inputs of %lld and %lld values for an output of %lld", nx, ny, n));
  (mul ? c.state->kernels->mul : c.state->kernels->add)(c.state->pool, x, y, out, n);
  return c.undefined();
}
napi_value Add(napi_env env, napi_callback_info info) { return Binary(env, info, "add", false); }
napi_value Mul(napi_env env, napi_callback_info info) { return Binary(env, info, "mul", true); }

napi_value AddBroadcast(napi_env env, napi_callback_info info) {
  Call c(env, info, "addBroadcast");
  float *x, *y, *out;
  int64_t nx, ny, n;
  CHECK(c.f32(0, "x", x, nx) && c.f32(1, "y", y, ny) && c.f32(2, "out", out, n));
  CHECK(c.need(ny > 0 || n == 0, "y is empty"));
  CHECK(c.need(nx >= n && (n == 0 || n % ny == 0), "x has %lld values, out %lld, y %lld: out must be whole rows of y", nx, n, ny));
  if (n > 0) c.state->kernels->add_broadcast(c.state->pool, x, y, ny, out, n);
  return c.undefined();
}

napi_value Scale(napi_env env, napi_callback_info info) {
  Call c(env, info, "scale");
  float *x, *out;
  int64_t nx, n;
  double s;
  CHECK(c.f32(0, "x", x, nx) && c.num(1, "s", s) && c.f32(2, "out", out, n));
  CHECK(c.need(nx >= n, "x has %lld values for an output of %lld", nx, n));
  c.state->kernels->scale(c.state->pool, x, s, out, n);
  return c.undefined();
}

napi_value Accumulate(napi_env env, napi_callback_info info) {
  Call c(env, info, "accumulate");
  float *y, *x;
  int64_t ny, nx;
  CHECK(c.f32(0, "y", y, ny) && c.f32(1, "x", x, nx));
  CHECK(c.need(nx >= ny, "x has %lld values, y %lld", nx, ny));
  c.state->kernels->accumulate(c.state->pool, y, x, ny);
  return c.undefined();
}

napi_value SumRows(napi_env env, napi_callback_info info) {
  Call c(env, info, "sumRows");
  float *x, *out;
  int64_t nx, len, no;
  CHECK(c.f32(0, "x", x, nx) && c.count(1, "rowLength", len) && c.f32(2, "out", out, no));
  CHECK(c.need(len > 0 && nx % len == 0, "x has %lld values, not whole rows of %lld", nx, len));
  CHECK(c.need(no >= len, "out has %lld values, needs %lld", no, len));
  c.state->kernels->sum_rows(c.state->pool, x, nx / len, len, out);
  return c.undefined();
}

napi_value Activation(napi_env env, napi_callback_info info) {
  Call c(env, info, "activation");
  int64_t kind, nx, n;
  float *x, *out;
  CHECK(c.count(0, "kind", kind) && c.f32(1, "x", x, nx) && c.f32(2, "out", out, n));
  CHECK(c.need(kind <= ACT_RELU, "unknown activation code %lld", kind));
  CHECK(c.need(nx >= n, "x has %lld values for an output of %lld", nx, n));
  c.state->kernels->activation(c.state->pool, int(kind), x, out, n);
  return c.undefined();
}

napi_value ActivationBackward(napi_env env, napi_callback_info info) {
  Call c(env, info, "activationBackward");
  int64_t kind, nx, ng, n;
  float *x, *dy, *dx;
  CHECK(c.count(0, "kind", kind) && c.f32(1, "x", x, nx) && c.f32(2, "dy", dy, ng) && c.f32(3, "dx", dx, n));
  CHECK(c.need(kind <= ACT_RELU, "unknown activation code %lld", kind));
  CHECK(c.need(nx >= n && ng >= n, "x has %lld values, dy %lld, dx %lld", nx, ng, n));
  c.state->kernels->activation_backward(c.state->pool, int(kind), x, dy, dx, n);
  return c.undefined();
}

bool rows_of(Call& c, int64_t n, int64_t dim, int64_t& rows) {
  if (!c.need(dim > 0 && n % dim == 0, "x has %lld values, not whole rows of %lld", n, dim)) return false;
  rows = n / dim;
  return true;
}

napi_value LayerNorm(napi_env env, napi_callback_info info) {
  // (x, w, b, dim, eps, out)
  Call c(env, info, "layerNorm");
  float *x, *w, *b, *out;
  int64_t nx, nw, nb, no, dim, rows;
  double eps;
  CHECK(c.f32(0, "x", x, nx) && c.f32(1, "w", w, nw) && c.f32(2, "b", b, nb) && c.count(3, "dim", dim) &&
        c.num(4, "eps", eps) && c.f32(5, "out", out, no));
  CHECK(rows_of(c, nx, dim, rows));
  CHECK(c.need(nw >= dim && nb >= dim && no >= nx, "w has %lld values, b %lld, for rows of %lld (or out too short)", nw, nb, dim));
  c.state->kernels->layer_norm(c.state->pool, x, w, b, rows, dim, eps, out);
  return c.undefined();
}

napi_value LayerNormBackward(napi_env env, napi_callback_info info) {
  // (x, w, dy, dim, eps, dx, dw, db)
  Call c(env, info, "layerNormBackward");
  float *x, *w, *dy, *dx, *dw, *db;
  int64_t nx, nw, ng, ndx, ndw, ndb, dim, rows;
  double eps;
  CHECK(c.f32(0, "x", x, nx) && c.f32(1, "w", w, nw) && c.f32(2, "dy", dy, ng) && c.count(3, "dim", dim) &&
        c.num(4, "eps", eps) && c.f32(5, "dx", dx, ndx, true) && c.f32(6, "dw", dw, ndw, true) &&
        c.f32(7, "db", db, ndb, true));
  CHECK(rows_of(c, nx, dim, rows));
  CHECK(c.need(nw >= dim && ng >= nx, "w has %lld values, dy %lld, for x of %lld", nw, ng, nx));
  CHECK(c.need((!dx || ndx >= nx) && (!dw || ndw >= dim) && (!db || ndb >= dim), "a gradient buffer is too short"));
  c.state->kernels->layer_norm_backward(c.state->pool, x, w, dy, rows, dim, eps, dx, dw, db);
  return c.undefined();
}

napi_value RmsNorm(napi_env env, napi_callback_info info) {
  // (x, w, dim, eps, out)
  Call c(env, info, "rmsNorm");
  float *x, *w, *out;
  int64_t nx, nw, no, dim, rows;
  double eps;
  CHECK(c.f32(0, "x", x, nx) && c.f32(1, "w", w, nw) && c.count(2, "dim", dim) && c.num(3, "eps", eps) &&
        c.f32(4, "out", out, no));
  CHECK(rows_of(c, nx, dim, rows));
  CHECK(c.need(nw >= dim && no >= nx, "w has %lld values for rows of %lld (or out too short)", nw, dim));
  c.state->kernels->rms_norm(c.state->pool, x, w, rows, dim, eps, out);
  return c.undefined();
}

napi_value RmsNormBackward(napi_env env, napi_callback_info info) {
  // (x, w, dy, dim, eps, dx, dw)
  Call c(env, info, "rmsNormBackward");
  float *x, *w, *dy, *dx, *dw;
  int64_t nx, nw, ng, ndx, ndw, dim, rows;
  double eps;
  CHECK(c.f32(0, "x", x, nx) && c.f32(1, "w", w, nw) && c.f32(2, "dy", dy, ng) && c.count(3, "dim", dim) &&
        c.num(4, "eps", eps) && c.f32(5, "dx", dx, ndx, true) && c.f32(6, "dw", dw, ndw, true));
  CHECK(rows_of(c, nx, dim, rows));
  CHECK(c.need(nw >= dim && ng >= nx, "w has %lld values, dy %lld, for x of %lld", nw, ng, nx));
  CHECK(c.need((!dx || ndx >= nx) && (!dw || ndw >= dim), "a gradient buffer is too short"));
  c.state->kernels->rms_norm_backward(c.state->pool, x, w, dy, rows, dim, eps, dx, dw);
  return c.undefined();
}

napi_value Rope(napi_env env, napi_callback_info info) {
  // (x, positions, heads, headDim, invFreq, inverse, out)
  Call c(env, info, "rope");
  float *x, *out;
  int32_t* pos;
  double* inv_freq;
  int64_t nx, np, nf, no, heads, head_dim;
  bool inverse;
  CHECK(c.f32(0, "x", x, nx) && c.i32(1, "positions", pos, np) && c.count(2, "heads", heads) &&
        c.count(3, "headDim", head_dim) && c.typed(4, napi_float64_array, "invFreq", inv_freq, nf) && c.flag(5, inverse) &&
        c.f32(6, "out", out, no));
  CHECK(c.need(head_dim % 2 == 0, "headDim %lld is odd", head_dim));
  CHECK(c.need(Call::mul_ok(np, heads) && Call::mul_ok(np * heads, head_dim), "sizes too large"));
  const int64_t total = np * heads * head_dim;
  CHECK(c.need(nx >= total && no >= total, "x has %lld values, out %lld, needs %lld", nx, no, total));
  CHECK(c.need(nf >= head_dim / 2, "invFreq has %lld values, needs %lld", nf, head_dim / 2));
  c.state->kernels->rope(c.state->pool, x, pos, np, heads, head_dim, inv_freq, inverse, out);
  return c.undefined();
}

// attention arguments after the arrays: batch, tq, tk, heads, kvHeads, headDim, scale, causalOffset|null, kvBatchStride|null, window|null
bool attn_shape(Call& c, size_t i, AttnShape& s) {
  double scale;
  if (!(c.count(i, "batch", s.batch) && c.count(i + 1, "tq", s.tq) && c.count(i + 2, "tk", s.tk) &&
        c.count(i + 3, "heads", s.heads, 1) && c.count(i + 4, "kvHeads", s.kv_heads, 1) &&
        c.count(i + 5, "headDim", s.head_dim) && c.num(i + 6, "scale", scale)))
    return false;
  s.scale = float(scale);
  s.causal = !c.is_null(i + 7);
  s.causal_offset = 0;
  if (s.causal) {
    double off;
    if (!c.num(i + 7, "causalOffset", off)) return false;
    if (!c.need(std::floor(off) == off && std::fabs(off) < 4e15, "causalOffset must be a whole number")) return false;
    s.causal_offset = int64_t(off);
  }
  if (!c.need(s.heads % s.kv_heads == 0, "heads %lld is not a multiple of kvHeads %lld", s.heads, s.kv_heads)) return false;
  const int64_t row = s.kv_heads * s.head_dim;
  if (!c.need(Call::mul_ok(s.tk, row) && Call::mul_ok(s.batch * s.tq, s.heads * s.head_dim) && s.batch < (int64_t(1) << 31),
              "sizes too large"))
    return false;
  if (c.is_null(i + 8)) s.kv_stride = s.tk * row;
  else if (!c.count(i + 8, "kvBatchStride", s.kv_stride)) return false;
  s.window = 0;
  if (!c.is_null(i + 9) && !c.count(i + 9, "window", s.window)) return false;
  return true;
}

bool attn_lengths(Call& c, const AttnShape& s, int64_t nq, int64_t nk, int64_t nv) {
  const int64_t qn = s.batch * s.tq * s.heads * s.head_dim;
  const int64_t kvn = s.batch == 0 ? 0 : (s.batch - 1) * s.kv_stride + s.tk * s.kv_heads * s.head_dim;
  return c.need(nq >= qn, "q (or out, dout, dq) has %lld values, needs %lld", nq, qn) &&
         c.need(nk >= kvn && nv >= kvn, "k has %lld values, v %lld, needs %lld", nk, nv, kvn);
}

napi_value Attention(napi_env env, napi_callback_info info) {
  // (q, k, v, out, ...shape)
  Call c(env, info, "attention");
  float *q, *k, *v, *out;
  int64_t nq, nk, nv, no;
  AttnShape s;
  CHECK(c.f32(0, "q", q, nq) && c.f32(1, "k", k, nk) && c.f32(2, "v", v, nv) && c.f32(3, "out", out, no));
  CHECK(attn_shape(c, 4, s) && attn_lengths(c, s, nq < no ? nq : no, nk, nv));
  if (s.batch * s.tq * s.heads * s.head_dim > 0) c.state->kernels->attention(c.state->pool, q, k, v, out, s);
  return c.undefined();
}

napi_value AttentionBackward(napi_env env, napi_callback_info info) {
  // (q, k, v, dout, dq, dk, dv, ...shape)
  Call c(env, info, "attentionBackward");
  float *q, *k, *v, *dout, *dq, *dk, *dv;
  int64_t nq, nk, nv, ndo, ndq, ndk, ndv;
  AttnShape s;
  CHECK(c.f32(0, "q", q, nq) && c.f32(1, "k", k, nk) && c.f32(2, "v", v, nv) && c.f32(3, "dout", dout, ndo) &&
        c.f32(4, "dq", dq, ndq, true) && c.f32(5, "dk", dk, ndk, true) && c.f32(6, "dv", dv, ndv, true));
  CHECK(attn_shape(c, 7, s));
  int64_t qmin = nq < ndo ? nq : ndo;
  if (dq && ndq < qmin) qmin = ndq;
  CHECK(attn_lengths(c, s, qmin, nk, nv));
  CHECK(attn_lengths(c, s, qmin, dk ? ndk : nk, dv ? ndv : nv));
  if (s.batch * s.tq * s.heads * s.head_dim > 0 && (dq || dk || dv))
    c.state->kernels->attention_backward(c.state->pool, q, k, v, dout, dq, dk, dv, s);
  return c.undefined();
}

bool ids_in_range(Call& c, const int32_t* ids, int64_t n, int64_t rows, const char* what) {
  for (int64_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= rows) {
      char msg[160];
      std::snprintf(msg, sizeof msg, "%s %d at index %lld is outside [0, %lld)", what, ids[i], (long long)i, (long long)rows);
      return c.fail(msg);
    }
  return true;
}

napi_value Embedding(napi_env env, napi_callback_info info) {
  // (table, ids, dim, out)
  Call c(env, info, "embedding");
  float *table, *out;
  int32_t* ids;
  int64_t nt, ni, dim, no;
  CHECK(c.f32(0, "table", table, nt) && c.i32(1, "ids", ids, ni) && c.count(2, "dim", dim, 1) && c.f32(3, "out", out, no));
  CHECK(c.need(no >= ni * dim, "out has %lld values, needs %lld", no, ni * dim));
  CHECK(ids_in_range(c, ids, ni, nt / dim, "id"));
  c.state->kernels->embedding(c.state->pool, table, ids, ni, dim, out);
  return c.undefined();
}

napi_value EmbeddingBackward(napi_env env, napi_callback_info info) {
  // (ids, dy, dim, dtable)
  Call c(env, info, "embeddingBackward");
  float *dy, *dtable;
  int32_t* ids;
  int64_t ni, ng, dim, nt;
  CHECK(c.i32(0, "ids", ids, ni) && c.f32(1, "dy", dy, ng) && c.count(2, "dim", dim, 1) && c.f32(3, "dtable", dtable, nt));
  CHECK(c.need(ng >= ni * dim, "dy has %lld values, needs %lld", ng, ni * dim));
  CHECK(ids_in_range(c, ids, ni, nt / dim, "id"));
  c.state->kernels->embedding_backward(c.state->pool, ids, ni, dy, dim, dtable);
  return c.undefined();
}

napi_value CrossEntropy(napi_env env, napi_callback_info info) {
  // (logits, targets, vocab, ignoreIndex, dlogits) -> mean loss
  Call c(env, info, "crossEntropy");
  float *logits, *dlogits;
  int32_t* targets;
  int64_t nl, nt, vocab, nd;
  double ignore;
  CHECK(c.f32(0, "logits", logits, nl) && c.i32(1, "targets", targets, nt) && c.count(2, "vocab", vocab, 1) &&
        c.num(3, "ignoreIndex", ignore) && c.f32(4, "dlogits", dlogits, nd, true));
  CHECK(c.need(Call::mul_ok(nt, vocab) && nl >= nt * vocab, "logits has %lld values, needs %lld", nl, nt * vocab));
  CHECK(c.need(!dlogits || nd >= nt * vocab, "dlogits has %lld values, needs %lld", nd, nt * vocab));
  // an ignoreIndex outside int32 can never match a target
  const bool ignorable = std::floor(ignore) == ignore && ignore >= -2147483648.0 && ignore <= 2147483647.0;
  const int32_t ign = ignorable ? int32_t(ignore) : 0;
  for (int64_t r = 0; r < nt; r++) {
    if (ignorable && targets[r] == ign) continue;
    if (targets[r] < 0 || targets[r] >= vocab) {
      char msg[160];
      std::snprintf(msg, sizeof msg, "target %d of row %lld is outside [0, %lld) and is not the ignore index", targets[r],
                    (long long)r, (long long)vocab);
      c.fail(msg);
      return nullptr;
    }
  }
  // when nothing is ignorable, use a value no target holds
  int32_t effective = ign;
  if (!ignorable) effective = -1;
  if (dlogits)
    for (int64_t i = nt * vocab; i < nd; i++) dlogits[i] = 0.f;
  double loss = c.state->kernels->cross_entropy(c.state->pool, logits, targets, nt, vocab, effective, dlogits);
  return c.number(loss);
}

// ---- pool, variants, probes ----

int default_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : int(n);
}

napi_value SetThreads(napi_env env, napi_callback_info info) {
  Call c(env, info, "setThreads");
  int64_t n;
  CHECK(c.count(0, "threads", n));
  CHECK(c.need(n <= 1024, "threads must be at most 1024, got %lld", n));
  int want = n == 0 ? default_threads() : int(n);
  if (want != pool_size(c.state->pool)) {
    pool_destroy(c.state->pool);
    c.state->pool = pool_create(want);
  }
  return c.undefined();
}

napi_value GetThreads(napi_env env, napi_callback_info info) {
  Call c(env, info, "threads");
  return c.number(pool_size(c.state->pool));
}

napi_value Isa(napi_env env, napi_callback_info info) {
  Call c(env, info, "isa");
  napi_value s;
  napi_create_string_utf8(env, c.state->kernels->name, NAPI_AUTO_LENGTH, &s);
  return s;
}

napi_value Isas(napi_env env, napi_callback_info info) {
  Call c(env, info, "isas");
  napi_value arr;
  napi_create_array(env, &arr);
  uint32_t i = 0;
  for (const KernelTable* const* t = available_kernels(); *t; t++, i++) {
    napi_value s;
    napi_create_string_utf8(env, (*t)->name, NAPI_AUTO_LENGTH, &s);
    napi_set_element(env, arr, i, s);
  }
  return arr;
}

napi_value SetIsa(napi_env env, napi_callback_info info) {
  Call c(env, info, "setIsa");
  char name[32] = {0};
  size_t len = 0;
  if (napi_get_value_string_utf8(env, c.argv[0], name, sizeof name, &len) != napi_ok) {
    c.fail("name must be a string", false);
    return nullptr;
  }
  for (const KernelTable* const* t = available_kernels(); *t; t++)
    if (std::strcmp((*t)->name, name) == 0) {
      c.state->kernels = *t;
      return c.undefined();
    }
  char msg[96];
  std::snprintf(msg, sizeof msg, "kernel variant \"%s\" is not available on this CPU", name);
  c.fail(msg);
  return nullptr;
}

napi_value SetBf16Dot(napi_env env, napi_callback_info info) {
  // (on) -> whether the bf16 dot-product path is now in use (false where the CPU lacks it)
  Call c(env, info, "setBf16Dot");
  bool on;
  c.flag(0, on);
  c.state->bf16_dot = on;
  napi_value r;
  napi_get_boolean(env, on && c.state->kernels->packed_matmul_bf16dot != nullptr, &r);
  return r;
}

napi_value Bandwidth(napi_env env, napi_callback_info info) {
  // (x, reps) -> GB/s of reading x reps times with every pool thread
  Call c(env, info, "bandwidth");
  float* x;
  int64_t n, reps;
  CHECK(c.f32(0, "x", x, n) && c.count(1, "reps", reps, 1));
  auto t0 = std::chrono::steady_clock::now();
  double sum = c.state->kernels->read_sum(c.state->pool, x, n, int(reps));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  (void)sum;  // the checksum comes back through a function pointer, so the reads happen
  return c.number(double(n) * 4.0 * double(reps) / secs / 1e9);
}

void finalize_state(napi_env, void* data, void*) {
  State* s = static_cast<State*>(data);
  pool_destroy(s->pool);
  delete s;
}

napi_value Init(napi_env env, napi_value exports) {
  State* state = new State();
  state->kernels = available_kernels()[0];
  state->pool = pool_create(default_threads());
  napi_set_instance_data(env, state, finalize_state, nullptr);
  struct Fn {
    const char* name;
    napi_callback cb;
  } fns[] = {
      {"gemm", Gemm}, {"packedMatmul", PackedMatmul}, {"add", Add}, {"addBroadcast", AddBroadcast}, {"mul", Mul},
      {"scale", Scale}, {"accumulate", Accumulate}, {"sumRows", SumRows}, {"activation", Activation},
      {"activationBackward", ActivationBackward}, {"layerNorm", LayerNorm}, {"layerNormBackward", LayerNormBackward},
      {"rmsNorm", RmsNorm}, {"rmsNormBackward", RmsNormBackward}, {"rope", Rope}, {"attention", Attention},
      {"attentionBackward", AttentionBackward}, {"embedding", Embedding}, {"embeddingBackward", EmbeddingBackward},
      {"crossEntropy", CrossEntropy}, {"setThreads", SetThreads}, {"threads", GetThreads}, {"isa", Isa},
      {"isas", Isas}, {"setIsa", SetIsa}, {"setBf16Dot", SetBf16Dot}, {"bandwidth", Bandwidth},
  };
  for (const Fn& f : fns) {
    napi_value fn;
    napi_create_function(env, f.name, NAPI_AUTO_LENGTH, f.cb, state, &fn);
    napi_set_named_property(env, exports, f.name, fn);
  }
  return exports;
}

}  // namespace

NAPI_MODULE_INIT() { return Init(env, exports); }
