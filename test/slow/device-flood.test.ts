// A `tenguard device` under a handshake flood (whitepaper section 5.3; issue 11's "Done when"):
// for 20 s a sender in a third namespace sends 3,000 initiations a second with a valid MAC1
// for the responder's public key, from a spoofed source address (one nobody on the link owns,
// so the responder's cookie replies go nowhere). Meanwhile new sessions start from the
// initiator: the first packet of each passes within 2 s. The responder's
// `get=tenguard-stats` counters show the flood: cookie replies sent (a few a second, not one
// per initiation), initiations dropped on arrival, and no Diffie-Hellman work for them.
//
//   <p>-a (initiator) ==wire== <p>-b (responder) ==flood link== <p>-f (sender, spoofs .99)
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import {
  addNamespace,
  configureAddresses,
  configureWg,
  createTestbed,
  destroyTestbed,
  type Side,
  startDevice,
  type Testbed,
} from '../../src/bench/testbed.js';
import { listNamespaces } from '../../src/lab/index.js';
import { runIn, runInOk, runOk } from '../../src/util/exec.js';
import {
  type FloodResult,
  flood,
  TUNNEL_MTU,
  tenguardStats,
  udpCounters,
} from '../helpers/device-harness.js';

const FLOOD_PPS = 3000;
const FLOOD_SECONDS = 20;
const FIRST_PACKET_LIMIT_MS = 2000;
/** New sessions start this many seconds into the flood. */
const SESSION_STARTS_S = [4, 10, 16];

const prefix = `tgfl${randomBytes(3).toString('hex').slice(0, 4)}`;
const FLOOD_SUBNET = '198.18.250';
const SPOOFED = `${FLOOD_SUBNET}.99`;
let tb: Testbed | undefined;
let floodNs = '';

const bed = (): Testbed => {
  assert.ok(tb, 'testbed was not created');
  return tb;
};

/** Round trip of one ping (its first packet starts the session), in ms; NaN when lost. */
async function firstPacketMs(from: Side, to: Side): Promise<number> {
  const r = await runIn(from.ns, 'ping', ['-n', '-c', '1', '-W', '5', to.tunV4], { timeoutMs: 15_000 });
  const m = /time=([\d.]+) ms/.exec(r.stdout);
  return m ? Number(m[1]) : Number.NaN;
}

/**
 * The sender's source address is one the responder's side of the link sends to a hardware
 * address nobody has: what the responder answers never arrives anywhere, as for a spoofed
 * source. (The kernel will not send from an address the namespace does not own without
 * IP_TRANSPARENT, which node's sockets cannot set; a local address with a dead neighbour
 * entry is the same thing from the responder's side.)
 */
async function spoofedSource(responderNs: string, responderIf: string, senderNs: string, senderIf: string) {
  await runInOk(senderNs, 'ip', ['addr', 'add', `${SPOOFED}/32`, 'dev', senderIf]);
  await runInOk(responderNs, 'ip', [
    'neigh',
    'replace',
    SPOOFED,
    'lladdr',
    '02:00:5e:00:00:99',
    'dev',
    responderIf,
    'nud',
    'permanent',
  ]);
}

/** Forgets the initiator's session: the peer is removed and added again, as an operator would. */
async function newSession(initiator: Side, responder: Side): Promise<void> {
  await runInOk(initiator.ns, 'wg', ['set', initiator.tun, 'peer', responder.publicKey, 'remove']);
  await configureWg(initiator, responder, {});
}

before(async () => {
  assert.deepEqual(
    listNamespaces().filter((n) => n.startsWith(prefix)),
    [],
  );
  tb = await createTestbed(prefix, { index: 7 });
  const { a, b } = tb;
  await startDevice(a, 'tenguard');
  await startDevice(b, 'tenguard');
  await configureWg(a, b, {});
  await configureWg(b, a, { endpoint: false });
  await configureAddresses(a.ns, a, TUNNEL_MTU);
  await configureAddresses(b.ns, b, TUNNEL_MTU);
  // The flood's own link into the responder's namespace.
  floodNs = await addNamespace(tb, 'f');
  const fv = `${prefix}fv`;
  const bv = `${prefix}fb`;
  await runOk('ip', ['link', 'add', fv, 'netns', floodNs, 'type', 'veth', 'peer', 'name', bv, 'netns', b.ns]);
  await runInOk(b.ns, 'ip', ['addr', 'add', `${FLOOD_SUBNET}.1/24`, 'dev', bv]);
  await runInOk(b.ns, 'ip', ['link', 'set', bv, 'up']);
  await runInOk(floodNs, 'ip', ['addr', 'add', `${FLOOD_SUBNET}.2/24`, 'dev', fv]);
  await runInOk(floodNs, 'ip', ['link', 'set', fv, 'up']);
  await spoofedSource(b.ns, bv, floodNs, fv);
});

after(async () => {
  if (tb) await destroyTestbed(tb);
  assert.deepEqual(
    listNamespaces().filter((n) => n.startsWith(prefix)),
    [],
    'namespaces left behind',
  );
});

test(`tenguard device: new sessions carry their first packet within ${FIRST_PACKET_LIMIT_MS} ms during a ${FLOOD_SECONDS} s flood of ${FLOOD_PPS} valid-MAC1 initiations/s from a spoofed source`, {
  timeout: 120_000,
}, async (t) => {
  const { a, b } = bed();
  const calm = await firstPacketMs(a, b);
  assert.ok(Number.isFinite(calm), 'no session without a flood');
  const before = await tenguardStats(b);
  const udp0 = await udpCounters(b.ns);
  const started = performance.now();
  const running: Promise<FloodResult> = flood(floodNs, {
    kind: 'valid-mac1',
    address: `${FLOOD_SUBNET}.1`,
    port: b.port,
    count: FLOOD_PPS * FLOOD_SECONDS,
    pps: FLOOD_PPS,
    maxMs: (FLOOD_SECONDS + 5) * 1000,
    responderPublicKey: b.publicKey,
    source: SPOOFED,
    sourcePort: 51820,
    lingerMs: 200,
  });
  const delays: number[] = [];
  const underLoad: number[] = [];
  for (const at of SESSION_STARTS_S) {
    const wait = at * 1000 - (performance.now() - started);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    underLoad.push((await tenguardStats(b)).get('handshake.underLoad') ?? -1);
    await newSession(a, b);
    delays.push(await firstPacketMs(a, b));
  }
  const r = await running;
  const initiator = await tenguardStats(a);
  const udp1 = await udpCounters(b.ns);
  const after = await tenguardStats(b);
  const d = (k: string) => (after.get(k) ?? 0) - (before.get(k) ?? 0);
  t.diagnostic(
    `first packet: ${calm.toFixed(1)} ms without the flood, ${delays.map((x) => x.toFixed(1)).join(' / ')} ms ` +
      `during it (ratio ${(Math.max(...delays) / calm).toFixed(1)}; noisy shared machine)`,
  );
  t.diagnostic(
    `flood: sent ${r.sent} in ${r.elapsedMs} ms (${r.socket}); responder's kernel delivered ${udp1.inDatagrams - udp0.inDatagrams} ` +
      `messages (UDP receive offload merges runs), kernel dropped ${udp1.rcvbufErrors - udp0.rcvbufErrors}; cookieRepliesSent ${d('cookieRepliesSent')}, ` +
      `dropped.cookieRequired ${d('dropped.cookieRequired')}, dropped.cookieRateLimited ${d('dropped.cookieRateLimited')}, ` +
      `dropped.handshakeQueueFull ${d('dropped.handshakeQueueFull')}, dropped.rateLimited ${d('dropped.rateLimited')}, ` +
      `dropped.unknownPeer+badHandshake ${d('dropped.unknownPeer') + d('dropped.badHandshake')}, ` +
      `handshakesPrioritised ${d('handshakesPrioritised')}, underLoadEntered ${d('underLoadEntered')}`,
  );
  assert.ok(r.sent >= FLOOD_PPS * FLOOD_SECONDS * 0.95, `the flood sent only ${r.sent}`);
  assert.equal(r.answers, 0, 'an answer reached the spoofed source');
  assert.ok(r.elapsedMs <= (FLOOD_SECONDS + 2) * 1000, `the flood took ${r.elapsedMs} ms`);
  assert.deepEqual(underLoad, [1, 1, 1], 'the responder was under load when each session started');
  // Each new session: a cookie reply, consumed, and the initiation resent with MAC2 at once.
  assert.equal(initiator.get('cookieRetries'), SESSION_STARTS_S.length);
  assert.ok(d('handshakesPrioritised') >= SESSION_STARTS_S.length);
  for (const [i, ms] of delays.entries())
    assert.ok(ms <= FIRST_PACKET_LIMIT_MS, `session ${i + 1}: first packet after ${ms} ms`);
  // The counters show the flood: a few cookie replies a second to the spoofed source (10/s,
  // burst 10), the rest dropped on arrival, none given Diffie-Hellman work.
  // What the responder's engine saw of the flood, by its own counters: the kernel's
  // InDatagrams counts one per message, and with UDP receive offload a message carries a
  // whole run of the sender's datagrams.
  const read =
    d('cookieRepliesSent') +
    d('dropped.cookieRateLimited') +
    d('dropped.handshakeQueueFull') +
    d('dropped.rateLimited') +
    d('dropped.unknownPeer') +
    d('dropped.badHandshake');
  assert.ok(read >= r.sent * 0.9, `the responder's engine saw only ${read} of ${r.sent}`);
  assert.ok(
    d('cookieRepliesSent') <= 10 * (FLOOD_SECONDS + 5) + 10 + 20,
    `${d('cookieRepliesSent')} cookie replies`,
  );
  assert.ok(d('dropped.cookieRateLimited') >= r.sent * 0.9, 'initiations dropped on arrival');
  assert.ok(d('underLoadEntered') >= 1);
  assert.ok(d('dropped.unknownPeer') + d('dropped.badHandshake') <= 300, 'Diffie-Hellman work for the flood');
  assert.equal(d('dropped.handshakeQueueFull'), 0, 'one source never fills the queue');
});
