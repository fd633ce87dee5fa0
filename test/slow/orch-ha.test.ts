// High availability of the control plane: 3 orchestrator replicas (their own processes) on a
// 3-member etcd cluster (started here on loopback ports, data in a temporary directory, every
// member ended by pid at the end), over a two-host lab. Under a loop that creates, migrates
// and deletes workloads through any replica, and a ping stream between two anchor workloads:
// - SIGKILL the leading replica: another leads within 3 s; the loop completes every step (a
//   step whose answer was lost is read back before it is retried, as a careful client does);
//   no workload is lost or duplicated; each NIC's key inventory and registrations equal the
//   store; the ping stream's longest gap is printed;
// - one etcd member killed: the API keeps working (a workload created and deleted);
// - a second member killed (no quorum): reads and writes answer 503 TG_ERR_STORE_UNAVAILABLE,
//   health says the store is unavailable; the store is unchanged when the members return,
//   and the API works again.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { LabAgents } from '../../src/lab/agents.js';
import { EtcdCluster } from '../../src/lab/etcd.js';
import { buildLab, destroyLab, type LabState, listNamespaces } from '../../src/lab/index.js';
import { EtcdStore } from '../../src/orchestrator/etcd-store.js';
import type { WorkloadRecord } from '../../src/orchestrator/model.js';
import { type ApiResult, apiRequest, type HttpMethod } from '../../src/util/http-json.js';
import { OrchProcess } from '../helpers/orch.js';
import { type PingStream, pingStream } from '../helpers/ping.js';

const prefix = `tge${[...randomBytes(2)].map((b) => 'abcdefghijklmnopqrstuvwxyz'[b % 26]).join('')}`;
let lab: LabState | null = null;
let agents: LabAgents | null = null;
let cluster: EtcdCluster | null = null;
const replicas: OrchProcess[] = [];
const figures: Record<string, unknown> = {};
/** Every 503 answer `call` retried (printed with the figures). */
const answers503: string[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  lab = await buildLab({ prefix, hosts: 2, tenants: 1, workloads: 0 });
  agents = await LabAgents.start(lab);
  cluster = await EtcdCluster.start(prefix, 3);
  const store = `etcd:${cluster.endpoints.join(',')}`;
  for (let i = 0; i < 3; i++) {
    const r = new OrchProcess('', join(lab.runDir, `orch-${i}.sock`), [
      '--store',
      store,
      '--reconcile-ms',
      '1000',
    ]);
    replicas.push(r);
    await r.start();
  }
});

after(async () => {
  for (const r of replicas) await r.stop().catch(() => undefined);
  if (process.env.TG_ORCH_LOGS === '1') for (const r of replicas) process.stderr.write(r.logs);
  await agents?.stop().catch(() => undefined);
  await cluster?.stop().catch(() => undefined);
  await destroyLab(prefix).catch(() => undefined);
  for (const r of replicas) rmSync(r.socket, { force: true });
  process.stderr.write(`orchestrator HA figures: ${JSON.stringify(figures)}\n`);
  process.stderr.write(`503 answers retried: ${JSON.stringify(answers503, null, 1)}\n`);
  const left = (await listNamespaces()).filter((n) => n.startsWith(prefix));
  assert.deepEqual(left, [], 'namespaces left behind');
});

const alive = (): OrchProcess[] =>
  replicas.filter((r) => r.proc !== null && r.proc.exitCode === null && r.proc.signalCode === null);

/**
 * An operator's client of several replicas: tries them in turn; a replica that is gone, or an
 * answer 503 (no leader yet, store failing), is tried again until `ms` pass.
 */
async function call(method: HttpMethod, path: string, body?: unknown, ms = 20_000): Promise<ApiResult> {
  const end = Date.now() + ms;
  let last: ApiResult | null = null;
  let lastErr = '';
  for (let i = 0; i === 0 || Date.now() < end; i++) {
    const rs = alive();
    const r = rs[i % rs.length];
    try {
      const res = await apiRequest(r.socket, method, path, body, { timeoutMs: 60_000 });
      if (res.status !== 503) return res;
      answers503.push(`${method} ${path}: ${res.raw.slice(0, 300)}`);
      last = res;
    } catch (err) {
      lastErr = (err as Error).message;
    }
    await sleep(100);
  }
  if (last !== null) return last;
  throw new Error(`${method} ${path}: no replica answered within ${ms} ms (${lastErr})`);
}

async function ok(method: HttpMethod, path: string, body?: unknown): Promise<unknown> {
  const r = await call(method, path, body);
  assert.ok(r.status >= 200 && r.status < 300, `${method} ${path}: ${r.status} ${r.raw}`);
  return r.body;
}

async function health(r: OrchProcess): Promise<Record<string, unknown> | null> {
  return apiRequest(r.socket, 'GET', '/v1/health', undefined, { timeoutMs: 5000 }).then(
    (x) => (x.status === 200 ? (x.body as Record<string, unknown>) : null),
    () => null,
  );
}

async function leaders(): Promise<OrchProcess[]> {
  const out: OrchProcess[] = [];
  for (const r of alive()) {
    const h = await health(r);
    if ((h?.replica as { leader?: boolean } | undefined)?.leader === true) out.push(r);
  }
  return out;
}

async function workload(name: string): Promise<WorkloadRecord | null> {
  const r = await call('GET', `/v1/workloads/${name}`);
  if (r.status === 404) return null;
  assert.equal(r.status, 200, r.raw);
  return r.body as WorkloadRecord;
}

/** Waits until a workload is running (the reconciler finishes one a dead leader left half done). */
async function running(name: string, ms = 20_000): Promise<WorkloadRecord | null> {
  const end = Date.now() + ms;
  for (;;) {
    const w = await workload(name);
    if (w === null || w.state === 'running' || Date.now() > end) return w;
    await sleep(200);
  }
}

/** One step, retried until done; an answer lost (5xx, broken connection) is read back first. */
async function step(
  what: string,
  run: () => Promise<ApiResult>,
  done: () => Promise<boolean>,
): Promise<number> {
  const end = Date.now() + 30_000;
  let retries = 0;
  for (;;) {
    const r = await run().catch((err: Error) => ({ status: 0, body: null, raw: err.message }) as ApiResult);
    if (r.status >= 200 && r.status < 300) return retries;
    if (await done()) return retries;
    if (Date.now() > end) throw new Error(`${what}: not done within 30 s (last answer ${r.status} ${r.raw})`);
    retries++;
    await sleep(300);
  }
}

interface LoopResult {
  cycles: number;
  retries: number;
  errors: string[];
  live: Set<string>;
}

/** Creates, migrates and deletes workloads until stop() (one at a time, each step completed). */
function churn(): { stop: () => Promise<LoopResult> } {
  let stopping = false;
  const res: LoopResult = { cycles: 0, retries: 0, errors: [], live: new Set() };
  const loop = (async () => {
    for (let i = 0; !stopping; i++) {
      const name = `c${i}`;
      const from = `h${(i % 2) + 1}`;
      const to = `h${((i + 1) % 2) + 1}`;
      try {
        res.retries += await step(
          `create ${name}`,
          () => call('POST', '/v1/workloads', { tenant: 'ha', name, host: from }),
          async () => (await running(name)) !== null,
        );
        res.live.add(name);
        assert.equal((await running(name))?.state, 'running');
        res.retries += await step(
          `migrate ${name}`,
          () => call('POST', `/v1/workloads/${name}/migrate`, { to }),
          async () => {
            const w = await running(name);
            return w?.host === to && w.state === 'running';
          },
        );
        res.retries += await step(
          `delete ${name}`,
          () => call('DELETE', `/v1/workloads/${name}`),
          async () => (await workload(name)) === null,
        );
        res.live.delete(name);
        res.cycles++;
      } catch (err) {
        res.errors.push((err as Error).message);
        return;
      }
    }
  })();
  return {
    stop: async () => {
      stopping = true;
      await loop;
      return res;
    },
  };
}

/** Store vs NICs: each workload on exactly its host's NIC, with its PSK, and nothing else. */
async function inventoriesMatchStore(): Promise<void> {
  const ws = ((await ok('GET', '/v1/workloads')) as { workloads: WorkloadRecord[] }).workloads;
  assert.ok(
    ws.every((w) => w.state === 'running'),
    `not all running: ${JSON.stringify(ws.map((w) => [w.name, w.state]))}`,
  );
  for (const h of lab!.hosts) {
    const want = ws
      .filter((w) => w.host === h.name)
      .map((w) => w.name)
      .sort();
    const nic = agents!.nic(h.name);
    const registered = (await nic.workloads()).map((x) => x.workload).sort();
    assert.deepEqual(registered, want, `${h.name}: NIC registrations vs the store`);
    const psks = (await nic.keys())
      .filter((k) => k.kind === 'workload-psk')
      .map((k) => k.workload)
      .sort();
    assert.deepEqual(psks, want, `${h.name}: NIC workload keys vs the store`);
  }
}

let anchorStream: PingStream | null = null;

test('setup through any replica: hosts, tenant, policy, two anchors and a ping stream between them', async () => {
  for (const h of lab!.hosts)
    await ok('POST', '/v1/hosts', {
      name: h.name,
      nicApi: h.nicApiSocket,
      vswitchApi: agents!.vswitchds.get(h.name)!.socket,
      netnsPrefix: `${prefix}-${h.name}-o-`,
    });
  await ok('POST', '/v1/tenants', { name: 'ha', pool: '100.64.40.0/24' });
  await ok('PUT', '/v1/tenants/ha/policy', {
    version: 1,
    tenant: 'ha',
    rules: [
      { id: 'out', action: 'allow', direction: 'egress', workloads: { labels: {} }, peers: [{ labels: {} }] },
      { id: 'in', action: 'allow', direction: 'ingress', workloads: { labels: {} }, peers: [{ labels: {} }] },
    ],
  });
  const a = (await ok('POST', '/v1/workloads', {
    tenant: 'ha',
    name: 'anchor-a',
    host: 'h1',
  })) as WorkloadRecord;
  const b = (await ok('POST', '/v1/workloads', {
    tenant: 'ha',
    name: 'anchor-b',
    host: 'h2',
  })) as WorkloadRecord;
  anchorStream = pingStream(a.netns, b.address, 0.02, 600);
  await sleep(1000);
  assert.ok(anchorStream.replies().length > 10, 'anchors do not reach each other');
  assert.equal((await leaders()).length, 1, 'exactly one replica leads');
});

test('SIGKILL the leading replica under churn: a new leader within 3 s, nothing lost or duplicated', async () => {
  const loop = churn();
  await sleep(4000);
  const [leader] = await leaders();
  assert.ok(leader !== undefined, 'no leader');
  const tKill = Date.now();
  leader.proc!.kill('SIGKILL');
  let newLeader: OrchProcess | null = null;
  while (Date.now() - tKill < 10_000 && newLeader === null) {
    const ls = (await leaders()).filter((r) => r !== leader);
    if (ls.length > 0) newLeader = ls[0];
    else await sleep(50);
  }
  const takeoverMs = Date.now() - tKill;
  await sleep(6000);
  const r = await loop.stop();
  figures.leaderKill = { takeoverMs, cycles: r.cycles, retries: r.retries, errors: r.errors };
  assert.ok(newLeader !== null, 'no new leader within 10 s');
  assert.ok(takeoverMs <= 3000, `new leader after ${takeoverMs} ms`);
  assert.deepEqual(r.errors, []);
  assert.ok(r.cycles >= 2, `only ${r.cycles} create/migrate/delete cycles`);
  assert.equal((await leaders()).length, 1, 'exactly one replica leads');
  // Nothing lost or duplicated: the store holds the anchors and the loop's live workload only.
  const ws = ((await ok('GET', '/v1/workloads')) as { workloads: WorkloadRecord[] }).workloads;
  assert.deepEqual(ws.map((w) => w.name).sort(), ['anchor-a', 'anchor-b', ...r.live].sort());
  // Let a reconciliation pass of the new leader settle what the old one left half done.
  await ok('POST', '/v1/reconcile', {});
  await inventoriesMatchStore();
  const s = anchorStream!.replies();
  let gap = 0;
  for (let i = 1; i < s.length; i++) if (s[i] >= tKill - 5000) gap = Math.max(gap, s[i] - s[i - 1]);
  figures.pingGapAroundLeaderKillMs = Math.round(gap);
  process.stderr.write(
    `longest ping gap around the leader kill: ${Math.round(gap)} ms; takeover ${takeoverMs} ms\n`,
  );
});

test('one etcd member killed (the raft leader): the API keeps working', async () => {
  const killed = await cluster!.leaderIndex();
  assert.ok(killed >= 0, 'no etcd leader');
  const n503 = answers503.length;
  await cluster!.kill(killed);
  figures.etcdMemberKilled = killed;
  const t0 = Date.now();
  // A careful client: an answer lost (503) is read back before the step is retried.
  let retries = 0;
  retries += await step(
    'create m1',
    () => call('POST', '/v1/workloads', { tenant: 'ha', name: 'm1', host: 'h1' }, 0),
    async () => (await running('m1')) !== null,
  );
  retries += await step(
    'migrate m1',
    () => call('POST', '/v1/workloads/m1/migrate', { to: 'h2' }, 0),
    async () => (await running('m1'))?.host === 'h2',
  );
  retries += await step(
    'delete m1',
    () => call('DELETE', '/v1/workloads/m1', undefined, 0),
    async () => (await workload('m1')) === null,
  );
  figures.oneMemberDown = {
    createMigrateDeleteMs: Date.now() - t0,
    retries,
    answers503: answers503.length - n503,
  };
  assert.equal(await workload('m1'), null);
  await inventoriesMatchStore();
  // The killed member is the one to stay down; the next test kills a second one.
  oneDown = killed;
});

let oneDown = -1;

test('two etcd members killed: 503 TG_ERR_STORE_UNAVAILABLE, nothing corrupted, resumes when they return', async () => {
  const direct = await EtcdStore.open({ endpoints: cluster!.endpoints });
  const before = await direct.dump();
  await direct.close();
  const second = [0, 1, 2].find((i) => i !== oneDown)!;
  await cluster!.kill(second);
  try {
    const r = alive()[0];
    const t0 = Date.now();
    const read = await apiRequest(r.socket, 'GET', '/v1/workloads', undefined, { timeoutMs: 30_000 });
    figures.noQuorumReadMs = Date.now() - t0;
    assert.equal(read.status, 503, read.raw);
    assert.equal((read.body as { code: string }).code, 'TG_ERR_STORE_UNAVAILABLE', read.raw);
    for (const x of alive()) {
      const w = await apiRequest(
        x.socket,
        'POST',
        '/v1/workloads',
        { tenant: 'ha', name: 'q1', host: 'h1' },
        {
          timeoutMs: 30_000,
        },
      );
      assert.equal(w.status, 503, w.raw);
      assert.equal((w.body as { code: string }).code, 'TG_ERR_STORE_UNAVAILABLE', w.raw);
    }
    const h = (await apiRequest(r.socket, 'GET', '/v1/health', undefined, { timeoutMs: 30_000 })).body as {
      status: string;
      store: { state: string; cause?: string };
    };
    assert.equal(h.status, 'degraded');
    assert.equal(h.store.state, 'unavailable');
    figures.noQuorumHealth = h.store;
    assert.equal((await leaders()).length, 0, 'a replica leads without quorum');
    // The data plane does not depend on the control plane.
    const n = anchorStream!.replies().length;
    await sleep(1000);
    assert.ok(anchorStream!.replies().length > n + 10, 'anchor traffic stopped without quorum');
  } finally {
    cluster!.restart(oneDown);
    cluster!.restart(second);
  }
  await cluster!.waitReady(30_000);
  const t1 = Date.now();
  await ok('POST', '/v1/workloads', { tenant: 'ha', name: 'q2', host: 'h2' });
  figures.resumeAfterQuorumMs = Date.now() - t1;
  const direct2 = await EtcdStore.open({ endpoints: cluster!.endpoints });
  const now = await direct2.dump();
  await direct2.close();
  // Everything that was there is there unchanged; q1 was never created; q2 is new.
  const strip = (d: typeof before) =>
    d.entries
      .filter((e) => e.key !== 'q2' && (e.value as { workload?: string }).workload !== 'q2')
      .map((e) => ({ kind: e.kind, key: e.key, value: e.value, modRevision: e.modRevision }));
  assert.deepEqual(strip(now), strip(before));
  assert.equal(await workload('q1'), null);
  await ok('DELETE', '/v1/workloads/q2');
  await inventoriesMatchStore();
  const s = await anchorStream!.stop();
  anchorStream = null;
  figures.anchorPing = {
    transmitted: s.transmitted,
    received: s.received,
    lost: s.lost,
    maxGapMs: s.maxGapMs,
  };
  process.stderr.write(
    `anchor ping stream over the whole test: longest gap ${s.maxGapMs} ms, lost ${s.lost} of ${s.transmitted}\n`,
  );
});
