// The data path warm-up (device/warmup.ts): a throwaway pair of engines with the native AEAD
// carries every packet of its round trips both ways (handshake, single packets, batches,
// timer ticks), and leaves nothing behind that could fail a device start.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WARMUP_ROUND_TRIPS, warmDataPath, warmDataPathInBackground } from '../../src/device/warmup.js';
import { logger } from '../../src/util/log.js';

const log = logger('test-device-warmup');

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
