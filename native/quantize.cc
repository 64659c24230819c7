// f32 rows to llama.cpp's block formats: quantize_row_*_ref of ggml-quants.c (the scale searches
// make_qkx2_quants and make_qx_quants included), rows shared out over the pool. Compiled on its
// own with -ffp-contract=off and no vector ISA flags, so every float operation is rounded as the
// C reference rounds it: the bytes equal those of the TypeScript encoders (src/tensor/
// quant-blocks.ts, packed.ts) and of llama.cpp.
#include <cmath>
#include <cstring>
#include <vector>
#if (defined(__x86_64__) || defined(__i386__)) && !defined(LLAVA_FORCE_GENERIC)
#include <immintrin.h>
#endif

#include "kernels.h"

namespace llava {
namespace {

constexpr float kGroupMaxEps = 1e-15f;

uint16_t to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000, abs = x & 0x7fffffff;
  if (abs > 0x7f800000) return uint16_t(sign | 0x7e00);
  if (abs >= 0x477ff000) return uint16_t(sign | 0x7c00);
  if (abs >= 0x38800000) {
    const uint32_t r = abs - 0x38000000;
    return uint16_t(sign | ((r + 0x0fff + ((r >> 13) & 1)) >> 13));
  }
  // subnormal half: round abs / 2^-24 to an integer, ties to even
  const uint32_t e = abs >> 23, shift = 126 - e;
  if (shift > 24) return uint16_t(sign);
  const uint32_t m = (abs & 0x7fffff) | 0x800000;
  const uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
  return uint16_t(sign | (q + (rem > half || (rem == half && (q & 1)))));
}
float from_half(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16, e = (h >> 10) & 31, m = h & 1023;
  float f;
  if (e == 0) {
    f = std::ldexp(float(m), -24);
    return sign ? -f : f;
  }
  uint32_t x = sign | (e == 31 ? 0x7f800000 | (m << 13) : ((e + 112) << 23) | (m << 13));
  std::memcpy(&f, &x, 4);
  return f;
}
void put16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
}
void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = uint8_t(v >> (8 * i));
}
inline int nearest_int(float fval) {
  float val = fval + 12582912.f;
  int i;
  std::memcpy(&i, &val, sizeof(int));
  return (i & 0x007fffff) - 0x00400000;
}
template <class T>
T tmin(T a, T b) { return a < b ? a : b; }
template <class T>
T tmax(T a, T b) { return a > b ? a : b; }

void q8_0(const float* x, uint8_t* y) {
  float amax = 0;
  for (int j = 0; j < 32; j++) amax = tmax(amax, std::fabs(x[j]));
  const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
  put16(y, to_half(d));
  for (int j = 0; j < 32; j++) y[2 + j] = uint8_t(int8_t(std::roundf(x[j] * id)));
}

void q4_0(const float* x, uint8_t* y) {
  float amax = 0, max = 0;
  for (int j = 0; j < 32; j++)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  const float d = max / -8, id = d ? 1.0f / d : 0.0f;
  put16(y, to_half(d));
  for (int j = 0; j < 16; j++) {
    const uint8_t lo = tmin<uint8_t>(15, uint8_t(int8_t(x[j] * id + 8.5f)));
    const uint8_t hi = tmin<uint8_t>(15, uint8_t(int8_t(x[j + 16] * id + 8.5f)));
    y[2 + j] = uint8_t(lo | (hi << 4));
  }
}

// q4_1 (bits 4) and q5_1 (bits 5)
void qx_1(int bits, const float* x, uint8_t* y) {
  float min = 3.40282347e38f, max = -3.40282347e38f;
  for (int j = 0; j < 32; j++) {
    if (x[j] < min) min = x[j];
    if (x[j] > max) max = x[j];
  }
  const float d = (max - min) / float((1 << bits) - 1), id = d ? 1.0f / d : 0.0f;
  put16(y, to_half(d));
  put16(y + 2, to_half(min));
  uint8_t* qs = y + (bits == 4 ? 4 : 8);
  uint32_t qh = 0;
  for (int j = 0; j < 16; j++) {
    const float x0 = (x[j] - min) * id, x1 = (x[j + 16] - min) * id;
    const uint8_t xi0 = bits == 4 ? tmin<uint8_t>(15, uint8_t(int8_t(x0 + 0.5f))) : uint8_t(x0 + 0.5f);
    const uint8_t xi1 = bits == 4 ? tmin<uint8_t>(15, uint8_t(int8_t(x1 + 0.5f))) : uint8_t(x1 + 0.5f);
    qs[j] = uint8_t((xi0 & 15) | ((xi1 & 15) << 4));
    qh |= ((xi0 & 0x10u) >> 4) << j;
    qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
  }
  if (bits == 5) put32(y + 4, qh);
}

void q5_0(const float* x, uint8_t* y) {
  float amax = 0, max = 0;
  for (int j = 0; j < 32; j++)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  const float d = max / -16, id = d ? 1.0f / d : 0.0f;
  put16(y, to_half(d));
  uint32_t qh = 0;
  for (int j = 0; j < 16; j++) {
    const uint8_t xi0 = tmin<uint8_t>(31, uint8_t(int8_t(x[j] * id + 16.5f)));
    const uint8_t xi1 = tmin<uint8_t>(31, uint8_t(int8_t(x[j + 16] * id + 16.5f)));
    y[6 + j] = uint8_t((xi0 & 15) | ((xi1 & 15) << 4));
    qh |= ((xi0 & 0x10u) >> 4) << j;
    qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
  }
  put32(y + 2, qh);
}

float make_qx_quants(int n, int nmax, const float* x, int8_t* L) {  // rmse_type 1, no importance weights
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = tmax(-nmax, tmin(nmax - 1, l));
    L[i] = int8_t(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = tmax(-nmax, tmin(nmax - 1, l));
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * x[i]);
        L[i] = int8_t(nmax + tmax(-nmax, tmin(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min, uint8_t* Laux,
                       float rmin, float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = uint8_t(tmax(0, tmin(nmax, l)));
    float diff = scale * L[i] + min - x[i];
    diff = diff * diff;
    best_error += weights[i] * diff;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = tmax(0, tmin(nmax, l));
      Laux[i] = uint8_t(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

void scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = uint8_t((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

// q4_k (bits 4) and q5_k (bits 5): one super-block of 256
void qx_k(int bits, const float* x, uint8_t* y) {
  const int nmax = (1 << bits) - 1;
  uint8_t L[256], Laux[32];
  float weights[32], mins[8], scales[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = bits == 4 ? make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20)
                          : make_qkx2_quants(32, 31, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  uint8_t* sc = y + 4;
  std::memset(sc, 0, 12);
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < 8; ++j) {
    uint8_t ls = uint8_t(nearest_int(inv_scale * scales[j]));
    uint8_t lm = uint8_t(nearest_int(inv_min * mins[j]));
    ls = tmin<uint8_t>(63, ls);
    lm = tmin<uint8_t>(63, lm);
    if (j < 4) {
      sc[j] = ls;
      sc[j + 4] = lm;
    } else {
      sc[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
      sc[j - 4] |= uint8_t((ls >> 4) << 6);
      sc[j - 0] |= uint8_t((lm >> 4) << 6);
    }
  }
  put16(y, to_half(max_scale / 63.f));
  put16(y + 2, to_half(max_min / 63.f));
  const float dall = from_half(uint16_t(y[0] | (y[1] << 8))), mall = from_half(uint16_t(y[2] | (y[3] << 8)));
  for (int j = 0; j < 8; ++j) {
    uint8_t s, m;
    scale_min_k4(j, sc, &s, &m);
    const float d = dall * s;
    if (!d) continue;
    const float dm = mall * m;
    for (int ii = 0; ii < 32; ++ii) {
      const int l = nearest_int((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = uint8_t(tmax(0, tmin(nmax, l)));
    }
  }
  if (bits == 4) {
    uint8_t* q = y + 16;
    for (int j = 0; j < 256; j += 64, q += 32)
      for (int l = 0; l < 32; ++l) q[l] = uint8_t(L[j + l] | (L[j + l + 32] << 4));
    return;
  }
  uint8_t* qh = y + 16;
  uint8_t* ql = y + 48;
  std::memset(qh, 0, 32);
  uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < 256; n += 64, ql += 32) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j], l2 = L[n + j + 32];
      if (l1 > 15) {
        l1 -= 16;
        qh[j] |= m1;
      }
      if (l2 > 15) {
        l2 -= 16;
        qh[j] |= m2;
      }
      ql[j] = uint8_t(l1 | (l2 << 4));
    }
    m1 = uint8_t(m1 << 2);
    m2 = uint8_t(m2 << 2);
  }
}

void q6_k(const float* x, uint8_t* y) {
  int8_t L[256];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
    const float abs_scale = std::fabs(scales[ib]);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scales[ib];
    }
  }
  std::memset(y, 0, 210);
  if (max_abs_scale < kGroupMaxEps) return;
  const float iscale = -128.f / max_scale;
  put16(y + 208, to_half(1 / iscale));
  int8_t* sc = reinterpret_cast<int8_t*>(y + 192);
  for (int ib = 0; ib < 16; ++ib) sc[ib] = int8_t(tmin(127, nearest_int(iscale * scales[ib])));
  const float dall = from_half(uint16_t(y[208] | (y[209] << 8)));
  for (int j = 0; j < 16; ++j) {
    const float d = dall * sc[j];
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int(x[16 * j + ii] / d);
      L[16 * j + ii] = int8_t(tmax(-32, tmin(31, l)) + 32);
    }
  }
  uint8_t* ql = y;
  uint8_t* qh = y + 128;
  for (int j = 0; j < 256; j += 128, ql += 64, qh += 32)
    for (int l = 0; l < 32; ++l) {
      const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
      ql[l] = uint8_t(q1 | (q3 << 4));
      ql[l + 32] = uint8_t(q2 | (q4 << 4));
      qh[l] = uint8_t((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
    }
}

void quantize_block(int fmt, const float* x, uint8_t* y) {
  switch (fmt) {
    case FMT_Q8_0: q8_0(x, y); break;
    case FMT_Q4_0: q4_0(x, y); break;
    case FMT_Q4_1: qx_1(4, x, y); break;
    case FMT_Q5_0: q5_0(x, y); break;
    case FMT_Q5_1: qx_1(5, x, y); break;
    case FMT_Q4_K: qx_k(4, x, y); break;
    case FMT_Q5_K: qx_k(5, x, y); break;
    default: q6_k(x, y); break;
  }
}

// ---- 16-bit values: bf16 / f16 to f32 (exact), f32 to f16 / bf16 (to nearest even) ----
void widen_scalar(int src, const uint16_t* h, int n, float* out) {
  for (int j = 0; j < n; j++) {
    if (src == SRC_F16) {
      out[j] = from_half(h[j]);
    } else {
      const uint32_t bits = uint32_t(h[j]) << 16;
      std::memcpy(out + j, &bits, 4);
    }
  }
}

uint16_t to_bf16(float f) {  // PyTorch's rounding (ties to even), every NaN to 0x7fc0
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
void narrow_scalar(int fmt, const float* x, int n, uint16_t* out) {
  for (int j = 0; j < n; j++) out[j] = fmt == FMT_F16 ? to_half(x[j]) : to_bf16(x[j]);
}

// ---- q8_0 / q4_0 a vector at a time, the same bytes as q8_0() / q4_0() above ----
// Every operation is the scalar code's own (max, one division per block, x * id, + 8.5f, C's
// roundf and truncations); this file is compiled without contraction, so nothing fuses. Blocks
// holding an infinity or NaN, and scales whose inverse overflows, take the scalar code, whose
// conversions of such values are the reference's.
#if (defined(__x86_64__) || defined(__i386__)) && !defined(LLAVA_FORCE_GENERIC)
#define LLAVA_QUANT_SIMD 1

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c")))
#define AVX2 __attribute__((target("avx2,f16c")))

AVX512 inline __m512 round_away512(__m512 v) {  // C's roundf: ties away from zero
  const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_sub_ps(v, t);  // exact: |v| < 2^23
  const __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(r), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512 one = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(int(0x80000000u))),
                                                         _mm512_castps_si512(_mm512_set1_ps(1.0f))));
  return _mm512_mask_add_ps(t, up, t, one);
}

AVX512 bool q8_0_avx512(const float* x, uint8_t* y) {
  const __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
  const __m512 aa = _mm512_abs_ps(a), ab = _mm512_abs_ps(b), inf = _mm512_set1_ps(INFINITY);
  if (_mm512_cmp_ps_mask(aa, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(ab, inf, _CMP_NLT_UQ)) return false;
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(aa, ab));
  const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
  if (!(id < INFINITY)) return false;
  const __m512 vid = _mm512_set1_ps(id);
  const __m512i qa = _mm512_cvttps_epi32(round_away512(_mm512_mul_ps(a, vid)));
  const __m512i qb = _mm512_cvttps_epi32(round_away512(_mm512_mul_ps(b, vid)));
  put16(y, to_half(d));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(y + 2), _mm512_cvtepi32_epi8(qa));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(y + 18), _mm512_cvtepi32_epi8(qb));
  return true;
}

AVX512 bool q4_0_avx512(const float* x, uint8_t* y) {
  const __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
  const __m512 aa = _mm512_abs_ps(a), ab = _mm512_abs_ps(b), inf = _mm512_set1_ps(INFINITY);
  if (_mm512_cmp_ps_mask(aa, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(ab, inf, _CMP_NLT_UQ)) return false;
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(aa, ab));
  float max = 0;  // the first value of largest magnitude, as the scalar scan keeps it
  if (amax != 0) {
    const __m512 m = _mm512_set1_ps(amax);
    const uint32_t hit = uint32_t(_mm512_cmp_ps_mask(aa, m, _CMP_EQ_OQ)) | (uint32_t(_mm512_cmp_ps_mask(ab, m, _CMP_EQ_OQ)) << 16);
    max = x[__builtin_ctz(hit)];
  }
  const float d = max / -8, id = d ? 1.0f / d : 0.0f;
  if (!(std::fabs(id) < INFINITY)) return false;
  const __m512 vid = _mm512_set1_ps(id), half = _mm512_set1_ps(8.5f);
  const __m512i fifteen = _mm512_set1_epi32(15);
  const __m512i lo = _mm512_min_epi32(_mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(a, vid), half)), fifteen);
  const __m512i hi = _mm512_min_epi32(_mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(b, vid), half)), fifteen);
  put16(y, to_half(d));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(y + 2), _mm512_cvtepi32_epi8(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 4))));
  return true;
}

AVX512 void widen_avx512(int src, const uint16_t* h, int n, float* out) {  // bf16 / f16 to f32, exactly
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + j));
    _mm512_storeu_ps(out + j, src == SRC_BF16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16)) : _mm512_cvtph_ps(v));
  }
  widen_scalar(src, h + j, n - j, out + j);
}

// f32 to f16 (F16C rounds to nearest even, as to_half; blocks with NaN take to_half, which
// writes every NaN as sign | 0x7e00) or bf16 (to_bf16's integer rounding)
AVX512 void narrow_avx512(int fmt, const float* x, int n, uint16_t* out) {
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 v = _mm512_loadu_ps(x + j);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    __m256i r;
    if (fmt == FMT_F16) {
      if (nan) {
        narrow_scalar(fmt, x + j, 16, out + j);
        continue;
      }
      r = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
      const __m512i u = _mm512_castps_si512(v);
      const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
      const __m512i b = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), odd), 16);
      r = _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(b, nan, _mm512_set1_epi32(0x7fc0)));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), r);
  }
  narrow_scalar(fmt, x + j, n - j, out + j);
}

AVX2 inline __m256 abs256(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
AVX2 inline __m256 round_away256(__m256 v) {
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 up = _mm256_cmp_ps(abs256(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  const __m256 one = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(1.0f));
  return _mm256_add_ps(t, _mm256_and_ps(up, one));
}
AVX2 inline float hmax256(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}
// 32 values as 4 vectors; false when one is infinite or NaN; amax their largest magnitude
AVX2 inline bool load32(const float* x, __m256 v[4], __m256 av[4], float& amax) {
  const __m256 inf = _mm256_set1_ps(INFINITY);
  int bad = 0;
  for (int k = 0; k < 4; k++) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    av[k] = abs256(v[k]);
    bad |= _mm256_movemask_ps(_mm256_cmp_ps(av[k], inf, _CMP_NLT_UQ));
  }
  if (bad) return false;
  amax = hmax256(_mm256_max_ps(_mm256_max_ps(av[0], av[1]), _mm256_max_ps(av[2], av[3])));
  return true;
}

AVX2 bool q8_0_avx2(const float* x, uint8_t* y) {
  __m256 v[4], av[4];
  float amax;
  if (!load32(x, v, av, amax)) return false;
  const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
  if (!(id < INFINITY)) return false;
  const __m256 vid = _mm256_set1_ps(id);
  __m256i q[4];
  for (int k = 0; k < 4; k++) q[k] = _mm256_cvttps_epi32(round_away256(_mm256_mul_ps(v[k], vid)));
  // packs work within 128-bit lanes; the 64-bit permutes put the values back in order
  const __m256i p01 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[0], q[1]), 0xD8);
  const __m256i p23 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[2], q[3]), 0xD8);
  put16(y, to_half(d));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + 2), _mm256_permute4x64_epi64(_mm256_packs_epi16(p01, p23), 0xD8));
  return true;
}

AVX2 bool q4_0_avx2(const float* x, uint8_t* y) {
  __m256 v[4], av[4];
  float amax;
  if (!load32(x, v, av, amax)) return false;
  float max = 0;
  if (amax != 0) {
    const __m256 m = _mm256_set1_ps(amax);
    uint32_t hit = 0;
    for (int k = 0; k < 4; k++) hit |= uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(av[k], m, _CMP_EQ_OQ))) << (8 * k);
    max = x[__builtin_ctz(hit)];
  }
  const float d = max / -8, id = d ? 1.0f / d : 0.0f;
  if (!(std::fabs(id) < INFINITY)) return false;
  const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(8.5f);
  const __m256i fifteen = _mm256_set1_epi32(15);
  __m256i q[4];
  for (int k = 0; k < 4; k++) q[k] = _mm256_min_epi32(_mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(v[k], vid), half)), fifteen);
  const __m256i b0 = _mm256_or_si256(q[0], _mm256_slli_epi32(q[2], 4)), b1 = _mm256_or_si256(q[1], _mm256_slli_epi32(q[3], 4));
  const __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(b0, b1), 0xD8);
  put16(y, to_half(d));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(y + 2), _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1)));
  return true;
}

AVX2 void widen_avx2(int src, const uint16_t* h, int n, float* out) {
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + j));
    _mm256_storeu_ps(out + j, src == SRC_BF16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16)) : _mm256_cvtph_ps(v));
  }
  widen_scalar(src, h + j, n - j, out + j);
}

AVX2 void narrow_avx2(int fmt, const float* x, int n, uint16_t* out) {
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    __m128i r;
    if (fmt == FMT_F16) {
      if (_mm256_movemask_ps(nan)) {
        narrow_scalar(fmt, x + j, 8, out + j);
        continue;
      }
      r = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
      const __m256i u = _mm256_castps_si256(v);
      const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
      __m256i b = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), odd), 16);
      b = _mm256_blendv_epi8(b, _mm256_set1_epi32(0x7fc0), _mm256_castps_si256(nan));
      r = _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(b, b), 0x08));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), r);
  }
  narrow_scalar(fmt, x + j, n - j, out + j);
}
#endif

// The vector level of a kernel variant's name: the quantizers follow the variant in use, so a
// forced variant (tests, LLAVA_ISA) runs its own code.
int simd_level(const char* isa) {
#ifdef LLAVA_QUANT_SIMD
  if (std::strncmp(isa, "avx512", 6) == 0) return 2;
  if (std::strcmp(isa, "avx2") == 0) return 1;
#endif
  (void)isa;
  return 0;
}

void quantize_one(int level, int fmt, const float* x, uint8_t* y) {
#ifdef LLAVA_QUANT_SIMD
  if (level == 2 && fmt == FMT_Q8_0 && q8_0_avx512(x, y)) return;
  if (level == 2 && fmt == FMT_Q4_0 && q4_0_avx512(x, y)) return;
  if (level == 1 && fmt == FMT_Q8_0 && q8_0_avx2(x, y)) return;
  if (level == 1 && fmt == FMT_Q4_0 && q4_0_avx2(x, y)) return;
#endif
  quantize_block(fmt, x, y);
}

void widen(int level, int src, const uint16_t* h, int n, float* out) {
#ifdef LLAVA_QUANT_SIMD
  if (level == 2) return widen_avx512(src, h, n, out);
  if (level == 1) return widen_avx2(src, h, n, out);
#endif
  widen_scalar(src, h, n, out);
}

void narrow(int level, int fmt, const float* x, int n, uint16_t* out) {
#ifdef LLAVA_QUANT_SIMD
  if (level == 2) return narrow_avx512(fmt, x, n, out);
  if (level == 1) return narrow_avx2(fmt, x, n, out);
#endif
  narrow_scalar(fmt, x, n, out);
}

struct QuantizeJob {
  int fmt, src, level;
  const void* x;
  int64_t rows, cols;
  uint8_t* out;
  int64_t rows_per_task;
};

void quantize_task(void* ctx, int64_t t, int) {
  const QuantizeJob& j = *static_cast<const QuantizeJob*>(ctx);
  const bool half = j.fmt == FMT_BF16 || j.fmt == FMT_F16;
  const int64_t bs = half ? 256 : kFmtBlock[j.fmt], bb = kFmtBlockBytes[j.fmt] * (half ? 256 : 1);
  const int64_t row_bytes = half ? j.cols * 2 : j.cols / bs * bb;
  alignas(64) float buf[256];  // 16-bit input widened a block at a time: no f32 copy of the matrix
  for (int64_t r = t * j.rows_per_task; r < j.rows && r < (t + 1) * j.rows_per_task; r++)
    for (int64_t c0 = 0; c0 < j.cols; c0 += bs) {
      const int64_t at = r * j.cols + c0;
      const int n = int(j.cols - c0 < bs ? j.cols - c0 : bs);  // less than bs only for 16-bit output
      const float* x = static_cast<const float*>(j.x) + at;
      if (j.src != SRC_F32) {
        widen(j.level, j.src, static_cast<const uint16_t*>(j.x) + at, n, buf);
        x = buf;
      }
      uint8_t* y = j.out + r * row_bytes + c0 / bs * bb;
      if (half) narrow(j.level, j.fmt, x, n, reinterpret_cast<uint16_t*>(y));
      else quantize_one(j.level, j.fmt, x, y);
    }
}

}  // namespace

void quantize_rows(Pool* pool, const char* isa, int fmt, int src, const void* x, int64_t rows, int64_t cols, uint8_t* out) {
  // tasks of whole rows: each row's bytes depend on that row alone, whichever thread makes them
  const int64_t per = rows / (int64_t(pool_size(pool)) * 8) + 1;
  QuantizeJob job{fmt, src, simd_level(isa), x, rows, cols, out, per};
  pool_run(pool, (rows + per - 1) / per, quantize_task, &job);
}

void interleave(Pool* pool, int fmt, uint8_t* data, int64_t rows, int64_t cols) {
  struct Job {
    int fmt;
    uint8_t* data;
    int64_t row_bytes;
  } job{fmt, data, cols / 32 * kFmtBlockBytes[fmt]};
  // one task per whole panel: its 16 rows (the same bytes in both layouts) copied out, then
  // written back interleaved; the rows after the last whole panel stay as they are
  pool_run(pool, rows / kIlvRows, [](void* ctx, int64_t t, int) {
    const Job& j = *static_cast<const Job*>(ctx);
    const int64_t bytes = kIlvRows * j.row_bytes;
    thread_local std::vector<uint8_t> rows_copy;
    rows_copy.assign(j.data + t * bytes, j.data + (t + 1) * bytes);
    ilv_copy_blocks<true>(j.fmt, j.data + t * bytes, 0, j.row_bytes / kFmtBlockBytes[j.fmt], rows_copy.data(), j.row_bytes);
  }, &job);
}

}  // namespace llava
