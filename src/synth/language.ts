/**
 * What the world's data says about a scene: stage-1 captions, stage-2 questions with their short
 * answers (one kind per category), and short descriptions. Every answer is read off the scene.
 */
import type { Rng } from "../util/random.js";
import { CELLS, columnOf, COLOR_NAMES, type Pair, pairKey, pick, rowOf, SHAPES } from "./world.js";
import type { Scene, SceneObject } from "./scene.js";

/** The reference's short-answer prompt (VQAv2, GQA in mix665k and in the evaluation question files). */
export const SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase.";

/** The question categories, each with its own wording and answer set. */
export const CATEGORIES = ["color", "shape", "count", "position", "exist", "relation"] as const;
export type Category = (typeof CATEGORIES)[number];

export interface Question {
  category: Category;
  text: string;
  answer: string;
}

/** Stage-1 instructions in the style of blip_laion_cc_sbu_558k.json's (the plain template drops them). */
export const CAPTION_PROMPTS = [
  "Describe the image concisely.",
  "Provide a brief description of the given image.",
  "Offer a succinct explanation of the picture presented.",
  "Summarize the visual content of the image.",
  "Give a short and clear explanation of the subsequent image.",
  "Share a concise interpretation of the image provided.",
  "Present a compact description of the photo's key features.",
  "Relay a brief, clear account of the picture shown.",
  "Render a clear and concise summary of the photo.",
  "Write a terse but informative summary of the picture.",
  "Create a compact narrative representing the image presented.",
];

export const DESCRIBE_PROMPT = "Describe the image briefly.";

const NUMBER_WORDS = ["zero", "one", "two", "three", "four"];

const PLACE: Record<string, string> = {
  "top left": "in the top left", top: "at the top", "top right": "in the top right",
  left: "on the left", center: "in the center", right: "on the right",
  "bottom left": "in the bottom left", bottom: "at the bottom", "bottom right": "in the bottom right",
};

const name = (o: SceneObject) => `${o.color} ${o.shape}`;
const phrase = (o: SceneObject) => `a ${o.size} ${name(o)} ${PLACE[CELLS[o.cell]]}`;

function listing(parts: string[]): string {
  return parts.length === 1 ? parts[0] : `${parts.slice(0, -1).join(", ")} and ${parts[parts.length - 1]}`;
}

/** "a small red circle in the top left and a large blue star in the center" (reading order). */
export const caption = (scene: Scene) => listing(scene.objects.map(phrase));

/** "There are two objects: a small red circle in the top left and ..." */
export function description(scene: Scene): string {
  const n = scene.objects.length;
  return `There ${n === 1 ? "is one object" : `are ${NUMBER_WORDS[n]} objects`}: ${caption(scene)}.`;
}

export const colorQuestion = (o: SceneObject): Question => ({ category: "color", text: `What color is the ${o.shape}?`, answer: o.color });
export const shapeQuestion = (o: SceneObject): Question => ({ category: "shape", text: `What shape is the ${o.color} object?`, answer: o.shape });
export const positionQuestion = (o: SceneObject): Question => ({ category: "position", text: `Where is the ${name(o)}?`, answer: CELLS[o.cell] });
export const countQuestion = (scene: Scene): Question => ({ category: "count", text: "How many objects are there?", answer: String(scene.objects.length) });

/**
 * "Is there a red circle?": yes asks about `present` (an object of the scene); no about a pair the
 * scene lacks, drawn from `pairs` (so training text never names a held-out pair).
 */
export function existQuestion(rng: Rng, scene: Scene, yes: boolean, present: SceneObject, pairs: Pair[]): Question {
  const inScene = new Set(scene.objects.map(name));
  const [color, shape] = yes ? [present.color, present.shape] : pick(rng, pairs.filter(([c, s]) => !inScene.has(pairKey(c, s))));
  return { category: "exist", text: `Is there ${/^[aeiou]/.test(color) ? "an" : "a"} ${color} ${shape}?`, answer: yes ? "yes" : "no" };
}

const leftOf = (a: SceneObject, b: SceneObject) => columnOf(a.cell) < columnOf(b.cell);
const above = (a: SceneObject, b: SceneObject) => rowOf(a.cell) < rowOf(b.cell);

/** Grid relations, each with its opposite: "left of" means a column further left. */
const RELATIONS = [
  { words: "to the left of", holds: leftOf, opposite: (a: SceneObject, b: SceneObject) => leftOf(b, a) },
  { words: "to the right of", holds: (a: SceneObject, b: SceneObject) => leftOf(b, a), opposite: leftOf },
  { words: "above", holds: above, opposite: (a: SceneObject, b: SceneObject) => above(b, a) },
  { words: "below", holds: (a: SceneObject, b: SceneObject) => above(b, a), opposite: above },
];

/**
 * "Is the red circle to the left of the blue star?" about `a` and another object, with the answer
 * `yes`; needs two objects. A no is asked only where the opposite holds (never about two objects
 * of one column or row, which the cells' jitter could make look either way).
 */
export function relationQuestion(rng: Rng, scene: Scene, yes: boolean, a: SceneObject): Question {
  const options = scene.objects
    .filter((b) => b !== a)
    .flatMap((b) => RELATIONS.filter((r) => (yes ? r.holds(a, b) : r.opposite(a, b))).map((r) => ({ b, r })));
  const { b, r } = pick(rng, options);
  return { category: "relation", text: `Is the ${name(a)} ${r.words} the ${name(b)}?`, answer: yes ? "yes" : "no" };
}

/** Every colour-shape pair of the world. */
export const allPairs = (): Pair[] => COLOR_NAMES.flatMap((c) => SHAPES.map((s): Pair => [c, s]));
