// Table memory in transparent huge pages (src/native/huge.ts, native/slab.c allocHuge): the
// region is zero-filled, usable, 2 MiB-aligned in size and advised for huge pages (the "hg"
// flag of its mapping in /proc/self/smaps, which the kernel sets for MADV_HUGEPAGE whatever
// its THP mode); small tables are ordinary ArrayBuffers; bad sizes are refused.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { loadNative } from '../../src/native/binding.js';
import { allocTable, HUGE_TABLE_MIN } from '../../src/native/huge.js';

/** Mappings of /proc/self/smaps: size in kB and VmFlags. */
function mappings(): { range: string; kb: number; flags: string[] }[] {
  const out: { range: string; kb: number; flags: string[] }[] = [];
  let cur: { range: string; kb: number; flags: string[] } | undefined;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^([0-9a-f]+-[0-9a-f]+) /.exec(line);
    if (head !== null) {
      cur = { range: head[1], kb: 0, flags: [] };
      out.push(cur);
    } else if (cur !== undefined && line.startsWith('Size:')) cur.kb = Number(line.split(/\s+/)[1]);
    else if (cur !== undefined && line.startsWith('VmFlags:')) cur.flags = line.slice(8).trim().split(/\s+/);
  }
  return out;
}

test('allocHuge: zero-filled, writable, a 2 MiB-aligned mapping advised for huge pages', () => {
  const before = new Set(mappings().map((m) => m.range));
  const bytes = 3 * 1024 * 1024 + 5;
  const ab = allocTable(bytes);
  assert.equal(ab.byteLength, bytes);
  const u8 = new Uint8Array(ab);
  for (let i = 0; i < bytes; i += 4093) assert.equal(u8[i], 0);
  assert.equal(u8[bytes - 1], 0);
  u8[0] = 1;
  u8[bytes - 1] = 2;
  const u32 = new Uint32Array(ab, 0, Math.floor(bytes / 4));
  u32[1000] = 0xdeadbeef;
  assert.equal(u32[1000], 0xdeadbeef);
  assert.equal(u8[bytes - 1], 2);
  const fresh = mappings().filter((m) => !before.has(m.range) && m.flags.includes('hg'));
  assert.ok(
    fresh.some((m) => {
      const [lo, hi] = m.range.split('-').map((x) => BigInt(`0x${x}`));
      return m.kb === 4096 && lo % (2n << 20n) === 0n && hi - lo === 4n << 20n;
    }),
    `no new 4 MiB mapping at a 2 MiB boundary with the hg flag: ${JSON.stringify(fresh)}`,
  );
});

test('allocTable: below one huge page, an ordinary ArrayBuffer', () => {
  const before = mappings().filter((m) => m.flags.includes('hg')).length;
  const ab = allocTable(HUGE_TABLE_MIN - 1);
  assert.equal(ab.byteLength, HUGE_TABLE_MIN - 1);
  assert.equal(mappings().filter((m) => m.flags.includes('hg')).length, before);
});

test('allocHuge: sizes out of range are refused, nothing mapped', () => {
  const native = loadNative();
  for (const bad of [0, -1, 2 ** 31, 1.5, Number.NaN])
    assert.throws(
      () => native.allocHuge(bad),
      (e: Error) => e instanceof RangeError || e instanceof TypeError,
    );
  assert.throws(() => native.allocHuge('1' as never), TypeError);
});
