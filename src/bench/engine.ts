// Throughput of the protocol engine: N packets through outbound (A) and inbound (B) of two
// engines after a real handshake, in batches, all in memory (no sockets, no TUN).
//
//   node dist/src/bench/engine.js [--packets 200000] [--size 1400] [--batch 64] [--aead js|null]
//
// --aead null replaces the AEAD by a no-op (tags always "verify") to show the engine's own
// per-packet cost apart from encryption. Prints one JSON line.

import { parseArgs } from 'node:util';
import { ENDPOINT_SIZE, makeEndpoint } from '../net/endpoint.js';
import { JsTransportAead, type TransportAead } from '../protocol/aead.js';
import { generatePrivateKey, publicKeyOf } from '../protocol/crypto.js';
import { Engine } from '../protocol/engine.js';

class NullAead implements TransportAead {
  sealBatch(): void {}
  openBatch(
    _b: Buffer,
    _o: Uint32Array,
    _l: Uint32Array,
    _k: readonly Buffer[],
    count: number,
    ok: Uint8Array,
  ): void {
    ok.fill(1, 0, count);
  }
}

const { values } = parseArgs({
  options: {
    packets: { type: 'string', default: '200000' },
    size: { type: 'string', default: '1400' },
    batch: { type: 'string', default: '64' },
    aead: { type: 'string', default: 'js' },
  },
});
const N = Number(values.packets);
const SIZE = Number(values.size);
const BATCH = Number(values.batch);
const makeAead = (): TransportAead => (values.aead === 'null' ? new NullAead() : new JsTransportAead());

const epA = makeEndpoint(Uint8Array.of(127, 0, 0, 1), 1);
const epB = makeEndpoint(Uint8Array.of(127, 0, 0, 1), 2);
let now = 1_000_000;
const a = new Engine({ aead: makeAead() });
const b = new Engine({ aead: makeAead() });
const ka = generatePrivateKey();
const kb = generatePrivateKey();
const ia = a.addIdentity(ka);
const ib = b.addIdentity(kb);
a.addPeer(ia, {
  publicKey: publicKeyOf(kb),
  endpoint: epB,
  allowedIps: [{ address: Uint8Array.of(10, 0, 0, 2), bits: 32 }],
});
b.addPeer(ib, {
  publicKey: publicKeyOf(ka),
  allowedIps: [{ address: Uint8Array.of(10, 0, 0, 1), bits: 32 }],
});

// One IPv4 packet 10.0.0.1 -> 10.0.0.2.
const packet = Buffer.alloc(SIZE, 0x5a);
packet[0] = 0x45;
packet.writeUInt16BE(SIZE, 2);
packet[9] = 17;
Buffer.of(10, 0, 0, 1).copy(packet, 12);
Buffer.of(10, 0, 0, 2).copy(packet, 16);

const STRIDE = (16 + SIZE + 32 + 15) & ~15;
const slab = Buffer.alloc(STRIDE * BATCH);
const offsets = new Uint32Array(BATCH);
const lengths = new Uint32Array(BATCH);
const sources = Buffer.alloc(ENDPOINT_SIZE * BATCH);
for (let i = 0; i < BATCH; i++) {
  offsets[i] = i * STRIDE + 16;
  lengths[i] = SIZE;
  epA.copy(sources, i * ENDPOINT_SIZE);
}

/** Moves engine-originated datagrams from one engine to the other. */
function exchange(
  from: Engine,
  to: Engine,
  batch: { buf: Buffer; offsets: Uint32Array; lengths: Uint32Array; count: number },
  source: Buffer,
): void {
  if (batch.count === 0) return;
  const copies = [];
  for (let i = 0; i < batch.count; i++)
    copies.push(Buffer.from(batch.buf.subarray(batch.offsets[i], batch.offsets[i] + batch.lengths[i])));
  const buf = Buffer.concat(copies);
  const offs = new Uint32Array(copies.length);
  const lens = new Uint32Array(copies.length);
  let at = 0;
  copies.forEach((c, i) => {
    offs[i] = at;
    lens[i] = c.length;
    at += c.length;
  });
  const eps = Buffer.alloc(copies.length * ENDPOINT_SIZE);
  for (let i = 0; i < copies.length; i++) source.copy(eps, i * ENDPOINT_SIZE);
  const r = to.inbound({ buf, offsets: offs, lengths: lens, endpoints: eps, count: copies.length }, now);
  exchange(to, from, r.control, source === epA ? epB : epA);
  void from;
}

// Handshake: the first packet is staged, the initiation goes out, the response brings the session.
for (let i = 0; i < BATCH; i++) packet.copy(slab, offsets[i]);
const first = a.outbound(ia, { buf: slab, offsets, lengths, count: 1 }, now);
exchange(a, b, first.control, epA);
if (!a.sessionInfo(1).hasCurrent || !b.sessionInfo(1).hasCurrent)
  throw new Error('handshake did not complete');

let outMs = 0;
let inMs = 0;
let copyMs = 0;
let delivered = 0;
const batches = Math.ceil(N / BATCH);
const t0 = performance.now();
for (let k = 0; k < batches; k++) {
  const count = Math.min(BATCH, N - k * BATCH);
  const c0 = performance.now();
  for (let i = 0; i < count; i++) packet.copy(slab, offsets[i]);
  const t1 = performance.now();
  const r = a.outbound(ia, { buf: slab, offsets, lengths, count }, now);
  const t2 = performance.now();
  const rin = b.inbound(
    { buf: slab, offsets: r.data.offsets, lengths: r.data.lengths, endpoints: sources, count: r.data.count },
    now,
  );
  const t3 = performance.now();
  delivered += rin.tun.count;
  copyMs += t1 - c0;
  outMs += t2 - t1;
  inMs += t3 - t2;
  now += 0.01;
}
const totalMs = performance.now() - t0;
if (delivered !== N) throw new Error(`delivered ${delivered} of ${N}`);
const dropsA = Object.values(a.counters.dropped).reduce((x, y) => x + y, 0);
const dropsB = Object.values(b.counters.dropped).reduce((x, y) => x + y, 0);
process.stdout.write(
  `${JSON.stringify({
    aead: values.aead,
    packets: N,
    size: SIZE,
    batch: BATCH,
    totalMs: Math.round(totalMs),
    packetsPerSecond: Math.round((N / totalMs) * 1000),
    gbitPerSecond: Number(((N * SIZE * 8) / (totalMs / 1000) / 1e9).toFixed(3)),
    outboundUsPerPacket: Number(((outMs * 1000) / N).toFixed(3)),
    inboundUsPerPacket: Number(((inMs * 1000) / N).toFixed(3)),
    slabFillUsPerPacket: Number(((copyMs * 1000) / N).toFixed(3)),
    drops: dropsA + dropsB,
  })}\n`,
);
