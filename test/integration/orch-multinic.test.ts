// A host with two NICs (lab --nics 2): the orchestrator spreads workloads over both; when one
// NIC's agent is killed (SIGKILL) under a ping stream, its workloads move to the other NIC with
// new keys (keys the failed NIC never had), traffic passes again within seconds, and no
// plaintext shows on the host links or the fabric meanwhile; the failed NIC, restarted, is
// reconciled and takes workloads again. A drain moves a NIC's workloads the same way.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import type { PlacedWorkload } from '../../src/lab/control.js';
import { hostNics } from '../../src/lab/plan.js';
import {
  captureContains,
  decodeWireGuard,
  marker,
  type NicLab,
  nicPrefix,
  startCapture,
  startNicLab,
  stopNicLab,
} from '../helpers/nic.js';
import { pingStream, pingUntilReply } from '../helpers/ping.js';

const prefix = nicPrefix();
let L: NicLab;
let placed: PlacedWorkload[];
const pcaps: string[] = [];

/** A gap bound that holds on a loaded 2-core machine (the measured figure goes in the diagnostics). */
const GAP_BOUND_MS = 12_000;

function W(name: string): PlacedWorkload {
  const w = placed.find((s) => s.name === name);
  assert.ok(w, `no workload ${name}`);
  return w;
}

async function nicOf(workload: string): Promise<string | undefined> {
  return (await L.control.orchestrator.service.getWorkload(workload)).nic;
}

async function fingerprints(nic: string): Promise<Set<string>> {
  return new Set((await L.agents.nic('h1', nic).keys()).map((k) => k.fingerprint));
}

async function until(what: string, ms: number, check: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`${what}: not within ${ms} ms`);
}

before(async () => {
  L = await startNicLab(prefix, { hosts: 2, tenants: 1, workloads: 0, nics: 2 });
  placed = await L.control.place([
    { name: 'wa', tenant: 't1', host: 'h1' },
    { name: 'wb', tenant: 't1', host: 'h1' },
    { name: 'wc', tenant: 't1', host: 'h1' },
    { name: 'wd', tenant: 't1', host: 'h1' },
    { name: 'wr', tenant: 't1', host: 'h2' },
  ]);
  L.control.orchestrator.start();
});

after(async () => {
  await stopNicLab(L, prefix);
  for (const f of pcaps) rmSync(f, { force: true });
});

test('workloads spread over both NICs of a host, and talk across NICs and hosts', async () => {
  const h1 = (await L.control.orchestrator.service.getHost('h1')).nics ?? [];
  assert.deepEqual(
    h1.map((n) => [n.name, n.state]),
    [
      ['nic1', 'ok'],
      ['nic2', 'ok'],
    ],
  );
  const on = await Promise.all(['wa', 'wb', 'wc', 'wd'].map(nicOf));
  assert.deepEqual(on, ['nic1', 'nic2', 'nic1', 'nic2'], 'placement: fewest workloads, ties by name');
  assert.equal((await L.agents.nic('h1', 'nic1').workloads()).length, 2);
  assert.equal((await L.agents.nic('h1', 'nic2').workloads()).length, 2);
  for (const [x, y] of [
    ['wa', 'wr'],
    ['wb', 'wr'],
    ['wa', 'wb'],
    ['wr', 'wa'],
  ])
    assert.ok(await pingUntilReply(W(x).ns, W(y).address, 10_000), `${x} -> ${y}`);
});

test('SIGKILL of a NIC agent: its workloads pass again through the other NIC, new keys, no plaintext', {
  timeout: 90_000,
}, async (t) => {
  const h1 = L.lab.hosts[0];
  const nics = hostNics(h1);
  const mark = marker(16);
  const caps = [];
  for (const n of nics) {
    const host = `/tmp/${prefix}-${n.name}-host.pcap`;
    const fab = `/tmp/${prefix}-${n.name}-fabric.pcap`;
    pcaps.push(host, fab);
    caps.push(await startCapture(h1.hostNs, n.pcie.hostIf, host));
    caps.push(await startCapture(L.lab.fabric.ns, n.fabric.bridgeIf, fab));
  }
  const oldKeys = await fingerprints('nic1');
  const oldOnHost = (await L.agents.vswitch('h1').get('wa')).nicPublicKey;
  const stream = pingStream(W('wa').ns, W('wr').address, 0.05, 60, mark);
  let killedAt = 0;
  try {
    await until('first replies', 10_000, async () => stream.replies().length >= 5);
    killedAt = Date.now();
    await L.agents.stopNic('h1', 'SIGKILL', 'nic1');
    await until('replies through nic2', 30_000, async () => {
      const after = stream.replies().filter((t) => t > killedAt + 100);
      return after.length >= 10 && (await nicOf('wa')) === 'nic2';
    });
  } finally {
    const r = await stream.stop();
    for (const c of caps) await c.stop();
    if (killedAt > 0) {
      const first = r.replyTimes.map((t) => t * 1000).find((t) => t > killedAt + 100);
      t.diagnostic(
        `failover: longest gap in the ping stream ${r.maxGapMs} ms; first reply ${first === undefined ? 'none' : Math.round(first - killedAt)} ms after the SIGKILL; ${r.lost} lost`,
      );
      assert.ok(r.maxGapMs < GAP_BOUND_MS, `gap ${r.maxGapMs} ms`);
    }
  }
  const host = await L.control.orchestrator.service.getHost('h1');
  assert.deepEqual(
    host.nics?.map((n) => [n.name, n.state]),
    [
      ['nic1', 'failed'],
      ['nic2', 'ok'],
    ],
  );
  assert.deepEqual(await Promise.all(['wa', 'wb', 'wc', 'wd'].map(nicOf)), ['nic2', 'nic2', 'nic2', 'nic2']);
  // The moved workloads' keys on nic2 (their PSKs, the tenant's off-host key there) are keys
  // nic1 never had, and the vSwitch leg points at nic2's on-host key.
  const moved = (await L.agents.nic('h1', 'nic2').keys()).filter(
    (k) => k.workload === 'wa' || k.workload === 'wc' || (k.tenant === 't1' && k.workload === null),
  );
  assert.ok(
    moved.some((k) => k.workload === 'wa'),
    JSON.stringify(moved),
  );
  for (const k of moved) assert.ok(!oldKeys.has(k.fingerprint), `nic1 had ${k.kind} ${k.fingerprint}`);
  const inst = await L.agents.vswitch('h1').get('wa');
  assert.notEqual(inst.nicPublicKey, oldOnHost);
  assert.equal(inst.nicEndpoint, `${nics[1].pcie.nicV4}:51820`);
  assert.ok(await pingUntilReply(W('wr').ns, W('wc').address, 10_000), 'wr -> wc after the failover');
  const needle = Buffer.from(mark, 'hex');
  for (const f of pcaps) assert.equal(captureContains(f, needle), false, `plaintext in ${f}`);
  // Everything UDP on those links is WireGuard (the tunnels carried the stream).
  let udp = 0;
  for (const f of pcaps) {
    const d = await decodeWireGuard(f, 51820);
    assert.equal(d.wgPackets, d.udpPackets, `non-WireGuard UDP in ${f}`);
    udp += d.udpPackets;
  }
  assert.ok(udp > 10, `only ${udp} UDP packets on the links`);
});

test('the failed NIC, restarted, is reconciled and takes workloads again', { timeout: 60_000 }, async () => {
  await L.agents.startNic('h1', 'nic1');
  await until('nic1 ok again', 20_000, async () => {
    const h = await L.control.orchestrator.service.getHost('h1');
    return h.nics?.[0].state === 'ok';
  });
  assert.deepEqual(await L.agents.nic('h1', 'nic1').workloads(), []);
  const more = await L.control.place([{ name: 'we', tenant: 't1', host: 'h1' }]);
  placed.push(...more);
  assert.equal(await nicOf('we'), 'nic1');
  assert.ok(await pingUntilReply(W('we').ns, W('wa').address, 10_000), 'we (nic1) -> wa (nic2)');
});

test('drain-nic moves a NIC’s workloads with new keys while traffic flows; undrain', {
  timeout: 90_000,
}, async (t) => {
  const oldKeys = await fingerprints('nic2');
  const stream = pingStream(W('wb').ns, W('wr').address, 0.05, 60);
  let r: Awaited<ReturnType<typeof stream.stop>>;
  let drain: Awaited<ReturnType<typeof L.control.orchestrator.drainNic>>;
  try {
    await until('first replies', 10_000, async () => stream.replies().length >= 5);
    drain = await L.control.orchestrator.drainNic('h1', 'nic2');
    const doneAt = Date.now();
    await until('replies after the drain', 10_000, async () =>
      stream.replies().some((x) => x > doneAt + 200),
    );
  } finally {
    r = await stream.stop();
  }
  t.diagnostic(
    `drain of nic2: ${drain.moved.length} workloads moved in ${drain.ms} ms (${drain.moved.map((m) => `${m.workload} ${m.ms} ms`).join(', ')}); ping gap ${r.maxGapMs} ms, ${r.lost} lost`,
  );
  assert.deepEqual(drain.errors, []);
  assert.deepEqual(drain.moved.map((m) => m.workload).sort(), ['wa', 'wb', 'wc', 'wd']);
  assert.ok(r.maxGapMs < GAP_BOUND_MS, `gap ${r.maxGapMs} ms`);
  assert.deepEqual(await L.agents.nic('h1', 'nic2').workloads(), []);
  const keys = (await L.agents.nic('h1', 'nic1').keys()).filter((k) => k.workload === 'wb');
  assert.ok(keys.length > 0);
  for (const k of keys) assert.ok(!oldKeys.has(k.fingerprint), `nic2 had ${k.kind} ${k.fingerprint}`);
  assert.ok(!(await fingerprints('nic2')).has(keys[0].fingerprint));
  assert.ok(await pingUntilReply(W('wr').ns, W('wb').address, 10_000), 'wr -> wb after the drain');
  const more = await L.control.place([{ name: 'wf', tenant: 't1', host: 'h1' }]);
  placed.push(...more);
  assert.equal(await nicOf('wf'), 'nic1', 'a draining NIC takes no workload');
  await L.control.orchestrator.undrainNic('h1', 'nic2');
  const last = await L.control.place([{ name: 'wg', tenant: 't1', host: 'h1' }]);
  placed.push(...last);
  assert.equal(await nicOf('wg'), 'nic2', 'undrained: the emptiest NIC again');
});
