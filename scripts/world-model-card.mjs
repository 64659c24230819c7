/**
 * The shipped model's card (README.md), written by scripts/world-train.mjs from the figures it
 * measured, so the card always describes the checkpoint beside it.
 */
import fs from "node:fs";

const pct = (x) => (x === null || x === undefined ? "-" : `${(100 * x).toFixed(1)}%`);

function accuracyTable(scores) {
  const names = Object.keys(scores.f32.categories);
  const row = (label, pick) => `| ${label} | ${pick(scores.f32).questions} | ${pct(pick(scores.f32).chance)} | ${pct(pick(scores.f32).accuracy)} | ${pct(pick(scores["8bit"]).accuracy)} | ${pct(pick(scores["4bit"]).accuracy)} |`;
  return [
    "| question type | questions | chance | f32 | `--load-8bit` | `--load-4bit` |",
    "|---|---:|---:|---:|---:|---:|",
    ...names.map((n) => row(n, (s) => s.categories[n])),
    row("**overall**", (s) => s.overall),
  ].join("\n");
}

/** Writes the card to `file` from the run's record (see world-train.mjs's eval.json) and the data's world.json. */
export function writeModelCard(file, r) {
  const { text, vision } = r.shape;
  const stage = (s) => `\`llava train ${[...s.options, ...s.common].join(" ")} --data-path ${s.data}\``;
  fs.writeFileSync(file, `# llava-v1.5-world-tiny

A tiny LLaVA-1.5 trained from random weights by this project, on the procedural shapes world of
\`llava data synth\`. It is the default model of \`llava run\`, \`llava chat\`, \`llava serve\` and
\`loadLlava()\`, so that a fresh clone answers questions about images at once.

- **Architecture**: LLaVA-1.5 in the Hugging Face \`llava\` format. CLIP-style vision tower
  (${vision.image_size} px images, ${vision.patch_size} px patches: ${(vision.image_size / vision.patch_size) ** 2} patches; hidden ${vision.hidden_size},
  ${vision.num_hidden_layers} layers), \`mlp2x_gelu\` projector, LLaMA decoder (hidden ${text.hidden_size}, ${text.num_hidden_layers} layers,
  ${text.num_attention_heads} heads, rope_theta ${text.rope_theta ?? 10000}, initializer_range ${text.initializer_range}) with the LLaMA tokenizer (32000 tokens + \`<image>\`),
  \`llava_v1\` template; weights in bfloat16 (trained in float32), as evaluated below.
- **Data**: \`llava data synth --seed ${r.seed} --train ${r.train} --test ${r.test} --image-size ${vision.image_size}\`:
  scenes of ${r.world.objectsPerScene.join("-")} objects (${r.world.shapes.length} shapes, ${Object.keys(r.world.colors).length} colours, ${r.world.sizes.length} sizes, a 3x3 grid)
  over plain or gradient grey backgrounds. The test images each hold a colour-shape pair that no
  training image has (${r.world.heldOutPairs.join(", ")}), and the test questions ask about that object:
  the test measures generalisation, not memory.
- **Recipe** (\`npm run demo:train\`, ${Math.round(r.seconds)} s of training on the machine that made it):
${r.stages.map((s) => `  - ${s.name}: ${stage(s)}`).join("\n")}

## Accuracy on the held-out questions

Exact match after the EvalAI normaliser (\`llava eval model_vqa_loader --temperature 0\`, then
\`llava eval synth_accuracy\`), ${r.scores.f32.overall.questions} questions about ${r.test} unseen images:

${accuracyTable(r.scores)}

## Loss curves

${r.stages.map((s) => `![${s.name}](loss-${s.name}.svg)`).join(" ")}

## Limits

It knows only this world: the ${r.world.shapes.length} shapes, ${Object.keys(r.world.colors).length} colours, 3x3 positions, counts up to ${r.world.objectsPerScene[1]}
and the question wordings of \`llava data synth\`, answered with a single word or phrase (the
"Answer the question using a single word or phrase." prompt). Anything else — photographs, other
questions, long answers, other languages — gets fluent-looking nonsense. It is a demonstration of
the whole pipeline, not a general model.
`);
}
