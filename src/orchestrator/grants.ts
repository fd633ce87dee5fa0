// Cross-tenant grants (the NIC API's PUT /v1/tenants/:tenant/grants, src/nic/api.ts header):
// for every tenant T on a NIC, the workloads of the other tenants that T may exchange packets
// with, so the NIC can route them (the policies still decide). Two tenants are linked when
// either one's policy document names the other in a rule peer; T's list then holds every
// workload of every tenant linked with T, with its labels and the identity key of the NIC it
// sits behind (none when it is on the same host). Pure functions; the lifecycle pushes.

/** A placed workload as grants need it. */
export interface GrantSource {
  tenant: string;
  workload: string;
  address: string;
  address6?: string;
  labels: Record<string, string>;
  host: string;
}

export interface GrantEntry {
  tenant: string;
  workload: string;
  address: string;
  address6?: string;
  labels: Record<string, string>;
  nicIdentityKey?: string;
}

/** The tenants a policy document names in rule peers (other than its own). */
export function tenantsNamed(doc: unknown): Set<string> {
  const out = new Set<string>();
  const d = doc as { tenant?: unknown; rules?: unknown };
  if (!Array.isArray(d?.rules)) return out;
  for (const r of d.rules as { peers?: unknown }[]) {
    if (!Array.isArray(r?.peers)) continue;
    for (const p of r.peers as { tenant?: unknown }[])
      if (typeof p?.tenant === 'string' && p.tenant !== d.tenant) out.add(p.tenant);
  }
  return out;
}

/** tenant -> the tenants linked with it (symmetric), from every tenant's policy document. */
export function tenantLinks(docs: ReadonlyMap<string, unknown>): Map<string, Set<string>> {
  const links = new Map<string, Set<string>>();
  const add = (a: string, b: string): void => {
    links.set(a, (links.get(a) ?? new Set()).add(b));
  };
  for (const [tenant, doc] of docs)
    for (const other of tenantsNamed(doc)) {
      add(tenant, other);
      add(other, tenant);
    }
  return links;
}

/**
 * The grant list of `tenant` for the NIC of `host`: workloads of linked tenants, sorted.
 * `identityOf` gives a host's NIC identity key (null when unknown: the workload is left out).
 */
export function grantList(
  tenant: string,
  host: string,
  links: ReadonlyMap<string, Set<string>>,
  placed: readonly GrantSource[],
  identityOf: (host: string) => string | null,
): GrantEntry[] {
  const linked = links.get(tenant);
  if (linked === undefined) return [];
  const out: GrantEntry[] = [];
  for (const w of placed) {
    if (!linked.has(w.tenant)) continue;
    const e: GrantEntry = {
      tenant: w.tenant,
      workload: w.workload,
      address: w.address,
      ...(w.address6 !== undefined ? { address6: w.address6 } : {}),
      labels: w.labels,
    };
    if (w.host !== host) {
      const id = identityOf(w.host);
      if (id === null) continue;
      e.nicIdentityKey = id;
    }
    out.push(e);
  }
  return out.sort((a, b) =>
    a.tenant === b.tenant ? (a.workload < b.workload ? -1 : 1) : a.tenant < b.tenant ? -1 : 1,
  );
}

/** A comparable summary of a grant list (what the NIC reports back has extra fields). */
export function grantsDigest(
  list: readonly {
    tenant: string;
    workload: string;
    address: string;
    address6?: string;
    nicIdentityKey?: string;
  }[],
): string {
  return list
    .map(
      (g) =>
        `${g.tenant}/${g.workload}=${g.address}${g.address6 !== undefined ? `,${g.address6}` : ''}@${g.nicIdentityKey ?? ''}`,
    )
    .sort()
    .join(';');
}
