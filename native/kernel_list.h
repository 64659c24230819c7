// Every kernel, declared once. The list generates the kernel table (kernels.h), each variant's
// fill function (LLAVA_DEFINE_FILL below) and the addon's registry of JavaScript functions
// (addon.cc). Adding a kernel: one entry here, its k_<name> in the variants, its bind_<name>
// in addon.cc (and its method in src/tensor/native-backend.ts).
//
// K(name, js, return type, parameters): a kernel the addon exposes as `js`, through bind_<name>.
// ALT(name, return type, parameters): another implementation of the K above it, which that
//   kernel's binding may choose; null in a table whose variant lacks it.
#pragma once

#define LLAVA_KERNELS(K, ALT) \
  K(gemm, gemm, void, \
    (Pool*, int64_t m, int64_t n, int64_t k, const float* a, bool ta, const float* b, bool tb, float* c, bool acc, bool rowwise)) \
  /* exact: packed weights decoded to f32, f32 activations (impl/packed.h, impl/gemm.h) */ \
  K(packed_matmul, packedMatmul, void, \
    (Pool*, const float* a, const PackedW& w, float* c, int64_t m, bool transposed, bool acc, bool rowwise)) \
  /* q8_0/q4_0 forward with integer-quantized activations and integer block dot products (impl/qdot.h) */ \
  ALT(packed_matmul_qdot, void, (Pool*, const float* a, const PackedW& w, float* c, int64_t m, bool acc)) \
  /* q4_k/q5_k/q6_k forward with activations quantized per 256 values, integer dot products (impl/kqdot.h) */ \
  ALT(packed_matmul_kqdot, void, (Pool*, const float* a, const PackedW& w, float* c, int64_t m, bool acc)) \
  /* bf16 W, forward, activations rounded to bf16 (kern_avx512bf16.cc; only where the CPU has AVX512-BF16) */ \
  ALT(packed_matmul_bf16dot, void, (Pool*, const float* a, const PackedW& w, float* c, int64_t m, bool acc)) \
  K(add, add, void, (Pool*, const float* x, const float* y, float* out, int64_t n)) \
  K(add_broadcast, addBroadcast, void, (Pool*, const float* x, const float* y, int64_t ny, float* out, int64_t n)) \
  K(mul, mul, void, (Pool*, const float* x, const float* y, float* out, int64_t n)) \
  K(scale, scale, void, (Pool*, const float* x, double s, float* out, int64_t n)) \
  K(add_scaled, addScaled, void, (Pool*, const float* x, const float* y, double s, float* out, int64_t n)) \
  K(accumulate, accumulate, void, (Pool*, float* y, const float* x, int64_t n)) \
  K(sum_rows, sumRows, void, (Pool*, const float* x, int64_t rows, int64_t len, float* out)) \
  K(activation, activation, void, (Pool*, int act, const float* x, float* out, int64_t n)) \
  K(activation_backward, activationBackward, void, (Pool*, int act, const float* x, const float* dy, float* dx, int64_t n)) \
  K(layer_norm, layerNorm, void, \
    (Pool*, const float* x, const float* w, const float* b, int64_t rows, int64_t dim, double eps, float* out)) \
  K(layer_norm_backward, layerNormBackward, void, \
    (Pool*, const float* x, const float* w, const float* dy, int64_t rows, int64_t dim, double eps, float* dx, float* dw, \
     float* db)) \
  K(rms_norm, rmsNorm, void, (Pool*, const float* x, const float* w, int64_t rows, int64_t dim, double eps, float* out)) \
  K(rms_norm_backward, rmsNormBackward, void, \
    (Pool*, const float* x, const float* w, const float* dy, int64_t rows, int64_t dim, double eps, float* dx, float* dw)) \
  K(rope, rope, void, \
    (Pool*, const float* x, const int32_t* pos, int64_t rows, int64_t heads, int64_t head_dim, const double* inv_freq, \
     bool inverse, float* out)) \
  K(attention, attention, void, (Pool*, const float* q, const float* k, const float* v, float* out, const AttnShape& s)) \
  /* the same over the f16 bits of a 16-bit KV cache (impl/attention.h) */ \
  K(attention_f16, attentionF16, void, \
    (Pool*, const float* q, const uint16_t* k, const uint16_t* v, float* out, const AttnShape& s)) \
  /* one new position of each of several sequences, each over its own cache (impl/attention.h) */ \
  K(attention_many, attentionMany, void, \
    (Pool*, const float* q, const float* const* k, const float* const* v, const int64_t* lengths, float* out, \
     const AttnShape& s)) \
  K(attention_many_f16, attentionManyF16, void, \
    (Pool*, const float* q, const uint16_t* const* k, const uint16_t* const* v, const int64_t* lengths, float* out, \
     const AttnShape& s)) \
  K(attention_backward, attentionBackward, void, \
    (Pool*, const float* q, const float* k, const float* v, const float* dout, float* dq, float* dk, float* dv, \
     const AttnShape& s)) \
  K(embedding, embedding, void, (Pool*, const float* table, const int32_t* ids, int64_t count, int64_t dim, float* out)) \
  K(embedding_backward, embeddingBackward, void, \
    (Pool*, const int32_t* ids, int64_t count, const float* dy, int64_t dim, float* dtable)) \
  K(cross_entropy, crossEntropy, double, \
    (Pool*, const float* logits, const int32_t* targets, int64_t rows, int64_t vocab, int32_t ignore, float* dlogits)) \
  /* the optimizer (impl/optimizer.h) */ \
  K(adamw, adamw, void, \
    (Pool*, float* p, const float* g, float* m, float* v, int64_t n, double decay, double beta1, double beta2, \
     double step_size, double bias2_sqrt, double eps)) \
  K(sum_squares, sumSquares, double, (Pool*, const float* x, int64_t n)) \
  K(zero, zero, void, (Pool*, float* x, int64_t n)) \
  /* the first largest element's index, -1 when any is NaN or infinite (impl/misc.h) */ \
  K(argmax_finite, argmaxFinite, int64_t, (Pool*, const float* x, int64_t n)) \
  /* x times dropout's mask from the Rng stream after `state` (impl/elementwise.h) */ \
  K(dropout, dropout, void, (Pool*, uint32_t state, double p, const float* x, float* out, int64_t n)) \
  /* reads x (n floats) `reps` times on every pool thread's share; returns a checksum */ \
  K(read_sum, bandwidth, double, (Pool*, const float* x, int64_t n, int reps))

#define LLAVA_KERNEL_FIELD(name, ret, params) ret(*name) params;
#define LLAVA_KERNEL_FIELD_K(name, js, ret, params) LLAVA_KERNEL_FIELD(name, ret, params)

// A variant's fill sets the slot of every k_<name> visible where LLAVA_DEFINE_FILL stands (its
// own namespace, or the shared headers it includes there) and leaves the others as they are.
// A name the variant does not define finds llava::k_<name>, of type Absent, which sets nothing.
#define LLAVA_KERNEL_ABSENT(name, ...) constexpr Absent k_##name{};
#define LLAVA_KERNEL_ABSENT_K(name, js, ...) LLAVA_KERNEL_ABSENT(name)
#define LLAVA_KERNEL_SET(name, ...) set_slot(t.name, k_##name);
#define LLAVA_KERNEL_SET_K(name, js, ...) LLAVA_KERNEL_SET(name)
#define LLAVA_DEFINE_FILL \
  void fill(KernelTable& t) { LLAVA_KERNELS(LLAVA_KERNEL_SET_K, LLAVA_KERNEL_SET) }
// A complete variant (impl/variant.h) defines every K kernel.
#define LLAVA_KERNEL_REQUIRE_K(name, js, ...) \
  static_assert(!std::is_same<decltype(k_##name), const Absent>::value, "the variant lacks k_" #name);
#define LLAVA_KERNEL_IGNORE(...)
