// Two tenants with the SAME addresses (2 hosts, 2 tenants, 2 workloads per tenant per host):
// the NIC takes the tenant from the session, never from the address, so each tenant reaches
// only its own workloads, and a forged source is still dropped.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { PlacedWorkload } from '../../src/lab/control.js';
import { metricValue } from '../../src/nic/client.js';
import { run, runOk } from '../../src/util/exec.js';
import {
  marker,
  type NicLab,
  nicPrefix,
  startNicLab,
  stopNicLab,
  tcpProbe,
  udpProbeMany,
} from '../helpers/nic.js';
import { ping, pingUntilReply } from '../helpers/ping.js';

const prefix = nicPrefix();
let L: NicLab;
let specs: PlacedWorkload[];

function W(name: string): PlacedWorkload {
  const w = specs.find((s) => s.name === name);
  assert.ok(w, `no workload ${name}`);
  return w;
}

before(async () => {
  L = await startNicLab(prefix, { hosts: 2, tenants: 2, workloads: 2 });
  // Every tenant gets tenant t1's overlay: hN-tT-wW has 100.64.1.(10N+W) whatever T is (fixed
  // addresses: the orchestrator's own pools never overlap).
  specs = await L.control.place(
    L.lab.workloads.map((w) => ({
      name: w.name,
      tenant: w.tenant,
      host: w.host,
      address: w.overlayV4.replace(/^100\.64\.\d+\./, '100.64.1.'),
    })),
  );
  assert.equal(W('h1-t1-w2').address, W('h1-t2-w2').address);
});

after(async () => {
  await stopNicLab(L, prefix);
});

test('each tenant reaches its own workloads at the shared addresses, same host and cross host', {
  timeout: 120_000,
}, async () => {
  for (const t of ['t1', 't2']) {
    for (const [from, to] of [
      [`h1-${t}-w1`, `h1-${t}-w2`],
      [`h1-${t}-w1`, `h2-${t}-w1`],
      [`h2-${t}-w2`, `h1-${t}-w1`],
    ]) {
      assert.ok(await pingUntilReply(W(from).ns, W(to).address, 10_000), `${from} -> ${to}: no ping reply`);
      assert.equal((await ping(W(from).ns, W(to).address, { count: 4 })).received, 4);
    }
    const payload = marker(1500);
    const c = await tcpProbe(W(`h1-${t}-w1`).ns, W(`h2-${t}-w2`).ns, W(`h2-${t}-w2`).address, payload);
    assert.equal(c.echoed, payload, `${t}: TCP across hosts failed`);
  }
});

test("a packet to a shared address reaches only the sender's tenant", { timeout: 120_000 }, async () => {
  for (const [from, own, other] of [
    ['h1-t1-w1', 'h1-t1-w2', 'h1-t2-w2'],
    ['h1-t1-w1', 'h2-t1-w1', 'h2-t2-w1'],
    ['h1-t2-w1', 'h1-t2-w2', 'h1-t1-w2'],
    ['h2-t2-w2', 'h1-t2-w1', 'h1-t1-w1'],
  ]) {
    const target = W(own).address;
    assert.equal(target, W(other).address);
    const payload = marker(24);
    const [mine, theirs] = await udpProbeMany(
      W(from).ns,
      [
        { ns: W(own).ns, address: target },
        { ns: W(other).ns, address: target },
      ],
      target,
      payload,
      { count: 5 },
    );
    assert.equal(mine.length, 5, `${from} -> ${own}: ${mine.length} of 5 arrived`);
    assert.deepEqual(theirs, [], `${from}'s packets reached ${other} of another tenant`);
  }
});

test('a forged source address is dropped when tenants share addresses', { timeout: 60_000 }, async () => {
  const a = W('h1-t1-w1');
  const forged = W('h1-t1-w2').address; // also h1-t2-w2's address
  await runOk('ip', ['-n', a.ns, 'addr', 'add', `${forged}/32`, 'dev', 'tg0']);
  try {
    const before = metricValue(await L.agents.nic('h1').metrics(), 'tenguard_nic_engine_dropped_total', {
      reason: 'badInnerSource',
    });
    const target = W('h2-t1-w1').address;
    const got = await udpProbeMany(
      a.ns,
      [
        { ns: W('h2-t1-w1').ns, address: target },
        { ns: W('h2-t2-w1').ns, address: target },
      ],
      target,
      marker(16),
      { count: 4, source: forged, listenMs: 1500 },
    );
    assert.deepEqual(got, [[], []], 'a forged packet arrived');
    const afterDrops = metricValue(await L.agents.nic('h1').metrics(), 'tenguard_nic_engine_dropped_total', {
      reason: 'badInnerSource',
    });
    assert.ok(afterDrops >= before + 4, `cryptokey routing dropped ${afterDrops - before} of 4`);
  } finally {
    await run('ip', ['-n', a.ns, 'addr', 'del', `${forged}/32`, 'dev', 'tg0']);
  }
});
