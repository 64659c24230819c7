/** `llava inspect`: a checkpoint's shapes, settings, sizes and memory needs, from configs and headers only. */
import type { ParseArgsConfig } from "node:util";
import { LlavaError } from "../util/errors.js";
import { formatReport, inspectModel } from "../zoo/inspect.js";

import type { Values } from "./common.js";

export const inspectCommand: { options: ParseArgsConfig["options"]; run: (v: Values) => Promise<void> } = {
  options: {
    "model-path": { type: "string" },
    "model-base": { type: "string" },
    "vision-tower": { type: "string" },
    mmproj: { type: "string" },
    json: { type: "boolean" },
  },
  run: async (v) => {
    const modelPath = v["model-path"];
    if (typeof modelPath !== "string") throw new LlavaError("inspect needs --model-path DIR");
    const report = inspectModel(modelPath, {
      modelBase: v["model-base"] as string | undefined,
      visionTower: v["vision-tower"] as string | undefined,
      mmproj: v.mmproj as string | undefined,
    });
    process.stdout.write(v.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
  },
};
