// Two orchestrator replicas on a real etcd (3 members), every API over mTLS with the lab's CA,
// as `tenguard demo --store etcd` runs them: a write sent to the replica that does not lead is
// forwarded to the leader (the replica calls it as spiffe://TD/service/orchestrator) and
// succeeds, a workload spin-up included (a long operation that drives the agents); the caller
// is checked by the replica it called: no certificate, another identity or plain HTTP is
// refused there, nothing is forwarded and nothing changes.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, test } from 'node:test';
import { OrchestratorControl } from '../../src/demo/orchestrator-control.js';
import type { Identity } from '../../src/identity/identity.js';
import { serviceId } from '../../src/identity/spiffe.js';
import { LabAgents } from '../../src/lab/agents.js';
import { LabCa } from '../../src/lab/ca.js';
import { buildLab, destroyLab, type LabState } from '../../src/lab/index.js';
import { apiRequest, type HttpMethod } from '../../src/util/http-json.js';
import { leftovers, testPrefix } from '../helpers/lab.js';

const prefix = testPrefix();
let lab: LabState | undefined;
let ca: LabCa | undefined;
let agents: LabAgents | undefined;
let orch: OrchestratorControl | undefined;

before(async () => {
  lab = await buildLab({ prefix, hosts: 1, tenants: 1, workloads: 0 });
  ca = await LabCa.start(lab);
  agents = await LabAgents.start(lab, { ca, logLevel: 'warn' });
  orch = await OrchestratorControl.start(lab, agents, { store: 'etcd' });
});

after(async () => {
  await orch?.close().catch(() => undefined);
  await agents?.stop().catch(() => undefined);
  await ca?.close().catch(() => undefined);
  await destroyLab(prefix).catch(() => undefined);
});

interface Health {
  replica: { address: string; leader: boolean; leaderAddress: string | null; forwarded: number };
}

/** The two replicas' sockets: the leader (the one the demo talks to) and the other. */
function sockets(): { leader: string; follower: string } {
  const both = [`${lab!.runDir}/orchestrator.sock`, `${lab!.runDir}/orchestrator-2.sock`];
  const leader = orch!.socket;
  const follower = both.find((s) => s !== leader);
  assert.ok(both.includes(leader) && follower !== undefined, `replica sockets ${leader}`);
  return { leader, follower };
}

function call(socket: string, identity: Identity | null, method: HttpMethod, path: string, body?: unknown) {
  const id = serviceId(ca!.trustDomain, 'orchestrator').uri;
  return apiRequest(ca!.endpoint(socket, identity, id), method, path, body, { timeoutMs: 60_000 });
}

async function health(socket: string): Promise<Health> {
  const r = await call(socket, agents!.operator, 'GET', '/v1/health');
  assert.equal(r.status, 200, r.raw);
  return r.body as Health;
}

/** A plain HTTP request on the socket: what an mTLS server must never answer. */
function plainHttp(socketPath: string, path: string): Promise<string> {
  return new Promise((resolve) => {
    const req = request(
      {
        socketPath,
        path,
        method: 'POST',
        timeout: 5000,
        headers: { 'content-type': 'application/json' },
      },
      (res) => {
        resolve(`answered ${res.statusCode}`);
        res.resume();
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve(`refused (${(err as NodeJS.ErrnoException).code ?? err.message})`));
    req.end(JSON.stringify({ name: 'plain', pool: '100.64.9.0/24' }));
  });
}

test('under mTLS a write at the replica that does not lead is forwarded to the leader and succeeds', {
  timeout: 120_000,
}, async (t) => {
  const { leader, follower } = sockets();
  const fh = await health(follower);
  assert.equal(fh.replica.leader, false);
  assert.equal(fh.replica.leaderAddress, leader);
  const before = fh.replica.forwarded;

  const tenant = await call(follower, agents!.operator, 'POST', '/v1/tenants', {
    name: 'acme',
    pool: '100.64.1.0/24',
  });
  assert.equal(tenant.status, 201, tenant.raw);
  assert.equal((await health(follower)).replica.forwarded, before + 1);
  const atLeader = await call(leader, agents!.operator, 'GET', '/v1/tenants/acme');
  assert.equal(atLeader.status, 200, atLeader.raw);

  // A spin-up through the follower: the leader drives the NIC agent and vSwitch daemon.
  const t0 = performance.now();
  const w = await call(follower, agents!.operator, 'POST', '/v1/workloads', {
    tenant: 'acme',
    name: 'w1',
    host: lab!.hosts[0].name,
  });
  const ms = Math.round(performance.now() - t0);
  assert.equal(w.status, 201, w.raw);
  assert.equal((w.body as { state: string }).state, 'running');
  assert.equal((await health(follower)).replica.forwarded, before + 2);
  const inst = await agents!.vswitch(lab!.hosts[0].name).list();
  assert.deepEqual(
    inst.map((i) => [i.workload, i.state]),
    [['w1', 'configured']],
  );
  // The leader's refusals come back unchanged through the follower.
  const dup = await call(follower, agents!.operator, 'POST', '/v1/tenants', {
    name: 'acme',
    pool: '100.64.2.0/24',
  });
  assert.equal(dup.status, 409, dup.raw);
  assert.equal((dup.body as { code: string }).code, 'TG_ERR_CONFLICT');
  const gone = await call(follower, agents!.operator, 'DELETE', '/v1/workloads/w1');
  assert.equal(gone.status, 200, gone.raw);
  assert.deepEqual(await agents!.vswitch(lab!.hosts[0].name).list(), []);
  t.diagnostic(`spin-up forwarded from the follower over mTLS: ${ms} ms`);
});

test('under mTLS the replica called checks the caller: no certificate, another identity, plain HTTP refused there', {
  timeout: 60_000,
}, async () => {
  const { leader, follower } = sockets();
  const before = (await health(follower)).replica.forwarded;
  const body = { name: 'intruded', pool: '100.64.5.0/24' };

  const noCert = await call(follower, null, 'POST', '/v1/tenants', body);
  assert.equal(noCert.status, 401, noCert.raw);
  assert.match(noCert.raw, /no certificate presented/);

  const intruder = await ca!.issue(serviceId(ca!.trustDomain, 'intruder').uri, 600);
  const wrong = await call(follower, intruder, 'POST', '/v1/tenants', body);
  assert.equal(wrong.status, 403, wrong.raw);
  assert.match(wrong.raw, /service\/intruder is not allowed here/);

  assert.match(await plainHttp(follower, '/v1/tenants'), /^refused/);

  assert.equal((await health(follower)).replica.forwarded, before, 'a refused request was forwarded');
  assert.equal((await call(leader, agents!.operator, 'GET', '/v1/tenants/intruded')).status, 404);
  assert.equal((await call(leader, agents!.operator, 'GET', '/v1/tenants/plain')).status, 404);
});

test('teardown leaves nothing of the lab', async () => {
  await orch!.close();
  orch = undefined;
  await agents!.stop();
  agents = undefined;
  await ca!.close();
  ca = undefined;
  await destroyLab(prefix);
  assert.deepEqual(await leftovers(prefix), []);
});
