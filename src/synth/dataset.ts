/**
 * `llava data synth`: a dataset of the procedural world in the reference's files. Training scenes
 * (never a held-out colour-shape pair) give stage-1 captions (`pretrain.json`, the `plain` layout
 * of blip_laion_cc_sbu_558k.json) and stage-2 conversations (`finetune.json`, the layout of
 * llava_v1_5_mix665k.json); test scenes (each with a held-out pair) give a `model_vqa` question
 * file (`test.jsonl`) and its ground truth (`test_answers.jsonl`). `scenes.json` records every
 * scene; `world.json` the vocabulary, the held-out pairs, the counts and each category's chance.
 */
import fs from "node:fs";
import path from "node:path";
import { writeFileAtomic } from "../io/files.js";
import { LlavaError } from "../util/errors.js";
import { Rng } from "../util/random.js";
import {
  allPairs, caption, CAPTION_PROMPTS, type Category, CATEGORIES, colorQuestion, countQuestion, DESCRIBE_PROMPT, description,
  existQuestion, positionQuestion, type Question, relationQuestion, shapeQuestion, SHORT_ANSWER_PROMPT,
} from "./language.js";
import { renderScene } from "./render.js";
import { sampleScene, type Scene } from "./scene.js";
import { BACKGROUND_TONES, CELLS, COLORS, heldOutPairs, MAX_OBJECTS, MIN_OBJECTS, type Pair, pairKey, pick, randomInt, SHAPES, shuffled, SIZES, SYNTH_FILES } from "./world.js";

export interface SynthOptions {
  out: string;
  seed: number;
  train: number;
  test: number;
  imageSize: number;
  overwrite: boolean;
}

export const SYNTH_DEFAULTS = { seed: 0, train: 1000, test: 100, imageSize: 224 };

interface Turn {
  from: "human" | "gpt";
  value: string;
}
interface Sample {
  id: string;
  image: string;
  conversations: Turn[];
}

/** Chance of each category: a uniform guess among its possible answers. */
export function chanceLevels(): Record<Category, number> {
  return {
    color: 1 / Object.keys(COLORS).length,
    shape: 1 / SHAPES.length,
    count: 1 / (MAX_OBJECTS - MIN_OBJECTS + 1),
    position: 1 / CELLS.length,
    exist: 1 / 2,
    relation: 1 / 2,
  };
}

/** Alternates yes and no per category, so each yes/no category has both answers within one. */
class Balance {
  private next = new Map<Category, boolean>();
  take(category: Category): boolean {
    const yes = this.next.get(category) ?? true;
    this.next.set(category, !yes);
    return yes;
  }
}

const shortQuestion = (q: Question) => `${q.text}\n${SHORT_ANSWER_PROMPT}`;

function captionSample(rng: Rng, scene: Scene, id: string): Sample {
  const prompt = pick(rng, CAPTION_PROMPTS);
  // the real file puts <image> before or after the instruction
  const human = rng.next() < 0.5 ? `${prompt}\n<image>` : `<image>\n${prompt}`;
  return { id, image: scene.image, conversations: [{ from: "human", value: human }, { from: "gpt", value: caption(scene) }] };
}

/** One record of cells.json: the layout `llava train --stage vision` reads (see train/vision-stage.ts). */
interface CellLabels {
  id: string;
  image: string;
  grid: number;
  cells: Array<{ color: string; shape: string; size: string; position: string } | null>;
}

/**
 * `llava train --stage vision`'s labels: what each grid cell holds (the tower's own stage, before
 * stage 1). The position is there so the tower's features keep where they are: nothing else asks
 * for it, and without it no linear probe finds an object's cell in them (16% against 99%).
 */
function cellLabels(scene: Scene, id: string): CellLabels {
  const cells: CellLabels["cells"] = CELLS.map(() => null);
  for (const o of scene.objects) cells[o.cell] = { color: o.color, shape: o.shape, size: o.size, position: CELLS[o.cell] };
  return { id, image: scene.image, grid: 3, cells };
}

/** Every category once (relation when there are two objects), each about a random object, in random order, sometimes with a description. */
function trainingQuestions(rng: Rng, scene: Scene, balance: Balance, pairs: Pair[]): Question[] {
  const any = () => pick(rng, scene.objects);
  const questions = [colorQuestion(any()), shapeQuestion(any()), countQuestion(scene), positionQuestion(any()), existQuestion(rng, scene, balance.take("exist"), any(), pairs)];
  if (scene.objects.length > 1) questions.push(relationQuestion(rng, scene, balance.take("relation"), any()));
  return shuffled(rng, questions);
}

function conversationSample(rng: Rng, scene: Scene, id: string, balance: Balance, pairs: Pair[]): Sample {
  const turns: Turn[] = [];
  const ask = (human: string, gpt: string) => turns.push({ from: "human", value: turns.length ? human : `<image>\n${human}` }, { from: "gpt", value: gpt });
  const questions = trainingQuestions(rng, scene, balance, pairs);
  const describeAt = rng.next() < 1 / 3 ? randomInt(rng, questions.length + 1) : -1;
  questions.forEach((q, i) => {
    if (i === describeAt) ask(DESCRIBE_PROMPT, description(scene));
    ask(shortQuestion(q), q.answer);
  });
  if (describeAt === questions.length) ask(DESCRIBE_PROMPT, description(scene));
  return { id, image: scene.image, conversations: turns };
}

/** Test questions about a scene: colour, shape and position of its held-out object, the count, and one yes/no question. */
function testQuestions(rng: Rng, scene: Scene, index: number, balance: Balance, held: Set<string>, pairs: Pair[]): Question[] {
  const target = scene.objects.find((o) => held.has(pairKey(o.color, o.shape)))!;
  const yesNo = index % 2 === 1 && scene.objects.length > 1
    ? relationQuestion(rng, scene, balance.take("relation"), target)
    : existQuestion(rng, scene, balance.take("exist"), target, pairs);
  return [colorQuestion(target), shapeQuestion(target), countQuestion(scene), positionQuestion(target), yesNo];
}

/** Refuses a folder that has anything in it, unless overwriting (then only this command's own files go). */
function prepareFolder(out: string, overwrite: boolean): void {
  let entries: string[] = [];
  try {
    entries = fs.readdirSync(out);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOTDIR") throw new LlavaError(`--out ${out}: not a folder`);
    if (code !== "ENOENT") throw new LlavaError(`--out ${out}: ${(err as Error).message}`);
  }
  if (entries.length && !overwrite) throw new LlavaError(`--out ${out} is not empty (${entries.length} entries); pass --overwrite to replace its contents`);
  for (const file of Object.values(SYNTH_FILES)) fs.rmSync(path.join(out, file), { recursive: true, force: true });
  fs.mkdirSync(path.join(out, SYNTH_FILES.images), { recursive: true });
}

const writeJson = (file: string, value: unknown) => writeText(file, JSON.stringify(value, null, 1) + "\n");
const writeJsonLines = (file: string, rows: unknown[]) => writeText(file, rows.map((r) => JSON.stringify(r) + "\n").join(""));
const writeText = (file: string, text: string) => writeFileAtomic(file, (fd) => fs.writeSync(fd, text));

/** How many images render at once: sharp works off the main thread. */
const RENDER_BATCH = 16;

async function renderAll(scenes: Scene[], out: string, size: number, progress?: (done: number, total: number) => void): Promise<void> {
  for (let i = 0; i < scenes.length; i += RENDER_BATCH) {
    const batch = scenes.slice(i, i + RENDER_BATCH);
    const pngs = await Promise.all(batch.map((s) => renderScene(s, size)));
    batch.forEach((s, j) => fs.writeFileSync(path.join(out, SYNTH_FILES.images, s.image), pngs[j]));
    progress?.(i + batch.length, scenes.length);
  }
}

export interface SynthSummary {
  trainImages: number;
  testImages: number;
  pretrainSamples: number;
  finetuneSamples: number;
  testQuestions: number;
}

/**
 * Writes the dataset. world.json is written last, so a folder without it is an interrupted run.
 * The same options give the same bytes in every file.
 */
export async function synthesize(options: SynthOptions, progress?: (done: number, total: number) => void): Promise<SynthSummary> {
  const { out, seed, train, test, imageSize } = options;
  prepareFolder(out, options.overwrite);
  const rng = new Rng(seed);
  const heldOut = heldOutPairs(seed);
  const held = new Set(heldOut.map(([c, s]) => pairKey(c, s)));
  const seenPairs = allPairs().filter(([c, s]) => !held.has(pairKey(c, s)));

  const pad = (i: number) => String(i).padStart(6, "0");
  const trainScenes = Array.from({ length: train }, (_, i) => sampleScene(rng, `train-${pad(i)}.png`, "train", heldOut));
  const testScenes = Array.from({ length: test }, (_, i) => sampleScene(rng, `test-${pad(i)}.png`, "test", heldOut));

  const pretrain = trainScenes.map((s, i) => captionSample(rng, s, `cap-${pad(i)}`));
  const cells = trainScenes.map((s, i) => cellLabels(s, `cells-${pad(i)}`));
  const balance = new Balance();
  const finetune = trainScenes.map((s, i) => conversationSample(rng, s, `qa-${pad(i)}`, balance, seenPairs));

  const testBalance = new Balance();
  const questions: object[] = [];
  const answers: object[] = [];
  testScenes.forEach((scene, i) => {
    for (const q of testQuestions(rng, scene, i, testBalance, held, allPairs())) {
      const question_id = questions.length;
      questions.push({ question_id, image: scene.image, text: shortQuestion(q), category: q.category });
      answers.push({ question_id, answer: q.answer, category: q.category });
    }
  });

  await renderAll([...trainScenes, ...testScenes], out, imageSize, progress);
  writeJson(path.join(out, SYNTH_FILES.cells), cells);
  writeJson(path.join(out, SYNTH_FILES.pretrain), pretrain);
  writeJson(path.join(out, SYNTH_FILES.finetune), finetune);
  writeJsonLines(path.join(out, SYNTH_FILES.questions), questions);
  writeJsonLines(path.join(out, SYNTH_FILES.answers), answers);
  writeJson(path.join(out, SYNTH_FILES.scenes), { train: trainScenes, test: testScenes });

  const perCategory = Object.fromEntries(CATEGORIES.map((c) => [c, answers.filter((a) => (a as { category: string }).category === c).length]));
  const chance = chanceLevels();
  const overall = CATEGORIES.reduce((sum, c) => sum + perCategory[c] * chance[c], 0) / Math.max(1, answers.length);
  const summary: SynthSummary = { trainImages: train, testImages: test, pretrainSamples: pretrain.length, finetuneSamples: finetune.length, testQuestions: questions.length };
  writeJson(path.join(out, SYNTH_FILES.world), {
    seed,
    imageSize,
    shapes: SHAPES,
    colors: COLORS,
    sizes: SIZES,
    positions: CELLS,
    backgrounds: BACKGROUND_TONES,
    objectsPerScene: [MIN_OBJECTS, MAX_OBJECTS],
    heldOutPairs: heldOut.map(([c, s]) => pairKey(c, s)),
    files: SYNTH_FILES,
    imageFolder: SYNTH_FILES.images,
    counts: { ...summary, testQuestionsPerCategory: perCategory },
    chance: { ...chance, overall },
  });
  return summary;
}
