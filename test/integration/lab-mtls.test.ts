// Every daemon of a lab under mTLS with the lab's CA (src/lab/ca.ts), as the demo runs them:
// the NIC agent, the vSwitch daemon and the orchestrator enrol with one-time join tokens and
// serve their APIs over mTLS on Unix sockets; the CA serves its CSR API the same way. Each
// API serves the operator, and refuses a call without a client certificate, a call with a
// certificate of another SPIFFE identity, and plain HTTP.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, test } from 'node:test';
import { OrchestratorControl } from '../../src/demo/orchestrator-control.js';
import { CSR_COLLECTION_PATH } from '../../src/identity/csr.js';
import { CA_SERVICE_NAME } from '../../src/identity/enrolment.js';
import type { Identity } from '../../src/identity/identity.js';
import { serviceId } from '../../src/identity/spiffe.js';
import { LabAgents } from '../../src/lab/agents.js';
import { LabCa } from '../../src/lab/ca.js';
import { buildLab, destroyLab, type LabState } from '../../src/lab/index.js';
import { apiRequest } from '../../src/util/http-json.js';
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
  orch = await OrchestratorControl.start(lab, agents);
});

after(async () => {
  await orch?.close().catch(() => undefined);
  await agents?.stop().catch(() => undefined);
  await ca?.close().catch(() => undefined);
  await destroyLab(prefix).catch(() => undefined);
});

interface Api {
  name: string;
  socket: string;
  serverId: string;
  path: string;
}

function apis(): Api[] {
  const td = ca!.trustDomain;
  const host = lab!.hosts[0];
  return [
    { name: 'NIC agent', socket: host.nicApiSocket, serverId: agents!.nicId(host.name), path: '/v1/tenants' },
    {
      name: 'vSwitch daemon',
      socket: agents!.vswitchSocket(host.name),
      serverId: serviceId(td, `vswitchd-${host.name}`).uri,
      path: '/v1/instances',
    },
    {
      name: 'orchestrator',
      socket: orch!.socket,
      serverId: serviceId(td, 'orchestrator').uri,
      path: '/v1/tenants',
    },
    {
      name: 'CA (CSR API)',
      socket: ca!.socket,
      serverId: serviceId(td, CA_SERVICE_NAME).uri,
      path: CSR_COLLECTION_PATH,
    },
  ];
}

async function call(api: Api, identity: Identity | null): Promise<{ status: number; raw: string }> {
  const r = await apiRequest(ca!.endpoint(api.socket, identity, api.serverId), 'GET', api.path, undefined, {
    timeoutMs: 10_000,
  });
  return { status: r.status, raw: r.raw };
}

/** A plain HTTP request on the socket: what an mTLS server must never answer. */
function plainHttp(socketPath: string, path: string): Promise<string> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path, method: 'GET', timeout: 5000 }, (res) => {
      resolve(`answered ${res.statusCode}`);
      res.resume();
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve(`refused (${(err as NodeJS.ErrnoException).code ?? err.message})`));
    req.end();
  });
}

test('every daemon serves the operator over mTLS with the lab CA', async () => {
  for (const api of apis()) {
    const r = await call(api, agents!.operator);
    assert.equal(r.status, 200, `${api.name} refused the operator: ${r.raw}`);
  }
  // And the orchestrator calls the NIC agent as itself: the NIC's key inventory, relayed.
  const inventory = await orch!.keys(lab!.hosts[0].name);
  assert.ok(Array.isArray(inventory) && inventory.length > 0, JSON.stringify(inventory));
});

test('every daemon refuses a call without a client certificate', async () => {
  for (const api of apis()) {
    const r = await call(api, null);
    assert.equal(r.status, 401, `${api.name} without a certificate: ${r.raw}`);
    assert.match(r.raw, /no certificate presented/, api.name);
  }
});

test('every daemon refuses a certificate of another SPIFFE identity', async () => {
  const td = ca!.trustDomain;
  const intruder = await ca!.issue(serviceId(td, 'intruder').uri, 600);
  for (const api of apis().filter((a) => !a.name.startsWith('CA'))) {
    const r = await call(api, intruder);
    assert.equal(r.status, 403, `${api.name}, wrong identity: ${r.raw}`);
    assert.match(r.raw, /service\/intruder is not allowed here/, api.name);
  }
  // The CSR API admits NICs and services (each for its own identity only): a workload's
  // identity is no requester there.
  const workload = await ca!.issue(`spiffe://${td}/tenant/acme/workload/w1`, 600);
  const csr = apis().find((a) => a.name.startsWith('CA'))!;
  const r = await call(csr, workload);
  assert.equal(r.status, 401, `CSR API, workload identity: ${r.raw}`);
  assert.match(r.raw, /tenant\/acme\/workload/);
});

test('no daemon answers plain HTTP on its socket', async () => {
  for (const api of apis()) {
    const r = await plainHttp(api.socket, api.path);
    assert.match(r, /^refused/, `${api.name}: ${r}`);
  }
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
