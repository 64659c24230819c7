// The contract between the N-API layer (addon.cc), the thread pool (pool.cc) and the kernel
// variants. Each variant (AVX-512, AVX2, portable) is the same source (impl/*.h) compiled with
// different target flags into its own namespace; only its fill function is visible outside.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernel_list.h"

namespace llava {

// ---- thread pool (pool.cc, compiled for the baseline ISA) ----
struct Pool;
typedef void (*TaskFn)(void* ctx, int64_t task, int tid);
Pool* pool_create(int threads);
void pool_destroy(Pool* pool);
int pool_size(const Pool* pool);
// How threads take tasks: kRuns, runs of about ntasks / (8 · threads) consecutive tasks;
// kStream, for tasks that each stream a slice of one large array from memory in task order:
// each grab takes 1 / threads of the tasks left, so a thread reads long contiguous stretches
// and the later, shorter grabs balance the threads.
enum Schedule : int { kRuns = 0, kStream = 1 };
// Runs fn(ctx, t, tid) for every t in [0, ntasks) on the pool (the caller is thread 0) and
// returns when all are done. Which thread runs a task never changes what the task computes.
void pool_run(Pool* pool, int64_t ntasks, TaskFn fn, void* ctx, Schedule schedule = kRuns);
// Per-thread reusable buffer (64-byte aligned, contents undefined), grown on demand.
void* pool_scratch(Pool* pool, int tid, int slot, size_t bytes);
constexpr int kScratchSlots = 10;

// ---- kernel parameters ----
enum Act : int { ACT_GELU = 0, ACT_QUICK_GELU = 1, ACT_SILU = 2, ACT_GELU_TANH = 3, ACT_RELU = 4 };
enum Fmt : int {
  FMT_BF16 = 0, FMT_F16 = 1, FMT_Q8_0 = 2, FMT_Q4_0 = 3,
  // llama.cpp's other block formats, decoded to f32 for the products (impl/packed.h)
  FMT_Q4_1 = 4, FMT_Q5_0 = 5, FMT_Q5_1 = 6, FMT_Q4_K = 7, FMT_Q5_K = 8, FMT_Q6_K = 9
};
// their names in JavaScript (Activation in backend.ts, PackedFormat in packed.ts), by code
constexpr const char* kActNames[] = {"gelu", "quick_gelu", "silu", "gelu_tanh", "relu"};
constexpr const char* kFmtNames[] = {"bf16", "f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"};
// weights per block and bytes per block, by code (the 16-bit formats: one weight of 2 bytes)
constexpr int kFmtBlock[] = {1, 1, 32, 32, 32, 32, 32, 256, 256, 256};
constexpr int kFmtBlockBytes[] = {2, 2, 34, 18, 20, 22, 24, 144, 176, 210};

struct PackedW {
  int fmt;
  int64_t rows, cols, row_bytes;
  const uint8_t* data;
  bool interleaved = false;  // q8_0 / q4_0: the layout below
};

// Interleaved q8_0 / q4_0 (made at load by `interleave` for NativeBackend.kernelLayout): each whole
// panel of 16 rows keeps its 16 row_bytes but orders them by block: for block b, the 16 rows'
// f16 scales (32 bytes), then for each 4 bytes u of a row's quants (q4_0: 4, q8_0: 8) those 4
// bytes of the 16 rows (64 bytes, [u][row][4]). The integer kernels then load a block's 16 rows
// as vectors of 4-byte groups and its 16 scales with no transposes or gathers. Rows after the
// last whole panel stay in row order.
constexpr int kIlvRows = 16;
inline bool interleavable(int fmt) { return fmt == FMT_Q8_0 || fmt == FMT_Q4_0; }
inline int64_t ilv_block_bytes(int fmt) { return kIlvRows * kFmtBlockBytes[fmt]; }

// Rows of w in whole interleaved panels: rows [0, ilv_rows(w)) are interleaved, the rest in row order.
inline int64_t ilv_rows(const PackedW& w) { return w.interleaved ? w.rows / kIlvRows * kIlvRows : 0; }
// The first byte of the panel holding row j: a panel starts where its first row does in row order.
inline const uint8_t* ilv_panel(const PackedW& w, int64_t j) { return w.data + j / kIlvRows * kIlvRows * w.row_bytes; }

// Blocks [b0, b1) of the 16 rows of a panel: row order (rows, row r at rows + r·row_bytes) ->
// interleaved (panel) when kToPanel, else back; FMT is a compile-time format so every copy is a
// fixed-size move.
template <int FMT, bool kToPanel>
inline void ilv_copy_blocks(std::conditional_t<kToPanel, uint8_t*, const uint8_t*> panel, int64_t b0, int64_t b1,
                            std::conditional_t<kToPanel, const uint8_t*, uint8_t*> rows, int64_t row_bytes) {
  constexpr int64_t bb = kFmtBlockBytes[FMT];
  const auto copy = [&](int64_t at_panel, int64_t at_rows, size_t n) {
    if constexpr (kToPanel) std::memcpy(panel + at_panel, rows + at_rows, n);
    else std::memcpy(rows + at_rows, panel + at_panel, n);
  };
  for (int64_t b = b0; b < b1; b++)
    for (int r = 0; r < kIlvRows; r++) {
      const int64_t o = b * kIlvRows * bb, blk = r * row_bytes + b * bb;
      copy(o + 2 * r, blk, 2);
      for (int u = 0; u < (bb - 2) / 4; u++) copy(o + 32 + 64 * u + 4 * r, blk + 2 + 4 * u, 4);
    }
}
// the same for a format known at run time (q8_0 or q4_0)
template <bool kToPanel>
inline void ilv_copy_blocks(int fmt, std::conditional_t<kToPanel, uint8_t*, const uint8_t*> panel, int64_t b0, int64_t b1,
                            std::conditional_t<kToPanel, const uint8_t*, uint8_t*> rows, int64_t row_bytes) {
  if (fmt == FMT_Q8_0) ilv_copy_blocks<FMT_Q8_0, kToPanel>(panel, b0, b1, rows, row_bytes);
  else ilv_copy_blocks<FMT_Q4_0, kToPanel>(panel, b0, b1, rows, row_bytes);
}

struct AttnShape {
  int64_t batch, tq, tk, heads, kv_heads, head_dim, kv_stride;
  float scale;
  bool causal;
  int64_t causal_offset;
  // causal only: keys more than `window - 1` positions before the query are masked (0 = none)
  int64_t window;
};

// The kernel table: one slot per kernel of kernel_list.h.
struct KernelTable {
  const char* name;
  LLAVA_KERNELS(LLAVA_KERNEL_FIELD_K, LLAVA_KERNEL_FIELD)
};

// What a variant's fill finds for a kernel it does not define (kernel_list.h).
struct Absent {};
LLAVA_KERNELS(LLAVA_KERNEL_ABSENT_K, LLAVA_KERNEL_ABSENT)
template <class F>
inline void set_slot(F& slot, F fn) {
  slot = fn;
}
template <class F>
inline void set_slot(F&, Absent) {}

// Each variant's fill (LLAVA_DEFINE_FILL), in the variant's namespace. The overlays fill only
// their own kernels into a table their base variant filled first (dispatch.cc).
namespace v_portable { void fill(KernelTable& t); }
#if defined(LLAVA_X86)
namespace v_avx2 { void fill(KernelTable& t); }
namespace v_avx512 { void fill(KernelTable& t); }
namespace v_avx512vnni { void fill(KernelTable& t); }  // overlay: VNNI integer products (kern_avx512.cc)
namespace v_avx512bf16 { void fill(KernelTable& t); }  // overlay: bf16 dot products
#endif

// Rows [rows, cols] of f32, bf16 or f16 (SRC_*) to a packed format: the q formats with
// llama.cpp's reference rounding (quantize.cc, compiled without fused multiply-adds), bf16 and
// f16 rounded to nearest even; q8_0, q4_0 and the 16-bit formats take the vector code of the
// kernel variant named `isa`, with the same bytes.
enum Src : int { SRC_F32 = 0, SRC_BF16 = 1, SRC_F16 = 2 };
void quantize_rows(Pool* pool, const char* isa, int fmt, int src, const void* x, int64_t rows, int64_t cols, uint8_t* out);
// q8_0 / q4_0 rows [rows, cols] in row order -> the interleaved layout, in place, panels shared out over the pool
void interleave(Pool* pool, int fmt, uint8_t* data, int64_t rows, int64_t cols);

// Kernel variants this CPU can run, best first (dispatch.cc). Null-terminated.
const KernelTable* const* available_kernels();

}  // namespace llava
