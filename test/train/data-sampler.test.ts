/** The reference sampler's lengths and its megabatch grouping: invariants and determinism. */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { TrainingRecord } from "../../src/train/dataset.js";
import { sampleLengths, trainingOrder } from "../../src/train/sampler.js";
import { Rng } from "../../src/util/random.js";

const rec = (index: number, words: string[], image: boolean): TrainingRecord => ({
  index, id: String(index), images: image ? ["x.png"] : [],
  conversations: [{ from: "human", value: words[0] }, { from: "gpt", value: words[1] }],
});

test("lengths: whitespace words of all turns, +128 with an image; modality lengths negative for text-only", () => {
  const records = [rec(0, ["<image>\nWhat is  this?", " A\tcat.\n"], true), rec(1, ["Tell me a joke.", "No."], false)];
  assert.deepEqual(sampleLengths(records), { lengths: [4 + 2 + 128, 4 + 1], modalityLengths: [6, -5] });
});

/** Mixed lengths: image samples at even indices, text-only at odd, lengths 1..40. */
function mixed(n: number): number[] {
  const rng = new Rng(7);
  return Array.from({ length: n }, (_, i) => (1 + Math.floor(rng.next() * 40)) * (i % 3 === 0 ? -1 : 1));
}

test("group_by_modality_length: every index once, megabatches of one modality sorted longest first, the leftovers last", () => {
  const lengths = mixed(203);
  const [batchSize, worldSize] = [4, 2];
  const order = trainingOrder(lengths, { seed: 42, epoch: 0, batchSize, worldSize, groupByModalityLength: true });
  assert.deepEqual([...order].sort((a, b) => a - b), lengths.map((_, i) => i), "a permutation");
  const mega = batchSize * worldSize;
  const mm = lengths.filter((l) => l > 0).length;
  const lang = lengths.length - mm;
  const additionalSize = (mm % mega || mega) + (lang % mega || mega);
  const body = order.slice(0, order.length - additionalSize);
  assert.equal(body.length % mega, 0);
  for (let m = 0; m < body.length; m += mega) {
    const megabatch = body.slice(m, m + mega);
    const sign = Math.sign(lengths[megabatch[0]]);
    assert.ok(megabatch.every((i) => Math.sign(lengths[i]) === sign), "one modality per megabatch");
    // split over worldSize devices of batchSize each, every device's share longest first
    for (let d = 0; d < worldSize; d++) {
      const share = megabatch.slice(d * batchSize, (d + 1) * batchSize).map((i) => Math.abs(lengths[i]));
      assert.deepEqual(share, [...share].sort((a, b) => b - a));
    }
  }
  const additional = order.slice(order.length - additionalSize);
  assert.deepEqual(additional, [...additional].sort((a, b) => a - b), "the additional batch is sorted by index");
  assert.ok(additional.some((i) => lengths[i] > 0) && additional.some((i) => lengths[i] < 0));
});

test("the megabatches are shuffled across modalities, and with one device each megabatch is longest first", () => {
  const lengths = mixed(400);
  const order = trainingOrder(lengths, { seed: 1, epoch: 0, batchSize: 8, worldSize: 1, groupByModalityLength: true });
  const signs = [];
  for (let m = 0; m + 8 <= order.length - 16; m += 8) {
    const abs = order.slice(m, m + 8).map((i) => Math.abs(lengths[i]));
    assert.deepEqual(abs, [...abs].sort((a, b) => b - a));
    signs.push(Math.sign(lengths[order[m]]));
  }
  assert.ok(signs.slice(0, 10).includes(1) && signs.slice(0, 10).includes(-1), "modalities interleave");
});

test("one modality: plain length grouping", () => {
  const lengths = mixed(50).map(Math.abs);
  const order = trainingOrder(lengths, { seed: 3, epoch: 2, batchSize: 5, worldSize: 1, groupByModalityLength: true });
  for (let m = 0; m < 50; m += 5) {
    const abs = order.slice(m, m + 5).map((i) => lengths[i]);
    assert.deepEqual(abs, [...abs].sort((a, b) => b - a));
  }
  assert.deepEqual([...order].sort((a, b) => a - b), lengths.map((_, i) => i));
});

test("the order is fixed by (seed, epoch) and changes with either", () => {
  const lengths = mixed(120);
  for (const groupByModalityLength of [true, false]) {
    const at = (seed: number, epoch: number) => trainingOrder(lengths, { seed, epoch, batchSize: 4, worldSize: 2, groupByModalityLength });
    assert.deepEqual(at(5, 1), at(5, 1));
    assert.notDeepEqual(at(5, 1), at(5, 2));
    assert.notDeepEqual(at(5, 1), at(6, 1));
    assert.deepEqual([...at(5, 1)].sort((a, b) => a - b), lengths.map((_, i) => i));
  }
});

test("a sample without words is refused by the grouped sampler, as the reference asserts", () => {
  assert.throws(() => trainingOrder([3, 0, -2], { seed: 0, epoch: 0, batchSize: 1, worldSize: 1, groupByModalityLength: true }), /sample 1 has no words/);
});
