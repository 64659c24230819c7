/**
 * A minimal .npy reader for the image tests (little-endian float32 / int64, C order), kept
 * local so these tests do not depend on the project's own npy module.
 */
import { readFileSync } from "node:fs";

export interface NpyArray {
  dtype: "<f4" | "<i8";
  shape: number[];
  data: Float32Array | BigInt64Array;
}

export function readNpy(file: string): NpyArray {
  const buf = readFileSync(file);
  if (buf.readUInt32BE(0) !== 0x934e554d || buf[4] !== 0x50 || buf[5] !== 0x59) {
    throw new Error(`${file}: not an .npy file`);
  }
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const headerStart = major === 1 ? 10 : 12;
  const header = buf.toString("latin1", headerStart, headerStart + headerLen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeText === undefined) throw new Error(`${file}: malformed header ${header}`);
  if (fortran !== "False") throw new Error(`${file}: Fortran order is not supported`);
  const shape = shapeText
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const start = headerStart + headerLen;
  // Copy so the typed array is aligned regardless of the header length.
  const body = new Uint8Array(buf.subarray(start, start + count * (descr === "<f4" ? 4 : 8)));
  if (descr === "<f4") return { dtype: descr, shape, data: new Float32Array(body.buffer, 0, count) };
  if (descr === "<i8") return { dtype: descr, shape, data: new BigInt64Array(body.buffer, 0, count) };
  throw new Error(`${file}: dtype ${descr} is not supported`);
}
