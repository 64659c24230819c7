/**
 * The procedural visual world's vocabulary: the shapes, colours, sizes and grid cells objects are
 * made of, the backgrounds they stand on, and the rule that picks the colour-shape pairs held out
 * of training. Every other part of `data synth` (sampling, drawing, wording, scoring) reads these.
 */
import { Rng } from "../util/random.js";

export const SHAPES = ["circle", "square", "triangle", "star", "diamond", "cross", "hexagon", "ring"] as const;
export type Shape = (typeof SHAPES)[number];

/** Saturated colours, far from every background; each name starts with its own LLaMA token. */
export const COLORS = {
  red: [220, 30, 30],
  green: [30, 160, 50],
  blue: [30, 70, 225],
  yellow: [240, 210, 20],
  purple: [135, 45, 175],
  orange: [250, 135, 20],
  pink: [250, 125, 200],
  brown: [125, 70, 25],
} as const satisfies Record<string, readonly [number, number, number]>;
export type Color = keyof typeof COLORS;
export const COLOR_NAMES = Object.keys(COLORS) as Color[];

export const SIZES = ["small", "large"] as const;
export type Size = (typeof SIZES)[number];

/** The 3x3 grid's cells in reading order; cell = 3 * row + column. */
export const CELLS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"] as const;
export type Cell = (typeof CELLS)[number];
export const rowOf = (cell: number) => Math.floor(cell / 3);
export const columnOf = (cell: number) => cell % 3;

/**
 * Greys and faint tints: plain backgrounds and the ends of gradients. Their channels differ by
 * at most 40, every object colour's by 100 or more, so no background passes for an object.
 */
export const BACKGROUND_TONES = {
  white: [250, 250, 250],
  ivory: [245, 240, 215],
  mist: [215, 225, 245],
  silver: [205, 205, 205],
  gray: [140, 140, 140],
  charcoal: [70, 70, 70],
  slate: [40, 50, 75],
  black: [15, 15, 15],
} as const satisfies Record<string, readonly [number, number, number]>;
export type Tone = keyof typeof BACKGROUND_TONES;
export const TONE_NAMES = Object.keys(BACKGROUND_TONES) as Tone[];

/** The file names `data synth` writes under `--out`. */
export const SYNTH_FILES = {
  images: "images",
  cells: "cells.json",
  pretrain: "pretrain.json",
  finetune: "finetune.json",
  questions: "test.jsonl",
  answers: "test_answers.jsonl",
  scenes: "scenes.json",
  world: "world.json",
} as const;

export const MIN_OBJECTS = 1;
export const MAX_OBJECTS = 4;

export type Pair = [Color, Shape];
export const pairKey = (color: string, shape: string) => `${color} ${shape}`;

/**
 * One held-out shape per colour, a different one for each (a seeded permutation), so every colour
 * and every shape is still seen in training, only never together in these pairs.
 */
export function heldOutPairs(seed: number): Pair[] {
  const rng = new Rng(seed ^ 0x5eed);
  const shapes = shuffled(rng, [...SHAPES]);
  return COLOR_NAMES.map((color, i) => [color, shapes[i % shapes.length]]);
}

export const randomInt = (rng: Rng, n: number) => Math.floor(rng.next() * n);
export const pick = <T>(rng: Rng, items: readonly T[]): T => items[randomInt(rng, items.length)];

/** Fisher-Yates, in place; returns `items`. */
export function shuffled<T>(rng: Rng, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = randomInt(rng, i + 1);
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}
