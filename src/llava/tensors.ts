/**
 * The one check of a checkpoint's tensors against the model its spec describes, made before any
 * data is read: the loader refuses what it finds, and `llava inspect` reports the same findings.
 * What the model reads comes from a dry run of the model's own loading code, so the names and
 * shapes are never written down twice.
 */
import { LlavaModel } from "./model.js";
import type { ModelSpec } from "./spec.js";
import { ParamLoader, type TensorDeclaration, type TensorSource } from "../nn/params.js";
import { RefBackend } from "../tensor/ref-backend.js";

/** The tensors (canonical names) a model of `spec` reads; with `present`, as it would read that checkpoint. */
export function declaredTensors(spec: ModelSpec, present?: TensorSource): TensorDeclaration[] {
  const p = ParamLoader.dryRun(new RefBackend(), present);
  LlavaModel.load(p, spec);
  return [...p.declared!.values()];
}

export interface TensorFindings {
  /** "name" for each tensor the model needs and the checkpoint lacks (as the files spell it) */
  missing: string[];
  /** one message per tensor whose shape differs */
  misshaped: string[];
  /** tensors of the checkpoint the model does not read */
  unused: string[];
}

type Reader = TensorSource & { names(): string[] };

export function checkTensors(declared: TensorDeclaration[], reader: Reader): TensorFindings {
  const shown = (name: string) => reader.storedName?.(name) ?? name;
  const known = new Set(declared.map((d) => d.name));
  const findings: TensorFindings = { missing: [], misshaped: [], unused: reader.names().filter((n) => !known.has(n)).map(shown) };
  for (const d of declared) {
    if (!reader.has(d.name)) {
      if (!d.optional) findings.missing.push(shown(d.name));
      continue;
    }
    const actual = reader.info(d.name).shape;
    if (d.shape && (actual.length !== d.shape.length || actual.some((x, i) => x !== d.shape![i]))) {
      findings.misshaped.push(`tensor "${shown(d.name)}" has shape [${actual.join(", ")}], expected [${d.shape.join(", ")}]`);
    }
  }
  return findings;
}

/** A list of names for a message: the first few and how many more. */
export function listed(names: string[], shown = 5): string {
  return names.slice(0, shown).map((n) => `"${n}"`).join(", ") + (names.length > shown ? ` and ${names.length - shown} more` : "");
}

/** The findings that stop a load, as one line; null when the model can be built. */
export function blockingProblem(f: TensorFindings, source: string): string | null {
  const problems = [...f.missing.map((n) => `missing tensor "${n}"`), ...f.misshaped];
  if (!problems.length) return null;
  return `${source}: ${problems[0]}${problems.length > 1 ? ` (and ${problems.length - 1} more problem(s): ${problems.slice(1, 4).join("; ")}${problems.length > 4 ? "; ..." : ""})` : ""}`;
}
