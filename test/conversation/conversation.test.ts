// Conversation behaviour beyond the templates: reference quirks, copies, images, logs, errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Conversation,
  SeparatorStyle,
  defaultConversation,
  getConvTemplate,
  gradioStopString,
  stopString,
} from "../../src/llava/conversation.js";
import { pyStrip } from "../../src/io/python.js";
import { LlavaError } from "../../src/util/errors.js";

const S_HUMAN =
  "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.";
const S_USER =
  "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";

test("an empty string is an open turn, like None (Python truthiness)", () => {
  const conv = getConvTemplate("llava_v1");
  conv.appendMessage("USER", "Hi");
  conv.appendMessage("ASSISTANT", "");
  assert.equal(conv.getPrompt(), `${S_HUMAN} USER: Hi ASSISTANT:`);
});

test("only the first message's image marker moves; later image turns render their text as is", () => {
  const conv = getConvTemplate<string>("llava_v1");
  conv.appendMessage("USER", "Hello");
  conv.appendMessage("ASSISTANT", "Hi.");
  conv.appendMessage("USER", { text: "And this?\n<image>", images: ["a"] });
  conv.appendMessage("ASSISTANT", null);
  assert.equal(conv.getPrompt(), `${S_HUMAN} USER: Hello ASSISTANT: Hi.</s>USER: And this?\n<image> ASSISTANT:`);
});

test("the first message: every <image> removed, Python-stripped, one marker per image in front", () => {
  const conv = getConvTemplate<string>("llava_v1");
  conv.appendMessage("USER", { text: " <image> Describe\tthis <image>\n\n", images: ["a"] });
  conv.appendMessage("ASSISTANT", null);
  assert.equal(conv.getPrompt(), `${S_HUMAN} USER: <image>\nDescribe\tthis ASSISTANT:`);

  const two = getConvTemplate<string>("llava_v1");
  two.appendMessage("USER", { text: "Compare.", images: ["a", "b"] });
  two.appendMessage("ASSISTANT", null);
  assert.equal(two.getPrompt(), `${S_HUMAN} USER: <image>\n<image>\nCompare. ASSISTANT:`);
  assert.deepEqual(two.getImages(), ["a", "b"]);
});

test("the rendered prompt leaves the stored messages untouched", () => {
  const conv = getConvTemplate<string>("v1_mmtag");
  const first = { text: "What?\n<image>", images: ["a"] };
  conv.appendMessage("USER", first);
  conv.appendMessage("ASSISTANT", null);
  conv.getPrompt();
  assert.equal(conv.messages.length, 2);
  assert.deepEqual(conv.messages[0], ["USER", { text: "What?\n<image>", images: ["a"] }]);
});

test("mmtag: an image turn without text leaves an empty (open) user turn, as the reference does", () => {
  const conv = getConvTemplate<string>("v1_mmtag");
  conv.appendMessage("USER", { text: "<image>", images: ["a"] });
  conv.appendMessage("ASSISTANT", null);
  assert.match(conv.getPrompt(), /ASSISTANT: Received\.<\/s>USER:ASSISTANT:$/);
});

test("strip uses Python's whitespace set, not JavaScript's", () => {
  assert.equal(pyStrip("\x1c\x1fhi\x85 "), "hi");
  assert.equal(pyStrip("\ufeffhi\ufeff"), "\ufeffhi\ufeff");
  assert.equal(pyStrip("\u3000\u2000hi\u200a\u00a0"), "hi");
  const conv = getConvTemplate<string>("llava_v1");
  conv.appendMessage("USER", { text: "\ufeffQ<image>", images: ["a"] });
  conv.appendMessage("ASSISTANT", null);
  assert.equal(conv.getPrompt(), `${S_HUMAN} USER: <image>\n\ufeffQ ASSISTANT:`);
});

test("LLAMA_2 lstrip removes a leading character set, not a prefix", () => {
  // With sep "[<s>" a prefix strip would leave "[INST] ..."; Python's lstrip also eats the "[".
  const conv = new Conversation({
    system: "",
    roles: ["USER", "ASSISTANT"],
    sepStyle: SeparatorStyle.LLAMA_2,
    sep: "[<s>",
    sep2: "</s>",
  });
  conv.appendMessage("USER", "Hi");
  conv.appendMessage("ASSISTANT", null);
  assert.equal(conv.getPrompt(), "INST] Hi [/INST]");
});

test("LLAMA_2 with an empty system adds no <<SYS>> block (reference HEAD wrap_sys)", () => {
  const conv = getConvTemplate("llama_2");
  conv.system = "";
  conv.appendMessage("USER", "Hi");
  conv.appendMessage("ASSISTANT", "Hello!");
  assert.equal(conv.getPrompt(), "[INST] Hi [/INST] Hello! </s>");
});

test("LLAMA_2 refuses an empty first message or one not from the user", () => {
  const empty = getConvTemplate("llava_llama_2");
  empty.appendMessage("USER", null);
  assert.throws(() => empty.getPrompt(), LlavaError);
  const wrongRole = getConvTemplate("llava_llama_2");
  wrongRole.appendMessage("ASSISTANT", "Hi");
  assert.throws(() => wrongRole.getPrompt(), /first message must come from USER/);
  assert.equal(getConvTemplate("llava_llama_2").getPrompt(), "");
});

test("an image message without images is refused", () => {
  const conv = getConvTemplate<string>("llava_v1");
  conv.appendMessage("USER", { text: "Q", images: [] });
  assert.throws(() => conv.getPrompt(), LlavaError);
});

test("empty conversations render system + sep", () => {
  assert.equal(getConvTemplate("llava_v1").getPrompt(), `${S_HUMAN} `);
  assert.equal(getConvTemplate("llava_v0").getPrompt(), `${S_HUMAN}###`);
  assert.equal(getConvTemplate("plain").getPrompt(), "");
  assert.equal(getConvTemplate("chatml_direct").getPrompt(), "<|im_start|>system\nAnswer the questions.<|im_end|>");
});

test("copy is independent and, like the reference, does not carry skipNext", () => {
  const conv = getConvTemplate<string>("llava_v1");
  conv.appendMessage("USER", "Hi");
  conv.skipNext = true;
  const copy = conv.copy();
  copy.appendMessage("ASSISTANT", "Hello");
  copy.updateLastMessage("Hey");
  assert.equal(conv.messages.length, 1);
  assert.deepEqual(copy.messages, [["USER", "Hi"], ["ASSISTANT", "Hey"]]);
  assert.equal(copy.skipNext, false);
  assert.equal(copy.system, conv.system);
  assert.equal(copy.version, "v1");
});

test("getConvTemplate returns a fresh conversation every time", () => {
  const a = getConvTemplate("default");
  a.appendMessage("Human", "x");
  a.messages[0][1] = "changed";
  const b = getConvTemplate("default");
  assert.equal(b.messages.length, 2);
  assert.notEqual(b.messages[0][1], "changed");
});

test("unknown template names give a LlavaError that lists the valid names", () => {
  assert.throws(() => getConvTemplate("llava_v2"), (e: unknown) => {
    assert.ok(e instanceof LlavaError);
    assert.match(e.message, /llava_v2/);
    assert.match(e.message, /llava_v1/);
    assert.match(e.message, /chatml_direct/);
    return true;
  });
  assert.throws(() => getConvTemplate("constructor"), LlavaError);
  assert.throws(() => getConvTemplate("__proto__"), LlavaError);
});

test("defaultConversation is conv_vicuna_v1, not the registry's 'default' (conv_vicuna_v0)", () => {
  const conv = defaultConversation();
  assert.equal(conv.system, S_USER);
  assert.equal(conv.sepStyle, SeparatorStyle.TWO);
  assert.equal(conv.messages.length, 0);
  assert.equal(getConvTemplate("default").offset, 2);
});

test("getImages: user turns counted from offset, in order; assistant positions ignored", () => {
  const conv = getConvTemplate<string>("default");
  conv.appendMessage("Human", { text: "A <image>", images: ["first"] });
  conv.appendMessage("Assistant", { text: "odd position", images: ["ignored"] });
  conv.appendMessage("Human", { text: "B <image>", images: ["second", "third"] });
  conv.appendMessage("Assistant", null);
  assert.deepEqual(conv.getImages(), ["first", "second", "third"]);
  assert.deepEqual(getConvTemplate("llava_v1").getImages(), []);
});

test("toChat hides the offset messages and renders image turns like to_gradio_chatbot", () => {
  const conv = getConvTemplate<string>("default");
  conv.appendMessage("Human", { text: "What is this?\n<image>", images: ["cat.png"] });
  conv.appendMessage("Assistant", "A cat.");
  conv.appendMessage("Human", "Sure?");
  conv.appendMessage("Assistant", null);
  assert.deepEqual(conv.toChat((img) => `<img src="${img}" />`), [
    ['<img src="cat.png" />What is this?', "A cat."],
    ["Sure?", null],
  ]);
  assert.deepEqual(conv.toChat()[0], ["What is this?", "A cat."]);
});

test("dict() has the reference's keys, in order, with image messages reduced to text", () => {
  const conv = getConvTemplate<string>("llava_v1");
  conv.appendMessage("USER", { text: "What is this?\n<image>", images: ["a"] });
  conv.appendMessage("ASSISTANT", null);
  const d = conv.dict();
  assert.deepEqual(Object.keys(d), ["system", "roles", "messages", "offset", "sep", "sep2"]);
  assert.deepEqual(d, {
    system: S_HUMAN,
    roles: ["USER", "ASSISTANT"],
    messages: [["USER", "What is this?\n<image>"], ["ASSISTANT", null]],
    offset: 0,
    sep: " ",
    sep2: "</s>",
  });
  // sep2 None serialises as null, as json.dumps writes it.
  assert.match(JSON.stringify(getConvTemplate("llava_v0").dict()), /"sep":"###","sep2":null\}$/);
});

test("stop strings: cli convention (sep2 for TWO else sep) and gradio convention", () => {
  const cli = (n: string) => stopString(getConvTemplate(n));
  const web = (n: string) => gradioStopString(getConvTemplate(n));
  assert.equal(cli("llava_v1"), "</s>");
  assert.equal(cli("vicuna_v1"), "</s>");
  assert.equal(cli("llava_v0"), "###");
  assert.equal(cli("chatml_direct"), "<|im_end|>");
  assert.equal(cli("llava_llama_2"), "<s>");
  assert.equal(cli("mistral_instruct"), "");
  assert.equal(cli("plain"), "\n");
  assert.equal(web("llava_v1"), "</s>");
  assert.equal(web("llava_v0"), "###");
  assert.equal(web("mpt"), "<|im_end|>");
  assert.equal(web("llava_llama_2"), "</s>");
  assert.equal(web("mistral_instruct"), "</s>");
  assert.equal(web("plain"), null);
});
