// Every registry template rendered for a single image turn and a multi-turn chat, against the
// strings the reference `get_prompt` produces (derived by hand from llava/conversation.py).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Conversation, convTemplates, getConvTemplate } from "../../src/llava/conversation.js";
import { LlavaError } from "../../src/util/errors.js";

const S_HUMAN =
  "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.";
const S_USER =
  "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";
const S_MMTAG =
  "A chat between a curious user and an artificial intelligence assistant. The assistant is able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language.The visual content will be provided with the following format: <Image>visual content</Image>.";
const S_LLAMA_2 =
  "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased and positive in nature.\n\nIf a question does not make any sense, or is not factually coherent, explain why instead of answering something not correct. If you don't know the answer to a question, please don't share false information.";
const S_LLAVA_LLAMA_2 =
  "You are a helpful language and vision assistant. You are able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language.";
const S_MPT =
  "<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. The assistant gives helpful and honest answers.";
const S_CHATML_DIRECT = "<|im_start|>system\nAnswer the questions.";

const V0_QUESTION = "What are the key differences between renewable and non-renewable energy sources?";
const V0_ANSWER =
  "Renewable energy sources are those that can be replenished naturally in a relatively short amount of time, such as solar, wind, hydro, geothermal, and biomass. Non-renewable energy sources, on the other hand, are finite and will eventually be depleted, such as coal, oil, and natural gas. Here are some key differences between renewable and non-renewable energy sources:\n" +
  "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable energy sources are finite and will eventually run out.\n" +
  "2. Environmental impact: Renewable energy sources have a much lower environmental impact than non-renewable sources, which can lead to air and water pollution, greenhouse gas emissions, and other negative effects.\n" +
  "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically have lower operational costs than non-renewable sources.\n" +
  "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote locations than non-renewable sources.\n" +
  "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different situations and needs, while non-renewable sources are more rigid and inflexible.\n" +
  "6. Sustainability: Renewable energy sources are more sustainable over the long term, while non-renewable sources are not, and their depletion can lead to economic and social instability.\n";
const V0_FEW_SHOT = `${S_HUMAN}###Human: ${V0_QUESTION}###Assistant: ${V0_ANSWER}###`;

// The web UI's way of attaching an image: "\n<image>" appended to the user's text.
const Q1 = { text: "What is this?\n<image>", images: ["img-1"] };
const A1 = "It is a cat.";
const Q2 = "What color is it?";

function singleTurn(name: string): string {
  const conv = getConvTemplate<string>(name);
  conv.appendMessage(conv.roles[0], Q1);
  conv.appendMessage(conv.roles[1], null);
  return conv.getPrompt();
}

function multiTurn(name: string): string {
  const conv = getConvTemplate<string>(name);
  conv.appendMessage(conv.roles[0], Q1);
  conv.appendMessage(conv.roles[1], A1);
  conv.appendMessage(conv.roles[0], Q2);
  conv.appendMessage(conv.roles[1], null);
  return conv.getPrompt();
}

interface Expected {
  single: string;
  /** `Error` class when the reference itself cannot render the multi-turn chat. */
  multi: string | typeof LlavaError;
}

const EXPECTED: Record<string, Expected> = {
  // conv_vicuna_v0: the few-shot pair is message 0, so the image turn is not the first message and
  // its text is rendered as typed (the `<image>` marker is not moved).
  default: {
    single: `${V0_FEW_SHOT}Human: What is this?\n<image>###Assistant:`,
    multi: `${V0_FEW_SHOT}Human: What is this?\n<image>###Assistant: It is a cat.###Human: What color is it?###Assistant:`,
  },
  v1: {
    single: `${S_USER} USER: <image>\nWhat is this? ASSISTANT:`,
    multi: `${S_USER} USER: <image>\nWhat is this? ASSISTANT: It is a cat.</s>USER: What color is it? ASSISTANT:`,
  },
  llama_2: {
    single: `[INST] <<SYS>>\n${S_LLAMA_2}\n<</SYS>>\n\n<image>\nWhat is this? [/INST]`,
    multi: `[INST] <<SYS>>\n${S_LLAMA_2}\n<</SYS>>\n\n<image>\nWhat is this? [/INST] It is a cat. </s><s>[INST] What color is it? [/INST]`,
  },
  mistral_instruct: {
    single: "[INST] <image>\nWhat is this? [/INST]",
    multi: "[INST] <image>\nWhat is this? [/INST] It is a cat. </s>[INST] What color is it? [/INST]",
  },
  chatml_direct: {
    single: `${S_CHATML_DIRECT}<|im_end|><|im_start|>user\n<image>\nWhat is this?<|im_end|><|im_start|>assistant\n`,
    multi:
      `${S_CHATML_DIRECT}<|im_end|><|im_start|>user\n<image>\nWhat is this?<|im_end|><|im_start|>assistant\n` +
      "It is a cat.<|im_end|><|im_start|>user\nWhat color is it?<|im_end|><|im_start|>assistant\n",
  },
  // conv_llava_plain has sep2 None: the reference fails on `message + None` for an answer.
  plain: { single: "<image>\nWhat is this?\n", multi: LlavaError },
  llava_v0: {
    single: `${S_HUMAN}###Human: <image>\nWhat is this?###Assistant:`,
    multi: `${S_HUMAN}###Human: <image>\nWhat is this?###Assistant: It is a cat.###Human: What color is it?###Assistant:`,
  },
  v0_mmtag: {
    single: `${S_MMTAG}###Human: <Image><image></Image>###Assistant: Received.###Human: What is this?###Assistant:`,
    multi: `${S_MMTAG}###Human: <Image><image></Image>###Assistant: Received.###Human: What is this?###Assistant: It is a cat.###Human: What color is it?###Assistant:`,
  },
  llava_v1: {
    single: `${S_HUMAN} USER: <image>\nWhat is this? ASSISTANT:`,
    multi: `${S_HUMAN} USER: <image>\nWhat is this? ASSISTANT: It is a cat.</s>USER: What color is it? ASSISTANT:`,
  },
  v1_mmtag: {
    single: `${S_MMTAG} USER: <Image><image></Image> ASSISTANT: Received.</s>USER: What is this? ASSISTANT:`,
    multi: `${S_MMTAG} USER: <Image><image></Image> ASSISTANT: Received.</s>USER: What is this? ASSISTANT: It is a cat.</s>USER: What color is it? ASSISTANT:`,
  },
  llava_llama_2: {
    single: `[INST] <<SYS>>\n${S_LLAVA_LLAMA_2}\n<</SYS>>\n\n<image>\nWhat is this? [/INST]`,
    multi: `[INST] <<SYS>>\n${S_LLAVA_LLAMA_2}\n<</SYS>>\n\n<image>\nWhat is this? [/INST] It is a cat. </s><s>[INST] What color is it? [/INST]`,
  },
  mpt: {
    single: `${S_MPT}<|im_end|><|im_start|>user\n<image>\nWhat is this?<|im_end|><|im_start|>assistant\n`,
    multi:
      `${S_MPT}<|im_end|><|im_start|>user\n<image>\nWhat is this?<|im_end|><|im_start|>assistant\n` +
      "It is a cat.<|im_end|><|im_start|>user\nWhat color is it?<|im_end|><|im_start|>assistant\n",
  },
};

// Registry aliases render exactly like the key they alias.
const ALIASES: Record<string, string> = {
  v0: "default",
  vicuna_v1: "v1",
  mistral_direct: "chatml_direct",
  v0_plain: "plain",
};

const REFERENCE_KEYS = [
  "default", "v0", "v1", "vicuna_v1", "llama_2", "mistral_instruct", "chatml_direct", "mistral_direct",
  "plain", "v0_plain", "llava_v0", "v0_mmtag", "llava_v1", "v1_mmtag", "llava_llama_2", "mpt",
];

test("the registry has exactly the reference's keys", () => {
  assert.deepEqual(Object.keys(convTemplates).sort(), [...REFERENCE_KEYS].sort());
});

for (const name of REFERENCE_KEYS) {
  const expected = EXPECTED[ALIASES[name] ?? name];

  test(`${name}: single turn with an image`, () => {
    assert.equal(singleTurn(name), expected.single);
  });

  test(`${name}: multi-turn conversation`, () => {
    if (typeof expected.multi === "string") assert.equal(multiTurn(name), expected.multi);
    else assert.throws(() => multiTurn(name), expected.multi);
  });
}

test("spec examples: the cli's string-only turns render the same as image turns", () => {
  // cli.py / run_llava.py put "<image>\n" into the text themselves and append plain strings.
  for (const name of ["llava_v1", "llava_v0", "llava_llama_2", "mistral_instruct", "chatml_direct", "mpt", "v1"]) {
    const conv = getConvTemplate(name);
    conv.appendMessage(conv.roles[0], "<image>\nWhat is this?");
    conv.appendMessage(conv.roles[1], null);
    assert.equal(conv.getPrompt(), EXPECTED[name].single, name);
  }
});

test("plain renders a pretraining-style image turn without a system prompt", () => {
  const conv = getConvTemplate<string>("plain");
  conv.appendMessage(conv.roles[0], { text: "<image>", images: ["x"] });
  assert.equal(conv.getPrompt(), "<image>\n\n");
});

test("template fields match the reference objects", () => {
  const pick = (name: string) => {
    const c: Conversation = getConvTemplate(name);
    return [c.roles, c.sepStyle, c.sep, c.sep2, c.version, c.offset, c.messages.length];
  };
  assert.deepEqual(pick("default"), [["Human", "Assistant"], "SINGLE", "###", null, "Unknown", 2, 2]);
  assert.deepEqual(pick("v1"), [["USER", "ASSISTANT"], "TWO", " ", "</s>", "v1", 0, 0]);
  assert.deepEqual(pick("llava_v1"), [["USER", "ASSISTANT"], "TWO", " ", "</s>", "v1", 0, 0]);
  assert.deepEqual(pick("v1_mmtag"), [["USER", "ASSISTANT"], "TWO", " ", "</s>", "v1_mmtag", 0, 0]);
  assert.deepEqual(pick("llava_v0"), [["Human", "Assistant"], "SINGLE", "###", null, "Unknown", 0, 0]);
  assert.deepEqual(pick("v0_mmtag"), [["Human", "Assistant"], "SINGLE", "###", null, "v0_mmtag", 0, 0]);
  assert.deepEqual(pick("llama_2"), [["USER", "ASSISTANT"], "LLAMA_2", "<s>", "</s>", "llama_v2", 0, 0]);
  assert.deepEqual(pick("llava_llama_2"), [["USER", "ASSISTANT"], "LLAMA_2", "<s>", "</s>", "llama_v2", 0, 0]);
  assert.deepEqual(pick("mistral_instruct"), [["USER", "ASSISTANT"], "LLAMA_2", "", "</s>", "llama_v2", 0, 0]);
  const chatmlRoles = ["<|im_start|>user\n", "<|im_start|>assistant\n"];
  assert.deepEqual(pick("chatml_direct"), [chatmlRoles, "MPT", "<|im_end|>", null, "mpt", 0, 0]);
  assert.deepEqual(pick("mpt"), [chatmlRoles, "MPT", "<|im_end|>", null, "mpt", 0, 0]);
  assert.deepEqual(pick("plain"), [["", ""], "PLAIN", "\n", null, "Unknown", 0, 0]);
  assert.equal(getConvTemplate("llava_llama_2").system, S_LLAVA_LLAMA_2);
  assert.equal(getConvTemplate("mistral_instruct").system, "");
});
