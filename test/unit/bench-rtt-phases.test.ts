// The round-trip phase split of `bench latency --phases` over hand-built captures: Linux
// cooked headers v1 and v2, nanosecond and microsecond files of either byte order, what is
// skipped (lead pings, keepalives, other protocols, lost replies, a record cut short) and what
// is refused (not a capture, another link type).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { captureEvents, phaseMedians, roundTripPhases } from '../../src/bench/rtt-phases.js';

const OUTGOING = 4;
const HOST = 0;

function ipv4(proto: number, l4: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + l4.length, 2);
  h[8] = 64;
  h[9] = proto;
  return Buffer.concat([h, l4]);
}

function icmp(type: number, id: number, seq: number): Buffer {
  const b = Buffer.alloc(64);
  b[0] = type;
  b.writeUInt16BE(id, 4);
  b.writeUInt16BE(seq, 6);
  return ipv4(1, b);
}

function udp(payload: number): Buffer {
  const b = Buffer.alloc(8 + payload);
  b.writeUInt16BE(51820, 0);
  b.writeUInt16BE(51821, 2);
  b.writeUInt16BE(8 + payload, 4);
  return ipv4(17, b);
}

interface Rec {
  us: number;
  pkttype: number;
  ip: Buffer;
  protocol?: number;
}

function cooked(v: 1 | 2, r: Rec): Buffer {
  if (v === 1) {
    const h = Buffer.alloc(16);
    h.writeUInt16BE(r.pkttype, 0);
    h.writeUInt16BE(r.protocol ?? 0x0800, 14);
    return Buffer.concat([h, r.ip]);
  }
  const h = Buffer.alloc(20);
  h.writeUInt16BE(r.protocol ?? 0x0800, 0);
  h[10] = r.pkttype;
  return Buffer.concat([h, r.ip]);
}

function pcap(
  recs: readonly Rec[],
  opts: { v?: 1 | 2; nano?: boolean; be?: boolean; cut?: number } = {},
): Buffer {
  const v = opts.v ?? 2;
  const nano = opts.nano ?? true;
  const w32 = (b: Buffer, x: number, off: number): void => {
    if (opts.be) b.writeUInt32BE(x >>> 0, off);
    else b.writeUInt32LE(x >>> 0, off);
  };
  const head = Buffer.alloc(24);
  w32(head, nano ? 0xa1b23c4d : 0xa1b2c3d4, 0);
  w32(head, 65535, 16);
  w32(head, v === 1 ? 113 : 276, 20);
  const parts: Buffer[] = [head];
  for (const r of recs) {
    const data = cooked(v, r);
    const rh = Buffer.alloc(16);
    const sec = Math.floor(r.us / 1e6);
    const frac = r.us - sec * 1e6;
    w32(rh, 1_800_000_000 + sec, 0);
    w32(rh, Math.round(nano ? frac * 1000 : frac), 4);
    w32(rh, data.length, 8);
    w32(rh, data.length, 12);
    parts.push(rh, data);
  }
  const all = Buffer.concat(parts);
  return opts.cut ? all.subarray(0, all.length - opts.cut) : all;
}

/** One ping's packets: request at t, datagram out, datagram in, reply, with the given phases. */
function roundTrip(t: number, id: number, seq: number, phases: [number, number, number]): Rec[] {
  const [o, r, i] = phases;
  return [
    { us: t, pkttype: OUTGOING, ip: icmp(8, id, seq) },
    { us: t + o, pkttype: OUTGOING, ip: udp(128) },
    { us: t + o + r, pkttype: HOST, ip: udp(128) },
    { us: t + o + r + i, pkttype: HOST, ip: icmp(0, id, seq) },
  ];
}

test('each counted ping splits into outbound, remote and inbound, in both cooked header versions', () => {
  const recs = [
    ...roundTrip(0, 7, 1, [900, 900, 900]), // a lead ping: not counted
    ...roundTrip(5_000, 7, 2, [150, 200, 60]),
    ...roundTrip(10_000, 7, 3, [170, 190, 80]),
    ...roundTrip(15_000, 7, 4, [160, 210, 70]),
  ];
  for (const v of [1, 2] as const) {
    const p = roundTripPhases(captureEvents(pcap(recs, { v })), 1);
    assert.deepEqual(
      p.outbound.map((x) => Math.round(x)),
      [150, 170, 160],
    );
    assert.deepEqual(
      p.remote.map((x) => Math.round(x)),
      [200, 190, 210],
    );
    assert.deepEqual(
      p.inbound.map((x) => Math.round(x)),
      [60, 80, 70],
    );
    assert.deepEqual(phaseMedians(p), { outbound: 160, remote: 200, inbound: 70, matched: 3 });
  }
});

test('microsecond and big-endian files read alike', () => {
  const recs = roundTrip(1_000, 3, 5, [120, 240, 48]);
  for (const opts of [{ nano: false }, { be: true }, { be: true, nano: false }]) {
    const m = phaseMedians(roundTripPhases(captureEvents(pcap(recs, opts))));
    assert.deepEqual(m, { outbound: 120, remote: 240, inbound: 48, matched: 1 }, JSON.stringify(opts));
  }
});

test('keepalives, other protocols and IPv6 are skipped; a lost reply leaves its ping out', () => {
  const recs: Rec[] = [
    { us: 0, pkttype: OUTGOING, ip: icmp(8, 9, 1) },
    { us: 50, pkttype: OUTGOING, ip: udp(32) }, // a keepalive: no data, not the request's datagram
    { us: 60, pkttype: OUTGOING, ip: Buffer.from([0x60, 0, 0, 0]), protocol: 0x86dd },
    { us: 100, pkttype: OUTGOING, ip: udp(128) },
    { us: 300, pkttype: HOST, ip: udp(128) },
    { us: 350, pkttype: HOST, ip: icmp(0, 9, 1) },
    // seq 2: its answer never comes; the next request starts a new ping
    { us: 5_000, pkttype: OUTGOING, ip: icmp(8, 9, 2) },
    { us: 5_100, pkttype: OUTGOING, ip: udp(128) },
    ...roundTrip(10_000, 9, 3, [110, 220, 55]),
  ];
  const p = roundTripPhases(captureEvents(pcap(recs)));
  assert.deepEqual(phaseMedians(p), { outbound: 110, remote: 220, inbound: 55, matched: 2 });
  assert.deepEqual(
    p.outbound.map((x) => Math.round(x)),
    [100, 110],
  );
});

test('a reply to another ping does not close a round trip', () => {
  const recs: Rec[] = [
    { us: 0, pkttype: OUTGOING, ip: icmp(8, 1, 4) },
    { us: 100, pkttype: OUTGOING, ip: udp(128) },
    { us: 300, pkttype: HOST, ip: udp(128) },
    { us: 350, pkttype: HOST, ip: icmp(0, 1, 3) }, // a late reply to seq 3
  ];
  assert.equal(roundTripPhases(captureEvents(pcap(recs))).outbound.length, 0);
});

test('a record cut short by the end of the file is skipped, the rest is read', () => {
  const recs = [...roundTrip(0, 2, 1, [100, 200, 50]), ...roundTrip(5_000, 2, 2, [100, 200, 50])];
  const ev = captureEvents(pcap(recs, { cut: 10 }));
  assert.equal(ev.length, 7);
  assert.equal(roundTripPhases(ev).outbound.length, 1);
});

test('what is not a cooked pcap capture is refused with the reason', () => {
  assert.throws(() => captureEvents(Buffer.alloc(10)), /shorter than a pcap header/);
  assert.throws(() => captureEvents(Buffer.alloc(40)), /not a pcap file/);
  const eth = pcap([]);
  eth.writeUInt32LE(1, 20);
  assert.throws(() => captureEvents(eth), /link type 1 is not a Linux cooked capture/);
  assert.deepEqual(captureEvents(pcap([])), []);
});
