/** A progress bar with an ETA on stderr (a terminal only), as tqdm draws the reference's. */

const WIDTH = 20;

function clock(seconds: number): string {
  const s = Math.round(seconds);
  const mm = String(Math.floor(s / 60) % 60).padStart(2, "0");
  const ss = String(s % 60).padStart(2, "0");
  return s >= 3600 ? `${Math.floor(s / 3600)}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** e.g. " 40%|########            | 4/10 [00:08<00:12, 2.00s/it]" (ETA from the items done in this run). */
export function progressLine(done: number, total: number, elapsedMs: number, doneThisRun: number): string {
  const fraction = total ? done / total : 1;
  const filled = Math.round(fraction * WIDTH);
  const elapsed = elapsedMs / 1000;
  const perItem = doneThisRun ? elapsed / doneThisRun : NaN;
  const eta = Number.isFinite(perItem) ? clock(perItem * (total - done)) : "?";
  const rate = !Number.isFinite(perItem) ? "?it/s" : perItem >= 1 ? `${perItem.toFixed(2)}s/it` : `${(1 / perItem).toFixed(2)}it/s`;
  return `${String(Math.round(fraction * 100)).padStart(3)}%|${"#".repeat(filled).padEnd(WIDTH)}| ${done}/${total} [${clock(elapsed)}<${eta}, ${rate}]`;
}

export class Progress {
  private readonly started = Date.now();
  private doneThisRun = 0;

  constructor(private done: number, private readonly total: number, private readonly stream: NodeJS.WriteStream = process.stderr) {
    this.draw();
  }

  tick(): void {
    this.done++;
    this.doneThisRun++;
    this.draw();
  }

  end(): void {
    if (this.stream.isTTY) this.stream.write("\n");
  }

  private draw(): void {
    if (this.stream.isTTY) this.stream.write(`\r${progressLine(this.done, this.total, Date.now() - this.started, this.doneThisRun)}`);
  }
}
