/**
 * Scenes of the world: 1-4 objects, each in its own grid cell, no two of the same colour and no two
 * of the same shape (so "the red object" and "the star" always name one object), over a plain or
 * gradient background. Training scenes never hold a held-out colour-shape pair; test scenes hold
 * at least one, so the test asks about combinations the model has never seen.
 */
import type { Rng } from "../util/random.js";
import { type Color, COLOR_NAMES, MAX_OBJECTS, MIN_OBJECTS, type Pair, pairKey, randomInt, type Shape, SHAPES, shuffled, type Size, SIZES, type Tone, TONE_NAMES, pick } from "./world.js";

export interface SceneObject {
  color: Color;
  shape: Shape;
  size: Size;
  /** the grid cell, 0-8 in reading order */
  cell: number;
  /** the centre's offset inside its cell, in cell widths (-0.04..0.04), so objects do not sit exactly on a lattice */
  dx: number;
  dy: number;
}

export type Background = { kind: "plain"; tone: Tone } | { kind: "gradient"; from: Tone; to: Tone; angle: number };

export interface Scene {
  /** the image's file name, relative to the image folder */
  image: string;
  background: Background;
  /** in reading order of their cells */
  objects: SceneObject[];
}

/**
 * How far an object's centre strays from its cell's centre, in cell widths. Small, because a
 * CLIP-style tower with one patch per cell sees the patch through one linear map: at 0.15 its
 * features told shapes apart on training images but not on the held-out pairs (a linear probe
 * 17-25% right), at 0.04 they do (91%).
 */
const JITTER = 0.04;

/** A scene; `heldOut` pairs are excluded (split "train") or one of them is included (split "test"). */
export function sampleScene(rng: Rng, image: string, split: "train" | "test", heldOut: Pair[]): Scene {
  const held = new Set(heldOut.map(([c, s]) => pairKey(c, s)));
  const count = MIN_OBJECTS + randomInt(rng, MAX_OBJECTS - MIN_OBJECTS + 1);
  const cells = shuffled(rng, [...Array(9).keys()]).slice(0, count);
  for (;;) {
    const colors = shuffled(rng, [...COLOR_NAMES]).slice(0, count);
    const shapes = shuffled(rng, [...SHAPES]).slice(0, count);
    if (split === "test") {
      // the first object carries a held-out pair; its colour and shape are taken out of the others' draw
      const [color, shape] = pick(rng, heldOut);
      replace(colors, color);
      replace(shapes, shape);
    }
    const pairs = colors.map((c, i) => pairKey(c, shapes[i]));
    if (split === "train" && pairs.some((p) => held.has(p))) continue;
    const objects = cells.map((cell, i) => ({
      color: colors[i],
      shape: shapes[i],
      size: pick(rng, SIZES),
      cell,
      dx: round((rng.next() * 2 - 1) * JITTER),
      dy: round((rng.next() * 2 - 1) * JITTER),
    }));
    return { image, background: sampleBackground(rng), objects: objects.sort((a, b) => a.cell - b.cell) };
  }
}

/** Puts `value` first in `items` (which holds distinct values), keeping the rest distinct from it. */
function replace<T>(items: T[], value: T): void {
  const at = items.indexOf(value);
  if (at >= 0) items.splice(at, 1);
  else items.pop();
  items.unshift(value);
}

function sampleBackground(rng: Rng): Background {
  if (rng.next() < 0.5) return { kind: "plain", tone: pick(rng, TONE_NAMES) };
  const from = pick(rng, TONE_NAMES);
  const to = pick(rng, TONE_NAMES.filter((t) => t !== from));
  return { kind: "gradient", from, to, angle: 45 * randomInt(rng, 8) };
}

const round = (x: number) => Math.round(x * 1000) / 1000;

/** The object with this colour or shape (scenes never repeat either). */
export const objectWith = (scene: Scene, key: { color?: Color; shape?: Shape }) =>
  scene.objects.find((o) => (key.color === undefined || o.color === key.color) && (key.shape === undefined || o.shape === key.shape));
