// The contract between the N-API layer (addon.cc), the thread pool (pool.cc) and the kernel
// variants. Each variant (AVX-512, AVX2, portable) is the same source (impl/*.h) compiled with
// different target flags into its own namespace; only its fill function is visible outside.
#pragma once
#include <cstddef>
#include <cstdint>

namespace llava {

// ---- thread pool (pool.cc, compiled for the baseline ISA) ----
struct Pool;
typedef void (*TaskFn)(void* ctx, int64_t task, int tid);
Pool* pool_create(int threads);
void pool_destroy(Pool* pool);
int pool_size(const Pool* pool);
// Runs fn(ctx, t, tid) for every t in [0, ntasks) on the pool (the caller is thread 0) and
// returns when all are done. Which thread runs a task never changes what the task computes.
void pool_run(Pool* pool, int64_t ntasks, TaskFn fn, void* ctx);
// Per-thread reusable buffer (64-byte aligned, contents undefined), grown on demand.
void* pool_scratch(Pool* pool, int tid, int slot, size_t bytes);
constexpr int kScratchSlots = 7;

// ---- kernel parameters ----
enum Act : int { ACT_GELU = 0, ACT_QUICK_GELU = 1, ACT_SILU = 2, ACT_GELU_TANH = 3, ACT_RELU = 4 };
enum Fmt : int { FMT_BF16 = 0, FMT_F16 = 1, FMT_Q8_0 = 2, FMT_Q4_0 = 3 };

struct PackedW {
  int fmt;
  int64_t rows, cols, row_bytes;
  const uint8_t* data;
};

struct AttnShape {
  int64_t batch, tq, tk, heads, kv_heads, head_dim, kv_stride;
  float scale;
  bool causal;
  int64_t causal_offset;
  // causal only: keys more than `window - 1` positions before the query are masked (0 = none)
  int64_t window;
};

struct KernelTable {
  const char* name;
  void (*gemm)(Pool*, int64_t m, int64_t n, int64_t k, const float* a, bool ta, const float* b, bool tb, float* c, bool acc);
  // exact: packed weights decoded to f32, f32 activations (impl/packed.h, impl/gemm.h)
  void (*packed_matmul)(Pool*, const float* a, const PackedW& w, float* c, int64_t m, bool transposed, bool acc);
  // q8_0/q4_0 forward with integer-quantized activations and integer block dot products (impl/qdot.h)
  void (*packed_matmul_qdot)(Pool*, const float* a, const PackedW& w, float* c, int64_t m, bool acc);
  void (*add)(Pool*, const float* x, const float* y, float* out, int64_t n);
  void (*add_broadcast)(Pool*, const float* x, const float* y, int64_t ny, float* out, int64_t n);
  void (*mul)(Pool*, const float* x, const float* y, float* out, int64_t n);
  void (*scale)(Pool*, const float* x, double s, float* out, int64_t n);
  void (*accumulate)(Pool*, float* y, const float* x, int64_t n);
  void (*sum_rows)(Pool*, const float* x, int64_t rows, int64_t len, float* out);
  void (*activation)(Pool*, int act, const float* x, float* out, int64_t n);
  void (*activation_backward)(Pool*, int act, const float* x, const float* dy, float* dx, int64_t n);
  void (*layer_norm)(Pool*, const float* x, const float* w, const float* b, int64_t rows, int64_t dim, double eps, float* out);
  void (*layer_norm_backward)(Pool*, const float* x, const float* w, const float* dy, int64_t rows, int64_t dim, double eps,
                              float* dx, float* dw, float* db);
  void (*rms_norm)(Pool*, const float* x, const float* w, int64_t rows, int64_t dim, double eps, float* out);
  void (*rms_norm_backward)(Pool*, const float* x, const float* w, const float* dy, int64_t rows, int64_t dim, double eps,
                            float* dx, float* dw);
  void (*rope)(Pool*, const float* x, const int32_t* pos, int64_t rows, int64_t heads, int64_t head_dim,
               const double* inv_freq, bool inverse, float* out);
  void (*attention)(Pool*, const float* q, const float* k, const float* v, float* out, const AttnShape& s);
  void (*attention_backward)(Pool*, const float* q, const float* k, const float* v, const float* dout,
                             float* dq, float* dk, float* dv, const AttnShape& s);
  void (*embedding)(Pool*, const float* table, const int32_t* ids, int64_t count, int64_t dim, float* out);
  void (*embedding_backward)(Pool*, const int32_t* ids, int64_t count, const float* dy, int64_t dim, float* dtable);
  double (*cross_entropy)(Pool*, const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                          int32_t ignore, float* dlogits);
  // Optional (null unless the CPU has AVX512-BF16): bf16 W, forward, activations rounded to bf16.
  void (*packed_matmul_bf16dot)(Pool*, const float* a, const PackedW& w, float* c, int64_t m, bool acc);
  // Reads x (n floats) `reps` times on every pool thread's share; returns a checksum.
  double (*read_sum)(Pool*, const float* x, int64_t n, int reps);
};

void fill_portable(KernelTable& t);
#if defined(LLAVA_X86)
void fill_avx2(KernelTable& t);
void fill_avx512(KernelTable& t);
void fill_avx512bf16(KernelTable& t);  // adds packed_matmul_bf16dot to an AVX-512 table
void fill_avx512vnni(KernelTable& t);  // replaces packed_matmul_qdot of an AVX-512 table (kern_avx512.cc)
#endif

// Kernel variants this CPU can run, best first (dispatch.cc). Null-terminated.
const KernelTable* const* available_kernels();

}  // namespace llava
