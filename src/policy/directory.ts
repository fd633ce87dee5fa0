// The workload identities policy is written against: (tenant, workload name, labels), each
// with a numeric id the conntrack table keys on. The NIC fills it from what the orchestrator
// tells it, for local and remote workloads alike; a workload that migrates is registered
// with the same name and labels on its new NIC and so gets exactly the same policy there.
//
// Every change that can alter a decision (labels, a workload added or removed) bumps
// `generation`; the engine re-evaluates existing connections on their next packet when the
// sum of this and the policy store's generation has moved.

import { NAME_RE } from '../net/name.js';
import { TgError } from '../util/errors.js';
import { labelsSchema } from './model.js';

/**
 * Removed workloads remembered for flow records (a connection outlives its workload until its
 * conntrack entry ends). A record of a connection that ends after this many later removals
 * names its workload by id (`#17`) instead. Small on purpose: it fills with churn, and a NIC's
 * memory must stay flat under churn.
 */
export const MAX_RETIRED = 1024;

export interface WorkloadInfo {
  /** Never reused within one directory, so a stale conntrack entry can never match a newcomer. */
  readonly id: number;
  readonly tenant: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
}

export interface TenantWorkloads {
  readonly name: string;
  readonly workloads: Map<string, WorkloadInfo>;
}

export class WorkloadDirectory {
  private readonly tenants = new Map<string, TenantWorkloads>();
  private readonly ids = new Map<number, WorkloadInfo>();
  /** Removed workloads, so that flow records of their last connections still name them. */
  private readonly retired = new Map<number, WorkloadInfo>();
  private nextId = 1;
  /** Bumped by every change. */
  generation = 1;

  /** Registers a workload or replaces its labels. Returns its (stable) entry. */
  upsert(tenant: string, name: string, labels: Record<string, string> = {}): WorkloadInfo {
    if (!NAME_RE.test(tenant)) throw new TgError('TG_ERR_INVALID_ARGUMENT', `bad tenant name '${tenant}'`);
    if (!NAME_RE.test(name)) throw new TgError('TG_ERR_INVALID_ARGUMENT', `bad workload name '${name}'`);
    const parsed = labelsSchema.safeParse(labels);
    if (!parsed.success)
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        `bad labels for '${tenant}/${name}': ${parsed.error.message}`,
      );
    let t = this.tenants.get(tenant);
    if (t === undefined) {
      t = { name: tenant, workloads: new Map() };
      this.tenants.set(tenant, t);
    }
    const old = t.workloads.get(name);
    const frozen = Object.freeze({ ...parsed.data });
    if (old !== undefined && sameLabels(old.labels, frozen)) return old;
    const info: WorkloadInfo = Object.freeze({ id: old?.id ?? this.nextId++, tenant, name, labels: frozen });
    t.workloads.set(name, info);
    this.ids.set(info.id, info);
    this.changed();
    return info;
  }

  remove(tenant: string, name: string): boolean {
    const t = this.tenants.get(tenant);
    const w = t?.workloads.get(name);
    if (t === undefined || w === undefined) return false;
    t.workloads.delete(name);
    this.ids.delete(w.id);
    if (this.retired.size >= MAX_RETIRED) this.retired.delete(this.retired.keys().next().value as number);
    this.retired.set(w.id, w);
    if (t.workloads.size === 0) this.tenants.delete(tenant);
    this.changed();
    return true;
  }

  get(tenant: string, name: string): WorkloadInfo | undefined {
    return this.tenants.get(tenant)?.workloads.get(name);
  }

  /** The tenant's table (hot path: one Map lookup for the tenant, one for the name). */
  tenant(tenant: string): TenantWorkloads | undefined {
    return this.tenants.get(tenant);
  }

  /** A registered workload by id. */
  byId(id: number): WorkloadInfo | undefined {
    return this.ids.get(id);
  }

  /** A registered or recently removed workload by id (for flow records). */
  describe(id: number): WorkloadInfo | undefined {
    return this.ids.get(id) ?? this.retired.get(id);
  }

  hasTenant(tenant: string): boolean {
    return this.tenants.has(tenant);
  }

  workloadsOf(tenant: string): WorkloadInfo[] {
    return [...(this.tenants.get(tenant)?.workloads.values() ?? [])];
  }

  private changed(): void {
    this.generation++;
  }
}

function sameLabels(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (b[k] !== a[k]) return false;
  return true;
}
