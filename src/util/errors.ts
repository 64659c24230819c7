/**
 * An error the user can act on: a bad file, a bad argument, a bad image.
 * Commands print its message alone (no stack trace) and exit non-zero.
 */
export class LlavaError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LlavaError";
  }
}

/** Throws a LlavaError when `cond` is false. */
export function check(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new LlavaError(typeof message === "string" ? message : message());
}

/** A command line the command cannot take, as argparse refuses one: exit status 2. */
export class UsageError extends LlavaError {
  readonly exitCode = 2;
}
