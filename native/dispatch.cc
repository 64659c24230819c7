// Picks the kernel variants this CPU can run, at run time, so one binary serves any x86-64.
#include "kernels.h"

namespace llava {

namespace {
struct Registry {
  KernelTable tables[3] = {};
  const KernelTable* list[4] = {};
  Registry() {
    int n = 0;
#if defined(LLAVA_X86)
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl")) {
      fill_avx512(tables[n]);
      if (__builtin_cpu_supports("avx512bf16")) fill_avx512bf16(tables[n]);
      tables[n].name = "avx512";
      list[n] = &tables[n];
      n++;
    }
    if (avx2) {
      fill_avx2(tables[n]);
      tables[n].name = "avx2";
      list[n] = &tables[n];
      n++;
    }
#endif
    fill_portable(tables[n]);
    tables[n].name = "portable";
    list[n] = &tables[n];
  }
};
}  // namespace

const KernelTable* const* available_kernels() {
  static const Registry registry;
  return registry.list;
}

}  // namespace llava
