// Interoperability of WireGuard devices driven exactly as an operator drives wireguard-go
// (`wg` and `ip` only), for every pair selected by TG_DEVICE_IMPLS (see device-harness.ts):
// ping both ways with IPv4 and IPv6 inside the tunnel, IPv6 as the outer transport, an
// iperf3 transfer, `wg show dump` counters, and preshared keys that match and that do not.
// The responder never has an endpoint for the initiator: every test also proves that it
// learns it from the handshake.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it, test } from 'node:test';
import { createTestbed, destroyTestbed, iperf, type Testbed } from '../../src/bench/testbed.js';
import {
  devicePrefix,
  onlyPeer,
  presharedKey,
  roles,
  selectCombinations,
  startPair,
  stopPair,
} from '../helpers/device-harness.js';
import { ping } from '../helpers/ping.js';

const { combinations, note } = await selectCombinations();

/** Below this an iperf3 run through the tunnel counts as not working. */
const MIN_MBPS = 10;
const MIB = 1024 * 1024;

test('device interop: implementation pairs covered', (t) => {
  t.diagnostic(note);
  assert.ok(combinations.length > 0, 'no implementation pair selected');
});

/** Pings and asserts every echo came back. */
async function pingsAll(ns: string, target: string, what: string, count = 3): Promise<void> {
  const r = await ping(ns, target, { count });
  assert.equal(r.transmitted, count, `${what}: ping did not run`);
  assert.equal(r.received, count, `${what}: ${r.received}/${count} replies`);
}

for (const [index, combo] of combinations.entries()) {
  describe(`device interop ${combo.name}`, () => {
    let tb: Testbed | undefined;
    const bed = (): Testbed => {
      assert.ok(tb, 'testbed was not created');
      return tb;
    };

    before(async () => {
      tb = await createTestbed(devicePrefix('i', index), { index });
    });
    afterEach(async () => {
      if (tb) await stopPair(tb);
    });
    after(async () => {
      if (tb) await destroyTestbed(tb);
    });

    it('IPv4 outer: ping both ways with IPv4 and IPv6 inside; the responder learns the endpoint', async () => {
      const { initiator, responder } = roles(bed());
      await startPair(bed(), combo);
      const [i0, r0] = [await onlyPeer(initiator), await onlyPeer(responder)];
      assert.equal(i0.latestHandshake, 0, 'initiator reports a handshake before any traffic');
      assert.equal(r0.latestHandshake, 0, 'responder reports a handshake before any traffic');
      assert.equal(r0.endpoint, null, 'responder was configured without an endpoint');
      assert.equal(i0.endpoint, `${responder.wireV4}:${responder.port}`);

      await pingsAll(
        initiator.ns,
        responder.tunV4,
        'initiator -> responder, IPv4 (first packets start the handshake)',
      );
      await pingsAll(responder.ns, initiator.tunV4, 'responder -> initiator, IPv4');
      await pingsAll(initiator.ns, responder.tunV6, 'initiator -> responder, IPv6');
      await pingsAll(responder.ns, initiator.tunV6, 'responder -> initiator, IPv6');

      const r1 = await onlyPeer(responder);
      assert.equal(r1.endpoint, `${initiator.wireV4}:${initiator.port}`, 'endpoint learnt by the responder');
      assert.equal(r1.publicKey, initiator.publicKey);
      assert.deepEqual([...r1.allowedIps].sort(), [`${initiator.tunV4}/32`, `${initiator.tunV6}/128`].sort());
    });

    it('iperf3 TCP for 3 s; wg show dump reports the handshake and growing byte counters on both ends', async (t) => {
      const { initiator, responder } = roles(bed());
      const started = Math.floor(Date.now() / 1000);
      await startPair(bed(), combo);
      await pingsAll(initiator.ns, responder.tunV4, 'initiator -> responder before iperf3');
      const [i0, r0] = [await onlyPeer(initiator), await onlyPeer(responder)];
      const result = await iperf(initiator, responder, responder.tunV4, 3);
      const [i1, r1] = [await onlyPeer(initiator), await onlyPeer(responder)];
      t.diagnostic(
        `${combo.name}: iperf3 ${result.mbps.toFixed(1)} Mbit/s, ${result.retransmits} retransmits`,
      );
      assert.ok(result.mbps >= MIN_MBPS, `iperf3 ${result.mbps.toFixed(1)} Mbit/s < ${MIN_MBPS}`);

      const now = Math.ceil(Date.now() / 1000);
      for (const [who, p] of [
        ['initiator', i1],
        ['responder', r1],
      ] as const) {
        assert.ok(
          p.latestHandshake >= started - 1 && p.latestHandshake <= now + 1,
          `${who}: latest handshake ${p.latestHandshake} not within [${started}, ${now}]`,
        );
      }
      // Bulk data goes initiator -> responder, acknowledgements the other way.
      assert.ok(i1.txBytes - i0.txBytes >= MIB, `initiator tx grew by ${i1.txBytes - i0.txBytes} bytes only`);
      assert.ok(r1.rxBytes - r0.rxBytes >= MIB, `responder rx grew by ${r1.rxBytes - r0.rxBytes} bytes only`);
      assert.ok(i1.rxBytes > i0.rxBytes, 'initiator rx did not grow');
      assert.ok(r1.txBytes > r0.txBytes, 'responder tx did not grow');
      // What one side sent, the other received, less what was lost on the way (the two
      // implementations may count handshake messages differently: a few KiB of slack).
      assert.ok(r1.rxBytes <= i1.txBytes + 4096, `responder rx ${r1.rxBytes} > initiator tx ${i1.txBytes}`);
      assert.ok(
        r1.rxBytes >= i1.txBytes / 2,
        `responder rx ${r1.rxBytes} far below initiator tx ${i1.txBytes}`,
      );
      t.diagnostic(`${combo.name}: initiator tx ${i1.txBytes} B, responder rx ${r1.rxBytes} B`);
    });

    it('IPv6 outer transport: ping both ways; the responder learns the IPv6 endpoint', async () => {
      const { initiator, responder } = roles(bed());
      await startPair(bed(), combo, { v6Outer: true });
      assert.equal((await onlyPeer(initiator)).endpoint, `[${responder.wireV6}]:${responder.port}`);
      await pingsAll(initiator.ns, responder.tunV4, 'initiator -> responder, IPv4 in IPv6');
      await pingsAll(responder.ns, initiator.tunV4, 'responder -> initiator, IPv4 in IPv6');
      await pingsAll(initiator.ns, responder.tunV6, 'initiator -> responder, IPv6 in IPv6');
      await pingsAll(responder.ns, initiator.tunV6, 'responder -> initiator, IPv6 in IPv6');
      assert.equal((await onlyPeer(responder)).endpoint, `[${initiator.wireV6}]:${initiator.port}`);
    });

    it('the same preshared key on both ends: traffic passes', async () => {
      const { initiator, responder } = roles(bed());
      const psk = presharedKey();
      await startPair(bed(), combo, { psk: { initiator: psk, responder: psk } });
      const [i0, r0] = [await onlyPeer(initiator), await onlyPeer(responder)];
      assert.ok(
        i0.pskDigest !== null && i0.pskDigest === r0.pskDigest,
        'wg show does not report the same PSK',
      );
      await pingsAll(initiator.ns, responder.tunV4, 'initiator -> responder with PSK');
      await pingsAll(responder.ns, initiator.tunV4, 'responder -> initiator with PSK');
      assert.ok((await onlyPeer(responder)).latestHandshake > 0, 'responder reports no handshake');
    });

    it('different preshared keys: no handshake completes and no traffic passes', async () => {
      const { initiator, responder } = roles(bed());
      await startPair(bed(), combo, { psk: { initiator: presharedKey(), responder: presharedKey() } });
      const there = await ping(initiator.ns, responder.tunV4, { count: 3, intervalS: 0.5, waitS: 1 });
      assert.equal(there.transmitted, 3, 'ping did not run');
      assert.equal(there.received, 0, 'a packet crossed despite mismatched PSKs');
      const back = await ping(responder.ns, initiator.tunV4, { count: 2, intervalS: 0.5, waitS: 1 });
      assert.equal(back.received, 0, 'a packet crossed back despite mismatched PSKs');
      assert.equal((await onlyPeer(initiator)).latestHandshake, 0, 'initiator completed a handshake');
      assert.equal((await onlyPeer(responder)).latestHandshake, 0, 'responder completed a handshake');
    });
  });
}
