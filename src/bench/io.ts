// `tenguard bench io`: packets per second through the native I/O layer, one packet per
// call against batched, all in one run so that only ratios matter on a shared machine.
//
//  tun   A TUN in a namespace of its own (tgbio...) with forwarding on: packets written
//        into it are routed straight back out of it, so this process is both source and
//        sink and no other process limits the rate. Each round writes ROUND packets, then
//        reads them all back; write and read are timed apart. The write figure includes
//        the kernel forwarding each packet back into the TUN queue.
//  udp   Two native sockets on 127.0.0.1: each round sends ROUND datagrams (sendmmsg when
//        batched), then receives them (recvmmsg when batched); timed apart. A third case
//        sends the batches with UDP segmentation offload (UDP_SEGMENT runs of one size).
//  aead  ChaCha20-Poly1305 over WireGuard transport messages of 1420 plaintext bytes:
//        the native batch (one reused context, in place) against node:crypto with one
//        createCipheriv/createDecipheriv per packet.
import { execFileSync } from 'node:child_process';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { NativeAead } from '../native/aead.js';
import { PacketBatch } from '../native/batch.js';
import { NativeTunDevice } from '../native/tun.js';
import { NativeUdpSocket } from '../native/udp.js';
import { ENDPOINT_SIZE, encodeEndpoint } from '../net/endpoint.js';
import { TgError } from '../util/errors.js';
import { requireRoot, run as runCmd, runInOk, runOk } from '../util/exec.js';
import { IPV4_HEADER_LEN, UDP_HEADER_LEN, writeIPv4Udp } from './packets.js';

/** Packets per round: below the TUN queue (txqueuelen) and the socket buffers, so nothing is dropped. */
const ROUND = 1024;
const SLOT = 2048;
/** WireGuard transport overhead on the wire: 16-byte header + 16-byte tag. */
const WG_OVERHEAD = 32;
const WG_HEADER = 16;
const WG_TAG = 16;
const TUN_NET = { self: '100.64.253.1', from: '100.64.253.3', to: '100.64.253.2', cidr: '100.64.253.1/24' };

export interface Rate {
  packets: number;
  calls: number;
  seconds: number;
  pps: number;
}

export interface Comparison {
  single: Rate;
  batched: Rate;
  /** batched.pps / single.pps */
  speedup: number;
}

export interface IoBenchResult {
  bench: 'io';
  secondsPerCase: number;
  batch: number;
  packetSize: number;
  tun: { read: Comparison; write: Comparison; lost: number };
  udp: {
    datagramSize: number;
    send: Comparison;
    recv: Comparison;
    /** Batched sends with UDP_SEGMENT; speedup against batched sends without. */
    sendSegmented: { rate: Rate; speedup: number; kernelAccepted: boolean };
    lost: number;
  };
  aead: {
    plaintextSize: number;
    seal: { native: Rate; nodeCrypto: Rate; speedup: number; nativeGbps: number };
    open: { native: Rate; nodeCrypto: Rate; speedup: number; nativeGbps: number };
  };
}

/** Accumulates packets, calls and time over rounds. */
class Meter {
  private packets = 0;
  private calls = 0;
  private ns = 0n;

  add(start: bigint, packets: number, calls: number): void {
    this.ns += process.hrtime.bigint() - start;
    this.packets += packets;
    this.calls += calls;
  }

  rate(): Rate {
    const seconds = Number(this.ns) / 1e9;
    return {
      packets: this.packets,
      calls: this.calls,
      seconds,
      pps: seconds > 0 ? this.packets / seconds : 0,
    };
  }
}

function compare(single: Rate, batched: Rate): Comparison {
  return { single, batched, speedup: single.pps > 0 ? batched.pps / single.pps : 0 };
}

function deadline(seconds: number): bigint {
  return process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
}

/** Runs `round` again and again until `seconds` have passed (at least once). */
function timed(seconds: number, round: () => void): void {
  const end = deadline(seconds);
  do round();
  while (process.hrtime.bigint() < end);
}

async function setupTunNamespace(ns: string, dev: string): Promise<void> {
  await runOk('ip', ['netns', 'add', ns]);
  await runInOk(ns, 'ip', ['link', 'set', 'lo', 'up']);
  await runOk('ip', ['link', 'set', 'dev', dev, 'netns', ns]);
  for (const key of [
    `net.ipv6.conf.${dev}.disable_ipv6=1`,
    'net.ipv4.ip_forward=1',
    'net.ipv4.conf.all.send_redirects=0',
    `net.ipv4.conf.${dev}.send_redirects=0`,
    'net.ipv4.conf.all.rp_filter=0',
    `net.ipv4.conf.${dev}.rp_filter=0`,
  ])
    await runInOk(ns, 'sysctl', ['-qw', key]);
  await runInOk(ns, 'ip', ['addr', 'add', TUN_NET.cidr, 'dev', dev]);
  await runInOk(ns, 'ip', ['link', 'set', 'dev', dev, 'txqueuelen', String(4 * ROUND), 'up']);
}

async function benchTun(seconds: number, batch: number, size: number, log: (s: string) => void) {
  const ns = `tgbio${randomBytes(3).toString('hex')}`;
  const dev = `${ns}t`;
  // Ctrl-C must not leave the namespace behind.
  const onSignal = () => {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } finally {
      process.exit(130);
    }
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const tun = NativeTunDevice.open(dev);
  try {
    await setupTunNamespace(ns, dev);
    const tx = new PacketBatch(batch, SLOT, 0);
    const rx = new PacketBatch(batch, SLOT, 16);
    const payload = randomBytes(size - IPV4_HEADER_LEN - UDP_HEADER_LEN);
    for (let i = 0; i < batch; i++)
      tx.lengths[i] = writeIPv4Udp(
        tx.slab,
        tx.offsets[i],
        { src: TUN_NET.from, dst: TUN_NET.to, sport: 40000, dport: 9 },
        payload,
      );
    let lost = 0;
    const measure = (per: number) => {
      const write = new Meter();
      const read = new Meter();
      timed(seconds, () => {
        let t0 = process.hrtime.bigint();
        let written = 0;
        let calls = 0;
        for (let k = 0; k < ROUND; k += per, calls++)
          written += tun.writeBatch(tx.slab, tx.offsets, tx.lengths, Math.min(per, ROUND - k));
        write.add(t0, written, calls);
        t0 = process.hrtime.bigint();
        let got = 0;
        let empty = 0;
        for (calls = 0; got < written && empty < 100; calls++) {
          const n = tun.readBatch(rx.slab, rx.slotSize, rx.headroom, per, rx.lengths);
          got += n;
          empty = n === 0 ? empty + 1 : 0;
        }
        read.add(t0, got, calls);
        lost += written - got;
      });
      return { write: write.rate(), read: read.rate() };
    };
    log(`tun: one packet per call, ${seconds} s`);
    const single = measure(1);
    log(`tun: batches of ${batch}, ${seconds} s`);
    const batched = measure(batch);
    const stats = tun.stats();
    lost += stats.txDropped + stats.txRejected;
    return { read: compare(single.read, batched.read), write: compare(single.write, batched.write), lost };
  } finally {
    tun.close();
    await runCmd('ip', ['netns', 'del', ns]);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function benchUdp(seconds: number, batch: number, size: number, log: (s: string) => void) {
  const datagram = size + WG_OVERHEAD;
  const receiver = NativeUdpSocket.open({ address: '127.0.0.1', rcvBuf: 32 << 20 });
  const plain = NativeUdpSocket.open({ address: '127.0.0.1', sndBuf: 32 << 20, segmentation: false });
  const segmenting = NativeUdpSocket.open({ address: '127.0.0.1', sndBuf: 32 << 20, segmentation: true });
  let sender = plain;
  try {
    const tx = new PacketBatch(batch, SLOT, 0);
    const rx = new PacketBatch(batch, SLOT, 16);
    tx.lengths.fill(datagram);
    for (let i = 0; i < batch; i++) encodeEndpoint(receiver.localEndpoint(), tx.endpoints, i * ENDPOINT_SIZE);
    let lost = 0;
    const measure = (per: number) => {
      const send = new Meter();
      const recv = new Meter();
      timed(seconds, () => {
        let t0 = process.hrtime.bigint();
        let sent = 0;
        let calls = 0;
        for (let k = 0; k < ROUND; k += per, calls++)
          sent += sender.sendBatch(tx.slab, tx.offsets, tx.lengths, tx.endpoints, Math.min(per, ROUND - k));
        send.add(t0, sent, calls);
        t0 = process.hrtime.bigint();
        let got = 0;
        let empty = 0;
        for (calls = 0; got < sent && empty < 100; calls++) {
          const n = receiver.recvBatch(rx.slab, rx.slotSize, rx.headroom, per, rx.lengths, rx.endpoints);
          got += n;
          empty = n === 0 ? empty + 1 : 0;
        }
        recv.add(t0, got, calls);
        lost += sent - got;
      });
      return { send: send.rate(), recv: recv.rate() };
    };
    log(`udp: one datagram per call, ${seconds} s`);
    const single = measure(1);
    log(`udp: batches of ${batch}, ${seconds} s`);
    const batched = measure(batch);
    log(`udp: batches of ${batch} with segmentation offload, ${seconds} s`);
    sender = segmenting;
    const segmented = measure(batch);
    for (const s of [plain, segmenting]) {
      const stats = s.stats();
      lost += stats.txDropped + stats.txRejected;
    }
    return {
      datagramSize: datagram,
      send: compare(single.send, batched.send),
      recv: compare(single.recv, batched.recv),
      sendSegmented: {
        rate: segmented.send,
        speedup: segmented.send.pps / batched.send.pps,
        kernelAccepted: segmenting.segmentation,
      },
      lost,
    };
  } finally {
    plain.close();
    segmenting.close();
    receiver.close();
  }
}

function benchAead(seconds: number, batch: number, size: number, log: (s: string) => void) {
  const key = randomBytes(32);
  const b = new PacketBatch(batch, SLOT, 0);
  const plainLengths = new Uint32Array(batch).fill(size);
  const lengths = new Uint32Array(batch).fill(WG_HEADER + size + WG_TAG);
  const keys = new Array<Buffer>(batch).fill(key);
  const ok = new Uint8Array(batch);
  const plain = randomBytes(size);
  const nonces: Buffer[] = [];
  for (let i = 0; i < batch; i++) {
    b.slab.writeUInt32LE(4, b.offsets[i]);
    b.slab.writeBigUInt64LE(BigInt(i), b.offsets[i] + 8);
    plain.copy(b.slab, b.offsets[i] + WG_HEADER);
    const nonce = Buffer.alloc(12);
    nonce.writeBigUInt64LE(BigInt(i), 4);
    nonces.push(nonce);
  }

  // Measure only what is correct: the native result must equal node:crypto's.
  const aead = new NativeAead();
  aead.sealBatch(b.slab, b.offsets, plainLengths, keys, 1);
  const c = createCipheriv('chacha20-poly1305', key, nonces[0], { authTagLength: WG_TAG });
  const reference = Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
  if (!reference.equals(b.slab.subarray(WG_HEADER, WG_HEADER + size + WG_TAG)))
    throw new TgError('TG_ERR_INTERNAL', 'native AEAD output differs from node:crypto');
  aead.openBatch(b.slab, b.offsets, lengths, keys, 1, ok);

  log(`aead: native batches of ${batch}, ${seconds} s`);
  const nativeSeal = new Meter();
  const nativeOpen = new Meter();
  let failures = 0;
  timed(seconds, () => {
    let t0 = process.hrtime.bigint();
    aead.sealBatch(b.slab, b.offsets, plainLengths, keys, batch);
    nativeSeal.add(t0, batch, 1);
    t0 = process.hrtime.bigint();
    aead.openBatch(b.slab, b.offsets, lengths, keys, batch, ok);
    nativeOpen.add(t0, batch, 1);
    for (let i = 0; i < batch; i++) failures += 1 - ok[i];
  });
  aead.close();
  if (failures > 0) throw new TgError('TG_ERR_INTERNAL', `native AEAD failed to open ${failures} packets`);

  log(`aead: node:crypto, one cipher per packet, ${seconds} s`);
  const nodeSeal = new Meter();
  const nodeOpen = new Meter();
  const sealed: Buffer[] = new Array(batch);
  const tags: Buffer[] = new Array(batch);
  timed(seconds, () => {
    let t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) {
      const e = createCipheriv('chacha20-poly1305', key, nonces[i], { authTagLength: WG_TAG });
      sealed[i] = e.update(plain);
      e.final();
      tags[i] = e.getAuthTag();
    }
    nodeSeal.add(t0, batch, batch);
    t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) {
      const d = createDecipheriv('chacha20-poly1305', key, nonces[i], { authTagLength: WG_TAG });
      d.setAuthTag(tags[i]);
      d.update(sealed[i]);
      d.final();
    }
    nodeOpen.add(t0, batch, batch);
  });
  const gbps = (r: Rate) => (r.pps * size * 8) / 1e9;
  const side = (native: Rate, nodeCrypto: Rate) => ({
    native,
    nodeCrypto,
    speedup: nodeCrypto.pps > 0 ? native.pps / nodeCrypto.pps : 0,
    nativeGbps: gbps(native),
  });
  return {
    plaintextSize: size,
    seal: side(nativeSeal.rate(), nodeSeal.rate()),
    open: side(nativeOpen.rate(), nodeOpen.rate()),
  };
}

export async function benchIo(opts: {
  seconds: number;
  batch: number;
  size: number;
  log?: (s: string) => void;
}): Promise<IoBenchResult> {
  requireRoot('bench io');
  const log = opts.log ?? (() => undefined);
  const tun = await benchTun(opts.seconds, opts.batch, opts.size, log);
  const udp = benchUdp(opts.seconds, opts.batch, opts.size, log);
  const aead = benchAead(opts.seconds, opts.batch, opts.size, log);
  return {
    bench: 'io',
    secondsPerCase: opts.seconds,
    batch: opts.batch,
    packetSize: opts.size,
    tun,
    udp,
    aead,
  };
}

function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

function table(r: IoBenchResult): string {
  const rows: [string, string, string, string][] = [
    ['case', 'one per call (pps)', `batched x${r.batch} (pps)`, 'speedup'],
  ];
  const pair = (name: string, c: Comparison) =>
    rows.push([name, fmt(c.single.pps), fmt(c.batched.pps), `${c.speedup.toFixed(2)}x`]);
  pair(`tun read (${r.packetSize} B)`, r.tun.read);
  pair(`tun write + forward (${r.packetSize} B)`, r.tun.write);
  pair(`udp send (${r.udp.datagramSize} B)`, r.udp.send);
  pair(`udp recv (${r.udp.datagramSize} B)`, r.udp.recv);
  rows.push([
    `udp send, segmentation offload`,
    `(vs batched)`,
    fmt(r.udp.sendSegmented.rate.pps),
    `${r.udp.sendSegmented.speedup.toFixed(2)}x`,
  ]);
  rows.push(['', 'node:crypto per packet', `native batch x${r.batch}`, '']);
  const aead = (name: string, a: IoBenchResult['aead']['seal']) =>
    rows.push([
      name,
      fmt(a.nodeCrypto.pps),
      `${fmt(a.native.pps)} (${a.nativeGbps.toFixed(2)} Gbit/s)`,
      `${a.speedup.toFixed(2)}x`,
    ]);
  aead(`aead seal (${r.aead.plaintextSize} B)`, r.aead.seal);
  aead(`aead open (${r.aead.plaintextSize} B)`, r.aead.open);
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const lines = rows.map((row) =>
    row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  '),
  );
  lines.push('', `lost: tun ${r.tun.lost}, udp ${r.udp.lost}; ${r.secondsPerCase} s per case`);
  return lines.join('\n');
}

const HELP = `usage: tenguard bench io [--seconds N] [--batch N] [--size BYTES] [--json]

Packets per second through the native I/O layer (root: it creates a tgbio... namespace):
TUN read and write, UDP send and receive, one packet per call against batched, and the
WireGuard transport AEAD as a native batch against node:crypto per packet.

  --seconds N   time per case (default 2; 6 cases)
  --batch N     packets per batched call, 1..1024 (default 128)
  --size BYTES  inner packet / AEAD plaintext size, 64..1500 (default 1420)
  --json        print one JSON object instead of a table
`;

export async function run(args: string[]): Promise<number> {
  let values: { seconds?: string; batch?: string; size?: string; json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        seconds: { type: 'string' },
        batch: { type: 'string' },
        size: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new TgError('TG_ERR_USAGE', `${(err as Error).message}\n\n${HELP}`, { cause: err });
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const num = (text: string | undefined, dflt: number, min: number, max: number, name: string) => {
    const v = text === undefined ? dflt : Number(text);
    if (!Number.isFinite(v) || v < min || v > max)
      throw new TgError('TG_ERR_USAGE', `--${name} must be a number in [${min}, ${max}]`);
    return v;
  };
  const seconds = num(values.seconds, 2, 0.1, 60, 'seconds');
  const batch = Math.floor(num(values.batch, 128, 1, ROUND, 'batch'));
  const size = Math.floor(num(values.size, 1420, 64, 1500, 'size'));
  const log = (s: string) => process.stderr.write(`bench io: ${s}\n`);
  const result = await benchIo({ seconds, batch, size, log });
  process.stdout.write(values.json ? `${JSON.stringify(result)}\n` : `${table(result)}\n`);
  return 0;
}
