/** Choosing tokens and stopping: greedy, temperature and top-p as transformers does them, stop strings. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { argmax, sampleToken } from "../../src/llava/generate.js";
import { loadLlava } from "../../src/llava/load.js";
import { streamAnswer } from "../../src/llava/pipeline.js";
import { loadImage } from "../../src/image/decode.js";
import { seededRandom } from "../../src/util/random.js";
import { CASES, IMAGES, MODELS } from "../helpers/paths.js";

test("temperature 0 is argmax; top-p keeps the smallest set reaching p, as TopPLogitsWarper does", () => {
  const logits = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
  assert.equal(sampleToken(logits, 0, 1, () => 0.99), argmax(logits));
  const draw = (topP: number, temperature = 1) => {
    const r = seededRandom(7);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 20000; i++) counts[sampleToken(logits, temperature, topP, r)]++;
    return counts.map((c) => c / 20000);
  };
  // p = 0.7: tokens 0 and 1 (0.5 + 0.3 >= 0.7), renormalised to 0.625 / 0.375
  const p07 = draw(0.7);
  assert.ok(Math.abs(p07[0] - 0.625) < 0.02 && Math.abs(p07[1] - 0.375) < 0.02 && p07[2] === 0 && p07[3] === 0, `${p07}`);
  // p = 1: the full distribution
  const p1 = draw(1);
  [0.5, 0.3, 0.15, 0.05].forEach((want, i) => assert.ok(Math.abs(p1[i] - want) < 0.02, `${p1}`));
  // a tiny p keeps the top token only
  assert.deepEqual(draw(0.1), [1, 0, 0, 0]);
  // temperature 2 flattens: p ∝ sqrt(p)
  const t2 = draw(1, 2);
  const z = [0.5, 0.3, 0.15, 0.05].reduce((s, p) => s + Math.sqrt(p), 0);
  [0.5, 0.3, 0.15, 0.05].forEach((p, i) => assert.ok(Math.abs(t2[i] - Math.sqrt(p) / z) < 0.02, `${t2}`));
});

test("a stop string ends the answer before it, even when it arrives split across tokens", async () => {
  const meta = JSON.parse(fs.readFileSync(path.join(CASES, "tiny-llava-1.5-mha", "gradient", "meta.json"), "utf8"));
  const full: string = meta.generated_text;
  const llava = await loadLlava(path.join(MODELS, "tiny-llava-1.5-mha"));
  const prompt = fs.readFileSync(path.join(CASES, "tiny-llava-1.5-mha", "gradient", "prompt.txt"), "utf8");
  const image = await loadImage(path.join(IMAGES, "gradient_640x480.png"));
  const answer = async (stop: string[]) => {
    let text = "";
    for await (const piece of streamAnswer(llava, prompt, [image], { maxNewTokens: 20, temperature: 0, stop })) text += piece;
    return text;
  };
  assert.equal(await answer([]), full);
  // "ave hum" spans two tokens (" nave", " hum")
  const stop = "ave hum";
  assert.ok(full.includes(stop));
  assert.equal(await answer([stop]), full.slice(0, full.indexOf(stop)));
  assert.equal(await answer(["no such text"]), full);
});
