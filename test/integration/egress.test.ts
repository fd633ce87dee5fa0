// Egress by DNS name and by CIDR through the orchestrator, with real traffic in lab namespaces
// (issue 15): the lab's outside namespace serves web A (allowed.example) and web B
// (other.example) and their names; a workload resolves through its tenant's DNS server at the
// NIC, which forwards only names the egress policy allows; HTTP to an allowed name passes,
// source-NATed to the NIC's uplink address; other names and raw addresses are blocked unless
// a rule allows them; the flow log names both; captures show WireGuard on the host link and
// the fabric, plaintext only on the uplink and only from the uplink address. Bad upstream
// answers (malformed, huge) are counted drops.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import dnsPacket from 'dns-packet';
import { analyseCapture, startCapture } from '../../src/demo/capture.js';
import type { WorkloadRecord } from '../../src/orchestrator/model.js';
import type { FlowRecord } from '../../src/policy/flowlog.js';
import { run, runOk } from '../../src/util/exec.js';
import { type OrchLab, startOrchLab, stopOrchLab } from '../helpers/orch.js';
import { resolveIn, udpRaw } from '../helpers/svc.js';

const prefix = `tge${[...randomBytes(4)].map((b) => 'abcdefghijklmnopqrstuvwxyz0123456789'[b % 36]).join('')}`;
let L: OrchLab | undefined;
let client: WorkloadRecord | undefined;

const WEB_OUT = {
  id: 'web-out',
  direction: 'egress',
  workloads: { labels: { app: 'client' } },
  peers: [{ fqdn: 'allowed.example' }],
  protocol: 'tcp',
  ports: [80],
};
const BAD_UPSTREAM = {
  id: 'bad-upstream',
  direction: 'egress',
  workloads: { labels: { app: 'client' } },
  peers: [{ fqdn: 'malformed.example' }, { fqdn: 'huge.example' }],
  protocol: 'udp',
  ports: [9],
};
const OTHER_HTTPS = {
  id: 'other-https',
  direction: 'egress',
  workloads: { labels: { app: 'client' } },
  peers: [{ fqdn: 'other.example' }],
  protocol: 'tcp',
  ports: [443],
};
const policy = (...rules: object[]) => ({ version: 1, tenant: 'acme', rules });

/** curl in the workload's namespace (its resolver is the tenant's DNS server); body or the failure. */
async function http(url: string, timeoutS = 3): Promise<{ ok: boolean; body: string; code: number }> {
  const r = await run('ip', ['netns', 'exec', client!.netns, 'curl', '-s', '-m', String(timeoutS), url], {
    timeoutMs: (timeoutS + 10) * 1000,
  });
  return { ok: r.code === 0, body: r.stdout, code: r.code };
}

async function flows(): Promise<FlowRecord[]> {
  return (await L!.client.flows({ tenant: 'acme', limit: 1000 })).flows as unknown as FlowRecord[];
}

async function egressCounters(): Promise<Record<string, unknown>> {
  const net = await L!.agents.nic('h1').getTenantNetwork('acme');
  return net.counters.egress as Record<string, unknown>;
}

before(async () => {
  L = await startOrchLab(prefix, 1, [], { outside: true });
  await L.client.createTenant({ name: 'acme', pool: '100.64.70.0/24' });
  await L.client.setPolicy('acme', policy(WEB_OUT, BAD_UPSTREAM));
  client = await L.client.createWorkload({
    tenant: 'acme',
    name: 'client',
    host: 'h1',
    labels: { app: 'client' },
  });
});

after(async () => {
  await stopOrchLab(L, prefix);
});

test('the tenant DNS server forwards allowed names upstream and refuses the others', {
  timeout: 60_000,
}, async () => {
  const o = L!.lab.outside!;
  const res = await resolveIn(client!.netns, client!.dns!, [
    { type: 'A', name: 'allowed.example' },
    { type: 'A', name: 'other.example' },
    { type: 'A', name: 'client.acme.tg' },
  ]);

  assert.deepEqual(res[0].answers, [o.webA]);
  assert.equal(res[1].error, 'EREFUSED', 'a name no egress rule allows must be refused');
  assert.deepEqual(res[2].answers, [client!.address]);
  const c = await egressCounters();
  assert.ok((c.dnsForwarded as number) >= 1 && (c.dnsRefused as number) >= 1, JSON.stringify(c));
  assert.equal(c.cachedAddresses, 1);
});

test('HTTP to the allowed name passes, source-NATed; captures show plaintext only on the uplink', {
  timeout: 90_000,
}, async (t) => {
  const lab = L!.lab;
  const o = lab.outside!;
  const h = lab.hosts[0];
  const up = o.uplinks[0];
  const dir = join(tmpdir(), `${prefix}-cap`);
  rmSync(dir, { recursive: true, force: true });
  await runOk('mkdir', ['-p', dir]);
  const caps = await Promise.all([
    startCapture('host link', h.nicNs, h.pcie.nicIf, join(dir, 'host.pcap')),
    startCapture('fabric', h.nicNs, h.fabric.nicIf, join(dir, 'fabric.pcap')),
    startCapture('uplink', h.nicNs, up.nicIf, join(dir, 'uplink.pcap')),
  ]);
  let r: { ok: boolean; body: string };
  try {
    r = await http('http://allowed.example/');
  } finally {
    for (const c of caps) await c.stop();
  }
  t.diagnostic(`GET http://allowed.example/ -> ${JSON.stringify(r.body)}`);
  assert.ok(r.ok, 'HTTP to allowed.example failed');
  assert.match(
    r.body,
    new RegExp(`tenguard outside web A:allowed\\.example at ${o.webA.replace(/\./g, '\\.')}`),
  );
  const marker = Buffer.from('tenguard outside web A');
  const [host, fabric, uplink] = await Promise.all(caps.map((c) => analyseCapture(c.where, c.file, marker)));
  t.diagnostic(JSON.stringify({ host, fabric, uplink }));
  for (const a of [host, fabric]) {
    assert.equal(a.markerFound, false, `plaintext on the ${a.where}`);
    assert.equal(a.otherFrames, 0, `non-WireGuard frames on the ${a.where}`);
    assert.equal(a.udpPackets, a.wgPackets, `UDP that is not WireGuard on the ${a.where}`);
  }
  assert.ok(host.wgPackets > 0, 'no WireGuard on the host link');
  assert.equal(uplink.markerFound, true, 'the positive control: the body is plaintext on the uplink');
  const addrs = await runOk('tshark', [
    '-r',
    join(dir, 'uplink.pcap'),
    '-T',
    'fields',
    '-e',
    'ip.src',
    '-e',
    'ip.dst',
  ]);
  const seen = new Set(addrs.split(/\s+/).filter((a) => a !== ''));
  t.diagnostic(`addresses on the uplink: ${[...seen].join(', ')}`);
  assert.ok(seen.has(up.snatV4), 'the uplink address (SNAT) is on the uplink');
  assert.ok(!seen.has(client!.address), "the workload's own address leaked onto the uplink");
  for (const a of seen) assert.ok(!a.startsWith('100.64.'), `overlay address ${a} on the uplink`);
  rmSync(dir, { recursive: true, force: true });
  const c = await egressCounters();
  const snat = c.snat as { translated: number; reversed: number };
  assert.ok(snat.translated > 0 && snat.reversed > 0, JSON.stringify(c));
});

test('HTTP to another name and to its raw address is blocked; the flow log names both', {
  timeout: 90_000,
}, async () => {
  const o = L!.lab.outside!;
  const byName = await http('http://other.example/');
  assert.equal(byName.ok, false, 'other.example must not resolve');
  const before = (await egressCounters()).denied as number;
  const raw = await http(`http://${o.webB}/`, 2);
  assert.equal(raw.ok, false, 'the raw address of other.example must be blocked');
  assert.ok(((await egressCounters()).denied as number) > before, 'the denied packets are counted');
  // With a rule that lets other.example resolve (for HTTPS only), HTTP to it is still blocked,
  // and the denied flow carries the name.
  await L!.client.setPolicy('acme', policy(WEB_OUT, BAD_UPSTREAM, OTHER_HTTPS));
  const res = await resolveIn(client!.netns, client!.dns!, [{ type: 'A', name: 'other.example' }]);
  assert.deepEqual(res[0].answers, [o.webB]);
  const named = await http('http://other.example/', 2);
  assert.equal(named.ok, false, 'HTTP (port 80) to other.example must be blocked');
  const f = await flows();
  const allowed = f.find((r) => r.verdict === 'allow' && r.dst === o.webA && r.dstPort === 80);
  assert.ok(allowed, 'no allowed egress record to allowed.example');
  assert.equal(allowed.outsideName, 'allowed.example');
  assert.equal(allowed.egressRule, 'acme/web-out');
  assert.equal(allowed.srcWorkload, 'client');
  assert.equal(allowed.src, client!.address, 'the flow log keeps the workload address (before NAT)');
  const denied = f.filter((r) => r.verdict === 'deny' && r.dst === o.webB && r.dstPort === 80);
  assert.ok(denied.length > 0, 'no denied egress record to other.example');
  assert.ok(
    denied.some((r) => r.outsideName === 'other.example'),
    `no denied record naming other.example: ${JSON.stringify(denied)}`,
  );
  assert.ok(denied.every((r) => r.rule === 'acme/default-deny'));
});

test('a toCIDR rule allows the raw address', { timeout: 60_000 }, async () => {
  const o = L!.lab.outside!;
  await L!.client.setPolicy(
    'acme',
    policy(WEB_OUT, BAD_UPSTREAM, OTHER_HTTPS, {
      id: 'web-b-cidr',
      direction: 'egress',
      workloads: { labels: { app: 'client' } },
      peers: [{ cidr: `${o.webB}/32` }],
      protocol: 'tcp',
      ports: [80],
    }),
  );
  const r = await http(`http://${o.webB}/`);
  assert.ok(r.ok, 'HTTP to the raw address with a toCIDR rule failed');
  assert.match(r.body, /tenguard outside web B:other\.example/);
  const f = await flows();
  assert.ok(f.some((x) => x.verdict === 'allow' && x.dst === o.webB && x.egressRule === 'acme/web-b-cidr'));
});

test('malformed and huge upstream answers are counted drops', { timeout: 60_000 }, async () => {
  const before = (await egressCounters()).upstream as Record<string, number>;
  for (const name of ['malformed.example', 'huge.example']) {
    const q = dnsPacket.encode({ type: 'query', id: 11, questions: [{ type: 'A', name }] });
    assert.equal(
      await udpRaw(client!.netns, client!.dns!, 53, q.toString('hex')),
      null,
      `${name} got an answer`,
    );
  }
  const after = (await egressCounters()).upstream as Record<string, number>;
  assert.ok(after.malformed > before.malformed, `malformed: ${JSON.stringify(after)}`);
  assert.ok(after.oversized > before.oversized, `oversized: ${JSON.stringify(after)}`);
  // The NIC still answers afterwards.
  const ok = await resolveIn(client!.netns, client!.dns!, [{ type: 'A', name: 'allowed.example' }]);
  assert.deepEqual(ok[0].answers, [L!.lab.outside!.webA]);
});
