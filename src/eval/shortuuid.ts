/** The answer ids of the reference (`shortuuid.uuid()`): a random UUID written in base 57, 22 characters. */
import { randomUUID } from "node:crypto";

const ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const BASE = BigInt(ALPHABET.length);
/** ceil(log_57(2^128)) */
const LENGTH = 22;

export function shortUuid(): string {
  let n = BigInt("0x" + randomUUID().replaceAll("-", ""));
  let out = "";
  for (; n > 0n; n /= BASE) out = ALPHABET[Number(n % BASE)] + out;
  return out.padStart(LENGTH, ALPHABET[0]);
}
