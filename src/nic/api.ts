// The NIC agent's management API (HTTP+JSON; a Unix socket in the lab, mTLS with the CA
// issue). Routes are thin: validate the body by schema, call the agent, answer.
//
//   GET    /v1/health                      liveness and counts
//   GET    /metrics                        Prometheus text
//   GET    /v1/identity                    identity key, signed seal key, on-host key, endpoints
//   GET    /v1/keys                        key inventory (metadata only)
//   GET    /v1/workloads                   registered workloads (no secrets)
//   POST   /v1/workloads                   register {tenant, workload, address, vswitchPublicKey}
//                                          -> 201 {nicPublicKey, psk, nicEndpoint, ...}
//   DELETE /v1/workloads/:workload         remove (keys wiped, session ends at once)
//   POST   /v1/workloads/:workload/psk     rotate the PSK -> {psk}
//   GET    /v1/tenants                     tenants, their off-host public keys and peers
//   GET    /v1/tenants/:tenant/key         the tenant's off-host public key, signed
//   PUT    /v1/tenants/:tenant/peers       {peers: [...]}: the tenant's remote NICs (signatures verified)
import { answer, parseBody, type Route, textAnswer } from '../util/http-json.js';
import type { NicAgent } from './agent.js';
import { nicHealth } from './health.js';
import type { NicMetrics } from './metrics.js';
import { emptySchema, nameSchema, registerWorkloadSchema, tenantPeersSchema } from './schemas.js';

/** The largest request body the NIC accepts. */
export const NIC_MAX_BODY_BYTES = 256 * 1024;

function name(value: string | undefined, what: string): string {
  return parseBody(nameSchema, value, what);
}

export function nicRoutes(agent: NicAgent, metrics: NicMetrics, dataPlaneRunning: () => boolean): Route[] {
  return [
    { method: 'GET', path: '/v1/health', handler: () => nicHealth(agent, dataPlaneRunning()) },
    {
      method: 'GET',
      path: '/metrics',
      handler: async () => {
        const m = await metrics.text();
        return textAnswer(m.text, m.contentType);
      },
    },
    { method: 'GET', path: '/v1/identity', handler: () => agent.publicIdentity() },
    { method: 'GET', path: '/v1/keys', handler: () => ({ keys: agent.inventory() }) },
    { method: 'GET', path: '/v1/workloads', handler: () => ({ workloads: agent.listWorkloads() }) },
    {
      method: 'POST',
      path: '/v1/workloads',
      handler: (req) => answer(201, agent.registerWorkload(parseBody(registerWorkloadSchema, req.body))),
    },
    {
      method: 'DELETE',
      path: '/v1/workloads/:workload',
      handler: (req) => {
        parseBody(emptySchema, req.body);
        return agent.removeWorkload(name(req.params.workload, 'workload'));
      },
    },
    {
      method: 'POST',
      path: '/v1/workloads/:workload/psk',
      handler: (req) => {
        parseBody(emptySchema, req.body);
        return agent.rotatePsk(name(req.params.workload, 'workload'));
      },
    },
    { method: 'GET', path: '/v1/tenants', handler: () => ({ tenants: agent.listTenants() }) },
    {
      method: 'GET',
      path: '/v1/tenants/:tenant/key',
      handler: (req) => agent.tenantKey(name(req.params.tenant, 'tenant')),
    },
    {
      method: 'PUT',
      path: '/v1/tenants/:tenant/peers',
      handler: (req) => {
        const tenant = name(req.params.tenant, 'tenant');
        return agent.setTenantPeers(tenant, parseBody(tenantPeersSchema, req.body).peers);
      },
    },
  ];
}
