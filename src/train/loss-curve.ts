/**
 * The loss curve of a run as a small self-contained SVG: loss against optimizer step, with
 * labelled axes, so a run's folder shows at a glance whether it learned.
 */
import { writeFileAtomic, writeFully } from "../io/files.js";

export interface CurvePoint {
  step: number;
  loss: number;
}

const W = 640;
const H = 360;
const M = { left: 64, right: 16, top: 28, bottom: 44 };

/** Up to `count` round tick values covering [lo, hi]. */
function ticks(lo: number, hi: number, count = 5): number[] {
  if (hi <= lo) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");

/** The SVG document for `points` (finite losses only). */
export function lossCurveSvg(points: CurvePoint[], title = "training loss"): string {
  const pts = points.filter((p) => Number.isFinite(p.loss));
  const steps = pts.map((p) => p.step);
  const losses = pts.map((p) => p.loss);
  const [x0, x1] = pts.length ? [Math.min(...steps), Math.max(...steps)] : [0, 1];
  let [y0, y1] = pts.length ? [Math.min(...losses), Math.max(...losses)] : [0, 1];
  if (y1 - y0 < 1e-12) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const sx = (s: number) => M.left + ((s - x0) / Math.max(x1 - x0, 1)) * (W - M.left - M.right);
  const sy = (l: number) => H - M.bottom - ((l - y0) / (y1 - y0)) * (H - M.top - M.bottom);
  const f = (v: number) => v.toFixed(1);
  const lines: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="13">${esc(title)}</text>`,
    `<path d="M${M.left},${M.top}V${H - M.bottom}H${W - M.right}" fill="none" stroke="black"/>`,
  ];
  for (const t of ticks(y0, y1)) {
    lines.push(`<line x1="${M.left - 4}" x2="${W - M.right}" y1="${f(sy(t))}" y2="${f(sy(t))}" stroke="#ddd"/>`);
    lines.push(`<text x="${M.left - 6}" y="${f(sy(t) + 4)}" text-anchor="end">${t}</text>`);
  }
  for (const t of ticks(x0, x1).filter(Number.isInteger)) {
    lines.push(`<text x="${f(sx(t))}" y="${H - M.bottom + 16}" text-anchor="middle">${t}</text>`);
  }
  lines.push(`<text x="${(M.left + W - M.right) / 2}" y="${H - 8}" text-anchor="middle">step</text>`);
  lines.push(`<text transform="translate(14 ${(M.top + H - M.bottom) / 2}) rotate(-90)" text-anchor="middle">loss</text>`);
  if (pts.length) {
    const d = pts.map((p, i) => `${i ? "L" : "M"}${f(sx(p.step))},${f(sy(p.loss))}`).join("");
    lines.push(`<path d="${d}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>`);
  }
  lines.push("</svg>");
  return lines.join("\n") + "\n";
}

export function writeLossCurve(file: string, points: CurvePoint[]): void {
  const svg = lossCurveSvg(points);
  writeFileAtomic(file, (fd) => writeFully(fd, Buffer.from(svg, "utf8")));
}
