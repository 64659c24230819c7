/**
 * The chat page: talks to the web server's JSON API (src/serve/web-server.ts), which keeps the
 * conversation, asks the models and logs. This file only shows what the server says and sends
 * what the user does.
 */
import ironingUrl from "./examples/extreme-ironing.png";
import pierUrl from "./examples/lakeside-pier.png";
import "./style.css";

/** The reference UI's two examples, with images of our own making. */
const EXAMPLES = [
  { image: ironingUrl, text: "What is unusual about this image?" },
  { image: pierUrl, text: "What are the things I should be cautious about when I visit here?" },
];

type Slider = { min: number; max: number; step: number; default: number };
interface Config {
  models: string[];
  embed: boolean;
  parameters: { temperature: Slider; topP: Slider; maxNewTokens: Slider };
  imageProcessModes: string[];
  maxUploadBytes: number;
}
interface Row {
  user: string | null;
  image?: string;
  assistant: string | null;
}
type Status = "streaming" | "done" | "error" | "stopped";
interface Line {
  session: string;
  rows: Row[];
  status: Status;
  notice?: string;
}

const el = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const ui = {
  model: el<HTMLSelectElement>("model"),
  dropZone: el("drop-zone"),
  imageInput: el<HTMLInputElement>("image-input"),
  imagePreview: el<HTMLImageElement>("image-preview"),
  dropHint: el("drop-hint"),
  removeImage: el<HTMLButtonElement>("remove-image"),
  processModes: el("process-modes"),
  examples: el("examples"),
  temperature: el<HTMLInputElement>("temperature"),
  topP: el<HTMLInputElement>("top-p"),
  maxTokens: el<HTMLInputElement>("max-tokens"),
  chat: el("chat"),
  notice: el("notice"),
  composer: el<HTMLFormElement>("composer"),
  text: el<HTMLTextAreaElement>("text"),
  send: el<HTMLButtonElement>("send"),
  stop: el<HTMLButtonElement>("stop"),
  upvote: el<HTMLButtonElement>("upvote"),
  downvote: el<HTMLButtonElement>("downvote"),
  flag: el<HTMLButtonElement>("flag"),
  regenerate: el<HTMLButtonElement>("regenerate"),
  clear: el<HTMLButtonElement>("clear"),
};

let config: Config;
let session: string | undefined;
/** the image to send with the next message, as a data URL */
let pendingImage: string | undefined;
let inFlight: AbortController | undefined;

async function start(): Promise<void> {
  const res = await fetch("api/web/config");
  config = (await res.json()) as Config;
  el("title").hidden = config.embed;
  el("terms").hidden = config.embed;
  showModels(config.models);
  setUpSlider(ui.temperature, config.parameters.temperature);
  setUpSlider(ui.topP, config.parameters.topP);
  setUpSlider(ui.maxTokens, config.parameters.maxNewTokens);
  for (const mode of config.imageProcessModes) {
    const label = document.createElement("label");
    label.innerHTML = `<input type="radio" name="process-mode" value="${mode}"${mode === "Default" ? " checked" : ""} /> ${mode}`;
    ui.processModes.append(label);
  }
  for (const example of EXAMPLES) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "example";
    button.innerHTML = `<img alt="" src="${example.image}" /><span></span>`;
    button.querySelector("span")!.textContent = example.text;
    button.addEventListener("click", () => void useExample(example.image, example.text));
    ui.examples.append(button);
  }
}

function showModels(models: string[]): void {
  ui.model.replaceChildren(...models.map((m) => new Option(m, m)));
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted !== null && models.includes(wanted)) ui.model.value = wanted;
  if (models.length === 0) notify("No model is being served yet: start a model worker, then reload this page.");
}

function setUpSlider(input: HTMLInputElement, s: Slider): void {
  Object.assign(input, { min: String(s.min), max: String(s.max), step: String(s.step), value: String(s.default) });
  const output = el<HTMLOutputElement>(`${input.id}-value`);
  const show = () => (output.value = input.value);
  input.addEventListener("input", show);
  show();
}

function notify(message: string | undefined, kind: "error" | "info" = "error"): void {
  ui.notice.hidden = !message;
  ui.notice.textContent = message ?? "";
  ui.notice.className = `notice ${kind}`;
}

// --- the image to send ---------------------------------------------------------------------

function setImage(blob: Blob): void {
  if (!blob.type.startsWith("image/")) return notify(`That file is not an image (${blob.type || "unknown type"}).`);
  if (blob.size > config.maxUploadBytes) return notify(`That image is over the upload limit of ${Math.round(config.maxUploadBytes / 2 ** 20)} MB.`);
  const reader = new FileReader();
  reader.onload = () => showPendingImage(reader.result as string);
  reader.readAsDataURL(blob);
}

function showPendingImage(dataUrl: string | undefined): void {
  pendingImage = dataUrl;
  ui.imagePreview.hidden = dataUrl === undefined;
  ui.removeImage.hidden = dataUrl === undefined;
  ui.dropHint.hidden = dataUrl !== undefined;
  if (dataUrl) ui.imagePreview.src = dataUrl;
  else ui.imagePreview.removeAttribute("src");
  ui.imageInput.value = "";
}

async function useExample(imageUrl: string, text: string): Promise<void> {
  ui.text.value = text;
  setImage(await (await fetch(imageUrl)).blob());
}

ui.imageInput.addEventListener("change", () => {
  const file = ui.imageInput.files?.[0];
  if (file) setImage(file);
});
ui.removeImage.addEventListener("click", () => showPendingImage(undefined));
for (const name of ["dragenter", "dragover"]) {
  ui.dropZone.addEventListener(name, (e) => {
    e.preventDefault();
    ui.dropZone.classList.add("dragging");
  });
}
ui.dropZone.addEventListener("dragleave", () => ui.dropZone.classList.remove("dragging"));
ui.dropZone.addEventListener("drop", (e) => {
  e.preventDefault();
  ui.dropZone.classList.remove("dragging");
  const file = e.dataTransfer?.files[0];
  if (file) setImage(file);
});
// a file dropped beside the zone would make the browser leave the page
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => e.preventDefault());
document.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData?.items ?? [])].find((i) => i.type.startsWith("image/"));
  const file = item?.getAsFile();
  if (file) {
    e.preventDefault();
    setImage(file);
  }
});

// --- the conversation ------------------------------------------------------------------------

function settings() {
  return {
    session,
    model: ui.model.value,
    temperature: Number(ui.temperature.value),
    topP: Number(ui.topP.value),
    maxNewTokens: Number(ui.maxTokens.value),
    imageProcessMode: (document.querySelector<HTMLInputElement>('input[name="process-mode"]:checked')?.value ?? "Default"),
  };
}

function render(rows: Row[]): void {
  ui.chat.replaceChildren(
    ...rows.flatMap((row) => {
      const bubbles: HTMLElement[] = [];
      if (row.user !== null || row.image) {
        const user = document.createElement("div");
        user.className = "message user";
        if (row.image) {
          const img = document.createElement("img");
          img.src = row.image;
          img.alt = "user upload image";
          user.append(img);
        }
        if (row.user) user.append(Object.assign(document.createElement("p"), { textContent: row.user }));
        bubbles.push(user);
      }
      if (row.assistant !== null) {
        bubbles.push(Object.assign(document.createElement("div"), { className: "message assistant", textContent: row.assistant }));
      }
      return bubbles;
    }),
  );
  ui.chat.scrollTop = ui.chat.scrollHeight;
}

/** The buttons as the reference enables them: votes only after an answer completed. */
function setButtons(status: Status | "idle" | "cleared"): void {
  const streaming = status === "streaming";
  for (const b of [ui.upvote, ui.downvote, ui.flag]) b.disabled = status !== "done";
  for (const b of [ui.regenerate, ui.clear]) b.disabled = streaming || status === "idle" || status === "cleared";
  ui.send.disabled = streaming;
  ui.send.hidden = streaming;
  ui.stop.hidden = !streaming;
}

let lastStatus: Status | "idle" | "cleared" = "idle";

/** Posts a chat or regenerate request and shows its answer as it streams; `onAccepted` runs once the server took it. */
async function streamAnswer(path: string, body: object, onAccepted = () => {}): Promise<void> {
  notify(undefined);
  const before = lastStatus;
  setButtons("streaming");
  inFlight = new AbortController();
  let rows: Row[] = [];
  try {
    const res = await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), signal: inFlight.signal });
    if (!res.ok || !res.body) {
      const error = ((await res.json().catch(() => ({}))) as { error?: string }).error;
      notify(error ?? `The server answered HTTP ${res.status}.`);
      setButtons((lastStatus = before));
      return;
    }
    onAccepted();
    let buffered = "";
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffered += value;
      let end: number;
      while ((end = buffered.indexOf("\n")) >= 0) {
        const line = JSON.parse(buffered.slice(0, end)) as Line;
        buffered = buffered.slice(end + 1);
        session = line.session;
        rows = line.rows;
        render(rows);
        setButtons((lastStatus = line.status));
        if (line.notice) notify(line.notice);
      }
    }
    if (lastStatus === "streaming") throw new Error("the answer ended early");
  } catch (err) {
    if (inFlight.signal.aborted) {
      // the server keeps what had arrived; so does the window, without the cursor
      const last = rows[rows.length - 1];
      if (last?.assistant) last.assistant = last.assistant.replace(/▌$/, "");
      render(rows);
      setButtons((lastStatus = "stopped"));
    } else {
      notify(`The connection to the web server failed: ${(err as Error).message}`);
      setButtons((lastStatus = "error"));
    }
  } finally {
    inFlight = undefined;
  }
}

ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.text.value;
  if (text === "" && pendingImage === undefined) return;
  const body = { ...settings(), text, image: pendingImage };
  void streamAnswer("api/web/chat", body, () => {
    ui.text.value = "";
    showPendingImage(undefined);
  });
});
ui.text.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.stop.addEventListener("click", () => inFlight?.abort());
ui.regenerate.addEventListener("click", () => void streamAnswer("api/web/regenerate", settings()));

ui.clear.addEventListener("click", async () => {
  const res = await post("api/web/clear", { session });
  if (!res) return;
  render([]);
  ui.text.value = "";
  showPendingImage(undefined);
  setButtons((lastStatus = "cleared"));
});

for (const [button, type] of [[ui.upvote, "upvote"], [ui.downvote, "downvote"], [ui.flag, "flag"]] as const) {
  button.addEventListener("click", async () => {
    if (!(await post("api/web/vote", { session, model: ui.model.value, type }))) return;
    ui.text.value = "";
    for (const b of [ui.upvote, ui.downvote, ui.flag]) b.disabled = true;
    notify(type === "flag" ? "Flagged. Thank you." : "Thanks for your vote.", "info");
  });
}

/** POSTs JSON; shows the server's error and returns undefined when it refuses. */
async function post(path: string, body: object): Promise<unknown> {
  try {
    const res = await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const json = (await res.json()) as { error?: string };
    if (!res.ok) return notify(json.error ?? `The server answered HTTP ${res.status}.`);
    return json;
  } catch (err) {
    return notify(`The connection to the web server failed: ${(err as Error).message}`);
  }
}

start().catch((err: Error) => notify(`Cannot load the page's settings: ${err.message}`));
