// A tenant's network services as the NIC agent holds them (PUT /v1/tenants/:tenant/network):
// the DNS server's address and the services (virtual address, selector, ports). Kept while the
// tenant comes and goes on this NIC (public data, like grants). Endpoints are not part of the
// request: the agent derives them from the workloads it knows of the tenant (its own and the
// remote ones of the tenant's peers, with their labels) each time those change, so endpoints
// follow workload creation, deletion and migration without another request.
import { z } from 'zod';
import { nameSchema } from '../net/name.js';
import { labelsSchema } from '../policy/model.js';
import { TgError } from '../util/errors.js';
import { type HostAddress, parseHostAddress } from './addresses.js';
import type { Forwarder } from './forwarding.js';
import type { ServicePort, ServiceSpec } from './services.js';

export const MAX_SERVICES = 1024;
export const MAX_SERVICE_PORTS = 32;

export const servicePortSchema = z.strictObject({
  port: z.number().int().min(1).max(65535),
  protocol: z.enum(['tcp', 'udp']),
});

export const tenantNetworkSchema = z.strictObject({
  dns: z.string().min(2).max(64).optional(),
  services: z
    .array(
      z.strictObject({
        name: nameSchema,
        address: z.string().min(2).max(64),
        /** The service's IPv6 address beside an IPv4 `address` (dual stack). */
        address6: z.string().min(2).max(64).optional(),
        selector: labelsSchema,
        ports: z.array(servicePortSchema).min(1).max(MAX_SERVICE_PORTS),
      }),
    )
    .max(MAX_SERVICES),
});

export type TenantNetworkInput = z.infer<typeof tenantNetworkSchema>;

interface ServiceConfig {
  name: string;
  address: HostAddress;
  address6: HostAddress | null;
  selector: Record<string, string>;
  ports: ServicePort[];
}

interface NetworkConfig {
  dns: HostAddress | null;
  services: ServiceConfig[];
}

/** GET /v1/tenants/:tenant/network. */
export interface TenantNetworkState {
  tenant: string;
  dns: string | null;
  services: {
    name: string;
    address: string;
    address6?: string;
    selector: Record<string, string>;
    ports: ServicePort[];
    endpoints: { workload: string; address: string }[];
    /** Pinned connections per endpoint workload. */
    pinned: Record<string, number>;
  }[];
  counters: {
    dns: Record<string, number> | null;
    services: Record<string, unknown> | null;
  };
}

/** A workload the agent knows for a tenant. */
export interface KnownWorkload {
  workload: string;
  address: HostAddress;
  /** The IPv6 address of a dual-stack workload. */
  address6?: HostAddress | null;
  labels: Record<string, string>;
}

/** A workload's address of `family`, if it has one. */
function addressOf(w: KnownWorkload, family: 4 | 6): HostAddress | null {
  if (w.address.family === family) return w.address;
  return w.address6 !== undefined && w.address6 !== null && w.address6.family === family ? w.address6 : null;
}

export function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}

export class TenantNetworks {
  private readonly configs = new Map<string, NetworkConfig>();
  /** tenant -> digest of what was last given to the forwarder. */
  private readonly applied = new Map<string, string>();

  /** Checks and stores a tenant's network; nothing changes when it is refused. */
  set(tenant: string, input: TenantNetworkInput): { tenant: string; services: number; dns: string | null } {
    const seen = new Set<string>();
    const names = new Set<string>();
    const dns = input.dns === undefined ? null : parseHostAddress(input.dns, 'dns');
    if (dns !== null) seen.add(dns.text);
    const services: ServiceConfig[] = [];
    for (const [i, s] of input.services.entries()) {
      const address = parseHostAddress(s.address, `services.${i}.address`);
      const address6 =
        s.address6 === undefined ? null : parseHostAddress(s.address6, `services.${i}.address6`);
      if (address6 !== null && (address6.family !== 6 || address.family !== 4))
        throw new TgError(
          'TG_ERR_INVALID_ARGUMENT',
          `services.${i}: address6 must be an IPv6 address beside an IPv4 address`,
        );
      if (seen.has(address.text) || (address6 !== null && seen.has(address6.text)) || names.has(s.name))
        throw new TgError('TG_ERR_INVALID_ARGUMENT', `services.${i} repeats a name or an address`);
      const ports = new Set<string>();
      for (const p of s.ports) {
        const k = `${p.port}/${p.protocol}`;
        if (ports.has(k)) throw new TgError('TG_ERR_INVALID_ARGUMENT', `services.${i} repeats port ${k}`);
        ports.add(k);
      }
      seen.add(address.text);
      if (address6 !== null) seen.add(address6.text);
      names.add(s.name);
      services.push({
        name: s.name,
        address,
        address6,
        selector: { ...s.selector },
        ports: s.ports.map((p) => ({ ...p })),
      });
    }
    if (dns === null && services.length === 0) this.configs.delete(tenant);
    else this.configs.set(tenant, { dns, services });
    this.applied.delete(tenant);
    return { tenant, services: services.length, dns: dns?.text ?? null };
  }

  /** Addresses the tenant's network uses (a workload may not take them). */
  addresses(tenant: string): Set<string> {
    const c = this.configs.get(tenant);
    const out = new Set<string>();
    if (c === undefined) return out;
    if (c.dns !== null) out.add(c.dns.text);
    for (const s of c.services) {
      out.add(s.address.text);
      if (s.address6 !== null) out.add(s.address6.text);
    }
    return out;
  }

  /**
   * Gives the forwarder the tenant's DNS server and services with their endpoints among
   * `workloads` (when anything changed since the last time).
   */
  apply(forwarder: Forwarder, tenant: string, workloads: readonly KnownWorkload[]): void {
    const c = this.configs.get(tenant);
    // A dual-stack service is two specs of one name, one per address: endpoints by family.
    const spec = (s: ServiceConfig, address: HostAddress): ServiceSpec => ({
      name: s.name,
      address,
      ports: s.ports,
      endpoints: workloads.flatMap((w) => {
        const a = addressOf(w, address.family);
        return a !== null && selects(s.selector, w.labels) ? [{ workload: w.workload, address: a }] : [];
      }),
    });
    const specs: ServiceSpec[] = (c?.services ?? []).flatMap((s) =>
      s.address6 === null ? [spec(s, s.address)] : [spec(s, s.address), spec(s, s.address6)],
    );
    const digest = JSON.stringify([
      c?.dns?.text ?? null,
      specs.map((s) => [
        s.name,
        s.address.text,
        s.ports,
        s.endpoints.map((e) => `${e.workload}=${e.address.text}`),
      ]),
    ]);
    if (this.applied.get(tenant) === digest) return;
    forwarder.setTenantNetwork(tenant, { dns: c?.dns ?? null, services: specs });
    this.applied.set(tenant, digest);
  }

  /** The forwarder lost the tenant (its last workload left): apply again when it returns. */
  forget(tenant: string): void {
    this.applied.delete(tenant);
  }

  /** A tenant's network as set, with the endpoints and counters the data path has now. */
  describe(tenant: string, forwarder: Forwarder): TenantNetworkState {
    const c = this.configs.get(tenant);
    const live = forwarder.tenantNetwork(tenant);
    const pinned = live?.services?.pinned() ?? new Map<string, Map<string, number>>();
    return {
      tenant,
      dns: c?.dns?.text ?? null,
      services: (c?.services ?? []).map((s) => {
        const entry = live?.services?.serviceAt(s.address.bytes);
        return {
          name: s.name,
          address: s.address.text,
          ...(s.address6 !== null ? { address6: s.address6.text } : {}),
          selector: s.selector,
          ports: s.ports,
          endpoints: (entry?.endpoints ?? []).map((e) => ({ workload: e.workload, address: e.address.text })),
          pinned: Object.fromEntries(pinned.get(s.name) ?? []),
        };
      }),
      counters: {
        dns: live?.dns === null || live?.dns === undefined ? null : { ...live.dns.counters },
        services:
          live?.services === null || live?.services === undefined
            ? null
            : {
                ...live.services.counters,
                dropped: { ...live.services.counters.dropped },
                connections: live.services.size,
                connectionsOpened: live.services.counters.connections,
              },
      },
    };
  }
}
