/**
 * Bit-exact conversions between float32 and the 16-bit float formats stored in checkpoints.
 *
 * - f16 -> f32 is exact (every half is representable as a float), done with a 64K lookup table of
 *   f32 bit patterns so NaN payloads survive.
 * - f32 -> f16 rounds to nearest, ties to even, like PyTorch's `.half()` (c10 fp16_ieee_from_fp32_value):
 *   overflow -> +-inf, subnormal halves handled, every NaN -> sign | 0x7E00.
 * - bf16 -> f32 is a 16-bit shift.
 * - f32 -> bf16 rounds to nearest even like PyTorch's `.bfloat16()` (c10 round_to_nearest_even):
 *   every NaN -> 0x7FC0.
 *
 * The array functions assume a little-endian host (x86, ARM), like the safetensors format itself.
 */

/** f32 bit pattern of the half with bit pattern `h` (exact). */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0; // inf / NaN, payload kept
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0; // normal: rebias 15 -> 127
  if (mant === 0) return sign >>> 0; // +-0
  // Subnormal half: normalise the mantissa into an f32 normal.
  let e = 113; // exponent (biased for f32) of 2^-14
  let m = mant;
  while ((m & 0x400) === 0) {
    m <<= 1;
    e -= 1;
  }
  return (sign | (e << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

/** Half bit pattern nearest (ties to even) to the float with f32 bit pattern `w`. */
export function f32BitsToF16Bits(w: number): number {
  const sign = (w >>> 16) & 0x8000;
  const abs = w & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7e00; // NaN
  if (abs >= 0x477ff000) return sign | 0x7c00; // >= 65520 rounds past 65504 (ties to even) -> inf
  if (abs >= 0x38800000) {
    // Normal half: rebias the exponent (127 -> 15), then round the 23-bit mantissa to 10 bits.
    const rebased = abs - 0x38000000;
    return sign | ((rebased + 0x0fff + ((rebased >>> 13) & 1)) >>> 13);
  }
  // Subnormal half (or zero): value / 2^-24 = m * 2^(e - 126), rounded to an integer.
  const e = abs >>> 23;
  const shift = 126 - e; // >= 14 here
  if (shift > 24) return sign; // below 2^-25: rounds to zero
  const m = (abs & 0x7fffff) | 0x800000;
  const half = 1 << (shift - 1);
  const rem = m & ((1 << shift) - 1);
  let q = m >>> shift;
  if (rem > half || (rem === half && (q & 1) === 1)) q += 1;
  return sign | q; // q === 0x400 is exactly the smallest normal half
}

/** bfloat16 bit pattern for the float with f32 bit pattern `w`, rounded like PyTorch. */
export function f32BitsToBf16Bits(w: number): number {
  if ((w & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  const u = w >>> 0;
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
}

/** f32 bit pattern of a bfloat16 (exact). */
export function bf16BitsToF32Bits(b: number): number {
  return ((b & 0xffff) << 16) >>> 0;
}

function buildF16Table(): Uint32Array {
  const table = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) table[h] = f16BitsToF32Bits(h);
  return table;
}

/** f32 bit patterns indexed by half bit pattern; read-only after construction. */
const F16_TO_F32_BITS: Uint32Array = buildF16Table();

const scratch32 = (): { f: Float32Array; u: Uint32Array } => {
  const f = new Float32Array(1);
  return { f, u: new Uint32Array(f.buffer) };
};

/** Number value of a half bit pattern. */
export function f16ToNumber(h: number): number {
  const s = scratch32();
  s.u[0] = F16_TO_F32_BITS[h & 0xffff];
  return s.f[0];
}

/** Half bit pattern nearest to `x` (first rounded to float32, as a Float32 tensor would be). */
export function numberToF16(x: number): number {
  const s = scratch32();
  s.f[0] = x;
  return f32BitsToF16Bits(s.u[0]);
}

/** Number value of a bfloat16 bit pattern. */
export function bf16ToNumber(b: number): number {
  const s = scratch32();
  s.u[0] = bf16BitsToF32Bits(b);
  return s.f[0];
}

/** bfloat16 bit pattern for `x` (first rounded to float32). */
export function numberToBf16(x: number): number {
  const s = scratch32();
  s.f[0] = x;
  return f32BitsToBf16Bits(s.u[0]);
}

function checkLength(src: ArrayLike<unknown>, out: ArrayLike<unknown>, what: string): void {
  if (out.length !== src.length) {
    throw new RangeError(`${what}: output length ${out.length} != input length ${src.length}`);
  }
}

function u32View(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

/** Half bit patterns -> float32 values (exact, NaN payloads kept). */
export function f16ToF32Array(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  checkLength(src, out, "f16ToF32Array");
  const dst = u32View(out);
  const table = F16_TO_F32_BITS;
  for (let i = 0; i < src.length; i++) dst[i] = table[src[i]];
  return out;
}

/** float32 values -> half bit patterns, round to nearest even. */
export function f32ToF16Array(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkLength(src, out, "f32ToF16Array");
  const bits = u32View(src);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToF16Bits(bits[i]);
  return out;
}

/** bfloat16 bit patterns -> float32 values (exact). */
export function bf16ToF32Array(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  checkLength(src, out, "bf16ToF32Array");
  const dst = u32View(out);
  for (let i = 0; i < src.length; i++) dst[i] = src[i] << 16;
  return out;
}

/** float32 values -> bfloat16 bit patterns, round to nearest even (PyTorch's rounding). */
export function f32ToBf16Array(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkLength(src, out, "f32ToBf16Array");
  const bits = u32View(src);
  for (let i = 0; i < bits.length; i++) {
    const u = bits[i];
    out[i] = (u & 0x7fffffff) > 0x7f800000 ? 0x7fc0 : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** float64 -> float32, round to nearest even (what `tensor.float()` does). */
export function f64ToF32Array(src: Float64Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  checkLength(src, out, "f64ToF32Array");
  out.set(src);
  return out;
}
