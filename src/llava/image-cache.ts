/**
 * Projected image features by image content, so an image seen again (the next turn of a chat,
 * another client's request) skips the vision tower. The key is the RGB bytes' sha256, the size
 * and the model's preprocessing mode; the cache is bounded by the bytes of the features it holds.
 */
import { createHash } from "node:crypto";
import type { RgbImage } from "../image/decode.js";
import type { Tensor } from "../tensor/tensor.js";
import { ByteLru } from "../util/lru.js";

export class ImageFeatureCache {
  private readonly features: ByteLru<string, Tensor>;

  /** `maxBytes` 0 keeps nothing */
  constructor(maxBytes: number) {
    this.features = new ByteLru(maxBytes);
  }

  get bytes(): number {
    return this.features.bytes;
  }

  /**
   * Each image's content key and feature rows [M_i, D] under preprocessing `mode`; `encode`
   * computes the images not cached (all together).
   */
  lookup(images: RgbImage[], mode: string, encode: (images: RgbImage[]) => Tensor[]): { hashes: string[]; features: Tensor[] } {
    const hashes = images.map((img) => imageHash(img, mode));
    const found = new Map<string, Tensor>();
    for (const h of hashes) {
      const f = this.features.get(h);
      if (f) found.set(h, f);
    }
    const missing = new Map<string, RgbImage>();
    hashes.forEach((h, i) => found.has(h) || missing.has(h) || missing.set(h, images[i]));
    if (missing.size) {
      const fresh = encode([...missing.values()]);
      [...missing.keys()].forEach((h, i) => {
        found.set(h, fresh[i]);
        this.features.set(h, fresh[i], fresh[i].size * 4);
      });
    }
    return { hashes, features: hashes.map((h) => found.get(h)!) };
  }
}

function imageHash(img: RgbImage, mode: string): string {
  return createHash("sha256").update(img.data).update(`\0${img.width}x${img.height}\0${mode}`).digest("hex");
}
