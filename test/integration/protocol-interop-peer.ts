// Child process of protocol-interop.test.ts, run inside the test's network namespace: the
// protocol engine on a plain UDP socket (no TUN), speaking to three wireguard-go instances over
// the namespace's loopback. Identity 1 initiates to wireguard-go #1 and pings through it;
// identities 2 (with a preshared key) and 3 are responders for wireguard-go #2 and #3 and answer
// pings that arrive through them. After "load" on stdin the engine stays under load (cookies
// required). After "flood" it sends wireguard-go #4 a burst of initiations with a valid MAC1 and
// garbage inside (each costs wireguard-go a DH, so its handshake queue fills and it goes under
// load), then pings through identity 4: the first initiation gets wireguard-go's cookie reply,
// the retry carries MAC2. "quit" prints the counters and ends. Events are printed as JSON lines; the parent
// decides pass or fail.

import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';
import { ENDPOINT_SIZE, makeEndpoint } from '../../src/net/endpoint.js';
import { JsTransportAead } from '../../src/protocol/aead.js';
import type { DatagramBatch } from '../../src/protocol/batch.js';
import { CookieGenerator } from '../../src/protocol/cookie.js';
import { keyFromBase64 } from '../../src/protocol/crypto.js';
import { Engine } from '../../src/protocol/engine.js';

interface Config {
  jsKey1: string;
  jsKey2: string;
  wgPub1: string;
  wgPub2: string;
  jsKey3: string;
  wgPub3: string;
  jsKey4: string;
  wgPub4: string;
  wgPort4: number;
  psk2: string;
  jsPort: number;
  wgPort1: number;
}

const cfg = JSON.parse(process.argv[2]) as Config;
const LOOPBACK = Uint8Array.of(127, 0, 0, 1);
const start = performance.now();
const now = (): number => performance.now() - start + 1_000_000;
const emit = (event: string, extra: Record<string, unknown> = {}): void => {
  process.stdout.write(`${JSON.stringify({ event, ...extra })}\n`);
};

const engine = new Engine({ aead: new JsTransportAead() });
const id1 = engine.addIdentity(keyFromBase64(cfg.jsKey1));
const id2 = engine.addIdentity(keyFromBase64(cfg.jsKey2));
const id3 = engine.addIdentity(keyFromBase64(cfg.jsKey3));
const id4 = engine.addIdentity(keyFromBase64(cfg.jsKey4));
engine.addPeer(id1, {
  publicKey: keyFromBase64(cfg.wgPub1),
  endpoint: makeEndpoint(LOOPBACK, cfg.wgPort1),
  allowedIps: [{ address: Uint8Array.of(100, 64, 200, 2), bits: 32 }],
});
engine.addPeer(id2, {
  publicKey: keyFromBase64(cfg.wgPub2),
  presharedKey: keyFromBase64(cfg.psk2),
  allowedIps: [{ address: Uint8Array.of(100, 64, 201, 0), bits: 24 }],
});
engine.addPeer(id3, {
  publicKey: keyFromBase64(cfg.wgPub3),
  allowedIps: [{ address: Uint8Array.of(100, 64, 202, 0), bits: 24 }],
});
engine.addPeer(id4, {
  publicKey: keyFromBase64(cfg.wgPub4),
  endpoint: makeEndpoint(LOOPBACK, cfg.wgPort4),
  allowedIps: [{ address: Uint8Array.of(100, 64, 203, 2), bits: 32 }],
});
const responders = new Map([
  ['100.64.201.2', { identity: id2, self: [100, 64, 201, 1] }],
  ['100.64.202.2', { identity: id3, self: [100, 64, 202, 1] }],
]);
let underLoad = false;

const sock = createSocket('udp4');

function sendAll(batch: DatagramBatch): void {
  for (let i = 0; i < batch.count; i++) {
    const ep = batch.endpoints.subarray(i * ENDPOINT_SIZE, (i + 1) * ENDPOINT_SIZE);
    const host = `${ep[4]}.${ep[5]}.${ep[6]}.${ep[7]}`;
    const port = ep.readUInt16BE(2);
    const data = Buffer.from(batch.buf.subarray(batch.offsets[i], batch.offsets[i] + batch.lengths[i]));
    sock.send(data, port, host);
  }
}

function checksum(buf: Buffer, off: number, len: number): number {
  let sum = 0;
  for (let i = 0; i < len - 1; i += 2) sum += buf.readUInt16BE(off + i);
  if (len & 1) sum += buf[off + len - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An ICMP echo (type 8 request / 0 reply) in an IPv4 packet, checksums filled. */
function icmpEcho(
  type: number,
  src: number[],
  dst: number[],
  id: number,
  seq: number,
  payload: Buffer,
): Buffer {
  const p = Buffer.alloc(20 + 8 + payload.length);
  p[0] = 0x45;
  p.writeUInt16BE(p.length, 2);
  p.writeUInt16BE(0x4000, 6);
  p[8] = 64;
  p[9] = 1;
  Buffer.from(src).copy(p, 12);
  Buffer.from(dst).copy(p, 16);
  p.writeUInt16BE(checksum(p, 0, 20), 10);
  p[20] = type;
  p.writeUInt16BE(id, 24);
  p.writeUInt16BE(seq, 26);
  payload.copy(p, 28);
  p.writeUInt16BE(checksum(p, 20, p.length - 20), 22);
  return p;
}

function outbound(identity: number, packet: Buffer): void {
  const buf = Buffer.alloc(16 + packet.length + 32);
  packet.copy(buf, 16);
  const r = engine.outbound(
    identity,
    { buf, offsets: Uint32Array.of(16), lengths: Uint32Array.of(packet.length), count: 1 },
    now(),
  );
  sendAll(r.control);
  sendAll(r.data);
}

sock.on('message', (msg, rinfo) => {
  const from = makeEndpoint(Uint8Array.from(rinfo.address.split('.').map(Number)), rinfo.port);
  const r = engine.inbound(
    { buf: msg, offsets: Uint32Array.of(0), lengths: Uint32Array.of(msg.length), endpoints: from, count: 1 },
    now(),
  );
  sendAll(r.control);
  for (let i = 0; i < r.tun.count; i++) {
    const p = Buffer.from(r.tun.buf.subarray(r.tun.offsets[i], r.tun.offsets[i] + r.tun.lengths[i]));
    if (p[9] !== 1) continue;
    const src = [...p.subarray(12, 16)];
    const type = p[20];
    if (type === 0 && src.join('.') === '100.64.200.2') {
      emit('reply1', { seq: p.readUInt16BE(26) });
    } else if (type === 0 && src.join('.') === '100.64.203.2') {
      emit('reply4', { seq: p.readUInt16BE(26) });
    } else if (type === 8 && responders.has(src.join('.'))) {
      const r = responders.get(src.join('.'))!;
      emit(`request${r.identity}`, { seq: p.readUInt16BE(26) });
      outbound(r.identity, icmpEcho(0, r.self, src, p.readUInt16BE(24), p.readUInt16BE(26), p.subarray(28)));
    }
  }
});

sock.bind(cfg.jsPort, '127.0.0.1', () => {
  emit('ready');
  let seq = 0;
  const pinger = setInterval(() => {
    seq++;
    if (seq <= 5)
      outbound(id1, icmpEcho(8, [100, 64, 200, 1], [100, 64, 200, 2], 0x7467, seq, Buffer.alloc(56, seq)));
  }, 300);
  const ticker = setInterval(() => {
    if (underLoad) engine.setUnderLoad(true, now());
    sendAll(engine.tick(now()));
  }, 100);
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line === 'load') {
      underLoad = true;
      engine.setUnderLoad(true, now());
      emit('loaded');
    } else if (line === 'flood') {
      const generator = new CookieGenerator(keyFromBase64(cfg.wgPub4));
      // Fewer than its queue holds (1024: more would be dropped, ours too), more than its
      // under-load mark (128).
      for (let i = 0; i < 600; i++) {
        const m = randomBytes(148);
        m.writeUInt32LE(1, 0);
        generator.addMacs(m, 0, 148, now());
        sock.send(m, cfg.wgPort4, '127.0.0.1');
      }
      // The real initiation follows once the burst has left the socket buffers (a full receive
      // buffer would drop it) but well within the second wireguard-go stays under load.
      for (let s4 = 1; s4 <= 12; s4++) {
        const ping = icmpEcho(8, [100, 64, 203, 1], [100, 64, 203, 2], 0x7468, s4, Buffer.alloc(8, s4));
        setTimeout(() => outbound(id4, ping), 100 + (s4 - 1) * 1000);
      }
      emit('flooded');
    } else if (line === 'quit') {
      clearInterval(pinger);
      clearInterval(ticker);
      emit('counters', { counters: JSON.parse(JSON.stringify(engine.counters)) });
      sock.close();
      process.stdin.destroy();
    }
  });
});
