/** Reading LLaVA training data: the JSON and JSON-lines formats, and clear errors for malformed records. */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { readTrainingData } from "../../src/train/dataset.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llava-data-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, text);
  return file;
}

const turns = [{ from: "human", value: "<image>\nWhat?" }, { from: "gpt", value: "A cat." }];

test("a JSON array: image as a path or a list, images as a list, text-only, numeric and missing ids", () => {
  const file = write("data.json", JSON.stringify([
    { id: "a", image: "x/1.jpg", conversations: turns },
    { id: 7, image: ["1.jpg", "2.jpg"], conversations: turns, extra: true },
    { images: ["3.jpg"], conversations: turns },
    { id: "t", conversations: [{ from: "human", value: "Hi" }, { from: "gpt", value: "Hello." }] },
  ]));
  const records = readTrainingData(file);
  assert.deepEqual(records.map((r) => [r.index, r.id, r.images]), [[0, "a", ["x/1.jpg"]], [1, "7", ["1.jpg", "2.jpg"]], [2, "2", ["3.jpg"]], [3, "t", []]]);
  assert.deepEqual(records[0].conversations, turns);
});

test("JSON lines, blank lines skipped, the same records as the array", () => {
  const rows = [{ id: "a", image: "1.jpg", conversations: turns }, { id: "b", conversations: turns }];
  const lines = readTrainingData(write("data.jsonl", `${JSON.stringify(rows[0])}\n\n${JSON.stringify(rows[1])}\n`));
  assert.deepEqual(lines, readTrainingData(write("same.json", JSON.stringify(rows))));
});

test("malformed records: the file, the record, its id and the field are named", () => {
  const cases: Array<[unknown, RegExp]> = [
    [[{ id: "a", conversations: [{ from: "user", value: "hi" }] }], /record 0 \(id "a"\): conversations\[0\]\.from is "user"; expected "human" or "gpt"/],
    [[{ id: "a", conversations: turns }, { id: "b" }], /record 1 \(id "b"\): conversations must be a non-empty list/],
    [[{ id: "a", conversations: [{ from: "gpt", value: 3 }] }], /conversations\[0\]\.value must be a string/],
    [[{ id: "a", image: "1.jpg", images: ["2.jpg"], conversations: turns }], /image and images are both given/],
    [[{ id: "a", image: ["1.jpg", ""], conversations: turns }], /image\[1\] must be a non-empty path/],
    [[{ id: "a", image: 5, conversations: turns }], /image must be a path or a list of paths/],
    [[{ id: { x: 1 }, conversations: turns }], /record 0: id must be a string or a number/],
    [["text"], /record 0 is not an object/],
  ];
  for (const [data, message] of cases) {
    const file = write("bad.json", JSON.stringify(data));
    assert.throws(() => readTrainingData(file), (err: Error) => err.name === "LlavaError" && err.message.includes(file) && message.test(err.message));
  }
});

test("unreadable files: not found, bad JSON, a bad JSON line, empty", () => {
  assert.throws(() => readTrainingData(path.join(tmp, "none.json")), /training data .*none\.json: file not found/);
  assert.throws(() => readTrainingData(write("broken.json", "[{")), /not valid JSON/);
  assert.throws(() => readTrainingData(write("broken.jsonl", `${JSON.stringify({ conversations: turns })}\n{oops\n`)), /line 2 is not valid JSON/);
  assert.throws(() => readTrainingData(write("empty.jsonl", "\n")), /no records/);
});
