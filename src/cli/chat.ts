/** `llava chat`: the reference llava.serve.cli terminal chat, answers streamed token by token. */
import readline from "node:readline";
import { cliDisplayRoles, modelNameFromPath, stopString } from "../llava/conversation.js";
import type { LoadedLlava } from "../llava/load.js";
import { streamAnswer } from "../llava/pipeline.js";
import { loadImage, type RgbImage } from "../image/decode.js";
import { conversationFor, samplingFromArgs, type Values } from "./common.js";

export async function runChat(loaded: LoadedLlava, v: Values): Promise<void> {
  const images: RgbImage[] = typeof v["image-file"] === "string" ? [await loadImage(v["image-file"])] : [];
  const conv = conversationFor(loaded, v);
  const [userRole, assistantRole] = cliDisplayRoles(conv, modelNameFromPath(loaded.dir));
  const sampling = samplingFromArgs(v, 512);
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  // an async iterator buffers lines that arrive while an answer is being generated
  const lines = rl[Symbol.asyncIterator]();
  let first = true;
  try {
    for (;;) {
      process.stdout.write(`${userRole}: `);
      const next = await lines.next();
      const line = next.done ? null : next.value;
      if (line === null || line === "") {
        process.stdout.write("exit...\n");
        return;
      }
      // the image goes with the first turn, as in the reference; every later prompt still holds it
      const text = first && images.length ? `<image>\n${line}` : line;
      conv.appendMessage(conv.roles[0], text);
      conv.appendMessage(conv.roles[1], null);
      process.stdout.write(`${assistantRole}: `);
      const prompt = conv.getPrompt();
      if (v.debug) process.stderr.write(`\n[prompt] ${JSON.stringify(prompt)}\n`);
      let answer = "";
      for await (const piece of streamAnswer(loaded, prompt, images, { ...sampling, stop: [stopString(conv)] })) {
        const out = answer ? piece : piece.trimStart();
        answer += out;
        process.stdout.write(out);
      }
      process.stdout.write("\n");
      conv.updateLastMessage(answer.trim());
      if (v.debug) process.stderr.write(`[answer] ${JSON.stringify(answer)}\n`);
      first = false;
    }
  } finally {
    rl.close();
  }
}
