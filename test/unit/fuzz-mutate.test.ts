// The fuzz runner's mutators: deterministic for a seed, and bounded. Regression: stacked JSON
// mutations repeated an array element up to 5000 times each, so two in a row built a
// 25-million-element array and a long policy run hung in JSON.stringify.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mutateBytes, mutateJson, Rng } from '../fuzz/mutate.js';

test('the PRNG and the mutators are deterministic for a seed', () => {
  const run = (seed: number): string[] => {
    const rng = new Rng(seed);
    const ctx = {
      rng,
      dictionary: [Buffer.from('set=1\n')],
      other: () => Buffer.from('xyz'),
      maxLength: 256,
    };
    let b: Buffer = Buffer.from('public_key=00\nendpoint=1.2.3.4:5\n');
    const out: string[] = [];
    for (let i = 0; i < 200; i++) {
      b = mutateBytes(b, ctx);
      assert.ok(b.length <= 256);
      out.push(b.toString('hex'));
    }
    return out;
  };
  assert.deepEqual(run(7), run(7));
  assert.notDeepEqual(run(7), run(8));
});

test('stacked JSON mutations stay bounded (repeats of a large element no longer multiply)', () => {
  const rng = new Rng(3);
  let doc: Buffer = Buffer.from(
    JSON.stringify({ rules: [{ id: 'r', peers: [{ labels: { app: 'x'.repeat(100) } }] }] }),
  );
  for (let i = 0; i < 2000; i++) {
    const m = mutateJson(doc, rng);
    if (m !== null) doc = m.length > 16_384 ? doc : m;
    assert.ok(m === null || m.length <= 16_384 + 64 * 1024 + 8192, `mutation ${i} made ${m?.length} bytes`);
  }
});

test('JSON nested past the stack is no mutation, not an exception', () => {
  const rng = new Rng(5);
  let deep: unknown = 1;
  for (let i = 0; i < 3000; i++) deep = [deep];
  // V8's JSON.parse goes deeper than JSON.stringify: build the text by hand.
  const text = `{"a":${'['.repeat(20_000)}1${']'.repeat(20_000)}}`;
  for (let i = 0; i < 50; i++) {
    const m = mutateJson(Buffer.from(text), rng);
    assert.ok(m === null || m.length > 0);
  }
  assert.ok(Array.isArray(deep));
});
