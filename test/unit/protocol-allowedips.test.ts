import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AllowedIps, type IpPrefix } from '../../src/protocol/allowedips.js';
import { prefix, v4, v6 } from '../helpers/protocol-harness.js';

test('longest prefix wins, IPv4', () => {
  const t = new AllowedIps<string>();
  t.insert(prefix('0.0.0.0/0'), 'default');
  t.insert(prefix('10.0.0.0/8'), 'a');
  t.insert(prefix('10.1.0.0/16'), 'b');
  t.insert(prefix('10.1.2.3/32'), 'c');
  t.insert(prefix('192.168.0.0/24'), 'd');
  const cases: [string, string][] = [
    ['10.1.2.3', 'c'],
    ['10.1.2.4', 'b'],
    ['10.2.0.1', 'a'],
    ['11.0.0.1', 'default'],
    ['192.168.0.255', 'd'],
    ['192.168.1.0', 'default'],
  ];
  for (const [addr, peer] of cases) assert.equal(t.lookup(v4(addr)), peer, addr);
  t.remove(prefix('10.1.0.0/16'), 'b');
  assert.equal(t.lookup(v4('10.1.2.4')), 'a');
  assert.equal(t.lookup(v4('10.1.2.3')), 'c');
  t.remove(prefix('0.0.0.0/0'), 'someone-else');
  assert.equal(t.lookup(v4('11.0.0.1')), 'default', 'removal needs the owning peer');
});

test('longest prefix wins, IPv6, and families do not mix', () => {
  const t = new AllowedIps<string>();
  t.insert(prefix('::/0'), 'default');
  t.insert(prefix('fd00::/8'), 'a');
  t.insert(prefix('fd00:1::/32'), 'b');
  t.insert(prefix('fd00:1:0:0:0:0:0:1/128'), 'c');
  t.insert(prefix('10.0.0.0/8'), 'v4');
  assert.equal(t.lookup(v6('fd00:1::1')), 'c');
  assert.equal(t.lookup(v6('fd00:1::2')), 'b');
  assert.equal(t.lookup(v6('fd12::1')), 'a');
  assert.equal(t.lookup(v6('2001:db8::1')), 'default');
  assert.equal(t.lookup(v4('10.0.0.1')), 'v4');
  assert.equal(t.lookup(v4('11.0.0.1')), null);
  // IPv6 addresses whose first word looks like 10/8 do not match the IPv4 entry.
  assert.equal(t.lookup(v6('a00::1')), 'default');
});

test('insert replaces the owner of an exact prefix; host bits are cleared', () => {
  const t = new AllowedIps<string>();
  t.insert(prefix('10.0.0.77/24'), 'a');
  t.insert(prefix('10.0.0.0/24'), 'b');
  assert.equal(t.lookup(v4('10.0.0.1')), 'b');
  assert.deepEqual(t.entriesForPeer('a'), []);
  assert.deepEqual(t.entriesForPeer('b'), [{ address: v4('10.0.0.0'), bits: 24 }]);
});

test('removeByPeer leaves the others intact', () => {
  const t = new AllowedIps<string>();
  t.insert(prefix('10.0.0.0/8'), 'a');
  t.insert(prefix('10.1.0.0/16'), 'b');
  t.insert(prefix('10.1.1.0/24'), 'a');
  t.insert(prefix('fd00::/64'), 'a');
  t.removeByPeer('a');
  assert.equal(t.lookup(v4('10.1.1.1')), 'b');
  assert.equal(t.lookup(v4('10.2.0.0')), null);
  assert.equal(t.lookup(v6('fd00::1')), null);
  assert.deepEqual(t.entriesForPeer('a'), []);
});

test('bad prefixes are refused', () => {
  const t = new AllowedIps<string>();
  assert.throws(() => t.insert({ address: new Uint8Array(5), bits: 8 }, 'x'), {
    code: 'TG_ERR_INVALID_ARGUMENT',
  });
  assert.throws(() => t.insert({ address: new Uint8Array(4), bits: 33 }, 'x'), {
    code: 'TG_ERR_INVALID_ARGUMENT',
  });
  assert.throws(() => t.insert({ address: new Uint8Array(16), bits: -1 }, 'x'), {
    code: 'TG_ERR_INVALID_ARGUMENT',
  });
});

/** Naive longest-prefix match for comparison. */
function naive(entries: Map<string, { p: IpPrefix; peer: number }>, addr: Uint8Array): number | null {
  let best: { bits: number; peer: number } | null = null;
  for (const { p, peer } of entries.values()) {
    if (p.address.length !== addr.length) continue;
    let match = true;
    for (let bit = 0; bit < p.bits; bit++) {
      const byte = bit >> 3;
      const mask = 0x80 >> (bit & 7);
      if ((p.address[byte] & mask) !== (addr[byte] & mask)) {
        match = false;
        break;
      }
    }
    if (match && (best === null || p.bits > best.bits)) best = { bits: p.bits, peer };
  }
  return best?.peer ?? null;
}

test('random inserts and removals agree with a naive longest-prefix match', () => {
  let seed = 42;
  const rnd = (n: number) => {
    seed = (seed * 1664525 + 1013904223) >>> 0;
    return seed % n;
  };
  for (const size of [4, 16]) {
    const t = new AllowedIps<number>();
    const entries = new Map<string, { p: IpPrefix; peer: number }>();
    // A small address space so prefixes nest and collide often.
    const randomAddr = () => {
      const a = new Uint8Array(size);
      a[0] = 10;
      for (let i = 1; i < size; i++) a[i] = rnd(4) === 0 ? rnd(256) : rnd(3);
      return a;
    };
    const mask = (a: Uint8Array, bits: number) => {
      const m = Uint8Array.from(a);
      for (let bit = bits; bit < size * 8; bit++) m[bit >> 3] &= ~(0x80 >> (bit & 7));
      return m;
    };
    for (let step = 0; step < 3000; step++) {
      const bits = rnd(size * 8 + 1);
      const p = { address: mask(randomAddr(), bits), bits };
      const key = `${Buffer.from(p.address).toString('hex')}/${bits}`;
      if (rnd(4) === 0 && entries.size > 0) {
        const victim = [...entries.keys()][rnd(entries.size)];
        const e = entries.get(victim)!;
        t.remove(e.p, e.peer);
        entries.delete(victim);
      } else {
        const peer = rnd(20);
        t.insert(p, peer);
        entries.set(key, { p, peer });
      }
      for (let q = 0; q < 5; q++) {
        const addr = randomAddr();
        assert.equal(t.lookup(addr), naive(entries, addr), `step ${step}`);
      }
    }
    // Every peer's listing matches what was inserted for it.
    for (let peer = 0; peer < 20; peer++) {
      const mine = [...entries.values()]
        .filter((e) => e.peer === peer)
        .map((e) => `${e.p.address}/${e.p.bits}`);
      const listed = t.entriesForPeer(peer).map((e) => `${e.address}/${e.bits}`);
      assert.deepEqual(listed.sort(), mine.sort());
    }
  }
});
