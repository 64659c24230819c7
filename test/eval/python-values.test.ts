/** Python's rules for JSON values, checked against what CPython 3.11 gives for the same values. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { pyFloat } from "../../src/io/python.js";
import { compareCodePoints, pyEquals, pyInt, pyKey, pyStrip } from "../../src/io/python.js";

test("int(x): whitespace, underscores, signs and floats as Python takes them; None where it raises", () => {
  const inputs = [" 12 ", "1_000", "+5", "1__0", "0x10", pyFloat(12.7), "12.0", true, null, "-0", "99999999999999999999"];
  assert.deepEqual(inputs.map(pyInt), [12, 1000, 5, null, null, 12, null, 1, null, 0, 99999999999999999999n]);
});

test("dict keys and ==: 1, 1.0 and True are one key; strings and lists compare by value; NaN equals nothing", () => {
  assert.equal(new Set([pyKey(1), pyKey(pyFloat(1)), pyKey(true)]).size, 1);
  assert.notEqual(pyKey("1"), pyKey(1));
  assert.equal(pyKey(pyFloat(1e20)), pyKey(100000000000000000000n));
  assert.throws(() => pyKey([1]), /unhashable type: 'list'/);
  assert.ok(pyEquals([1, "a"], [pyFloat(1), "a"]));
  assert.ok(!pyEquals(pyFloat(NaN), pyFloat(NaN)));
});

test("strip() and sorted() of strings as Python does them", () => {
  assert.equal(pyStrip("\x1c a \x85"), "a");
  assert.equal(pyStrip("\ufeffa"), "\ufeffa");
  assert.equal(pyStrip("\u3000b\t"), "b");
  assert.deepEqual(["b", "é", "a", "😀", "\uffff"].sort(compareCodePoints), ["a", "b", "é", "\uffff", "😀"]);
});
