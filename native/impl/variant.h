// One kernel variant: include after defining LLAVA_VARIANT (namespace name) and LLAVA_FILL
// (the exported fill function). Everything else has internal linkage, so variants compiled
// with different target flags never share (and never swap) a function.
#include <cmath>
#include <cstdint>
#include <cstring>
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
#include "attention.h"
#include "elementwise.h"
#include "norms.h"
#include "misc.h"

}  // namespace
}  // namespace LLAVA_VARIANT

void LLAVA_FILL(KernelTable& t) {
  using namespace LLAVA_VARIANT;
  t.gemm = k_gemm;
  t.packed_matmul = k_packed_matmul;
  t.packed_matmul_qdot = k_packed_matmul_qdot;
  t.add = k_add;
  t.add_broadcast = k_add_broadcast;
  t.mul = k_mul;
  t.scale = k_scale;
  t.accumulate = k_accumulate;
  t.sum_rows = k_sum_rows;
  t.activation = k_activation;
  t.activation_backward = k_activation_backward;
  t.layer_norm = k_layer_norm;
  t.layer_norm_backward = k_layer_norm_backward;
  t.rms_norm = k_rms_norm;
  t.rms_norm_backward = k_rms_norm_backward;
  t.rope = k_rope;
  t.attention = k_attention;
  t.attention_backward = k_attention_backward;
  t.embedding = k_embedding;
  t.embedding_backward = k_embedding_backward;
  t.cross_entropy = k_cross_entropy;
  t.read_sum = k_read_sum;
}

}  // namespace llava
