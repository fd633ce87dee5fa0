// Forwarding decisions (table-driven): the tenant comes from the session, destinations are
// looked up within it, remote NICs are never relayed between, the policy hook decides last,
// and the output batch has headroom in front of each packet.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseHostAddress } from '../../src/nic/addresses.js';
import { FORWARD_SLOT, Forwarder, type PolicyHook, type WorkloadRef } from '../../src/nic/forwarding.js';
import type { TunBatch } from '../../src/protocol/batch.js';

function ipv4(src: string, dst: string, payload: Buffer): Buffer {
  const p = Buffer.alloc(20 + payload.length);
  p[0] = 0x45;
  p.writeUInt16BE(p.length, 2);
  p[8] = 64;
  p[9] = 17;
  Buffer.from(src.split('.').map(Number)).copy(p, 12);
  Buffer.from(dst.split('.').map(Number)).copy(p, 16);
  payload.copy(p, 20);
  return p;
}

function ipv6(src: string, dst: string, payload: Buffer): Buffer {
  const p = Buffer.alloc(40 + payload.length);
  p[0] = 0x60;
  p.writeUInt16BE(payload.length, 4);
  p[6] = 17;
  p[7] = 64;
  Buffer.from(parseHostAddress(src).bytes).copy(p, 8);
  Buffer.from(parseHostAddress(dst).bytes).copy(p, 24);
  payload.copy(p, 40);
  return p;
}

/** A batch as engine.inbound() returns it: packets at odd offsets of a slab, tagged by peer. */
function tun(items: [number, Buffer][]): TunBatch {
  const buf = Buffer.alloc(items.length * 1600 + 64);
  const offsets = new Uint32Array(items.length);
  const lengths = new Uint32Array(items.length);
  const peerIds = new Uint32Array(items.length);
  items.forEach(([peer, p], i) => {
    offsets[i] = i * 1600 + 33;
    lengths[i] = p.length;
    peerIds[i] = peer;
    p.copy(buf, offsets[i]);
  });
  return { buf, offsets, lengths, peerIds, count: items.length };
}

const A = (s: string) => parseHostAddress(s);

// Peers: 1, 2 = t1 workloads on this host; 3 = t2 workload with t1-w1's address;
// 10 = remote NIC for t1 (workloads r1, r2); 11 = remote NIC for t1 (r3); 20 = remote NIC for t2.
function setup(): Forwarder {
  const f = new Forwarder(4);
  f.addTenant('t1');
  f.addTenant('t2');
  f.addLocalWorkload('t1', 'w1', 1, A('100.64.1.11'));
  f.addLocalWorkload('t1', 'w2', 2, A('100.64.1.12'));
  f.addLocalWorkload('t2', 'x1', 3, A('100.64.1.11'));
  f.setRemoteNic('t1', 10, [
    { workload: 'r1', address: A('100.64.1.21') },
    { workload: 'r2', address: A('fd00:100:64:1::2:1') },
  ]);
  f.setRemoteNic('t1', 11, [{ workload: 'r3', address: A('100.64.1.31') }]);
  f.setRemoteNic('t2', 20, [{ workload: 'y1', address: A('100.64.1.12') }]);
  return f;
}

const data = Buffer.from('payload');

test('forwarding decisions', () => {
  const cases: { name: string; from: number; packet: Buffer; to: number | null; counter: string }[] = [
    {
      name: 'local to local, same tenant',
      from: 1,
      packet: ipv4('100.64.1.11', '100.64.1.12', data),
      to: 2,
      counter: 'local',
    },
    {
      name: 'local to remote',
      from: 1,
      packet: ipv4('100.64.1.11', '100.64.1.21', data),
      to: 10,
      counter: 'egress',
    },
    {
      name: 'local to remote, second NIC',
      from: 2,
      packet: ipv4('100.64.1.12', '100.64.1.31', data),
      to: 11,
      counter: 'egress',
    },
    {
      name: 'remote to local',
      from: 10,
      packet: ipv4('100.64.1.21', '100.64.1.11', data),
      to: 1,
      counter: 'ingress',
    },
    {
      name: 'local to remote over IPv6',
      from: 1,
      packet: ipv6('fd00:100:64:1::1:1', 'fd00:100:64:1::2:1', data),
      to: 10,
      counter: 'egress',
    },
    {
      name: 'remote to remote over IPv6 is never relayed',
      from: 10,
      packet: ipv6('fd00:100:64:1::2:1', 'fd00:100:64:1::2:1', data),
      to: null,
      counter: 'transit',
    },
    {
      name: 'same address, other tenant: t2 reaches its own remote',
      from: 3,
      packet: ipv4('100.64.1.11', '100.64.1.12', data),
      to: 20,
      counter: 'egress',
    },
    {
      name: 't2 remote to t2 local at the shared address',
      from: 20,
      packet: ipv4('100.64.1.12', '100.64.1.11', data),
      to: 3,
      counter: 'ingress',
    },
    {
      name: 'other tenant only: t2 local to a t1-only address',
      from: 3,
      packet: ipv4('100.64.1.11', '100.64.1.21', data),
      to: null,
      counter: 'noRoute',
    },
    {
      name: 'unknown destination',
      from: 1,
      packet: ipv4('100.64.1.11', '100.64.9.9', data),
      to: null,
      counter: 'noRoute',
    },
    {
      name: 'remote to remote is never relayed',
      from: 10,
      packet: ipv4('100.64.1.21', '100.64.1.31', data),
      to: null,
      counter: 'transit',
    },
    {
      name: 'remote source not behind that NIC',
      from: 11,
      packet: ipv4('100.64.1.21', '100.64.1.11', data),
      to: null,
      counter: 'noSource',
    },
    {
      name: 'unknown session',
      from: 99,
      packet: ipv4('100.64.1.11', '100.64.1.12', data),
      to: null,
      counter: 'noSource',
    },
    {
      name: 'not IP',
      from: 1,
      packet: Buffer.from([0x50, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]),
      to: null,
      counter: 'malformed',
    },
  ];
  for (const c of cases) {
    const f = setup();
    const out = f.forward(tun([[c.from, c.packet]]));
    if (c.to === null) assert.equal(out.batch.count, 0, c.name);
    else {
      assert.equal(out.batch.count, 1, c.name);
      assert.equal(out.peerIds[0], c.to, c.name);
    }
    const counters = f.counters as unknown as Record<string, number> & { dropped: Record<string, number> };
    const value = c.counter in counters.dropped ? counters.dropped[c.counter] : counters[c.counter];
    assert.equal(value, 1, `${c.name}: counter ${c.counter}`);
  }
});

test('the output batch: copies with 16 bytes of headroom, tail room, one slot each, reused', () => {
  const f = setup();
  const p1 = ipv4('100.64.1.11', '100.64.1.12', Buffer.alloc(1400, 0xab));
  const p2 = ipv4('100.64.1.12', '100.64.1.21', Buffer.alloc(60, 0xcd));
  const drop = ipv4('100.64.1.11', '100.64.9.9', data);
  const out = f.forward(
    tun([
      [1, p1],
      [99, drop],
      [2, p2],
      [1, drop],
    ]),
  );
  assert.equal(out.batch.count, 2);
  assert.deepEqual([...out.peerIds.subarray(0, 2)], [2, 10]);
  for (const [k, p] of [p1, p2].entries()) {
    const off = out.batch.offsets[k];
    assert.equal(off, k * FORWARD_SLOT + 16);
    assert.equal(out.batch.lengths[k], p.length);
    assert.deepEqual(out.batch.buf.subarray(off, off + p.length), p);
    assert.ok(off + p.length + 32 <= (k + 1) * FORWARD_SLOT + 16, 'no room for padding and tag');
  }
  const slab = out.batch.buf;
  const again = f.forward(tun([[2, p2]]));
  assert.equal(again.batch.buf, slab, 'the slab is not reused');
  assert.equal(again.batch.count, 1);
  // A batch larger than the initial capacity grows the slab.
  const many = f.forward(tun(Array.from({ length: 9 }, () => [1, p1] as [number, Buffer])));
  assert.equal(many.batch.count, 9);
});

test('the policy hook sees tenant, source and destination workloads; deny and throw both drop', () => {
  const f = setup();
  const seen: [string, WorkloadRef, WorkloadRef, number][] = [];
  const policy: PolicyHook = (tenant, src, dst, packet) => {
    seen.push([tenant, src, dst, packet.length]);
    if (dst.workload === 'w2') return false;
    if (dst.workload === 'r3') throw new Error('broken rule');
    return true;
  };
  f.policy = policy;
  const toW2 = ipv4('100.64.1.11', '100.64.1.12', data);
  const toR1 = ipv4('100.64.1.11', '100.64.1.21', data);
  const toR3 = ipv4('100.64.1.11', '100.64.1.31', data);
  const fromR1 = ipv4('100.64.1.21', '100.64.1.11', data);
  const out = f.forward(
    tun([
      [1, toW2],
      [1, toR1],
      [1, toR3],
      [10, fromR1],
    ]),
  );
  assert.equal(out.batch.count, 2);
  assert.deepEqual([...out.peerIds.subarray(0, 2)], [10, 1]);
  assert.equal(f.counters.dropped.policy, 2);
  assert.deepEqual(
    seen.map(([t, s, d]) => `${t}:${s.workload}${s.local ? '' : '*'}->${d.workload}${d.local ? '' : '*'}`),
    ['t1:w1->w2', 't1:w1->r1*', 't1:w1->r3*', 't1:r1*->w1'],
  );
  assert.ok(seen.every(([, , , len]) => len === toW2.length));
});

test('tables: removal takes routes and sessions away', () => {
  const f = setup();
  f.removeLocalWorkload('t1', 'w2');
  assert.equal(f.forward(tun([[1, ipv4('100.64.1.11', '100.64.1.12', data)]])).batch.count, 0);
  assert.equal(f.forward(tun([[2, ipv4('100.64.1.12', '100.64.1.11', data)]])).batch.count, 0);
  assert.equal(f.counters.dropped.noRoute, 1);
  assert.equal(f.counters.dropped.noSource, 1);
  f.setRemoteNic('t1', 10, [{ workload: 'r9', address: A('100.64.1.29') }]);
  assert.equal(f.forward(tun([[1, ipv4('100.64.1.11', '100.64.1.21', data)]])).batch.count, 0);
  assert.equal(f.forward(tun([[1, ipv4('100.64.1.11', '100.64.1.29', data)]])).peerIds[0], 10);
  f.removeRemoteNic('t1', 10);
  assert.equal(f.forward(tun([[10, ipv4('100.64.1.29', '100.64.1.11', data)]])).batch.count, 0);
  f.removeTenant('t2');
  assert.equal(f.forward(tun([[3, ipv4('100.64.1.11', '100.64.1.12', data)]])).batch.count, 0);
  assert.equal(f.workloadOf('t2', 'x1'), undefined);
  assert.deepEqual(f.workloadOf('t1', 'w1'), { local: true, address: '100.64.1.11' });
  assert.throws(() => f.addLocalWorkload('t1', 'w1', 7, A('100.64.1.77')), { code: 'TG_ERR_CONFLICT' });
  assert.throws(() => f.addLocalWorkload('nope', 'w', 8, A('100.64.1.78')), { code: 'TG_ERR_NOT_FOUND' });
});

test('copy mode: each batch holds its own packets (the slab count starts again at every call)', () => {
  const f = setup();
  const p1 = ipv4('100.64.1.11', '100.64.1.12', Buffer.from('first'));
  const p2 = ipv4('100.64.1.12', '100.64.1.11', Buffer.from('second'));
  assert.equal(f.forward(tun([[1, p1]])).batch.count, 1);
  const out = f.forward(tun([[2, p2]]));
  assert.equal(out.batch.count, 1);
  assert.equal(out.peerIds[0], 1);
  const off = out.batch.offsets[0];
  assert.deepEqual(out.batch.buf.subarray(off, off + out.batch.lengths[0]), p2);
});

test('in place with receive offload: each packet ends within its own datagram; after a copy, the rest are copied (order kept)', () => {
  const f = setup();
  const sizes = [128, 1420, 60]; // a multiple of 16, a full tg0 packet (padding capped), a small one
  const packets = sizes.map((n, i) => ipv4('100.64.1.11', '100.64.1.12', Buffer.alloc(n - 20, 0x10 + i)));
  // Three datagrams back to back in one slot, as one GRO run leaves them: header, packet, padding, tag.
  const buf = Buffer.alloc(4096);
  const offsets = new Uint32Array(3);
  const lengths = new Uint32Array(3);
  const starts = new Uint32Array(3);
  const ends = new Uint32Array(3);
  let at = 0;
  packets.forEach((p, i) => {
    starts[i] = at;
    offsets[i] = at + 16;
    lengths[i] = p.length;
    p.copy(buf, offsets[i]);
    const padded = i === 1 ? p.length : Math.ceil(p.length / 16) * 16;
    at += 16 + padded + 16;
    ends[i] = at;
  });
  const batch: TunBatch = { buf, offsets, lengths, peerIds: Uint32Array.of(1, 1, 1), count: 3 };
  const slot = 69_632;
  const all = f.forward(batch, Date.now(), slot, { starts, ends, count: 3 });
  assert.equal(all.batch.buf, buf, 'in place');
  assert.equal(all.batch.count, 3);
  assert.equal(all.extra.batch.count, 0);
  assert.deepEqual([...all.batch.offsets.subarray(0, 3)], [...offsets]);
  assert.deepEqual([...all.ends!.subarray(0, 3)], [...ends], 'each message ends where its datagram did');
  // Without the bounds the slot's end would be taken for all three: the run would overwrite itself.
  const slotOnly = f.forward(batch, Date.now(), slot);
  assert.deepEqual([...slotOnly.ends!.subarray(0, 3)], [slot, slot, slot]);

  // The second datagram too short for the tag behind its packet: copied, and the third with it.
  const short = Uint32Array.from(ends);
  short[1] = offsets[1] + lengths[1] + 8;
  const r = f.forward(batch, Date.now(), slot, { starts, ends: short, count: 3 });
  assert.equal(r.batch.count, 1);
  assert.equal(r.batch.offsets[0], offsets[0]);
  assert.equal(r.extra.batch.count, 2);
  assert.equal(r.extra.ends, null);
  for (let k = 0; k < 2; k++) {
    const off = r.extra.batch.offsets[k];
    assert.deepEqual(
      r.extra.batch.buf.subarray(off, off + r.extra.batch.lengths[k]),
      packets[k + 1],
      `copy ${k}`,
    );
    assert.equal(r.extra.peerIds[k], 2);
  }
});
