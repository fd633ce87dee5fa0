// The NIC agent and the vSwitch in a real lab (issue 4's "Done when"): 2 hosts, 2 tenants,
// 2 workloads per tenant per host, spun up by the orchestrator (src/lab/control.ts) through
// the NIC and vSwitch APIs. Traffic within a tenant passes on the same host and across hosts; between tenants and
// from forged sources it does not; the host link and the fabric carry only WireGuard; keys
// differ per leg and off-host secrets never leave the NIC; removal, rotation and a crashed
// vSwitch instance behave.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { type PlacedWorkload, plannedWorkloads } from '../../src/lab/control.js';
import { metricValue } from '../../src/nic/client.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { uapiGet } from '../../src/uapi/client.js';
import { uapiSocketPath } from '../../src/uapi/server.js';
import { run, runOk } from '../../src/util/exec.js';
import type { InstanceInfo } from '../../src/vswitch/instance.js';
import {
  type Capture,
  captureContains,
  decodeWireGuard,
  findPrivateKeys,
  marker,
  type NicLab,
  nicPrefix,
  startCapture,
  startNicLab,
  stopNicLab,
  tcpProbe,
  udpProbe,
} from '../helpers/nic.js';
import { ping, pingStream, pingUntilReply } from '../helpers/ping.js';

const prefix = nicPrefix();
let L: NicLab;
let specs: PlacedWorkload[];
let hostCapture: Capture | undefined;
let fabricCapture: Capture | undefined;
const hostPcap = `/tmp/${prefix}-hostlink.pcap`;
const fabricPcap = `/tmp/${prefix}-fabric.pcap`;
const tg0Pcap = `/tmp/${prefix}-tg0.pcap`;

function W(name: string): PlacedWorkload {
  const w = specs.find((s) => s.name === name);
  assert.ok(w, `no workload ${name}`);
  return w;
}

/** Every vSwitch instance of both hosts, as the daemons report them. */
async function instances(): Promise<InstanceInfo[]> {
  return [...(await L.agents.vswitch('h1').list()), ...(await L.agents.vswitch('h2').list())];
}

async function nicMetric(host: string, name: string, labels: Record<string, string>): Promise<number> {
  return metricValue(await L.agents.nic(host).metrics(), name, labels);
}

before(async () => {
  L = await startNicLab(prefix, { hosts: 2, tenants: 2, workloads: 2 }, { logLevel: 'debug' });
  const h1 = L.lab.hosts[0];
  // Captures run from before the first handshake to the capture test.
  hostCapture = await startCapture(h1.hostNs, h1.pcie.hostIf, hostPcap);
  fabricCapture = await startCapture(L.lab.fabric.ns, h1.fabric.bridgeIf, fabricPcap);
  specs = await L.control.place(plannedWorkloads(L.lab));
});

after(async () => {
  await hostCapture?.stop();
  await fabricCapture?.stop();
  await stopNicLab(L, prefix);
  for (const f of [hostPcap, fabricPcap, tg0Pcap]) rmSync(f, { force: true });
});

const PAIRS = (t: string): [string, string, string][] => [
  [`h1-${t}-w1`, `h1-${t}-w2`, 'same host'],
  [`h1-${t}-w1`, `h2-${t}-w2`, 'cross host'],
  [`h2-${t}-w1`, `h1-${t}-w2`, 'cross host, other way'],
];

test('same-host and cross-host traffic within a tenant passes: ping, TCP, UDP', {
  timeout: 180_000,
}, async () => {
  for (const t of ['t1', 't2']) {
    for (const [from, to, what] of PAIRS(t)) {
      const a = W(from);
      const b = W(to);
      assert.ok(
        await pingUntilReply(a.ns, b.address, 10_000),
        `${t} ${what}: no ping reply ${from} -> ${to}`,
      );
      const p = await ping(a.ns, b.address, { count: 5 });
      assert.equal(p.received, 5, `${t} ${what}: ping ${from} -> ${to} lost ${5 - p.received} of 5`);
      const payload = marker(32);
      const u = await udpProbe(a.ns, b.ns, b.address, payload, { count: 5 });
      assert.equal(u.received.length, 5, `${t} ${what}: UDP ${from} -> ${to} got ${u.received.length} of 5`);
      assert.ok(u.received.every((x) => x === payload));
      const tcpPayload = marker(2000);
      const c = await tcpProbe(a.ns, b.ns, b.address, tcpPayload);
      assert.equal(c.echoed, tcpPayload, `${t} ${what}: TCP ${from} -> ${to} did not echo`);
      assert.equal(c.serverReceived, tcpPayload);
    }
  }
  // The NICs forwarded on all three paths.
  assert.ok((await nicMetric('h1', 'tenguard_nic_forwarded_packets_total', { path: 'local' })) > 0);
  assert.ok((await nicMetric('h1', 'tenguard_nic_forwarded_packets_total', { path: 'egress' })) > 0);
  assert.ok((await nicMetric('h1', 'tenguard_nic_forwarded_packets_total', { path: 'ingress' })) > 0);
});

test('traffic between tenants does not pass: ping, TCP, UDP, same host and cross host', {
  timeout: 120_000,
}, async () => {
  const before = await nicMetric('h1', 'tenguard_nic_forward_dropped_total', { reason: 'noRoute' });
  for (const [from, to] of [
    ['h1-t1-w1', 'h1-t2-w1'],
    ['h1-t1-w1', 'h2-t2-w2'],
    ['h1-t2-w2', 'h2-t1-w1'],
  ]) {
    const a = W(from);
    const b = W(to);
    const p = await ping(a.ns, b.address, { count: 3, waitS: 1 });
    assert.equal(p.received, 0, `ping ${from} -> ${to} crossed tenants`);
    const u = await udpProbe(a.ns, b.ns, b.address, marker(16), { count: 3, listenMs: 1500 });
    assert.deepEqual(u.received, [], `UDP ${from} -> ${to} crossed tenants`);
    const c = await tcpProbe(a.ns, b.ns, b.address, marker(64), { timeoutMs: 1500 });
    assert.equal(c.echoed, null, `TCP ${from} -> ${to} crossed tenants`);
    assert.equal(c.serverReceived, null);
  }
  const afterDrops = await nicMetric('h1', 'tenguard_nic_forward_dropped_total', { reason: 'noRoute' });
  assert.ok(afterDrops >= before + 9, `the NIC counted ${afterDrops - before} cross-tenant drops`);
});

test('a workload sending with a forged source address gets nothing through', {
  timeout: 120_000,
}, async () => {
  const a = W('h1-t1-w1');
  // A tenant-mate's address and another tenant's address, made local in the sender's namespace.
  const forged = [W('h1-t1-w2').address, W('h1-t2-w1').address];
  for (const f of forged) await runOk('ip', ['-n', a.ns, 'addr', 'add', `${f}/32`, 'dev', 'tg0']);
  try {
    const before = await nicMetric('h1', 'tenguard_nic_engine_dropped_total', { reason: 'badInnerSource' });
    for (const [source, to] of [
      [forged[0], 'h2-t1-w1'],
      [forged[1], 'h2-t1-w2'],
      [forged[1], 'h1-t2-w2'],
    ]) {
      const b = W(to);
      const u = await udpProbe(a.ns, b.ns, b.address, marker(16), { count: 4, source, listenMs: 1500 });
      assert.deepEqual(u.received, [], `a packet from forged ${source} reached ${to}`);
    }
    const afterDrops = await nicMetric('h1', 'tenguard_nic_engine_dropped_total', {
      reason: 'badInnerSource',
    });
    assert.ok(
      afterDrops >= before + 12,
      `cryptokey routing dropped ${afterDrops - before} forged packets, expected 12`,
    );
    // The genuine address still works.
    assert.ok(await pingUntilReply(a.ns, W('h2-t1-w1').address, 5000));
  } finally {
    for (const f of forged) await run('ip', ['-n', a.ns, 'addr', 'del', `${f}/32`, 'dev', 'tg0']);
  }
});

test('captures on the host link and on the fabric hold no plaintext and decode as WireGuard', {
  timeout: 120_000,
}, async () => {
  const mark = marker(16);
  const needle = Buffer.from(mark, 'hex');
  const a = W('h1-t1-w1');
  const same = W('h1-t1-w2');
  const cross = W('h2-t1-w1');
  // Positive control: the same search finds the marker where it is plaintext, inside the workload.
  const inner = await startCapture(cross.ns, 'tg0', tg0Pcap);
  try {
    for (const b of [same, cross]) {
      assert.equal((await ping(a.ns, b.address, { count: 3, pattern: mark })).received, 3);
      const u = await udpProbe(a.ns, b.ns, b.address, mark.repeat(4), { count: 3 });
      assert.equal(u.received.length, 3);
      const c = await tcpProbe(a.ns, b.ns, b.address, mark.repeat(8));
      assert.equal(c.echoed, mark.repeat(8));
    }
  } finally {
    await inner.stop();
  }
  await hostCapture?.stop();
  await fabricCapture?.stop();
  hostCapture = undefined;
  fabricCapture = undefined;
  assert.ok(
    captureContains(tg0Pcap, needle),
    'control: the marker is not in the capture inside the workload',
  );
  for (const [file, where] of [
    [hostPcap, 'host link'],
    [fabricPcap, 'fabric'],
  ] as const) {
    assert.ok(statSync(file).size > 10_000, `${where}: capture is nearly empty`);
    assert.equal(captureContains(file, needle), false, `${where}: the plaintext marker is on the wire`);
    const d = await decodeWireGuard(file, 51820);
    assert.ok(d.udpPackets > 100, `${where}: only ${d.udpPackets} UDP packets captured`);
    assert.equal(
      d.wgPackets,
      d.udpPackets,
      `${where}: ${d.udpPackets - d.wgPackets} UDP packets are not WireGuard`,
    );
    assert.ok((d.types.get(1) ?? 0) > 0, `${where}: no handshake initiation decoded`);
    assert.ok((d.types.get(2) ?? 0) > 0, `${where}: no handshake response decoded`);
    assert.ok((d.types.get(4) ?? 0) > 100, `${where}: too few transport messages decoded`);
    assert.equal(
      d.transportWithReceiver,
      d.types.get(4),
      `${where}: transport messages without a receiver index`,
    );
    // Nothing but WireGuard, ARP/ND and ICMP errors about it crosses these links.
    const other = await runOk('tshark', [
      '-r',
      file,
      '-Y',
      'not udp and not arp and not icmpv6 and not icmp',
      '-T',
      'fields',
      '-e',
      'frame.number',
    ]);
    assert.equal(other.trim(), '', `${where}: frames that are neither WireGuard nor ARP/ND/ICMP`);
  }
});

test('on-host and off-host keys differ', async () => {
  const all: string[] = [];
  for (const h of ['h1', 'h2']) {
    const nic = L.agents.nic(h);
    const id = await nic.identity();
    all.push(id.onHostPublicKey);
    for (const t of ['t1', 't2']) {
      const k = await nic.tenantKey(t);
      assert.notEqual(k.publicKey, id.onHostPublicKey, `${h} ${t}: off-host key equals the on-host key`);
      all.push(k.publicKey);
    }
    const inv = await nic.keys();
    const kinds = inv.map((k) => k.kind).sort();
    assert.deepEqual(
      kinds,
      [
        'nic-identity',
        'nic-on-host',
        'nic-seal',
        'tenant-off-host',
        'tenant-off-host',
        ...Array(4).fill('workload-psk'),
      ].sort(),
    );
    const fingerprints = inv.map((k) => k.fingerprint);
    assert.equal(new Set(fingerprints).size, fingerprints.length, `${h}: two keys share a fingerprint`);
  }
  for (const i of await instances()) all.push(i.publicKey);
  assert.equal(all.length, 2 * 3 + 8, 'every on-host, off-host and vSwitch key');
  assert.equal(new Set(all).size, all.length, 'a public key is used for two roles, tenants or NICs');
});

test('off-host secrets never appear in any API response, log line or host-side file', {
  timeout: 60_000,
}, async () => {
  const offHostKeys = new Set<string>();
  for (const h of ['h1', 'h2'])
    for (const t of (await L.agents.nic(h).tenants()) as { publicKey: string }[])
      offHostKeys.add(t.publicKey);
  const offHost = [...offHostKeys].map((k) => Buffer.from(k, 'base64'));
  assert.equal(offHost.length, 4, 'two tenants on two NICs');
  // The scan finds a private key when it is there (base64 and hex).
  const planted = generatePrivateKey();
  const plantedText = `x ${planted.toString('base64')} y ${planted.toString('hex')} z`;
  assert.equal(
    findPrivateKeys(plantedText, [publicKeyOf(planted)]).length,
    2,
    'the scan misses a planted key',
  );

  // Every API answer so far, plus a fresh read of every endpoint.
  for (const h of ['h1', 'h2']) {
    const nic = L.agents.nic(h);
    await nic.health();
    await nic.identity();
    await nic.keys();
    await nic.workloads();
    await nic.tenants();
    await nic.metrics();
    await L.agents.vswitch(h).list();
    await L.agents.vswitch(h).health();
  }
  const texts: [string, string][] = [
    ['API responses', L.agents.responses.join('\n')],
    ['agent logs', L.agents.logs()],
  ];
  // Host-side files: the lab's run directory and the host-side processes' command lines and environments.
  for (const f of readdirSync(L.lab.runDir)) {
    const path = `${L.lab.runDir}/${f}`;
    if (statSync(path).isFile()) texts.push([path, readFileSync(path, 'latin1')]);
  }
  for (const v of L.agents.vswitchds.values()) {
    const children = (await run('pgrep', ['-P', String(v.pid)])).stdout.split(/\s+/).filter(Boolean);
    for (const pid of [String(v.pid), ...children]) {
      for (const what of ['cmdline', 'environ']) {
        try {
          texts.push([`/proc/${pid}/${what}`, readFileSync(`/proc/${pid}/${what}`, 'latin1')]);
        } catch {
          // ended meanwhile
        }
      }
    }
  }
  // What the host-side devices hold (their UAPI state, private key and PSK included).
  const placed = await instances();
  assert.equal(placed.length, 8);
  for (const w of placed) {
    const snap = await uapiGet(uapiSocketPath(w.ifname));
    const keys = [snap.privateKey, ...snap.peers.flatMap((p) => [p.publicKey, p.presharedKey])]
      .filter((k): k is Uint8Array => k instanceof Uint8Array)
      .map((k) => Buffer.from(k).toString('base64'));
    texts.push([`UAPI state of ${w.workload}`, keys.join('\n')]);
  }
  assert.ok(texts.length > 10);
  assert.ok(L.agents.responses.length > 50, 'too few API responses recorded');
  for (const [where, text] of texts) {
    assert.deepEqual(findPrivateKeys(text, offHost), [], `an off-host private key appears in ${where}`);
  }
  // The host-side devices hold on-host secrets of their own, which the scan does see.
  const onHost = placed.map((w) => Buffer.from(w.publicKey, 'base64'));
  const uapiText = texts
    .filter(([w]) => w.startsWith('UAPI state'))
    .map(([, t]) => t)
    .join('\n');
  assert.equal(
    findPrivateKeys(uapiText, onHost).length,
    onHost.length,
    'control: vSwitch private keys not found',
  );
});

test('PSK rotation keeps traffic flowing, and the NIC then requires the new PSK', {
  timeout: 120_000,
}, async () => {
  const a = W('h1-t1-w1');
  const b = W('h2-t1-w1');
  const nic = L.agents.nic('h1');
  const vs = L.agents.vswitch('h1');
  const before = (await nic.keys()).find((k) => k.workload === a.name);
  assert.ok(before);
  const bg = pingStream(a.ns, b.address, 0.1, 30);
  await new Promise((r) => setTimeout(r, 1000));
  const r1 = await nic.rotatePsk(a.name);
  await vs.rotatePsk(a.name, r1.sealedPsk);
  await new Promise((r) => setTimeout(r, 2000));
  const p = await bg.stop();
  assert.ok(p.transmitted >= 20, `only ${p.transmitted} pings sent`);
  assert.equal(p.received, p.transmitted, `rotation dropped ${p.transmitted - p.received} pings`);
  const afterKey = (await nic.keys()).find((k) => k.workload === a.name);
  assert.ok(afterKey?.lastRotated, 'lastRotated not set');
  assert.equal(afterKey.id, before.id);
  assert.notEqual(afterKey.fingerprint, before.fingerprint);

  // Rotate again without telling the vSwitch: a fresh session with the old PSK fails, with the new one works.
  const r2 = await nic.rotatePsk(a.name);
  const id = await nic.identity();
  await vs.configure(a.name, {
    nicPublicKey: id.onHostPublicKey,
    sealedPsk: r1.sealedPsk,
    nicEndpoint: id.hostEndpoint,
  });
  assert.equal(
    (await ping(a.ns, b.address, { count: 3, waitS: 1 })).received,
    0,
    'a stale PSK still opened a session',
  );
  await vs.configure(a.name, {
    nicPublicKey: id.onHostPublicKey,
    sealedPsk: r2.sealedPsk,
    nicEndpoint: id.hostEndpoint,
  });
  assert.ok(await pingUntilReply(a.ns, b.address, 15_000), 'the new PSK does not open a session');
});

test('a crashed vSwitch instance is reported and restartable; the others keep running', {
  timeout: 120_000,
}, async () => {
  const vs = L.agents.vswitch('h1');
  const victim = W('h1-t1-w2');
  const info = await vs.get(victim.name);
  assert.equal(info.state, 'configured');
  assert.ok(info.pid);
  process.kill(info.pid, 'SIGKILL');
  const deadline = Date.now() + 10_000;
  while ((await vs.get(victim.name)).state !== 'crashed' && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 100));
  assert.equal((await vs.get(victim.name)).state, 'crashed');
  assert.equal(((await vs.health()) as { crashed: number }).crashed, 1);
  // The other instances of the host carry on.
  for (const [from, to] of [
    ['h1-t1-w1', 'h2-t1-w1'],
    ['h1-t2-w1', 'h1-t2-w2'],
  ]) {
    assert.equal((await ping(W(from).ns, W(to).address, { count: 3 })).received, 3, `${from} -> ${to} broke`);
  }
  assert.equal((await ping(W('h1-t1-w1').ns, victim.address, { count: 2, waitS: 1 })).received, 0);
  // Restart: a new key pair, registered anew with the NIC.
  const restarted = await vs.restart(victim.name);
  assert.notEqual(restarted.publicKey, info.publicKey);
  const nic = L.agents.nic('h1');
  await nic.removeWorkload(victim.name);
  const crypto = await nic.registerWorkload({
    tenant: victim.tenant,
    workload: victim.name,
    address: victim.address,
    vswitchPublicKey: restarted.publicKey,
  });
  await vs.configure(victim.name, {
    nicPublicKey: crypto.nicPublicKey,
    sealedPsk: crypto.sealedPsk,
    nicEndpoint: crypto.nicEndpoint,
  });
  assert.ok(await pingUntilReply(W('h1-t1-w1').ns, victim.address, 10_000), 'restarted instance unreachable');
  assert.ok(
    await pingUntilReply(W('h2-t1-w1').ns, victim.address, 10_000),
    'restarted instance unreachable cross-host',
  );
});

test('a removed workload leaves the inventory at once and its old session is rejected', {
  timeout: 120_000,
}, async () => {
  const nic = L.agents.nic('h1');
  const gone = W('h1-t2-w2');
  const mate = W('h1-t2-w1');
  assert.ok(await pingUntilReply(gone.ns, mate.address, 5000));
  assert.ok((await nic.keys()).some((k) => k.workload === gone.name));
  const unknownBefore = await nicMetric('h1', 'tenguard_nic_engine_dropped_total', {
    reason: 'unknownIndex',
  });
  // The NIC forgets the workload while its vSwitch still runs with the old session.
  await nic.removeWorkload(gone.name);
  assert.equal(
    (await nic.keys()).filter((k) => k.workload === gone.name).length,
    0,
    'its PSK is still listed',
  );
  assert.equal((await nic.workloads()).filter((w) => w.workload === gone.name).length, 0);
  assert.equal(
    (await ping(gone.ns, mate.address, { count: 3, waitS: 1 })).received,
    0,
    'the old session still works',
  );
  const unknownAfter = await nicMetric('h1', 'tenguard_nic_engine_dropped_total', { reason: 'unknownIndex' });
  assert.ok(
    unknownAfter >= unknownBefore + 3,
    `old-session packets rejected: ${unknownAfter - unknownBefore}`,
  );
  // The tenant's last workload takes the tenant's off-host key with it.
  await L.control.remove(gone.name);
  await L.control.remove(mate.name);
  const inv = await nic.keys();
  assert.equal(inv.filter((k) => k.tenant === 't2').length, 0, "tenant t2's keys are still listed");
  await assert.rejects(nic.tenantKey('t2'), { code: 'TG_ERR_NOT_FOUND' });
  // Tenant t1 is untouched.
  assert.ok(await pingUntilReply(W('h1-t1-w1').ns, W('h2-t1-w2').address, 5000));
});
