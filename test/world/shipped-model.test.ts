/**
 * The shipped model (models/llava-v1.5-world-tiny, made by npm run demo:train) answers questions
 * about held-out images of its world: the example images' questions through the project's own
 * evaluation command, and the README's first command prints a correct answer.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { llava } from "../helpers/cli.js";
import { ROOT } from "../helpers/paths.js";
import { defaultModelDir } from "../../src/llava/default-model.js";

const EXAMPLES = path.join(ROOT, "examples", "world");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "shipped-model-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Example {
  question_id: number;
  image: string;
  text: string;
  category: string;
  answer: string;
}
const examples = (): Example[] =>
  fs.readFileSync(path.join(EXAMPLES, "questions.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as Example);
const question = (q: Example) => q.text.split("\n")[0];

test("the shipped model answers every question about the example images (held-out test scenes)", () => {
  assert.ok(fs.existsSync(path.join(defaultModelDir(), "config.json")), "a model ships");
  const answers = path.join(tmp, "answers.jsonl");
  const r = llava(["eval", "model_vqa_loader", "--model-path", defaultModelDir(), "--question-file", path.join(EXAMPLES, "questions.jsonl"),
    "--image-folder", EXAMPLES, "--answers-file", answers, "--conv-mode", "llava_v1", "--temperature", "0", "--max_new_tokens", "8"]);
  assert.equal(r.status, 0, r.stderr);
  const got = new Map(fs.readFileSync(answers, "utf8").trim().split("\n").map((l) => JSON.parse(l) as { question_id: number; text: string }).map((a) => [a.question_id, a.text]));
  const all = examples();
  assert.deepEqual(new Set(all.map((q) => q.category)), new Set(["color", "shape", "count", "position", "exist", "relation"]));
  for (const q of all) assert.equal(got.get(q.question_id)?.trim().toLowerCase(), q.answer, `${q.image}: ${question(q)}`);
});

test("the README's first command prints a correct answer about an example image", () => {
  const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
  const first = /## Set-up[\s\S]*?```sh\n(.*)\n/.exec(readme)![1];
  const command = /^npm ci && (bin\/llava\.js run .*)$/.exec(first)?.[1];
  assert.ok(command, `the first set-up command asks the shipped model: ${first}`);
  const r = spawnSync("bash", ["-c", command], { cwd: ROOT, encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const image = /--image-file examples\/world\/(\S+)/.exec(command)?.[1];
  const asked = examples().find((q) => q.image === image && command.includes(`"${question(q)} `));
  assert.ok(asked, `the command asks one of the example questions about ${image}`);
  assert.equal(r.stdout.trim().toLowerCase(), asked.answer, question(asked));
});
