// Path MTU work at the NIC: ICMP "fragmentation needed" / "packet too big" answers (valid
// checksums, swapped addresses, the quoted packet, size limits, never about ICMP errors), the
// TCP MSS clamp (checksum still valid), the leg MTU arithmetic, and the forwarder's use of
// them (answer from the right session, fragment what may be, rate limit, in-place batches).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseHostAddress } from '../../src/nic/addresses.js';
import { Forwarder, TOO_BIG_PER_S } from '../../src/nic/forwarding.js';
import { legCarry, tunnelMtu } from '../../src/nic/mtu.js';
import { clampMss, writeFragNeeded, writePacketTooBig } from '../../src/nic/pmtu.js';
import type { TunBatch } from '../../src/protocol/batch.js';

function sum16(buf: Buffer, start: number, end: number, acc = 0): number {
  let s = acc;
  for (let i = start; i < end; i += 2) s += (buf[i] << 8) | (i + 1 < end ? buf[i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** True when the internet checksum over the range (plus a pseudo-header sum) verifies. */
function verifies(buf: Buffer, start: number, end: number, pseudo = 0): boolean {
  return sum16(buf, start, end, pseudo) === 0xffff;
}

function pseudo4(p: Buffer, proto: number, len: number): number {
  return sum16(p, 12, 20) + proto + len;
}

function pseudo6(p: Buffer, proto: number, len: number): number {
  return sum16(p, 8, 40) + proto + len;
}

function v4(src: string, dst: string, proto: number, l4: Buffer, df = true): Buffer {
  const p = Buffer.alloc(20 + l4.length);
  p[0] = 0x45;
  p.writeUInt16BE(p.length, 2);
  if (df) p[6] = 0x40;
  p[8] = 64;
  p[9] = proto;
  Buffer.from(src.split('.').map(Number)).copy(p, 12);
  Buffer.from(dst.split('.').map(Number)).copy(p, 16);
  p.writeUInt16BE(~sum16(p, 0, 20) & 0xffff, 10);
  l4.copy(p, 20);
  return p;
}

function v6(src: string, dst: string, proto: number, l4: Buffer): Buffer {
  const p = Buffer.alloc(40 + l4.length);
  p[0] = 0x60;
  p.writeUInt16BE(l4.length, 4);
  p[6] = proto;
  p[7] = 64;
  Buffer.from(parseHostAddress(src).bytes).copy(p, 8);
  Buffer.from(parseHostAddress(dst).bytes).copy(p, 24);
  l4.copy(p, 40);
  return p;
}

/** A TCP header with the given flags and options (data offset set), then `data` bytes. */
function tcp(flags: number, options: number[], data = 0): Buffer {
  const optLen = Math.ceil(options.length / 4) * 4;
  const t = Buffer.alloc(20 + optLen + data);
  t.writeUInt16BE(40000, 0);
  t.writeUInt16BE(5201, 2);
  t.writeUInt32BE(12345678, 4);
  t[12] = ((20 + optLen) / 4) << 4;
  t[13] = flags;
  t.writeUInt16BE(64240, 14);
  Buffer.from(options).copy(t, 20);
  return t;
}

/** Fills in the TCP checksum of an IPv4 or IPv6 packet. */
function withTcpChecksum(p: Buffer): Buffer {
  const six = p[0] >> 4 === 6;
  const l4 = six ? 40 : 20;
  const len = p.length - l4;
  p.writeUInt16BE(0, l4 + 16);
  const ps = six ? pseudo6(p, 6, len) : pseudo4(p, 6, len);
  p.writeUInt16BE(~sum16(p, l4, p.length, ps) & 0xffff, l4 + 16);
  return p;
}

const SYN = 0x02;
const ACK = 0x10;
// MSS 8960, NOP, window scale 7, NOP NOP, SACK permitted
const SYN_OPTIONS = [2, 4, 0x23, 0x00, 1, 3, 3, 7, 1, 1, 4, 2];

test('fragmentation needed: header and ICMP checksums, swapped addresses, MTU, quote within 576 bytes', () => {
  const p = v4('100.64.1.11', '100.64.1.21', 17, Buffer.alloc(1480, 0x5a));
  const out = Buffer.alloc(2000);
  const n = writeFragNeeded(p, 0, p.length, 1220, out, 16);
  assert.equal(n, 576);
  const a = out.subarray(16, 16 + n);
  assert.equal(a[0], 0x45);
  assert.equal(a.readUInt16BE(2), n);
  assert.equal(a[9], 1);
  assert.ok(verifies(a, 0, 20), 'IPv4 header checksum');
  assert.deepEqual([...a.subarray(12, 16)], [100, 64, 1, 21]);
  assert.deepEqual([...a.subarray(16, 20)], [100, 64, 1, 11]);
  assert.equal(a[20], 3);
  assert.equal(a[21], 4);
  assert.equal(a.readUInt16BE(26), 1220);
  assert.ok(verifies(a, 20, n), 'ICMP checksum');
  assert.deepEqual(a.subarray(28, n), p.subarray(0, n - 28));
});

test('packet too big: ICMPv6 checksum with the pseudo-header, MTU, quote within 1,280 bytes', () => {
  const p = v6('fd00:100:64:1::1:1', 'fd00:100:64:1::2:1', 17, Buffer.alloc(8000, 0x33));
  const out = Buffer.alloc(2000);
  const n = writePacketTooBig(p, 0, p.length, 1280, out, 0);
  assert.equal(n, 1280);
  assert.equal(out[0] >> 4, 6);
  assert.equal(out.readUInt16BE(4), n - 40);
  assert.equal(out[6], 58);
  assert.deepEqual(out.subarray(8, 24), p.subarray(24, 40));
  assert.deepEqual(out.subarray(24, 40), p.subarray(8, 24));
  assert.equal(out[40], 2);
  assert.equal(out[41], 0);
  assert.equal(out.readUInt32BE(44), 1280);
  assert.ok(verifies(out, 40, n, pseudo6(out, 58, n - 40)), 'ICMPv6 checksum');
  assert.deepEqual(out.subarray(48, n), p.subarray(0, n - 48));
});

test('no answer about an ICMP error, a non-first fragment or a multicast source', () => {
  const out = Buffer.alloc(2000);
  const unreachable = Buffer.alloc(8 + 28);
  unreachable[0] = 3;
  assert.equal(writeFragNeeded(v4('100.64.1.11', '100.64.1.21', 1, unreachable), 0, 56, 1220, out, 0), 0);
  const echo = Buffer.alloc(1400);
  echo[0] = 8;
  const ping = v4('100.64.1.11', '100.64.1.21', 1, echo);
  assert.ok(writeFragNeeded(ping, 0, ping.length, 1220, out, 0) > 0, 'an echo request is answered');
  const frag = v4('100.64.1.11', '100.64.1.21', 17, Buffer.alloc(1400));
  frag.writeUInt16BE(0x4000 | 10, 6);
  assert.equal(writeFragNeeded(frag, 0, frag.length, 1220, out, 0), 0);
  assert.equal(
    writeFragNeeded(v4('224.0.0.1', '100.64.1.21', 17, Buffer.alloc(1400)), 0, 1420, 1220, out, 0),
    0,
  );
  const tooBig6 = Buffer.alloc(1400);
  tooBig6[0] = 2;
  const e6 = v6('fd00:100:64:1::1:1', 'fd00:100:64:1::2:1', 58, tooBig6);
  assert.equal(writePacketTooBig(e6, 0, e6.length, 1280, out, 0), 0);
  const echo6 = Buffer.alloc(1400);
  echo6[0] = 128;
  const p6 = v6('fd00:100:64:1::1:1', 'fd00:100:64:1::2:1', 58, echo6);
  assert.ok(writePacketTooBig(p6, 0, p6.length, 1280, out, 0) > 0);
});

test('MSS clamp: lowers the option of a SYN and keeps the TCP checksum valid, IPv4 and IPv6', () => {
  const cases = [
    { p: withTcpChecksum(v4('100.64.1.11', '100.64.1.21', 6, tcp(SYN, SYN_OPTIONS))), max: 1180 },
    { p: withTcpChecksum(v4('100.64.1.21', '100.64.1.11', 6, tcp(SYN | ACK, SYN_OPTIONS))), max: 1400 },
    {
      p: withTcpChecksum(v6('fd00:100:64:1::1:1', 'fd00:100:64:1::2:1', 6, tcp(SYN, SYN_OPTIONS))),
      max: 1160,
    },
  ];
  for (const { p, max } of cases) {
    const six = p[0] >> 4 === 6;
    const l4 = six ? 40 : 20;
    assert.equal(clampMss(p, 0, p.length, max), true);
    assert.equal(p.readUInt16BE(l4 + 22), max);
    const ps = six ? pseudo6(p, 6, p.length - l4) : pseudo4(p, 6, p.length - l4);
    assert.ok(verifies(p, l4, p.length, ps), 'TCP checksum after the clamp');
    assert.equal(clampMss(p, 0, p.length, max), false, 'already within: unchanged');
  }
  const ack = withTcpChecksum(v4('100.64.1.11', '100.64.1.21', 6, tcp(ACK, SYN_OPTIONS)));
  const before = Buffer.from(ack);
  assert.equal(clampMss(ack, 0, ack.length, 1000), false, 'only SYNs');
  assert.deepEqual(ack, before);
  const noMss = withTcpChecksum(v4('100.64.1.11', '100.64.1.21', 6, tcp(SYN, [1, 1, 4, 2])));
  assert.equal(clampMss(noMss, 0, noMss.length, 1000), false);
  const broken = withTcpChecksum(v4('100.64.1.11', '100.64.1.21', 6, tcp(SYN, [3, 9, 0, 0])));
  assert.equal(clampMss(broken, 0, broken.length, 1000), false, 'an option running past the header');
});

test('leg MTUs: carry per outer family, tg0 derived from the smaller link, never below 1,280', () => {
  assert.equal(legCarry(1500, 4), 1440);
  assert.equal(legCarry(1500, 6), 1420);
  assert.equal(tunnelMtu({ hostLink: 1500, fabric: 1500 }), 1420);
  assert.equal(tunnelMtu({ hostLink: 9000, fabric: 9000 }), 8920);
  assert.equal(tunnelMtu({ hostLink: 9000, fabric: 1500 }), 1420);
  assert.equal(tunnelMtu({ hostLink: 1280, fabric: 1280 }), 1280);
  assert.throws(() => tunnelMtu({ hostLink: 1000, fabric: 1500 }), /host link MTU/);
});

/** Packets in 2,048-byte slots at offset 16 of each, as the NIC data plane receives them. */
function slots(items: [number, Buffer][]): TunBatch {
  const buf = Buffer.alloc(items.length * 2048);
  const offsets = new Uint32Array(items.length);
  const lengths = new Uint32Array(items.length);
  const peerIds = new Uint32Array(items.length);
  items.forEach(([peer, p], i) => {
    offsets[i] = i * 2048 + 16;
    lengths[i] = p.length;
    peerIds[i] = peer;
    p.copy(buf, offsets[i]);
  });
  return { buf, offsets, lengths, peerIds, count: items.length };
}

function forwarder(): Forwarder {
  const f = new Forwarder(4);
  f.addTenant('t1');
  f.addLocalWorkload('t1', 'w1', 1, parseHostAddress('100.64.1.11'));
  f.addLocalWorkload('t1', 'w6', 2, parseHostAddress('fd00:100:64:1::1:1'));
  f.setRemoteNic('t1', 10, [
    { workload: 'r1', address: parseHostAddress('100.64.1.21') },
    { workload: 'r6', address: parseHostAddress('fd00:100:64:1::2:1') },
  ]);
  f.setLegLimits({ tenantMtu: 1220 });
  return f;
}

test('forwarder: too big with DF is answered on the source session; without DF it passes', () => {
  const f = forwarder();
  const big = v4('100.64.1.11', '100.64.1.21', 17, Buffer.alloc(1380));
  const noDf = v4('100.64.1.11', '100.64.1.21', 17, Buffer.alloc(1380), false);
  const small = v4('100.64.1.11', '100.64.1.21', 17, Buffer.alloc(1000));
  const r = f.forward(
    slots([
      [1, big],
      [1, noDf],
      [1, small],
    ]),
    1000,
    2048,
  );
  assert.equal(r.batch.count, 2);
  assert.deepEqual([...r.peerIds.subarray(0, 2)], [10, 10]);
  assert.deepEqual([...r.batch.offsets.subarray(0, 2)], [2048 + 16, 2 * 2048 + 16], 'in place');
  assert.equal(r.extra.batch.count, 1);
  assert.equal(r.extra.peerIds[0], 1, 'the answer goes back on the source session');
  const off = r.extra.batch.offsets[0];
  const a = r.extra.batch.buf.subarray(off, off + r.extra.batch.lengths[0]);
  assert.equal(a[20], 3);
  assert.equal(a[21], 4);
  assert.equal(a.readUInt16BE(26), 1220);
  assert.deepEqual([...a.subarray(12, 16)], [100, 64, 1, 21], 'from the original destination');
  assert.ok(off >= 16, 'headroom for the transport header');
  assert.equal(f.counters.dropped.tooBig, 1);
  assert.equal(f.counters.icmpTooBig, 1);
  assert.equal(f.counters.fragmented, 1);
  assert.equal(f.counters.egress, 2);
});

test('forwarder: IPv6 up to 1,280 bytes passes even above the legs; larger gets "packet too big" 1,280', () => {
  const f = forwarder();
  const at1280 = v6('fd00:100:64:1::1:1', 'fd00:100:64:1::2:1', 17, Buffer.alloc(1240));
  const above = v6('fd00:100:64:1::1:1', 'fd00:100:64:1::2:1', 17, Buffer.alloc(1360));
  const r = f.forward(
    slots([
      [2, at1280],
      [2, above],
    ]),
    1000,
    2048,
  );
  assert.equal(r.batch.count, 1);
  assert.equal(r.extra.batch.count, 1);
  assert.equal(r.extra.peerIds[0], 2);
  const off = r.extra.batch.offsets[0];
  assert.equal(r.extra.batch.buf[off + 40], 2);
  assert.equal(r.extra.batch.buf.readUInt32BE(off + 44), 1280);
});

test('forwarder: answers are rate-limited per source session and counted', () => {
  const f = forwarder();
  const big = v4('100.64.1.11', '100.64.1.21', 17, Buffer.alloc(1380));
  const burst = TOO_BIG_PER_S + 5;
  let answers = 0;
  for (let i = 0; i < burst; i++) answers += f.forward(slots([[1, big]]), 5000, 2048).extra.batch.count;
  assert.equal(answers, TOO_BIG_PER_S);
  assert.equal(f.counters.icmpTooBigSuppressed, 5);
  assert.equal(f.counters.dropped.tooBig, burst);
  // A second later the bucket is full again.
  assert.equal(f.forward(slots([[1, big]]), 6000, 2048).extra.batch.count, 1);
});

test('forwarder: remote packets too big are not answered here (their NIC does) and pass', () => {
  const f = forwarder();
  const fromRemote = v4('100.64.1.21', '100.64.1.11', 17, Buffer.alloc(1380));
  const r = f.forward(slots([[10, fromRemote]]), 1000, 2048);
  assert.equal(r.batch.count, 1);
  assert.equal(r.extra.batch.count, 0);
  assert.equal(f.counters.fragmented, 1);
});

test('forwarder: clamps the MSS of SYNs both ways; a packet without room behind it is copied', () => {
  const f = forwarder();
  const syn = withTcpChecksum(v4('100.64.1.11', '100.64.1.21', 6, tcp(SYN, SYN_OPTIONS)));
  const synAck = withTcpChecksum(v4('100.64.1.21', '100.64.1.11', 6, tcp(SYN | ACK, SYN_OPTIONS)));
  const b = slots([
    [1, syn],
    [10, synAck],
  ]);
  const r = f.forward(b, 1000, 2048);
  assert.equal(r.batch.count, 2);
  assert.equal(f.counters.mssClamped, 2);
  assert.equal(b.buf.readUInt16BE(16 + 20 + 22), 1220 - 40);
  // A packet ending within 32 bytes of its slot's end goes to the copy batch.
  const tight = slots([[1, v4('100.64.1.11', '100.64.1.21', 17, Buffer.alloc(1000, 7))]]);
  tight.offsets[0] = 2048 - 1020 - 10;
  Buffer.from(v4('100.64.1.11', '100.64.1.21', 17, Buffer.alloc(1000, 7))).copy(tight.buf, tight.offsets[0]);
  const t = f.forward(tight, 1000, 2048);
  assert.equal(t.batch.count, 0);
  assert.equal(t.extra.batch.count, 1);
  assert.equal(t.extra.peerIds[0], 10);
  const off = t.extra.batch.offsets[0];
  assert.deepEqual(
    t.extra.batch.buf.subarray(off, off + 1020),
    tight.buf.subarray(tight.offsets[0], tight.offsets[0] + 1020),
  );
});

test('forwarder: later fragments follow a first fragment the firewall passed, and only those', () => {
  const f = forwarder();
  const seen: number[] = [];
  f.policy = (_t, _s, _d, packet) => {
    seen.push(packet.length);
    return true;
  };
  const fragment = (id: number, offset8: number, more: boolean, size: number): Buffer => {
    const p = v4('100.64.1.11', '100.64.1.21', 17, Buffer.alloc(size), false);
    p.writeUInt16BE(id, 4);
    p.writeUInt16BE((more ? 0x2000 : 0) | offset8, 6);
    return p;
  };
  const r = f.forward(
    slots([
      [1, fragment(7, 0, true, 1200)],
      [1, fragment(7, 150, false, 300)],
      [1, fragment(8, 150, false, 300)],
    ]),
    1000,
    2048,
  );
  assert.equal(r.batch.count, 2);
  assert.deepEqual(seen, [1220], 'the firewall decides on the first fragment only');
  assert.equal(f.counters.fragmentsFollowed, 1);
  assert.equal(f.counters.dropped.fragment, 1);
  // After FRAGMENT_FOLLOW_MS the packet is forgotten.
  assert.equal(f.forward(slots([[1, fragment(7, 150, false, 300)]]), 4000, 2048).batch.count, 0);
  const six = (offM: number): Buffer => {
    const fh = Buffer.alloc(8 + 600);
    fh[0] = 17;
    fh.writeUInt16BE(offM, 2);
    fh.writeUInt32BE(0xabcdef, 4);
    return v6('fd00:100:64:1::1:1', 'fd00:100:64:1::2:1', 44, fh);
  };
  const r6 = f.forward(
    slots([
      [2, six(1)],
      [2, six((100 << 3) | 0)],
    ]),
    5000,
    2048,
  );
  assert.equal(r6.batch.count, 2);
  assert.equal(f.counters.fragmentsFollowed, 2);
});
