/**
 * A minimal reader for SentencePiece's `tokenizer.model` (a serialized `sentencepiece.ModelProto`,
 * see sentencepiece_model.proto). Only the fields a LLaMA tokenizer conversion needs are decoded;
 * everything else is skipped by wire type, so newer files with extra fields still load.
 */
import { LlavaError } from "../util/errors.js";

/** `ModelProto.SentencePiece.Type`. */
export const PieceType = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** `TrainerSpec.ModelType`. */
export const ModelType = { UNIGRAM: 1, BPE: 2, WORD: 3, CHAR: 4 } as const;

export interface SentencePiece {
  piece: string;
  score: number;
  type: number;
}

export interface SentencePieceModel {
  pieces: SentencePiece[];
  trainerSpec: {
    modelType: number;
    byteFallback: boolean;
    unkId: number;
    bosId: number;
    eosId: number;
    padId: number;
    unkPiece: string;
    bosPiece: string;
    eosPiece: string;
    padPiece: string;
  };
  normalizerSpec: {
    name: string;
    addDummyPrefix: boolean;
    removeExtraWhitespaces: boolean;
    hasPrecompiledCharsmap: boolean;
  };
}

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LENGTH_DELIMITED = 2;
const WIRE_FIXED32 = 5;

/** Walks the fields of one protobuf message; `file` only names the source in errors. */
class ProtoReader {
  private pos: number;
  private readonly view: DataView;
  private static readonly utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

  constructor(
    private readonly bytes: Uint8Array,
    private readonly file: string,
    start = 0,
    private readonly end = bytes.length,
  ) {
    this.pos = start;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  done(): boolean {
    return this.pos >= this.end;
  }

  private fail(what: string): never {
    throw new LlavaError(`${this.file}: corrupt SentencePiece model (${what} at byte ${this.pos})`);
  }

  /**
   * Reads a varint and returns its low 32 bits as a signed integer: exactly the proto semantics
   * of int32/enum/bool fields (negative int32 values are 10-byte varints).
   */
  varint(): number {
    let low = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      if (this.pos >= this.end) this.fail("truncated varint");
      const b = this.bytes[this.pos++]!;
      if (shift < 32) low |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) return low | 0;
    }
    return this.fail("varint longer than 10 bytes");
  }

  /** Reads the next field key; returns [fieldNumber, wireType]. */
  key(): [number, number] {
    const k = this.varint() >>> 0;
    const field = k >>> 3;
    if (field === 0) this.fail("field number 0");
    return [field, k & 7];
  }

  float32(): number {
    if (this.pos + 4 > this.end) this.fail("truncated float");
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  /** Returns [start, end) of a length-delimited payload and moves past it. */
  span(): [number, number] {
    const len = this.varint();
    if (len < 0 || this.pos + len > this.end) this.fail("length runs past the end");
    const start = this.pos;
    this.pos += len;
    return [start, this.pos];
  }

  string(): string {
    const [start, end] = this.span();
    try {
      return ProtoReader.utf8.decode(this.bytes.subarray(start, end));
    } catch {
      return this.fail("invalid UTF-8 in a string field");
    }
  }

  sub(): ProtoReader {
    const [start, end] = this.span();
    return new ProtoReader(this.bytes, this.file, start, end);
  }

  skip(wireType: number): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_FIXED64:
        if (this.pos + 8 > this.end) this.fail("truncated fixed64");
        this.pos += 8;
        return;
      case WIRE_LENGTH_DELIMITED:
        this.span();
        return;
      case WIRE_FIXED32:
        if (this.pos + 4 > this.end) this.fail("truncated fixed32");
        this.pos += 4;
        return;
      default:
        this.fail(`unsupported wire type ${wireType}`);
    }
  }

  expect(wireType: number, expected: number, field: string): void {
    if (wireType !== expected) this.fail(`field ${field} has wire type ${wireType}, expected ${expected}`);
  }
}

function readPiece(r: ProtoReader): SentencePiece {
  const piece: SentencePiece = { piece: "", score: 0, type: PieceType.NORMAL };
  while (!r.done()) {
    const [field, wire] = r.key();
    if (field === 1) {
      r.expect(wire, WIRE_LENGTH_DELIMITED, "piece");
      piece.piece = r.string();
    } else if (field === 2) {
      r.expect(wire, WIRE_FIXED32, "score");
      piece.score = r.float32();
    } else if (field === 3) {
      r.expect(wire, WIRE_VARINT, "type");
      piece.type = r.varint();
    } else {
      r.skip(wire);
    }
  }
  return piece;
}

function readTrainerSpec(r: ProtoReader): SentencePieceModel["trainerSpec"] {
  // Defaults are the proto2 defaults declared in sentencepiece_model.proto.
  const spec: SentencePieceModel["trainerSpec"] = {
    modelType: ModelType.UNIGRAM,
    byteFallback: false,
    unkId: 0,
    bosId: 1,
    eosId: 2,
    padId: -1,
    unkPiece: "<unk>",
    bosPiece: "<s>",
    eosPiece: "</s>",
    padPiece: "<pad>",
  };
  while (!r.done()) {
    const [field, wire] = r.key();
    switch (field) {
      case 3:
        r.expect(wire, WIRE_VARINT, "model_type");
        spec.modelType = r.varint();
        break;
      case 35:
        r.expect(wire, WIRE_VARINT, "byte_fallback");
        spec.byteFallback = r.varint() !== 0;
        break;
      case 40:
        r.expect(wire, WIRE_VARINT, "unk_id");
        spec.unkId = r.varint();
        break;
      case 41:
        r.expect(wire, WIRE_VARINT, "bos_id");
        spec.bosId = r.varint();
        break;
      case 42:
        r.expect(wire, WIRE_VARINT, "eos_id");
        spec.eosId = r.varint();
        break;
      case 43:
        r.expect(wire, WIRE_VARINT, "pad_id");
        spec.padId = r.varint();
        break;
      case 45:
        r.expect(wire, WIRE_LENGTH_DELIMITED, "unk_piece");
        spec.unkPiece = r.string();
        break;
      case 46:
        r.expect(wire, WIRE_LENGTH_DELIMITED, "bos_piece");
        spec.bosPiece = r.string();
        break;
      case 47:
        r.expect(wire, WIRE_LENGTH_DELIMITED, "eos_piece");
        spec.eosPiece = r.string();
        break;
      case 48:
        r.expect(wire, WIRE_LENGTH_DELIMITED, "pad_piece");
        spec.padPiece = r.string();
        break;
      default:
        r.skip(wire);
    }
  }
  return spec;
}

function readNormalizerSpec(r: ProtoReader): SentencePieceModel["normalizerSpec"] {
  const spec: SentencePieceModel["normalizerSpec"] = {
    name: "",
    addDummyPrefix: true,
    removeExtraWhitespaces: true,
    hasPrecompiledCharsmap: false,
  };
  while (!r.done()) {
    const [field, wire] = r.key();
    if (field === 1) {
      r.expect(wire, WIRE_LENGTH_DELIMITED, "name");
      spec.name = r.string();
    } else if (field === 2) {
      r.expect(wire, WIRE_LENGTH_DELIMITED, "precompiled_charsmap");
      const [start, end] = r.span();
      spec.hasPrecompiledCharsmap = end > start;
    } else if (field === 3) {
      r.expect(wire, WIRE_VARINT, "add_dummy_prefix");
      spec.addDummyPrefix = r.varint() !== 0;
    } else if (field === 4) {
      r.expect(wire, WIRE_VARINT, "remove_extra_whitespaces");
      spec.removeExtraWhitespaces = r.varint() !== 0;
    } else {
      r.skip(wire);
    }
  }
  return spec;
}

/** Decodes a serialized SentencePiece ModelProto. `file` is used in error messages. */
export function parseSentencePieceModel(bytes: Uint8Array, file = "tokenizer.model"): SentencePieceModel {
  const r = new ProtoReader(bytes, file);
  const pieces: SentencePiece[] = [];
  let trainerSpec: SentencePieceModel["trainerSpec"] | undefined;
  let normalizerSpec: SentencePieceModel["normalizerSpec"] | undefined;
  while (!r.done()) {
    const [field, wire] = r.key();
    if (field === 1) {
      r.expect(wire, WIRE_LENGTH_DELIMITED, "pieces");
      pieces.push(readPiece(r.sub()));
    } else if (field === 2) {
      r.expect(wire, WIRE_LENGTH_DELIMITED, "trainer_spec");
      trainerSpec = readTrainerSpec(r.sub());
    } else if (field === 3) {
      r.expect(wire, WIRE_LENGTH_DELIMITED, "normalizer_spec");
      normalizerSpec = readNormalizerSpec(r.sub());
    } else {
      r.skip(wire);
    }
  }
  if (pieces.length === 0) {
    throw new LlavaError(`${file}: not a SentencePiece model (no vocabulary pieces found)`);
  }
  if (pieces.some((p) => p.piece.length === 0)) {
    throw new LlavaError(`${file}: corrupt SentencePiece model (empty piece)`);
  }
  return {
    pieces,
    trainerSpec: trainerSpec ?? readTrainerSpec(new ProtoReader(new Uint8Array(0), file)),
    normalizerSpec: normalizerSpec ?? readNormalizerSpec(new ProtoReader(new Uint8Array(0), file)),
  };
}
