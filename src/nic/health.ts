// The NIC agent's health report: alive, what it holds (counts only), and whether its data
// plane is running, the API's version and its capabilities (what a client may use: the
// orchestrator reads them here, never from an error's text). No key material, not even
// fingerprints.
import type { NicAgent } from './agent.js';

export const NIC_API_VERSION = '1.2.0';

/**
 * What this NIC's API serves beyond registration and peers: 'policy' (PUT/GET/DELETE
 * /v1/policy/:tenant, workload labels), 'flows' (GET /v1/flows), 'grants' (cross-tenant
 * grants), 'openapi' (GET /openapi.json), 'network' (PUT/GET /v1/tenants/:tenant/network: the
 * tenant's DNS server and services).
 */
export const NIC_CAPABILITIES = ['policy', 'flows', 'grants', 'openapi', 'network'] as const;
export type NicCapability = (typeof NIC_CAPABILITIES)[number];

export interface NicHealth {
  status: 'ok' | 'stopping';
  uptimeSeconds: number;
  dataPlane: boolean;
  tenants: number;
  workloads: number;
  remotePeers: number;
  keys: number;
  apiVersion: string;
  capabilities: readonly NicCapability[];
}

export function nicHealth(agent: NicAgent, dataPlaneRunning: boolean, now = Date.now()): NicHealth {
  const c = agent.counts();
  return {
    status: agent.isClosed ? 'stopping' : 'ok',
    uptimeSeconds: Math.round((now - agent.startedAt) / 1000),
    dataPlane: dataPlaneRunning,
    tenants: c.tenants,
    workloads: c.workloads,
    remotePeers: c.remotePeers,
    keys: agent.keys.size,
    apiVersion: NIC_API_VERSION,
    capabilities: NIC_CAPABILITIES,
  };
}
