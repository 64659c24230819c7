/** `llava chat`: the reference llava.serve.cli terminal chat, answers streamed token by token. */
import readline from "node:readline";
import { cliDisplayRoles, modelNameFromPath, stopString } from "../llava/conversation.js";
import type { LoadedLlava } from "../llava/load.js";
import { streamAnswer } from "../llava/pipeline.js";
import { loadImage, type RgbImage } from "../image/decode.js";
import { conversationFor, samplingFromArgs, type Values } from "./common.js";

/** Reads one line after printing `prompt`; null at end of input. */
function ask(rl: readline.Interface, prompt: string, closed: { value: boolean }): Promise<string | null> {
  if (closed.value) return Promise.resolve(null);
  return new Promise((resolve) => {
    const onClose = () => resolve(null);
    rl.once("close", onClose);
    rl.question(prompt, (line) => {
      rl.off("close", onClose);
      resolve(line);
    });
  });
}

export async function runChat(loaded: LoadedLlava, v: Values): Promise<void> {
  const images: RgbImage[] = typeof v["image-file"] === "string" ? [await loadImage(v["image-file"])] : [];
  const conv = conversationFor(loaded, v);
  const [userRole, assistantRole] = cliDisplayRoles(conv, modelNameFromPath(loaded.dir));
  const sampling = samplingFromArgs(v, 512);
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
  const closed = { value: false };
  rl.on("close", () => (closed.value = true));
  let first = true;
  try {
    for (;;) {
      const line = await ask(rl, `${userRole}: `, closed);
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
