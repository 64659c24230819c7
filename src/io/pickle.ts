/**
 * A restricted pickle reader (protocols 0-5) that never executes anything. It rebuilds plain data
 * (None, bools, ints, floats, strings, bytes, tuples, lists, dicts, sets) itself; everything that
 * would make Python import or call something — GLOBAL, STACK_GLOBAL, REDUCE, NEWOBJ, BUILD, INST,
 * OBJ, persistent ids — goes through `PickleHooks`, whose implementation decides what, if anything,
 * is allowed. The hooks only ever see values this reader created, so no object in the stream can
 * name its own behaviour. Extension codes and out-of-band buffers are refused outright.
 *
 * The format reference is CPython's Lib/pickle.py and Lib/pickletools.py.
 */
import { LlavaError } from "../util/errors.js";
import { readFully } from "./files.js";

/** A Python tuple (lists are JS arrays). */
export class PyTuple {
  constructor(readonly items: unknown[]) {}
}

/** A Python dict or collections.OrderedDict; keys are JS primitives (or objects, by identity). */
export class PyDict {
  readonly map = new Map<unknown, unknown>();
  /** Instance attributes a BUILD set (an OrderedDict's `_metadata`, for one). */
  attributes: PyDict | null = null;
  constructor(readonly ordered = false) {}
}

/** A Python set or frozenset. */
export class PySet {
  readonly items = new Set<unknown>();
  constructor(readonly frozen = false) {}
}

/** Decides what the stream may import and call; every method throws to refuse. */
export interface PickleHooks {
  /** GLOBAL / STACK_GLOBAL / INST: the object `module.name` stands for. */
  findGlobal(module: string, name: string): unknown;
  /** REDUCE / INST / OBJ: `callable(*args)`. */
  call(callable: unknown, args: PyTuple): unknown;
  /** NEWOBJ / NEWOBJ_EX: `cls.__new__(cls, *args, **kwargs)`. */
  newObject(cls: unknown, args: PyTuple, kwargs: PyDict | null): unknown;
  /** BUILD: `obj.__setstate__(state)`. */
  build(obj: unknown, state: unknown): void;
  /** PERSID / BINPERSID: the object a persistent id refers to. */
  persistentLoad(pid: unknown): unknown;
}

/** Sequential reader over pickle bytes. */
export interface ByteSource {
  /** Bytes consumed so far (relative to where the source started). */
  readonly position: number;
  /** Bytes left before the end of the source. */
  remaining(): number;
  /** The next `n` bytes (a view that may be reused: copy what you keep). */
  read(n: number): Uint8Array;
}

/** Thrown inside the reader; `unpickle` turns it into a LlavaError naming the input. */
class PickleFormatError extends Error {}

/** A source over bytes in memory. */
export class BufferSource implements ByteSource {
  private pos = 0;
  constructor(private readonly bytes: Uint8Array) {}
  get position(): number {
    return this.pos;
  }
  remaining(): number {
    return this.bytes.length - this.pos;
  }
  read(n: number): Uint8Array {
    if (n > this.remaining()) throw new PickleFormatError(`needs ${n} more bytes but only ${this.remaining()} remain (truncated)`);
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
}

/** A buffered source over a byte range of an open file; `start` is where the pickle begins. */
export class FileSource implements ByteSource {
  private buffer = new Uint8Array(0);
  private bufferStart: number;
  private pos: number;
  constructor(
    private readonly fd: number,
    private readonly file: string,
    private readonly start: number,
    private readonly end: number,
  ) {
    this.bufferStart = start;
    this.pos = start;
  }
  get position(): number {
    return this.pos - this.start;
  }
  /** Absolute file offset of the next byte. */
  get filePosition(): number {
    return this.pos;
  }
  remaining(): number {
    return this.end - this.pos;
  }
  read(n: number): Uint8Array {
    if (n > this.remaining()) throw new PickleFormatError(`needs ${n} more bytes but only ${this.remaining()} remain (truncated)`);
    const offset = this.pos - this.bufferStart;
    if (offset + n > this.buffer.length) {
      const size = Math.min(Math.max(n, 1 << 16), this.end - this.pos);
      this.buffer = new Uint8Array(size);
      readFully(this.fd, this.buffer, this.pos, this.file);
      this.bufferStart = this.pos;
    }
    const at = this.pos - this.bufferStart;
    this.pos += n;
    return this.buffer.subarray(at, at + n);
  }
}

/** Lines (GLOBAL names, protocol-0 numbers) longer than this are not pickles we accept. */
const MAX_LINE = 1 << 16;

const utf8 = new TextDecoder("utf-8", { fatal: true });

function decodeUtf8(bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new PickleFormatError("a string is not valid UTF-8");
  }
}

/** Opcodes refused outright (extension registry, out-of-band buffers), for the message. */
const OPCODE_NAMES: Record<number, string> = {
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x97: "NEXT_BUFFER",
  0x98: "READONLY_BUFFER",
};

/**
 * Reads one pickle from `src` (up to and including its STOP opcode) and returns its value.
 * `what` names the input in messages, e.g. "/m/pytorch_model.bin (archive/data.pkl)".
 */
export function unpickle(src: ByteSource, hooks: PickleHooks, what: string): unknown {
  try {
    return new Unpickler(src, hooks).load();
  } catch (err) {
    if (err instanceof PickleFormatError) {
      throw new LlavaError(`${what}: malformed pickle at byte ${src.position}: ${err.message}`);
    }
    if (err instanceof RangeError) {
      throw new LlavaError(`${what}: pickle too large or deeply nested to read (${err.message})`);
    }
    throw err;
  }
}

class Unpickler {
  private stack: unknown[] = [];
  private readonly metastack: unknown[][] = [];
  private readonly memo = new Map<number, unknown>();

  constructor(
    private readonly src: ByteSource,
    private readonly hooks: PickleHooks,
  ) {}

  load(): unknown {
    for (;;) {
      const op = this.byte();
      switch (op) {
        case 0x80: {
          // PROTO
          const proto = this.byte();
          if (proto > 5) throw new PickleFormatError(`unsupported pickle protocol ${proto}`);
          break;
        }
        case 0x95: // FRAME: a length prefix for buffering; the opcodes inside are read as usual
          this.src.read(8);
          break;
        case 0x2e: // STOP
          if (this.stack.length !== 1 || this.metastack.length !== 0) {
            throw new PickleFormatError("STOP with an unbalanced stack");
          }
          return this.stack[0];
        case 0x28: // MARK
          this.metastack.push(this.stack);
          this.stack = [];
          break;
        case 0x30: // POP
          if (this.stack.length > 0) this.stack.pop();
          else this.popMark();
          break;
        case 0x31: // POP_MARK
          this.popMark();
          break;
        case 0x32: // DUP
          this.push(this.top());
          break;

        case 0x4e: // NONE
          this.push(null);
          break;
        case 0x88: // NEWTRUE
          this.push(true);
          break;
        case 0x89: // NEWFALSE
          this.push(false);
          break;
        case 0x49: // INT (text; "00"/"01" are the protocol-0 bools)
          this.push(this.textInt(true));
          break;
        case 0x4c: // LONG (text)
          this.push(this.textInt(false));
          break;
        case 0x4a: // BININT
          this.push(this.view(4).getInt32(0, true));
          break;
        case 0x4b: // BININT1
          this.push(this.byte());
          break;
        case 0x4d: // BININT2
          this.push(this.view(2).getUint16(0, true));
          break;
        case 0x8a: // LONG1
          this.push(decodeLong(this.src.read(this.byte())));
          break;
        case 0x8b: // LONG4
          this.push(decodeLong(this.src.read(this.length(4))));
          break;
        case 0x46: {
          // FLOAT (text)
          const text = this.line();
          const value = Number(text);
          if (text.trim() === "" || (Number.isNaN(value) && !/^[-+]?nan$/i.test(text.trim()))) {
            throw new PickleFormatError(`bad FLOAT "${text}"`);
          }
          this.push(value);
          break;
        }
        case 0x47: // BINFLOAT (big-endian)
          this.push(this.view(8).getFloat64(0, false));
          break;

        case 0x53: // STRING (quoted text, Python 2 str)
          this.push(decodeQuoted(this.line()));
          break;
        case 0x54: // BINSTRING (Python 2 str; torch.load decodes these as UTF-8)
          this.push(decodeUtf8(this.src.read(this.length(4))));
          break;
        case 0x55: // SHORT_BINSTRING
          this.push(decodeUtf8(this.src.read(this.byte())));
          break;
        case 0x56: // UNICODE (raw-unicode-escape text)
          this.push(decodeRawUnicodeEscape(this.lineBytes()));
          break;
        case 0x58: // BINUNICODE
          this.push(decodeUtf8(this.src.read(this.length(4))));
          break;
        case 0x8c: // SHORT_BINUNICODE
          this.push(decodeUtf8(this.src.read(this.byte())));
          break;
        case 0x8d: // BINUNICODE8
          this.push(decodeUtf8(this.src.read(this.length(8))));
          break;
        case 0x42: // BINBYTES
          this.push(this.src.read(this.length(4)).slice());
          break;
        case 0x43: // SHORT_BINBYTES
          this.push(this.src.read(this.byte()).slice());
          break;
        case 0x8e: // BINBYTES8
          this.push(this.src.read(this.length(8)).slice());
          break;
        case 0x96: // BYTEARRAY8
          this.push(this.src.read(this.length(8)).slice());
          break;

        case 0x29: // EMPTY_TUPLE
          this.push(new PyTuple([]));
          break;
        case 0x74: // TUPLE
          this.push(new PyTuple(this.popMark()));
          break;
        case 0x85: // TUPLE1
          this.push(new PyTuple(this.popN(1)));
          break;
        case 0x86: // TUPLE2
          this.push(new PyTuple(this.popN(2)));
          break;
        case 0x87: // TUPLE3
          this.push(new PyTuple(this.popN(3)));
          break;
        case 0x5d: // EMPTY_LIST
          this.push([]);
          break;
        case 0x6c: // LIST
          this.push(this.popMark());
          break;
        case 0x61: {
          // APPEND
          const value = this.pop();
          this.list(this.top()).push(value);
          break;
        }
        case 0x65: {
          // APPENDS
          const items = this.popMark();
          this.list(this.top()).push(...items);
          break;
        }
        case 0x7d: // EMPTY_DICT
          this.push(new PyDict());
          break;
        case 0x64: {
          // DICT
          const dict = new PyDict();
          setItems(dict, this.popMark());
          this.push(dict);
          break;
        }
        case 0x73: {
          // SETITEM
          const value = this.pop();
          const key = this.pop();
          setItems(this.dict(this.top()), [key, value]);
          break;
        }
        case 0x75: {
          // SETITEMS
          const items = this.popMark();
          setItems(this.dict(this.top()), items);
          break;
        }
        case 0x8f: // EMPTY_SET
          this.push(new PySet());
          break;
        case 0x90: {
          // ADDITEMS
          const items = this.popMark();
          const set = this.top();
          if (!(set instanceof PySet) || set.frozen) throw new PickleFormatError("ADDITEMS on something that is not a set");
          for (const item of items) set.items.add(hashable(item));
          break;
        }
        case 0x91: {
          // FROZENSET
          const set = new PySet(true);
          for (const item of this.popMark()) set.items.add(hashable(item));
          this.push(set);
          break;
        }

        case 0x67: // GET (text index)
          this.push(this.memoGet(this.textIndex()));
          break;
        case 0x68: // BINGET
          this.push(this.memoGet(this.byte()));
          break;
        case 0x6a: // LONG_BINGET
          this.push(this.memoGet(this.view(4).getUint32(0, true)));
          break;
        case 0x70: // PUT (text index)
          this.memo.set(this.textIndex(), this.top());
          break;
        case 0x71: // BINPUT
          this.memo.set(this.byte(), this.top());
          break;
        case 0x72: // LONG_BINPUT
          this.memo.set(this.view(4).getUint32(0, true), this.top());
          break;
        case 0x94: // MEMOIZE
          this.memo.set(this.memo.size, this.top());
          break;

        case 0x63: {
          // GLOBAL
          const module = this.line();
          const name = this.line();
          this.push(this.hooks.findGlobal(module, name));
          break;
        }
        case 0x93: {
          // STACK_GLOBAL
          const name = this.pop();
          const module = this.pop();
          if (typeof module !== "string" || typeof name !== "string") {
            throw new PickleFormatError("STACK_GLOBAL needs two strings");
          }
          this.push(this.hooks.findGlobal(module, name));
          break;
        }
        case 0x52: {
          // REDUCE
          const args = this.pop();
          const callable = this.pop();
          if (!(args instanceof PyTuple)) throw new PickleFormatError("REDUCE arguments are not a tuple");
          this.push(this.hooks.call(callable, args));
          break;
        }
        case 0x81: {
          // NEWOBJ
          const args = this.pop();
          const cls = this.pop();
          if (!(args instanceof PyTuple)) throw new PickleFormatError("NEWOBJ arguments are not a tuple");
          this.push(this.hooks.newObject(cls, args, null));
          break;
        }
        case 0x92: {
          // NEWOBJ_EX
          const kwargs = this.pop();
          const args = this.pop();
          const cls = this.pop();
          if (!(args instanceof PyTuple) || !(kwargs instanceof PyDict)) {
            throw new PickleFormatError("NEWOBJ_EX needs a tuple and a dict");
          }
          this.push(this.hooks.newObject(cls, args, kwargs));
          break;
        }
        case 0x62: {
          // BUILD
          const state = this.pop();
          this.hooks.build(this.top(), state);
          break;
        }
        case 0x69: {
          // INST: the protocol-0 spelling of "call module.name with the marked items"
          const module = this.line();
          const name = this.line();
          const cls = this.hooks.findGlobal(module, name);
          this.push(this.hooks.call(cls, new PyTuple(this.popMark())));
          break;
        }
        case 0x6f: {
          // OBJ: like INST with the class on the stack
          const items = this.popMark();
          if (items.length === 0) throw new PickleFormatError("OBJ without a class");
          this.push(this.hooks.call(items[0], new PyTuple(items.slice(1))));
          break;
        }
        case 0x50: // PERSID (text id)
          this.push(this.hooks.persistentLoad(this.line()));
          break;
        case 0x51: // BINPERSID
          this.push(this.hooks.persistentLoad(this.pop()));
          break;

        default: {
          const name = OPCODE_NAMES[op];
          if (name !== undefined) throw new PickleFormatError(`opcode ${name} is not supported (it cannot appear in a weights file)`);
          throw new PickleFormatError(`unknown opcode 0x${op.toString(16).padStart(2, "0")}`);
        }
      }
    }
  }

  private byte(): number {
    return this.src.read(1)[0];
  }

  private view(n: number): DataView {
    const bytes = this.src.read(n);
    return new DataView(bytes.buffer, bytes.byteOffset, n);
  }

  /** A length prefix of `width` bytes, checked against what is left before anything is allocated. */
  private length(width: 4 | 8): number {
    const v = this.view(width);
    const n = width === 4 ? v.getUint32(0, true) : Number(v.getBigUint64(0, true));
    if (n > this.src.remaining()) {
      throw new PickleFormatError(`a ${n}-byte item runs past the end of the data (${this.src.remaining()} bytes left; truncated?)`);
    }
    return n;
  }

  private lineBytes(): Uint8Array {
    const parts: number[] = [];
    for (;;) {
      const b = this.byte();
      if (b === 0x0a) return Uint8Array.from(parts);
      if (parts.length >= MAX_LINE) throw new PickleFormatError("text line too long");
      parts.push(b);
    }
  }

  private line(): string {
    return decodeUtf8(this.lineBytes());
  }

  private textInt(boolShorthand: boolean): number | bigint | boolean {
    const text = this.line();
    if (boolShorthand && text === "00") return false;
    if (boolShorthand && text === "01") return true;
    const m = /^([-+]?\d+)L?$/.exec(text.trim());
    if (m === null) throw new PickleFormatError(`bad integer "${text}"`);
    return normaliseInt(BigInt(m[1]));
  }

  private textIndex(): number {
    const text = this.line();
    if (!/^\d+$/.test(text)) throw new PickleFormatError(`bad memo index "${text}"`);
    return Number(text);
  }

  private memoGet(index: number): unknown {
    if (!this.memo.has(index)) throw new PickleFormatError(`memo entry ${index} is used before it is defined`);
    return this.memo.get(index);
  }

  private push(value: unknown): void {
    this.stack.push(value);
  }

  private pop(): unknown {
    if (this.stack.length === 0) throw new PickleFormatError("stack underflow");
    return this.stack.pop();
  }

  private top(): unknown {
    if (this.stack.length === 0) throw new PickleFormatError("stack underflow");
    return this.stack[this.stack.length - 1];
  }

  private popN(n: number): unknown[] {
    if (this.stack.length < n) throw new PickleFormatError("stack underflow");
    return this.stack.splice(this.stack.length - n, n);
  }

  private popMark(): unknown[] {
    const items = this.stack;
    const previous = this.metastack.pop();
    if (previous === undefined) throw new PickleFormatError("no MARK to pop to");
    this.stack = previous;
    return items;
  }

  private list(target: unknown): unknown[] {
    // Only real lists: APPEND on anything else would call its `append`/`extend`.
    if (!Array.isArray(target)) throw new PickleFormatError("APPEND on something that is not a list");
    return target;
  }

  private dict(target: unknown): PyDict {
    // Only real dicts: SETITEM on anything else would call its `__setitem__`.
    if (!(target instanceof PyDict)) throw new PickleFormatError("SETITEM on something that is not a dict");
    return target;
  }
}

function setItems(dict: PyDict, items: unknown[]): void {
  if (items.length % 2 !== 0) throw new PickleFormatError("odd number of items for a dict");
  for (let i = 0; i < items.length; i += 2) dict.map.set(hashable(items[i]), items[i + 1]);
}

/** Dict keys and set items must be hashable in Python: no lists, dicts or mutable sets. */
function hashable(key: unknown): unknown {
  if (Array.isArray(key) || key instanceof PyDict || (key instanceof PySet && !key.frozen)) {
    throw new PickleFormatError("unhashable dict key or set item");
  }
  return key;
}

/** Small integers as numbers, the rest as bigints. */
function normaliseInt(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** LONG1/LONG4 payload: little-endian two's complement. */
function decodeLong(bytes: Uint8Array): number | bigint {
  if (bytes.length === 0) return 0;
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  if (bytes[bytes.length - 1] & 0x80) v -= 1n << BigInt(bytes.length * 8);
  return normaliseInt(v);
}

/** Python 2 `repr` of a str: 'text' or "text" with backslash escapes. */
function decodeQuoted(text: string): string {
  const q = text[0];
  if (text.length < 2 || (q !== "'" && q !== '"') || text[text.length - 1] !== q) {
    throw new PickleFormatError("STRING is not quoted");
  }
  const body = text.slice(1, -1);
  const simple: Record<string, string> = { n: "\n", t: "\t", r: "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0" };
  return body.replace(/\\(x[0-9a-fA-F]{2}|.)/g, (_, e: string) => {
    if (e[0] === "x" && e.length === 3) return String.fromCharCode(parseInt(e.slice(1), 16));
    const s = simple[e];
    if (s === undefined) throw new PickleFormatError(`unsupported escape \\${e} in STRING`);
    return s;
  });
}

/** Latin-1 text with \uXXXX and \UXXXXXXXX escapes (Python's raw-unicode-escape). */
function decodeRawUnicodeEscape(bytes: Uint8Array): string {
  const latin = String.fromCharCode(...bytes);
  return latin.replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (_, u4?: string, u8?: string) => {
    const code = parseInt((u4 ?? u8) as string, 16);
    if (code > 0x10ffff) throw new PickleFormatError("bad \\U escape");
    return String.fromCodePoint(code);
  });
}
