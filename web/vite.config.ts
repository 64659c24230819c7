import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const here = fileURLToPath(new URL(".", import.meta.url));

// The page and its assets, relative to wherever it is served, for the web server to serve from dist/web.
export default defineConfig({
  root: here,
  base: "./",
  logLevel: "warn",
  build: { outDir: `${here}/../dist/web`, emptyOutDir: true },
});
