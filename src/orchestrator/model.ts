// The orchestrator's records (desired state, public data only) and the schemas of what a
// client may send. Names are src/net/name.ts's, as on the NIC and vSwitch.
import { z } from 'zod';
import { nameSchema } from '../net/name.js';
import { labelsSchema } from '../policy/model.js';

/** Namespace names the vSwitch accepts; a host's prefix leaves room for the workload name. */
export const NETNS_PREFIX_RE = /^[A-Za-z0-9_.-]{1,40}$/;
export const NETNS_MAX = 64;

const socketPathSchema = z
  .string()
  .min(2)
  .max(107)
  .regex(/^\/[^\0]*$/, 'must be an absolute path of a Unix socket');

export const createTenantSchema = z.strictObject({
  name: nameSchema,
  pool: z.string().min(1).max(64),
});

/** Most NICs one host registers. */
export const MAX_HOST_NICS = 8;

export const hostNicSchema = z.strictObject({
  name: nameSchema,
  /** The NIC agent's API socket. */
  api: socketPathSchema,
  /** Where its fabric port is (informational: the NIC publishes its own endpoint). */
  fabricAddress: z.string().min(2).max(64).optional(),
});

export const registerHostSchema = z
  .strictObject({
    name: nameSchema,
    /** The API of the host's (first) NIC agent. */
    nicApi: socketPathSchema,
    vswitchApi: socketPathSchema,
    netnsPrefix: z.string().regex(NETNS_PREFIX_RE, 'must be 1..40 of A-Z, a-z, 0-9, ".", "_", "-"'),
    /** Every NIC of the host, the first one at `nicApi`; absent: one NIC, `nic1`, at `nicApi`. */
    nics: z.array(hostNicSchema).min(1).max(MAX_HOST_NICS).optional(),
  })
  .refine((h) => h.nics === undefined || h.nics[0]?.api === h.nicApi, {
    message: 'the first of nics must be the NIC at nicApi',
    path: ['nics'],
  })
  .refine((h) => h.nics === undefined || new Set(h.nics.map((n) => n.name)).size === h.nics.length, {
    message: 'NIC names must differ',
    path: ['nics'],
  })
  .refine((h) => h.nics === undefined || new Set(h.nics.map((n) => n.api)).size === h.nics.length, {
    message: 'NIC API sockets must differ',
    path: ['nics'],
  });

export const drainNicSchema = z.strictObject({ nic: nameSchema });

export const createWorkloadSchema = z.strictObject({
  tenant: nameSchema,
  name: nameSchema,
  host: nameSchema,
  labels: labelsSchema.optional(),
  /**
   * A namespace a container runtime made and owns (a name under /run/netns, e.g. CNI_NETNS's
   * base name): the workload is put there and the namespace is never created or deleted by
   * tenguard. Without it the orchestrator makes `<netnsPrefix><name>` and owns it.
   */
  netns: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be a namespace name: 1..64 of A-Z, a-z, 0-9, ".", "_", "-"')
    .refine((s) => s !== '.' && s !== '..', 'must be a namespace name')
    .optional(),
  /** The interface's name inside the namespace (default tg0), e.g. the runtime's CNI_IFNAME. */
  ifname: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,15}$/, 'must be an interface name: 1..15 of A-Z, a-z, 0-9, ".", "_", "-"')
    .optional(),
});

export const migrateSchema = z.strictObject({ to: nameSchema });

/** A service port as the CLI writes it ("80/tcp") or as an object. */
export const servicePortSchema = z.union([
  z
    .string()
    .regex(/^[1-9][0-9]{0,4}\/(?:tcp|udp)$/, 'must be PORT/tcp or PORT/udp')
    .transform((s) => ({ port: Number(s.split('/')[0]), protocol: s.split('/')[1] as 'tcp' | 'udp' }))
    .refine((p) => p.port <= 65535, 'port must be at most 65535'),
  z.strictObject({ port: z.number().int().min(1).max(65535), protocol: z.enum(['tcp', 'udp']) }),
]);

export const createServiceSchema = z.strictObject({
  tenant: nameSchema,
  name: nameSchema,
  /** The tenant's workloads whose labels include all of these are the service's endpoints. */
  selector: labelsSchema.refine((l) => Object.keys(l).length > 0, 'a selector needs at least one label'),
  ports: z.array(servicePortSchema).min(1).max(32),
});

export const emptyBodySchema = z.strictObject({}).optional();

export type CreateTenant = z.infer<typeof createTenantSchema>;
export type RegisterHost = z.infer<typeof registerHostSchema>;
export type CreateWorkload = z.infer<typeof createWorkloadSchema>;
export type CreateService = z.infer<typeof createServiceSchema>;

/**
 * A service: a virtual address from the tenant's pool, load-balanced by the NICs across the
 * tenant's workloads its selector matches; named <name>.<tenant>.tg. by the tenant's DNS server.
 */
export interface ServiceRecord {
  tenant: string;
  name: string;
  address: string;
  /** The IPv6 virtual address, derived from `address` in the tenant's IPv6 prefix (pool.ts: address6Of); the service fills it in for records stored before it. */
  address6?: string;
  selector: Record<string, string>;
  ports: { port: number; protocol: 'tcp' | 'udp' }[];
  createdAt: string;
}

export interface TenantRecord {
  name: string;
  /** Canonical CIDR inside 100.64.0.0/10. */
  pool: string;
  /** The tenant's IPv6 ULA prefix, derived from `pool` (pool.ts: pool6Of); the service fills it in for records stored before dual stack. */
  pool6?: string;
  createdAt: string;
}

/** ok: takes workloads; failed: its agent stopped answering (workloads moved off); draining: an operator's. */
export type NicState = 'ok' | 'failed' | 'draining';

export interface NicRecord {
  name: string;
  api: string;
  fabricAddress?: string;
  state: NicState;
  /** When the state last changed. */
  since?: string;
}

export interface HostRecord {
  name: string;
  /** The API of the host's first NIC agent. */
  nicApi: string;
  vswitchApi: string;
  netnsPrefix: string;
  registeredAt: string;
  /** Every NIC of the host (nics.ts); absent on a one-NIC host registered without a list. */
  nics?: NicRecord[];
}

/**
 * creating: being spun up; running: desired on `host`; migrating: moving to `migratingTo`;
 * deleting: being spun down (the reconciler finishes it if a step failed).
 */
export type WorkloadState = 'creating' | 'running' | 'migrating' | 'deleting';

export interface WorkloadRecord {
  name: string;
  tenant: string;
  host: string;
  /** IPv4 address from the tenant's pool. */
  address: string;
  /** IPv6 address from the tenant's ULA prefix (pool.ts: address6Of); absent on records made before dual stack. */
  address6?: string;
  netns: string;
  labels: Record<string, string>;
  state: WorkloadState;
  migratingTo: string | null;
  createdAt: string;
  /** Milliseconds per step of the last spin-up or migration, and its total. */
  timings: Record<string, number>;
  /** The last lifecycle failure, if the last operation failed part way. */
  lastError: string | null;
  /** 'runtime': the namespace belongs to a container runtime (CNI); absent: tenguard's own. */
  netnsOwner?: 'runtime';
  /** The interface's name inside the namespace when it is not tg0. */
  ifname?: string;
  /** The tenant's DNS server (at the NIC) this workload resolves names with. */
  dns?: string;
  /** The NIC of its host carrying it (nics.ts); absent: the host's first. */
  nic?: string;
}

/**
 * A namespace the orchestrator created (recorded before `ip netns add`, forgotten after
 * `ip netns del`): reconciliation removes only recorded namespaces nobody wants, never by name.
 */
export interface NamespaceRecord {
  name: string;
  host: string;
  workload: string;
  createdAt: string;
}

export interface PolicyRecord {
  tenant: string;
  document: unknown;
  updatedAt: string;
}

export interface AllocationRecord {
  tenant: string;
  address: string;
  /** The workload holding the address; for a service its name; for the DNS server ''. */
  workload: string;
  /** Absent: a workload's. */
  purpose?: 'service' | 'dns';
}

/** The search domain of a tenant's names. */
export function tenantDomain(tenant: string): string {
  return `${tenant}.tg`;
}

/** The namespace of a workload on a host. */
export function workloadNetns(host: HostRecord, workload: string): string {
  return `${host.netnsPrefix}${workload}`;
}

/**
 * Whether a create request asks for what an existing workload of that name is: the same
 * tenant, host, labels, namespace owner and interface. A retried create (its first answer
 * lost) is answered with the workload instead of a conflict; any difference is a conflict.
 */
export function sameCreateSpec(req: CreateWorkload, w: WorkloadRecord): boolean {
  const labels = req.labels ?? {};
  const keys = Object.keys(labels);
  return (
    req.tenant === w.tenant &&
    req.host === w.host &&
    keys.length === Object.keys(w.labels).length &&
    keys.every((k) => w.labels[k] === labels[k]) &&
    (req.netns === undefined
      ? w.netnsOwner !== 'runtime'
      : w.netnsOwner === 'runtime' && w.netns === req.netns) &&
    (req.ifname ?? 'tg0') === (w.ifname ?? 'tg0')
  );
}
