// malloc_trim through the addon (src/native/heap-trim.ts): a trim answers whether memory went
// back to the system and never adds to RSS; the periodic trim never keeps a process alive.
// That it keeps a daemon's RSS flat is measured by the soak (test/soak).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { deflateRawSync } from 'node:zlib';
import { startHeapTrim, trimHeap } from '../../src/native/heap-trim.js';

function rssKb(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return Number(m?.[1] ?? Number.NaN);
}

test('trimHeap after C-heap churn: a boolean answer, RSS not higher after than before', (t) => {
  // zlib's state lives in the C heap; many streams made and freed leave free arena memory.
  for (let i = 0; i < 300; i++) deflateRawSync(Buffer.alloc(16 * 1024, i), { level: 9, memLevel: 9 });
  const before = rssKb();
  const released = trimHeap();
  const after = rssKb();
  t.diagnostic(`RSS ${before} -> ${after} kB, memory released: ${released}`);
  assert.equal(typeof released, 'boolean');
  assert.ok(after <= before + 256, `RSS grew across a trim: ${before} -> ${after} kB`);
});

test('startHeapTrim: an unref’d interval, stopped by the function it returns', () => {
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = timers();
  const stop = startHeapTrim(10_000);
  assert.equal(timers(), before, 'an unref’d timer keeps nothing alive');
  stop();
  assert.equal(timers(), before);
});
