// The orchestrator's REST API (HTTP+JSON on a Unix socket through JsonApiServer). Each route
// carries its schemas and OpenAPI description (summary, example), and GET /openapi.json is
// generated from this same list (src/util/openapi.ts).
//
//   GET    /v1/health                              liveness, counts, last reconciliation, sick agents
//   GET    /openapi.json                           this API's OpenAPI 3.1 document
//   GET    /v1/tenants                             tenants
//   POST   /v1/tenants                             {name, pool} -> 201 tenant
//   GET    /v1/tenants/:tenant                     one tenant, with counts
//   DELETE /v1/tenants/:tenant                     refused while it has workloads
//   GET    /v1/tenants/:tenant/policy              the stored policy document
//   PUT    /v1/tenants/:tenant/policy              a policy document -> pushed to its NICs, stored
//   GET    /v1/hosts                               hosts
//   POST   /v1/hosts                               {name, nicApi, vswitchApi, netnsPrefix, nics?} -> 201 host
//   GET    /v1/hosts/:host                         one host
//   DELETE /v1/hosts/:host                         refused while it has workloads
//   GET    /v1/hosts/:host/keys[?nic=N]            the key inventory of the host's NICs (metadata only)
//   POST   /v1/hosts/:host/nics/:nic/drain         its workloads move to the host's other NICs -> {moved, ms}
//   POST   /v1/hosts/:host/nics/:nic/undrain       it takes workloads again -> the host
//   GET    /v1/workloads                           workloads
//   POST   /v1/workloads                           {tenant, name, host, labels?} -> 201 running workload
//                                                  (200 with it: a retry of the same spec)
//   GET    /v1/workloads/:workload                 one workload (address, netns, state, timings)
//   DELETE /v1/workloads/:workload                 spin-down -> {name, timings}
//   POST   /v1/workloads/:workload/migrate         {to} -> the workload on its new host, with timings
//   GET    /v1/flows                               flow records merged from the NICs
//   POST   /v1/flows/query                         {tenant?, since?, limit?} -> the same, filtered
//   POST   /v1/tenants/:tenant/policy/test         a policy document -> checked, its tests run (nothing saved)
//   GET    /v1/status                              the installation: hosts, NICs, tenants, workloads,
//                                                  certificate expiry, drops
//   GET    /v1/topology                            the legs of every workload with handshake age, bytes, drops
//   GET    /v1/services[?tenant=T]                 services (virtual address, selector, ports)
//   POST   /v1/services                            create one (address from the tenant's pool)
//   GET    /v1/tenants/:tenant/services/:service   one service, with its endpoints per NIC
//   DELETE /v1/tenants/:tenant/services/:service   delete one
//   GET    /v1/reconcile                           the last reconciliation pass
//   POST   /v1/reconcile                           run a pass now -> its report
//   GET    /metrics                                Prometheus text (store state, leadership, agents' answers, host queues)
//
// With several replicas every route but the store reads (LOCAL_READS) runs at the leader:
// another replica forwards it there (replica.ts).
import { z } from 'zod';
import { nameSchema } from '../net/name.js';
import { TgError } from '../util/errors.js';
import { answer, bodyRoute, type Route, textAnswer } from '../util/http-json.js';
import { type ApiInfo, withOpenApi } from '../util/openapi.js';
import { metricsText, orchestratorMetrics } from './metrics.js';
import {
  createServiceSchema,
  createTenantSchema,
  createWorkloadSchema,
  emptyBodySchema,
  migrateSchema,
  registerHostSchema,
} from './model.js';
import type { Orchestrator } from './orchestrator.js';

export const ORCHESTRATOR_MAX_BODY_BYTES = 256 * 1024;
export const API_VERSION = '1.0.0';

/** A flow query's `since`: a duration (5m, 1h), milliseconds since the epoch, or a time. */
const sinceSchema = z
  .string()
  .min(1)
  .max(64)
  .refine(
    (t) => /^[0-9]+(ms|s|m|h|d)?$/.test(t) || !Number.isNaN(Date.parse(t)),
    'not a duration (5m, 1h), milliseconds since the epoch or a time',
  );

export const flowQuerySchema = z.strictObject({
  tenant: nameSchema.optional(),
  since: sinceSchema.optional(),
  limit: z.number().int().min(1).max(100_000).optional(),
});

/** The same filter as query parameters of GET /v1/flows (every value a string). */
export const flowQueryParamsSchema = z.strictObject({
  tenant: nameSchema.optional(),
  since: sinceSchema.optional(),
  limit: z
    .string()
    .regex(/^[0-9]{1,6}$/, 'an integer from 1 to 100000')
    .transform(Number)
    .pipe(z.number().int().min(1).max(100_000))
    .optional(),
});

/** Policy documents are checked by the policy schema in the service; here: a JSON object. */
const policyBodySchema = z.record(z.string(), z.unknown());

export const ORCHESTRATOR_API: ApiInfo = {
  title: 'tenguard orchestrator',
  version: API_VERSION,
  description:
    'Tenants, hosts, workloads (spin-up, spin-down, migration), policy distribution and reconciliation. HTTP+JSON on a Unix socket.',
};

const tenantParam = { tenant: nameSchema };
const hostParam = { host: nameSchema };
const workloadParam = { workload: nameSchema };

const EXAMPLE_POLICY = {
  version: 1,
  tenant: 'acme',
  rules: [
    { id: 'out', action: 'allow', direction: 'egress', workloads: { labels: {} }, peers: [{ labels: {} }] },
    { id: 'in', action: 'allow', direction: 'ingress', workloads: { labels: {} }, peers: [{ labels: {} }] },
  ],
};

/**
 * The agents in the health answer: while one is slow, stalled or did not answer its last call
 * it is named in `agentProblems` ('host/agent: condition (detail)') and the status is 'degraded'.
 */
function healthOfAgents(o: Orchestrator): {
  agentProblems: string[];
  agents: unknown[];
  queued: Record<string, number>;
  hostPasses: Record<string, number>;
} {
  const h = o.agentHealth();
  return {
    agentProblems: h.problems,
    agents: h.agents,
    queued: h.queued,
    hostPasses: h.hostPasses,
  };
}

/** Routes every replica answers from the store itself; all others run at the leader. */
export const LOCAL_READS: ReadonlySet<string> = new Set([
  'health',
  'metrics',
  'listTenants',
  'showTenant',
  'getPolicy',
  'listHosts',
  'showHost',
  'listWorkloads',
  'showWorkload',
]);

/**
 * The orchestrator's routes, with `extra` ones in the same document (the console's login
 * link: always answered by the replica it is asked, whose console the link is for).
 */
export function orchestratorRoutes(o: Orchestrator, extra: readonly Route[] = []): Route[] {
  const metrics = orchestratorMetrics(o);
  const routes: Route[] = [
    {
      method: 'GET',
      path: '/v1/health',
      operationId: 'health',
      summary:
        "Liveness, counts, the store's state, the last reconciliation pass, and agents that are slow or do not answer ('degraded')",
      handler: async () => {
        // The store's state is reported, never thrown: health answers while the store cannot.
        const counts = await Promise.all([
          o.store.revision(),
          o.service.listTenants(),
          o.service.listHosts(),
          o.service.listWorkloads(),
        ]).catch((err: unknown) => (err instanceof TgError ? err : Promise.reject(err)));
        const store = o.store.health();
        const agents = healthOfAgents(o);
        return {
          status: store.state === 'ok' && agents.agentProblems.length === 0 ? 'ok' : 'degraded',
          store,
          ...agents,
          ...(o.replica === undefined ? {} : { replica: o.replica.status() }),
          ...(counts instanceof TgError
            ? { storeError: { code: counts.code, message: counts.message } }
            : {
                revision: counts[0],
                tenants: counts[1].length,
                hosts: counts[2].length,
                workloads: counts[3].length,
              }),
          reconcilePasses: o.reconcilePasses,
          lastReconcile: o.lastReconcile,
        };
      },
    },
    {
      method: 'GET',
      path: '/metrics',
      operationId: 'metrics',
      summary:
        "Prometheus text: the store's state, this replica's leadership, each agent's answers (up, slow, last call, failures), work queued per host",
      produces: 'text/plain',
      handler: async () => {
        const m = await metricsText(metrics);
        return textAnswer(m.text, m.contentType);
      },
    },
    {
      method: 'GET',
      path: '/v1/tenants',
      operationId: 'listTenants',
      summary: 'List tenants',
      handler: async () => ({ tenants: await o.service.listTenants() }),
    },
    {
      method: 'POST',
      path: '/v1/tenants',
      operationId: 'createTenant',
      summary:
        'Create a tenant with its IPv4 address pool inside 100.64.0.0/10 (its IPv6 ULA /64 is derived from it)',
      body: createTenantSchema,
      example: { name: 'acme', pool: '100.64.1.0/24' },
      status: 201,
      handler: async (req) => answer(201, await o.service.createTenant(req.body)),
    },
    {
      method: 'GET',
      path: '/v1/tenants/:tenant',
      params: tenantParam,
      operationId: 'showTenant',
      summary: 'One tenant, with its workload and allocation counts',
      handler: (req) => o.service.getTenant(req.params.tenant),
    },
    {
      method: 'DELETE',
      path: '/v1/tenants/:tenant',
      params: tenantParam,
      operationId: 'deleteTenant',
      summary: 'Delete a tenant without workloads (its policy goes with it)',
      body: emptyBodySchema,
      handler: (req) => o.service.deleteTenant(req.params.tenant),
    },
    {
      method: 'GET',
      path: '/v1/tenants/:tenant/policy',
      params: tenantParam,
      operationId: 'getPolicy',
      summary: "The tenant's stored policy document",
      handler: (req) => o.service.getPolicy(req.params.tenant),
    },
    {
      method: 'PUT',
      path: '/v1/tenants/:tenant/policy',
      params: tenantParam,
      operationId: 'setPolicy',
      summary: "Set the tenant's policy document: pushed to every NIC holding the tenant, then stored",
      body: policyBodySchema,
      example: EXAMPLE_POLICY,
      handler: (req) => o.setPolicy(req.params.tenant, req.body),
    },
    {
      method: 'POST',
      path: '/v1/tenants/:tenant/policy/test',
      params: tenantParam,
      operationId: 'testPolicy',
      summary:
        "Check a policy document and run its built-in tests against the store's workloads; nothing is saved",
      body: policyBodySchema,
      example: EXAMPLE_POLICY,
      handler: (req) => o.testPolicy(req.params.tenant, req.body),
    },
    {
      method: 'GET',
      path: '/v1/status',
      operationId: 'status',
      summary:
        'The installation: orchestrator, hosts with NIC and vSwitch, tenants, workloads, certificate expiry, drops',
      handler: () => o.status(),
    },
    {
      method: 'GET',
      path: '/v1/topology',
      operationId: 'topology',
      summary: 'The legs of every workload (workload - vSwitch - NIC - fabric): handshake age, bytes, drops',
      handler: () => o.topology(),
    },
    {
      method: 'GET',
      path: '/v1/hosts',
      operationId: 'listHosts',
      summary: 'List hosts',
      handler: async () => ({ hosts: await o.service.listHosts() }),
    },
    {
      method: 'POST',
      path: '/v1/hosts',
      operationId: 'registerHost',
      summary: "Register a host: its NIC agent's and vSwitch daemon's API sockets and its namespace prefix",
      body: registerHostSchema,
      example: {
        name: 'h1',
        nicApi: '/run/tenguard/h1-nic.sock',
        vswitchApi: '/run/tenguard/h1-vswitchd.sock',
        netnsPrefix: 'tg-h1-',
        nics: [
          { name: 'nic1', api: '/run/tenguard/h1-nic.sock' },
          { name: 'nic2', api: '/run/tenguard/h1-nic2.sock' },
        ],
      },
      status: 201,
      handler: async (req) => answer(201, await o.registerHost(req.body)),
    },
    {
      method: 'GET',
      path: '/v1/hosts/:host',
      params: hostParam,
      operationId: 'showHost',
      summary: 'One host',
      handler: (req) => o.service.getHost(req.params.host),
    },
    {
      method: 'DELETE',
      path: '/v1/hosts/:host',
      params: hostParam,
      operationId: 'deregisterHost',
      summary: 'Deregister a host without workloads',
      body: emptyBodySchema,
      handler: (req) => o.deregisterHost(req.params.host),
    },
    {
      method: 'GET',
      path: '/v1/hosts/:host/keys',
      params: hostParam,
      operationId: 'hostKeys',
      summary:
        "The key inventory of the host's NICs (metadata only, never key material); each entry names its NIC on a host with several",
      query: z.strictObject({ nic: nameSchema.optional() }),
      handler: (req) => o.keys(req.params.host, (req.queryValues as { nic?: string } | undefined)?.nic),
    },
    {
      method: 'POST',
      path: '/v1/hosts/:host/nics/:nic/drain',
      params: { host: nameSchema, nic: nameSchema },
      operationId: 'drainNic',
      summary:
        "Drain a NIC: it takes no new workload, and its workloads move to the host's other NICs with new keys (refused without another NIC taking workloads)",
      body: emptyBodySchema,
      handler: (req) => o.drainNic(req.params.host, req.params.nic),
    },
    {
      method: 'POST',
      path: '/v1/hosts/:host/nics/:nic/undrain',
      params: { host: nameSchema, nic: nameSchema },
      operationId: 'undrainNic',
      summary: 'Make a drained or failed NIC take workloads again (nothing moves back by itself)',
      body: emptyBodySchema,
      handler: (req) => o.undrainNic(req.params.host, req.params.nic),
    },
    {
      method: 'GET',
      path: '/v1/workloads',
      operationId: 'listWorkloads',
      summary: 'List workloads',
      handler: async () => ({ workloads: await o.service.listWorkloads() }),
    },
    {
      method: 'POST',
      path: '/v1/workloads',
      operationId: 'createWorkload',
      summary:
        'Create a workload and spin it up (answers when it is configured); a retry of the same spec answers 200 with the workload',
      body: createWorkloadSchema,
      example: { tenant: 'acme', name: 'web-1', host: 'h1', labels: { app: 'web' } },
      status: 201,
      handler: async (req) => {
        const r = await o.ensureWorkload(req.body);
        return answer(r.created ? 201 : 200, r.workload);
      },
    },
    {
      method: 'GET',
      path: '/v1/services',
      operationId: 'listServices',
      summary: 'List services (optionally of one tenant)',
      query: z.strictObject({ tenant: nameSchema.optional() }),
      handler: async (req) => ({
        services: await o.service.listServices({
          tenant: (req.queryValues as { tenant?: string }).tenant,
        }),
      }),
    },
    {
      method: 'POST',
      path: '/v1/services',
      operationId: 'createService',
      summary:
        "Create a service: a virtual address from the tenant's pool, load-balanced across the workloads its selector matches",
      body: createServiceSchema,
      example: { tenant: 'acme', name: 'web', selector: { app: 'web' }, ports: ['80/tcp'] },
      status: 201,
      handler: async (req) => answer(201, await o.createService(req.body)),
    },
    {
      method: 'GET',
      path: '/v1/tenants/:tenant/services/:service',
      params: { tenant: nameSchema, service: nameSchema },
      operationId: 'showService',
      summary: 'One service, with its endpoints and pinned connections on each NIC holding the tenant',
      handler: (req) => o.showService(req.params.tenant, req.params.service),
    },
    {
      method: 'DELETE',
      path: '/v1/tenants/:tenant/services/:service',
      params: { tenant: nameSchema, service: nameSchema },
      operationId: 'deleteService',
      summary: 'Delete a service (its address is freed)',
      body: emptyBodySchema,
      handler: (req) => o.deleteService(req.params.tenant, req.params.service),
    },
    {
      method: 'GET',
      path: '/v1/workloads/:workload',
      params: workloadParam,
      operationId: 'showWorkload',
      summary: 'One workload: address, namespace, state, timings',
      handler: (req) => o.service.getWorkload(req.params.workload),
    },
    {
      method: 'DELETE',
      path: '/v1/workloads/:workload',
      params: workloadParam,
      operationId: 'deleteWorkload',
      summary: 'Spin a workload down and delete it (its address is released)',
      body: emptyBodySchema,
      handler: (req) => o.deleteWorkload(req.params.workload),
    },
    bodyRoute({
      method: 'POST',
      path: '/v1/workloads/:workload/migrate',
      params: workloadParam,
      operationId: 'migrateWorkload',
      summary: 'Move a running workload to another host (same address, labels and identity)',
      body: migrateSchema,
      example: { to: 'h2' },
      handler: (req, body) => o.migrateWorkload(req.params.workload, body.to),
    }),
    {
      method: 'GET',
      path: '/v1/flows',
      operationId: 'listFlows',
      summary: 'Flow records merged from every NIC serving the policy API (?tenant=&since=&limit=)',
      query: flowQueryParamsSchema,
      handler: (req) => o.flows((req.queryValues as z.output<typeof flowQueryParamsSchema>) ?? {}),
    },
    bodyRoute({
      method: 'POST',
      path: '/v1/flows/query',
      operationId: 'queryFlows',
      summary: 'Flow records of one tenant, since a time, at most `limit` (no body: all)',
      body: flowQuerySchema.optional(),
      example: { tenant: 'acme', limit: 100 },
      handler: (_req, q) => o.flows(q ?? {}),
    }),
    {
      method: 'GET',
      path: '/v1/reconcile',
      operationId: 'lastReconcile',
      summary: 'The last reconciliation pass',
      handler: () => ({ passes: o.reconcilePasses, last: o.lastReconcile }),
    },
    {
      method: 'POST',
      path: '/v1/reconcile',
      operationId: 'reconcile',
      summary: 'Run a reconciliation pass now',
      body: emptyBodySchema,
      handler: () => o.reconcile(),
    },
  ];
  const replica = o.replica;
  const placed =
    replica === undefined
      ? routes
      : routes.map((r) =>
          LOCAL_READS.has(r.operationId)
            ? r
            : {
                ...r,
                handler: (req: Parameters<Route['handler']>[0]) =>
                  replica.atLeader(req, async () => r.handler(req)),
              },
        );
  return withOpenApi(ORCHESTRATOR_API, [...placed, ...extra]);
}
