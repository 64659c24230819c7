/**
 * Progress of a conversion on stderr: tensors done / total and bytes, redrawn in place on a
 * terminal, and as a line every few seconds (plus the last) when stderr is a file or pipe.
 */

/** Receives the progress of a write; a sink may throw to stop the conversion. */
export interface ProgressSink {
  start(totalTensors: number, totalBytes: number): void;
  tensorDone(name: string, bytes: number): void;
  finish(): void;
}

export const silentProgress: ProgressSink = { start() {}, tensorDone() {}, finish() {} };

interface Stream {
  isTTY?: boolean;
  write(text: string): unknown;
}

export function formatBytes(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let x = n;
  while (x >= 1000 && i < units.length - 1) {
    x /= 1000;
    i++;
  }
  return `${i === 0 ? x : x.toFixed(x >= 100 ? 0 : 1)} ${units[i]}`;
}

export class ProgressBar implements ProgressSink {
  private tensors = 0;
  private bytes = 0;
  private totalTensors = 0;
  private totalBytes = 0;
  private lastDraw = 0;
  private shown = false;
  private drawnBytes = -1;

  constructor(
    private readonly stream: Stream,
    private readonly label: string,
    /** below this many bytes nothing is drawn: small conversions finish before a bar helps */
    private readonly minBytes = 100e6,
    private readonly intervalMs: number = stream.isTTY ? 100 : 5000,
  ) {}

  start(totalTensors: number, totalBytes: number): void {
    this.totalTensors = totalTensors;
    this.totalBytes = totalBytes;
    this.lastDraw = Date.now();
  }

  tensorDone(_name: string, bytes: number): void {
    this.tensors++;
    this.bytes += bytes;
    const now = Date.now();
    if (this.totalBytes >= this.minBytes && now - this.lastDraw >= this.intervalMs) {
      this.lastDraw = now;
      this.draw(false);
    }
  }

  finish(): void {
    const alreadyPrinted = !this.stream.isTTY && this.drawnBytes === this.bytes;
    if ((this.totalBytes >= this.minBytes || this.shown) && !alreadyPrinted) this.draw(true);
  }

  private draw(final: boolean): void {
    const fraction = this.totalBytes > 0 ? this.bytes / this.totalBytes : 1;
    const text = `${this.label}: ${this.tensors}/${this.totalTensors} tensors, ${formatBytes(this.bytes)} / ${formatBytes(this.totalBytes)}`;
    if (this.stream.isTTY) {
      const width = 24;
      const filled = Math.round(fraction * width);
      this.stream.write(`\r[${"#".repeat(filled)}${".".repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ${text}\x1b[K${final ? "\n" : ""}`);
    } else {
      this.stream.write(`${text} (${(fraction * 100).toFixed(0)}%)\n`);
    }
    this.shown = true;
    this.drawnBytes = this.bytes;
  }
}
