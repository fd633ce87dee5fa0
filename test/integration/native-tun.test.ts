// The native TUN device against the real kernel: a TUN opened here and moved into a
// namespace of its own (100.64.250.1/24), datagrams sent inside the namespace read back in
// batches through readiness callbacks, packets written back delivered to a socket in the
// namespace, and the documented EBADFD after `ip link del`. Root only.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { parseIPv4Udp, writeIPv4Udp } from '../../src/bench/packets.js';
import { NativeTunDevice, PacketBatch } from '../../src/native/index.js';
import { runInOk } from '../../src/util/exec.js';
import {
  countOpenFds,
  createNamespace,
  deleteNamespace,
  ENDPOINT_MODULE_URL,
  linkExists,
  moveTunInto,
  NATIVE_MODULE_URL,
  nodeIn,
  uniqueName,
} from '../helpers/native-netns.js';

const NS = uniqueName('tgnat');
const TUN_ADDR = '100.64.250.1';
const PEER_ADDR = '100.64.250.2'; // routed into the TUN by the /24
const N = 2000;

before(() => createNamespace(NS));
after(() => deleteNamespace(NS));

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

test('datagrams sent inside the namespace are read back in batches through readiness', async () => {
  const tun = NativeTunDevice.open(`${NS}t`);
  try {
    assert.equal(tun.name, `${NS}t`);
    await moveTunInto(tun.name, NS, `${TUN_ADDR}/24`);
    // Sent while nobody reads: they wait in the TUN queue (txqueuelen 4096), so the first
    // readiness callback finds a backlog and must drain it in several batches.
    const sender = `
      const s = require('node:dgram').createSocket('udp4');
      const n = Number(process.argv[1]);
      s.bind(7777, '${TUN_ADDR}', () => {
        let left = n;
        for (let i = 0; i < n; i++) {
          const b = Buffer.alloc(64);
          b.write('TGMARK', 0);
          b.writeUInt32BE(i, 6);
          s.send(b, 9999, '${PEER_ADDR}', (e) => { if (e) throw e; if (--left === 0) s.close(); });
        }
      });`;
    await runInOk(NS, process.execPath, ['-e', sender, String(N)], { timeoutMs: 30_000 });

    const batch = new PacketBatch(128);
    const seen = new Set<number>();
    const perCall: number[] = [];
    let others = 0;
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        tun.start((err) => {
          if (err) return reject(err);
          for (
            let n = tun.readBatch(batch.slab, batch.slotSize, batch.headroom, 128, batch.lengths);
            n > 0;
          ) {
            perCall.push(n);
            for (let i = 0; i < n; i++) {
              const u = parseIPv4Udp(batch.slab, batch.offsets[i], batch.lengths[i]);
              if (u === null || u.dst !== PEER_ADDR || u.dport !== 9999) {
                others++;
                continue;
              }
              assert.equal(u.src, TUN_ADDR);
              assert.equal(batch.slab.toString('latin1', u.payloadAt, u.payloadAt + 6), 'TGMARK');
              seen.add(batch.slab.readUInt32BE(u.payloadAt + 6));
            }
            n = tun.readBatch(batch.slab, batch.slotSize, batch.headroom, 128, batch.lengths);
          }
          if (seen.size === N) resolve();
        });
      }),
      10_000,
      `reading ${N} packets (got ${seen.size})`,
    );
    tun.stop();
    assert.equal(seen.size, N, 'every marker read exactly once');
    assert.ok(
      Math.max(...perCall) > 1,
      `more than one packet per readBatch (per call: ${perCall.slice(0, 10)})`,
    );
    assert.ok(Math.max(...perCall) <= 128, 'never more than max');
    assert.equal(others, 0, 'nothing else crossed the TUN');
    assert.deepEqual(tun.stats(), {
      rxTruncated: 0,
      rxErrors: 0,
      rxStale: 0,
      txDropped: 0,
      txRejected: 0,
      lastError: null,
    });
  } finally {
    tun.close();
  }
});

test('packets written with writeBatch arrive at a socket inside the namespace', async () => {
  const tun = NativeTunDevice.open(`${NS}w`);
  const M = 1000;
  // The receiver is tenguard's own batched socket, run by a child node inside the namespace.
  const receiver = nodeIn(
    NS,
    `
    const { NativeUdpSocket, PacketBatch } = await import(process.argv[1]);
    const { decodeEndpoint, ENDPOINT_SIZE } = await import(process.argv[2]);
    const want = Number(process.argv[3]);
    const sock = NativeUdpSocket.open({ address: '${TUN_ADDR}', port: 9998 });
    const b = new PacketBatch(128);
    const markers = new Set();
    const sources = new Set();
    let count = 0;
    const finish = () => {
      const stats = sock.stats();
      sock.close();
      process.stdout.write(JSON.stringify({ count, distinct: markers.size, sources: [...sources], stats }) + '\\n');
      process.exit(0);
    };
    sock.start((err) => {
      if (err) throw err;
      for (let n; (n = sock.recvBatch(b.slab, b.slotSize, b.headroom, 128, b.lengths, b.endpoints)) > 0; ) {
        for (let i = 0; i < n; i++) {
          const p = b.packet(i);
          if (p.toString('latin1', 0, 6) !== 'TGBACK') continue;
          markers.add(p.readUInt32BE(6));
          sources.add(decodeEndpoint(b.endpoints, i * ENDPOINT_SIZE));
          count++;
        }
      }
      if (count >= want) finish();
    });
    setTimeout(finish, 10000);
    process.stdout.write('ready\\n');`,
    [NATIVE_MODULE_URL, ENDPOINT_MODULE_URL, String(M)],
  );
  try {
    await moveTunInto(tun.name, NS, `${TUN_ADDR}/24`);
    await withTimeout(receiver.ready, 10_000, 'receiver start');
    const batch = new PacketBatch(128);
    const payload = Buffer.alloc(32);
    payload.write('TGBACK', 0);
    let written = 0;
    for (let sent = 0; sent < M; ) {
      const n = Math.min(128, M - sent);
      for (let i = 0; i < n; i++) {
        payload.writeUInt32BE(sent + i, 6);
        batch.lengths[i] = writeIPv4Udp(
          batch.slab,
          batch.offsets[i],
          { src: PEER_ADDR, dst: TUN_ADDR, sport: 7777, dport: 9998 },
          payload,
        );
      }
      written += tun.writeBatch(batch.slab, batch.offsets, batch.lengths, n);
      sent += n;
    }
    assert.equal(written, M);
    const r = (await withTimeout(receiver.result, 15_000, 'receiver result')) as {
      count: number;
      distinct: number;
      sources: string[];
    };
    assert.equal(r.count, M);
    assert.equal(r.distinct, M);
    assert.deepEqual(r.sources, [`${PEER_ADDR}:7777`]);
  } finally {
    receiver.stop();
    tun.close();
  }
});

test('writeBatch counts packets the kernel refuses instead of throwing', async () => {
  const tun = NativeTunDevice.open(`${NS}r`);
  try {
    await moveTunInto(tun.name, NS, '100.64.251.1/24');
    const batch = new PacketBatch(3);
    batch.slab.fill(0); // version nibble 0: not IP
    batch.lengths.set([40, 0, 40]);
    batch.lengths[2] = writeIPv4Udp(
      batch.slab,
      batch.offsets[2],
      { src: '100.64.251.2', dst: '100.64.251.1', sport: 1, dport: 9 },
      Buffer.alloc(8),
    );
    assert.equal(tun.writeBatch(batch.slab, batch.offsets, batch.lengths, 3), 1);
    assert.equal(tun.stats().txRejected, 2);
    assert.equal(tun.stats().lastError, 'EINVAL');
  } finally {
    tun.close();
  }
});

test('after ip link del, readiness and I/O report EBADFD and close still releases everything', async () => {
  const tun = NativeTunDevice.open(`${NS}d`);
  try {
    await moveTunInto(tun.name, NS, '100.64.252.1/24');
    const failed = new Promise<Error & { code?: string }>((resolve) => {
      tun.start((err) => {
        if (err) resolve(err);
      });
    });
    await runInOk(NS, 'ip', ['link', 'del', 'dev', tun.name]);
    const err = await withTimeout(failed, 5_000, 'readiness error after ip link del');
    assert.equal(err.code, 'EBADFD');
    const b = new PacketBatch(4);
    assert.throws(() => tun.readBatch(b.slab, b.slotSize, b.headroom, 4, b.lengths), {
      code: 'EBADFD',
      syscall: 'read',
    });
    b.lengths[0] = writeIPv4Udp(
      b.slab,
      b.offsets[0],
      { src: '100.64.252.2', dst: '100.64.252.1', sport: 1, dport: 9 },
      Buffer.alloc(8),
    );
    assert.throws(() => tun.writeBatch(b.slab, b.offsets, b.lengths, 1), {
      code: 'EBADFD',
      syscall: 'write',
    });
  } finally {
    tun.close();
  }
  tun.close();
  assert.equal(tun.fd, -1);
  assert.throws(() => tun.start(() => {}), { code: 'EBADF' });
});

test('open/start/close cycles leak no fd and remove the interface; multi-queue opens share a name', async () => {
  const fdsBefore = await countOpenFds();
  for (let i = 0; i < 20; i++) {
    const tun = NativeTunDevice.open(`${NS}c`);
    tun.start(() => {});
    if (i % 2 === 0) tun.stop();
    tun.close();
  }
  assert.equal(await countOpenFds(), fdsBefore);
  assert.equal(await linkExists(`${NS}c`), false, 'a closed non-persistent TUN disappears');

  const q1 = NativeTunDevice.open(`${NS}m`, { multiQueue: true });
  const q2 = NativeTunDevice.open(`${NS}m`, { multiQueue: true });
  try {
    assert.equal(q1.name, q2.name);
    assert.notEqual(q1.fd, q2.fd);
  } finally {
    q1.close();
    q2.close();
  }
  const pattern = NativeTunDevice.open('tgnat%d');
  try {
    assert.match(pattern.name, /^tgnat\d+$/, 'the kernel resolves a name pattern');
  } finally {
    pattern.close();
  }
  assert.throws(() => NativeTunDevice.open('x'.repeat(16)), { code: 'TG_ERR_INVALID_ARGUMENT' });
});
