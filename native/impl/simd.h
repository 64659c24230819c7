// Vector helpers on GCC vector extensions. The width follows the target flags of the
// translation unit that includes this file: 16 floats with AVX-512, 8 with AVX2, 4 otherwise
// (SSE2 on x86-64, NEON on ARM, scalar code elsewhere). Included inside a variant namespace.

// x86 intrinsics where the target flags allow them; LLAVA_FORCE_GENERIC compiles the
// architecture-neutral code instead (how the non-x86 paths are tested on x86).
#if (defined(__x86_64__) || defined(__i386__)) && !defined(LLAVA_FORCE_GENERIC)
#define LLAVA_X86_SIMD 1
#else
#define LLAVA_X86_SIMD 0
#endif

#if LLAVA_X86_SIMD && defined(__AVX512F__)
constexpr int W = 16;
#elif LLAVA_X86_SIMD && defined(__AVX2__)
constexpr int W = 8;
#else
constexpr int W = 4;
#endif

typedef float vf __attribute__((vector_size(W * 4)));
typedef int32_t vi __attribute__((vector_size(W * 4)));
typedef uint32_t vu __attribute__((vector_size(W * 4)));
typedef double vdh __attribute__((vector_size(W * 4)));  // W / 2 doubles: one register
typedef float vfh __attribute__((vector_size(W * 2)));   // W / 2 floats
typedef float vf_u __attribute__((vector_size(W * 4), aligned(4), may_alias));

static inline vf vload(const float* p) { return *reinterpret_cast<const vf_u*>(p); }
static inline void vstore(float* p, vf v) { *reinterpret_cast<vf_u*>(p) = v; }
static inline vf vset(float x) {
#if LLAVA_X86_SIMD && defined(__AVX512F__)
  return (vf)_mm512_set1_ps(x);
#elif LLAVA_X86_SIMD && defined(__AVX2__)
  return (vf)_mm256_set1_ps(x);
#else
  return vf{x, x, x, x};
#endif
}
static inline vf vmax(vf a, vf b) { return a > b ? a : b; }

// W doubles, lane by lane the W floats of a vf widened: two registers of W / 2. (A vector type of
// W doubles, two registers wide, was kept on the stack across loop iterations by GCC: a layer
// norm's row sums ran through memory.)
struct vdw {
  vdh lo, hi;
};
static inline vdw operator+(vdw a, vdw b) { return {a.lo + b.lo, a.hi + b.hi}; }
static inline vdw operator-(vdw a, vdw b) { return {a.lo - b.lo, a.hi - b.hi}; }
static inline vdw operator*(vdw a, vdw b) { return {a.lo * b.lo, a.hi * b.hi}; }
static inline vdw operator-(vdw a, double s) { return {a.lo - s, a.hi - s}; }
static inline vdw operator*(vdw a, double s) { return {a.lo * s, a.hi * s}; }
static inline vdw operator*(double s, vdw a) { return {s * a.lo, s * a.hi}; }
static inline vdw& operator+=(vdw& a, vdw b) { return a = a + b; }
// halves and their concatenation in registers (through memory, a whole-vector load of two
// half stores cannot be forwarded and stalls)
template <int... L>
static inline vf concat(vfh lo, vfh hi, std::integer_sequence<int, L...>) {
  return __builtin_shufflevector(lo, hi, L...);
}
template <int Off, int... L>
static inline vfh half_at(vf v, std::integer_sequence<int, L...>) {
  return __builtin_shufflevector(v, v, (Off + L)...);
}
static inline vdw vwiden(vf v) {
#if LLAVA_X86_SIMD && defined(__AVX512F__)
  // GCC widens an 8-float half as two 4-float conversions and an insert; one instruction a half
  if constexpr (W == 16) {
    const __m512d whole = (__m512d)v;
    return {(vdh)_mm512_cvtps_pd((__m256)_mm512_castpd512_pd256(whole)), (vdh)_mm512_cvtps_pd((__m256)_mm512_extractf64x4_pd(whole, 1))};
  }
#endif
  const auto half = std::make_integer_sequence<int, W / 2>{};
  return {__builtin_convertvector(half_at<0>(v, half), vdh), __builtin_convertvector(half_at<W / 2>(v, half), vdh)};
}
// each lane rounded to float
static inline vf narrow(vdw v) {
  return concat(__builtin_convertvector(v.lo, vfh), __builtin_convertvector(v.hi, vfh), std::make_integer_sequence<int, W>{});
}

static inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Lane sums in a fixed pairwise order, so results do not depend on the calling context.
static inline float hsum(vf v) {
  float s[W];
  __builtin_memcpy(s, &v, sizeof v);
  for (int w = W / 2; w > 0; w /= 2)
    for (int i = 0; i < w; i++) s[i] += s[i + w];
  return s[0];
}
// hsum of W vectors at once: out lane x = hsum(v[x]) bit for bit (the same pairs added in the
// same order), a shuffle pair and an add per level and pair of vectors instead of W scalar
// adds per vector. At level SZ each vector holds W/SZ sums of SZ partials; two vectors' groups
// halve into one vector (the first vector's groups, then the second's).
constexpr int hsum_lane(int sz, bool hi, int l) {
  const int g = l / (sz / 2), i = l % (sz / 2), per = W / sz;
  return (g < per ? g * sz : W + (g - per) * sz) + i + (hi ? sz / 2 : 0);
}
template <int SZ, bool HI, int... L>
static inline vf hsum_pick(vf a, vf b, std::integer_sequence<int, L...>) {
  return __builtin_shuffle(a, b, vi{hsum_lane(SZ, HI, L)...});
}
template <int SZ = W>
__attribute__((always_inline)) static inline vf hsum_many(vf* v, int n = W) {
  const auto lanes = std::make_integer_sequence<int, W>{};
#pragma GCC unroll 16
  for (int x = 0; x < n / 2; x++) v[x] = hsum_pick<SZ, false>(v[2 * x], v[2 * x + 1], lanes) + hsum_pick<SZ, true>(v[2 * x], v[2 * x + 1], lanes);
  if constexpr (SZ > 2) return hsum_many<SZ / 2>(v, n / 2);
  return v[0];
}
// the W lanes in the pairwise order of hsum(vf): lane i + W/2 onto lane i first (hi onto lo)
static inline double hsum(vdw v) {
  double s[W / 2];
  const vdh h = v.lo + v.hi;
  __builtin_memcpy(s, &h, sizeof h);
  for (int w = W / 4; w > 0; w /= 2)
    for (int i = 0; i < w; i++) s[i] += s[i + w];
  return s[0];
}
// v with its lanes rotated down by S: lane i holds lane (i + S) mod W
template <int S, typename V, int... L>
static inline V rotate_lanes(V v, std::integer_sequence<int, L...>) {
  return __builtin_shuffle(v, vi{((L + S) % W)...});
}
// f(lane 0, ..., lane W-1) in lane 0, combined in a tree of rotations (log2 W steps, no scalar
// chain); f must be associative and commutative on the values it meets
template <typename V, typename F>
static inline V lane_tree(V v, F f) {
  const auto lanes = std::make_integer_sequence<int, W>{};
  if constexpr (W >= 16) v = f(v, rotate_lanes<8>(v, lanes));
  if constexpr (W >= 8) v = f(v, rotate_lanes<4>(v, lanes));
  v = f(v, rotate_lanes<2>(v, lanes));
  return f(v, rotate_lanes<1>(v, lanes));
}
// The largest lane (of non-NaN lanes: max is then order-free, but for the sign of a zero, which
// no caller tells apart).
static inline float hmax(vf v) { return lane_tree(v, vmax)[0]; }
// whether any lane is nonzero
static inline bool any_lane(vi v) { return lane_tree(v, [](vi a, vi b) { return a | b; })[0] != 0; }
// the lane sum of integers (exact in any order)
static inline int32_t hsum_int(vi v) { return lane_tree(v, [](vi a, vi b) { return a + b; })[0]; }

// exp(x) for float lanes, about 1 ulp (Cephes expf): x = n ln2 + r, |r| <= ln2/2, a degree-6
// polynomial for e^r, then 2^n through the exponent bits. Results below ~1e-38 become 0.
static inline vf vexp(vf x) {
  const vf hi = vset(88.3762626647949f), lo = vset(-87.0f);
  vf xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  const vf magic = vset(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  vf t = xc * 1.44269504088896341f + magic;
  vf n = t - magic;
  vi ni = (vi)t - (vi)magic;
  vf r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf z = r * r;
  vf y = vset(1.9875691500E-4f);
  y = y * r + 1.3981999507E-3f;
  y = y * r + 8.3334519073E-3f;
  y = y * r + 4.1665795894E-2f;
  y = y * r + 1.6666665459E-1f;
  y = y * r + 5.0000001201E-1f;
  y = y * z + r + 1.0f;
  vf res = (vf)((vi)y + (ni << 23));
  res = x < lo ? vf{} : res;
  res = x > vset(88.72283905206835f) ? vset(__builtin_inff()) : res;
  return x != x ? x : res;
}

// a * b - fl(a * b), exactly (an FMA, or Dekker's split where no FMA instruction exists)
static inline vf product_error(vf a, vf b, vf p) {
#if LLAVA_X86_SIMD && defined(__AVX512F__)
  return (vf)_mm512_fmsub_ps((__m512)a, (__m512)b, (__m512)p);
#elif LLAVA_X86_SIMD && defined(__AVX2__) && defined(__FMA__)
  return (vf)_mm256_fmsub_ps((__m256)a, (__m256)b, (__m256)p);
#elif defined(__aarch64__) || defined(__FP_FAST_FMAF)
  vf e;
  for (int i = 0; i < W; i++) e[i] = __builtin_fmaf(a[i], b[i], -p[i]);
  return e;
#else
  // no FMA on this target, so the compiler cannot contract (and break) these steps
  const vf split = vset(4097.0f);
  vf ca = split * a, cb = split * b;
  vf ah = ca - (ca - a), bh = cb - (cb - b);
  vf al = a - ah, bl = b - bh;
  return ((ah * bh - p) + ah * bl + al * bh) + al * bl;
#endif
}

static inline float sexp(float x) {
  vf v = vexp(vset(x));
  return v[0];
}

// ---- 16-bit floats ----
static inline float half_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000 | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    uint32_t e = 113;
    while ((mant & 0x400) == 0) {
      mant <<= 1;
      e--;
    }
    bits = sign | (e << 23) | ((mant & 0x3ff) << 13);
  }
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}
static inline float bf16_to_float(uint16_t b) {
  uint32_t bits = uint32_t(b) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

static inline uint16_t rd16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }

// W bytes widened to int32 lanes (zero- or sign-extended). GCC's generic conversion of byte
// vectors goes lane by lane, so the x86 variants use the widening loads directly.
static inline vi u8_to_i32(const uint8_t* p) {
#if LLAVA_X86_SIMD && defined(__AVX512F__)
  return (vi)_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#elif LLAVA_X86_SIMD && defined(__AVX2__)
  return (vi)_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
#elif LLAVA_X86_SIMD && defined(__SSE2__)
  int32_t word;
  __builtin_memcpy(&word, p, 4);
  const __m128i z = _mm_setzero_si128();
  return (vi)_mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(word), z), z);
#else
  vi v;
  for (int i = 0; i < W; i++) v[i] = p[i];
  return v;
#endif
}
static inline vi s8_to_i32(const uint8_t* p) {
#if LLAVA_X86_SIMD && defined(__AVX512F__)
  return (vi)_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#elif LLAVA_X86_SIMD && defined(__AVX2__)
  return (vi)_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
#elif LLAVA_X86_SIMD && defined(__SSE2__)
  int32_t word;
  __builtin_memcpy(&word, p, 4);
  const __m128i b = _mm_cvtsi32_si128(word);
  return (vi)_mm_srai_epi32(_mm_unpacklo_epi16(_mm_unpacklo_epi8(b, b), _mm_unpacklo_epi8(b, b)), 24);
#else
  vi v;
  for (int i = 0; i < W; i++) v[i] = int8_t(p[i]);
  return v;
#endif
}
// W uint16 widened to uint32 lanes
static inline vi u16_to_i32(const uint8_t* p) {
#if LLAVA_X86_SIMD && defined(__AVX512F__)
  return (vi)_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif LLAVA_X86_SIMD && defined(__AVX2__)
  return (vi)_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#elif LLAVA_X86_SIMD && defined(__SSE2__)
  return (vi)_mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), _mm_setzero_si128());
#else
  vi v;
  for (int i = 0; i < W; i++) v[i] = rd16(p + 2 * i);
  return v;
#endif
}

static inline vf load_bf16(const uint8_t* p) { return (vf)(u16_to_i32(p) << 16); }

static inline vf load_f16(const uint8_t* p) {
#if LLAVA_X86_SIMD && defined(__AVX512F__)
  return (vf)_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif LLAVA_X86_SIMD && defined(__F16C__) && defined(__AVX2__)
  return (vf)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
  vf v;
  for (int i = 0; i < W; i++) v[i] = half_to_float(rd16(p + 2 * i));
  return v;
#endif
}

// Lanes [v*W, v*W+W) of a 32-weight quantized block, as integers (before the scale).
static inline vf q8_lanes(const uint8_t* q, int v) { return __builtin_convertvector(s8_to_i32(q + v * W), vf); }
static inline vf q4_lanes(const uint8_t* q, int v) {
#if LLAVA_X86_SIMD && defined(__AVX512F__)
  // a 16-entry table lookup on the nibble replaces mask, subtract and convert
  const __m512 table = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  const __m512i bytes = (__m512i)u8_to_i32(q);
  return (vf)_mm512_permutexvar_ps(v == 0 ? bytes : _mm512_srli_epi32(bytes, 4), table);
#else
  constexpr int lo_vectors = 16 / W;
  const vi x = v < lo_vectors ? (u8_to_i32(q + v * W) & 15) : (u8_to_i32(q + (v - lo_vectors) * W) >> 4);
  return __builtin_convertvector(x - 8, vf);
#endif
}

// ---- W x W transpose in registers: log2(W) stages that swap off-diagonal blocks of h lanes ----
template <int H>
static inline void transpose_stage(vf* v) {
  vi lo, hi;
  for (int L = 0; L < W; L++) {
    lo[L] = (L & H) == 0 ? L : W + L - H;
    hi[L] = (L & H) == 0 ? L + H : W + L;
  }
  for (int i = 0; i < W; i++) {
    if (i & H) continue;
    const vf a = v[i], b = v[i + H];
    v[i] = __builtin_shuffle(a, b, lo);
    v[i + H] = __builtin_shuffle(a, b, hi);
  }
}
static inline void transpose(vf* v) {
  if (W >= 16) transpose_stage<(W >= 16 ? 8 : 1)>(v);
  if (W >= 8) transpose_stage<(W >= 8 ? 4 : 1)>(v);
  transpose_stage<2>(v);
  transpose_stage<1>(v);
}
