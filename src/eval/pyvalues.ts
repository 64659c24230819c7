/**
 * Python's rules for JSON values that the scripts compare, look up and clean: dict keys
 * (1, 1.0 and True are one key), `==`, `int(x)`, `str.strip()`.
 */
import { LlavaError } from "../util/errors.js";
import { floatRepr, PyFloat, typeName, type PyValue } from "./python.js";

/** The identity of a value as a Python dict key; lists and dicts are unhashable. */
export function pyKey(v: PyValue): string {
  if (v === null) return "None";
  if (typeof v === "string") return `s:${v}`;
  if (typeof v === "boolean") return `n:${v ? 1 : 0}`;
  if (typeof v === "number" || typeof v === "bigint") return `n:${v}`;
  if (v instanceof PyFloat) {
    const x = v.value;
    return `n:${Number.isInteger(x) ? BigInt(x).toString() : floatRepr(x)}`;
  }
  throw new LlavaError(`unhashable type: '${typeName(v)}'`);
}

/** Python's `a == b` of two JSON values. */
export function pyEquals(a: PyValue, b: PyValue): boolean {
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => pyEquals(x, b[i]));
  }
  if (a instanceof Map || b instanceof Map) {
    return a instanceof Map && b instanceof Map && a.size === b.size && [...a].every(([k, x]) => b.has(k) && pyEquals(x, b.get(k)!));
  }
  if (a instanceof PyFloat && Number.isNaN(a.value)) return false;
  return pyKey(a) === pyKey(b);
}

/** `int(x)` of a JSON value, or null where Python raises (the scripts catch it and keep x). */
export function pyInt(v: PyValue): number | bigint | null {
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "number" || typeof v === "bigint") return v;
  if (v instanceof PyFloat) return Number.isFinite(v.value) ? Math.trunc(v.value) : null;
  if (typeof v !== "string") return null;
  const s = pyStrip(v);
  if (!/^[+-]?\d+(_\d+)*$/.test(s)) return null;
  const n = BigInt(s.replaceAll("_", ""));
  return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
}

/** Python's whitespace (str.isspace), which differs from JavaScript's \s. */
const PY_SPACE = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, "g");

/** `s.strip()`. */
export const pyStrip = (s: string): string => s.replace(STRIP, "");

/** Python's ordering of two strings: by code point (JavaScript's `<` compares UTF-16 units). */
export function compareCodePoints(a: string, b: string): number {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0)! - y[i].codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}
