// A persistent thread pool: workers are created once and wait for jobs; the calling thread
// takes part as thread 0. Tasks are handed out through an atomic counter, so fast threads take
// more of them; what a task computes never depends on which thread runs it.
//
// A job is guarded by a gate word: its generation, an open bit and the count of workers inside.
// A worker joins only while the gate is open for that generation and leaves by decrementing the
// count. Once the caller has found no task left it closes the gate and waits only for the
// workers inside, so a worker that is descheduled or asleep never holds up a job it did not
// join; arriving late, it sees the gate closed (or a newer generation) and skips the job, and
// so never reads the fields of a job it is not counted in.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void cpu_relax() { _mm_pause(); }
#elif defined(__aarch64__)
static inline void cpu_relax() { asm volatile("yield"); }
#else
static inline void cpu_relax() {}
#endif

namespace llava {

namespace {
struct Scratch {
  void* ptr = nullptr;
  size_t bytes = 0;
};
// How long an idle worker spins before sleeping: long enough to catch the next kernel of a
// model's layer, short enough not to burn a shared core.
constexpr auto kSpin = std::chrono::microseconds(200);
}  // namespace

struct Pool {
  int size = 1;
  std::vector<std::thread> workers;
  std::vector<Scratch> scratch;  // size * kScratchSlots

  std::mutex mu;
  std::condition_variable wake;
  std::atomic<uint64_t> gate{0};  // generation << kGenShift | open bit | workers inside
  std::atomic<bool> stop{false};
  std::atomic<int> sleepers{0};

  // the current job: written by pool_run only while the gate is closed and nobody is inside
  TaskFn fn = nullptr;
  void* ctx = nullptr;
  int64_t ntasks = 0;
  int64_t grab = 1;  // consecutive tasks a thread takes at once (kRuns)
  Schedule schedule = kRuns;
  std::atomic<int64_t> next{0};
};

namespace {
constexpr int kGenShift = 17;
constexpr uint64_t kOpen = uint64_t(1) << 16;
constexpr uint64_t kInside = kOpen - 1;  // room for 65535 workers
inline uint64_t gate_gen(uint64_t g) { return g >> kGenShift; }
}  // namespace

static void run_tasks(Pool* p, int tid) {
  if (p->schedule == kStream) {
    // Measured (2 threads, weights from memory, 8 rows of q4_0 1024 x 1024 / 2816 x 1024 and
    // q8_0 2816 x 1024): 28 / 68 / 130 us with kRuns, 25 / 60 / 112 with this; whole runs of
    // ntasks / threads did as well but stall on a late thread; kStream for the vision
    // tower's GEMM tasks made an encode 25-55% slower.
    int64_t t0 = p->next.load(std::memory_order_relaxed);
    while (t0 < p->ntasks) {
      const int64_t share = (p->ntasks - t0) / p->size, g = share > 1 ? share : 1;
      if (!p->next.compare_exchange_weak(t0, t0 + g, std::memory_order_relaxed)) continue;  // t0 reloaded
      for (int64_t t = t0; t < t0 + g; t++) p->fn(p->ctx, t, tid);
      t0 = p->next.load(std::memory_order_relaxed);
    }
    return;
  }
  for (;;) {
    const int64_t t0 = p->next.fetch_add(p->grab, std::memory_order_relaxed);
    if (t0 >= p->ntasks) break;
    for (int64_t t = t0; t < t0 + p->grab && t < p->ntasks; t++) p->fn(p->ctx, t, tid);
  }
}

static void worker_main(Pool* p, int tid) {
  uint64_t seen = 0;  // the last generation this worker joined or skipped
  for (;;) {
    // wait for a new generation: spin a little, then sleep
    auto start = std::chrono::steady_clock::now();
    int spins = 0;
    uint64_t g;
    while (gate_gen(g = p->gate.load(std::memory_order_acquire)) == seen && !p->stop.load(std::memory_order_relaxed)) {
      cpu_relax();
      if (++spins % 256 == 0 && std::chrono::steady_clock::now() - start > kSpin) {
        std::unique_lock<std::mutex> lock(p->mu);
        p->sleepers.fetch_add(1);
        p->wake.wait(lock, [&] { return gate_gen(p->gate.load(std::memory_order_acquire)) != seen || p->stop.load(); });
        p->sleepers.fetch_sub(1);
      }
    }
    if (p->stop.load()) return;
    // join while the gate is open for this generation; a failed CAS reloads g and retries
    // (another worker joined) or gives up (closed, or already a newer generation)
    seen = gate_gen(g);
    bool joined = false;
    while ((g & kOpen) && gate_gen(g) == seen) {
      if (p->gate.compare_exchange_weak(g, g + 1, std::memory_order_acquire, std::memory_order_acquire)) {
        joined = true;
        break;
      }
    }
    if (!joined) continue;  // a newer generation, if any, is seen by the wait loop above
    run_tasks(p, tid);
    p->gate.fetch_sub(1, std::memory_order_release);
  }
}

Pool* pool_create(int threads) {
  Pool* p = new Pool();
  p->size = threads < 1 ? 1 : threads;
  p->scratch.resize(size_t(p->size) * kScratchSlots);
  for (int t = 1; t < p->size; t++) p->workers.emplace_back(worker_main, p, t);
  return p;
}

void pool_destroy(Pool* p) {
  if (!p) return;
  {
    std::lock_guard<std::mutex> lock(p->mu);
    p->stop.store(true);
  }
  p->wake.notify_all();
  for (auto& w : p->workers) w.join();
  for (auto& s : p->scratch) std::free(s.ptr);
  delete p;
}

int pool_size(const Pool* p) { return p ? p->size : 1; }

void pool_run(Pool* p, int64_t ntasks, TaskFn fn, void* ctx, Schedule schedule) {
  if (!p || p->size == 1 || ntasks <= 1) {
    for (int64_t t = 0; t < ntasks; t++) fn(ctx, t, 0);
    return;
  }
  // the gate is closed and empty here (the previous pool_run left it so): no worker reads these
  p->fn = fn;
  p->ctx = ctx;
  p->ntasks = ntasks;
  p->schedule = schedule;
  // Threads take runs of consecutive tasks, about 8 a thread: one task a grab made the shared
  // counter's cache line change cores every task (2 vCPUs, 176 tasks of 0.3 us: a 2816 x 1024
  // q4_0 product 150-170 us at 2 threads against 55-75 at 1), and a kernel that prefetches the
  // data of its next task now prefetches its own.
  p->grab = ntasks / (8 * p->size) > 1 ? ntasks / (8 * p->size) : 1;
  p->next.store(0, std::memory_order_relaxed);
  uint64_t gen = gate_gen(p->gate.load(std::memory_order_relaxed)) + 1;
  {
    // publishing under the mutex means a worker about to sleep cannot miss the new generation
    std::lock_guard<std::mutex> lock(p->mu);
    p->gate.store(gen << kGenShift | kOpen, std::memory_order_release);
  }
  if (p->sleepers.load() > 0) p->wake.notify_all();
  run_tasks(p, 0);
  // every task is handed out: close the gate and wait for the workers inside to finish theirs
  uint64_t g = p->gate.fetch_and(~kOpen, std::memory_order_acq_rel);
  int spins = 0;
  while ((g & kInside) != 0) {
    cpu_relax();
    // a descheduled worker (2 vCPUs shared with other processes) needs the core back
    if (++spins > 4096) std::this_thread::yield();
    g = p->gate.load(std::memory_order_acquire);
  }
}

void* pool_scratch(Pool* p, int tid, int slot, size_t bytes) {
  Scratch& s = p->scratch[size_t(tid) * kScratchSlots + slot];
  if (s.bytes < bytes) {
    std::free(s.ptr);
    size_t rounded = (bytes + 4095) & ~size_t(4095);
    s.ptr = std::aligned_alloc(64, rounded);
    if (!s.ptr) {
      std::fprintf(stderr, "llava native backend: out of memory allocating %zu bytes of scratch\n", rounded);
      std::abort();
    }
    s.bytes = rounded;
  }
  return s.ptr;
}

}  // namespace llava
