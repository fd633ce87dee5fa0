// Killing the NIC agent stops all tenant traffic with nothing in plaintext instead; a restarted
// agent starts with no keys, and the orchestrator's reconciliation re-provisions it. Also: bad API input against the
// real agent process gets a 4xx with a stable code and changes nothing.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { type PlacedWorkload, plannedWorkloads } from '../../src/lab/control.js';
import { metricValue } from '../../src/nic/client.js';
import { apiRequest } from '../../src/util/http-json.js';
import {
  captureContains,
  decodeWireGuard,
  marker,
  type NicLab,
  nicPrefix,
  startCapture,
  startNicLab,
  stopNicLab,
  udpProbe,
} from '../helpers/nic.js';
import { ping, pingUntilReply } from '../helpers/ping.js';

const prefix = nicPrefix();
let L: NicLab;
/** h1's NIC on-host public key before it was killed. */
let oldOnHost: string | null = null;
let specs: PlacedWorkload[];
const hostPcap = `/tmp/${prefix}-hostlink.pcap`;
const fabricPcap = `/tmp/${prefix}-fabric.pcap`;

function W(name: string): PlacedWorkload {
  const w = specs.find((s) => s.name === name);
  assert.ok(w, `no workload ${name}`);
  return w;
}

before(async () => {
  L = await startNicLab(prefix, { hosts: 2, tenants: 1, workloads: 2 });
  specs = await L.control.place(plannedWorkloads(L.lab));
});

after(async () => {
  await stopNicLab(L, prefix);
  for (const f of [hostPcap, fabricPcap]) rmSync(f, { force: true });
});

test('bad API input gets a 4xx with a stable code and changes nothing (real agent)', async () => {
  const sock = L.lab.hosts[0].nicApiSocket;
  const nic = L.agents.nic('h1');
  const keysBefore = JSON.stringify(await nic.keys());
  const workloadsBefore = JSON.stringify(await nic.workloads());
  const vsKey = Buffer.alloc(32, 7).toString('base64');
  const cases: [string, 'GET' | 'POST' | 'PUT', string, unknown, number, string][] = [
    ['unknown tenant (key)', 'GET', '/v1/tenants/nope/key', undefined, 404, 'TG_ERR_NOT_FOUND'],
    ['unknown tenant (peers)', 'PUT', '/v1/tenants/nope/peers', { peers: [] }, 404, 'TG_ERR_NOT_FOUND'],
    [
      'duplicate workload',
      'POST',
      '/v1/workloads',
      { tenant: 't1', workload: 'h1-t1-w1', address: '100.64.1.99', vswitchPublicKey: vsKey },
      409,
      'TG_ERR_CONFLICT',
    ],
    [
      'malformed key',
      'POST',
      '/v1/workloads',
      { tenant: 't1', workload: 'new', address: '100.64.1.99', vswitchPublicKey: 'AAAA' },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'wrong address',
      'POST',
      '/v1/workloads',
      { tenant: 't1', workload: 'new', address: '100.64.1.300', vswitchPublicKey: vsKey },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'address taken',
      'POST',
      '/v1/workloads',
      { tenant: 't1', workload: 'new', address: W('h1-t1-w2').address, vswitchPublicKey: vsKey },
      409,
      'TG_ERR_CONFLICT',
    ],
    [
      'unknown field',
      'POST',
      '/v1/workloads',
      { tenant: 't1', workload: 'new', address: '100.64.1.99', vswitchPublicKey: vsKey, extra: 1 },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
  ];
  for (const [what, method, path, body, status, code] of cases) {
    const r = await apiRequest(sock, method, path, body);
    assert.equal(r.status, status, `${what}: HTTP ${r.status} ${r.raw}`);
    const b = r.body as { code: string; message: string };
    assert.equal(b.code, code, what);
    assert.ok(b.message.length > 5, `${what}: no message`);
  }
  const big = await apiRequest(sock, 'POST', '/v1/workloads', undefined, {
    rawBody: JSON.stringify({
      tenant: 't1',
      workload: 'big',
      address: '100.64.1.98',
      pad: 'x'.repeat(1 << 20),
    }),
  });
  assert.equal(big.status, 413);
  assert.equal((big.body as { code: string }).code, 'TG_ERR_PAYLOAD_TOO_LARGE');
  assert.equal(JSON.stringify(await nic.keys()), keysBefore, 'bad input changed the key store');
  assert.equal(JSON.stringify(await nic.workloads()), workloadsBefore, 'bad input changed the workloads');
});

test('killing the NIC agent stops all tenant traffic, with nothing in plaintext instead', {
  timeout: 120_000,
}, async () => {
  const a = W('h1-t1-w1');
  const same = W('h1-t1-w2');
  const cross = W('h2-t1-w1');
  for (const [x, y] of [
    [a, same],
    [a, cross],
    [cross, a],
  ])
    assert.ok(await pingUntilReply(x.ns, y.address, 10_000), `${x.name} -> ${y.name} before the kill`);
  const h1 = L.lab.hosts[0];
  const hostCap = await startCapture(h1.hostNs, h1.pcie.hostIf, hostPcap);
  const fabricCap = await startCapture(L.lab.fabric.ns, h1.fabric.bridgeIf, fabricPcap);
  const mark = marker(16);
  try {
    oldOnHost = (await L.agents.vswitch('h1').get('h1-t1-w1')).nicPublicKey;
    await L.agents.stopNic('h1', 'SIGKILL');
    for (const [x, y] of [
      [a, same],
      [a, cross],
      [cross, a],
    ]) {
      assert.equal((await ping(x.ns, y.address, { count: 3, waitS: 1, pattern: mark })).received, 0);
      const u = await udpProbe(x.ns, y.ns, y.address, mark.repeat(4), { count: 3, listenMs: 1500 });
      assert.deepEqual(u.received, [], `${x.name} -> ${y.name} still passes with the NIC dead`);
    }
  } finally {
    await hostCap.stop();
    await fabricCap.stop();
  }
  const needle = Buffer.from(mark, 'hex');
  assert.equal(captureContains(hostPcap, needle), false, 'plaintext on the host link');
  assert.equal(captureContains(fabricPcap, needle), false, 'plaintext on the fabric');
  // The vSwitches still send, encrypted, into the dead NIC's port.
  const d = await decodeWireGuard(hostPcap, 51820);
  assert.ok(d.udpPackets >= 6, `only ${d.udpPackets} UDP packets on the host link`);
  assert.equal(d.wgPackets, d.udpPackets, 'non-WireGuard UDP on the host link');
});

test('a restarted NIC agent starts with no keys, and re-provisioning brings traffic back', {
  timeout: 120_000,
}, async () => {
  assert.ok(oldOnHost, 'the on-host key before the kill was read');
  await L.agents.startNic('h1');
  const nic = L.agents.nic('h1');
  const kinds = (await nic.keys()).map((k) => k.kind).sort();
  assert.deepEqual(
    kinds,
    ['nic-identity', 'nic-on-host', 'nic-seal'],
    'the restarted agent holds workload or tenant keys',
  );
  assert.deepEqual(await nic.workloads(), []);
  assert.deepEqual(await nic.tenants(), []);
  const id = await nic.identity();
  assert.notEqual(id.onHostPublicKey, oldOnHost, 'the restarted agent reuses its old on-host key');
  // The vSwitches still hold the dead agent's key: nothing passes, their handshakes are refused.
  const a = W('h1-t1-w1');
  assert.equal((await ping(a.ns, W('h1-t1-w2').address, { count: 3, waitS: 1 })).received, 0);
  await new Promise((r) => setTimeout(r, 1000));
  const m = await nic.metrics();
  const refused =
    metricValue(m, 'tenguard_nic_engine_dropped_total', { reason: 'badMac1' }) +
    metricValue(m, 'tenguard_nic_engine_dropped_total', { reason: 'unknownIndex' });
  assert.ok(refused > 0, 'the restarted agent saw nothing from the old sessions');
  // The orchestrator's reconciliation re-provisions host h1: new registrations, the vSwitches
  // configured with them.
  const report = await L.control.reconcile();
  assert.deepEqual(report.unreachable ?? {}, {}, JSON.stringify(report));
  for (const [x, y] of [
    ['h1-t1-w1', 'h1-t1-w2'],
    ['h1-t1-w1', 'h2-t1-w1'],
    ['h2-t1-w2', 'h1-t1-w2'],
  ])
    assert.ok(await pingUntilReply(W(x).ns, W(y).address, 10_000), `${x} -> ${y} after re-provisioning`);
});
