/**
 * Options as the reference scripts' argparse reads them, so their shell scripts run unchanged
 * with `python -m llava.eval.X` replaced by `llava eval X`: `--name value` or `--name=value`,
 * dashes and underscores alike, argparse's types and defaults, flags (store_true). A bad
 * command line is one line and exit status 2, as argparse exits.
 */
import { UsageError } from "../util/errors.js";

export type ArgType = "str" | "int" | "float" | "flag";

export interface ArgSpec {
  type: ArgType;
  /** argparse's default (flags: false; others: null when not given) */
  default?: string | number | boolean | null;
  /** argparse's required=True */
  required?: boolean;
  help?: string;
}

export type ArgValues = Record<string, string | number | boolean | null>;

/** The option's canonical key: argparse's dest (dashes become underscores). */
const destOf = (name: string) => name.replace(/^--/, "").replaceAll("-", "_");

/**
 * Parses `argv` against `specs` (keyed by the option as the script spells it, e.g.
 * "--annotation-dir"); returns values by argparse dest ("annotation_dir").
 */
export function parseArgs(script: string, argv: string[], specs: Record<string, ArgSpec>): ArgValues {
  const byDest = new Map(Object.entries(specs).map(([name, spec]) => [destOf(name), { name, spec }]));
  const values: ArgValues = {};
  for (const [dest, { spec }] of byDest) values[dest] = spec.type === "flag" ? false : spec.default ?? null;
  const fail = (msg: string): never => {
    throw new UsageError(`eval ${script}: ${msg}`);
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) fail(`unrecognized arguments: ${argv.slice(i).join(" ")}`);
    const eq = arg.indexOf("=");
    const key = destOf(eq < 0 ? arg : arg.slice(0, eq));
    const known = byDest.get(key);
    if (!known) fail(`unrecognized arguments: ${arg}`);
    const { name, spec } = known!;
    if (spec.type === "flag") {
      if (eq >= 0) fail(`argument ${name}: ignored explicit argument '${arg.slice(eq + 1)}'`);
      values[key] = true;
      continue;
    }
    const raw = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    if (raw === undefined || (eq < 0 && raw.startsWith("--"))) fail(`argument ${name}: expected one argument`);
    values[key] = convert(raw!, spec.type, name, fail);
  }
  for (const [dest, { name, spec }] of byDest) {
    if (spec.required && values[dest] === null) fail(`the following arguments are required: ${name}`);
  }
  return values;
}

function convert(raw: string, type: ArgType, name: string, fail: (msg: string) => never): string | number {
  if (type === "str") return raw;
  const x = type === "int" ? (/^\s*[-+]?\d+\s*$/.test(raw) ? Number(raw) : NaN) : Number(raw.trim() === "" ? NaN : raw);
  if (Number.isNaN(x) && !(type === "float" && /^\s*[-+]?nan\s*$/i.test(raw))) fail(`argument ${name}: invalid ${type} value: '${raw}'`);
  return x;
}

/** Usage text of a script's options. */
export function usage(script: string, specs: Record<string, ArgSpec>): string {
  const lines = Object.entries(specs).map(([name, s]) => `  ${name}${s.type === "flag" ? "" : ` ${s.type.toUpperCase()}`}${s.help ? `  ${s.help}` : ""}${s.default !== undefined && s.default !== null && s.type !== "flag" ? ` (default ${s.default})` : ""}`);
  return `usage: llava eval ${script} [options]\n${lines.join("\n")}\n`;
}
