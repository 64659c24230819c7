/**
 * What a `torch.save` pickle may contain, and what it means. Implements the hooks of the restricted
 * unpickler (pickle.ts) with an allowlist in the spirit of torch's own `weights_only=True` loader,
 * narrowed to state dicts: containers, tensor rebuild functions, storage types, dtypes,
 * `torch.Size`, and what protocol 2 needs for bytes and sets (`_codecs.encode`, `bytes()`, `set`). Any other global — `os.system`,
 * `builtins.eval`, a model class — is refused with a message naming it, before anything is built.
 *
 * Tensors come out as `TensorRef` records (storage key, dtype, offset, shape, stride); no tensor data
 * is read here.
 */
import { LlavaError } from "../util/errors.js";
import type { SafetensorsDtype } from "./safetensors-header.js";
import { PyDict, PySet, PyTuple, type PickleHooks } from "./pickle.js";

/** A dtype torch can store; `dtype` is null for ones this project cannot read (complex, float8, quantized). */
export interface TorchDtype {
  /** torch's name, e.g. "torch.float16" or "torch.HalfStorage". */
  torchName: string;
  dtype: SafetensorsDtype | null;
  /** Bytes per element (0 when unknown, for dtypes we cannot read anyway). */
  elementSize: number;
}

/** One serialized storage, as the pickle's persistent id describes it. */
export class StorageRef {
  constructor(
    readonly key: string,
    /** Element type of the storage: uint8 for an UntypedStorage. */
    readonly type: TorchDtype,
    /** Size in bytes (numel * element size). */
    readonly nbytes: number,
    /** Device it was saved from ("cpu", "cuda:0"); informational. */
    readonly location: string,
  ) {}
}

/** A tensor as `_rebuild_tensor_v2` & co. describe it: a strided view of a storage. */
export class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly type: TorchDtype,
    /** In elements of `type`. */
    readonly storageOffset: number,
    readonly shape: number[],
    /** In elements of `type`. */
    readonly stride: number[],
  ) {}
}

type Role =
  | "OrderedDict"
  | "rebuild_tensor"
  | "rebuild_tensor_v2"
  | "rebuild_tensor_v3"
  | "rebuild_parameter"
  | "rebuild_parameter_with_state"
  | "rebuild_from_type_v2"
  | "Tensor"
  | "Parameter"
  | "Size"
  | "codecs_encode"
  | "bytes"
  | "set"
  | "frozenset"
  | "storage_type"
  | "dtype";

/** An allowed global, as it sits on the unpickler's stack. */
export class TorchGlobal {
  constructor(
    /** "module.name" as written in the pickle. */
    readonly qualifiedName: string,
    readonly role: Role,
    readonly dtype: TorchDtype | null = null,
  ) {}
}

const FUNCTIONS: Record<string, Role> = {
  "collections.OrderedDict": "OrderedDict",
  "torch._utils._rebuild_tensor": "rebuild_tensor",
  "torch._utils._rebuild_tensor_v2": "rebuild_tensor_v2",
  "torch._utils._rebuild_tensor_v3": "rebuild_tensor_v3",
  "torch._utils._rebuild_parameter": "rebuild_parameter",
  "torch._utils._rebuild_parameter_with_state": "rebuild_parameter_with_state",
  "torch._tensor._rebuild_from_type_v2": "rebuild_from_type_v2",
  "torch.Tensor": "Tensor",
  "torch._tensor.Tensor": "Tensor",
  "torch.nn.parameter.Parameter": "Parameter",
  "torch.Size": "Size",
  "_codecs.encode": "codecs_encode",
  "builtins.bytes": "bytes",
  "builtins.set": "set",
  "builtins.frozenset": "frozenset",
};

const t = (torchName: string, dtype: SafetensorsDtype | null, elementSize: number): TorchDtype => ({ torchName, dtype, elementSize });

/** Legacy typed storage classes (what `torch.save` names in persistent ids), by class name. */
const STORAGE_TYPES: Record<string, TorchDtype> = {
  DoubleStorage: t("torch.DoubleStorage", "F64", 8),
  FloatStorage: t("torch.FloatStorage", "F32", 4),
  HalfStorage: t("torch.HalfStorage", "F16", 2),
  BFloat16Storage: t("torch.BFloat16Storage", "BF16", 2),
  LongStorage: t("torch.LongStorage", "I64", 8),
  IntStorage: t("torch.IntStorage", "I32", 4),
  ShortStorage: t("torch.ShortStorage", "I16", 2),
  CharStorage: t("torch.CharStorage", "I8", 1),
  ByteStorage: t("torch.ByteStorage", "U8", 1),
  BoolStorage: t("torch.BoolStorage", "BOOL", 1),
  UntypedStorage: t("torch.UntypedStorage", "U8", 1),
  ComplexFloatStorage: t("torch.ComplexFloatStorage", null, 8),
  ComplexDoubleStorage: t("torch.ComplexDoubleStorage", null, 16),
  QInt8Storage: t("torch.QInt8Storage", null, 1),
  QUInt8Storage: t("torch.QUInt8Storage", null, 1),
  QInt32Storage: t("torch.QInt32Storage", null, 4),
  QUInt4x2Storage: t("torch.QUInt4x2Storage", null, 1),
  QUInt2x4Storage: t("torch.QUInt2x4Storage", null, 1),
};

/** dtype objects (`torch.float16` pickles as the global torch.float16), by attribute name. */
const DTYPES: Record<string, TorchDtype> = {};
for (const [names, dtype, size] of [
  [["float32", "float"], "F32", 4],
  [["float64", "double"], "F64", 8],
  [["float16", "half"], "F16", 2],
  [["bfloat16"], "BF16", 2],
  [["int64", "long"], "I64", 8],
  [["int32", "int"], "I32", 4],
  [["int16", "short"], "I16", 2],
  [["int8"], "I8", 1],
  [["uint8"], "U8", 1],
  [["uint16"], "U16", 2],
  [["uint32"], "U32", 4],
  [["uint64"], "U64", 8],
  [["bool"], "BOOL", 1],
  [["complex64", "cfloat"], null, 8],
  [["complex128", "cdouble"], null, 16],
  [["complex32", "chalf"], null, 4],
  [["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"], null, 1],
  [["qint8", "quint8", "quint4x2", "quint2x4"], null, 1],
  [["qint32"], null, 4],
] as [string[], SafetensorsDtype | null, number][]) {
  for (const name of names) DTYPES[name] = t(`torch.${name}`, dtype, size);
}

/** Python 2 module names that protocol-2 pickles from Python 3 use (pickle's fix_imports). */
const PY2_MODULES: Record<string, string> = { __builtin__: "builtins", copy_reg: "copyreg" };

/** The unpickler hooks for one file; `file` names it in every refusal. */
export class TorchPickleHooks implements PickleHooks {
  private readonly storages = new Map<string, StorageRef>();

  constructor(
    private readonly file: string,
    /** "zip": ('storage', type, key, location, numel); "legacy": the same plus view metadata. */
    private readonly format: "zip" | "legacy",
  ) {}

  /** Storages the pickle referred to, by key. */
  referencedStorages(): Map<string, StorageRef> {
    return this.storages;
  }

  findGlobal(module: string, name: string): unknown {
    const qualified = `${PY2_MODULES[module] ?? module}.${name}`;
    const role = FUNCTIONS[qualified];
    if (role !== undefined) return new TorchGlobal(`${module}.${name}`, role);
    const storage = storageTypeOf(module, name);
    if (storage !== undefined) return new TorchGlobal(`${module}.${name}`, "storage_type", storage);
    if (module === "torch" && Object.prototype.hasOwnProperty.call(DTYPES, name)) {
      return new TorchGlobal(`${module}.${name}`, "dtype", DTYPES[name]);
    }
    throw this.refuse(`it imports ${module}.${name}`);
  }

  call(callable: unknown, args: PyTuple): unknown {
    if (!(callable instanceof TorchGlobal)) throw this.refuse(`it calls a ${describe(callable)}, which is not a function`);
    const a = args.items;
    switch (callable.role) {
      case "OrderedDict":
        return this.orderedDict(a);
      case "rebuild_tensor":
        this.arity(callable, a, 4, 4);
        return this.tensor(a[0], storageTypeOfRef(a[0]), a[1], a[2], a[3]);
      case "rebuild_tensor_v2":
        this.arity(callable, a, 6, 7);
        this.checkHooks(a[5]);
        return this.tensor(a[0], storageTypeOfRef(a[0]), a[1], a[2], a[3]);
      case "rebuild_tensor_v3": {
        this.arity(callable, a, 7, 8);
        this.checkHooks(a[5]);
        const dtype = a[6];
        if (!(dtype instanceof TorchGlobal) || dtype.role !== "dtype") throw this.malformed("_rebuild_tensor_v3 without a dtype");
        return this.tensor(a[0], dtype.dtype!, a[1], a[2], a[3]);
      }
      case "rebuild_parameter":
      case "rebuild_parameter_with_state":
        this.arity(callable, a, callable.role === "rebuild_parameter" ? 3 : 4, callable.role === "rebuild_parameter" ? 3 : 4);
        if (!(a[0] instanceof TensorRef)) throw this.malformed(`${callable.qualifiedName} of something that is not a tensor`);
        this.checkHooks(a[2]);
        return a[0];
      case "rebuild_from_type_v2": {
        // (func, new_type, args, state): a tensor whose Python class or attributes are saved too;
        // only plain Tensor/Parameter classes are accepted, and the attributes are dropped.
        this.arity(callable, a, 4, 4);
        const [func, cls, inner] = a;
        if (!(cls instanceof TorchGlobal) || (cls.role !== "Tensor" && cls.role !== "Parameter")) {
          throw this.refuse(`it rebuilds a tensor as the class ${describe(cls)}`);
        }
        if (!(inner instanceof PyTuple)) throw this.malformed("_rebuild_from_type_v2 arguments are not a tuple");
        const result = this.call(func, inner);
        if (!(result instanceof TensorRef)) throw this.malformed("_rebuild_from_type_v2 did not build a tensor");
        return result;
      }
      case "Size": {
        this.arity(callable, a, 1, 1);
        return new PyTuple(this.intList(a[0], "torch.Size"));
      }
      case "codecs_encode":
        return this.encode(a);
      case "bytes":
        // Protocol 2 writes b"" as __builtin__.bytes(); nothing else calls it.
        if (a.length !== 0) throw this.refuse("it calls builtins.bytes with arguments");
        return new Uint8Array(0);
      case "set":
      case "frozenset": {
        this.arity(callable, a, 0, 1);
        const set = new PySet(callable.role === "frozenset");
        for (const item of a.length === 0 ? [] : iterable(a[0], this.malformed.bind(this))) {
          if (Array.isArray(item) || item instanceof PyDict) throw this.malformed("unhashable set item");
          set.items.add(item);
        }
        return set;
      }
      default:
        throw this.refuse(`it calls ${callable.qualifiedName}(...)`);
    }
  }

  newObject(cls: unknown, args: PyTuple, kwargs: PyDict | null): unknown {
    if (!(cls instanceof TorchGlobal)) throw this.refuse(`it creates an instance of a ${describe(cls)}`);
    if (kwargs !== null && kwargs.map.size > 0) throw this.refuse(`it creates ${cls.qualifiedName} with keyword arguments`);
    switch (cls.role) {
      case "OrderedDict":
        return this.orderedDict(args.items);
      case "set":
      case "frozenset":
        return this.call(cls, args);
      case "Parameter": {
        // Parameter.__new__(cls, data, requires_grad)
        const data = args.items[0];
        if (!(data instanceof TensorRef)) throw this.malformed("Parameter of something that is not a tensor");
        return data;
      }
      default:
        throw this.refuse(`it creates an instance of ${cls.qualifiedName}`);
    }
  }

  build(obj: unknown, state: unknown): void {
    // OrderedDict state dicts carry `_metadata`; tensors may carry Python attributes. Both are
    // kept as inert data (dicts only); BUILD on anything else would run its __setstate__.
    const dictState = state instanceof PyTuple ? state.items[0] : state;
    const slotState = state instanceof PyTuple ? state.items[1] : null;
    const isDictOrNone = (v: unknown) => v === null || v === undefined || v instanceof PyDict;
    if (!isDictOrNone(dictState) || !isDictOrNone(slotState) || (state instanceof PyTuple && state.items.length !== 2)) {
      throw this.refuse(`it sets object state from a ${describe(state)}`);
    }
    if (obj instanceof PyDict) {
      if (dictState instanceof PyDict) obj.attributes = dictState;
      return;
    }
    if (obj instanceof TensorRef) return;
    throw this.refuse(`it sets the state of a ${describe(obj)}`);
  }

  persistentLoad(pid: unknown): unknown {
    if (!(pid instanceof PyTuple) || pid.items.length === 0) {
      throw this.malformed(`a persistent id is a ${describe(pid)}, not a tuple`);
    }
    const kind = asText(pid.items[0]);
    if (kind === "module") throw this.refuse("it contains a pickled Python module (torch.save of a whole model, not a state dict)");
    if (kind !== "storage") throw this.malformed(`unknown persistent id kind "${String(kind)}"`);
    const expected = this.format === "zip" ? 5 : 6;
    if (pid.items.length !== expected) throw this.malformed(`a storage persistent id has ${pid.items.length} fields, expected ${expected}`);
    const [, type, rawKey, rawLocation, numel] = pid.items;
    if (!(type instanceof TorchGlobal) || type.role !== "storage_type") {
      throw this.malformed(`a storage persistent id names ${describe(type)} instead of a storage type`);
    }
    const key = asText(rawKey);
    const location = asText(rawLocation);
    if (key === null || location === null) throw this.malformed("a storage persistent id has a non-string key or location");
    if (!isCount(numel)) throw this.malformed(`storage "${key}" has a bad element count ${String(numel)}`);
    if (this.format === "legacy" && pid.items[5] !== null) {
      throw new LlavaError(`${this.file}: uses storage views (a pre-1.0 torch.save feature), which are not supported`);
    }
    const nbytes = numel * type.dtype!.elementSize;
    if (!Number.isSafeInteger(nbytes)) throw this.malformed(`storage "${key}" is impossibly large`);
    const known = this.storages.get(key);
    if (known !== undefined) {
      if (known.type.torchName !== type.dtype!.torchName || known.nbytes !== nbytes) {
        throw this.malformed(
          `storage "${key}" is declared twice, as ${known.type.torchName} (${known.nbytes} bytes) and ${type.dtype!.torchName} (${nbytes} bytes)`,
        );
      }
      return known;
    }
    const ref = new StorageRef(key, type.dtype!, nbytes, location);
    this.storages.set(key, ref);
    return ref;
  }

  private tensor(storage: unknown, type: TorchDtype | null, offset: unknown, size: unknown, stride: unknown): TensorRef {
    if (!isStorage(storage) || type === null) throw this.malformed("a tensor is rebuilt from something that is not a storage");
    if (!isCount(offset)) throw this.malformed(`a tensor has a bad storage offset ${String(offset)}`);
    const shape = this.intList(size, "tensor size");
    const strides = this.intList(stride, "tensor stride");
    if (strides.length !== shape.length) {
      throw this.malformed(`a tensor has ${shape.length} dimensions but ${strides.length} strides`);
    }
    return new TensorRef(storage, type, offset, shape, strides);
  }

  private orderedDict(args: unknown[]): PyDict {
    const dict = new PyDict(true);
    if (args.length > 1) throw this.malformed("OrderedDict takes at most one argument");
    if (args.length === 1) {
      for (const pair of iterable(args[0], this.malformed.bind(this))) {
        const items = pair instanceof PyTuple ? pair.items : Array.isArray(pair) ? pair : null;
        if (items === null || items.length !== 2) throw this.malformed("OrderedDict items are not pairs");
        if (Array.isArray(items[0]) || items[0] instanceof PyDict) throw this.malformed("unhashable OrderedDict key");
        dict.map.set(items[0], items[1]);
      }
    }
    return dict;
  }

  /** `_codecs.encode(text, "latin1")`: how protocol 2 spells a bytes object. */
  private encode(a: unknown[]): Uint8Array {
    const [text, encoding] = a;
    if (a.length !== 2 || typeof text !== "string" || typeof encoding !== "string") {
      throw this.malformed("_codecs.encode takes a string and an encoding");
    }
    const enc = encoding.toLowerCase().replace(/[-_]/g, "");
    if (enc === "utf8") return new TextEncoder().encode(text);
    if (enc !== "latin1" && enc !== "iso88591") throw this.malformed(`_codecs.encode with unsupported encoding "${encoding}"`);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c > 0xff) throw this.malformed("_codecs.encode: text is not latin-1");
      out[i] = c;
    }
    return out;
  }

  private intList(v: unknown, what: string): number[] {
    const items = v instanceof PyTuple ? v.items : Array.isArray(v) ? v : null;
    if (items === null || !items.every(isCount)) throw this.malformed(`${what} is not a tuple of non-negative integers`);
    return items as number[];
  }

  private checkHooks(hooks: unknown): void {
    // Always an empty OrderedDict in a saved tensor; real hooks would be functions.
    if (!(hooks instanceof PyDict)) throw this.malformed("tensor backward hooks are not a dict");
  }

  private arity(fn: TorchGlobal, args: unknown[], min: number, max: number): void {
    if (args.length < min || args.length > max) {
      throw this.malformed(`${fn.qualifiedName} called with ${args.length} arguments`);
    }
  }

  private refuse(why: string): LlavaError {
    return new LlavaError(`refusing to load ${this.file}: ${why}; only tensor data is accepted`);
  }

  private malformed(why: string): LlavaError {
    return new LlavaError(`${this.file}: not a valid torch.save checkpoint: ${why}`);
  }
}

/** `torch.FloatStorage`, `torch.cuda.HalfStorage`, `torch.storage.UntypedStorage`, ... */
function storageTypeOf(module: string, name: string): TorchDtype | undefined {
  if (!Object.prototype.hasOwnProperty.call(STORAGE_TYPES, name)) return undefined;
  if (name === "UntypedStorage") return module === "torch" || module === "torch.storage" ? STORAGE_TYPES[name] : undefined;
  return module === "torch" || module === "torch.cuda" ? STORAGE_TYPES[name] : undefined;
}

function storageTypeOfRef(storage: unknown): TorchDtype | null {
  return isStorage(storage) ? storage.type : null;
}

function isStorage(v: unknown): v is StorageRef {
  return v instanceof StorageRef;
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** A str, or a Python 2 byte string holding ASCII. */
function asText(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v instanceof Uint8Array) return String.fromCharCode(...v);
  return null;
}

function iterable(v: unknown, malformed: (why: string) => LlavaError): unknown[] {
  if (Array.isArray(v)) return v;
  if (v instanceof PyTuple) return v.items;
  if (v instanceof PySet) return [...v.items];
  throw malformed(`expected a list or tuple, got a ${describe(v)}`);
}

/** A short Python-ish description of a value, for messages. */
export function describe(v: unknown): string {
  if (v === null || v === undefined) return "None";
  if (v instanceof TorchGlobal) return v.qualifiedName;
  if (v instanceof TensorRef) return "tensor";
  if (v instanceof PyTuple) return "tuple";
  if (v instanceof PyDict) return v.ordered ? "OrderedDict" : "dict";
  if (v instanceof PySet) return "set";
  if (Array.isArray(v)) return "list";
  if (v instanceof Uint8Array) return "bytes";
  if (isStorage(v)) return "storage";
  if (typeof v === "string") return "str";
  if (typeof v === "number" || typeof v === "bigint") return "int";
  if (typeof v === "boolean") return "bool";
  return typeof v;
}

/** Nesting deeper than this is not a state dict. */
const MAX_DEPTH = 32;

/**
 * The named tensors of an unpickled checkpoint: a dict of name -> tensor, as `state_dict()` and
 * LLaVA's `mm_projector.bin` / `non_lora_trainables.bin` hold. Nested dicts (and lists) are
 * flattened with "." (`{"model": {"w": t}}` -> "model.w"); non-tensor values (an epoch number, a
 * config string) are skipped.
 */
export function collectTensors(root: unknown, file: string): Map<string, TensorRef> {
  if (!(root instanceof PyDict)) {
    throw new LlavaError(`${file}: holds a ${describe(root)}, not a dict of named tensors (a state dict)`);
  }
  const out = new Map<string, TensorRef>();
  const active = new Set<unknown>();
  const visit = (value: unknown, name: string, depth: number): void => {
    if (value instanceof TensorRef) {
      if (out.has(name)) throw new LlavaError(`${file}: two tensors are both named "${name}" after flattening nested dicts`);
      out.set(name, value);
      return;
    }
    const children: [string, unknown][] | null =
      value instanceof PyDict
        ? [...value.map].map(([k, v]) => [keyText(k, name, file), v])
        : Array.isArray(value) || value instanceof PyTuple
          ? (Array.isArray(value) ? value : value.items).map((v, i) => [String(i), v])
          : null;
    if (children === null) return;
    if (active.has(value)) throw new LlavaError(`${file}: the checkpoint's containers refer to themselves at "${name}"`);
    if (depth > MAX_DEPTH) throw new LlavaError(`${file}: dicts nested more than ${MAX_DEPTH} deep at "${name}"`);
    active.add(value);
    for (const [key, child] of children) visit(child, name === "" ? key : `${name}.${key}`, depth + 1);
    active.delete(value);
  };
  visit(root, "", 0);
  return out;
}

function keyText(key: unknown, parent: string, file: string): string {
  if (typeof key === "string") return key;
  if (typeof key === "number" || typeof key === "bigint") return String(key);
  throw new LlavaError(`${file}: a dict${parent === "" ? "" : ` at "${parent}"`} has a ${describe(key)} key; tensor names must be strings`);
}
