// The orchestrator for a lab, in this process: an Orchestrator over an in-memory store, the
// lab's hosts registered with their NIC agent and vSwitch daemon (started by LabAgents or a
// test's own launcher),
// namespace prefix `<lab>-<host>-o-` (inside the lab's prefix, so its teardown owns them, and
// apart from every node namespace of the lab, which the reconciler would otherwise take for
// unwanted workload namespaces), and each of the lab's tenants created with its planned pool
// (100.64.T.0/24). Tests and benches spin workloads up and down, push policies and migrate
// through it, so that every one of them drives the one control plane the product has.
//
// Workloads get the lowest free address of their tenant's pool, as from the API. place() with
// an `address` puts a workload at that address instead (the record written to the store as
// the allocator would, then the orchestrator's Lifecycle spins it up): for NIC tests of
// tenants sharing addresses, which the orchestrator's non-overlapping pools never produce.
import { performance } from 'node:perf_hooks';
import type { ResponseRecorder } from '../nic/client.js';
import type { AgentEndpointOf } from '../orchestrator/agents.js';
import type { HostRecord, WorkloadRecord } from '../orchestrator/model.js';
import { Orchestrator } from '../orchestrator/orchestrator.js';
import { SqliteStore } from '../orchestrator/sqlite-store.js';
import { TgError } from '../util/errors.js';
import { logger } from '../util/log.js';
import { nicKey } from './agents.js';
import { hostNics } from './plan.js';
import type { LabState } from './state.js';

export interface WorkloadSpec {
  name: string;
  tenant: string;
  host: string;
  labels?: Record<string, string>;
  /** A fixed address (outside the tenant's pool allocation); default: the pool's lowest free. */
  address?: string;
}

/** A workload the orchestrator spun up: where it is and its namespace. */
export interface PlacedWorkload {
  name: string;
  tenant: string;
  host: string;
  /** The NIC of its host carrying it. */
  nic?: string;
  address: string;
  /** The IPv6 address (dual stack); absent for a workload placed at a fixed address. */
  address6?: string;
  ns: string;
  labels: Record<string, string>;
}

export interface LabControlOptions {
  /**
   * The policy each lab tenant starts with: 'allow-within-tenant' (default: every workload
   * of the tenant may reach every other one) or 'none' (the NICs' default deny).
   */
  defaultPolicy?: 'allow-within-tenant' | 'none';
  /** Sees every answer of the NIC and vSwitch APIs the orchestrator receives. */
  recorder?: ResponseRecorder;
  /** How the orchestrator reaches an agent's socket (over mTLS, say); default plain HTTP. */
  agentEndpoint?: AgentEndpointOf;
}

/** Where a lab's agents listen, per host (LabAgents, or a test's own launcher). */
export interface AgentSockets {
  readonly nics: ReadonlyMap<string, { readonly socket: string }>;
  readonly vswitchds: ReadonlyMap<string, { readonly socket: string }>;
}

/** A policy letting every workload of `tenant` reach every other one of it, any protocol. */
export function allowWithinTenantPolicy(tenant: string): Record<string, unknown> {
  return {
    version: 1,
    tenant,
    description: 'lab: everything within the tenant',
    rules: [
      { id: 'tenant-out', direction: 'egress', workloads: { labels: {} }, peers: [{ labels: {} }] },
      { id: 'tenant-in', direction: 'ingress', workloads: { labels: {} }, peers: [{ labels: {} }] },
    ],
  };
}

/** The lab's planned workloads (name, tenant, host) as specs for place(). */
export function plannedWorkloads(lab: LabState): WorkloadSpec[] {
  return lab.workloads.map((w) => ({ name: w.name, tenant: w.tenant, host: w.host }));
}

function placed(r: WorkloadRecord): PlacedWorkload {
  return {
    name: r.name,
    tenant: r.tenant,
    host: r.host,
    ...(r.nic !== undefined ? { nic: r.nic } : {}),
    address: r.address,
    ...(r.address6 !== undefined ? { address6: r.address6 } : {}),
    ns: r.netns,
    labels: r.labels,
  };
}

export class LabControlPlane {
  private constructor(
    readonly lab: LabState,
    readonly orchestrator: Orchestrator,
  ) {}

  /** Starts the orchestrator, registers every host of the lab and creates its tenants. */
  static async start(
    lab: LabState,
    agents: AgentSockets,
    opts: LabControlOptions = {},
  ): Promise<LabControlPlane> {
    const o = new Orchestrator(SqliteStore.memory(), logger('lab.control'), {
      agentRecorder: opts.recorder,
      agentEndpoint: opts.agentEndpoint,
    });
    const c = new LabControlPlane(lab, o);
    try {
      for (const h of lab.hosts) await c.registerHost(h.name, agents);
      for (const t of lab.tenants) {
        await o.service.createTenant({ name: t.name, pool: t.overlayV4 });
        if ((opts.defaultPolicy ?? 'allow-within-tenant') === 'allow-within-tenant')
          await o.setPolicy(t.name, allowWithinTenantPolicy(t.name));
      }
      return c;
    } catch (err) {
      await o.close().catch(() => undefined);
      throw err;
    }
  }

  /** Registers (again) a host with the sockets of its running agents. */
  async registerHost(host: string, agents: AgentSockets): Promise<HostRecord> {
    const n = agents.nics.get(host);
    const v = agents.vswitchds.get(host);
    if (n === undefined || v === undefined)
      throw new TgError('TG_ERR_NOT_FOUND', `host '${host}' has no running NIC agent and vSwitch daemon`);
    const plan = this.lab.hosts.find((h) => h.name === host);
    const all = plan === undefined ? [] : hostNics(plan);
    const nics = all.map((x) => {
      const a = agents.nics.get(nicKey(host, x.name));
      if (a === undefined)
        throw new TgError('TG_ERR_NOT_FOUND', `host '${host}' has no running agent for NIC '${x.name}'`);
      return { name: x.name, api: a.socket, fabricAddress: x.fabric.nicV4 };
    });
    return this.orchestrator.registerHost({
      name: host,
      nicApi: n.socket,
      vswitchApi: v.socket,
      netnsPrefix: `${this.lab.prefix}-${host}-o-`,
      // A host of a lab built with --nics N > 1 registers all of them (nics.ts).
      ...(nics.length > 1 ? { nics } : {}),
    });
  }

  /** Spins workloads up, in order. */
  async place(specs: readonly WorkloadSpec[]): Promise<PlacedWorkload[]> {
    const out: PlacedWorkload[] = [];
    for (const s of specs) {
      const req = { tenant: s.tenant, name: s.name, host: s.host, labels: s.labels ?? {} };
      if (s.address === undefined) out.push(placed(await this.orchestrator.createWorkload(req)));
      else out.push(placed(await this.placeAt(req, s.address)));
    }
    return out;
  }

  /** Spins a workload down (its address is released). */
  async remove(name: string): Promise<void> {
    await this.orchestrator.deleteWorkload(name);
  }

  setPolicy(tenant: string, doc: unknown): Promise<unknown> {
    return this.orchestrator.setPolicy(tenant, doc);
  }

  /** Runs a reconciliation pass (after an agent restarted, say). */
  reconcile(): ReturnType<Orchestrator['reconcile']> {
    return this.orchestrator.reconcile();
  }

  async close(): Promise<void> {
    await this.orchestrator.close();
  }

  private async placeAt(
    req: { tenant: string; name: string; host: string; labels: Record<string, string> },
    address: string,
  ): Promise<WorkloadRecord> {
    const t0 = performance.now();
    const o = this.orchestrator;
    const host = await o.service.getHost(req.host);
    await o.service.getTenant(req.tenant);
    const w: WorkloadRecord = {
      name: req.name,
      tenant: req.tenant,
      host: host.name,
      address,
      netns: `${host.netnsPrefix}${req.name}`,
      labels: req.labels,
      state: 'creating',
      migratingTo: null,
      createdAt: new Date().toISOString(),
      timings: {},
      lastError: null,
    };
    await o.store.txn((tx) => {
      tx.put(
        'allocation',
        `${w.tenant}/${address}`,
        { tenant: w.tenant, address, workload: w.name },
        'absent',
      );
      tx.put('workload', w.name, w, 'absent');
    });
    try {
      const timings = await o.lifecycle.spinUp(w, host, t0);
      return await o.service.markRunning(w.name, timings);
    } catch (err) {
      await o.service.abandonWorkload(w.name);
      throw err;
    }
  }
}
