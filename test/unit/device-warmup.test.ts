// The data path warm-up (device/warmup.ts): a throwaway pair of engines with the native AEAD
// carries every packet of its round trips both ways (handshake, single packets, batches,
// timer ticks), leaves nothing behind that could fail a device start, and leaves a device's
// live packets in optimised code (checked in a child process with V8's test natives). Its
// second phase (device/warmup-io.ts) runs two devices over packet channels and loopback
// sockets; afterwards the pump and the handles are optimised too.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DATA_PLANE_NODE_ARGS } from '../../src/device/runtime.js';
import { WARMUP_ROUND_TRIPS, warmDataPath, warmDataPathInBackground } from '../../src/device/warmup.js';
import { keptWarmupDevices, warmDeviceIo } from '../../src/device/warmup-io.js';
import { logger } from '../../src/util/log.js';

const log = logger('test-device-warmup');

/**
 * Runs test/helpers/`file` in a child with V8's test natives, a gc and the data plane's flags,
 * and returns its JSON result line (the one starting with `prefix`).
 */
function runProbe(file: string, prefix: string): unknown {
  const probe = fileURLToPath(new URL(`../helpers/${file}`, import.meta.url));
  const r = spawnSync(
    process.execPath,
    ['--allow-natives-syntax', '--expose-gc', ...DATA_PLANE_NODE_ARGS, probe],
    { encoding: 'utf8', timeout: 120_000 },
  );
  assert.equal(r.status, 0, `probe failed: ${r.stderr.slice(-2000)}`);
  const line = r.stdout.split('\n').find((l) => l.startsWith(prefix));
  assert.ok(line, `no result from the probe: ${r.stdout.slice(-2000)}`);
  return JSON.parse(line);
}

/** Packets per direction: one per round trip, a batch of 16 on every 8th. */
function expected(roundTrips: number): number {
  const batches = Math.floor(roundTrips / 8);
  return 2 * (roundTrips - batches + batches * 16);
}

test('every warm-up packet is delivered, both ways', () => {
  const r = warmDataPath(log, 40);
  assert.equal(r.delivered, expected(40));
});

test('the default warm-up delivers everything and takes well under a few seconds', (t) => {
  const r = warmDataPath(log);
  assert.equal(r.delivered, expected(WARMUP_ROUND_TRIPS));
  t.diagnostic(`warm-up: ${WARMUP_ROUND_TRIPS} round trips in ${Math.round(r.ms)} ms`);
  assert.ok(r.ms < 20_000, `warm-up took ${r.ms} ms`);
});

test('repeated warm-ups are independent (fresh engines and keys each time)', () => {
  assert.equal(warmDataPath(log, 8).delivered, expected(8));
  assert.equal(warmDataPath(log, 8).delivered, expected(8));
});

test('the background warm-up runs in slices between other event-loop work', async () => {
  let turns = 0;
  let spinning = true;
  const spin = (): void => {
    turns++;
    if (spinning) setImmediate(spin);
  };
  setImmediate(spin);
  const r = await warmDataPathInBackground(log, 64, 4);
  spinning = false;
  assert.equal(r.delivered, expected(64));
  // 16 slices: the other work got at least one turn between consecutive slices.
  assert.ok(turns >= 15, `other work ran ${turns} turns during the warm-up`);
});

test('live packets of a device configured through its UAPI run the warmed code, even after a full collection', (t) => {
  // Regression: the warm-up's peers and keypairs had other hidden classes and field
  // representations than the ones `wg` configures (wrong map), its engines' arrays changed
  // elements kind on a new engine's first packet, and once the warm-up's objects were gone a
  // full collection discarded the code built for their classes (weak objects): each threw the
  // warmed code away and left the first several hundred live packets in baseline code.
  const { before, after, delivered } = runProbe('warmup-probe.js', '{"before"') as {
    before: string[];
    after: string[];
    delivered: number;
  };
  t.diagnostic(
    `optimised after the warm-up: ${before.join(', ')}; after the live packets: ${after.join(', ')}`,
  );
  assert.ok(delivered >= 90, `only ${delivered} of 100 live packets arrived`);
  // The warm-up's purpose: the per-packet engine functions are optimised before the first packet.
  for (const name of ['Engine.classify', 'Engine.openTransports', 'Engine.sendData', 'AllowedIps.lookup4'])
    assert.ok(before.includes(name), `${name} was not optimised by the warm-up`);
  const lost = before.filter((name) => !after.includes(name));
  assert.deepEqual(lost, [], `live packets or a collection deoptimised ${lost.join(', ')}`);
});

test('the device phase: round trips through two devices over packet channels and loopback, then kept closed', async (t) => {
  // A first run opens what a process keeps (wake placement's /proc/loadavg); a later one nothing.
  await warmDeviceIo(log, 10);
  const before = readdirSync('/proc/self/fd').length;
  const r = await warmDeviceIo(log, 40);
  t.diagnostic(`device phase: ${r.roundTrips} round trips in ${Math.round(r.ms)} ms (${r.ended})`);
  assert.equal(r.ended, 'done');
  assert.equal(r.roundTrips, 40);
  assert.equal(keptWarmupDevices(), 2);
  // Channels, sockets and their pollers are all closed: no fd is left behind.
  assert.equal(readdirSync('/proc/self/fd').length, before);
});

test('after both phases, the pump and the handles run optimised code from the first live packet on, also after a full collection', (t) => {
  // Regression: the pump's readiness path and the handle classes tiered up during the first
  // minute of a quiet tunnel, each compile (2-14 ms) in front of a waiting packet.
  const { io, before, after, delivered } = runProbe('warmup-io-probe.js', '{"io"') as {
    io: { ended: string; roundTrips: number };
    before: string[];
    after: string[];
    delivered: number;
  };
  t.diagnostic(
    `optimised after the warm-up: ${before.join(', ')}; after the live packets: ${after.join(', ')}`,
  );
  assert.equal(io.ended, 'done');
  assert.equal(delivered, 100);
  // The readiness path's entry (serveEvents, the reads, the engine calls and the sends are
  // inlined into it) and the handle methods it calls.
  for (const name of ['DevicePump.serve', 'NativeTunDevice.readBatch', 'NativeTunDevice.writeBatch'])
    assert.ok(before.includes(name), `${name} was not optimised by the warm-up`);
  const lost = before.filter((name) => !after.includes(name));
  assert.deepEqual(lost, [], `live packets or a collection deoptimised ${lost.join(', ')}`);
});
