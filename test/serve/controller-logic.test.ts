/** The controller's state without HTTP: registration, both dispatch methods, heart beats and expiry. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Controller, type ControllerOptions, lotteryPick } from "../../src/serve/controller.js";
import type { WorkerStatus } from "../../src/serve/protocol.js";

const status = (model_names: string[], queue_length = 0, speed = 1): WorkerStatus => ({ model_names, speed, queue_length });

/** A controller over a table of worker statuses (missing: unreachable) and a hand-moved clock. */
function makeController(statuses: Record<string, WorkerStatus | undefined>, opts: Partial<ControllerOptions> = {}) {
  const clock = { t: 1000 };
  const asked: string[] = [];
  const controller = new Controller({
    fetchStatus: async (name) => {
      asked.push(name);
      return statuses[name];
    },
    now: () => clock.t,
    ...opts,
  });
  return { controller, clock, asked };
}

test("registration without a status asks the worker; a worker that does not answer is not registered", async () => {
  const { controller, asked } = makeController({ "http://a": status(["m"]) });
  assert.equal(await controller.registerWorker("http://a", true), true);
  assert.equal(await controller.registerWorker("http://dead", true), false);
  assert.deepEqual(asked, ["http://a", "http://dead"]);
  assert.equal(await controller.registerWorker("http://b", false, status(["m", "n"])), true);
  assert.deepEqual(asked, ["http://a", "http://dead"], "a given status is taken as it is");
  assert.deepEqual([...controller.workers.keys()], ["http://a", "http://b"]);
  assert.deepEqual(controller.listModels(), ["m", "n"]);
});

test("shortest_queue picks the smallest queue_length / speed, the first on ties, and counts the request", async () => {
  const { controller } = makeController({});
  await controller.registerWorker("http://a", true, status(["m"], 4, 2)); // 2
  await controller.registerWorker("http://b", true, status(["m"], 3, 1)); // 3
  await controller.registerWorker("http://c", true, status(["other"], 0, 1));
  await controller.registerWorker("http://idle-sub-controller", true, status(["m"], 0, 0)); // speed 0: last
  const picks = Array.from({ length: 5 }, () => controller.getWorkerAddress("m"));
  // a: 2 -> 2.5 -> 3 -> 3.5; b: 3 -> 4
  assert.deepEqual(picks, ["http://a", "http://a", "http://a", "http://b", "http://a"]);
  assert.equal(controller.workers.get("http://a")!.queueLength, 8);
  assert.equal(controller.getWorkerAddress("missing"), "");
});

test("lottery draws as numpy's random.choice over speeds normalised in float32", () => {
  const draws = (u: number) => lotteryPick([1, 3], () => u);
  assert.deepEqual([0, 0.2499, 0.25, 0.9999].map(draws), [0, 0, 1, 1]);
  assert.equal(lotteryPick([2, 0, 2], () => 0.5), 2, "a worker of speed 0 is never drawn");
  assert.equal(lotteryPick([], () => 0.5), -1);
  assert.equal(lotteryPick([0.00004, 0.00005], () => 0.5), -1, "speeds summing below 1e-4 pick nobody");
  // float32(1e-4) is just below 1e-4, so numpy's rule picks nobody there either
  assert.equal(lotteryPick([0.0001], () => 0.99), -1);
  assert.equal(lotteryPick([0.00011], () => 0.99), 0);
});

test("lottery dispatch uses the injected random source and leaves queue lengths alone", async () => {
  const us = [0.1, 0.3, 0.9];
  const { controller } = makeController({}, { dispatchMethod: "lottery", random: () => us.shift()! });
  await controller.registerWorker("http://a", true, status(["m"], 0, 1));
  await controller.registerWorker("http://b", true, status(["m"], 0, 3));
  assert.deepEqual([1, 2, 3].map(() => controller.getWorkerAddress("m")), ["http://a", "http://b", "http://b"]);
  assert.equal(controller.workers.get("http://b")!.queueLength, 0);
  assert.equal(controller.getWorkerAddress("missing"), "");
});

test("heart beats update the queue and the time; a silent worker that checks its heart beat expires", async () => {
  const { controller, clock } = makeController({}, { expirationS: 30 });
  await controller.registerWorker("http://a", true, status(["m"]));
  await controller.registerWorker("http://b", true, status(["m"]));
  await controller.registerWorker("http://unchecked", false, status(["m"]));
  clock.t += 20;
  assert.equal(controller.receiveHeartBeat("http://b", 7), true);
  assert.equal(controller.receiveHeartBeat("http://unknown", 1), false);
  assert.equal(controller.workers.get("http://b")!.queueLength, 7);
  clock.t += 10;
  assert.deepEqual(controller.removeExpiredWorkers(), [], "exactly 30 s silent is not yet expired");
  clock.t += 0.5;
  assert.deepEqual(controller.removeExpiredWorkers(), ["http://a"]);
  clock.t += 1000;
  assert.deepEqual(controller.removeExpiredWorkers(), ["http://b"]);
  assert.deepEqual([...controller.workers.keys()], ["http://unchecked"]);
});

test("expiry checks run on their interval until stopped", async () => {
  const controller = new Controller({ fetchStatus: async () => undefined, expirationS: 0.05 });
  await controller.registerWorker("http://a", true, status(["m"]));
  const stop = controller.startExpiryChecks(20);
  try {
    for (let i = 0; i < 100 && controller.workers.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(controller.workers.size, 0);
  } finally {
    stop();
  }
});

test("refreshing re-reads every status in place and drops the workers that do not answer", async () => {
  const statuses: Record<string, WorkerStatus | undefined> = { "http://a": status(["m"]), "http://b": status(["n"]) };
  const { controller } = makeController(statuses);
  await controller.registerWorker("http://a", false);
  await controller.registerWorker("http://b", true);
  statuses["http://a"] = status(["m2"], 5);
  statuses["http://b"] = undefined;
  await controller.refreshAllWorkers();
  assert.deepEqual([...controller.workers.keys()], ["http://a"]);
  assert.deepEqual(controller.workers.get("http://a"), { modelNames: ["m2"], speed: 1, queueLength: 5, checkHeartBeat: false, lastHeartBeat: 1000 });
});

test("the aggregate status sums the speeds and queues of the workers that answer", async () => {
  const statuses: Record<string, WorkerStatus | undefined> = { "http://a": status(["m"], 2, 1), "http://b": status(["m", "n"], 3, 2) };
  const { controller } = makeController(statuses);
  await controller.registerWorker("http://a", true);
  await controller.registerWorker("http://b", true);
  await controller.registerWorker("http://c", true, status(["x"]));
  assert.deepEqual(await controller.aggregateStatus(), { model_names: ["m", "n"], speed: 3, queue_length: 5 });
});
