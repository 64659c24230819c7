/** Python's `os.path` rules the reference scripts rely on for their file names. */
import os from "node:os";

/** `os.path.expanduser`: a leading `~` or `~/` is the home folder (other users' `~name` are left alone). */
export function expandUser(p: string): string {
  return p === "~" || p.startsWith("~/") ? os.homedir() + p.slice(1) : p;
}

/** `os.path.join(a, b)` on POSIX: an absolute `b` replaces `a`; no normalisation. */
export function pathJoin(a: string, b: string): string {
  if (b.startsWith("/")) return b;
  return a === "" || a.endsWith("/") ? a + b : `${a}/${b}`;
}

/** `os.path.dirname`: everything before the last `/`, trailing slashes dropped unless it is all slashes. */
export function dirName(p: string): string {
  const i = p.lastIndexOf("/") + 1;
  const head = p.slice(0, i);
  return head && !/^\/+$/.test(head) ? head.replace(/\/+$/, "") : head;
}

/** os.path.splitext(os.path.basename(file))[0]: leading dots do not start an extension. */
export function pathStem(file: string): string {
  const base = file.slice(file.lastIndexOf("/") + 1);
  const dot = base.lastIndexOf(".");
  return dot > 0 && /[^.]/.test(base.slice(0, dot)) ? base.slice(0, dot) : base;
}
