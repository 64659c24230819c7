/**
 * Incremental detokenisation for streaming generation, in the spirit of transformers'
 * TextStreamer / TextIteratorStreamer (skip_special_tokens=True): each pushed token returns the text
 * that became final. Text is held back while it could still change: a trailing run of byte-fallback
 * tokens (an emoji arrives as <0xF0><0x9F><0x98><0x80>) or a trailing U+FFFD from an incomplete
 * UTF-8 sequence. Like the reference, the leading space SentencePiece puts on the first word is not
 * printed.
 *
 * The pieces always concatenate to `decode(allIds, { skipSpecialTokens: true,
 * cleanUpTokenizationSpaces: false })` (LLaVA checkpoints have clean-up off anyway).
 * Differences from the reference streamer, which only affect timing or one known quirk: it prints
 * up to the last space (whole words), while this prints everything that is final; and it restarts
 * decoding after each newline, which drops the space of a word token right after a "\n" token,
 * while this keeps it.
 */
import type { LlavaTokenizer } from "./tokenizer.js";

export interface StreamingDetokenizerOptions {
  /** Default true, as LLaVA's CLI streams. */
  skipSpecialTokens?: boolean;
}

export class StreamingDetokenizer {
  private readonly skipSpecialTokens: boolean;
  /**
   * Tokens decoded together: an already printed "anchor" token followed by the newer ones. Decoding
   * a short window instead of everything keeps each step cheap; the anchor gives the newer tokens
   * their context (SentencePiece strips the leading space of the first token of a decode).
   */
  private window: number[] = [];
  /** How many UTF-16 units of decode(window) have been returned already. */
  private printed = 0;

  constructor(
    private readonly tokenizer: LlavaTokenizer,
    opts: StreamingDetokenizerOptions = {},
  ) {
    this.skipSpecialTokens = opts.skipSpecialTokens ?? true;
  }

  /** Adds one generated token; returns the newly printable text (possibly ""). */
  push(id: number): string {
    this.window.push(id);
    const text = this.decode(this.window);
    const stable = this.stableLength(text);
    const piece = stable > this.printed ? text.slice(this.printed, stable) : "";
    this.printed = Math.max(this.printed, stable);
    if (stable === text.length && this.canAnchor(id)) {
      this.window = [id];
      this.printed = this.decode(this.window).length;
    }
    return piece;
  }

  /** Ends the stream: returns whatever was held back and resets for a new stream. */
  flush(): string {
    const text = this.decode(this.window);
    const rest = text.length > this.printed ? text.slice(this.printed) : "";
    this.window = [];
    this.printed = 0;
    return rest;
  }

  private decode(ids: number[]): string {
    return this.tokenizer.decode(ids, { skipSpecialTokens: this.skipSpecialTokens, cleanUpTokenizationSpaces: false });
  }

  /** Length of the prefix of decode(window) that later tokens cannot change. */
  private stableLength(text: string): number {
    // A run of byte tokens is decoded as a whole (all U+FFFD while invalid), so it is final only
    // once a visible non-byte token closes it; dropped tokens do not close it.
    let runStart = this.window.length;
    let hasBytes = false;
    while (runStart > 0) {
      const id = this.window[runStart - 1]!;
      const isByte = this.tokenizer.isByteToken(id);
      if (!isByte && !this.isDropped(id)) break;
      hasBytes ||= isByte;
      runStart--;
    }
    if (hasBytes) return this.decode(this.window.slice(0, runStart)).length;
    // Decoders without byte tokens (byte-level BPE) end in U+FFFD mid-character.
    let end = text.length;
    while (end > 0 && text.charCodeAt(end - 1) === 0xfffd) end--;
    return end;
  }

  /** A token can start the next window if decoding it alone is a prefix of decoding it with more. */
  private canAnchor(id: number): boolean {
    return !this.isDropped(id) && !this.tokenizer.isByteToken(id);
  }

  /** Tokens that decode to nothing: unknown ids and, when skipping, special tokens. */
  private isDropped(id: number): boolean {
    return this.tokenizer.idToToken(id) === undefined || (this.skipSpecialTokens && this.tokenizer.isSpecialId(id));
  }
}
