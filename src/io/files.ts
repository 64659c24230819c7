/**
 * Low-level file helpers shared by the format readers and writers: every failure becomes a
 * LlavaError that names the file, and every write is atomic (temp file, fsync, rename).
 */
import fs from "node:fs";
import path from "node:path";
import { LlavaError } from "../util/errors.js";

/** Largest single read/write handed to the OS (fs.readSync rejects lengths >= 2 GiB). */
const IO_CHUNK = 1 << 30;

function errnoCode(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && "code" in err ? String((err as { code: unknown }).code) : undefined;
}

/** A short human description of an fs error ("file not found", "permission denied", ...). */
export function describeFsError(err: unknown): string {
  switch (errnoCode(err)) {
    case "ENOENT":
      return "file not found";
    case "EISDIR":
      return "is a directory, expected a file";
    case "ENOTDIR":
      return "a parent path is not a directory";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "ENOSPC":
      return "no space left on device";
    default:
      return err instanceof Error ? err.message : String(err);
  }
}

/** Opens `file` for reading; `what` says what the file is for ("safetensors file", "config"). */
export function openForRead(file: string, what: string): number {
  try {
    const fd = fs.openSync(file, "r");
    if (fs.fstatSync(fd).isDirectory()) {
      fs.closeSync(fd);
      throw Object.assign(new Error("directory"), { code: "EISDIR" });
    }
    return fd;
  } catch (err) {
    throw new LlavaError(`${what} ${file}: ${describeFsError(err)}`);
  }
}

/** Fills `target` from `fd` starting at byte `position`; a short file is an error naming `file`. */
export function readFully(fd: number, target: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < target.length) {
    const want = Math.min(IO_CHUNK, target.length - done);
    let got: number;
    try {
      got = fs.readSync(fd, target, done, want, position + done);
    } catch (err) {
      throw new LlavaError(`${file}: read failed at byte ${position + done}: ${describeFsError(err)}`);
    }
    if (got === 0) {
      throw new LlavaError(
        `${file}: file ended at byte ${position + done}, expected ${target.length - done} more bytes ` +
          `(truncated, or changed after it was opened)`,
      );
    }
    done += got;
  }
}

/** Writes all of `bytes` to `fd`. */
export function writeFully(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) {
    const n = Math.min(IO_CHUNK, bytes.length - done);
    done += fs.writeSync(fd, bytes, done, n);
  }
}

/**
 * Writes `file` atomically: `write` fills `file + ".partial"`, which is fsynced and then renamed over
 * `file`. An interrupted write leaves at most a `.partial` file, never a truncated `file`.
 */
export function writeFileAtomic(file: string, write: (fd: number) => void): void {
  const partial = file + ".partial";
  let fd: number;
  try {
    fd = fs.openSync(partial, "w");
  } catch (err) {
    throw new LlavaError(`cannot write ${file}: ${describeFsError(err)}`);
  }
  try {
    write(fd);
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(partial, { force: true });
    if (err instanceof LlavaError) throw err;
    throw new LlavaError(`cannot write ${file}: ${describeFsError(err)}`);
  }
  fs.closeSync(fd);
  try {
    fs.renameSync(partial, file);
  } catch (err) {
    fs.rmSync(partial, { force: true });
    throw new LlavaError(`cannot write ${file}: ${describeFsError(err)}`);
  }
  syncDirectory(path.dirname(file));
}

/** Makes a rename durable. Best effort: some platforms cannot fsync a directory. */
function syncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch {
    // Not supported here (e.g. Windows); the rename itself is still atomic.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * Reads and parses a JSON file. `what` names the file's role in messages, e.g.
 * `readJsonFile(p, "model config")` -> "model config /x/config.json: file not found".
 */
export function readJsonFile(file: string, what: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new LlavaError(`${what} ${file}: ${describeFsError(err)}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    throw new LlavaError(`${what} ${file}: not valid JSON (${detail})`);
  }
}

/** True when `p` exists and is a regular file. */
export function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** True when `p` exists and is a directory. */
export function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}
