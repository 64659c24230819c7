#!/usr/bin/env node
/**
 * Writes a small LLaVA-format training set to try `llava train` on: pictures of coloured shapes
 * with a caption each (stage 1, `pretrain.json`) and conversations about them plus a few
 * text-only ones (stage 2, `finetune.json`), images under `images/`.
 *
 *   node examples/make-training-data.mjs OUT_DIR [COUNT]
 */
import fs from "node:fs";
import path from "node:path";
import sharp from "sharp";

const COLORS = { red: [220, 40, 40], green: [40, 170, 60], blue: [40, 70, 220], yellow: [235, 210, 40] };
const BACKGROUNDS = { white: [245, 245, 245], black: [20, 20, 20], gray: [128, 128, 128] };
const SHAPES = {
  square: (x, y, s) => Math.abs(x - s / 2) < s / 4 && Math.abs(y - s / 2) < s / 4,
  circle: (x, y, s) => (x - s / 2) ** 2 + (y - s / 2) ** 2 < (s / 4) ** 2,
  stripe: (x, y, s) => Math.abs(y - s / 2) < s / 8,
};

/** One picture: `shape` in `color` on `background`, `size` pixels square, as PNG bytes. */
function picture(shape, color, background, size) {
  const pixels = Buffer.alloc(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) pixels.set(SHAPES[shape](x, y, size) ? COLORS[color] : BACKGROUNDS[background], 3 * (y * size + x));
  }
  return sharp(pixels, { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
}

async function main([out, countArg = "24"]) {
  if (!out) throw new Error("usage: node examples/make-training-data.mjs OUT_DIR [COUNT]");
  const count = Number(countArg);
  if (!Number.isInteger(count) || count < 1) throw new Error(`COUNT must be a whole number >= 1, got "${countArg}"`);
  fs.mkdirSync(path.join(out, "images"), { recursive: true });
  const shapes = Object.keys(SHAPES), colors = Object.keys(COLORS), backgrounds = Object.keys(BACKGROUNDS);
  const pretrain = [], finetune = [];
  for (let i = 0; i < count; i++) {
    const shape = shapes[i % shapes.length], color = colors[Math.floor(i / shapes.length) % colors.length];
    const background = backgrounds[Math.floor(i / (shapes.length * colors.length)) % backgrounds.length];
    const image = `${String(i).padStart(4, "0")}.png`;
    fs.writeFileSync(path.join(out, "images", image), await picture(shape, color, background, 64));
    pretrain.push({ id: `cap-${i}`, image, conversations: [
      { from: "human", value: "<image>\nDescribe the image briefly." },
      { from: "gpt", value: `A ${color} ${shape} on a ${background} background.` },
    ] });
    finetune.push({ id: `qa-${i}`, image, conversations: [
      { from: "human", value: "What shape is in the picture?\n<image>" },
      { from: "gpt", value: `A ${shape}.` },
      { from: "human", value: "What colour is it?" },
      { from: "gpt", value: `It is ${color}.` },
    ] });
    if (i % 4 === 3) {
      const [a, b] = [i % 7, (i * 3) % 5];
      finetune.push({ id: `text-${i}`, conversations: [{ from: "human", value: `What is ${a} plus ${b}?` }, { from: "gpt", value: `${a + b}.` }] });
    }
  }
  fs.writeFileSync(path.join(out, "pretrain.json"), JSON.stringify(pretrain, null, 1));
  fs.writeFileSync(path.join(out, "finetune.json"), JSON.stringify(finetune, null, 1));
  process.stdout.write(`wrote ${count} images, ${pretrain.length} captions (pretrain.json) and ${finetune.length} conversations (finetune.json) to ${out}\n`);
}

main(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`make-training-data: ${err.message}\n`);
  process.exit(1);
});
