/** The package entry point: a program loads a model and streams an answer, as the README shows. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { getConvTemplate, loadImage, loadLlava, streamAnswer } from "../src/index.js";
import { CASES, IMAGES, MODELS } from "./helpers/paths.js";

test("the public API answers like the reference, streaming", async () => {
  const llava = await loadLlava(path.join(MODELS, "tiny-llava-1.5-mha"));
  const conv = getConvTemplate("llava_v1");
  conv.appendMessage(conv.roles[0], "<image>\nWhat is shown?");
  conv.appendMessage(conv.roles[1], null);
  const image = await loadImage(path.join(IMAGES, "gradient_640x480.png"));
  const pieces: string[] = [];
  for await (const piece of streamAnswer(llava, conv.getPrompt(), [image], { maxNewTokens: 20, temperature: 0 })) pieces.push(piece);
  assert.ok(pieces.length > 3, "streamed in pieces");
  const meta = JSON.parse(fs.readFileSync(path.join(CASES, "tiny-llava-1.5-mha", "gradient", "meta.json"), "utf8"));
  assert.equal(pieces.join(""), meta.generated_text);
});
