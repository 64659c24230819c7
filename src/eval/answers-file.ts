/**
 * The answers file of a run, written so that an interrupted run loses nothing: each answer is
 * one whole line, appended and fsynced; reopening drops a torn last line (a write cut short) and
 * hands back the answers already there, so the run goes on where it stopped.
 */
import fs from "node:fs";
import { dirName } from "./pypath.js";
import { loadJson, type PyValue } from "../io/python.js";
import { describeFsError, writeFileAtomic, writeFully } from "../io/files.js";
import { LlavaError } from "../util/errors.js";

export interface ExistingAnswer {
  /** the line as written, without its newline */
  line: string;
  record: PyValue;
}

export class AnswersFile {
  private fd: number;

  private constructor(readonly file: string, readonly existing: ExistingAnswer[]) {
    this.fd = openForAppend(file);
  }

  /**
   * Opens `file` for a run, creating its folder as the reference's `os.makedirs(dirname)` does
   * (which fails for a bare file name). `warn` hears of a dropped torn line.
   */
  static open(file: string, warn: (message: string) => void): AnswersFile {
    const dir = dirName(file);
    if (dir === "") throw new LlavaError(`--answers-file "${file}" has no folder part (the reference's os.makedirs('') fails with FileNotFoundError)`);
    try {
      fs.mkdirSync(dir, { recursive: true });
    } catch (err) {
      throw new LlavaError(`cannot create the folder of the answers file ${file}: ${describeFsError(err)}`);
    }
    if (!fs.existsSync(file)) return new AnswersFile(file, []);
    let text: string;
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (err) {
      throw new LlavaError(`answers file ${file}: ${describeFsError(err)}`);
    }
    const complete = text.slice(0, text.lastIndexOf("\n") + 1);
    if (complete.length < text.length) {
      fs.truncateSync(file, Buffer.byteLength(complete));
      warn(`${file}: dropped its unfinished last line (a write that was cut short); that question is answered again`);
    }
    const existing = complete.split("\n").slice(0, -1).map((line, n) => {
      try {
        return { line, record: loadJson(line, `${file}, line ${n + 1}`) };
      } catch (err) {
        throw new LlavaError(`${(err as Error).message}: not an answers file this command wrote; remove it or choose another --answers-file`);
      }
    });
    return new AnswersFile(file, existing);
  }

  /** Appends one answer line whole and makes it durable before the next question starts. */
  append(line: string): void {
    writeFully(this.fd, Buffer.from(line + "\n"));
    fs.fsyncSync(this.fd);
  }

  /** Replaces the whole file atomically (the answers put back in question order). */
  rewrite(lines: string[]): void {
    fs.closeSync(this.fd);
    writeFileAtomic(this.file, (fd) => writeFully(fd, Buffer.from(lines.map((l) => l + "\n").join(""))));
    this.fd = openForAppend(this.file);
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

function openForAppend(file: string): number {
  try {
    return fs.openSync(file, "a");
  } catch (err) {
    throw new LlavaError(`cannot write the answers file ${file}: ${describeFsError(err)}`);
  }
}
