/**
 * LLaVA-NeXT (1.6) AnyRes feature merging: the features of an image's tiles [1 + rows*cols, n, C]
 * become one sequence. `spatial_unpad` (the released models) lays the tile features out as one
 * grid, crops the rows or columns that only saw padding, and ends every grid row with the
 * learned `image_newline`; `spatial` keeps the full grid without newlines; `flat` concatenates.
 * Written with differentiable ops so gradients reach the projector and the newline.
 */
import { concat, permute, reshape, slice } from "../tensor/ops.js";
import type { Tensor } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";

export type PatchMergeType = "flat" | "spatial" | "spatial_unpad";

/**
 * Rows or columns to keep of a [C, H, W] grid for an original image of `width` x `height`.
 * HF rounds the scaled size to 7 decimals before truncating; the original LLaVA code truncates.
 */
export function unpaddedRange(gridH: number, gridW: number, width: number, height: number, hfRounding: boolean) {
  const size = (x: number) => Math.trunc(hfRounding ? Math.round(x * 1e7) / 1e7 : x);
  if (width / height > gridW / gridH) {
    const newH = size(height * (gridW / width));
    const pad = Math.floor((gridH - newH) / 2);
    return { axis: 1, start: pad, end: gridH - pad };
  }
  const newW = size(width * (gridH / height));
  const pad = Math.floor((gridW - newW) / 2);
  return { axis: 2, start: pad, end: gridW - pad };
}

export interface AnyresLayout {
  /** the tile grid the image was cut into (base image excluded) */
  rows: number;
  cols: number;
  /** original image size */
  width: number;
  height: number;
}

/** Merges one image's tile features [1 + rows*cols, n, C] into [M, C]. */
export function mergeAnyresFeatures(
  features: Tensor, layout: AnyresLayout, mergeType: PatchMergeType, newline: Tensor | null, hfRounding: boolean,
): Tensor {
  const [tiles, n, c] = features.shape;
  if (mergeType === "flat") return reshape(features, [tiles * n, c]);
  const unpad = mergeType === "spatial_unpad";
  if (unpad && !newline) throw new LlavaError("spatial_unpad merging needs the image_newline weight");
  const base = reshape(slice(features, 0, 0, 1), [n, c]);
  if (tiles === 1) return unpad ? concat([base, reshape(newline!, [1, c])], 0) : base;
  const { rows, cols } = layout;
  const side = Math.round(Math.sqrt(n));
  if (side * side !== n || tiles - 1 !== rows * cols) {
    throw new LlavaError(`AnyRes merge: ${tiles - 1} tiles of ${n} features do not form a ${rows}x${cols} grid`);
  }
  const grid = reshape(slice(features, 0, 1, tiles), [rows, cols, side, side, c]);
  if (!unpad) {
    // base, then (rows, side, cols, side) row-major over the whole grid
    return concat([base, reshape(permute(grid, [0, 2, 1, 3, 4]), [rows * side * cols * side, c])], 0);
  }
  // [C, rows*side, cols*side], then crop the padding
  let full = reshape(permute(grid, [4, 0, 2, 1, 3]), [c, rows * side, cols * side]);
  const keep = unpaddedRange(rows * side, cols * side, layout.width, layout.height, hfRounding);
  full = slice(full, keep.axis, keep.start, keep.end);
  const [, h] = full.shape;
  // A very wide image can keep no row at all (its height scales to under one feature); the
  // reference then concatenates an empty grid and so adds no newline either: the base alone.
  if (h === 0) return base;
  const column = concat(Array(h).fill(reshape(newline!, [c, 1, 1])), 1);
  const withNewline = concat([full, column], 2);
  const tokens = permute(reshape(withNewline, [c, h * withNewline.dim(2)]), [1, 0]);
  return concat([base, tokens], 0);
}
