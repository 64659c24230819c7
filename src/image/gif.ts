/**
 * Just enough GIF parsing to recover what PIL shows for transparent pixels of the first frame:
 * PIL keeps the frame in palette mode, so `convert("RGB")` turns the transparent index into its
 * palette colour, whereas sharp (libvips) decodes those pixels as (0, 0, 0, 0).
 */

/** The palette colour of the first frame's transparent index, or null when it has none. */
export function gifFirstFrameTransparentColor(bytes: Uint8Array): [number, number, number] | null {
  const ascii = String.fromCharCode(...bytes.subarray(0, 6));
  if (ascii !== "GIF87a" && ascii !== "GIF89a") return null;
  let pos = 6;
  if (bytes.length < pos + 7) return null;
  const screenFlags = bytes[pos + 4];
  pos += 7;
  let palette: Uint8Array | null = null;
  if (screenFlags & 0x80) {
    const size = 3 * (1 << ((screenFlags & 0x07) + 1));
    palette = bytes.subarray(pos, pos + size);
    pos += size;
  }
  let transparentIndex: number | null = null;
  while (pos < bytes.length) {
    const block = bytes[pos];
    if (block === 0x21) {
      const label = bytes[pos + 1];
      pos += 2;
      // Graphic Control Extension: size 4, flags, delay (2), transparent index.
      if (label === 0xf9 && bytes[pos] >= 4) {
        const flags = bytes[pos + 1];
        transparentIndex = flags & 0x01 ? bytes[pos + 4] : null;
      }
      pos = skipSubBlocks(bytes, pos);
    } else if (block === 0x2c) {
      const imageFlags = bytes[pos + 9];
      if (imageFlags & 0x80) {
        const size = 3 * (1 << ((imageFlags & 0x07) + 1));
        palette = bytes.subarray(pos + 10, pos + 10 + size);
      }
      break;
    } else {
      return null; // trailer or malformed: nothing to fix up
    }
  }
  if (transparentIndex === null) return null;
  const at = transparentIndex * 3;
  if (!palette || at + 2 >= palette.length) return [0, 0, 0];
  return [palette[at], palette[at + 1], palette[at + 2]];
}

function skipSubBlocks(bytes: Uint8Array, pos: number): number {
  while (pos < bytes.length) {
    const len = bytes[pos];
    pos += 1 + len;
    if (len === 0) break;
  }
  return pos;
}
