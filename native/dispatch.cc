// Picks the kernel variants this CPU can run, at run time, so one binary serves any x86-64.
#include "kernels.h"

namespace llava {

namespace {
struct Registry {
  KernelTable tables[4] = {};
  const KernelTable* list[5] = {};
  Registry() {
    int n = 0;
#if defined(LLAVA_X86)
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl")) {
      // with VNNI: the AVX-512 table with vpdpbusd integer products; the plain one stays selectable
      for (int pass = 0; pass < 2; pass++) {
        const bool vnni = pass == 0;
        if (vnni && !__builtin_cpu_supports("avx512vnni")) continue;
        v_avx512::fill(tables[n]);
        if (vnni) v_avx512vnni::fill(tables[n]);
        if (__builtin_cpu_supports("avx512bf16")) v_avx512bf16::fill(tables[n]);
        tables[n].name = vnni ? "avx512vnni" : "avx512";
        list[n] = &tables[n];
        n++;
      }
    }
    if (avx2) {
      v_avx2::fill(tables[n]);
      tables[n].name = "avx2";
      list[n] = &tables[n];
      n++;
    }
#endif
    v_portable::fill(tables[n]);
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
