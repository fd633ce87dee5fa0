// Each management API against its own OpenAPI document (GET /openapi.json), on a real server
// over a Unix socket: the NIC agent (fake UDP), the vSwitch daemon (fake platform), the
// orchestrator (in-memory store, no agents) and the CSR API (a software CA, the operator's
// socket with the join-token route). For each:
// - every registered route is documented, with its operationId, and nothing else is;
// - every documented operation answers (the router knows it: never its 404 or a 405), with
//   the document's example body where it has one, and never with a 5xx;
// - request schemas reject bad input with a 4xx and the catalogue code: a body of the wrong
//   shape (400), a body that is not JSON by its content type (415), a path parameter or a
//   query its schema refuses (400).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CsrService } from '../../src/ca/csr-api.js';
import { csrAuthorize, csrRoutes, JoinTokens, localAdminAuthenticator } from '../../src/ca/csr-http.js';
import { FakeNetwork } from '../../src/native/fake.js';
import { nicRoutes } from '../../src/nic/api.js';
import { NicService } from '../../src/nic/service.js';
import { orchestratorRoutes } from '../../src/orchestrator/api.js';
import { Orchestrator } from '../../src/orchestrator/orchestrator.js';
import { SqliteStore } from '../../src/orchestrator/sqlite-store.js';
import { JsTransportAead } from '../../src/protocol/aead.js';
import {
  type ApiResult,
  apiRequest,
  type HttpMethod,
  JsonApiServer,
  type Route,
} from '../../src/util/http-json.js';
import { logger } from '../../src/util/log.js';
import { OPENAPI_PATH, openApiPath } from '../../src/util/openapi.js';
import { vswitchRoutes } from '../../src/vswitch/api.js';
import { VSwitchDaemon } from '../../src/vswitch/daemon.js';
import { softCa } from '../helpers/ca-memory.js';
import { FakePlatform } from '../helpers/vswitch-fakes.js';

const log = logger('test-openapi');
const dir = mkdtempSync(join(tmpdir(), 'tg-openapi-'));
after(() => rmSync(dir, { recursive: true, force: true }));

interface Operation {
  operationId: string;
  parameters?: { name: string; in: 'path' | 'query' }[];
  requestBody?: { content: { 'application/json': { example?: unknown } } };
}

interface Api {
  socket: string;
  routes: Route[];
  /** A value for each path parameter name that the parameter's schema accepts. */
  param: (name: string) => string;
  close: () => Promise<void>;
}

function fill(path: string, param: (name: string) => string, bad?: string): string {
  return path.replace(/:([A-Za-z]+)/g, (_m, name: string) => encodeURIComponent(bad ?? param(name)));
}

function errorOf(r: ApiResult): { code: string; message: string } {
  return r.body as { code: string; message: string };
}

/** The router's own 404 (no such route), as opposed to a handler's (no such tenant). */
function unknownToRouter(r: ApiResult): boolean {
  return r.status === 405 || (r.status === 404 && errorOf(r).message.startsWith('no resource'));
}

const ORDER: Record<HttpMethod, number> = { GET: 0, POST: 1, PUT: 2, DELETE: 3 };

function conformance(name: string, start: () => Promise<Api>): void {
  describe(`${name} API and its OpenAPI document`, () => {
    let api: Api;
    let doc: { openapi: string; paths: Record<string, Record<string, Operation>> };
    before(async () => {
      api = await start();
      const r = await apiRequest(api.socket, 'GET', OPENAPI_PATH);
      assert.equal(r.status, 200);
      doc = r.body as typeof doc;
    });
    after(async () => api?.close());

    test('every registered route is documented with its operationId, and nothing else', () => {
      assert.equal(doc.openapi, '3.1.0');
      const registered = api.routes.map((r) => `${r.method} ${openApiPath(r.path)} ${r.operationId}`).sort();
      const documented: string[] = [];
      for (const [p, ops] of Object.entries(doc.paths))
        for (const [m, op] of Object.entries(ops))
          documented.push(`${m.toUpperCase()} ${p} ${op.operationId}`);
      assert.deepEqual(documented.sort(), registered);
      assert.ok(
        registered.some((r) => r.startsWith(`GET ${OPENAPI_PATH} `)),
        'the document lists itself',
      );
    });

    test('request schemas reject bad input with a 4xx and the catalogue code', async () => {
      let checked = 0;
      for (const r of api.routes) {
        const path = fill(r.path, api.param);
        if (r.body !== undefined) {
          const wrongShape = await apiRequest(api.socket, r.method, path, [1, 2, 3]);
          assert.equal(wrongShape.status, 400, `${r.method} ${r.path} took a body of the wrong shape`);
          assert.equal(errorOf(wrongShape).code, 'TG_ERR_INVALID_ARGUMENT');
          const notJson = await apiRequest(api.socket, r.method, path, undefined, {
            rawBody: 'tenant=acme',
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
          });
          assert.equal(notJson.status, 415, `${r.method} ${r.path} took a form body`);
          assert.equal(errorOf(notJson).code, 'TG_ERR_UNSUPPORTED_MEDIA_TYPE');
          checked++;
        }
        for (const p of Object.keys(r.params ?? {})) {
          const bad = await apiRequest(api.socket, r.method, fill(r.path, api.param, 'Not A Name!'));
          assert.equal(bad.status, 400, `${r.method} ${r.path} took a bad :${p}`);
          assert.equal(errorOf(bad).code, 'TG_ERR_INVALID_ARGUMENT');
          checked++;
        }
        if (r.query !== undefined) {
          const bad = await apiRequest(api.socket, r.method, `${path}?tg_unknown=1`);
          assert.equal(bad.status, 400, `${r.method} ${r.path} took an unknown query parameter`);
          assert.equal(errorOf(bad).code, 'TG_ERR_INVALID_ARGUMENT');
          checked++;
        }
      }
      assert.ok(checked > 0, 'no route has a schema');
      const withParam = api.routes.find((r) => r.path.includes('/:'));
      assert.ok(withParam, 'a route with a path parameter');
      const badEncoding = await apiRequest(
        api.socket,
        withParam.method,
        withParam.path.replace(/:([A-Za-z]+)/g, '%E0%A4%A'),
      );
      assert.equal(badEncoding.status, 400, 'a badly percent-encoded path parameter');
      assert.equal(errorOf(badEncoding).code, 'TG_ERR_INVALID_ARGUMENT');
    });

    test('every documented operation answers (the router knows it, no 5xx)', async () => {
      const ops: { method: HttpMethod; path: string; op: Operation }[] = [];
      for (const [p, byMethod] of Object.entries(doc.paths))
        for (const [m, op] of Object.entries(byMethod))
          ops.push({ method: m.toUpperCase() as HttpMethod, path: p, op });
      ops.sort((a, b) => ORDER[a.method] - ORDER[b.method]);
      assert.ok(ops.length >= 5);
      for (const { method, path, op } of ops) {
        const url = path.replace(/\{([A-Za-z]+)\}/g, (_m, n: string) => encodeURIComponent(api.param(n)));
        const example = op.requestBody?.content['application/json'].example;
        const r = await apiRequest(api.socket, method, url, example);
        assert.ok(
          !unknownToRouter(r),
          `${method} ${path} (${op.operationId}) is not served: ${r.status} ${r.raw}`,
        );
        assert.ok(
          r.status < 500,
          `${method} ${path} (${op.operationId}) failed: ${r.status} ${r.raw.slice(0, 300)}`,
        );
      }
      const unknown = await apiRequest(api.socket, 'GET', '/v1/tg-no-such-route');
      assert.equal(unknown.status, 404);
      assert.ok(unknownToRouter(unknown), 'control: an unknown path is the router 404');
    });
  });
}

const names = (n: string): string => (n === 'name' ? 'tg-probe-csr' : 'tg-probe');

conformance('NIC agent', async () => {
  const net = new FakeNetwork();
  const svc = await NicService.start({
    apiSocket: join(dir, 'nic.sock'),
    hostAddress: '198.19.1.2',
    fabricAddress: '198.18.0.11',
    openSocket: (address, port) => net.createSocket({ address, port }),
    aead: new JsTransportAead(),
    log,
  });
  return {
    socket: join(dir, 'nic.sock'),
    routes: nicRoutes(svc.agent, svc.metrics, () => true),
    param: names,
    close: () => svc.close(),
  };
});

conformance('vSwitch daemon', async () => {
  const d = new VSwitchDaemon({ platform: new FakePlatform(), log, ifnamePrefix: 'tgx-1v' });
  const routes = vswitchRoutes(d, Date.now());
  const socket = join(dir, 'vswitchd.sock');
  const server = await JsonApiServer.listen({ socketPath: socket, routes, log });
  return { socket, routes, param: names, close: () => server.close() };
});

conformance('orchestrator', async () => {
  const orch = new Orchestrator(SqliteStore.memory(), log);
  const routes = orchestratorRoutes(orch);
  const socket = join(dir, 'orch.sock');
  const server = await JsonApiServer.listen({ socketPath: socket, routes, log });
  return {
    socket,
    routes,
    param: names,
    close: async () => {
      await server.close();
      await orch.close();
    },
  };
});

conformance('CSR', async () => {
  const { ca } = await softCa({}, Date.now());
  const routes = csrRoutes({
    service: new CsrService({ ca, isPlacedOn: () => false }),
    trustBundle: () => ca.trustBundle(),
    revocations: () => ca.revocations.list(),
    joinTokens: { tokens: new JoinTokens(), trustDomain: ca.trustDomain },
  });
  const socket = join(dir, 'csr.sock');
  const server = await JsonApiServer.listen({
    socketPath: socket,
    authorize: csrAuthorize(localAdminAuthenticator),
    routes,
    log,
  });
  return { socket, routes, param: names, close: () => server.close() };
});
