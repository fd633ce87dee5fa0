// The NIC agent's health report: alive, what it holds (counts only), and whether its data
// plane is running. No key material, not even fingerprints.
import type { NicAgent } from './agent.js';

export interface NicHealth {
  status: 'ok' | 'stopping';
  uptimeSeconds: number;
  dataPlane: boolean;
  tenants: number;
  workloads: number;
  remotePeers: number;
  keys: number;
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
  };
}
