/**
 * The web UI's image handling before an image leaves for a worker, the log or the chat window:
 * the reference's `Conversation.process_image` (the process mode, then a cap on the size) and
 * the md5 it names saved images by.
 */
import { createHash } from "node:crypto";
import sharp from "sharp";
import type { RgbImage } from "../image/decode.js";
import { resizeBicubic } from "../image/resample.js";
import { expandToSquare, type Rgb } from "../image/transforms.js";

/** The choices of the reference's "Preprocess for non-square image" radio. */
export const IMAGE_PROCESS_MODES = ["Crop", "Resize", "Pad", "Default"] as const;
export type ImageProcessMode = (typeof IMAGE_PROCESS_MODES)[number];

/** tuple(int(x * 255) for x in CLIP's image_mean), the colour `Pad` fills with. */
const PAD_COLOR: Rgb = [122, 116, 104];

/** process_image's max_len and min_len: a longer image is scaled down before transport. */
const MAX_SIDE = 1344;
const MIN_SIDE = 672;

/** An uploaded image with the mode chosen for it (the reference's `(text, image, mode)` tuple). */
export interface WebImage {
  image: RgbImage;
  mode: ImageProcessMode;
}

/** The reference's `process_image(image, mode, return_pil=True)`. */
export function processImage(img: RgbImage, mode: ImageProcessMode): RgbImage {
  // Crop and Default leave the image to the worker's own preprocessing.
  let out = mode === "Pad" ? expandToSquare(img, PAD_COLOR) : mode === "Resize" ? resizeBicubic(img, 336, 336) : img;
  const longest = Math.max(out.width, out.height);
  if (longest > MAX_SIDE) {
    const shortest = Math.min(out.width, out.height);
    const aspect = longest / shortest;
    const newShort = Math.trunc(Math.min(MAX_SIDE / aspect, MIN_SIDE, shortest));
    const newLong = Math.trunc(newShort * aspect);
    out = out.height > out.width ? resizeBicubic(out, newShort, newLong) : resizeBicubic(out, newLong, newShort);
  }
  return out;
}

/** md5 of the pixels (PIL's `image.tobytes()`), the name the reference saves an image under. */
export function imageMd5(img: RgbImage): string {
  return createHash("md5").update(img.data).digest("hex");
}

/** JPEG, as the reference saves logged images (PIL's default quality 75) and shows them in the chat. */
export function encodeJpeg(img: RgbImage): Promise<Buffer> {
  return sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } }).jpeg({ quality: 75 }).toBuffer();
}
