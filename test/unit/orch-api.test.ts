// The orchestrator's REST API over a Unix socket without agents: the OpenAPI document matches
// the served routes exactly, examples validate, and bad requests (bad JSON, oversize bodies,
// unknown ids, unreachable agents) get a clear error and change nothing.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ORCHESTRATOR_MAX_BODY_BYTES, orchestratorRoutes } from '../../src/orchestrator/api.js';
import { OrchestratorClient } from '../../src/orchestrator/client.js';
import { Orchestrator } from '../../src/orchestrator/orchestrator.js';
import { SqliteStore } from '../../src/orchestrator/sqlite-store.js';
import { TgError } from '../../src/util/errors.js';
import { apiRequest, JsonApiServer } from '../../src/util/http-json.js';
import { logger } from '../../src/util/log.js';

const dir = mkdtempSync(join(tmpdir(), 'tg-orch-api-'));
const socket = join(dir, 'orch.sock');
const store = SqliteStore.memory();
const orch = new Orchestrator(store, logger('orch-test'));
const routes = orchestratorRoutes(orch);
let server: JsonApiServer;
const client = new OrchestratorClient(socket);

before(async () => {
  server = await JsonApiServer.listen({
    socketPath: socket,
    routes,
    log: logger('orch-test'),
    maxBodyBytes: ORCHESTRATOR_MAX_BODY_BYTES,
  });
  await client.createTenant({ name: 'acme', pool: '100.64.1.0/24' });
});

after(async () => {
  await server.close();
  await orch.close();
  rmSync(dir, { recursive: true, force: true });
});

async function unchanged(code: string, status: number, fn: () => Promise<{ status: number; body: unknown }>) {
  const before = await store.dump();
  const r = await fn();
  assert.equal(r.status, status, JSON.stringify(r.body));
  assert.equal((r.body as { code: string }).code, code);
  assert.ok(((r.body as { message: string }).message ?? '').length > 5);
  assert.deepEqual(await store.dump(), before);
}

test('OpenAPI document: every served route is in it and nothing else; examples validate', async () => {
  const doc = (await client.openapi()) as {
    openapi: string;
    paths: Record<
      string,
      Record<string, { requestBody?: { content: { 'application/json': { example?: unknown } } } }>
    >;
  };
  assert.equal(doc.openapi, '3.1.0');
  const served = new Set(routes.map((r) => `${r.method} ${r.path.replace(/:([A-Za-z]+)/g, '{$1}')}`));
  const documented = new Set<string>();
  for (const [p, ops] of Object.entries(doc.paths))
    for (const m of Object.keys(ops)) documented.add(`${m.toUpperCase()} ${p}`);
  assert.deepEqual([...documented].sort(), [...served].sort());
  let examples = 0;
  for (const r of routes) {
    if (r.example === undefined) continue;
    assert.ok(r.body, `${r.method} ${r.path} has an example but no schema`);
    const res = r.body.safeParse(r.example);
    assert.ok(res.success, `${r.method} ${r.path}: example does not validate`);
    const op = doc.paths[r.path.replace(/:([A-Za-z]+)/g, '{$1}')][r.method.toLowerCase()];
    assert.deepEqual(op.requestBody?.content['application/json'].example, r.example);
    examples++;
  }
  assert.ok(examples >= 6);
  // Every route answers on its path (not the router's "no resource").
  for (const r of routes) {
    const path = r.path.replace(/:([A-Za-z]+)/g, 'nobody');
    const res = await apiRequest(socket, r.method, path, r.method === 'GET' ? undefined : {});
    assert.ok(
      !String((res.body as { message?: string }).message ?? '').startsWith('no resource'),
      `${r.method} ${path}`,
    );
  }
});

test('bad JSON, oversize bodies, unknown routes and ids: clear errors, no change', async () => {
  await unchanged('TG_ERR_INVALID_ARGUMENT', 400, () =>
    apiRequest(socket, 'POST', '/v1/tenants', undefined, { rawBody: '{"name": ' }),
  );
  await unchanged('TG_ERR_PAYLOAD_TOO_LARGE', 413, () =>
    apiRequest(socket, 'POST', '/v1/tenants', undefined, {
      rawBody: JSON.stringify({ name: 'x', pool: 'y'.repeat(ORCHESTRATOR_MAX_BODY_BYTES) }),
    }),
  );
  await unchanged('TG_ERR_CONFLICT', 409, () =>
    apiRequest(socket, 'POST', '/v1/tenants', { name: 'red', pool: '100.64.1.0/25' }),
  );
  await unchanged('TG_ERR_NOT_FOUND', 404, () => apiRequest(socket, 'GET', '/v1/workloads/ghost'));
  await unchanged('TG_ERR_NOT_FOUND', 404, () => apiRequest(socket, 'DELETE', '/v1/workloads/ghost'));
  await unchanged('TG_ERR_NOT_FOUND', 404, () =>
    apiRequest(socket, 'POST', '/v1/workloads/ghost/migrate', { to: 'h1' }),
  );
  await unchanged('TG_ERR_INVALID_ARGUMENT', 400, () =>
    apiRequest(socket, 'POST', '/v1/workloads/ghost/migrate', {}),
  );
  await unchanged('TG_ERR_NOT_FOUND', 404, () =>
    apiRequest(socket, 'POST', '/v1/workloads', { tenant: 'acme', name: 'w1', host: 'h1' }),
  );
  await unchanged('TG_ERR_NOT_FOUND', 404, () => apiRequest(socket, 'GET', '/v1/nothing'));
  await unchanged('TG_ERR_METHOD_NOT_ALLOWED', 405, () => apiRequest(socket, 'PUT', '/v1/tenants'));
  await unchanged('TG_ERR_INVALID_ARGUMENT', 400, () =>
    apiRequest(socket, 'POST', '/v1/hosts', {
      name: 'h1',
      nicApi: join(dir, 'none.sock'),
      vswitchApi: join(dir, 'none2.sock'),
      netnsPrefix: 'tgu-',
    }),
  );
  await unchanged('TG_ERR_POLICY_REJECTED', 422, () =>
    apiRequest(socket, 'PUT', '/v1/tenants/acme/policy', { version: 1, tenant: 'acme', rules: 'no' }),
  );
  // The client turns the same answers into TgErrors with the catalogue's code.
  await assert.rejects(
    client.showTenant('ghost'),
    (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_NOT_FOUND',
  );
});

test('GET /v1/flows validates its query like a body: bad since, unknown or repeated parameters are 400', async () => {
  for (const q of [
    'since=abc',
    'since=',
    'colour=red',
    'limit=0',
    'limit=ten',
    'tenant=Bad_Name',
    'limit=1&limit=2',
  ]) {
    const r = await apiRequest(socket, 'GET', `/v1/flows?${q}`);
    assert.equal(r.status, 400, `${q}: ${r.raw}`);
    assert.equal((r.body as { code: string }).code, 'TG_ERR_INVALID_ARGUMENT', q);
  }
  const ok = await apiRequest(socket, 'GET', '/v1/flows?since=5m&limit=10&tenant=acme');
  assert.equal(ok.status, 200, ok.raw);
  const bad = await apiRequest(socket, 'POST', '/v1/flows/query', { since: 'abc' });
  assert.equal(bad.status, 400, bad.raw);
  const noQuery = await apiRequest(socket, 'GET', '/v1/tenants?x=1');
  assert.equal(noQuery.status, 400, noQuery.raw);
});

test('drain-nic and undrain-nic: states through the API; refused without another NIC, unknown NIC 404', async () => {
  // Registered in the store directly (registration through the API asks the agents, none here).
  await orch.service.registerHost({
    name: 'hn',
    nicApi: join(dir, 'n1.sock'),
    vswitchApi: join(dir, 'v.sock'),
    netnsPrefix: 'tg-hn-',
    nics: [
      { name: 'nic1', api: join(dir, 'n1.sock') },
      { name: 'nic2', api: join(dir, 'n2.sock') },
    ],
  });
  const d = await client.drainNic('hn', 'nic2');
  assert.deepEqual([d.host, d.nic, d.moved, d.errors], ['hn', 'nic2', [], []]);
  assert.deepEqual(
    (await client.showHost('hn')).nics?.map((n) => [n.name, n.state]),
    [
      ['nic1', 'ok'],
      ['nic2', 'draining'],
    ],
  );
  await unchanged('TG_ERR_CONFLICT', 409, () =>
    apiRequest(socket, 'POST', '/v1/hosts/hn/nics/nic1/drain', {}),
  );
  await unchanged('TG_ERR_NOT_FOUND', 404, () =>
    apiRequest(socket, 'POST', '/v1/hosts/hn/nics/nic9/drain', {}),
  );
  await unchanged('TG_ERR_NOT_FOUND', 404, () =>
    apiRequest(socket, 'POST', '/v1/hosts/nope/nics/nic1/drain', {}),
  );
  await unchanged('TG_ERR_INVALID_ARGUMENT', 400, () =>
    apiRequest(socket, 'POST', '/v1/hosts/hn/nics/nic2/drain', { extra: 1 }),
  );
  const h = await client.undrainNic('hn', 'nic2');
  assert.equal(h.nics?.[1].state, 'ok');
  await unchanged('TG_ERR_NOT_FOUND', 404, () => apiRequest(socket, 'GET', '/v1/hosts/hn/keys?nic=nic9'));
  await orch.service.deregisterHost('hn');
});
