// Rekeying under steady traffic, per pair from TG_DEVICE_IMPLS (see device-harness.ts): a
// ping every 0.2 s for 130 s crosses REKEY_AFTER_TIME (120 s), so the initiator must run a
// second handshake, and the stream must not stall while it does. The pairs run at the same
// time (each in its own testbed), so the file takes about 135 s whatever their number.
import assert from 'node:assert/strict';
import { after, describe, it, test } from 'node:test';
import { createTestbed, destroyTestbed, type Testbed } from '../../src/bench/testbed.js';
import { REKEY_AFTER_TIME } from '../../src/protocol/constants.js';
import {
  devicePrefix,
  largestGap,
  onlyPeer,
  roles,
  selectCombinations,
  startPair,
} from '../helpers/device-harness.js';
import { ping } from '../helpers/ping.js';

const { combinations, note } = await selectCombinations();

const INTERVAL_S = 0.2;
const STREAM_S = 130;
const COUNT = Math.round(STREAM_S / INTERVAL_S);
/** Handshake times are whole seconds; the rekey starts with the first packet sent after 120 s. */
const GRACE_S = 2;
/** The longest pause between two replies: ~1 s of silence on top of the ping interval. */
const MAX_GAP_S = 1 + INTERVAL_S;

const testbeds: Testbed[] = [];
after(async () => {
  for (const tb of testbeds) await destroyTestbed(tb);
});

test('device rekey: implementation pairs covered [slow]', (t) => {
  t.diagnostic(note);
  assert.ok(combinations.length > 0, 'no implementation pair selected');
});

describe('device rekey', { concurrency: true }, () => {
  for (const [index, combo] of combinations.entries()) {
    it(`${combo.name}: a second handshake after ${REKEY_AFTER_TIME / 1000} s under a ${STREAM_S} s ping stream, no gap over ${MAX_GAP_S} s [slow]`, {
      timeout: (STREAM_S + 40) * 1000,
    }, async (t) => {
      const tb = await createTestbed(devicePrefix('r', index), { index });
      testbeds.push(tb);
      const { initiator, responder } = roles(tb);
      await startPair(tb, combo);
      const first = await ping(initiator.ns, responder.tunV4, { count: 1, waitS: 2 });
      assert.equal(first.received, 1, 'no reply to the first ping');
      const [i0, r0] = [await onlyPeer(initiator), await onlyPeer(responder)];
      assert.ok(i0.latestHandshake > 0 && r0.latestHandshake > 0, 'no first handshake');

      const stream = await ping(initiator.ns, responder.tunV4, {
        count: COUNT,
        intervalS: INTERVAL_S,
        waitS: 1,
      });
      const [i1, r1] = [await onlyPeer(initiator), await onlyPeer(responder)];
      const gap = largestGap(stream.replyTimes);
      t.diagnostic(
        `${combo.name}: ${stream.received}/${stream.transmitted} replies, largest gap ${gap.toFixed(2)} s; ` +
          `handshakes initiator ${i0.latestHandshake} -> ${i1.latestHandshake}, ` +
          `responder ${r0.latestHandshake} -> ${r1.latestHandshake}`,
      );
      assert.equal(stream.transmitted, COUNT, 'the stream did not run to the end');
      assert.equal(stream.replyTimes.length, stream.received, 'reply times not parsed');
      assert.ok(stream.received >= COUNT - 5, `${COUNT - stream.received} of ${COUNT} pings lost`);
      assert.ok(gap <= MAX_GAP_S, `the stream stalled for ${gap.toFixed(2)} s`);
      const rekey = REKEY_AFTER_TIME / 1000;
      for (const [who, before, now] of [
        ['initiator', i0.latestHandshake, i1.latestHandshake],
        ['responder', r0.latestHandshake, r1.latestHandshake],
      ] as const) {
        assert.ok(
          now - before >= rekey - GRACE_S,
          `${who}: latest handshake advanced by ${now - before} s, expected about ${rekey} s`,
        );
        assert.ok(now - before <= STREAM_S + GRACE_S, `${who}: latest handshake in the future`);
      }
    });
  }
});
