// N-API bindings of the native backend: argument checks, then a call into the kernel table.
// Inputs are the caller's typed arrays, used in place (no copies); outputs are preallocated by
// the caller. Every length is checked before a kernel touches memory, so a bad call throws a
// JavaScript error instead of corrupting memory. Arrays come as positional arguments; a
// kernel's other arguments, where there are many, come as one parameter object.
#include <node_api.h>

#include <chrono>
#include <cmath>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "kernels.h"

using namespace llava;

namespace {

// The process-wide settings (per JavaScript environment): one pool and one kernel table,
// shared by every backend on this addon.
struct State {
  Pool* pool = nullptr;
  const KernelTable* kernels = nullptr;
};

struct Call;
// A JavaScript function of the addon.
struct Binding {
  const char* name;
  napi_value (*run)(Call&);
};

// A JavaScript value and the name it goes by in error messages (an argument or a property).
struct Field {
  napi_value v;
  const char* name;
};

constexpr size_t kMaxArgs = 13;

// One call's arguments. Getters return false after throwing a JavaScript error.
struct Call {
  napi_env env;
  State* state = nullptr;
  const Binding* binding = nullptr;
  const char* op = "";
  napi_value argv[kMaxArgs];
  size_t argc = kMaxArgs;

  Call(napi_env e, napi_callback_info info) : env(e) {
    void* data = nullptr;
    napi_get_cb_info(env, info, &argc, argv, nullptr, &data);
    binding = static_cast<const Binding*>(data);
    op = binding->name;
    void* s = nullptr;
    napi_get_instance_data(env, &s);
    state = static_cast<State*>(s);
    for (size_t i = argc; i < kMaxArgs; i++) napi_get_undefined(env, &argv[i]);
  }

  const KernelTable& kernels() const { return *state->kernels; }
  Pool* pool() const { return state->pool; }

  Field arg(size_t i, const char* name) const { return Field{argv[i], name}; }
  // a property of a parameter object (undefined when it is missing)
  Field prop(napi_value obj, const char* name) const {
    napi_value v;
    if (napi_get_named_property(env, obj, name, &v) != napi_ok) napi_get_undefined(env, &v);
    return Field{v, name};
  }

  bool fail(const char* what, bool range = true) {
    char msg[320];
    std::snprintf(msg, sizeof msg, "native %s: %s", op, what);
    if (range) napi_throw_range_error(env, nullptr, msg);
    else napi_throw_type_error(env, nullptr, msg);
    return false;
  }
  bool fail_type(const Field& f, const char* want) {
    char msg[128];
    std::snprintf(msg, sizeof msg, "%s must be %s", f.name, want);
    return fail(msg, false);
  }

  bool is_null(const Field& f) {
    napi_valuetype t;
    napi_typeof(env, f.v, &t);
    return t == napi_null || t == napi_undefined;
  }

  bool object(const Field& f, napi_value& obj) {
    napi_valuetype t;
    napi_typeof(env, f.v, &t);
    if (t != napi_object) return fail_type(f, "an object");
    obj = f.v;
    return true;
  }

  template <class T>
  bool typed(const Field& f, napi_typedarray_type want, T*& ptr, int64_t& len, bool nullable = false) {
    if (nullable && is_null(f)) {
      ptr = nullptr;
      len = 0;
      return true;
    }
    napi_typedarray_type type;
    size_t length = 0;
    void* data = nullptr;
    // fails (without throwing) on anything that is not a typed array
    if (napi_get_typedarray_info(env, f.v, &type, &length, &data, nullptr, nullptr) != napi_ok || type != want) {
      return fail_type(f, want == napi_float32_array   ? "a Float32Array"
                          : want == napi_int32_array   ? "an Int32Array"
                          : want == napi_float64_array ? "a Float64Array"
                          : want == napi_uint16_array  ? "a Uint16Array"
                                                       : "a Uint8Array");
    }
    ptr = static_cast<T*>(data);
    len = int64_t(length);
    return true;
  }
  // an Array of n typed arrays of type `want`: their data and lengths
  template <class T>
  bool typed_list(const Field& f, napi_typedarray_type want, int64_t n, std::vector<T*>& ptrs, std::vector<int64_t>& lens) {
    bool is_array = false;
    uint32_t length = 0;
    if (napi_is_array(env, f.v, &is_array) != napi_ok || !is_array) return fail_type(f, "an Array");
    napi_get_array_length(env, f.v, &length);
    char fmt[96];
    std::snprintf(fmt, sizeof fmt, "%s has %%lld arrays, needs %%lld", f.name);
    if (!need(int64_t(length) == n, fmt, length, n)) return false;
    ptrs.resize(size_t(n));
    lens.resize(size_t(n));
    for (uint32_t i = 0; i < length; i++) {
      napi_value e;
      napi_get_element(env, f.v, i, &e);
      if (!typed(Field{e, f.name}, want, ptrs[i], lens[i])) return false;
    }
    return true;
  }
  bool f32(const Field& f, float*& p, int64_t& n, bool nullable = false) { return typed(f, napi_float32_array, p, n, nullable); }
  bool i32(const Field& f, int32_t*& p, int64_t& n) { return typed(f, napi_int32_array, p, n); }
  bool u16(const Field& f, uint16_t*& p, int64_t& n) { return typed(f, napi_uint16_array, p, n); }

  bool num(const Field& f, double& v) {
    if (napi_get_value_double(env, f.v, &v) != napi_ok) return fail_type(f, "a number");
    return true;
  }
  // a whole number in [lo, 2^52]
  bool count(const Field& f, int64_t& v, int64_t lo = 0) {
    double d;
    if (!num(f, d)) return false;
    if (!(d >= double(lo) && d <= 4503599627370496.0 && std::floor(d) == d)) {
      char msg[128];
      std::snprintf(msg, sizeof msg, "%s must be a whole number >= %lld, got %g", f.name, (long long)lo, d);
      return fail(msg);
    }
    v = int64_t(d);
    return true;
  }
  // true only for the boolean true (anything else, e.g. undefined, is false)
  bool flag(const Field& f) {
    bool v;
    return napi_get_value_bool(env, f.v, &v) == napi_ok && v;
  }
  bool string(const Field& f, char* out, size_t size) {
    size_t len = 0;
    if (napi_get_value_string_utf8(env, f.v, out, size, &len) != napi_ok) return fail_type(f, "a string");
    return true;
  }
  // one of `names`; `code` is its index
  template <size_t N>
  bool choice(const Field& f, const char* const (&names)[N], int& code) {
    char s[32];
    if (!string(f, s, sizeof s)) return false;
    for (size_t i = 0; i < N; i++)
      if (std::strcmp(names[i], s) == 0) {
        code = int(i);
        return true;
      }
    char msg[96];
    std::snprintf(msg, sizeof msg, "unknown %s \"%s\"", f.name, s);
    return fail(msg);
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

// ---- kernels, one bind_<name> per K of kernel_list.h ----

napi_value bind_gemm(Call& c) {
  // (a, b, c, {m, n, k, transA, transB, accumulate})
  float *a, *b, *out;
  int64_t na, nb, nc, m, n, k;
  napi_value p;
  CHECK(c.f32(c.arg(0, "a"), a, na) && c.f32(c.arg(1, "b"), b, nb) && c.f32(c.arg(2, "c"), out, nc));
  CHECK(c.object(c.arg(3, "params"), p));
  CHECK(c.count(c.prop(p, "m"), m) && c.count(c.prop(p, "n"), n) && c.count(c.prop(p, "k"), k));
  CHECK(c.need(Call::mul_ok(m, k) && Call::mul_ok(k, n) && Call::mul_ok(m, n), "sizes too large"));
  CHECK(c.need(na >= m * k, "a has %lld values, needs m*k = %lld", na, m * k));
  CHECK(c.need(nb >= k * n, "b has %lld values, needs k*n = %lld", nb, k * n));
  CHECK(c.need(nc >= m * n, "c has %lld values, needs m*n = %lld", nc, m * n));
  c.kernels().gemm(c.pool(), m, n, k, a, c.flag(c.prop(p, "transA")), b, c.flag(c.prop(p, "transB")), out,
                   c.flag(c.prop(p, "accumulate")), c.flag(c.prop(p, "rowwise")));
  return c.undefined();
}

napi_value bind_packed_matmul(Call& c) {
  // (a, data, format, rows, cols, interleaved, c, m, transposed, accumulate, exactQuant, bf16Dot,
  // rowwise): arguments, not objects, whose property lookups cost 0.5 us a call (native-backend.ts)
  float *a, *out;
  uint8_t* data;
  int64_t na, nd, nc, rows, cols, m;
  int fmt;
  CHECK(c.f32(c.arg(0, "a"), a, na) && c.typed(c.arg(1, "data"), napi_uint8_array, data, nd) &&
        c.choice(c.arg(2, "format"), kFmtNames, fmt) && c.count(c.arg(3, "rows"), rows) && c.count(c.arg(4, "cols"), cols) &&
        c.f32(c.arg(6, "c"), out, nc) && c.count(c.arg(7, "m"), m));
  const bool transposed = c.flag(c.arg(8, "transposed")), acc = c.flag(c.arg(9, "accumulate"));
  const bool rowwise = c.flag(c.arg(12, "rowwise"));
  const bool quant = fmt == FMT_Q8_0 || fmt == FMT_Q4_0;  // the formats with integer products
  const bool kquant = fmt == FMT_Q4_K || fmt == FMT_Q5_K || fmt == FMT_Q6_K;
  const int64_t block = kFmtBlock[fmt];
  CHECK(c.need(cols % block == 0, "a q format needs a column count that is a multiple of %lld, got %lld", block, cols));
  const int64_t row_bytes = cols / block * kFmtBlockBytes[fmt];
  CHECK(c.need(Call::mul_ok(rows, row_bytes) && Call::mul_ok(m, rows) && Call::mul_ok(m, cols), "sizes too large"));
  CHECK(c.need(nd >= rows * row_bytes, "packed data has %lld bytes, needs %lld", nd, rows * row_bytes));
  const int64_t in = transposed ? rows : cols, outc = transposed ? cols : rows;
  CHECK(c.need(na >= m * in, "a has %lld values, needs %lld", na, m * in));
  CHECK(c.need(nc >= m * outc, "c has %lld values, needs %lld", nc, m * outc));
  const bool interleaved = c.flag(c.arg(5, "interleaved"));
  CHECK(c.need(!interleaved || interleavable(fmt), "only q8_0 and q4_0 weights can be interleaved"));
  const PackedW pw{fmt, rows, cols, row_bytes, data, interleaved};
  const KernelTable& k = c.kernels();
  // the bf16 dot product pays off for prefill-sized m; decode is bound by memory either way
  if (c.flag(c.arg(11, "bf16Dot")) && k.packed_matmul_bf16dot && fmt == FMT_BF16 && !transposed && m > 4 && !rowwise && cols % 2 == 0)
    k.packed_matmul_bf16dot(c.pool(), a, pw, out, m, acc);
  else if (quant && !transposed && !c.flag(c.arg(10, "exactQuant")))  // the input gradient stays exact; rows are independent
    k.packed_matmul_qdot(c.pool(), a, pw, out, m, acc);
  // K formats: integer products for decode-sized m (1.3-3x faster up to 16 rows; prompts are as
  // fast on the exact path's GEMM, and exact) and wherever rows must not depend on m
  else if (kquant && !transposed && !c.flag(c.arg(10, "exactQuant")) && (m <= 16 || rowwise))
    k.packed_matmul_kqdot(c.pool(), a, pw, out, m, acc);
  else
    k.packed_matmul(c.pool(), a, pw, out, m, transposed, acc, rowwise);
  return c.undefined();
}

// (x, y, out): n = out.length, for the kernel in slot `kernel` (add or mul)
template <void (*KernelTable::*kernel)(Pool*, const float*, const float*, float*, int64_t)>
napi_value bind_elementwise(Call& c) {
  float *x, *y, *out;
  int64_t nx, ny, n;
  CHECK(c.f32(c.arg(0, "x"), x, nx) && c.f32(c.arg(1, "y"), y, ny) && c.f32(c.arg(2, "out"), out, n));
  CHECK(c.need(nx >= n && ny >= n, "inputs of %lld and %lld values for an output of %lld", nx, ny, n));
  (c.kernels().*kernel)(c.pool(), x, y, out, n);
  return c.undefined();
}
napi_value bind_add(Call& c) { return bind_elementwise<&KernelTable::add>(c); }
napi_value bind_mul(Call& c) { return bind_elementwise<&KernelTable::mul>(c); }

napi_value bind_add_broadcast(Call& c) {
  float *x, *y, *out;
  int64_t nx, ny, n;
  CHECK(c.f32(c.arg(0, "x"), x, nx) && c.f32(c.arg(1, "y"), y, ny) && c.f32(c.arg(2, "out"), out, n));
  CHECK(c.need(ny > 0 || n == 0, "y is empty"));
  CHECK(c.need(nx >= n && (n == 0 || n % ny == 0), "x has %lld values, out %lld, y %lld: out must be whole rows of y", nx, n,
               ny));
  if (n > 0) c.kernels().add_broadcast(c.pool(), x, y, ny, out, n);
  return c.undefined();
}

napi_value bind_scale(Call& c) {
  float *x, *out;
  int64_t nx, n;
  double s;
  CHECK(c.f32(c.arg(0, "x"), x, nx) && c.num(c.arg(1, "s"), s) && c.f32(c.arg(2, "out"), out, n));
  CHECK(c.need(nx >= n, "x has %lld values for an output of %lld", nx, n));
  c.kernels().scale(c.pool(), x, s, out, n);
  return c.undefined();
}

napi_value bind_add_scaled(Call& c) {
  float *x, *y, *out;
  int64_t nx, ny, n;
  double s;
  CHECK(c.f32(c.arg(0, "x"), x, nx) && c.f32(c.arg(1, "y"), y, ny) && c.num(c.arg(2, "s"), s) && c.f32(c.arg(3, "out"), out, n));
  CHECK(c.need(nx >= n && ny >= n, "inputs of %lld and %lld values for an output of %lld", nx, ny, n));
  c.kernels().add_scaled(c.pool(), x, y, s, out, n);
  return c.undefined();
}

napi_value bind_accumulate(Call& c) {
  float *y, *x;
  int64_t ny, nx;
  CHECK(c.f32(c.arg(0, "y"), y, ny) && c.f32(c.arg(1, "x"), x, nx));
  CHECK(c.need(nx >= ny, "x has %lld values, y %lld", nx, ny));
  c.kernels().accumulate(c.pool(), y, x, ny);
  return c.undefined();
}

napi_value bind_sum_rows(Call& c) {
  float *x, *out;
  int64_t nx, len, no;
  CHECK(c.f32(c.arg(0, "x"), x, nx) && c.count(c.arg(1, "rowLength"), len) && c.f32(c.arg(2, "out"), out, no));
  CHECK(c.need(len > 0 && nx % len == 0, "x has %lld values, not whole rows of %lld", nx, len));
  CHECK(c.need(no >= len, "out has %lld values, needs %lld", no, len));
  c.kernels().sum_rows(c.pool(), x, nx / len, len, out);
  return c.undefined();
}

napi_value bind_activation(Call& c) {
  // (kind, x, out)
  int kind;
  int64_t nx, n;
  float *x, *out;
  CHECK(c.choice(c.arg(0, "activation"), kActNames, kind) && c.f32(c.arg(1, "x"), x, nx) && c.f32(c.arg(2, "out"), out, n));
  CHECK(c.need(nx >= n, "x has %lld values for an output of %lld", nx, n));
  c.kernels().activation(c.pool(), kind, x, out, n);
  return c.undefined();
}

napi_value bind_activation_backward(Call& c) {
  // (kind, x, dy, dx)
  int kind;
  int64_t nx, ng, n;
  float *x, *dy, *dx;
  CHECK(c.choice(c.arg(0, "activation"), kActNames, kind) && c.f32(c.arg(1, "x"), x, nx) && c.f32(c.arg(2, "dy"), dy, ng) &&
        c.f32(c.arg(3, "dx"), dx, n));
  CHECK(c.need(nx >= n && ng >= n, "x has %lld values, dy %lld, dx %lld", nx, ng, n));
  c.kernels().activation_backward(c.pool(), kind, x, dy, dx, n);
  return c.undefined();
}

// (x, w, ..., dim, eps, ...): x as rows of `dim` and its per-channel weight w, as every norm starts
bool norm_rows(Call& c, size_t dim_arg, float*& x, int64_t& nx, float*& w, int64_t& dim, double& eps, int64_t& rows) {
  int64_t nw;
  if (!(c.f32(c.arg(0, "x"), x, nx) && c.f32(c.arg(1, "w"), w, nw) && c.count(c.arg(dim_arg, "dim"), dim) &&
        c.num(c.arg(dim_arg + 1, "eps"), eps)))
    return false;
  if (!c.need(dim > 0 && nx % dim == 0, "x has %lld values, not whole rows of %lld", nx, dim)) return false;
  rows = nx / dim;
  return c.need(nw >= dim, "w has %lld values for rows of %lld", nw, dim);
}

napi_value bind_layer_norm(Call& c) {
  // (x, w, b, dim, eps, out)
  float *x, *w, *b, *out;
  int64_t nx, nb, no, dim, rows;
  double eps;
  CHECK(norm_rows(c, 3, x, nx, w, dim, eps, rows));
  CHECK(c.f32(c.arg(2, "b"), b, nb) && c.f32(c.arg(5, "out"), out, no));
  CHECK(c.need(nb >= dim && no >= nx, "b has %lld values, out %lld, for x of %lld", nb, no, nx));
  c.kernels().layer_norm(c.pool(), x, w, b, rows, dim, eps, out);
  return c.undefined();
}

napi_value bind_layer_norm_backward(Call& c) {
  // (x, w, dy, dim, eps, dx, dw, db)
  float *x, *w, *dy, *dx, *dw, *db;
  int64_t nx, ng, ndx, ndw, ndb, dim, rows;
  double eps;
  CHECK(norm_rows(c, 3, x, nx, w, dim, eps, rows));
  CHECK(c.f32(c.arg(2, "dy"), dy, ng) && c.f32(c.arg(5, "dx"), dx, ndx, true) && c.f32(c.arg(6, "dw"), dw, ndw, true) &&
        c.f32(c.arg(7, "db"), db, ndb, true));
  CHECK(c.need(ng >= nx, "dy has %lld values, for x of %lld", ng, nx));
  CHECK(c.need((!dx || ndx >= nx) && (!dw || ndw >= dim) && (!db || ndb >= dim), "a gradient buffer is too short"));
  c.kernels().layer_norm_backward(c.pool(), x, w, dy, rows, dim, eps, dx, dw, db);
  return c.undefined();
}

napi_value bind_rms_norm(Call& c) {
  // (x, w, dim, eps, out)
  float *x, *w, *out;
  int64_t nx, no, dim, rows;
  double eps;
  CHECK(norm_rows(c, 2, x, nx, w, dim, eps, rows));
  CHECK(c.f32(c.arg(4, "out"), out, no));
  CHECK(c.need(no >= nx, "out has %lld values, for x of %lld", no, nx));
  c.kernels().rms_norm(c.pool(), x, w, rows, dim, eps, out);
  return c.undefined();
}

napi_value bind_rms_norm_backward(Call& c) {
  // (x, w, dy, dim, eps, dx, dw)
  float *x, *w, *dy, *dx, *dw;
  int64_t nx, ng, ndx, ndw, dim, rows;
  double eps;
  CHECK(norm_rows(c, 3, x, nx, w, dim, eps, rows));
  CHECK(c.f32(c.arg(2, "dy"), dy, ng) && c.f32(c.arg(5, "dx"), dx, ndx, true) && c.f32(c.arg(6, "dw"), dw, ndw, true));
  CHECK(c.need(ng >= nx, "dy has %lld values, for x of %lld", ng, nx));
  CHECK(c.need((!dx || ndx >= nx) && (!dw || ndw >= dim), "a gradient buffer is too short"));
  c.kernels().rms_norm_backward(c.pool(), x, w, dy, rows, dim, eps, dx, dw);
  return c.undefined();
}

napi_value bind_rope(Call& c) {
  // (x, positions, heads, headDim, invFreq, inverse, out)
  float *x, *out;
  int32_t* pos;
  double* inv_freq;
  int64_t nx, np, nf, no, heads, head_dim;
  CHECK(c.f32(c.arg(0, "x"), x, nx) && c.i32(c.arg(1, "positions"), pos, np) && c.count(c.arg(2, "heads"), heads) &&
        c.count(c.arg(3, "headDim"), head_dim) && c.typed(c.arg(4, "invFreq"), napi_float64_array, inv_freq, nf) &&
        c.f32(c.arg(6, "out"), out, no));
  CHECK(c.need(head_dim % 2 == 0, "headDim %lld is odd", head_dim));
  CHECK(c.need(Call::mul_ok(np, heads) && Call::mul_ok(np * heads, head_dim), "sizes too large"));
  const int64_t total = np * heads * head_dim;
  CHECK(c.need(nx >= total && no >= total, "x has %lld values, out %lld, needs %lld", nx, no, total));
  CHECK(c.need(nf >= head_dim / 2, "invFreq has %lld values, needs %lld", nf, head_dim / 2));
  c.kernels().rope(c.pool(), x, pos, np, heads, head_dim, inv_freq, c.flag(c.arg(5, "inverse")), out);
  return c.undefined();
}

// AttentionParams (backend.ts): batch, tq, tk, heads, kvHeads, headDim, scale, and the optional
// causalOffset, kvBatchStride, window (undefined or null when absent)
bool attn_shape(Call& c, const Field& f, AttnShape& s) {
  napi_value p;
  double scale;
  if (!(c.object(f, p) && c.count(c.prop(p, "batch"), s.batch) && c.count(c.prop(p, "tq"), s.tq) &&
        c.count(c.prop(p, "tk"), s.tk) && c.count(c.prop(p, "heads"), s.heads, 1) &&
        c.count(c.prop(p, "kvHeads"), s.kv_heads, 1) && c.count(c.prop(p, "headDim"), s.head_dim) &&
        c.num(c.prop(p, "scale"), scale)))
    return false;
  s.scale = float(scale);
  const Field offset = c.prop(p, "causalOffset"), stride = c.prop(p, "kvBatchStride"), window = c.prop(p, "window");
  s.causal = !c.is_null(offset);
  s.causal_offset = 0;
  if (s.causal) {
    double off;
    if (!c.num(offset, off)) return false;
    if (!c.need(std::floor(off) == off && std::fabs(off) < 4e15, "causalOffset must be a whole number")) return false;
    s.causal_offset = int64_t(off);
  }
  if (!c.need(s.heads % s.kv_heads == 0, "heads %lld is not a multiple of kvHeads %lld", s.heads, s.kv_heads)) return false;
  const int64_t row = s.kv_heads * s.head_dim;
  if (!c.need(Call::mul_ok(s.tk, row) && Call::mul_ok(s.batch * s.tq, s.heads * s.head_dim) && s.batch < (int64_t(1) << 31),
              "sizes too large"))
    return false;
  if (c.is_null(stride)) s.kv_stride = s.tk * row;
  else if (!c.count(stride, s.kv_stride)) return false;
  s.window = 0;
  return c.is_null(window) || c.count(window, s.window);
}

bool attn_lengths(Call& c, const AttnShape& s, int64_t nq, int64_t nk, int64_t nv) {
  const int64_t qn = s.batch * s.tq * s.heads * s.head_dim;
  const int64_t kvn = s.batch == 0 ? 0 : (s.batch - 1) * s.kv_stride + s.tk * s.kv_heads * s.head_dim;
  return c.need(nq >= qn, "q (or out, dout, dq) has %lld values, needs %lld", nq, qn) &&
         c.need(nk >= kvn && nv >= kvn, "k has %lld values, v %lld, needs %lld", nk, nv, kvn);
}

// (q, k, v, out, params) with k and v of type T: f32, or the f16 bits of a 16-bit KV cache;
// `run(q, k, v, out, shape)` calls the kernel
template <class T, class Run>
napi_value attention_call(Call& c, const Run& run) {
  float *q, *out;
  T *k, *v;
  int64_t nq, nk, nv, no;
  AttnShape s;
  const auto kv = [&](int i, const char* name, T*& p, int64_t& n) {
    if constexpr (sizeof(T) == 4) return c.f32(c.arg(i, name), p, n);
    else return c.u16(c.arg(i, name), p, n);
  };
  CHECK(c.f32(c.arg(0, "q"), q, nq) && kv(1, "k", k, nk) && kv(2, "v", v, nv) && c.f32(c.arg(3, "out"), out, no));
  CHECK(attn_shape(c, c.arg(4, "params"), s) && attn_lengths(c, s, nq < no ? nq : no, nk, nv));
  if (s.batch * s.tq * s.heads * s.head_dim > 0) run(q, k, v, out, s);
  return c.undefined();
}

napi_value bind_attention(Call& c) {
  return attention_call<float>(c, [&](auto... a) { c.kernels().attention(c.pool(), a...); });
}

napi_value bind_attention_f16(Call& c) {
  return attention_call<uint16_t>(c, [&](auto... a) { c.kernels().attention_f16(c.pool(), a...); });
}

// (q, ks, vs, lengths, out, params): params as AttentionParams with batch = the sequences, tq = 1
// and tk = the longest length; ks[b], vs[b] of type T (f32, or f16 bits) hold sequence b's rows,
// of which it sees the first lengths[b]
template <class T, class Run>
napi_value attention_many_call(Call& c, napi_typedarray_type type, const Run& run) {
  float *q, *out;
  int32_t* len32;
  int64_t nq, no, nl;
  AttnShape s;
  std::vector<T*> ks, vs;
  std::vector<int64_t> kn, vn;
  CHECK(c.f32(c.arg(0, "q"), q, nq) && c.i32(c.arg(3, "lengths"), len32, nl) && c.f32(c.arg(4, "out"), out, no));
  CHECK(attn_shape(c, c.arg(5, "params"), s));
  CHECK(c.need(s.tq == 1 && s.causal, "one causal query row per sequence (tq 1, causalOffset) is supported, got tq %lld", s.tq));
  CHECK(c.need(nl == s.batch, "lengths has %lld values for %lld sequences", nl, s.batch));
  CHECK(c.typed_list(c.arg(1, "ks"), type, s.batch, ks, kn) && c.typed_list(c.arg(2, "vs"), type, s.batch, vs, vn));
  const int64_t row = s.kv_heads * s.head_dim, qn = s.batch * s.heads * s.head_dim;
  CHECK(c.need(nq >= qn && no >= qn, "q has %lld values and out %lld, need %lld", nq, no, qn));
  std::vector<int64_t> lengths(size_t(s.batch));
  for (int64_t b = 0; b < s.batch; b++) {
    lengths[b] = len32[b];
    CHECK(c.need(len32[b] >= 0 && len32[b] <= s.tk, "length %lld outside [0, tk %lld]", len32[b], s.tk));
    CHECK(c.need(kn[b] >= lengths[b] * row && vn[b] >= lengths[b] * row, "sequence %lld: k or v holds fewer than %lld values", b,
                 lengths[b] * row));
  }
  if (qn > 0) run(q, ks.data(), vs.data(), lengths.data(), out, s);
  return c.undefined();
}

napi_value bind_attention_many(Call& c) {
  return attention_many_call<float>(c, napi_float32_array, [&](auto... a) { c.kernels().attention_many(c.pool(), a...); });
}

napi_value bind_attention_many_f16(Call& c) {
  return attention_many_call<uint16_t>(c, napi_uint16_array, [&](auto... a) { c.kernels().attention_many_f16(c.pool(), a...); });
}

napi_value bind_attention_backward(Call& c) {
  // (q, k, v, dout, dq, dk, dv, params)
  float *q, *k, *v, *dout, *dq, *dk, *dv;
  int64_t nq, nk, nv, ndo, ndq, ndk, ndv;
  AttnShape s;
  CHECK(c.f32(c.arg(0, "q"), q, nq) && c.f32(c.arg(1, "k"), k, nk) && c.f32(c.arg(2, "v"), v, nv) &&
        c.f32(c.arg(3, "dout"), dout, ndo) && c.f32(c.arg(4, "dq"), dq, ndq, true) && c.f32(c.arg(5, "dk"), dk, ndk, true) &&
        c.f32(c.arg(6, "dv"), dv, ndv, true));
  CHECK(attn_shape(c, c.arg(7, "params"), s));
  int64_t qmin = nq < ndo ? nq : ndo;
  if (dq && ndq < qmin) qmin = ndq;
  CHECK(attn_lengths(c, s, qmin, nk, nv));
  CHECK(attn_lengths(c, s, qmin, dk ? ndk : nk, dv ? ndv : nv));
  if (s.batch * s.tq * s.heads * s.head_dim > 0 && (dq || dk || dv))
    c.kernels().attention_backward(c.pool(), q, k, v, dout, dq, dk, dv, s);
  return c.undefined();
}

// embedding (table, ids, dim, out) and its backward (ids, dy, dim, dtable): each id picks a row
// of `dim` values of the table; the other array holds a row per id
struct EmbeddingArgs {
  float* table;
  int32_t* ids;
  float* per_id;
  int64_t count, dim;
};

bool embedding_args(Call& c, const Field& table, const Field& ids, const Field& per_id, EmbeddingArgs& e) {
  int64_t nt, np;
  if (!(c.f32(table, e.table, nt) && c.i32(ids, e.ids, e.count) && c.f32(per_id, e.per_id, np) &&
        c.count(c.arg(2, "dim"), e.dim, 1)))
    return false;
  char msg[160];
  if (np < e.count * e.dim) {
    std::snprintf(msg, sizeof msg, "%s has %lld values, needs %lld", per_id.name, (long long)np, (long long)(e.count * e.dim));
    return c.fail(msg);
  }
  for (int64_t i = 0; i < e.count; i++)
    if (e.ids[i] < 0 || e.ids[i] >= nt / e.dim) {
      std::snprintf(msg, sizeof msg, "id %d at index %lld is outside [0, %lld)", e.ids[i], (long long)i, (long long)(nt / e.dim));
      return c.fail(msg);
    }
  return true;
}

napi_value bind_embedding(Call& c) {
  EmbeddingArgs e;
  CHECK(embedding_args(c, c.arg(0, "table"), c.arg(1, "ids"), c.arg(3, "out"), e));
  c.kernels().embedding(c.pool(), e.table, e.ids, e.count, e.dim, e.per_id);
  return c.undefined();
}

napi_value bind_embedding_backward(Call& c) {
  EmbeddingArgs e;
  CHECK(embedding_args(c, c.arg(3, "dtable"), c.arg(0, "ids"), c.arg(1, "dy"), e));
  c.kernels().embedding_backward(c.pool(), e.ids, e.count, e.per_id, e.dim, e.table);
  return c.undefined();
}

napi_value bind_cross_entropy(Call& c) {
  // (logits, targets, vocab, ignoreIndex, dlogits) -> mean loss
  float *logits, *dlogits;
  int32_t* targets;
  int64_t nl, nt, vocab, nd;
  double ignore;
  CHECK(c.f32(c.arg(0, "logits"), logits, nl) && c.i32(c.arg(1, "targets"), targets, nt) &&
        c.count(c.arg(2, "vocab"), vocab, 1) && c.num(c.arg(3, "ignoreIndex"), ignore) &&
        c.f32(c.arg(4, "dlogits"), dlogits, nd, true));
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
  const int32_t effective = ignorable ? ign : -1;
  if (dlogits)
    for (int64_t i = nt * vocab; i < nd; i++) dlogits[i] = 0.f;
  return c.number(c.kernels().cross_entropy(c.pool(), logits, targets, nt, vocab, effective, dlogits));
}

napi_value bind_adamw(Call& c) {
  // (param, grad, expAvg, expAvgSq, {decay, beta1, beta2, stepSize, biasCorrection2Sqrt, eps})
  float *p, *g, *m, *v;
  int64_t np, ng, nm, nv;
  napi_value h;
  double decay, beta1, beta2, step_size, bias2_sqrt, eps;
  CHECK(c.f32(c.arg(0, "param"), p, np) && c.f32(c.arg(1, "grad"), g, ng) && c.f32(c.arg(2, "expAvg"), m, nm) &&
        c.f32(c.arg(3, "expAvgSq"), v, nv) && c.object(c.arg(4, "step"), h));
  CHECK(c.num(c.prop(h, "decay"), decay) && c.num(c.prop(h, "beta1"), beta1) && c.num(c.prop(h, "beta2"), beta2) &&
        c.num(c.prop(h, "stepSize"), step_size) && c.num(c.prop(h, "biasCorrection2Sqrt"), bias2_sqrt) &&
        c.num(c.prop(h, "eps"), eps));
  CHECK(c.need(ng == np && nm == np, "param has %lld values, grad %lld, expAvg %lld", np, ng, nm));
  CHECK(c.need(nv == np, "param has %lld values, expAvgSq %lld", np, nv));
  c.kernels().adamw(c.pool(), p, g, m, v, np, decay, beta1, beta2, step_size, bias2_sqrt, eps);
  return c.undefined();
}

napi_value bind_sum_squares(Call& c) {
  float* x;
  int64_t n;
  CHECK(c.f32(c.arg(0, "x"), x, n));
  return c.number(c.kernels().sum_squares(c.pool(), x, n));
}

napi_value bind_argmax_finite(Call& c) {
  float* x;
  int64_t n;
  CHECK(c.f32(c.arg(0, "x"), x, n));
  return c.number(double(c.kernels().argmax_finite(c.pool(), x, n)));
}

napi_value bind_dropout(Call& c) {
  // (state, p, x, out)
  double state, p;
  float *x, *out;
  int64_t nx, n;
  CHECK(c.num(c.arg(0, "state"), state) && c.num(c.arg(1, "p"), p) && c.f32(c.arg(2, "x"), x, nx) &&
        c.f32(c.arg(3, "out"), out, n));
  CHECK(c.need(nx >= n, "x has %lld values for an output of %lld", nx, n));
  CHECK(c.need(state >= 0 && state < 4294967296.0 && std::floor(state) == state, "state must be a 32-bit unsigned integer"));
  CHECK(c.need(p >= 0 && p < 1, "p must be in [0, 1)"));
  c.kernels().dropout(c.pool(), uint32_t(state), p, x, out, n);
  return c.undefined();
}

napi_value bind_zero(Call& c) {
  float* x;
  int64_t n;
  CHECK(c.f32(c.arg(0, "x"), x, n));
  c.kernels().zero(c.pool(), x, n);
  return c.undefined();
}

napi_value bind_read_sum(Call& c) {
  // (x, reps) -> GB/s of reading x reps times with every pool thread
  float* x;
  int64_t n, reps;
  CHECK(c.f32(c.arg(0, "x"), x, n) && c.count(c.arg(1, "reps"), reps, 1));
  auto t0 = std::chrono::steady_clock::now();
  double sum = c.kernels().read_sum(c.pool(), x, n, int(reps));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  (void)sum;  // the checksum comes back through a function pointer, so the reads happen
  return c.number(double(n) * 4.0 * double(reps) / secs / 1e9);
}

napi_value bind_quantize(Call& c) {
  // (x, format, rows, cols, out[, source]): x [rows, cols] packed into out in a packed format; x is a
  // Float32Array, or a Uint16Array of the raw values of `source` ("bf16" or "f16")
  static constexpr const char* kSources[] = {"bf16", "f16"};
  napi_typedarray_type xtype;
  size_t nx = 0;
  void* x = nullptr;
  uint8_t* out;
  int64_t rows, cols, nout;
  int fmt, src = SRC_F32;
  if (napi_get_typedarray_info(c.env, c.arg(0, "x").v, &xtype, &nx, &x, nullptr, nullptr) != napi_ok ||
      (xtype != napi_float32_array && xtype != napi_uint16_array)) {
    CHECK(c.fail("x must be a Float32Array or a Uint16Array", false));
  }
  if (xtype == napi_uint16_array) {
    int s;
    CHECK(c.choice(c.arg(5, "source"), kSources, s));
    src = s == 0 ? SRC_BF16 : SRC_F16;
  }
  CHECK(c.choice(c.arg(1, "format"), kFmtNames, fmt) && c.count(c.arg(2, "rows"), rows) &&
        c.count(c.arg(3, "cols"), cols) && c.typed(c.arg(4, "out"), napi_uint8_array, out, nout));
  const int64_t block = kFmtBlock[fmt];
  CHECK(c.need(cols % block == 0, "a q format needs a column count that is a multiple of %lld, got %lld", block, cols));
  CHECK(c.need(Call::mul_ok(rows, cols), "sizes too large"));
  CHECK(c.need(int64_t(nx) >= rows * cols, "x has %lld values, needs %lld", int64_t(nx), rows * cols));
  CHECK(c.need(nout >= rows * (cols / block) * kFmtBlockBytes[fmt], "out has %lld bytes, needs %lld", nout,
               rows * (cols / block) * kFmtBlockBytes[fmt]));
  quantize_rows(c.pool(), c.kernels().name, fmt, src, x, rows, cols, out);
  return c.undefined();
}

napi_value bind_interleave(Call& c) {
  // (data, format, rows, cols): q8_0 / q4_0 rows in row order -> the interleaved layout (kernels.h), in place
  uint8_t* data;
  int64_t nd, rows, cols;
  int fmt;
  CHECK(c.typed(c.arg(0, "data"), napi_uint8_array, data, nd) && c.choice(c.arg(1, "format"), kFmtNames, fmt) &&
        c.count(c.arg(2, "rows"), rows) && c.count(c.arg(3, "cols"), cols));
  CHECK(c.need(interleavable(fmt), "only q8_0 and q4_0 weights can be interleaved"));
  CHECK(c.need(cols % 32 == 0, "a q format needs a column count that is a multiple of 32, got %lld", cols));
  CHECK(c.need(Call::mul_ok(rows, cols), "sizes too large"));
  const int64_t bytes = rows * (cols / 32) * kFmtBlockBytes[fmt];
  CHECK(c.need(nd >= bytes, "data has %lld bytes, needs %lld", nd, bytes));
  interleave(c.pool(), fmt, data, rows, cols);
  return c.undefined();
}

// ---- the process-wide settings ----

constexpr int64_t kMaxThreads = 1024;

// one thread per hardware thread the OS reports
int default_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : int(n);
}

const KernelTable* find_kernels(const char* name) {
  for (const KernelTable* const* t = available_kernels(); *t; t++)
    if (std::strcmp((*t)->name, name) == 0) return *t;
  return nullptr;
}

napi_value bind_settings(Call& c) {
  // () -> {threads, isa, isas, bf16DotSupported}
  napi_value obj, v, isas;
  napi_create_object(c.env, &obj);
  napi_set_named_property(c.env, obj, "threads", c.number(pool_size(c.pool())));
  napi_create_string_utf8(c.env, c.kernels().name, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(c.env, obj, "isa", v);
  napi_create_array(c.env, &isas);
  uint32_t i = 0;
  for (const KernelTable* const* t = available_kernels(); *t; t++, i++) {
    napi_create_string_utf8(c.env, (*t)->name, NAPI_AUTO_LENGTH, &v);
    napi_set_element(c.env, isas, i, v);
  }
  napi_set_named_property(c.env, obj, "isas", isas);
  napi_get_boolean(c.env, c.kernels().packed_matmul_bf16dot != nullptr, &v);
  napi_set_named_property(c.env, obj, "bf16DotSupported", v);
  return obj;
}

napi_value bind_configure(Call& c) {
  // ({threads?, isa?}) -> settings; checks both before changing either
  napi_value p;
  CHECK(c.object(c.arg(0, "settings"), p));
  const Field threads = c.prop(p, "threads"), isa = c.prop(p, "isa");
  int64_t n = 0;
  const KernelTable* kernels = c.state->kernels;
  if (!c.is_null(threads)) {
    CHECK(c.count(threads, n, 1));
    CHECK(c.need(n <= kMaxThreads, "threads must be at most %lld, got %lld", kMaxThreads, n));
  }
  if (!c.is_null(isa)) {
    char name[32];
    CHECK(c.string(isa, name, sizeof name));
    kernels = find_kernels(name);
    if (!kernels) {
      char msg[96];
      std::snprintf(msg, sizeof msg, "kernel variant \"%s\" is not available on this CPU", name);
      c.fail(msg);
      return nullptr;
    }
  }
  if (n > 0 && n != pool_size(c.pool())) {
    pool_destroy(c.state->pool);
    c.state->pool = pool_create(int(n));
  }
  c.state->kernels = kernels;
  return bind_settings(c);
}

#define LLAVA_BINDING(name, js, ...) {#js, bind_##name},
const Binding kBindings[] = {
    LLAVA_KERNELS(LLAVA_BINDING, LLAVA_KERNEL_IGNORE)  // the kernels
    {"settings", bind_settings},
    {"configure", bind_configure},
    {"quantize", bind_quantize},
    {"interleave", bind_interleave},
};

napi_value enter(napi_env env, napi_callback_info info) {
  Call c(env, info);
  return c.binding->run(c);
}

void finalize_state(napi_env, void* data, void*) {
  State* s = static_cast<State*>(data);
  pool_destroy(s->pool);
  delete s;
}

// Tensors' arrays are V8 array buffers from malloc, of up to tens of MB, made and freed by the
// hundred each training step. glibc's adaptive thresholds hand many freed ones back to the kernel
// (munmap, heap trim), and the next step's arrays fault every page back in, zeroed by the kernel
// (about 1.2 us a 4 KiB page on the VM measured). Fixed thresholds keep up to 1 GiB of freed
// memory in the heap for reuse: a LoRA step (bench-small, one thread) 998 -> 980 ms.
void keep_freed_arrays() {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

napi_value Init(napi_env env, napi_value exports) {
  keep_freed_arrays();  // per environment that loads the addon: the same settings each time
  State* state = new State();
  state->kernels = available_kernels()[0];
  state->pool = pool_create(default_threads());
  napi_set_instance_data(env, state, finalize_state, nullptr);
  for (const Binding& b : kBindings) {
    napi_value fn;
    napi_create_function(env, b.name, NAPI_AUTO_LENGTH, enter, const_cast<Binding*>(&b), &fn);
    napi_set_named_property(env, exports, b.name, fn);
  }
  return exports;
}

}  // namespace

NAPI_MODULE_INIT() { return Init(env, exports); }
