// Coalesced TUN writes (IFF_VNET_HDR) against the real kernel TCP stack: this process plays
// a TCP peer behind a TUN in a namespace of its own, hands a whole window of segments to
// one writeBatch, and a socket in the namespace must receive exactly the bytes sent, over
// IPv4 and IPv6. A segment with a bad checksum must never reach the socket (the kernel
// drops it and the stream waits for its retransmission), so coalescing cannot hide it.
// Root only.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { NativeTunDevice, PacketBatch } from '../../src/native/index.js';
import { runInOk, runOk } from '../../src/util/exec.js';
import {
  createNamespace,
  deleteNamespace,
  moveTunInto,
  type NodeChild,
  nodeIn,
  uniqueName,
} from '../helpers/native-netns.js';

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

const NS = uniqueName('tggro');
const SEG = 1000;
/** This side's TCP port: a new one per test, so no socket left by an earlier test answers. */
let sport = 40000;

before(() => createNamespace(NS));
after(() => deleteNamespace(NS));

interface Family {
  v6: boolean;
  local: string; // the socket's address (the TUN's own)
  peer: string; // this process, behind the TUN
  cidr: string;
}

const FAMILIES: Family[] = [
  { v6: false, local: '100.64.252.1', peer: '100.64.252.2', cidr: '100.64.252.1/24' },
  { v6: true, local: 'fd00:100:252::1', peer: 'fd00:100:252::2', cidr: 'fd00:100:252::1/64' },
];

function addrBytes(a: string, v6: boolean): Buffer {
  if (!v6) return Buffer.from(a.split('.').map(Number));
  const [head, tail = ''] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) b.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  return b;
}

function sum16(buf: Buffer, start = 0, end = buf.length, acc = 0): number {
  let s = acc;
  for (let i = start; i + 1 < end; i += 2) s += buf.readUInt16BE(i);
  if ((end - start) & 1) s += buf[end - 1] << 8;
  return s;
}

function fold(s: number): number {
  let x = s;
  while (x > 0xffff) x = (x & 0xffff) + Math.floor(x / 0x10000);
  return x;
}

/** A TCP segment from peer:sport to local:5000 inside an IP packet, checksums right. */
function segment(
  f: Family,
  seq: number,
  ack: number,
  flags: number,
  payload: Buffer = Buffer.alloc(0),
): Buffer {
  const ipLen = f.v6 ? 40 : 20;
  const tcp = Buffer.alloc(20 + payload.length);
  tcp.writeUInt16BE(sport, 0);
  tcp.writeUInt16BE(5000, 2);
  tcp.writeUInt32BE(seq >>> 0, 4);
  tcp.writeUInt32BE(ack >>> 0, 8);
  tcp[12] = 5 << 4;
  tcp[13] = flags;
  tcp.writeUInt16BE(65535, 14);
  payload.copy(tcp, 20);
  const src = addrBytes(f.peer, f.v6);
  const dst = addrBytes(f.local, f.v6);
  const pseudo = sum16(src) + sum16(dst) + 6 + tcp.length; // both families: length < 65536
  tcp.writeUInt16BE(~fold(sum16(tcp, 0, tcp.length, pseudo)) & 0xffff, 16);
  const ip = Buffer.alloc(ipLen);
  if (f.v6) {
    ip[0] = 0x60;
    ip.writeUInt16BE(tcp.length, 4);
    ip[6] = 6;
    ip[7] = 64;
    src.copy(ip, 8);
    dst.copy(ip, 24);
  } else {
    ip[0] = 0x45;
    ip.writeUInt16BE(ipLen + tcp.length, 2);
    ip.writeUInt16BE(0x4000, 6); // DF
    ip[8] = 64;
    ip[9] = 6;
    src.copy(ip, 12);
    dst.copy(ip, 16);
    ip.writeUInt16BE(~fold(sum16(ip)) & 0xffff, 10);
  }
  return Buffer.concat([ip, tcp]);
}

const SYN = 0x02;
const ACK = 0x10;
const PSH = 0x08;
const FIN = 0x01;

/** Reads packets from the TUN until `match` accepts one (TCP from local:5000 to us). */
async function readUntil(
  tun: NativeTunDevice,
  f: Family,
  match: (flags: number, seq: number, ack: number) => boolean,
): Promise<{ seq: number; flags: number; ack: number }> {
  const b = new PacketBatch(64, 2048, 0);
  const ipLen = f.v6 ? 40 : 20;
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const n = tun.readBatch(b.slab, b.slotSize, b.headroom, b.capacity, b.lengths);
    for (let i = 0; i < n; i++) {
      const p = b.slab.subarray(b.offsets[i], b.offsets[i] + b.lengths[i]);
      const proto = f.v6 ? p[6] : p[9];
      if (p[0] >> 4 !== (f.v6 ? 6 : 4) || proto !== 6) continue;
      const tcp = p.subarray(ipLen);
      if (tcp.readUInt16BE(0) !== 5000 || tcp.readUInt16BE(2) !== sport) continue;
      const flags = tcp[13];
      const seq = tcp.readUInt32BE(4);
      const ack = tcp.readUInt32BE(8);
      if (match(flags, seq, ack)) return { seq, flags, ack };
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error('no matching packet from the kernel within 10 s');
}

function writeAll(tun: NativeTunDevice, packets: Buffer[]): number {
  const b = new PacketBatch(packets.length, 2048, 0);
  packets.forEach((p, i) => {
    p.copy(b.slab, b.offsets[i]);
    b.lengths[i] = p.length;
  });
  return tun.writeBatch(b.slab, b.offsets, b.lengths, packets.length);
}

for (const f of FAMILIES) {
  test(`IPv${f.v6 ? 6 : 4}: a window of segments written in one coalescing batch arrives intact, and a bad checksum is never delivered`, async () => {
    sport++;
    const tun = NativeTunDevice.open(`${NS}${f.v6 ? '6' : '4'}`, { vnetHdr: true });
    let server: NodeChild | undefined;
    try {
      assert.equal(tun.coalescing, true);
      if (f.v6) {
        await runOk('ip', ['link', 'set', 'dev', tun.name, 'netns', NS]);
        await runInOk(NS, 'sysctl', ['-qw', `net.ipv6.conf.${tun.name}.disable_ipv6=0`]);
        await runInOk(NS, 'ip', ['addr', 'add', f.cidr, 'dev', tun.name, 'nodad']);
        await runInOk(NS, 'ip', ['link', 'set', 'dev', tun.name, 'up']);
      } else {
        await moveTunInto(tun.name, NS, f.cidr);
      }
      server = nodeIn(
        NS,
        `
        import net from 'node:net';
        import { createHash } from 'node:crypto';
        const h = createHash('sha256');
        let n = 0;
        const srv = net.createServer((c) => {
          c.on('data', (d) => { h.update(d); n += d.length; });
          c.on('end', () => { process.stdout.write(JSON.stringify({ n, sha: h.digest('hex') }) + '\\n'); c.destroy(); srv.close(); });
        });
        let tries = 0;
        srv.on('error', (e) => { // the IPv6 address may still be tentative
          if (e.code === 'EADDRNOTAVAIL' && ++tries < 100) setTimeout(() => srv.listen(5000, process.argv[1]), 50);
          else throw e;
        });
        srv.listen(5000, process.argv[1], () => process.stdout.write('ready\\n'));
        setTimeout(() => process.exit(3), 30000).unref();`,
        [f.local],
      );
      await withTimeout(server.ready, 10_000, 'the server listens');

      const isn = 1_000_000;
      assert.equal(writeAll(tun, [segment(f, isn, 0, SYN)]), 1);
      const synAck = await readUntil(tun, f, (fl) => (fl & (SYN | ACK)) === (SYN | ACK));
      const ack = (synAck.seq + 1) >>> 0;
      let seq = isn + 1;
      assert.equal(writeAll(tun, [segment(f, seq, ack, ACK)]), 1);

      // 1: 50 full segments and a short one (within the kernel's first window), a PSH every
      // 20th: several groups in one batch.
      const data1 = randomBytes(50 * SEG + 300);
      const batch1: Buffer[] = [];
      for (let off = 0; off < data1.length; off += SEG) {
        const part = data1.subarray(off, Math.min(off + SEG, data1.length));
        const psh = (off / SEG) % 20 === 19 ? PSH : 0;
        batch1.push(segment(f, seq + off, ack, ACK | psh, part));
      }
      assert.equal(writeAll(tun, batch1), batch1.length);
      seq += data1.length;
      const merged = tun.mergeStats();
      // Groups end at each PSH; the short last segment ends the third group.
      assert.deepEqual(
        { packets: merged.packets, writes: merged.writes },
        { packets: 51, writes: 3 },
        'three packets: 20, 20 and 11 segments',
      );
      const end1 = seq >>> 0;
      await readUntil(tun, f, (fl, _s, a) => (fl & ACK) !== 0 && a === end1);

      // 2: 30 segments; the 10th has one payload byte changed after its checksum was made.
      const data2 = randomBytes(30 * SEG);
      const batch2: Buffer[] = [];
      for (let k = 0; k < 30; k++) {
        const p = segment(f, seq + k * SEG, ack, ACK, data2.subarray(k * SEG, (k + 1) * SEG));
        if (k === 9) p[p.length - 1] ^= 0xff;
        batch2.push(p);
      }
      writeAll(tun, batch2);
      // Nothing past the bad segment may be delivered before it is sent again, correctly.
      await new Promise((r) => setTimeout(r, 200));
      writeAll(tun, [segment(f, seq + 9 * SEG, ack, ACK, data2.subarray(9 * SEG, 10 * SEG))]);
      seq += data2.length;
      writeAll(tun, [segment(f, seq, ack, ACK | FIN)]);

      const result = (await withTimeout(server.result, 15_000, 'the stream ends')) as {
        n: number;
        sha: string;
      };
      const want = createHash('sha256').update(data1).update(data2).digest('hex');
      assert.equal(result.n, data1.length + data2.length, 'every byte once');
      assert.equal(result.sha, want, 'the bytes sent, in order, the bad segment never delivered');
      const stats = tun.stats();
      assert.equal(stats.txRejected, 0);
      // The bad segment stands alone; the 9 before and the 20 after it are coalesced.
      const after = tun.mergeStats();
      assert.deepEqual(
        { packets: after.packets, writes: after.writes },
        { packets: 51 + 29, writes: 5 },
        'coalesced around the bad segment',
      );
    } finally {
      server?.stop();
      tun.close();
    }
  });
}

/** Whether the IP header checksum (IPv4) and the TCP checksum of packet p hold. */
function checksumsHold(p: Buffer, f: Family): boolean {
  const ipLen = f.v6 ? 40 : 20;
  if (!f.v6 && fold(sum16(p, 0, 20)) !== 0xffff) return false;
  const tcpLen = p.length - ipLen;
  const src = p.subarray(f.v6 ? 8 : 12, f.v6 ? 24 : 16);
  const dst = p.subarray(f.v6 ? 24 : 16, f.v6 ? 40 : 20);
  const pseudo = sum16(src) + sum16(dst) + 6 + tcpLen;
  return fold(sum16(p, ipLen, p.length, pseudo)) === 0xffff;
}

for (const f of FAMILIES) {
  test(`IPv${f.v6 ? 6 : 4}: the kernel's TCP super-packets are read as MTU-sized segments with valid checksums`, async () => {
    sport++;
    const tun = NativeTunDevice.open(`${NS}r${f.v6 ? '6' : '4'}`, { vnetHdr: true });
    let server: NodeChild | undefined;
    const MTU = 1420;
    try {
      await runOk('ip', ['link', 'set', 'dev', tun.name, 'netns', NS]);
      if (f.v6) await runInOk(NS, 'sysctl', ['-qw', `net.ipv6.conf.${tun.name}.disable_ipv6=0`]);
      await runInOk(NS, 'ip', ['addr', 'add', f.cidr, 'dev', tun.name, ...(f.v6 ? ['nodad'] : [])]);
      await runInOk(NS, 'ip', ['link', 'set', 'dev', tun.name, 'mtu', String(MTU), 'up']);
      server = nodeIn(
        NS,
        `
        import net from 'node:net';
        import { createHash, randomBytes } from 'node:crypto';
        const data = randomBytes(Number(process.argv[2]));
        const srv = net.createServer((c) => {
          c.end(data, () => { process.stdout.write(JSON.stringify({ sha: createHash('sha256').update(data).digest('hex') }) + '\\n'); srv.close(); });
          c.on('error', () => {});
        });
        let tries = 0;
        srv.on('error', (e) => {
          if (e.code === 'EADDRNOTAVAIL' && ++tries < 100) setTimeout(() => srv.listen(5000, process.argv[1]), 50);
          else throw e;
        });
        srv.listen(5000, process.argv[1], () => process.stdout.write('ready\\n'));
        setTimeout(() => process.exit(3), 30000).unref();`,
        [f.local, String(400_000)],
      );
      await withTimeout(server.ready, 10_000, 'the server listens');
      const isn = 5_000_000;
      writeAll(tun, [segment(f, isn, 0, SYN)]);
      const synAck = await readUntil(tun, f, (fl) => (fl & (SYN | ACK)) === (SYN | ACK));
      let expected = (synAck.seq + 1) >>> 0;
      const seq = isn + 1;
      writeAll(tun, [segment(f, seq, expected, ACK)]);

      const ipLen = f.v6 ? 40 : 20;
      const chunks: Buffer[] = [];
      let bad = 0;
      let oversize = 0;
      let finished = false;
      const b = new PacketBatch(256, 2048, 0);
      const deadline = Date.now() + 15_000;
      while (!finished && Date.now() < deadline) {
        const n = tun.readBatch(b.slab, b.slotSize, b.headroom, b.capacity, b.lengths);
        let advanced = false;
        for (let i = 0; i < n; i++) {
          const p = Buffer.from(b.slab.subarray(b.offsets[i], b.offsets[i] + b.lengths[i]));
          if (p[0] >> 4 !== (f.v6 ? 6 : 4) || (f.v6 ? p[6] : p[9]) !== 6) continue;
          if (p.readUInt16BE(ipLen) !== 5000 || p.readUInt16BE(ipLen + 2) !== sport) continue;
          if (p.length > MTU) oversize++;
          if (!checksumsHold(p, f)) {
            bad++;
            continue;
          }
          const tcp = p.subarray(ipLen);
          const payload = tcp.subarray((tcp[12] >> 4) * 4);
          if (tcp.readUInt32BE(4) !== expected) continue; // a retransmission or a gap
          if (payload.length > 0) chunks.push(Buffer.from(payload));
          expected = (expected + payload.length) >>> 0;
          if (tcp[13] & FIN) {
            expected = (expected + 1) >>> 0;
            finished = true;
          }
          advanced = true;
        }
        if (advanced) writeAll(tun, [segment(f, seq, expected, ACK)]);
        if (n === 0) await new Promise((r) => setTimeout(r, 2));
      }
      writeAll(tun, [segment(f, seq, expected, ACK | FIN)]);
      const result = (await withTimeout(server.result, 15_000, 'the server ends')) as { sha: string };
      const got = Buffer.concat(chunks);
      assert.equal(bad, 0, 'every segment read has valid checksums');
      assert.equal(oversize, 0, 'no segment is larger than the MTU');
      assert.equal(got.length, 400_000);
      assert.equal(createHash('sha256').update(got).digest('hex'), result.sha);
      const m = tun.mergeStats();
      assert.ok(m.splitReads > 0, 'the kernel handed over super-packets');
      assert.ok(m.splitPackets > m.splitReads, `${m.splitPackets} segments from ${m.splitReads} reads`);
    } finally {
      server?.stop();
      tun.close();
    }
  });
}
