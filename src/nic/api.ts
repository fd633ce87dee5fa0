// The NIC agent's management API (HTTP+JSON; a Unix socket in the lab, mTLS with the CA
// issue). Routes are thin: the server validates by the route's schemas, the handler calls the
// agent and answers; GET /openapi.json is generated from this list (src/util/openapi.ts).
//
//   GET    /v1/health                      liveness, counts, API version and capabilities
//   GET    /openapi.json                   this API's OpenAPI 3.1 document
//   GET    /metrics                        Prometheus text (NIC, firewall, conntrack, flow log)
//   GET    /v1/identity                    identity key, signed seal key, on-host key, endpoints
//   GET    /v1/keys                        key inventory (metadata only)
//   GET    /v1/workloads                   registered workloads (no secrets)
//   POST   /v1/workloads                   register {tenant, workload, address, address6?, vswitchPublicKey, labels?, replace?} (replace: a new key for a workload registered in the same tenant, the tenant kept)
//                                          -> 201 {nicPublicKey, sealedPsk, nicEndpoint, ...}
//                                          (the PSK sealed to vswitchPublicKey: psk-box.ts)
//   DELETE /v1/workloads/:workload         remove (keys wiped, session ends at once)
//   POST   /v1/workloads/:workload/psk     rotate the PSK -> {sealedPsk}
//   GET    /v1/tenants                     tenants, their off-host public keys and peers
//   GET    /v1/tenants/:tenant/key         the tenant's off-host public key, signed
//   PUT    /v1/tenants/:tenant/peers       {peers: [...]}: the tenant's remote NICs (signatures
//                                          verified); peers[].workloads[] carry {workload, address, address6?, labels?}
//   PUT    /v1/tenants/:tenant/grants      {workloads: [...]}: other tenants' workloads (below)
//   GET    /v1/tenants/:tenant/grants      the list in force, each with `routed`
//   PUT    /v1/policy/:tenant              a policy document (src/policy/model.ts) -> 200
//                                          {tenant, generation, rules, tests, warnings}, or 422
//                                          TG_ERR_POLICY_REJECTED with every reason (path: message);
//                                          the old policy stays in force
//   GET    /v1/policy/:tenant              the document in force; 404 TG_ERR_NOT_FOUND if none
//   DELETE /v1/policy/:tenant              back to default deny
//   GET    /v1/flows?tenant=T&verdict=allow|deny&since=5m&limit=N
//                                          {flows: FlowRecord[]} newest first (src/policy/flowlog.ts):
//                                          open connections (kind "active") and ended ones
//
// Policy. A tenant without a policy document is default deny: no packet of its workloads
// passes, not even within the tenant. A document names workloads by tenant, name and labels
// (the labels given at registration, in peers and in grants), never by address, so it follows
// a workload to whatever NIC it lands on. A document is refused when it names a workload by
// name that this NIC does not know in a tenant it knows, so push peers and grants first, then
// the policy. Connections are tracked per tenant zone; replies pass without reverse rules; a
// policy change re-decides every open connection on its next packet.
//
// Cross-tenant grants. A connection from S (tenant A) to D (tenant B) passes only when A's
// policy allows it on S's egress side (a rule with a peer {tenant: "B", ...}) and B's policy
// allows it on D's ingress side (a peer {tenant: "A", ...}); the sending NIC checks the egress
// side, the receiving NIC the ingress side (both when S and D share a host). It is one way:
// the reverse direction needs its own pair of rules, replies of the allowed direction pass by
// conntrack. To route such a packet at all, a NIC must know the other tenant's workload, with
// its labels, in the importing tenant's table:
//
//   PUT /v1/tenants/A/grants {workloads: [{tenant: "B", workload: "d", address: "100.64.2.10",
//                                          labels: {...}, nicIdentityKey?: "<base64>"}]}
//
// lists the workloads of other tenants that A's workloads may exchange packets with (routing
// only: the policies decide). nicIdentityKey is the identity key (GET /v1/identity) of the NIC
// the workload sits behind; absent (or this NIC's own) means this host, where it must be
// registered under its tenant (until then it is listed with routed: false). The controller
// gives every NIC, for every tenant T present on it, T's list: every workload of every other
// tenant that T's policy or the other tenant's policy names in a rule peer with the other
// tenant (or simply all other tenants' workloads: routes grant nothing). Both tenants' lists
// are needed, the reverse one carries the replies. The list is kept per tenant until replaced
// (it may be pushed before the tenant's first workload lands) and re-applied whenever
// workloads or peers change.
//
// Across hosts the packet travels on an off-host session between the two NICs of the carrier
// tenant: of A and B, the first by name that has workloads on both hosts (both NICs compute
// the same one from their peers). When neither has, there is no session that may carry it and
// the workload is listed routed: false (a known limit: a grant between tenants that share no
// host pair is not routed). A granted address must not be one of the importing tenant's own
// (tenants may overlap addresses; grants need them apart): such a list is refused (409).

import { nameSchema } from '../net/name.js';
import { parseSince } from '../policy/flowlog.js';
import { TgError } from '../util/errors.js';
import { answer, bodyRoute, type Route, textAnswer } from '../util/http-json.js';
import { type ApiInfo, withOpenApi } from '../util/openapi.js';
import type { NicAgent } from './agent.js';
import { NIC_API_VERSION, nicHealth } from './health.js';
import type { NicMetrics } from './metrics.js';
import { tenantNetworkSchema } from './network.js';
import {
  emptySchema,
  flowQuerySchema,
  policyBodySchema,
  registerWorkloadSchema,
  tenantGrantsSchema,
  tenantPeersSchema,
} from './schemas.js';

/** The largest request body the NIC accepts. */
export const NIC_MAX_BODY_BYTES = 256 * 1024;

export const NIC_API: ApiInfo = {
  title: 'tenguard NIC agent',
  version: NIC_API_VERSION,
  description:
    'Workload registration, tenant peers and grants, policy and flow records of one smart NIC. HTTP+JSON on a Unix socket, mTLS with the CA.',
};

const workload = { workload: nameSchema };
const tenant = { tenant: nameSchema };

const EXAMPLE_KEY = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=';

export function nicRoutes(agent: NicAgent, metrics: NicMetrics, dataPlaneRunning: () => boolean): Route[] {
  return withOpenApi(NIC_API, [
    {
      method: 'GET',
      path: '/v1/health',
      operationId: 'health',
      summary: 'Liveness, counts, API version and capabilities',
      handler: () => nicHealth(agent, dataPlaneRunning()),
    },
    {
      method: 'GET',
      path: '/metrics',
      operationId: 'metrics',
      summary: 'Prometheus text: NIC, firewall, conntrack and flow log counters',
      produces: 'text/plain',
      handler: async () => {
        const m = await metrics.text();
        return textAnswer(m.text, m.contentType);
      },
    },
    {
      method: 'GET',
      path: '/v1/identity',
      operationId: 'identity',
      summary: 'Identity key, signed seal key, on-host key and endpoints',
      handler: () => agent.publicIdentity(),
    },
    {
      method: 'GET',
      path: '/v1/keys',
      operationId: 'keys',
      summary: 'Key inventory (metadata only, never key material)',
      handler: () => ({ keys: agent.inventory() }),
    },
    {
      method: 'GET',
      path: '/v1/workloads',
      operationId: 'listWorkloads',
      summary: 'Registered workloads (no secrets)',
      handler: () => ({ workloads: agent.listWorkloads() }),
    },
    bodyRoute({
      method: 'POST',
      path: '/v1/workloads',
      operationId: 'registerWorkload',
      summary:
        "Register a workload with its vSwitch's public key: the NIC's public key, a PSK and its endpoint",
      body: registerWorkloadSchema,
      example: { tenant: 'acme', workload: 'web-1', address: '100.64.1.10', vswitchPublicKey: EXAMPLE_KEY },
      status: 201,
      handler: (_req, body) => answer(201, agent.registerWorkload(body)),
    }),
    {
      method: 'DELETE',
      path: '/v1/workloads/:workload',
      operationId: 'removeWorkload',
      summary: 'Remove a workload: its keys wiped, its session ends at once',
      params: workload,
      body: emptySchema,
      handler: (req) => agent.removeWorkload(req.params.workload),
    },
    {
      method: 'POST',
      path: '/v1/workloads/:workload/psk',
      operationId: 'rotatePsk',
      summary: "Rotate a workload's PSK; the answer carries it sealed to the workload's vSwitch instance",
      params: workload,
      body: emptySchema,
      handler: (req) => agent.rotatePsk(req.params.workload),
    },
    {
      method: 'GET',
      path: '/v1/tenants',
      operationId: 'listTenants',
      summary: 'Tenants, their off-host public keys and peers',
      handler: () => ({ tenants: agent.listTenants() }),
    },
    {
      method: 'GET',
      path: '/v1/tenants/:tenant/key',
      operationId: 'tenantKey',
      summary: "The tenant's off-host public key, signed",
      params: tenant,
      handler: (req) => agent.tenantKey(req.params.tenant),
    },
    bodyRoute({
      method: 'PUT',
      path: '/v1/tenants/:tenant/peers',
      operationId: 'setTenantPeers',
      summary: "The tenant's remote NICs with their workloads (signatures verified)",
      params: tenant,
      body: tenantPeersSchema,
      example: { peers: [] },
      handler: (req, body) => agent.setTenantPeers(req.params.tenant, body.peers),
    }),
    bodyRoute({
      method: 'PUT',
      path: '/v1/tenants/:tenant/grants',
      operationId: 'setGrants',
      summary: "Other tenants' workloads the tenant's workloads may exchange packets with (routes only)",
      params: tenant,
      body: tenantGrantsSchema,
      example: { workloads: [] },
      handler: (req, body) => agent.setGrants(req.params.tenant, body.workloads),
    }),
    {
      method: 'GET',
      path: '/v1/tenants/:tenant/grants',
      operationId: 'listGrants',
      summary: 'The grant list in force, each with `routed`',
      params: tenant,
      handler: (req) => agent.listGrants(req.params.tenant),
    },
    bodyRoute({
      method: 'PUT',
      path: '/v1/tenants/:tenant/network',
      operationId: 'setTenantNetwork',
      summary:
        "The tenant's DNS server address and services (virtual address, selector, ports); endpoints follow its workloads",
      params: tenant,
      body: tenantNetworkSchema,
      example: {
        dns: '100.64.1.254',
        services: [
          {
            name: 'web',
            address: '100.64.1.253',
            selector: { app: 'web' },
            ports: [{ port: 80, protocol: 'tcp' }],
          },
        ],
      },
      handler: (req, body) => agent.setTenantNetwork(req.params.tenant, body),
    }),
    {
      method: 'GET',
      path: '/v1/tenants/:tenant/network',
      operationId: 'getTenantNetwork',
      summary: "The tenant's DNS server and services with their endpoints, pinned connections and counters",
      params: tenant,
      handler: (req) => agent.getTenantNetwork(req.params.tenant),
    },
    {
      method: 'PUT',
      path: '/v1/policy/:tenant',
      operationId: 'setPolicy',
      summary: "Set the tenant's policy document (422 with every reason when refused; the old one stays)",
      params: tenant,
      body: policyBodySchema,
      example: {
        version: 1,
        tenant: 'acme',
        rules: [{ id: 'in', direction: 'ingress', workloads: { labels: {} }, peers: [{ labels: {} }] }],
      },
      handler: (req) => agent.setPolicy(req.params.tenant, req.body),
    },
    {
      method: 'GET',
      path: '/v1/policy/:tenant',
      operationId: 'getPolicy',
      summary: 'The policy document in force (404 when none)',
      params: tenant,
      handler: (req) => agent.getPolicy(req.params.tenant),
    },
    {
      method: 'DELETE',
      path: '/v1/policy/:tenant',
      operationId: 'removePolicy',
      summary: 'Remove the policy document: back to default deny',
      params: tenant,
      body: emptySchema,
      handler: (req) => agent.removePolicy(req.params.tenant),
    },
    {
      method: 'GET',
      path: '/v1/flows',
      operationId: 'flows',
      summary: 'Flow records, newest first: open connections and ended ones',
      query: flowQuerySchema,
      handler: (req) => {
        const q = req.queryValues as ReturnType<typeof flowQuerySchema.parse>;
        let since: number | undefined;
        if (q.since !== undefined) {
          try {
            since = parseSince(q.since, Date.now());
          } catch (err) {
            throw new TgError('TG_ERR_INVALID_ARGUMENT', `since: ${(err as Error).message}`, { cause: err });
          }
        }
        return { flows: agent.flows({ tenant: q.tenant, verdict: q.verdict, since, limit: q.limit }) };
      },
    },
  ]);
}
