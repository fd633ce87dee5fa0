// A typed client of the orchestrator's API (CLI, demo, tests). Errors come back as TgError
// with the orchestrator's code and message.
import { type ApiEndpoint, apiCall, apiRequest, type HttpMethod } from '../util/http-json.js';
import type {
  CreateTenant,
  CreateWorkload,
  HostRecord,
  PolicyRecord,
  RegisterHost,
  ServiceRecord,
  TenantRecord,
  WorkloadRecord,
} from './model.js';
import type { InstallationStatus, Topology } from './observe.js';
import type { DrainNicResult, PolicyTestReport } from './orchestrator.js';
import type { ReconcileReport } from './reconcile.js';

export const DEFAULT_ORCHESTRATOR_SOCKET = '/run/tenguard/orchestrator.sock';

/** The API socket: TENGUARD_ORCHESTRATOR, else /run/tenguard/orchestrator.sock. */
export function defaultOrchestratorSocket(): string {
  return process.env.TENGUARD_ORCHESTRATOR ?? DEFAULT_ORCHESTRATOR_SOCKET;
}

const seg = (s: string): string => encodeURIComponent(s);

export class OrchestratorClient {
  constructor(
    readonly endpoint: ApiEndpoint,
    private readonly timeoutMs = 120_000,
  ) {}

  private call<T>(method: HttpMethod, path: string, body?: unknown): Promise<T> {
    return apiCall(this.endpoint, method, path, body, { timeoutMs: this.timeoutMs }) as Promise<T>;
  }

  health(): Promise<Record<string, unknown>> {
    return this.call('GET', '/v1/health');
  }

  openapi(): Promise<Record<string, unknown>> {
    return this.call('GET', '/openapi.json');
  }

  /** Prometheus text. */
  async metrics(): Promise<string> {
    const r = await apiRequest(this.endpoint, 'GET', '/metrics', undefined, { timeoutMs: this.timeoutMs });
    return r.raw;
  }

  // tenants
  createTenant(req: CreateTenant): Promise<TenantRecord> {
    return this.call('POST', '/v1/tenants', req);
  }
  async listTenants(): Promise<TenantRecord[]> {
    return (await this.call<{ tenants: TenantRecord[] }>('GET', '/v1/tenants')).tenants;
  }
  showTenant(name: string): Promise<TenantRecord & { workloads: number; allocated: number }> {
    return this.call('GET', `/v1/tenants/${seg(name)}`);
  }
  deleteTenant(name: string): Promise<{ name: string }> {
    return this.call('DELETE', `/v1/tenants/${seg(name)}`);
  }

  // hosts
  registerHost(req: RegisterHost): Promise<HostRecord> {
    return this.call('POST', '/v1/hosts', req);
  }
  async listHosts(): Promise<HostRecord[]> {
    return (await this.call<{ hosts: HostRecord[] }>('GET', '/v1/hosts')).hosts;
  }
  showHost(name: string): Promise<HostRecord> {
    return this.call('GET', `/v1/hosts/${seg(name)}`);
  }
  deregisterHost(name: string): Promise<{ name: string }> {
    return this.call('DELETE', `/v1/hosts/${seg(name)}`);
  }
  /** The key inventory of every NIC of a host (each entry tagged `nic` on a host with several), or of one. */
  keys(host: string, nic?: string): Promise<{ host: string; keys: Record<string, unknown>[] }> {
    const q = nic === undefined ? '' : `?nic=${encodeURIComponent(nic)}`;
    return this.call('GET', `/v1/hosts/${seg(host)}/keys${q}`);
  }
  /** Drains a NIC: its workloads move to the host's other NICs with new keys. */
  drainNic(host: string, nic: string): Promise<DrainNicResult> {
    return this.call('POST', `/v1/hosts/${seg(host)}/nics/${seg(nic)}/drain`, {});
  }
  /** Makes a drained or failed NIC take workloads again. */
  undrainNic(host: string, nic: string): Promise<HostRecord> {
    return this.call('POST', `/v1/hosts/${seg(host)}/nics/${seg(nic)}/undrain`, {});
  }

  // workloads
  createWorkload(req: CreateWorkload): Promise<WorkloadRecord> {
    return this.call('POST', '/v1/workloads', req);
  }
  async listWorkloads(): Promise<WorkloadRecord[]> {
    return (await this.call<{ workloads: WorkloadRecord[] }>('GET', '/v1/workloads')).workloads;
  }
  showWorkload(name: string): Promise<WorkloadRecord> {
    return this.call('GET', `/v1/workloads/${seg(name)}`);
  }
  deleteWorkload(name: string): Promise<{ name: string; timings: Record<string, number> }> {
    return this.call('DELETE', `/v1/workloads/${seg(name)}`);
  }
  migrateWorkload(name: string, to: string): Promise<WorkloadRecord> {
    return this.call('POST', `/v1/workloads/${seg(name)}/migrate`, { to });
  }

  // services
  createService(req: {
    tenant: string;
    name: string;
    selector: Record<string, string>;
    ports: (string | { port: number; protocol: 'tcp' | 'udp' })[];
  }): Promise<ServiceRecord & { pushedTo: string[] }> {
    return this.call('POST', '/v1/services', req);
  }
  async listServices(tenant?: string): Promise<ServiceRecord[]> {
    const q = tenant === undefined ? '' : `?tenant=${encodeURIComponent(tenant)}`;
    return (await this.call<{ services: ServiceRecord[] }>('GET', `/v1/services${q}`)).services;
  }
  showService(tenant: string, name: string): Promise<ServiceRecord & { nics: Record<string, unknown> }> {
    return this.call('GET', `/v1/tenants/${seg(tenant)}/services/${seg(name)}`);
  }
  deleteService(tenant: string, name: string): Promise<ServiceRecord & { pushedTo: string[] }> {
    return this.call('DELETE', `/v1/tenants/${seg(tenant)}/services/${seg(name)}`);
  }

  // policy
  setPolicy(tenant: string, document: unknown): Promise<PolicyRecord & { pushedTo: string[] }> {
    return this.call('PUT', `/v1/tenants/${seg(tenant)}/policy`, document);
  }
  getPolicy(tenant: string): Promise<PolicyRecord> {
    return this.call('GET', `/v1/tenants/${seg(tenant)}/policy`);
  }
  testPolicy(tenant: string, document: unknown): Promise<PolicyTestReport> {
    return this.call('POST', `/v1/tenants/${seg(tenant)}/policy/test`, document);
  }

  // the operator's view
  status(): Promise<InstallationStatus> {
    return this.call('GET', '/v1/status');
  }
  topology(): Promise<Topology> {
    return this.call('GET', '/v1/topology');
  }
  /** A one-time login link to the web console (served only when the orchestrator runs it). */
  consoleLogin(): Promise<{ url: string; expiresAt: string }> {
    return this.call('POST', '/v1/console/login');
  }

  // observation
  flows(q: { tenant?: string; since?: string; limit?: number } = {}): Promise<{
    flows: Record<string, unknown>[];
    hosts: Record<string, string>;
  }> {
    return Object.keys(q).length === 0
      ? this.call('GET', '/v1/flows')
      : this.call('POST', '/v1/flows/query', q);
  }
  reconcile(): Promise<ReconcileReport> {
    return this.call('POST', '/v1/reconcile');
  }
  lastReconcile(): Promise<{ passes: number; last: ReconcileReport | null }> {
    return this.call('GET', '/v1/reconcile');
  }
}
