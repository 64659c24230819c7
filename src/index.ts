/** llava-ts: the public API for programs that use LLaVA models from TypeScript. */
export { loadLlava, type LoadedLlava, type LoadOptions, type CheckpointFormat } from "./llava/load.js";
export { LlavaModel, type LlavaSettings } from "./llava/model.js";
export { readModelSpec, type ModelSpec } from "./llava/spec.js";
export { answerGeneration, buildInputs, prepareImages, promptIds, streamAnswer } from "./llava/pipeline.js";
export {
  Generation, sampleToken, type FinishReason, type GeneratedPiece, type GenerationHooks, type GenerationOptions, type SamplingOptions,
} from "./llava/generate.js";
export { Trace, traceInference, traceRequest, traceTraining, writeTrace, type TracedArray, type TraceRequest } from "./llava/trace.js";
export {
  Conversation, convModeForModelName, convTemplates, getConvTemplate, modelNameFromPath, SeparatorStyle, stopString,
} from "./llava/conversation.js";
export { loadImage, loadImages, encodePng, type ImageLimits, type RgbImage } from "./image/decode.js";
export { LlavaTokenizer } from "./tokenizer/tokenizer.js";
export { WeightStore, writeSafetensors, writeShardedSafetensors } from "./io/safetensors.js";
export { TorchBinStore } from "./io/torch-bin.js";
export { openWeights, type WeightReader } from "./io/weights.js";
export { readNpy, writeNpy } from "./io/npy.js";
export { createBackend, type BackendOptions } from "./tensor/backends.js";
export type { Backend } from "./tensor/backend.js";
export { Tensor, PackedTensor } from "./tensor/tensor.js";
export * as ops from "./tensor/ops.js";
export { AdamW } from "./train/optimizer.js";
export { parseTrainOptions, type TrainOptions } from "./train/options.js";
export { runTraining } from "./train/recipe.js";
export { referenceCommand } from "./train/reference-command.js";
export { LlavaError } from "./util/errors.js";
