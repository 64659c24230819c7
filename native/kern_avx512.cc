// The avx512 kernel variant (target flags come from binding.gyp).
#define LLAVA_VARIANT v_avx512
#include "impl/variant.h"

// The integer-activation products (impl/qdot.h) again with AVX512-VNNI dot products (vpdpbusd),
// for the "avx512vnni" table that dispatch.cc offers where the CPU has them. Same results.
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC push_options
#pragma GCC target("avx512vnni")
#define LLAVA_VNNI 1
namespace llava {
namespace v_avx512vnni {
namespace {
#include "impl/simd.h"
#include "impl/exec.h"
#include "impl/packed.h"
#include "impl/qdot.h"
#include "impl/kqdot.h"
}  // namespace

LLAVA_DEFINE_FILL  // packed_matmul_qdot and packed_matmul_kqdot only

}  // namespace v_avx512vnni
}  // namespace llava
#pragma GCC pop_options
