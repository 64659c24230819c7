// Running tasks: on the pool for a top-level kernel, inline when called from inside a task
// (kernels never nest parallel regions). Tasks are cut by problem size only, never by the
// thread count, so results do not depend on how many threads run them.

// SLOT_KT, SLOT_VT, SLOT_KN: a prompt attention backward task's key and value panels, kept
// across the products (matmul) that use SLOT_A, SLOT_B and SLOT_T
enum Slot : int { SLOT_A = 0, SLOT_B = 1, SLOT_T = 2, SLOT_S = 3, SLOT_P = 4, SLOT_MISC = 5, SLOT_PARTIAL = 6, SLOT_KT = 7, SLOT_VT = 8, SLOT_KN = 9 };

struct Exec {
  Pool* pool;
  int tid;
  bool par;
};

template <class F>
static void trampoline(void* ctx, int64_t task, int tid) {
  (*static_cast<const F*>(ctx))(task, tid);
}

template <class F>
static void run(const Exec& ex, int64_t ntasks, const F& f, Schedule schedule = kRuns) {
  if (!ex.par || ntasks <= 1 || pool_size(ex.pool) == 1) {
    for (int64_t t = 0; t < ntasks; t++) f(t, ex.tid);
    return;
  }
  pool_run(ex.pool, ntasks, &trampoline<F>, const_cast<void*>(static_cast<const void*>(&f)), schedule);
}

template <class T>
static T* scratch(const Exec& ex, int tid, Slot slot, int64_t count) {
  return static_cast<T*>(pool_scratch(ex.pool, tid, slot, size_t(count > 0 ? count : 1) * sizeof(T)));
}

// Elementwise work is cut into chunks of this many elements; smaller arrays run inline.
constexpr int64_t kChunk = 1 << 15;
constexpr int64_t kParallelMin = 1 << 16;

static inline Exec top(Pool* pool, int64_t work) { return Exec{pool, 0, work >= kParallelMin}; }

// Calls f(begin, end, tid) over [0, n) in chunks of `chunk` (a multiple of W for vector loops).
template <class F>
static void chunked(const Exec& ex, int64_t n, int64_t chunk, const F& f) {
  int64_t tasks = ceil_div(n, chunk);
  run(ex, tasks, [&](int64_t t, int tid) { f(t * chunk, imin(n, (t + 1) * chunk), tid); });
}
