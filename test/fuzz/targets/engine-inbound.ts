// The protocol engine's inbound path: every message type (initiation, response, cookie reply,
// transport, garbage) from a fuzzed source, alone or in batches, with and without load, plus
// arbitrary plaintext that the engine's real peer encrypts (so the decrypted-packet checks get
// fuzzed bytes too). The engine under test ("B") has one identity with peers A and C; A and C
// are real engines, with keys fixed so that committed seeds (an initiation from A) stay valid.
//
// Input: [mode][port 2][address 16][payload]
//   mode bits 0-1: 0 raw datagram from the fuzzed source, 1 raw datagram from A's endpoint,
//                  2 the payload as an inner packet sealed by A, 3 a batch: [len 2 LE][datagram]...
//   bit 2: B under load; bit 3: IPv6 source; bits 4-7: clock advance in 250 ms steps before
//   the datagrams and a timer tick after them.
// Findings: anything thrown, the engine's `internal` drop counter moving (an exception caught at
// its boundary), a delivered packet outside the slab, or one whose inner source is outside the
// sending peer's allowed IPs.
import { makeEndpoint } from '../../../src/net/endpoint.js';
import { JsTransportAead } from '../../../src/protocol/aead.js';
import type { DatagramBatch, OutgoingDatagrams } from '../../../src/protocol/batch.js';
import type { DropCounters } from '../../../src/protocol/counters.js';
import { publicKeyOf } from '../../../src/protocol/crypto.js';
import { Engine } from '../../../src/protocol/engine.js';
import { datagramSlab, packetSlab } from '../../helpers/protocol-harness.js';
import { FuzzFinding, type FuzzTarget } from '../target.js';

const HEADER = 19;
const KEY_A = Buffer.alloc(32, 0x41);
const KEY_B = Buffer.alloc(32, 0x42);
const KEY_C = Buffer.alloc(32, 0x43);
const EP_A = makeEndpoint(Uint8Array.from([127, 0, 0, 1]), 1001);
const EP_B = makeEndpoint(Uint8Array.from([127, 0, 0, 1]), 1002);
const EP_C = makeEndpoint(Uint8Array.from([127, 0, 0, 1]), 1003);
const PSK_AB = Buffer.alloc(32, 0x55);

function v4(a: number, b: number, c: number, d: number): Uint8Array {
  return Uint8Array.from([a, b, c, d]);
}

function copyOut(out: OutgoingDatagrams): Buffer[] {
  const r: Buffer[] = [];
  for (let i = 0; i < out.count; i++)
    r.push(Buffer.from(out.buf.subarray(out.offsets[i], out.offsets[i] + out.lengths[i])));
  return r;
}

function ipv4(src: Uint8Array, dst: Uint8Array, payload: number): Buffer {
  const p = Buffer.alloc(20 + payload, 0xab);
  p[0] = 0x45;
  p.writeUInt16BE(20 + payload, 2);
  p[8] = 64;
  p[9] = 17;
  Buffer.from(src).copy(p, 12);
  Buffer.from(dst).copy(p, 16);
  return p;
}

/** Inner source inside A's allowed IPs (10.0.0.0/8, fd00::/8)? */
function fromA(pkt: Buffer): boolean {
  if (pkt.length >= 20 && pkt[0] >> 4 === 4) return pkt[12] === 10;
  if (pkt.length >= 40 && pkt[0] >> 4 === 6) return pkt[8] === 0xfd;
  return false;
}

function frame(mode: number, from: Buffer | null, payload: Buffer): Buffer {
  const h = Buffer.alloc(HEADER);
  h[0] = mode;
  if (from !== null) {
    h.writeUInt16BE(from.readUInt16BE(2), 1);
    from.copy(h, 3, 4, from[0] === 4 ? 8 : 20);
  }
  return Buffer.concat([h, payload]);
}

export class EngineInboundTarget implements FuzzTarget {
  readonly name = 'engine-inbound';
  readonly description = 'protocol engine inbound: every message type from a fuzzed source, batches, load';
  readonly maxLength = 4096;
  readonly dictionary = [
    '\x01\x00\x00\x00',
    '\x02\x00\x00\x00',
    '\x03\x00\x00\x00',
    '\x04\x00\x00\x00',
    '\x00\x94',
    '\x00\x5c',
    '\x00\x40',
    '\x45\x00',
    '\x60\x00\x00\x00',
    '\x0a\x00\x00\x01',
  ];
  readonly resetEvery = 20_000;

  private now = 1_000_000;
  private wall = 1_700_000_000_000;
  private a!: Engine;
  private b!: Engine;
  private c!: Engine;
  private peerAatB = 0;
  private peerBatA = 0;
  private seeds: Buffer[] = [];
  private readonly before = new Map<string, number>();

  private engine(): Engine {
    return new Engine({ aead: new JsTransportAead(), wallClock: () => this.wall, jitter: () => 0 });
  }

  setup(): void {
    this.build();
  }

  private build(): void {
    this.now = 1_000_000;
    this.wall += 10_000_000;
    this.a = this.engine();
    this.b = this.engine();
    this.c = this.engine();
    const ia = this.a.addIdentity(KEY_A);
    const ib = this.b.addIdentity(KEY_B);
    this.b.addIdentity(Buffer.alloc(32, 0x44), { isolatedPeers: true });
    const ic = this.c.addIdentity(KEY_C);
    this.peerBatA = this.a.addPeer(ia, {
      publicKey: publicKeyOf(KEY_B),
      presharedKey: PSK_AB,
      endpoint: EP_B,
      allowedIps: [{ address: v4(0, 0, 0, 0), bits: 0 }],
    });
    this.peerAatB = this.b.addPeer(ib, {
      publicKey: publicKeyOf(KEY_A),
      presharedKey: PSK_AB,
      endpoint: EP_A,
      allowedIps: [
        { address: v4(10, 0, 0, 0), bits: 8 },
        { address: Uint8Array.from([0xfd, ...new Array(15).fill(0)]), bits: 8 },
      ],
      persistentKeepalive: 25,
    });
    const peerCatB = this.b.addPeer(ib, {
      publicKey: publicKeyOf(KEY_C),
      endpoint: EP_C,
      allowedIps: [{ address: v4(172, 16, 0, 0), bits: 12 }],
    });
    this.c.addPeer(ic, { publicKey: publicKeyOf(KEY_B), endpoint: EP_B, allowedIps: [] });

    const seeds: Buffer[] = [];
    // A -> B initiation, B's response to A, A's first transport message (the staged packet).
    const init = copyOut(
      this.a.outboundToPeers(
        packetSlab([ipv4(v4(10, 0, 0, 1), v4(172, 16, 0, 9), 32)]),
        Uint32Array.of(this.peerBatA),
        this.now,
      ).control,
    );
    seeds.push(...init.map((d) => frame(1, null, d)));
    const resp = copyOut(
      this.b.inbound(datagramSlab(init.map((data) => ({ data, from: EP_A }))), this.now).control,
    );
    const aIn = this.a.inbound(datagramSlab(resp.map((data) => ({ data, from: EP_B }))), this.now);
    seeds.push(...copyOut(aIn.control).map((d) => frame(1, null, d)));
    // More transport messages from A, IPv4 and keepalive-sized.
    for (const n of [0, 1, 64, 1300]) {
      const out = this.a.outboundToPeers(
        packetSlab([ipv4(v4(10, 0, 0, 1), v4(172, 16, 0, 9), n)]),
        Uint32Array.of(this.peerBatA),
        this.now,
      );
      seeds.push(...copyOut(out.data).map((d) => frame(1, null, d)));
    }
    // B -> C initiation; C's response (for B's pending handshake); C under load: a cookie reply.
    const bInit = copyOut(
      this.b.outboundToPeers(
        packetSlab([ipv4(v4(10, 0, 0, 2), v4(172, 16, 0, 9), 8)]),
        Uint32Array.of(peerCatB),
        this.now,
      ).control,
    );
    const cResp = copyOut(
      this.c.inbound(datagramSlab(bInit.map((data) => ({ data, from: EP_B }))), this.now).control,
    );
    seeds.push(...cResp.map((d) => frame(0, EP_C, d)));
    this.c.setUnderLoad(true, this.now);
    const cCookie = copyOut(
      this.c.inbound(datagramSlab(bInit.map((data) => ({ data, from: EP_B }))), this.now).control,
    );
    seeds.push(...cCookie.map((d) => frame(0, EP_C, d)));
    this.c.setUnderLoad(false, this.now);
    // Inner-packet mode: plaintext for A to seal.
    seeds.push(frame(2, null, ipv4(v4(10, 0, 0, 1), v4(172, 16, 0, 9), 40)));
    seeds.push(frame(2, null, ipv4(v4(192, 168, 0, 1), v4(172, 16, 0, 9), 40)));
    this.seeds = seeds;
  }

  liveSeeds(): Buffer[] {
    return this.seeds;
  }

  reset(): void {
    this.build();
  }

  private snapshot(d: DropCounters): void {
    for (const [k, v] of Object.entries(d)) this.before.set(k, v as number);
  }

  private moved(d: DropCounters): string[] {
    const out: string[] = [];
    for (const [k, v] of Object.entries(d)) if ((v as number) !== this.before.get(k)) out.push(k);
    return out;
  }

  run(input: Buffer): string {
    if (input.length < HEADER) return 'short-input';
    const mode = input[0];
    const kind = mode & 3;
    const underLoad = (mode & 4) !== 0;
    const port = input.readUInt16BE(1) || 1;
    const source = makeEndpoint((mode & 8) !== 0 ? input.subarray(3, 19) : input.subarray(3, 7), port);
    const payload = input.subarray(HEADER);
    this.now += (mode >> 4) * 250;
    this.wall += (mode >> 4) * 250;
    this.b.setUnderLoad(underLoad, this.now);

    let batch: DatagramBatch;
    if (kind === 2) {
      // A seals the payload; a packet A's engine refuses to send is no input for B.
      const out = this.a.outboundToPeers(packetSlab([payload]), Uint32Array.of(this.peerBatA), this.now);
      const items = [...copyOut(out.data), ...copyOut(out.control)].map((data) => ({ data, from: EP_A }));
      if (items.length === 0) return 'a-refused';
      batch = datagramSlab(items);
    } else if (kind === 3) {
      const items: { data: Buffer; from: Buffer }[] = [];
      let at = 0;
      while (at + 2 <= payload.length && items.length < 64) {
        const n = payload.readUInt16LE(at);
        at += 2;
        items.push({ data: payload.subarray(at, at + n), from: items.length % 2 === 0 ? source : EP_A });
        at += n;
      }
      if (items.length === 0) return 'empty-batch';
      batch = datagramSlab(items);
    } else {
      batch = datagramSlab([{ data: payload, from: kind === 1 ? EP_A : source }]);
    }

    const counters = this.b.counters;
    this.snapshot(counters.dropped);
    const rx = counters.rxPackets;
    const hs = counters.handshakesCompleted;
    const r = this.b.inbound(batch, this.now);
    const tun = r.tun;
    for (let i = 0; i < tun.count; i++) {
      const off = tun.offsets[i];
      const len = tun.lengths[i];
      if (off + len > tun.buf.length) throw new FuzzFinding(`delivered packet ${i} outside the slab`);
      const pkt = tun.buf.subarray(off, off + len);
      if (tun.peerIds[i] === this.peerAatB && len > 0 && !fromA(pkt))
        throw new FuzzFinding(`delivered packet ${i} from A with a source outside A's allowed IPs`);
    }
    const tunCount = tun.count;
    const control = r.control.count;
    const ticked = this.b.tick(this.now).count;
    const moved = this.moved(counters.dropped);
    if (moved.includes('internal'))
      throw new FuzzFinding('the engine caught an exception on its packet path');
    return [
      `k${kind}`,
      underLoad ? 'L' : '',
      moved.join('+'),
      tunCount > 0 ? 'tun' : '',
      control > 0 ? 'ctl' : '',
      ticked > 0 ? 'tick' : '',
      counters.rxPackets !== rx ? 'rx' : '',
      counters.handshakesCompleted !== hs ? 'hs' : '',
    ].join('|');
  }

  teardown(): void {}
}
