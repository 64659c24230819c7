import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import sharp from "sharp";
import { synthesize, type SynthOptions } from "../../src/synth/dataset.js";
import type { Scene, SceneObject } from "../../src/synth/scene.js";
import { BACKGROUND_TONES, COLORS, COLOR_NAMES, SHAPES, SYNTH_FILES } from "../../src/synth/world.js";
import { LlavaTokenizer } from "../../src/tokenizer/tokenizer.js";
import { assertCleanError, llava } from "../helpers/cli.js";
import { MODELS } from "../helpers/paths.js";

interface Turn { from: string; value: string }
interface Sample { id: string; image: string; conversations: Turn[] }
interface World { heldOutPairs: string[]; counts: Record<string, unknown>; chance: Record<string, number> }

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "synth-"));
const options = (out: string, more: Partial<SynthOptions> = {}): SynthOptions => ({ out: path.join(tmp, out), seed: 7, train: 40, test: 16, imageSize: 96, overwrite: false, ...more });
const read = <T>(dir: string, file: string): T => JSON.parse(fs.readFileSync(path.join(dir, file), "utf8")) as T;
const readLines = <T>(dir: string, file: string): T[] => fs.readFileSync(path.join(dir, file), "utf8").trim().split("\n").map((l) => JSON.parse(l) as T);

/** Every file under `dir`, relative, sorted. */
function listing(dir: string, under = ""): string[] {
  return fs.readdirSync(path.join(dir, under), { withFileTypes: true }).flatMap((e) => {
    const rel = path.join(under, e.name);
    return e.isDirectory() ? listing(dir, rel) : [rel];
  }).sort();
}

const CELL_NAMES = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"];
const col = (o: SceneObject) => o.cell % 3;
const row = (o: SceneObject) => Math.floor(o.cell / 3);

/** The answer to a question, worked out here from the scene record alone (independently of the generator's wording code). */
function answerFromScene(question: string, scene: Scene): string {
  const q = question.replace(/\nAnswer the question using a single word or phrase\.$/, "").replace(/^<image>\n/, "");
  const find = (color?: string, shape?: string) => {
    const found = scene.objects.filter((o) => (!color || o.color === color) && (!shape || o.shape === shape));
    assert.equal(found.length, 1, `"${q}" names exactly one object of ${scene.image}`);
    return found[0];
  };
  let m: RegExpMatchArray | null;
  if ((m = q.match(/^What color is the (\w+)\?$/))) return find(undefined, m[1]).color;
  if ((m = q.match(/^What shape is the (\w+) object\?$/))) return find(m[1]).shape;
  if (q === "How many objects are there?") return String(scene.objects.length);
  if ((m = q.match(/^Where is the (\w+) (\w+)\?$/))) return CELL_NAMES[find(m[1], m[2]).cell];
  if ((m = q.match(/^Is there an? (\w+) (\w+)\?$/))) return scene.objects.some((o) => o.color === m![1] && o.shape === m![2]) ? "yes" : "no";
  if ((m = q.match(/^Is the (\w+) (\w+) (to the left of|to the right of|above|below) the (\w+) (\w+)\?$/))) {
    const a = find(m[1], m[2]), b = find(m[4], m[5]);
    const holds = { "to the left of": col(a) < col(b), "to the right of": col(a) > col(b), above: row(a) < row(b), below: row(a) > row(b) }[m[3]]!;
    const opposite = { "to the left of": col(a) > col(b), "to the right of": col(a) < col(b), above: row(a) > row(b), below: row(a) < row(b) }[m[3]]!;
    assert.ok(holds || opposite, `"${q}": a no only where the opposite holds`);
    return holds ? "yes" : "no";
  }
  if (q === "Describe the image briefly.") {
    const n = scene.objects.length;
    return `There ${n === 1 ? "is one object" : `are ${["", "", "two", "three", "four"][n]} objects`}: ${captionFromScene(scene)}.`;
  }
  throw new Error(`unexpected question: ${JSON.stringify(q)}`);
}

function captionFromScene(scene: Scene): string {
  const place = (cell: number) => {
    const name = CELL_NAMES[cell];
    return name === "center" ? "in the center" : name.includes(" ") ? `in the ${name}` : name === "top" || name === "bottom" ? `at the ${name}` : `on the ${name}`;
  };
  const parts = scene.objects.map((o) => `a ${o.size} ${o.color} ${o.shape} ${place(o.cell)}`);
  return parts.length === 1 ? parts[0] : `${parts.slice(0, -1).join(", ")} and ${parts.at(-1)}`;
}

describe("llava data synth", () => {
  const dir = options("main").out;
  let scenes: { train: Scene[]; test: Scene[] };
  let world: World;
  before(async () => {
    await synthesize(options("main"));
    scenes = read(dir, SYNTH_FILES.scenes);
    world = read(dir, SYNTH_FILES.world);
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it("writes the same bytes for the same seed, and other bytes for another", async () => {
    await synthesize(options("again"));
    const files = listing(dir);
    assert.deepEqual(listing(options("again").out), files);
    assert.equal(files.filter((f) => f.endsWith(".png")).length, 40 + 16);
    for (const f of files) assert.ok(fs.readFileSync(path.join(dir, f)).equals(fs.readFileSync(path.join(options("again").out, f))), `${f} differs`);
    await synthesize(options("other", { seed: 8 }));
    assert.ok(!fs.readFileSync(path.join(dir, SYNTH_FILES.scenes)).equals(fs.readFileSync(path.join(options("other").out, SYNTH_FILES.scenes))));
  });

  it("keeps the held-out colour-shape pairs out of every training image and puts one in every test image", () => {
    const held = new Set(world.heldOutPairs);
    assert.equal(held.size, COLOR_NAMES.length);
    // each colour and each shape is still seen in training, only not in these pairs
    assert.equal(new Set(world.heldOutPairs.map((p) => p.split(" ")[0])).size, COLOR_NAMES.length);
    const pairsOf = (s: Scene) => s.objects.map((o) => `${o.color} ${o.shape}`);
    for (const s of scenes.train) assert.ok(!pairsOf(s).some((p) => held.has(p)), `${s.image} holds a held-out pair`);
    for (const s of scenes.test) assert.ok(pairsOf(s).some((p) => held.has(p)), `${s.image} holds no held-out pair`);
    const trainImages = new Set(scenes.train.map((s) => s.image));
    for (const file of [SYNTH_FILES.pretrain, SYNTH_FILES.finetune]) for (const s of read<Sample[]>(dir, file)) assert.ok(trainImages.has(s.image), `${file}: ${s.image}`);
    const testImages = new Set(scenes.test.map((s) => s.image));
    for (const q of readLines<{ image: string }>(dir, SYNTH_FILES.questions)) assert.ok(testImages.has(q.image));
    // training text never names a held-out pair either
    const trainingText = fs.readFileSync(path.join(dir, SYNTH_FILES.pretrain), "utf8") + fs.readFileSync(path.join(dir, SYNTH_FILES.finetune), "utf8");
    for (const p of held) assert.ok(!trainingText.includes(p), `training text names ${p}`);
  });

  it("makes scenes of 1-4 objects in distinct cells, colours and shapes", () => {
    for (const s of [...scenes.train, ...scenes.test]) {
      const n = s.objects.length;
      assert.ok(n >= 1 && n <= 4, s.image);
      for (const key of ["cell", "color", "shape"] as const) assert.equal(new Set(s.objects.map((o) => o[key])).size, n, `${s.image}: ${key}`);
    }
    const counts = new Set(scenes.train.map((s) => s.objects.length));
    assert.deepEqual([...counts].sort(), [1, 2, 3, 4]);
  });

  it("balances yes and no in every yes/no question type, in training and in the test", () => {
    const finetune = read<Sample[]>(dir, SYNTH_FILES.finetune);
    const trainAnswers = finetune.flatMap((s) => s.conversations.filter((t) => t.from === "gpt").map((t) => t.value));
    const testAnswers = readLines<{ answer: string; category: string }>(dir, SYNTH_FILES.answers);
    for (const kind of ["exist", "relation"]) {
      const test = testAnswers.filter((a) => a.category === kind);
      const yes = test.filter((a) => a.answer === "yes").length;
      assert.ok(test.length > 0 && Math.abs(2 * yes - test.length) <= 1, `test ${kind}: ${yes} yes of ${test.length}`);
    }
    const yes = trainAnswers.filter((a) => a === "yes").length, no = trainAnswers.filter((a) => a === "no").length;
    // two yes/no types, each alternating
    assert.ok(yes > 0 && Math.abs(yes - no) <= 2, `training: ${yes} yes, ${no} no`);
  });

  it("answers every question as the scene says, in the reference's layouts", () => {
    const sceneOf = new Map([...scenes.train, ...scenes.test].map((s) => [s.image, s]));
    const pretrain = read<Sample[]>(dir, SYNTH_FILES.pretrain);
    for (const s of pretrain) {
      assert.equal(s.conversations.length, 2);
      assert.deepEqual(s.conversations.map((t) => t.from), ["human", "gpt"]);
      assert.match(s.conversations[0].value, /^(<image>\n[^<]+|[^<]+\n<image>)$/);
      assert.equal(s.conversations[1].value, captionFromScene(sceneOf.get(s.image)!));
    }
    const finetune = read<Sample[]>(dir, SYNTH_FILES.finetune);
    let short = 0;
    for (const s of finetune) {
      const turns = s.conversations;
      assert.ok(turns[0].value.startsWith("<image>\n"), s.id);
      assert.equal(turns.filter((t) => t.value.includes("<image>")).length, 1, s.id);
      for (let i = 0; i < turns.length; i += 2) {
        assert.deepEqual([turns[i].from, turns[i + 1].from], ["human", "gpt"]);
        assert.equal(turns[i + 1].value, answerFromScene(turns[i].value, sceneOf.get(s.image)!), `${s.id}: ${turns[i].value}`);
        if (turns[i].value.endsWith("\nAnswer the question using a single word or phrase.")) short++;
      }
    }
    assert.ok(short > 4 * finetune.length, "short questions carry the short-answer prompt");
    const questions = readLines<{ question_id: number; image: string; text: string; category: string }>(dir, SYNTH_FILES.questions);
    const answers = readLines<{ question_id: number; answer: string; category: string }>(dir, SYNTH_FILES.answers);
    assert.equal(questions.length, answers.length);
    questions.forEach((q, i) => {
      assert.deepEqual(Object.keys(q), ["question_id", "image", "text", "category"]);
      assert.equal(answers[i].question_id, q.question_id);
      assert.equal(answers[i].category, q.category);
      assert.match(q.text, /\nAnswer the question using a single word or phrase\.$/);
      assert.equal(answers[i].answer, answerFromScene(q.text, sceneOf.get(q.image)!), q.text);
    });
  });

  it("draws each object where and as the scene says", async () => {
    for (const s of [...scenes.train.slice(0, 10), ...scenes.test.slice(0, 5)]) {
      const { data, info } = await sharp(path.join(dir, SYNTH_FILES.images, s.image)).raw().toBuffer({ resolveWithObject: true });
      assert.deepEqual([info.width, info.height, info.channels], [96, 96, 3]);
      for (const o of s.objects) {
        if (o.shape === "ring") continue; // hollow: its centre shows the background
        const x = Math.round((col(o) + 0.5 + o.dx) * 32), y = Math.round((row(o) + 0.5 + o.dy) * 32);
        const at = 3 * (y * 96 + x);
        const pixel = [...data.subarray(at, at + 3)];
        const want = COLORS[o.color];
        assert.ok(pixel.every((v, c) => Math.abs(v - want[c]) <= 2), `${s.image}: ${o.color} ${o.shape} at (${x}, ${y}) is ${pixel}`);
      }
    }
  });

  it("never paints a background in an object colour", () => {
    for (const tone of Object.values(BACKGROUND_TONES)) assert.ok(Math.max(...tone) - Math.min(...tone) <= 40, "backgrounds are grey or faintly tinted");
    for (const color of Object.values(COLORS)) assert.ok(Math.max(...color) - Math.min(...color) >= 100, "object colours are saturated");
    assert.ok(SHAPES.length >= 8 && COLOR_NAMES.length >= 8);
  });

  it("names colours and shapes that the LLaMA tokenizer splits the same everywhere, each with its own first token", () => {
    const tokenizer = LlavaTokenizer.load(path.join(MODELS, "tiny-llava-1.5-mha"));
    const encode = (text: string) => tokenizer.encode(text, { addSpecialTokens: false });
    for (const names of [COLOR_NAMES, [...SHAPES]]) {
      const alone = names.map((name) => {
        const tokens = encode(`the ${name}`).slice(1);
        // as an answer after "ASSISTANT:", inside a question, before a period
        assert.deepEqual(encode(`ASSISTANT: ${name}`).slice(-tokens.length), tokens, name);
        assert.deepEqual(encode(`is the ${name} object?`).slice(2, 2 + tokens.length), tokens, name);
        assert.deepEqual(encode(`a large ${name}.`).slice(2, 2 + tokens.length), tokens, name);
        return tokens;
      });
      // greedy decoding commits to one name at its first token
      assert.equal(new Set(alone.map((t) => t[0])).size, names.length, names.join(", "));
    }
  });

  it("records the world, the split, the counts and the chance levels", () => {
    const questions = readLines<{ category: string }>(dir, SYNTH_FILES.questions);
    assert.deepEqual(world.counts, {
      trainImages: 40, testImages: 16, pretrainSamples: 40, finetuneSamples: 40, testQuestions: questions.length,
      testQuestionsPerCategory: Object.fromEntries(["color", "shape", "count", "position", "exist", "relation"].map((c) => [c, questions.filter((q) => q.category === c).length])),
    });
    assert.equal(world.chance.color, 1 / COLOR_NAMES.length);
    assert.equal(world.chance.shape, 1 / SHAPES.length);
    assert.equal(world.chance.count, 1 / 4);
    assert.equal(world.chance.position, 1 / 9);
    assert.equal(world.chance.exist, 1 / 2);
    const expected = questions.reduce((sum, q) => sum + world.chance[q.category], 0) / questions.length;
    assert.ok(Math.abs(world.chance.overall - expected) < 1e-12);
    assert.ok(world.chance.overall <= 0.25, `overall chance ${world.chance.overall}`);
  });

  it("writes stage-1 and stage-2 files that the trainer's data check accepts", () => {
    const model = path.join(MODELS, "tiny-llava-1.5-mha");
    const images = path.join(dir, SYNTH_FILES.images);
    for (const [file, version] of [[SYNTH_FILES.pretrain, "plain"], [SYNTH_FILES.finetune, "v1"]]) {
      const r = llava(["data", "check", "--data-path", path.join(dir, file), "--image-folder", images, "--model-path", model, "--version", version, "--json"]);
      assert.equal(r.status, 0, r.stderr);
      const report = JSON.parse(r.stdout) as { samples: number; bad: unknown[] };
      assert.deepEqual([report.samples, report.bad.length], [40, 0], file);
    }
  });

  it("refuses a folder that is not empty, in one line, unless --overwrite", () => {
    const out = path.join(tmp, "busy");
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, "notes.txt"), "mine");
    const args = ["data", "synth", "--out", out, "--train", "3", "--test", "2", "--image-size", "32"];
    assertCleanError(llava(args), /not empty.*--overwrite/);
    assert.deepEqual(fs.readdirSync(out), ["notes.txt"]);
    const r = llava([...args, "--overwrite"]);
    assert.equal(r.status, 0, r.stderr);
    // only its own files are replaced
    assert.equal(fs.readFileSync(path.join(out, "notes.txt"), "utf8"), "mine");
    assert.ok(fs.existsSync(path.join(out, SYNTH_FILES.world)));
    assert.equal(llava([...args, "--overwrite", "--seed", "2"]).status, 0);
    assert.equal(fs.readdirSync(path.join(out, SYNTH_FILES.images)).length, 5);
    const usage = llava(["data", "synth", "--out", out, "--train", "0"]);
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /--train must be a whole number >= 1/);
  });
});
