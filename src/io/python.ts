/**
 * Python's value formatting, so files Python programs write (the reference evaluation scripts'
 * outputs, transformers' shard indexes) and the lines they print are reproduced byte for byte: JSON as Python's `json` module reads and writes it (floats kept apart
 * from ints, dict order kept, `json.dump` separators, `ensure_ascii` escapes), `repr`/`str` of
 * floats (shortest round-trip digits, Python's exponent rules), and fixed-point formatting
 * (`'%.2f'`, `'{:.2f}'`, `round`) with Python's round-half-even on the exact binary value.
 */
import { LlavaError } from "../util/errors.js";

/** A Python float (JSON `1.0` stays a float, not the int 1). */
export class PyFloat {
  constructor(readonly value: number) {}
}

/** A value as Python's json module gives it: dicts keep their key order, floats are marked. */
export type PyValue = null | boolean | number | bigint | PyFloat | string | PyValue[] | PyDict;
export type PyDict = Map<string, PyValue>;

export const pyFloat = (x: number) => new PyFloat(x);

/** The number a JSON int or float holds. */
export function numberOf(v: PyValue): number {
  if (v instanceof PyFloat) return v.value;
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  if (typeof v === "boolean") return v ? 1 : 0;
  throw new LlavaError(`expected a number, got ${typeof v === "string" ? JSON.stringify(v) : typeName(v)}`);
}

export function typeName(v: PyValue): string {
  if (v === null) return "None";
  if (v instanceof PyFloat) return "float";
  if (v instanceof Map) return "dict";
  if (Array.isArray(v)) return "list";
  return { boolean: "bool", number: "int", bigint: "int", string: "str" }[typeof v as "boolean" | "number" | "bigint" | "string"];
}

// ---------------------------------------------------------------------------------------------
// Reading JSON as json.loads does

/** Parses JSON as Python's json.loads: NaN/Infinity allowed, floats marked, big ints exact, dict order kept (later duplicate keys win). */
export function loadJson(text: string, source: string): PyValue {
  let i = 0;
  const fail = (what: string): never => {
    const line = text.slice(0, i).split("\n").length;
    const column = i - text.lastIndexOf("\n", i - 1);
    throw new LlavaError(`${source}: ${what}: line ${line} column ${column} (char ${i})`);
  };
  const ws = () => {
    while (i < text.length && (text[i] === " " || text[i] === "\t" || text[i] === "\n" || text[i] === "\r")) i++;
  };
  const value = (): PyValue => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const dict: PyDict = new Map();
      ws();
      if (text[i] === "}") return i++, dict;
      for (;;) {
        ws();
        if (text[i] !== '"') fail("Expecting property name enclosed in double quotes");
        const key = string();
        ws();
        if (text[i] !== ":") fail("Expecting ':' delimiter");
        i++;
        dict.delete(key);
        dict.set(key, value());
        ws();
        if (text[i] === ",") i++;
        else if (text[i] === "}") return i++, dict;
        else fail("Expecting ',' delimiter");
      }
    }
    if (c === "[") {
      i++;
      const list: PyValue[] = [];
      ws();
      if (text[i] === "]") return i++, list;
      for (;;) {
        list.push(value());
        ws();
        if (text[i] === ",") i++;
        else if (text[i] === "]") return i++, list;
        else fail("Expecting ',' delimiter");
      }
    }
    if (c === '"') return string();
    for (const [word, v] of [["null", null], ["true", true], ["false", false], ["NaN", pyFloat(NaN)], ["Infinity", pyFloat(Infinity)], ["-Infinity", pyFloat(-Infinity)]] as const) {
      if (text.startsWith(word, i)) return (i += word.length), v;
    }
    const m = /^-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?/.exec(text.slice(i, i + 400));
    if (!m) return fail("Expecting value");
    i += m[0].length;
    if (m[1] !== undefined || m[2] !== undefined) return pyFloat(Number(m[0]));
    const n = Number(m[0]);
    return Number.isSafeInteger(n) ? n : BigInt(m[0]);
  };
  const string = (): string => {
    i++;
    let out = "";
    for (;;) {
      const j = text.slice(i).search(/["\\\x00-\x1f]/);
      if (j < 0) fail("Unterminated string starting at");
      out += text.slice(i, i + j);
      i += j;
      const c = text[i];
      if (c === '"') return i++, out;
      if (c !== "\\") fail("Invalid control character at");
      const e = text[i + 1];
      const simple: Record<string, string> = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };
      if (e in simple) {
        out += simple[e];
        i += 2;
      } else if (e === "u" && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
        out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
        i += 6;
      } else {
        fail("Invalid \\escape");
      }
    }
  };
  const v = value();
  ws();
  if (i !== text.length) fail("Extra data");
  return v;
}

/** One JSON value per non-empty line, as the reference reads answers files (`json.loads(line)`). */
export function loadJsonLines(text: string, source: string): PyValue[] {
  return text.split("\n").flatMap((line, n) => (line.trim() === "" ? [] : [loadJson(line, `${source}, line ${n + 1}`)]));
}

// ---------------------------------------------------------------------------------------------
// Writing JSON as json.dump does

export interface DumpOptions {
  /** json.dump's indent (null: one line) */
  indent?: number | null;
  /** json.dump's ensure_ascii (default true) */
  ensureAscii?: boolean;
  sortKeys?: boolean;
}

function jsonString(s: string, ensureAscii: boolean): string {
  let out = '"';
  for (let k = 0; k < s.length; k++) {
    const c = s.charCodeAt(k);
    const ch = s[k];
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch === "\b") out += "\\b";
    else if (ch === "\f") out += "\\f";
    else if (c < 0x20 || (ensureAscii && c > 0x7e)) out += `\\u${c.toString(16).padStart(4, "0")}`;
    else out += ch;
  }
  return out + '"';
}

/** A float as json.dumps writes it: repr, or NaN / Infinity / -Infinity. */
function jsonFloat(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (!Number.isFinite(x)) return x > 0 ? "Infinity" : "-Infinity";
  return floatRepr(x);
}

/** JSON text as Python's json.dumps(value, indent=..., ensure_ascii=..., sort_keys=...) makes it. */
export function dumpJson(value: PyValue, opts: DumpOptions = {}): string {
  const indent = opts.indent ?? null;
  const ensureAscii = opts.ensureAscii ?? true;
  const itemSep = indent === null ? ", " : ",";
  const write = (v: PyValue, level: number): string => {
    if (v === null) return "null";
    if (v === true) return "true";
    if (v === false) return "false";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : jsonFloat(v);
    if (typeof v === "bigint") return v.toString();
    if (v instanceof PyFloat) return jsonFloat(v.value);
    if (typeof v === "string") return jsonString(v, ensureAscii);
    const entries: string[] = Array.isArray(v)
      ? v.map((x) => write(x, level + 1))
      : (opts.sortKeys ? [...v.keys()].sort(compareCodePoints) : [...v.keys()]).map((k) => `${jsonString(k, ensureAscii)}: ${write(v.get(k)!, level + 1)}`);
    const [open, close] = Array.isArray(v) ? ["[", "]"] : ["{", "}"];
    if (entries.length === 0) return open + close;
    if (indent === null) return open + entries.join(itemSep) + close;
    const pad = "\n" + " ".repeat(indent * (level + 1));
    return open + pad + entries.join(itemSep + pad) + "\n" + " ".repeat(indent * level) + close;
  };
  return write(value, 0);
}

/** A plain JS object or array as a PyValue (numbers that are not whole become floats). */
export function fromJs(v: unknown): PyValue {
  if (v === null || v === undefined) return null;
  if (v instanceof PyFloat || typeof v === "string" || typeof v === "boolean" || typeof v === "bigint") return v;
  if (typeof v === "number") return Number.isInteger(v) ? v : pyFloat(v);
  if (Array.isArray(v)) return v.map(fromJs);
  if (v instanceof Map) return new Map([...v].map(([k, x]) => [String(k), fromJs(x)]));
  return new Map(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, fromJs(x)]));
}

// ---------------------------------------------------------------------------------------------
// Numbers as Python prints them

/** repr(float) / str(float): the shortest digits that read back to `x`, fixed for 1e-4 <= |x| < 1e16, else d.ddde±XX. */
export function floatRepr(x: number): string {
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const [mantissa, exp] = Math.abs(x).toExponential().split("e");
  const digits = mantissa.replace(".", "");
  const e = Number(exp);
  const sign = x < 0 ? "-" : "";
  if (e < -4 || e >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  }
  if (e < 0) return `${sign}0.${"0".repeat(-e - 1)}${digits}`;
  const whole = digits.slice(0, e + 1).padEnd(e + 1, "0");
  const frac = digits.slice(e + 1);
  return `${sign}${whole}.${frac || "0"}`;
}

/** The exact decimal value of a finite double: |x| = digits / 10^scale. */
function exactDecimal(x: number): { digits: bigint; scale: number } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, Math.abs(x));
  const bits = view.getBigUint64(0);
  const exponent = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  const m = exponent === 0 ? fraction : fraction | (1n << 52n);
  const k = (exponent === 0 ? 1 : exponent) - 1075; // |x| = m * 2^k
  if (k >= 0) return { digits: m << BigInt(k), scale: 0 };
  return { digits: m * 5n ** BigInt(-k), scale: -k };
}

/** '%.{n}f' % x, '{:.{n}f}'.format(x): correctly rounded, ties to even, as CPython formats floats. */
export function formatFixed(x: number, n: number): string {
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  const { digits, scale } = exactDecimal(x);
  let q: bigint;
  if (scale <= n) {
    q = digits * 10n ** BigInt(n - scale);
  } else {
    const div = 10n ** BigInt(scale - n);
    q = digits / div;
    const r = digits % div;
    if (2n * r > div || (2n * r === div && q % 2n === 1n)) q += 1n;
  }
  const s = q.toString().padStart(n + 1, "0");
  const body = n === 0 ? s : `${s.slice(0, -n)}.${s.slice(-n)}`;
  return (x < 0 || Object.is(x, -0) ? "-" : "") + body;
}

/** round(x, n) of a Python float. */
export const pyRound = (x: number, n: number): number => (Number.isFinite(x) ? Number(formatFixed(x, n)) : x);

/** str(value) as print() shows it. */
export function pyStr(v: PyValue): string {
  return typeof v === "string" ? v : pyRepr(v);
}

/** repr(value): strings quoted as Python quotes them, dicts and lists with Python's punctuation. */
export function pyRepr(v: PyValue): string {
  if (v === null) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : floatRepr(v);
  if (typeof v === "bigint") return v.toString();
  if (v instanceof PyFloat) return floatRepr(v.value);
  if (typeof v === "string") return stringRepr(v);
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(", ")}]`;
  return `{${[...v].map(([k, x]) => `${stringRepr(k)}: ${pyRepr(x)}`).join(", ")}}`;
}

function stringRepr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === quote || ch === "\\") out += "\\" + ch;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, "0")}`;
    else if (c >= 0x80 && !/[\p{L}\p{M}\p{N}\p{P}\p{S}]/u.test(ch)) {
      out += c <= 0xff ? `\\x${c.toString(16).padStart(2, "0")}` : c <= 0xffff ? `\\u${c.toString(16).padStart(4, "0")}` : `\\U${c.toString(16).padStart(8, "0")}`;
    } else out += ch;
  }
  return out + quote;
}

// ---------------------------------------------------------------------------------------------
// Reading numbers as Python does

/** The whitespace float() and int() strip: ASCII's six (not the separators 0x1c-0x1f) and the non-ASCII characters str.isspace() accepts. */
const FLOAT_SPACE = "\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const FLOAT_STRIP = new RegExp(`^[${FLOAT_SPACE}]+|[${FLOAT_SPACE}]+$`, "gu");
const DIGITS = "\\d(?:_?\\d)*";
const PY_FLOAT = new RegExp(`^[+-]?(?:(?:${DIGITS}(?:\\.(?:${DIGITS})?)?|\\.${DIGITS})(?:[eE][+-]?${DIGITS})?|inf(?:inity)?|nan)$`, "i");

/** float(s) of a Python str, or null where Python raises ValueError ("could not convert string to float"). */
export function parsePyFloat(s: string): number | null {
  // float() reads any Unicode decimal digit (category Nd) as its ASCII digit
  const ascii = s.replace(FLOAT_STRIP, "").replace(/\p{Nd}/gu, (d) => String(decimalDigitValue(d)));
  if (!PY_FLOAT.test(ascii)) return null;
  const t = ascii.replaceAll("_", "").toLowerCase();
  const sign = t.startsWith("-") ? -1 : 1;
  const body = t.replace(/^[+-]/, "");
  if (body.startsWith("inf")) return sign * Infinity;
  if (body === "nan") return NaN;
  return sign * Number(body);
}

/** int(s) of a Python str, or null where Python raises ValueError ("invalid literal for int()"). */
export function parsePyInt(s: string): number | bigint | null {
  const ascii = s.replace(FLOAT_STRIP, "").replace(/\p{Nd}/gu, (d) => String(decimalDigitValue(d)));
  if (!/^[+-]?\d(?:_?\d)*$/.test(ascii)) return null;
  const n = BigInt(ascii.replaceAll("_", ""));
  return Number.isSafeInteger(Number(n)) ? Number(n) : n;
}

/** The value of one Unicode decimal digit: Nd digits come in contiguous runs of ten, 0 to 9. */
function decimalDigitValue(d: string): number {
  let c = d.codePointAt(0)!;
  let before = 0;
  while (/\p{Nd}/u.test(String.fromCodePoint(c - 1))) c--, before++;
  return before % 10;
}

// ---------------------------------------------------------------------------------------------
// Strings and dict keys as Python treats them

/** The characters str.isspace() accepts: str.strip() and str.split() cut on these (not JS's set). */
const PY_SPACE = "\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const EDGE_SPACE = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, "g");
const SPACE_RUN = new RegExp(`[${PY_SPACE}]+`);

/** s.strip() */
export const pyStrip = (s: string): string => s.replace(EDGE_SPACE, "");

/** s.split() with no separator: runs of whitespace, no empty pieces. */
export const pySplit = (s: string): string[] => {
  const t = pyStrip(s);
  return t === "" ? [] : t.split(SPACE_RUN);
};

/** The lines `for line in open(file)` yields (universal newlines), each with its "\n" except maybe the last. */
export function pyLines(text: string): string[] {
  return text.replace(/\r\n?/g, "\n").match(/[^\n]*\n|[^\n]+$/g) ?? [];
}

/**
 * A dict key with Python's equality: 1, 1.0 and True are one key, "1" another. Lists and dicts
 * cannot be keys (Python raises TypeError: unhashable type).
 */
export function pyKey(v: PyValue): string {
  if (typeof v === "string") return "s" + v;
  if (v === null) return "None";
  if (Array.isArray(v) || v instanceof Map) throw new LlavaError(`unhashable type: '${typeName(v)}' used as an id`);
  if (typeof v === "bigint") return "n" + v.toString();
  const x = numberOf(v);
  return "n" + (Number.isInteger(x) ? BigInt(x).toString() : String(x));
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
  return typeof v === "string" ? parsePyInt(v) : null;
}

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
