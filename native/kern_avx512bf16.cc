// Opt-in bf16 x bf16 products for bf16-packed weights (AVX512-BF16, `vdpbf16ps`): the f32
// activations are rounded to bf16 once per call (round to nearest even), then pairs along k are
// multiplied exactly and summed in f32 (the instruction flushes denormals). Twice the
// throughput of the exact f32 path, at the precision of bf16 activations (relative error up to
// 2^-9 per activation), so it is off unless asked for.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#include <immintrin.h>

#include "kernels.h"

// the shared headers define kernels this file does not use
#pragma GCC diagnostic ignored "-Wunused-function"

namespace llava {
namespace v_avx512bf16 {
// a named namespace, so that the fill below sees only k_packed_matmul_bf16dot, not the shared
// headers' kernels
namespace impl {
namespace {

#include "impl/simd.h"
#include "impl/exec.h"
#include "impl/packed.h"
#include "impl/gemm.h"

// MR x NR tile over kc pairs: A panel holds pairs (a[2p], a[2p+1]) per row, B panel pairs per column.
static void micro_kernel_bf16(int64_t kc, const float* __restrict A, const float* __restrict B, float* C, int64_t ldc, int mr,
                              int nr, bool add) {
  vf c0[MR], c1[MR];
  tile_begin(c0, c1, C, ldc);
  for (int64_t p = 0; p < kc; p++) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_ps(B), b1 = (__m512bh)_mm512_loadu_ps(B + W);
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
      const __m512bh a = (__m512bh)_mm512_set1_ps(A[r]);
      c0[r] = (vf)_mm512_dpbf16_ps((__m512)c0[r], a, b0);
      c1[r] = (vf)_mm512_dpbf16_ps((__m512)c1[r], a, b1);
    }
    A += MR;
    B += NR;
  }
  store_tile(c0, c1, C, ldc, mr, nr, add);
}

// rows of f32 activations -> bf16 pairs (as 32-bit units), round to nearest even
static void to_bf16_pairs(const float* a, int64_t m, int64_t k, uint32_t* out) {
  const int64_t kp = k / 2;
  for (int64_t i = 0; i < m; i++) {
    const float* src = a + i * k;
    uint32_t* dst = out + i * kp;
    int64_t p = 0;
    for (; p + 16 <= kp; p += 16) {
      const __m512 lo = _mm512_loadu_ps(src + 2 * p), hi = _mm512_loadu_ps(src + 2 * p + 16);
      _mm512_storeu_si512(dst + p, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    for (; p < kp; p++) {
      const __m512 two = _mm512_maskz_loadu_ps(0x3, src + 2 * p);
      const __m256bh h = _mm512_cvtneps_pbh(two);
      uint32_t pair;
      std::memcpy(&pair, &h, 4);
      dst[p] = pair;
    }
  }
}

// C[m, rows] (+)= bf16(A[m, cols]) · Wᵀ for a bf16 W with an even column count.
void bf16dot_matmul(Pool* pool, const float* a, const PackedW& w, float* c, int64_t m, bool acc) {
  const int64_t kp = w.cols / 2, n = w.rows;
  const Exec ex{pool, 0, true};
  uint32_t* apairs = scratch<uint32_t>(ex, 0, SLOT_PARTIAL, m * kp);
  to_bf16_pairs(a, m, w.cols, apairs);
  const ASrc A{reinterpret_cast<const float*>(apairs), kp, false};
  const BSrc B{reinterpret_cast<const float*>(w.data), kp, true, nullptr, false};
  gemm_blocked<micro_kernel_bf16>(ex, m, n, kp, A, B, c, n, acc);
}

}  // namespace
}  // namespace impl

constexpr auto k_packed_matmul_bf16dot = &impl::bf16dot_matmul;
LLAVA_DEFINE_FILL

}  // namespace v_avx512bf16
}  // namespace llava
