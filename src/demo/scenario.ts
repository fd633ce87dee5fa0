// What the demo builds: two hosts, two tenants with their address pools, and three
// workloads per tenant (two on host h1, one on h2), plus the pairs it sends traffic between
// and the moves it makes. Names are what the orchestrator sees; namespaces are the control
// plane's business.

export const HOSTS = ['h1', 'h2'] as const;

export const TENANTS = [
  { name: 'acme', pool: '100.64.1.0/24' },
  { name: 'blue', pool: '100.64.2.0/24' },
] as const;

export interface WorkloadSpec {
  name: string;
  tenant: string;
  host: string;
  labels: Record<string, string>;
}

export const WORKLOADS: readonly WorkloadSpec[] = TENANTS.flatMap((t) => [
  { name: `${t.name}-web`, tenant: t.name, host: 'h1', labels: { app: 'web' } },
  { name: `${t.name}-api`, tenant: t.name, host: 'h1', labels: { app: 'api' } },
  { name: `${t.name}-db`, tenant: t.name, host: 'h2', labels: { app: 'db' } },
]);

/** Same-tenant pairs: [from, to, what]. */
export const SAME_TENANT: readonly [string, string, string][] = TENANTS.flatMap(
  (t): [string, string, string][] => [
    [`${t.name}-web`, `${t.name}-api`, 'same host'],
    [`${t.name}-web`, `${t.name}-db`, 'cross host'],
  ],
);

/** Cross-tenant pairs that must not pass: [from, to, what]. */
export const CROSS_TENANT: readonly [string, string, string][] = [
  ['acme-web', 'blue-api', 'same host'],
  ['acme-web', 'blue-db', 'cross host'],
  ['blue-db', 'acme-db', 'same host'],
];

/** A tenant given no policy document: its own workloads cannot reach each other (default deny). */
export const NO_POLICY = {
  tenant: 'gray',
  pool: '100.64.3.0/24',
  workloads: [
    { name: 'gray-a', tenant: 'gray', host: 'h1', labels: { app: 'a' } },
    { name: 'gray-b', tenant: 'gray', host: 'h2', labels: { app: 'b' } },
  ] as readonly WorkloadSpec[],
};

/** The live migration: the workload, where it goes, and the peer that streams pings to it. */
export const MIGRATION = { workload: 'acme-api', to: 'h2', streamFrom: 'acme-web', intervalMs: 20 };

/**
 * The killed vSwitch daemon: the host's daemon (its devices end with it) is SIGKILLed while a
 * workload on it pings one on the other host; the lab's supervisor restarts it and the
 * orchestrator re-adopts the host's workloads with new keys. `boundMs`: how soon the stream
 * must pass again for the check to hold (generous for a loaded machine; the gap is printed).
 */
export const VSWITCHD_KILL = {
  host: 'h1',
  streamFrom: 'acme-web',
  streamTo: 'acme-db',
  intervalMs: 20,
  boundMs: 10_000,
};

/** The spin-down: the only workload of its tenant on its host, so the tenant's off-host key goes too. */
export const SPIN_DOWN = { workload: 'blue-db', checkFrom: 'blue-web' };

/** Dual stack: IPv6 within a tenant across hosts, and to another tenant (blocked). */
export const IPV6 = { from: 'acme-web', to: 'acme-db', otherTenant: 'blue-db' };

/** The throughput run: same tenant, cross host. */
export const THROUGHPUT = { from: 'acme-web', to: 'acme-db' };

/**
 * The service step: a service over acme's db workload(s), reached by name from acme-web on the
 * other host; and another tenant's workload name, which acme's DNS server does not know.
 */
export const SERVICE = {
  tenant: 'acme',
  name: 'db',
  selector: { app: 'db' },
  port: 40400,
  from: 'acme-web',
  endpoint: 'acme-db',
  foreignName: 'blue-db.blue.tg',
};

/**
 * The NIC failover (`--nics 2`): the agent of the NIC carrying the workload is killed while a
 * workload on the other host pings it; the orchestrator moves its workloads to the host's
 * other NIC, and traffic must pass again within `boundMs`.
 */
export const NIC_FAILOVER = { workload: 'acme-web', streamFrom: 'acme-db', intervalMs: 20, boundMs: 3000 };

/**
 * Egress from acme-web to the lab's outside namespace: allowed to one DNS name (its answer is
 * what the NIC lets through, source-NATed to its uplink address), denied to another name and to
 * that name's raw address.
 */
export const EGRESS = {
  tenant: 'acme',
  from: 'acme-web',
  allowedName: 'allowed.example',
  deniedName: 'other.example',
  port: 80,
};
