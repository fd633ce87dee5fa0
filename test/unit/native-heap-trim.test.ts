// malloc_trim through the addon (src/native/heap-trim.ts): a trim answers whether memory went
// back to the system and never adds to RSS; the periodic trim never keeps a process alive;
// mallocStats counts C-heap memory handed out and given back.
// That it keeps a daemon's RSS flat is measured by the soak (test/soak).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { createDeflateRaw, deflateRawSync } from 'node:zlib';
import { mallocStats, startHeapTrim, trimHeap } from '../../src/native/heap-trim.js';

function rssKb(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return Number(m?.[1] ?? Number.NaN);
}

test('trimHeap after C-heap churn: a boolean answer, RSS not higher after than before', (t) => {
  // zlib's state lives in the C heap; many streams made and freed leave free arena memory.
  // V8's helper threads (compiler, concurrent GC) may touch pages between the two readings:
  // a trim passes when one of three attempts shows no growth beyond 256 kB.
  const seen: string[] = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    for (let i = 0; i < 300; i++) deflateRawSync(Buffer.alloc(16 * 1024, i), { level: 9, memLevel: 9 });
    const before = rssKb();
    const released = trimHeap();
    const after = rssKb();
    t.diagnostic(`RSS ${before} -> ${after} kB, memory released: ${released}`);
    assert.equal(typeof released, 'boolean');
    seen.push(`${before} -> ${after} kB`);
    if (after <= before + 256) return;
  }
  assert.fail(`RSS grew across every trim: ${seen.join(', ')}`);
});

test('startHeapTrim: an unref’d interval, stopped by the function it returns', () => {
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = timers();
  const stop = startHeapTrim(10_000);
  assert.equal(timers(), before, 'an unref’d timer keeps nothing alive');
  stop();
  assert.equal(timers(), before);
});

test('mallocStats: memory handed out by the C heap is counted while held and not after', async () => {
  // A zlib stream's state (at least 64 KiB) is malloc'd on its first write and
  // freed by close().
  {
    const before = mallocStats();
    assert.ok(before.inUse > 0 && before.free >= 0 && before.mapped >= 0);
    const streams = Array.from({ length: 20 }, () => createDeflateRaw({ level: 9, memLevel: 9 }));
    for (const s of streams) s.write(Buffer.alloc(16));
    await new Promise<void>((resolve) => setTimeout(resolve, 50));
    const held = mallocStats().inUse;
    for (const s of streams) s.close();
    await new Promise<void>((resolve) => setTimeout(resolve, 50));
    const after = mallocStats().inUse;
    assert.ok(held - before.inUse > 20 * 64 * 1024, `20 streams counted: ${before.inUse} -> ${held}`);
    assert.ok(held - after > 20 * 64 * 1024, `freed streams no longer counted: ${held} -> ${after}`);
  }
});
