// Scale (issue 5): one host with 1,000 workloads over 10 tenants, spun up by the orchestrator
// (src/lab/control.ts: vSwitch instance, NIC registration, vSwitch configured, one at a time) with the vSwitch daemon in
// shared isolation (a device process per workload would need ~50 GB). Every workload pings a
// same-tenant peer; the NIC agent's and the vSwitch daemon's resident memory are reported and
// the NIC's is held under 300 MB; the NIC's registration time is compared empty and full.
//
// TENGUARD_SCALE_WORKLOADS sets the size (a multiple of 10, from 20 to 2000; default 1000).
// The lab itself is the smallest one (1 host); the 1,000 workload namespaces are made by the
// test under the lab's prefix, so `lab down` or destroyLab removes them after a crash too.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { after, before, test } from 'node:test';
import type { LabAgents } from '../../src/lab/agents.js';
import { allowWithinTenantPolicy, LabControlPlane, type PlacedWorkload } from '../../src/lab/control.js';
import { buildLab, destroyLab, type LabState } from '../../src/lab/index.js';
import { mapLimit } from '../../src/lab/parallel.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { nicPrefix } from '../helpers/nic.js';
import {
  addNamespaces,
  childPids,
  deleteNamespacesBatch,
  iperf,
  percentiles,
  pingAll,
  processName,
  rssKb,
  startAgents,
} from '../helpers/vswitch.js';

const TOTAL = Number(process.env.TENGUARD_SCALE_WORKLOADS ?? 1000);
const TENANTS = 10;
const NIC_RSS_LIMIT_KB = 300 * 1024;
/** Spin-ups in flight at once: the orchestrator runs them one at a time. */
const CREATE_PARALLEL = 1;
const PING_PARALLEL = 12;
/** NIC registrations timed on an empty and on a full NIC. */
const REGISTRATION_PROBES = 50;

assert.ok(
  Number.isInteger(TOTAL) && TOTAL % TENANTS === 0 && TOTAL >= 20 && TOTAL <= 2000,
  `TENGUARD_SCALE_WORKLOADS must be a multiple of ${TENANTS} from 20 to 2000`,
);
const PER_TENANT = TOTAL / TENANTS;

const prefix = nicPrefix().replace(/^tgn/, 'tgs');
let lab: LabState | undefined;
let agents: LabAgents | undefined;
let control: LabControlPlane | undefined;
/** Workloads in tenant order; `address` is filled in by the spin-up. */
let specs: PlacedWorkload[] = [];
const figures: Record<string, unknown> = { workloads: TOTAL, tenants: TENANTS, isolation: 'shared' };

function tenantName(t: number): string {
  return `t${t}`;
}

function workloadSpecs(): PlacedWorkload[] {
  const out: PlacedWorkload[] = [];
  for (let t = 1; t <= TENANTS; t++)
    for (let w = 0; w < PER_TENANT; w++) {
      const name = `s${t}-w${w}`;
      out.push({
        name,
        tenant: tenantName(t),
        host: 'h1',
        // The namespace the orchestrator gives it on h1 (made here in bulk beforehand).
        ns: `${prefix}-h1-o-${name}`,
        address: '',
        labels: {},
      });
    }
  return out;
}

/** Median ms of NIC registrations (and removals) of throwaway workloads of a probe tenant. */
async function timeNicRegistration(a: LabAgents, tag: string): Promise<number> {
  const nic = a.nic('h1');
  const ms: number[] = [];
  for (let i = 0; i < REGISTRATION_PROBES; i++) {
    const workload = `probe-${tag}-${i}`;
    const t0 = performance.now();
    const c = await nic.registerWorkload({
      tenant: 'probe',
      workload,
      address: `100.127.${tag === 'empty' ? 1 : 2}.${i + 10}`,
      vswitchPublicKey: publicKeyOf(generatePrivateKey()).toString('base64'),
    });
    ms.push(performance.now() - t0);
    assert.equal('psk' in c, false);
    await nic.removeWorkload(workload);
  }
  return percentiles(ms).median;
}

function memory(a: LabAgents): { nicKb: number; vswitchdKb: number } {
  return { nicKb: rssKb(a.nics.get('h1')!.pid), vswitchdKb: rssKb(a.vswitchds.get('h1')!.pid) };
}

before(async () => {
  lab = await buildLab({ prefix, hosts: 1, tenants: 1, workloads: 1 });
  specs = workloadSpecs();
  const t0 = performance.now();
  await addNamespaces(specs.map((s) => s.ns));
  figures.namespacesMs = Math.round(performance.now() - t0);
  agents = await startAgents(lab, 'shared', { logLevel: 'warn' });
  control = await LabControlPlane.start(lab, agents);
  // Tenant t1 is the lab's (100.64.1.0/24); t gets 100.(64+t).0.0/16, inside the lab's namespaces only.
  for (let t = 2; t <= TENANTS; t++) {
    await control.orchestrator.service.createTenant({ name: tenantName(t), pool: `100.${64 + t}.0.0/16` });
    await control.setPolicy(tenantName(t), allowWithinTenantPolicy(tenantName(t)));
  }
});

after(async () => {
  const t0 = performance.now();
  await control?.close().catch(() => undefined);
  await agents?.stop().catch(() => undefined);
  figures.agentsStopMs = Math.round(performance.now() - t0);
  await deleteNamespacesBatch(specs.map((s) => s.ns));
  await destroyLab(prefix).catch(() => undefined);
  figures.teardownMs = Math.round(performance.now() - t0);
  process.stdout.write(`scale figures: ${JSON.stringify(figures)}\n`);
});

test(`${TOTAL} workloads over ${TENANTS} tenants on one host are created`, { timeout: 600_000 }, async () => {
  const a = agents!;
  // The harness's pids are the agents themselves (ip netns exec execs them).
  assert.equal(processName(a.nics.get('h1')!.pid), 'node');
  assert.equal(processName(a.vswitchds.get('h1')!.pid), 'node');
  figures.rssBeforeKb = memory(a);
  figures.nicRegistrationEmptyMs = await timeNicRegistration(a, 'empty');

  const per: number[] = new Array(specs.length).fill(0);
  const t0 = performance.now();
  await mapLimit(
    specs.map((s, i) => [s, i] as const),
    CREATE_PARALLEL,
    async ([s, i]) => {
      const ts = performance.now();
      const [p] = await control!.place([{ name: s.name, tenant: s.tenant, host: s.host }]);
      assert.equal(p.ns, s.ns);
      s.address = p.address;
      per[i] = performance.now() - ts;
    },
  );
  const total = performance.now() - t0;
  const p = percentiles(per);
  figures.createTotalMs = Math.round(total);
  figures.createPerWorkloadMs = {
    wall: Math.round((total / specs.length) * 10) / 10,
    median: Math.round(p.median),
    p95: Math.round(p.p95),
    max: Math.round(p.max),
    parallel: CREATE_PARALLEL,
  };
  // Spin-up time must not grow with the count: the last tenth is compared with the first.
  const tenth = Math.max(1, Math.floor(specs.length / 10));
  const first = percentiles(per.slice(0, tenth)).median;
  const last = percentiles(per.slice(-tenth)).median;
  figures.createMedianFirstTenthMs = Math.round(first);
  figures.createMedianLastTenthMs = Math.round(last);

  const list = await a.vswitch('h1').list();
  assert.equal(list.length, TOTAL);
  assert.equal(list.filter((i) => i.state === 'configured').length, TOTAL);
  assert.ok(
    list.every((i) => i.pid === null),
    'shared isolation: no device process per instance',
  );
  const health = (await a.vswitch('h1').health()) as { running: number; crashed: number };
  assert.equal(health.running, TOTAL);
  assert.equal(health.crashed, 0);
  assert.equal((await a.nic('h1').workloads()).length, TOTAL);

  figures.policyPushed = true;
  figures.rssAfterCreateKb = memory(a);
  figures.nicRegistrationFullMs = await timeNicRegistration(a, 'full');
  assert.ok(
    (figures.nicRegistrationFullMs as number) < (figures.nicRegistrationEmptyMs as number) * 3 + 20,
    `NIC registration got slower with the count: ${JSON.stringify(figures)}`,
  );
  assert.ok(
    last < first * 3 + 100,
    `spin-up got slower with the count: median ${first.toFixed(0)} ms first, ${last.toFixed(0)} ms last`,
  );
});

test('every workload reaches a same-tenant peer', { timeout: 600_000 }, async () => {
  const jobs = specs.map((s, i) => {
    // The next workload of the same tenant, wrapping around.
    const t = Math.floor(i / PER_TENANT);
    const peer = specs[t * PER_TENANT + (((i % PER_TENANT) + 1) % PER_TENANT)];
    assert.equal(peer.tenant, s.tenant);
    return { ns: s.ns, target: peer.address };
  });
  const t0 = performance.now();
  const ok = await pingAll(jobs, PING_PARALLEL);
  figures.pingMs = Math.round(performance.now() - t0);
  const reached = ok.filter(Boolean).length;
  figures.pingReached = reached;
  const failed = specs.filter((_, i) => !ok[i]).map((s) => s.name);
  assert.equal(reached, TOTAL, `no reply for ${failed.length}: ${failed.slice(0, 20).join(', ')}`);
  // A cross-tenant ping is still dropped at this size.
  const [blocked] = await pingAll([{ ns: specs[0].ns, target: specs[PER_TENANT].address }], 1, 1);
  assert.equal(blocked, false, 'a ping across tenants got through');
});

test('resident memory: NIC agent under 300 MB, vSwitch daemon reported', { timeout: 120_000 }, async () => {
  const a = agents!;
  const m = memory(a);
  const children = await childPids(a.vswitchds.get('h1')!.pid);
  figures.rssAfterPingKb = m;
  figures.vswitchdChildren = children.length;
  figures.vswitchdChildrenRssKb = children.reduce((s, p) => s + rssKb(p), 0);
  figures.perWorkloadVswitchdKb = Math.round(m.vswitchdKb / TOTAL);
  // One pair's throughput with all the other instances in place.
  const x = specs[0];
  const y = specs[1];
  figures.iperfTcpMbit = Math.round((await iperf(y.ns, y.address, x.ns, { seconds: 3 })).mbitPerSecond);
  assert.ok(m.nicKb > 0 && m.vswitchdKb > 0);
  assert.equal(children.length, 0, 'shared isolation runs no device processes');
  assert.ok(m.nicKb < NIC_RSS_LIMIT_KB, `NIC agent RSS ${m.nicKb} kB is not under 300 MB`);
});
