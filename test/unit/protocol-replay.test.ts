import assert from 'node:assert/strict';
import { test } from 'node:test';
import { REJECT_AFTER_MESSAGES } from '../../src/protocol/constants.js';
import { REPLAY_WINDOW_SIZE, ReplayFilter } from '../../src/protocol/replay.js';

const W = REPLAY_WINDOW_SIZE;
const T_LIM = W + 1;
const LIMIT = REJECT_AFTER_MESSAGES;

test('the window covers at least what wireguard-go covers', () => {
  assert.ok(W >= 8128);
});

// The table of the kernel's and wireguard-go's replay tests, with this window and limit.
const TABLE: [string, number, boolean][] = [
  ['first', 0, true],
  ['in order', 1, true],
  ['duplicate', 1, false],
  ['jump ahead', 9, true],
  ['reordered', 8, true],
  ['reordered', 7, true],
  ['duplicate of reordered', 7, false],
  ['window edge: jump to T_LIM', T_LIM, true],
  ['one behind the top', T_LIM - 1, true],
  ['duplicate', T_LIM - 1, false],
  ['two behind the top', T_LIM - 2, true],
  ['oldest still inside the window', 2, true],
  ['duplicate at the window edge', 2, false],
  ['counter jump', T_LIM + 16, true],
  ['now too old', 3, false],
  ['duplicate of the top', T_LIM + 16, false],
  ['big counter jump', T_LIM * 4, true],
  ['exactly a window behind', T_LIM * 4 - (T_LIM - 1), true],
  ['far too old', 10, false],
  ['one past the window', T_LIM * 4 - T_LIM, false],
  ['two past the window', T_LIM * 4 - (T_LIM + 1), false],
  ['just inside', T_LIM * 4 - (T_LIM - 2), true],
  ['just outside', T_LIM * 4 + 1 - T_LIM, false],
  ['zero, long gone', 0, false],
  ['beyond limit', LIMIT, false],
  ['last valid counter', LIMIT - 1, true],
  ['beyond limit again', LIMIT, false],
  ['duplicate of the last valid', LIMIT - 1, false],
  ['below the last valid', LIMIT - 2, true],
  ['beyond limit + 1', LIMIT + 1, false],
  ['beyond limit + 2', LIMIT + 2, false],
  ['duplicate', LIMIT - 2, false],
  ['reordered near the limit', LIMIT - 3, true],
  ['zero after all that', 0, false],
];

test('replay window table: in order, reordered, duplicate, too old, window edge, counter jump, beyond limit', () => {
  const f = new ReplayFilter();
  TABLE.forEach(([name, counter, expected], i) => {
    assert.equal(f.validateCounter(counter, LIMIT), expected, `#${i + 1} ${name}: ${counter}`);
  });
});

test('non-finite and negative counters are refused', () => {
  const f = new ReplayFilter();
  for (const c of [Number.POSITIVE_INFINITY, Number.NaN, -1])
    assert.equal(f.validateCounter(c, LIMIT), false);
  assert.equal(f.validateCounter(0, LIMIT), true);
});

test('bulk: a whole window in order then the oldest', () => {
  const f = new ReplayFilter();
  for (let i = 1; i <= W; i++) assert.equal(f.validateCounter(i, LIMIT), true);
  assert.equal(f.validateCounter(0, LIMIT), true);
  assert.equal(f.validateCounter(0, LIMIT), false);
});

test('bulk: one past a window in order, then one too old', () => {
  const f = new ReplayFilter();
  for (let i = 2; i <= W + 1; i++) assert.equal(f.validateCounter(i, LIMIT), true);
  assert.equal(f.validateCounter(1, LIMIT), true);
  assert.equal(f.validateCounter(0, LIMIT), false);
});

test('bulk: a whole window in reverse order', () => {
  const f = new ReplayFilter();
  for (let i = W + 1; i > 0; i--) assert.equal(f.validateCounter(i, LIMIT), true);
  const g = new ReplayFilter();
  for (let i = W + 2; i > 1; i--) assert.equal(g.validateCounter(i, LIMIT), true);
  assert.equal(g.validateCounter(0, LIMIT), false);
});

test('bulk: reverse then the next and the oldest', () => {
  const f = new ReplayFilter();
  for (let i = W; i > 0; i--) assert.equal(f.validateCounter(i, LIMIT), true);
  assert.equal(f.validateCounter(W + 1, LIMIT), true);
  assert.equal(f.validateCounter(0, LIMIT), false);
  const g = new ReplayFilter();
  for (let i = W; i > 0; i--) assert.equal(g.validateCounter(i, LIMIT), true);
  assert.equal(g.validateCounter(0, LIMIT), true);
  assert.equal(g.validateCounter(W + 1, LIMIT), true);
});

test('random reordering within the window accepts each counter exactly once', () => {
  const f = new ReplayFilter();
  let seed = 12345;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed / 2 ** 32;
  };
  const seen = new Set<number>();
  let top = 0;
  for (let i = 0; i < 50_000; i++) {
    const c = Math.max(0, top + Math.floor(rnd() * 200) - 150);
    const expected = !seen.has(c) && top - c <= W;
    assert.equal(f.validateCounter(c, LIMIT), expected, `counter ${c} top ${top}`);
    if (expected) {
      seen.add(c);
      if (c > top) top = c;
    }
  }
});

test('reset forgets everything', () => {
  const f = new ReplayFilter();
  f.validateCounter(5, LIMIT);
  f.reset();
  assert.equal(f.validateCounter(5, LIMIT), true);
});
