/** The serving benchmarks' concurrent clients: each its own question and image. */
import type { RgbImage } from "../src/image/decode.js";
import { noiseImage } from "../src/perf/checkpoints.js";

const WORDS = ["red", "blue", "cat", "sky", "boat", "tree", "road", "lamp"];

/** Concurrent client i's question (40 words) and image, each its own, so no cache helps one client from another's work. */
export function clientRequest(i: number): { question: string; image: RgbImage } {
  const question = Array.from({ length: 40 }, (_, j) => WORDS[(i * 3 + j * (i + 1)) % WORDS.length]).join(" ");
  return { question, image: noiseImage(640, 480, 100 + i) };
}
