// Hostile traffic at a running responder's UDP port, per pair from TG_DEVICE_IMPLS (see
// device-harness.ts): random bytes, truncated initiations, oversized messages, initiations
// with a wrong MAC1, replayed and tampered transport messages (at least 10,000 of each), and
// a flood of initiations with a valid MAC1 that must be answered with cookie replies. While
// and after it happens the tunnel passes ping and iperf3, the responder keeps the endpoint it
// learnt, and its RSS stays bounded. A tenguard responder must also count every bad datagram
// it read in its `dropped.*` counters (UAPI extension `get=tenguard-stats`).
//
// The attacker is a separate process in the initiator's namespace (another source port); the
// real transport messages it replays are captured with tcpdump on the responder's end of
// the wire (pcap on tcpdump's stdout, parsed in memory).
import assert from 'node:assert/strict';
import { after, before, describe, it, test } from 'node:test';
import { createTestbed, destroyTestbed, iperf, type Side, type Testbed } from '../../src/bench/testbed.js';
import {
  captureTransport,
  devicePid,
  devicePrefix,
  droppedTotal,
  type FloodKind,
  flood,
  onlyPeer,
  processAlive,
  receiverIndexOf,
  roles,
  rssKiB,
  selectCombinations,
  startPair,
  tenguardStats,
  udpCounters,
} from '../helpers/device-harness.js';
import { ping, pingStream, pingUntilReply } from '../helpers/ping.js';

const { combinations, note } = await selectCombinations();

const COUNT = 10_000;
/** The garbage floods are paced so that most datagrams reach the device rather than fill the
 * kernel's socket queue; the valid-MAC1 flood is not, it must overload the handshake path. */
const GARBAGE_PPS = 40_000;
const HANDSHAKE_FLOOD_COUNT = 20_000;
const RSS_GROWTH_LIMIT_KIB = 64 * 1024;
const MIN_MBPS = 10;

test('device hostile: implementation pairs covered', (t) => {
  t.diagnostic(note);
  assert.ok(combinations.length > 0, 'no implementation pair selected');
});

const GARBAGE: readonly { kind: FloodKind; what: string }[] = [
  { kind: 'random', what: 'random bytes of random lengths (0..1472)' },
  { kind: 'truncated-initiation', what: 'initiations truncated to 1..147 bytes' },
  { kind: 'oversized', what: 'oversized messages of 1500..65507 bytes' },
  { kind: 'wrong-mac1', what: 'initiations with a wrong MAC1' },
  { kind: 'replay', what: 'replayed transport messages' },
  { kind: 'tampered', what: 'transport messages with flipped bits' },
];

/** The device's drop counters once they stopped moving (the device drains its socket). */
async function settledDrops(s: Side): Promise<number> {
  let last = droppedTotal(await tenguardStats(s));
  const end = Date.now() + 3000;
  for (;;) {
    await new Promise((r) => setTimeout(r, 300));
    const now = droppedTotal(await tenguardStats(s));
    if (now === last || Date.now() > end) return now;
    last = now;
  }
}

for (const [index, combo] of combinations.entries()) {
  describe(`device hostile ${combo.name}`, () => {
    let tb: Testbed | undefined;
    let captured: Buffer[] = [];
    let pid = 0;
    let rssBase = 0;
    let rssMax = 0;
    let sampler: NodeJS.Timeout | undefined;
    const bed = (): Testbed => {
      assert.ok(tb, 'testbed was not created');
      return tb;
    };
    const countsDrops = combo.responder === 'tenguard';

    before(async () => {
      tb = await createTestbed(devicePrefix('h', index), { index });
      const { initiator, responder } = roles(tb);
      await startPair(tb, combo);
      assert.ok(await pingUntilReply(initiator.ns, responder.tunV4, 10_000), 'tunnel does not come up');
      captured = await captureTransport(responder.ns, responder.veth, responder.port, 32, 10_000, () =>
        ping(initiator.ns, responder.tunV4, { count: 50, intervalS: 0.02, waitS: 1 }),
      );
      pid = devicePid(responder);
      // Bulk traffic first, so that buffer pools the device grows for honest traffic are part
      // of the baseline and the bound below is about what the floods add.
      await iperf(initiator, responder, responder.tunV4, 2);
      rssBase = rssKiB(pid) ?? 0;
      rssMax = rssBase;
      sampler = setInterval(() => {
        rssMax = Math.max(rssMax, rssKiB(pid) ?? 0);
      }, 100);
    });
    after(async () => {
      clearInterval(sampler);
      if (tb) await destroyTestbed(tb);
    });

    it('captures real transport messages from the initiator to replay', () => {
      assert.ok(captured.length >= 16, `only ${captured.length} transport messages captured`);
      const receiver = receiverIndexOf(captured[0]);
      for (const p of captured) {
        assert.equal(p.readUInt32LE(0), 4, 'not a transport message');
        assert.equal(receiverIndexOf(p), receiver, 'transport messages for more than one session');
        assert.ok(p.length >= 32 && p.length % 16 === 0, `transport message of ${p.length} bytes`);
      }
    });

    for (const { kind, what } of GARBAGE) {
      it(`${COUNT} ${what}: dropped, while the tunnel passes ping`, async (t) => {
        const { initiator, responder } = roles(bed());
        const drops0 = countsDrops ? await settledDrops(responder) : 0;
        const udp0 = await udpCounters(responder.ns);
        const meanwhile = pingStream(initiator.ns, responder.tunV4, 0.1, 60);
        const r = await flood(initiator.ns, {
          kind,
          address: responder.wireV4,
          port: responder.port,
          count: COUNT,
          pps: GARBAGE_PPS,
          responderPublicKey: responder.publicKey,
          packets: captured.map((p) => p.toString('hex')),
          receiverIndex: captured.length > 0 ? receiverIndexOf(captured[0]) : undefined,
        });
        await new Promise((res) => setTimeout(res, 300));
        const pings = await meanwhile.stop();
        const udp1 = await udpCounters(responder.ns);
        const read = udp1.inDatagrams - udp0.inDatagrams;
        t.diagnostic(
          `${kind}: sent ${r.sent} in ${r.elapsedMs} ms (${r.socket}), device read ${read}, ` +
            `kernel dropped ${udp1.rcvbufErrors - udp0.rcvbufErrors} for want of room, ` +
            `ping ${pings.received}/${pings.transmitted}, answers ${r.answers}`,
        );
        assert.ok(r.sent >= COUNT, `only ${r.sent} sent`);
        // Most of the flood must have reached the device, or it tested the kernel only.
        assert.ok(read >= COUNT / 2, `the device read only ${read} datagrams`);
        assert.equal(r.answers, 0, `the device answered ${r.answers} bad datagrams`);
        assert.ok(pings.transmitted >= 2, 'background ping did not run');
        assert.ok(
          pings.received >= pings.transmitted / 2,
          `during the flood ${pings.received}/${pings.transmitted} pings came back`,
        );
        assert.ok(processAlive(pid), 'the responder died');
        if (countsDrops) {
          // Every datagram the device read that was not tunnel traffic (at most the pings,
          // their possible retries and a keepalive or two) must show up as a counted drop.
          const dropped = (await settledDrops(responder)) - drops0;
          t.diagnostic(`${kind}: tenguard dropped.* grew by ${dropped}`);
          assert.ok(
            dropped >= read - pings.transmitted - 10,
            `device read ${read} datagrams but dropped.* grew by ${dropped}`,
          );
        }
      });
    }

    it(`${HANDSHAKE_FLOOD_COUNT} initiations with a valid MAC1: answered with cookie replies`, async (t) => {
      const { initiator, responder } = roles(bed());
      const meanwhile = pingStream(initiator.ns, responder.tunV4, 0.1, 60);
      const r = await flood(initiator.ns, {
        kind: 'valid-mac1',
        address: responder.wireV4,
        port: responder.port,
        count: HANDSHAKE_FLOOD_COUNT,
        responderPublicKey: responder.publicKey,
        lingerMs: 500,
      });
      const pings = await meanwhile.stop();
      t.diagnostic(
        `valid-mac1: sent ${r.sent} in ${r.elapsedMs} ms (${r.socket}); ${r.cookieReplies} cookie replies ` +
          `of ${r.answers} answers, ${r.cookiesValid}/${r.cookiesChecked} checked ones open; ` +
          `ping ${pings.received}/${pings.transmitted}`,
      );
      assert.ok(r.sent >= HANDSHAKE_FLOOD_COUNT, `only ${r.sent} sent`);
      assert.ok(r.cookieReplies > 0, 'no cookie reply (type 3, 64 bytes) under a handshake flood');
      assert.ok(r.cookiesChecked > 0, 'no cookie reply named one of our initiations as receiver');
      assert.equal(
        r.cookiesValid,
        r.cookiesChecked,
        'cookie replies that do not open with the MAC1 they answer',
      );
      assert.equal(r.answers, r.cookieReplies, 'answers other than cookie replies to garbage initiations');
      assert.ok(
        pings.received >= pings.transmitted / 2,
        `during the flood ${pings.received}/${pings.transmitted} pings came back`,
      );
    });

    it('afterwards: ping both ways, RSS bounded, the learnt endpoint unchanged, iperf3', async (t) => {
      const { initiator, responder } = roles(bed());
      const there = await ping(initiator.ns, responder.tunV4, { count: 5 });
      assert.equal(there.received, 5, `initiator -> responder ${there.received}/5`);
      const back = await ping(responder.ns, initiator.tunV4, { count: 3 });
      assert.equal(back.received, 3, `responder -> initiator ${back.received}/3`);
      clearInterval(sampler);
      rssMax = Math.max(rssMax, rssKiB(pid) ?? 0);
      t.diagnostic(`responder RSS ${rssBase} KiB after warm-up, at most ${rssMax} KiB during the floods`);
      assert.ok(rssBase > 0, 'no RSS reading of the responder');
      assert.ok(rssMax - rssBase < RSS_GROWTH_LIMIT_KIB, `RSS grew by ${rssMax - rssBase} KiB`);
      // Replays, tampered messages and garbage came from another port: none may move the peer.
      assert.equal((await onlyPeer(responder)).endpoint, `${initiator.wireV4}:${initiator.port}`);
      const perf = await iperf(initiator, responder, responder.tunV4, 2);
      t.diagnostic(`iperf3 after the floods: ${perf.mbps.toFixed(1)} Mbit/s`);
      assert.ok(perf.mbps >= MIN_MBPS, `iperf3 ${perf.mbps.toFixed(1)} Mbit/s < ${MIN_MBPS}`);
      assert.ok(processAlive(pid), 'the responder died');
    });
  });
}
