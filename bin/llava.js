#!/usr/bin/env -S node --single-threaded-gc
// The `llava` command. It lives outside dist/ because every build rewrites dist/ without the
// executable bit; this file is committed executable, so `bin/llava.js` works in any order with
// `npm ci`, `npm test` and the build. The flag on the first line: src/util/node-flags.ts.
try {
  await import("../dist/src/cli/main.js");
} catch (e) {
  if (e?.code !== "ERR_MODULE_NOT_FOUND") throw e;
  process.stderr.write(`llava: ${e.message} (run \`npm ci\` to install and build)\n`);
  process.exit(1);
}
