// The orchestrator: the domain service over the store, the lifecycle that drives agents, and
// the reconciler, wired together. Every operation that drives agents (spin-up, spin-down,
// migration, policy distribution, a reconciliation pass) runs under one lock, so they never
// interleave; reads go straight to the store. With a Replica (several orchestrators on one
// etcd store), only the leader reconciles and drives agents: the API forwards writes to it,
// and a replica that stops leading calls no agent and writes nothing more (the store refuses
// its writes; the agent directory refuses its calls). On becoming leader it forgets what it
// knew of every NIC and reconciles at once.
import { performance } from 'node:perf_hooks';
import { nameSchema } from '../net/name.js';
import { NicClient, type ResponseRecorder } from '../nic/client.js';
import { TgError } from '../util/errors.js';
import { parseBody } from '../util/http-json.js';
import type { Logger } from '../util/log.js';
import { VSwitchClient } from '../vswitch/client.js';
import { AgentDirectory, type AgentEndpointOf } from './agents.js';
import { Lifecycle, putPolicy } from './lifecycle.js';
import { type HostRecord, type PolicyRecord, registerHostSchema, type WorkloadRecord } from './model.js';
import { type ReconcileReport, Reconciler } from './reconcile.js';
import type { Replica } from './replica.js';
import { OrchestratorService } from './service.js';
import type { Store } from './store.js';

export const DEFAULT_RECONCILE_INTERVAL_MS = 1000;

/** One lock: a promise chain run in arrival order. */
class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

export interface FlowQuery {
  tenant?: string;
  since?: string;
  limit?: number;
}

export class Orchestrator {
  readonly service: OrchestratorService;
  readonly lifecycle: Lifecycle;
  readonly reconciler: Reconciler;
  private readonly agents: AgentDirectory;
  private readonly lock = new Mutex();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  lastReconcile: ReconcileReport | null = null;
  reconcilePasses = 0;
  readonly replica: Replica | undefined;

  constructor(
    readonly store: Store,
    private readonly log: Logger,
    opts: { agentEndpoint?: AgentEndpointOf; agentRecorder?: ResponseRecorder; replica?: Replica } = {},
  ) {
    this.replica = opts.replica;
    this.agents = new AgentDirectory(opts.agentEndpoint, opts.agentRecorder, () => this.mustLead());
    this.service = new OrchestratorService(store);
    this.lifecycle = new Lifecycle(this.service, this.agents, log);
    this.reconciler = new Reconciler(this.service, this.lifecycle, this.agents, log);
  }

  isLeader(): boolean {
    return this.replica?.isLeader() ?? true;
  }

  /** Throws TG_ERR_NOT_LEADER unless this replica leads. */
  mustLead(): void {
    if (!this.isLeader())
      throw new TgError('TG_ERR_NOT_LEADER', 'this orchestrator replica does not lead; it drives no agent');
  }

  /** Reconciles every `intervalMs` (0: only on demand), while this replica leads. */
  start(intervalMs = DEFAULT_RECONCILE_INTERVAL_MS): void {
    let led = false;
    this.replica?.leadership.onChange(() => {
      const leads = this.isLeader();
      if (leads && !led && !this.closed) {
        // What this replica knew of the NICs may be stale: forget it and look again now.
        this.lock
          .run(async () => {
            for (const h of await this.service.listHosts()) this.lifecycle.resetView(h.name, null);
          })
          .then(() => this.reconcile())
          .catch((err) => this.log.error({ err }, 'reconciliation on taking the lead failed'));
      }
      led = leads;
    });
    if (intervalMs <= 0) return;
    const tick = (): void => {
      if (this.closed) return;
      if (!this.isLeader()) {
        this.timer = setTimeout(tick, intervalMs);
        return;
      }
      this.reconcile()
        .catch((err) => this.log.error({ err }, 'reconciliation pass failed'))
        .finally(() => {
          if (!this.closed) this.timer = setTimeout(tick, intervalMs);
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    await this.lock.run(async () => undefined);
    await this.replica?.leadership.resign().catch(() => undefined);
    await this.store.close();
  }

  reconcile(): Promise<ReconcileReport> {
    return this.lock.run(async () => {
      this.mustLead();
      const r = await this.reconciler.pass();
      this.lastReconcile = r;
      this.reconcilePasses++;
      return r;
    });
  }

  // --- Hosts ------------------------------------------------------------------------------

  /** Registers a host after checking that its NIC agent and vSwitch daemon answer. */
  async registerHost(input: unknown): Promise<HostRecord> {
    const req = parseBody(registerHostSchema, input);
    for (const [what, agent, socket] of [
      ['NIC agent', 'nic', req.nicApi],
      ['vSwitch daemon', 'vswitch', req.vswitchApi],
    ] as const) {
      const endpoint = this.agents.endpoint(req.name, agent, socket);
      const client =
        agent === 'nic'
          ? new NicClient(endpoint, undefined, 5000)
          : new VSwitchClient(endpoint, undefined, 5000);
      const problem = await client.health().then(
        () => null,
        (err: Error) => err.message,
      );
      if (problem !== null)
        throw new TgError(
          'TG_ERR_INVALID_ARGUMENT',
          `host '${req.name}': the ${what} at ${socket} does not answer (${problem})`,
        );
    }
    return this.lock.run(async () => {
      const h = await this.service.registerHost(req);
      this.lifecycle.resetView(h.name, null);
      return h;
    });
  }

  async deregisterHost(host: unknown): Promise<{ name: string }> {
    return this.lock.run(async () => {
      const r = await this.service.deregisterHost(host);
      this.lifecycle.resetView(r.name, null);
      this.agents.forget(r.name);
      return r;
    });
  }

  // --- Workloads --------------------------------------------------------------------------

  /** Creates a workload and spins it up; on failure nothing of it remains. */
  async createWorkload(input: unknown): Promise<WorkloadRecord> {
    const t0 = performance.now();
    return this.lock.run(async () => {
      const { workload, host } = await this.service.reserveWorkload(input);
      // From the API call: the wait for the lock and the reservation.
      const reserve = Math.round((performance.now() - t0) * 100) / 100;
      let timings: Record<string, number>;
      try {
        timings = await this.lifecycle.spinUp(workload, host, t0);
      } catch (err) {
        await this.service.abandonWorkload(workload.name);
        throw err;
      }
      return this.service.markRunning(workload.name, { reserve, ...timings });
    });
  }

  /** Spins a workload down and forgets it. A failed step leaves it 'deleting' for the reconciler. */
  async deleteWorkload(name: unknown): Promise<{ name: string; timings: Record<string, number> }> {
    const t0 = performance.now();
    return this.lock.run(async () => {
      const { workload, host } = await this.service.beginDelete(name);
      let timings: Record<string, number>;
      try {
        timings = await this.lifecycle.spinDown(workload, host);
      } catch (err) {
        await this.service.recordError(workload.name, (err as Error).message);
        throw err;
      }
      await this.service.finishDelete(workload.name);
      timings.total = Math.round((performance.now() - t0) * 100) / 100;
      return { name: workload.name, timings };
    });
  }

  async migrateWorkload(name: unknown, to: unknown): Promise<WorkloadRecord> {
    const t0 = performance.now();
    return this.lock.run(async () => {
      const m = await this.service.beginMigrate(name, to);
      let result: Awaited<ReturnType<Lifecycle['migrate']>>;
      try {
        result = await this.lifecycle.migrate(m.workload, m.from, m.to, m.netns, t0);
      } catch (err) {
        const now = await this.service.getWorkload(m.workload.name);
        if (now.host === m.from.name)
          await this.service.abortMigrate(m.workload.name, (err as Error).message);
        else await this.service.markRunning(m.workload.name, { ...now.timings });
        throw err;
      }
      return this.service.markRunning(m.workload.name, result.timings);
    });
  }

  // --- Policy -----------------------------------------------------------------------------

  /**
   * Sets a tenant's policy: pushed to every NIC holding the tenant first (each checks it in
   * full); stored only when all took it. When one refuses, the ones that took it get the
   * previous document back and nothing is stored.
   */
  async setPolicy(tenant: unknown, document: unknown): Promise<PolicyRecord & { pushedTo: string[] }> {
    const n = parseBody(nameSchema, tenant, 'tenant');
    return this.lock.run(async () => {
      await this.service.getTenant(n);
      const doc = this.service.checkPolicy(n, document);
      const old = await this.service.getPolicy(n).catch(() => null);
      // Grants before the document: a NIC refuses a policy naming a workload it cannot route.
      await this.lifecycle.publishGrants({ override: { tenant: n, document: doc }, strict: [] });
      const pushed: HostRecord[] = [];
      for (const h of await this.service.listHosts()) {
        if (!this.lifecycle.holdsTenant(h.name, n) || !(await this.lifecycle.policyApi(h))) continue;
        try {
          await putPolicy(this.agents.of(h).nic, n, doc);
          pushed.push(h);
        } catch (err) {
          for (const p of pushed) {
            this.lifecycle.view(p.name).policy.delete(n);
            if (old !== null) await putPolicy(this.agents.of(p).nic, n, old.document).catch(() => undefined);
          }
          await this.lifecycle.publishGrants({ strict: [] }).catch(() => undefined);
          if (err instanceof TgError)
            throw new TgError(
              err.code,
              `host '${h.name}' refused the policy of tenant '${n}': ${err.message}`,
            );
          throw err;
        }
      }
      const rec = await this.service.setPolicy(n, doc);
      for (const p of pushed) this.lifecycle.view(p.name).policy.set(n, rec.updatedAt);
      return { ...rec, pushedTo: pushed.map((p) => p.name) };
    });
  }

  // --- Observation ------------------------------------------------------------------------

  /** Flow records from every NIC serving the policy API, each tagged with its host, oldest first. */
  async flows(q: FlowQuery): Promise<{ flows: Record<string, unknown>[]; hosts: Record<string, string> }> {
    const query = {
      tenant: q.tenant === undefined ? undefined : parseBody(nameSchema, q.tenant, 'tenant'),
      since: q.since?.slice(0, 64),
      limit: q.limit,
    };
    const out: Record<string, unknown>[] = [];
    const hosts: Record<string, string> = {};
    for (const h of await this.service.listHosts()) {
      try {
        if (!(await this.lifecycle.policyApi(h))) {
          hosts[h.name] = 'no flow API';
          continue;
        }
        const flows = await this.agents.of(h).nic.flows(query);
        for (const f of flows) out.push({ host: h.name, ...f });
        hosts[h.name] = `${flows.length} flows`;
      } catch (err) {
        hosts[h.name] = (err as Error).message;
      }
    }
    const start = (f: Record<string, unknown>): string => String(f.start ?? f.startedAt ?? '');
    out.sort((a, b) => (start(a) < start(b) ? -1 : start(a) > start(b) ? 1 : 0));
    return { flows: q.limit !== undefined ? out.slice(-q.limit) : out, hosts };
  }

  /** A host's NIC key inventory (metadata only). */
  async keys(host: unknown): Promise<{ host: string; keys: unknown[] }> {
    const h = await this.service.getHost(host);
    return { host: h.name, keys: await this.agents.of(h).nic.keys() };
  }
}
