// One complete kernel variant: include after defining LLAVA_VARIANT (its namespace). Everything
// but its fill function has internal linkage, so variants compiled with different target flags
// never share (and never swap) a function.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "../kernels.h"

namespace llava {
namespace LLAVA_VARIANT {
namespace {

#include "simd.h"
#include "exec.h"
#include "packed.h"
#include "gemm.h"
#include "qdot.h"
#include "kqdot.h"
#include "attention.h"
#include "elementwise.h"
#include "norms.h"
#include "misc.h"
#include "optimizer.h"

}  // namespace

LLAVA_KERNELS(LLAVA_KERNEL_REQUIRE_K, LLAVA_KERNEL_IGNORE)
LLAVA_DEFINE_FILL

}  // namespace LLAVA_VARIANT
}  // namespace llava
