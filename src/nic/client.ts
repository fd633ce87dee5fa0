// A typed client of the NIC agent's API (for the orchestrator, the lab and tests).
// Errors come back as TgError with the agent's code and message.

import type { FlowRecord } from '../policy/flowlog.js';
import type { PolicyDocument } from '../policy/model.js';
import type { PolicyAccepted } from '../policy/store.js';
import { type ApiEndpoint, type ApiResult, apiCall, apiRequest, type HttpMethod } from '../util/http-json.js';
import type {
  GrantWorkloadInput,
  Labels,
  SignedTenantKey,
  TenantPeerInput,
  WorkloadCrypto,
} from './agent.js';
import type { NicHealth } from './health.js';
import type { KeyMetadata } from './keystore.js';
import type { TenantNetworkInput, TenantNetworkState } from './network.js';
import type { PskBox } from './psk-box.js';

export interface NicPublicIdentity {
  identityKey: string;
  sealKey: string;
  sealKeySignature: string;
  onHostPublicKey: string;
  hostEndpoint: string;
  fabricEndpoint: string;
  /** Under mTLS: the NIC's certificate chain and the binding of identityKey to it. */
  nicCertificate?: string;
  identityBinding?: string;
}

/** Sees every answer a client receives (tests record them). */
export type ResponseRecorder = (method: string, path: string, r: ApiResult) => void;

const seg = (s: string): string => encodeURIComponent(s);

export class NicClient {
  /**
   * @param endpoint The API's Unix socket path (plain HTTP), or an endpoint with TLS options.
   * @param timeoutMs Per request (default 30 s).
   */
  constructor(
    readonly endpoint: ApiEndpoint,
    private readonly recorder?: ResponseRecorder,
    private readonly timeoutMs?: number,
  ) {}

  private call<T>(method: HttpMethod, path: string, body?: unknown): Promise<T> {
    return apiCall(this.endpoint, method, path, body, {
      onResponse: this.recorder,
      timeoutMs: this.timeoutMs,
    }) as Promise<T>;
  }

  /** Liveness, counts, the API version and its capabilities. */
  health(): Promise<NicHealth> {
    return this.call('GET', '/v1/health');
  }

  openapi(): Promise<Record<string, unknown>> {
    return this.call('GET', '/openapi.json');
  }

  identity(): Promise<NicPublicIdentity> {
    return this.call('GET', '/v1/identity');
  }

  async keys(): Promise<KeyMetadata[]> {
    return (await this.call<{ keys: KeyMetadata[] }>('GET', '/v1/keys')).keys;
  }

  registerWorkload(req: {
    tenant: string;
    workload: string;
    address: string;
    address6?: string;
    vswitchPublicKey: string;
    labels?: Labels;
    /** Replace its registration in the same tenant, keeping the tenant (a new vSwitch instance). */
    replace?: boolean;
  }): Promise<WorkloadCrypto> {
    return this.call('POST', '/v1/workloads', req);
  }

  removeWorkload(workload: string): Promise<{ workload: string; tenantRemoved: boolean }> {
    return this.call('DELETE', `/v1/workloads/${seg(workload)}`);
  }

  rotatePsk(workload: string): Promise<{ workload: string; sealedPsk: PskBox }> {
    return this.call('POST', `/v1/workloads/${seg(workload)}/psk`);
  }

  async workloads(): Promise<Record<string, unknown>[]> {
    return (await this.call<{ workloads: Record<string, unknown>[] }>('GET', '/v1/workloads')).workloads;
  }

  async tenants(): Promise<Record<string, unknown>[]> {
    return (await this.call<{ tenants: Record<string, unknown>[] }>('GET', '/v1/tenants')).tenants;
  }

  tenantKey(tenant: string): Promise<SignedTenantKey> {
    return this.call('GET', `/v1/tenants/${seg(tenant)}/key`);
  }

  setTenantPeers(tenant: string, peers: TenantPeerInput[]): Promise<{ tenant: string; peers: number }> {
    return this.call('PUT', `/v1/tenants/${seg(tenant)}/peers`, { peers });
  }

  /** Other tenants' workloads `tenant`'s workloads may exchange traffic with (api.ts). */
  setGrants(
    tenant: string,
    workloads: GrantWorkloadInput[],
  ): Promise<{ tenant: string; workloads: number; routed: number }> {
    return this.call('PUT', `/v1/tenants/${seg(tenant)}/grants`, { workloads });
  }

  async grants(tenant: string): Promise<(GrantWorkloadInput & { routed: boolean })[]> {
    return (
      await this.call<{ workloads: (GrantWorkloadInput & { routed: boolean })[] }>(
        'GET',
        `/v1/tenants/${seg(tenant)}/grants`,
      )
    ).workloads;
  }

  /** A tenant's DNS server address and services (network.ts); endpoints follow its workloads. */
  setTenantNetwork(
    tenant: string,
    network: TenantNetworkInput,
  ): Promise<{ tenant: string; services: number; dns: string | null }> {
    return this.call('PUT', `/v1/tenants/${seg(tenant)}/network`, network);
  }

  getTenantNetwork(tenant: string): Promise<TenantNetworkState> {
    return this.call('GET', `/v1/tenants/${seg(tenant)}/network`);
  }

  /** Throws TgError TG_ERR_POLICY_REJECTED (every reason in the message) when refused. */
  setPolicy(tenant: string, doc: unknown): Promise<PolicyAccepted> {
    return this.call('PUT', `/v1/policy/${seg(tenant)}`, doc);
  }

  getPolicy(tenant: string): Promise<PolicyDocument> {
    return this.call('GET', `/v1/policy/${seg(tenant)}`);
  }

  removePolicy(tenant: string): Promise<{ tenant: string; removed: boolean }> {
    return this.call('DELETE', `/v1/policy/${seg(tenant)}`);
  }

  /** Flow records, newest first; `since` is "5m", "1h", an ISO time or epoch ms. */
  async flows(
    q: { tenant?: string; verdict?: 'allow' | 'deny'; since?: string | number; limit?: number } = {},
  ): Promise<FlowRecord[]> {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v !== undefined) p.set(k, String(v));
    const qs = p.toString();
    return (await this.call<{ flows: FlowRecord[] }>('GET', `/v1/flows${qs === '' ? '' : `?${qs}`}`)).flows;
  }

  async metrics(): Promise<string> {
    const r = await apiRequest(this.endpoint, 'GET', '/metrics', undefined, { timeoutMs: this.timeoutMs });
    this.recorder?.('GET', '/metrics', r);
    return r.raw;
  }
}

/** The value of one sample of a Prometheus text exposition, 0 when absent. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = (m[2] ?? '').split(',').filter(Boolean);
    if (want.every((w) => have.includes(w))) return Number(m[3]);
  }
  return 0;
}
