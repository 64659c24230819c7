/** Draws a scene as SVG and renders it to PNG bytes with sharp (librsvg): same scene, same bytes. */
import sharp from "sharp";
import { BACKGROUND_TONES, columnOf, COLORS, rowOf, type Shape, type Size } from "./world.js";
import type { Background, Scene, SceneObject } from "./scene.js";

/** An object's radius, in cell widths: large ones nearly fill their cell. */
const RADIUS: Record<Size, number> = { small: 0.2, large: 0.34 };

const rgb = ([r, g, b]: readonly number[]) => `rgb(${r},${g},${b})`;
const num = (x: number) => Number(x.toFixed(2));

/** `n` points on a circle of radius `r` around (cx, cy), the first straight up, radii alternating with `inner` when given. */
function polygon(cx: number, cy: number, r: number, n: number, inner?: number, turn = 0): string {
  const points: string[] = [];
  const count = inner === undefined ? n : 2 * n;
  for (let i = 0; i < count; i++) {
    const radius = inner !== undefined && i % 2 ? inner : r;
    const angle = -Math.PI / 2 + turn + (2 * Math.PI * i) / count;
    points.push(`${num(cx + radius * Math.cos(angle))},${num(cy + radius * Math.sin(angle))}`);
  }
  return `<polygon points="${points.join(" ")}"`;
}

function shapeElement(shape: Shape, cx: number, cy: number, r: number): string {
  switch (shape) {
    case "circle":
      return `<circle cx="${num(cx)}" cy="${num(cy)}" r="${num(r)}"`;
    case "square":
      return `<rect x="${num(cx - 0.8 * r)}" y="${num(cy - 0.8 * r)}" width="${num(1.6 * r)}" height="${num(1.6 * r)}"`;
    case "triangle":
      return polygon(cx, cy + 0.15 * r, 1.1 * r, 3);
    case "star":
      return polygon(cx, cy + 0.1 * r, 1.1 * r, 5, 0.45 * r);
    case "diamond":
      return polygon(cx, cy, r, 4);
    case "hexagon":
      return polygon(cx, cy, r, 6, undefined, Math.PI / 6);
    case "cross": {
      const a = 0.3 * r, b = 0.95 * r;
      const pts = [[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a], [-b, a], [-b, -a], [-a, -a]];
      return `<polygon points="${pts.map(([x, y]) => `${num(cx + x)},${num(cy + y)}`).join(" ")}"`;
    }
    case "ring":
      // a thick outline: the fill is drawn as the stroke
      return `<circle cx="${num(cx)}" cy="${num(cy)}" r="${num(0.78 * r)}" fill="none" stroke-width="${num(0.4 * r)}"`;
  }
}

function objectSvg(o: SceneObject, size: number): string {
  const cell = size / 3;
  const cx = (columnOf(o.cell) + 0.5 + o.dx) * cell;
  const cy = (rowOf(o.cell) + 0.5 + o.dy) * cell;
  const color = rgb(COLORS[o.color]);
  const element = shapeElement(o.shape, cx, cy, RADIUS[o.size] * cell);
  return o.shape === "ring" ? `${element} stroke="${color}"/>` : `${element} fill="${color}"/>`;
}

function backgroundSvg(bg: Background, size: number): string {
  if (bg.kind === "plain") return `<rect width="${size}" height="${size}" fill="${rgb(BACKGROUND_TONES[bg.tone])}"/>`;
  const rad = (bg.angle * Math.PI) / 180;
  const [x, y] = [Math.cos(rad) / 2, Math.sin(rad) / 2];
  return (
    `<defs><linearGradient id="bg" x1="${num(0.5 - x)}" y1="${num(0.5 - y)}" x2="${num(0.5 + x)}" y2="${num(0.5 + y)}">` +
    `<stop offset="0" stop-color="${rgb(BACKGROUND_TONES[bg.from])}"/><stop offset="1" stop-color="${rgb(BACKGROUND_TONES[bg.to])}"/>` +
    `</linearGradient></defs><rect width="${size}" height="${size}" fill="url(#bg)"/>`
  );
}

export function sceneSvg(scene: Scene, size: number): string {
  const body = [backgroundSvg(scene.background, size), ...scene.objects.map((o) => objectSvg(o, size))].join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}" viewBox="0 0 ${size} ${size}">${body}</svg>`;
}

/** The scene as an RGB PNG of `size` x `size` pixels. */
export function renderScene(scene: Scene, size: number): Promise<Buffer> {
  return sharp(Buffer.from(sceneSvg(scene, size))).removeAlpha().png().toBuffer();
}
