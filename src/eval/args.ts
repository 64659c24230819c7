/**
 * Options as the reference scripts' argparse reads them, so their shell scripts run unchanged
 * with `python -m llava.eval.X` replaced by `llava eval X`: `--name value` or `--name=value`,
 * dashes and underscores alike, short aliases (`-q value`), lists (nargs '+' and '*'),
 * argparse's types and defaults, flags (store_true). A bad
 * command line is one line and exit status 2, as argparse exits.
 */
import { UsageError } from "../util/errors.js";

export type ArgType = "str" | "int" | "float" | "flag";

export interface ArgSpec {
  type: ArgType;
  /** argparse's default (flags: false; others: null when not given) */
  default?: string | number | boolean | string[] | null;
  /** argparse's required=True */
  required?: boolean;
  /** the one-letter alias, e.g. "-q" */
  short?: string;
  /** argparse's nargs '+' (one or more values) or '*' (any number): the value is a list */
  nargs?: "+" | "*";
  help?: string;
}

export type ArgValues = Record<string, string | number | boolean | string[] | null>;

/** The option's canonical key: argparse's dest (dashes become underscores). */
const destOf = (name: string) => name.replace(/^--/, "").replaceAll("-", "_");

/**
 * Parses `argv` against `specs` (keyed by the option as the script spells it, e.g.
 * "--annotation-dir"); returns values by argparse dest ("annotation_dir").
 */
export function parseArgs(script: string, argv: string[], specs: Record<string, ArgSpec>): ArgValues {
  const byDest = new Map(Object.entries(specs).map(([name, spec]) => [destOf(name), { name, spec }]));
  const destOfShort = new Map(Object.entries(specs).flatMap(([name, spec]) => (spec.short ? [[spec.short, destOf(name)]] : [])));
  const values: ArgValues = {};
  for (const [dest, { spec }] of byDest) values[dest] = spec.type === "flag" ? false : spec.default ?? null;
  const fail = (msg: string): never => {
    throw new UsageError(`eval ${script}: ${msg}`);
  };
  // as argparse: "-" alone and negative numbers are values
  const isOption = (a: string | undefined) => a !== undefined && /^-[^\d.]/.test(a);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!isOption(arg)) fail(`unrecognized arguments: ${argv.slice(i).join(" ")}`);
    // "--name=value", "--name", "-q", "-q=value" or "-qvalue"
    const long = arg.startsWith("--");
    const eq = long ? arg.indexOf("=") : arg.length > 2 ? (arg[2] === "=" ? 3 : 2) : -1;
    const key = long ? destOf(eq < 0 ? arg : arg.slice(0, eq)) : destOfShort.get(arg.slice(0, 2));
    const known = key === undefined ? undefined : byDest.get(key);
    if (!known) fail(`unrecognized arguments: ${arg}`);
    const { name, spec } = known!;
    const attached = eq < 0 ? undefined : arg.slice(long ? eq + 1 : eq);
    if (spec.type === "flag") {
      if (attached !== undefined) fail(`argument ${name}: ignored explicit argument '${attached}'`);
      values[key!] = true;
      continue;
    }
    if (spec.nargs) {
      const list = attached !== undefined ? [attached] : [];
      while (attached === undefined && i + 1 < argv.length && !isOption(argv[i + 1])) list.push(argv[++i]);
      if (spec.nargs === "+" && list.length === 0) fail(`argument ${name}: expected at least one argument`);
      values[key!] = list;
      continue;
    }
    const raw = attached ?? argv[++i];
    if (raw === undefined || (attached === undefined && isOption(raw))) fail(`argument ${name}: expected one argument`);
    values[key!] = convert(raw!, spec.type, name, fail);
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
  const metavar = (s: ArgSpec) => {
    const one = s.type.toUpperCase();
    return s.type === "flag" ? "" : s.nargs === "+" ? ` ${one} [${one} ...]` : s.nargs === "*" ? ` [${one} ...]` : ` ${one}`;
  };
  const shown = (d: ArgSpec["default"]) => d !== undefined && d !== null && !(Array.isArray(d) && d.length === 0);
  const lines = Object.entries(specs).map(([name, s]) => `  ${s.short ? `${s.short}, ` : ""}${name}${metavar(s)}${s.help ? `  ${s.help}` : ""}${shown(s.default) && s.type !== "flag" ? ` (default ${s.default})` : ""}`);
  return `usage: llava eval ${script} [options]\n${lines.join("\n")}\n`;
}
