/**
 * A tiny reader for the int64 `.npy` fixtures ('<i8', C order), local to the tokenizer tests so
 * they do not depend on the project's general npy module.
 */
import fs from "node:fs";

export function readInt64Npy(file: string): number[] {
  const bytes = fs.readFileSync(file);
  if (bytes.subarray(0, 6).toString("latin1") !== "\x93NUMPY") throw new Error(`${file}: not a .npy file`);
  const major = bytes[6]!;
  const headerLen = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const headerStart = major === 1 ? 10 : 12;
  const header = bytes.subarray(headerStart, headerStart + headerLen).toString("latin1");
  if (!/'descr':\s*'<i8'/.test(header)) throw new Error(`${file}: expected '<i8', header ${header}`);
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${file}: Fortran order is not supported`);
  const data = bytes.subarray(headerStart + headerLen);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out: number[] = [];
  for (let off = 0; off + 8 <= data.byteLength; off += 8) out.push(Number(view.getBigInt64(off, true)));
  return out;
}
