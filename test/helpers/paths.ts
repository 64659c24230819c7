import { fileURLToPath } from "node:url";
import path from "node:path";

/** Project root (tests run from dist/test/..., compiled from test/...). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
/** The shared reference fixtures, a sibling of the project checkout. */
export const FIXTURES = path.resolve(ROOT, "../shared/fixtures");
export const MODELS = path.join(FIXTURES, "models");
export const CASES = path.join(FIXTURES, "cases");
export const IMAGES = path.join(FIXTURES, "images");
