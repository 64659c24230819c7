/**
 * `llava eval report`: the results of `llava eval run` as a Markdown table and a self-contained
 * HTML page (inline SVG bar charts, no script, no network), each score next to LLaVA-1.5-7B's
 * and 13B's published figures, then the scores per category.
 */
import fs from "node:fs";
import path from "node:path";
import { BENCHMARKS, REFERENCE_SCORES } from "./benchmarks.js";
import type { EvalCommand } from "./commands.js";
import { RESULTS_FOLDER, type BenchmarkResult } from "./run.js";
import { readText, writeText } from "./script-io.js";
import { LlavaError } from "../util/errors.js";

const REFERENCE_MODELS = ["LLaVA-1.5-7B", "LLaVA-1.5-13B"];

/** The figure as the tables show it: one decimal, as the published ones. */
const shown = (x: number | null) => (x === null ? "–" : x.toFixed(1));

/** Our cell: the score, or where the submission went. */
const ours = (r: BenchmarkResult) => (r.value !== null ? shown(r.value) : "submission written");

/** The results in the order of the benchmark table; a file that is not a result is refused. */
function readResults(dir: string): BenchmarkResult[] {
  const folder = path.join(dir, RESULTS_FOLDER);
  if (!fs.existsSync(folder)) throw new LlavaError(`eval report: ${folder}: no such folder (the --out of llava eval run)`);
  const results = BENCHMARKS.flatMap((b) => {
    const file = path.join(folder, `${b.name}.json`);
    if (!fs.existsSync(file)) return [];
    let r: BenchmarkResult;
    try {
      r = JSON.parse(readText(file, "result")) as BenchmarkResult;
    } catch (err) {
      if (err instanceof LlavaError) throw err;
      throw new LlavaError(`eval report: ${file} is not JSON: ${(err as Error).message}`);
    }
    if (r?.benchmark !== b.name || !(r.value === null || typeof r.value === "number")) throw new LlavaError(`eval report: ${file} is not a result of llava eval run`);
    return [r];
  });
  if (results.length === 0) throw new LlavaError(`eval report: ${folder} holds no results`);
  return results;
}

export function markdown(results: BenchmarkResult[]): string {
  const models = [...new Set(results.map((r) => r.model))].join(", ");
  const lines = [
    `# Evaluation of ${models}`,
    "",
    `| Benchmark | Metric | Ours | ${REFERENCE_MODELS.join(" | ")} |`,
    "|---|---|---|---|---|",
    ...results.map((r) => `| ${r.title} | ${r.metric ?? "server score"} | ${ours(r)} | ${REFERENCE_SCORES[r.benchmark].map(shown).join(" | ")} |`),
    "",
    "Reference figures: LLaVA-1.5 (full finetune), docs/MODEL_ZOO.md of the reference.",
  ];
  for (const r of results) {
    if (r.submission) lines.push("", `${r.title}: submission ${r.submission.file} goes to ${r.submission.to}.`);
    const categories = Object.entries(r.categories);
    if (categories.length === 0) continue;
    lines.push("", `## ${r.title} per category`, "", "| Category | Score |", "|---|---|", ...categories.map(([c, v]) => `| ${c} | ${shown(v)} |`));
  }
  return lines.join("\n") + "\n";
}

const escapeHtml = (s: string) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!);

const BAR_HEIGHT = 18;
const LABEL_WIDTH = 200;
const BAR_WIDTH = 360;
const COLORS = ["#d9480f", "#868e96", "#495057"];

/** A horizontal bar chart, bars scaled to the largest value. */
function barChart(title: string, bars: Array<{ label: string; value: number; color: string }>): string {
  const max = Math.max(...bars.map((b) => b.value), 1e-9);
  const height = bars.length * (BAR_HEIGHT + 4) + 24;
  const rows = bars.map((b, i) => {
    const y = 22 + i * (BAR_HEIGHT + 4);
    const w = (Math.max(b.value, 0) / max) * BAR_WIDTH;
    return (
      `<text x="${LABEL_WIDTH - 6}" y="${y + 13}" text-anchor="end">${escapeHtml(b.label)}</text>` +
      `<rect x="${LABEL_WIDTH}" y="${y}" width="${w.toFixed(1)}" height="${BAR_HEIGHT}" fill="${b.color}"/>` +
      `<text x="${(LABEL_WIDTH + w + 4).toFixed(1)}" y="${y + 13}">${shown(b.value)}</text>`
    );
  });
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${LABEL_WIDTH + BAR_WIDTH + 60}" height="${height}" role="img" aria-label="${escapeHtml(title)}">` +
    `<text x="0" y="14" font-weight="bold">${escapeHtml(title)}</text>${rows.join("")}</svg>`
  );
}

export function html(results: BenchmarkResult[]): string {
  const md = markdown(results);
  const title = md.split("\n")[0].replace(/^# /, "");
  const rows = results
    .map((r) => `<tr><td>${escapeHtml(r.title)}</td><td>${escapeHtml(r.metric ?? "server score")}</td><td>${escapeHtml(ours(r))}</td>${REFERENCE_SCORES[r.benchmark].map((x) => `<td>${shown(x)}</td>`).join("")}</tr>`)
    .join("\n");
  const charts = results.map((r) => {
    const references = REFERENCE_SCORES[r.benchmark].map((value, i) => ({ label: REFERENCE_MODELS[i], value, color: COLORS[i + 1] }));
    const bars = r.value === null ? references : [{ label: "ours", value: r.value, color: COLORS[0] }, ...references];
    const categories = Object.entries(r.categories).map(([label, value]) => ({ label, value, color: COLORS[0] }));
    const submission = r.submission ? `<p>Submission written: <code>${escapeHtml(r.submission.file)}</code>, for ${escapeHtml(r.submission.to)}.</p>` : "";
    return `<section><h2>${escapeHtml(r.title)}</h2>${submission}${barChart(r.metric ?? "published scores", bars)}${categories.length ? barChart("per category", categories) : ""}</section>`;
  });
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
td:first-child, td:nth-child(2) { text-align: left; }
svg text { font-size: 12px; font-family: sans-serif; }
</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
<table>
<tr><th>Benchmark</th><th>Metric</th><th>Ours</th>${REFERENCE_MODELS.map((m) => `<th>${m}</th>`).join("")}</tr>
${rows}
</table>
<p>Reference figures: LLaVA-1.5 (full finetune), docs/MODEL_ZOO.md of the reference.</p>
${charts.join("\n")}
</body>
</html>
`;
}

export const evalReport: EvalCommand = {
  name: "report",
  summary: "Markdown and HTML report of llava eval run's results, next to LLaVA-1.5-7B/13B",
  options: {
    "--results": { type: "str", default: "./eval-results", help: "the --out folder of llava eval run" },
    "--out": { type: "str", default: "report", help: "writes <out>.md and <out>.html" },
  },
  async run(args) {
    const results = readResults(String(args.results));
    const out = String(args.out);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    writeText(`${out}.md`, markdown(results));
    writeText(`${out}.html`, html(results));
    process.stderr.write(`report written: ${out}.md, ${out}.html\n`);
  },
};
