// The orchestrator: the domain service over the store, the lifecycle that drives agents, and
// the reconciler, wired together. Every operation that drives agents (spin-up, spin-down,
// migration, policy distribution, a reconciliation pass) runs on the queue of each host it
// changes (host-queues.ts): operations on one host never interleave, and a hung or slow host
// (every agent call has a deadline, agents.ts) delays only its own work. Each host is
// reconciled on its own timer. Reads go straight to the store.
// With a Replica (several orchestrators on one etcd store), only the leader reconciles and
// drives agents: the API forwards writes to it, and a replica that stops leading calls no
// agent and writes nothing more (the store refuses its writes; the agent directory refuses
// its calls). On becoming leader it forgets what it knew of every NIC and reconciles at once.
import { performance } from 'node:perf_hooks';
import { nameSchema } from '../net/name.js';
import { NicClient, type ResponseRecorder } from '../nic/client.js';
import { WorkloadDirectory } from '../policy/directory.js';
import type { PolicyIssue } from '../policy/model.js';
import { PolicyStore } from '../policy/store.js';
import { TgError } from '../util/errors.js';
import { parseBody } from '../util/http-json.js';
import type { Logger } from '../util/log.js';
import { VSwitchClient } from '../vswitch/client.js';
import type { AgentStatus } from './agent-health.js';
import { AgentDirectory, type AgentEndpointOf } from './agents.js';
import { HostQueues } from './host-queues.js';
import { Lifecycle, putPolicy } from './lifecycle.js';
import {
  createWorkloadSchema,
  type HostRecord,
  type PolicyRecord,
  registerHostSchema,
  type ServiceRecord,
  sameCreateSpec,
  type WorkloadRecord,
} from './model.js';
import { hostNics, type NicSite, nicOf, placeOnNic, siteOf, sitesOf, workloadSite } from './nics.js';
import { type InstallationStatus, installationStatus, type Topology, topology } from './observe.js';
import { mergeReports, type ReconcileReport, Reconciler } from './reconcile.js';
import type { Replica } from './replica.js';
import { OrchestratorService } from './service.js';
import type { Store } from './store.js';

export const DEFAULT_RECONCILE_INTERVAL_MS = 1000;
/** How soon a host whose agent did not answer in its last pass is tried again. */
export const UNREACHABLE_RETRY_MS = 100;

export interface FlowQuery {
  tenant?: string;
  since?: string;
  limit?: number;
}

/** What a drain did: each workload moved (to which NIC, in how long), failures, the whole time. */
export interface DrainNicResult {
  host: string;
  nic: string;
  moved: { workload: string; to: string; ms: number }[];
  errors: string[];
  ms: number;
}

/** A policy document checked and its built-in tests run against the workloads the store knows. */
export interface PolicyTestReport {
  tenant: string;
  ok: boolean;
  /** Test cases in the document. */
  tests: number;
  /** Problems, each with its path; 'test-failed' and 'test-invalid' are the tests' own. */
  errors: PolicyIssue[];
  warnings: PolicyIssue[];
}

export class Orchestrator {
  readonly service: OrchestratorService;
  readonly lifecycle: Lifecycle;
  readonly reconciler: Reconciler;
  private readonly agents: AgentDirectory;
  private readonly queues = new HostQueues();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Hosts whose timed reconciliation pass is queued or running. */
  private readonly reconciling = new Set<string>();
  /** Hosts whose NICs are being probed between passes (probeNics). */
  private readonly probing = new Set<string>();
  /** The last pass of each host. */
  private readonly lastByHost = new Map<string, ReconcileReport>();
  /** The last passes of every host, merged (revision and ms: the newest and the longest). */
  lastReconcile: ReconcileReport | null = null;
  /** Host passes finished. */
  reconcilePasses = 0;
  /** Passes finished per host. */
  private readonly passesByHost = new Map<string, number>();
  /** performance.now() when each host's last timed pass ended. */
  private readonly lastPassAt = new Map<string, number>();
  readonly replica: Replica | undefined;
  readonly startedAt = Date.now();
  private readonly certificate: () => string | null;

  constructor(
    readonly store: Store,
    private readonly log: Logger,
    opts: {
      agentEndpoint?: AgentEndpointOf;
      agentRecorder?: ResponseRecorder;
      replica?: Replica;
      /** The orchestrator's own certificate (PEM) when it serves over mTLS, for its status. */
      certificate?: () => string | null;
    } = {},
  ) {
    this.replica = opts.replica;
    this.certificate = opts.certificate ?? (() => null);
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

  /**
   * Reconciles each host every `intervalMs` (0: only on demand): a host whose pass is still
   * queued or running (its agents hang, say) is skipped, the others go on. A host whose last
   * pass found an agent not answering is tried again every UNREACHABLE_RETRY_MS, so that a
   * restarted agent is caught up as soon as it answers.
   */
  start(intervalMs = DEFAULT_RECONCILE_INTERVAL_MS): void {
    let led = false;
    this.replica?.leadership.onChange(() => {
      const leads = this.isLeader();
      if (leads && !led && !this.closed) {
        // What this replica knew of the NICs may be stale: forget it and look again now.
        this.service
          .listHosts()
          .then((hosts) =>
            Promise.all(
              hosts.map((h) =>
                this.queues.run([h.name], async () => {
                  for (const s of sitesOf(h)) this.lifecycle.resetView(s.name, null);
                }),
              ),
            ),
          )
          .then(() => this.reconcile())
          .catch((err) => this.log.error({ err }, 'reconciliation on taking the lead failed'));
      }
      led = leads;
    });
    if (intervalMs <= 0) return;
    const step = Math.min(intervalMs, UNREACHABLE_RETRY_MS);
    const pass = (h: HostRecord): void => {
      if (this.reconciling.has(h.name) || this.closed) return;
      this.reconciling.add(h.name);
      this.queues
        .run([h.name], () => this.hostPass(h))
        .catch((err) => this.log.error({ err, host: h.name }, 'reconciliation pass failed'))
        .finally(() => {
          this.reconciling.delete(h.name);
          this.lastPassAt.set(h.name, performance.now());
        });
    };
    const tick = (): void => {
      if (this.closed) return;
      if (!this.isLeader()) {
        this.timer = setTimeout(tick, intervalMs);
        return;
      }
      this.service
        .listHosts()
        .then((hosts) => {
          const now = performance.now();
          for (const h of hosts) {
            if (this.reconciling.has(h.name)) continue;
            const last = this.lastByHost.get(h.name);
            const since = now - (this.lastPassAt.get(h.name) ?? Number.NEGATIVE_INFINITY);
            // A NIC already failed over is tried at the usual interval (its return is not urgent).
            const failed = new Set(
              sitesOf(h)
                .filter((x) => x.nicState === 'failed')
                .map((x) => x.name),
            );
            const down = last !== undefined && Object.keys(last.unreachable).some((k) => !failed.has(k));
            if (since < intervalMs && !(down && since >= step)) {
              this.probeNics(h, () => pass(h));
              continue;
            }
            pass(h);
          }
        })
        .catch((err) => this.log.error({ err }, 'reconciliation: hosts not listed'))
        .finally(() => {
          if (!this.closed) this.timer = setTimeout(tick, step);
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  /**
   * Between passes, the NICs of a host with several are asked for their health every tick
   * (UNREACHABLE_RETRY_MS): one that does not answer (refused, gone, or stalled past the
   * agent health's bound) has its host passed at once, so that its workloads move to another
   * NIC within a tick and a pass rather than at the next timed pass.
   */
  private probeNics(h: HostRecord, passNow: () => void): void {
    if (hostNics(h).length < 2 || this.probing.has(h.name)) return;
    const sites = sitesOf(h).filter((s) => s.nicState === 'ok');
    this.probing.add(h.name);
    Promise.all(
      sites.map((s) =>
        this.agents
          .of(s)
          .nic.health()
          .then(
            () => this.agents.nicReachable(s.name),
            () => false,
          ),
      ),
    )
      .then((ok) => {
        if (ok.some((x) => !x)) passNow();
      })
      .catch(() => undefined)
      .finally(() => this.probing.delete(h.name));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    await this.queues.drain();
    await this.replica?.leadership.resign().catch(() => undefined);
    await this.store.close();
  }

  /**
   * A pass over every host now, each on its own queue, side by side. When one changed
   * something, a second round follows, so that a change on one host (a NIC that restarted
   * with new keys) reaches the others' NICs before this returns.
   */
  async reconcile(): Promise<ReconcileReport> {
    this.mustLead();
    const round = async (): Promise<ReconcileReport> => {
      const hosts = await this.service.listHosts();
      const reports = await Promise.all(hosts.map((h) => this.queues.run([h.name], () => this.hostPass(h))));
      return mergeReports(reports, await this.store.revision());
    };
    const first = await round();
    if (first.actions.length === 0 && first.nicRestarts.length === 0) return first;
    const second = await round();
    return {
      ...second,
      ms: first.ms + second.ms,
      actions: [...first.actions, ...second.actions],
      nicRestarts: [...first.nicRestarts, ...second.nicRestarts],
    };
  }

  /** Agents that are slow or did not answer, and the work queued per host. */
  agentHealth(): {
    agents: AgentStatus[];
    problems: string[];
    queued: Record<string, number>;
    hostPasses: Record<string, number>;
  } {
    return {
      agents: this.agents.health.list(),
      problems: this.agents.health.problems(),
      queued: this.queues.depths(),
      hostPasses: Object.fromEntries(this.passesByHost),
    };
  }

  private async hostPass(h: HostRecord): Promise<ReconcileReport> {
    const r = await this.reconciler.passHost(h);
    await this.nicFailover(h.name, r).catch((err) => {
      r.errors.push(`${h.name}/nic-failover: ${(err as Error).message}`);
    });
    this.lastByHost.set(h.name, r);
    const names = new Set((await this.service.listHosts()).map((x) => x.name));
    for (const k of this.lastByHost.keys()) if (!names.has(k)) this.lastByHost.delete(k);
    this.lastReconcile = mergeReports([...this.lastByHost.values()], r.revision);
    this.reconcilePasses++;
    this.passesByHost.set(h.name, (this.passesByHost.get(h.name) ?? 0) + 1);
    return r;
  }

  // --- Hosts ------------------------------------------------------------------------------

  /** Registers a host after checking that its NIC agent and vSwitch daemon answer. */
  async registerHost(input: unknown): Promise<HostRecord> {
    const req = parseBody(registerHostSchema, input);
    const nicSockets = (req.nics ?? [{ name: 'nic1', api: req.nicApi }]).map(
      (n) => [`NIC agent '${n.name}'`, 'nic', n.api] as const,
    );
    for (const [what, agent, socket] of [
      ...nicSockets,
      ['vSwitch daemon', 'vswitch', req.vswitchApi] as const,
    ]) {
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
    return this.queues.run([req.name], async () => {
      const h = await this.service.registerHost(req);
      for (const site of sitesOf(h)) this.lifecycle.resetView(site.name, null);
      return h;
    });
  }

  async deregisterHost(host: unknown): Promise<{ name: string }> {
    const n = parseBody(nameSchema, host, 'host');
    return this.queues.run([n], async () => {
      const h = await this.service.getHost(n);
      const r = await this.service.deregisterHost(n);
      for (const site of sitesOf(h)) {
        this.lifecycle.resetView(site.name, null);
        this.agents.forget(site.name);
      }
      return r;
    });
  }

  // --- NICs of a host ---------------------------------------------------------------------

  /**
   * After a pass over a host (its queue held): a NIC in state 'ok' whose agent did not answer
   * in the pass (refused or gone: at once; hung: after the call deadline) while another NIC of
   * the host did is marked 'failed'; a 'failed' one that answered again (the pass removed
   * what it held that moved away) is 'ok' again. Then every running workload on a NIC that is
   * not 'ok' moves to the host's placement choice among the others (moveNic).
   */
  private async nicFailover(host: string, r: ReconcileReport): Promise<void> {
    let h = await this.service.getHost(host).catch(() => null);
    if (h === null || hostNics(h).length < 2) return;
    const sites = sitesOf(h);
    // A pass that could not read the vSwitch daemon tried no NIC.
    if (`${host}/vswitch` in r.unreachable) return;
    const answered = (s: NicSite): boolean => !(s.name in r.unreachable);
    for (const s of sites) {
      if (
        s.nicState === 'ok' &&
        !answered(s) &&
        sites.some((o) => o !== s && o.nicState === 'ok' && answered(o))
      ) {
        this.log.warn({ host, nic: s.nic, cause: r.unreachable[s.name] }, 'NIC failed: moving its workloads');
        h = await this.service.setNicState(host, s.nic, 'failed');
      } else if (s.nicState === 'failed' && answered(s)) {
        this.log.info({ host, nic: s.nic }, 'failed NIC answers again: it takes workloads again');
        h = await this.service.setNicState(host, s.nic, 'ok');
      }
    }
    for (const n of hostNics(h)) if (n.state !== 'ok') await this.evacuate(h, n.name, r.errors);
  }

  /**
   * Moves every running workload off one NIC of a host (its queue held), each to the host's
   * placement choice among its other NICs, with new keys (moveNic). Failures are collected in
   * `errors` (the next pass tries again).
   */
  private async evacuate(
    h: HostRecord,
    nic: string,
    errors: string[],
  ): Promise<{ workload: string; to: string; ms: number }[]> {
    const moved: { workload: string; to: string; ms: number }[] = [];
    const on = (await this.service.listWorkloads({ host: h.name })).filter(
      (w) => w.host === h.name && w.state === 'running' && nicOf(w, h) === nic,
    );
    for (const w of on) {
      const t0 = performance.now();
      const to = placeOnNic(h, await this.service.listWorkloads({ host: h.name }), nic);
      if (to === null) {
        errors.push(`${h.name}/${w.name}: no other NIC of the host takes workloads`);
        break;
      }
      try {
        await this.moveNic(w, h, to, t0);
        moved.push({ workload: w.name, to, ms: Math.round(performance.now() - t0) });
      } catch (err) {
        errors.push(`${h.name}/${w.name}: ${(err as Error).message}`);
        this.log.warn({ host: h.name, workload: w.name, err: (err as Error).message }, 'NIC move failed');
      }
    }
    return moved;
  }

  /**
   * Moves a running workload to another NIC of its host (its queue held) through the
   * migration steps (lifecycle.ts migrate): registered on the new NIC with new keys, its
   * vSwitch leg re-pointed, peers told, the old NIC's registration removed when it answers.
   */
  private async moveNic(w: WorkloadRecord, h: HostRecord, to: string, t0: number): Promise<WorkloadRecord> {
    const dest = hostNics(h).find((n) => n.name === to);
    if (dest === undefined) throw new TgError('TG_ERR_NOT_FOUND', `host '${h.name}' has no NIC '${to}'`);
    const r = await this.lifecycle.migrate(w, workloadSite(w, h), siteOf(h, dest), w.netns, t0);
    return this.service.markRunning(w.name, r.timings);
  }

  /**
   * Drains a NIC: it takes no new workload and every workload on it moves to another NIC of
   * its host with new keys. Refused when no other NIC of the host takes workloads.
   */
  async drainNic(host: unknown, nic: unknown): Promise<DrainNicResult> {
    const t0 = performance.now();
    const hn = parseBody(nameSchema, host, 'host');
    const nn = parseBody(nameSchema, nic, 'nic');
    return this.queues.run([hn], async () => {
      const h = await this.service.getHost(hn);
      if (!hostNics(h).some((n) => n.name === nn))
        throw new TgError('TG_ERR_NOT_FOUND', `host '${hn}' has no NIC '${nn}'`);
      if (!hostNics(h).some((n) => n.name !== nn && n.state === 'ok'))
        throw new TgError(
          'TG_ERR_CONFLICT',
          `host '${hn}' has no other NIC taking workloads; '${nn}' cannot be drained`,
        );
      const drained = await this.service.setNicState(hn, nn, 'draining');
      const errors: string[] = [];
      const moved = await this.evacuate(drained, nn, errors);
      return { host: hn, nic: nn, moved, errors, ms: Math.round(performance.now() - t0) };
    });
  }

  /** Makes a drained (or failed) NIC take workloads again; nothing moves back by itself. */
  async undrainNic(host: unknown, nic: unknown): Promise<HostRecord> {
    const hn = parseBody(nameSchema, host, 'host');
    const nn = parseBody(nameSchema, nic, 'nic');
    return this.queues.run([hn], () => this.service.setNicState(hn, nn, 'ok'));
  }

  // --- Workloads --------------------------------------------------------------------------

  /** Creates a workload and spins it up; on failure nothing of it remains. */
  async createWorkload(input: unknown): Promise<WorkloadRecord> {
    return (await this.ensureWorkload(input)).workload;
  }

  /**
   * Creates a workload and spins it up (`created`), or, when a workload of that name with the
   * same spec exists (a retried create whose answer was lost), finishes its spin-up if it is
   * still 'creating' and answers it (`created` false). A different spec is a conflict.
   */
  async ensureWorkload(input: unknown): Promise<{ workload: WorkloadRecord; created: boolean }> {
    const t0 = performance.now();
    const req = parseBody(createWorkloadSchema, input);
    return this.queues.run([req.host], async () => {
      let reserved: { workload: WorkloadRecord; host: HostRecord };
      try {
        reserved = await this.service.reserveWorkload(req);
      } catch (err) {
        if (!(err instanceof TgError) || err.code !== 'TG_ERR_CONFLICT') throw err;
        const there = await this.service.getWorkload(req.name).catch(() => null);
        if (there === null || !sameCreateSpec(req, there)) throw err;
        if (there.state === 'deleting')
          throw new TgError('TG_ERR_CONFLICT', `workload '${req.name}' is being deleted`);
        if (there.state !== 'creating') return { workload: there, created: false };
        reserved = { workload: there, host: await this.service.getHost(there.host) };
        return { workload: await this.spinUpReserved(reserved, t0), created: false };
      }
      return { workload: await this.spinUpReserved(reserved, t0), created: true };
    });
  }

  private async spinUpReserved(
    r: { workload: WorkloadRecord; host: HostRecord },
    t0: number,
  ): Promise<WorkloadRecord> {
    // From the API call: the wait for the host's queue and the reservation.
    const reserve = Math.round((performance.now() - t0) * 100) / 100;
    let timings: Record<string, number>;
    try {
      timings = await this.lifecycle.spinUp(r.workload, workloadSite(r.workload, r.host), t0);
    } catch (err) {
      await this.service.abandonWorkload(r.workload.name);
      throw err;
    }
    return this.service.markRunning(r.workload.name, { reserve, ...timings });
  }

  /**
   * Runs `fn` on the queues of the hosts a workload is on (and `also`), checking once they
   * are held that it has not moved meanwhile (then it tries again with the new host).
   */
  private async onWorkloadHosts<T>(name: string, also: string[], fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const w = await this.service.getWorkload(name);
      const hosts = [w.host, ...(w.migratingTo !== null ? [w.migratingTo] : []), ...also];
      const moved = Symbol('moved');
      const r = await this.queues.run(hosts, async () => {
        const now = await this.service.getWorkload(name);
        if (now.host !== w.host || now.migratingTo !== w.migratingTo) return moved;
        return fn();
      });
      if (r !== moved) return r as T;
      if (attempt >= 3) throw new TgError('TG_ERR_CONFLICT', `workload '${name}' keeps moving; try again`);
    }
  }

  /** Spins a workload down and forgets it. A failed step leaves it 'deleting' for the reconciler. */
  async deleteWorkload(name: unknown): Promise<{ name: string; timings: Record<string, number> }> {
    const t0 = performance.now();
    const n = parseBody(nameSchema, name, 'workload');
    return this.onWorkloadHosts(n, [], async () => {
      const { workload, host } = await this.service.beginDelete(n);
      let timings: Record<string, number>;
      try {
        timings = await this.lifecycle.spinDown(workload, workloadSite(workload, host));
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
    const n = parseBody(nameSchema, name, 'workload');
    const dest = parseBody(nameSchema, to, 'to');
    return this.onWorkloadHosts(n, [dest], async () => {
      const m = await this.service.beginMigrate(n, dest);
      let result: Awaited<ReturnType<Lifecycle['migrate']>>;
      try {
        const toNic = hostNics(m.to).find((x) => x.name === m.nic)!;
        result = await this.lifecycle.migrate(
          m.workload,
          workloadSite(m.workload, m.from),
          siteOf(m.to, toNic),
          m.netns,
          t0,
        );
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

  // --- Services ---------------------------------------------------------------------------

  /** Records a service and puts the tenant's network on every NIC holding the tenant. */
  async createService(input: unknown): Promise<ServiceRecord & { pushedTo: string[] }> {
    const hosts = (await this.service.listHosts()).map((h) => h.name);
    return this.queues.run(hosts, async () => {
      const rec = await this.service.createService(input);
      const pushedTo = await this.lifecycle.publishNetwork(rec.tenant);
      return { ...rec, pushedTo };
    });
  }

  async deleteService(tenant: unknown, service: unknown): Promise<ServiceRecord & { pushedTo: string[] }> {
    const hosts = (await this.service.listHosts()).map((h) => h.name);
    return this.queues.run(hosts, async () => {
      const rec = await this.service.deleteService(tenant, service);
      const pushedTo = await this.lifecycle.publishNetwork(rec.tenant);
      return { ...rec, pushedTo };
    });
  }

  /** A service with what each NIC holding its tenant has for it (endpoints, pinned connections). */
  async showService(
    tenant: unknown,
    service: unknown,
  ): Promise<ServiceRecord & { nics: Record<string, unknown> }> {
    const rec = await this.service.getService(tenant, service);
    const nics: Record<string, unknown> = {};
    for (const h of await this.lifecycle.sites()) {
      if (!this.lifecycle.holdsTenant(h.name, rec.tenant)) continue;
      try {
        const net = await this.agents.of(h).nic.getTenantNetwork(rec.tenant);
        nics[h.name] = net.services.find((s) => s.name === rec.name) ?? null;
      } catch (err) {
        nics[h.name] = (err as Error).message;
      }
    }
    return { ...rec, nics };
  }

  // --- Policy -----------------------------------------------------------------------------

  /**
   * Sets a tenant's policy: pushed to every NIC holding the tenant first (each checks it in
   * full); stored only when all took it. When one refuses, the ones that took it get the
   * previous document back and nothing is stored.
   */
  async setPolicy(tenant: unknown, document: unknown): Promise<PolicyRecord & { pushedTo: string[] }> {
    const n = parseBody(nameSchema, tenant, 'tenant');
    const hosts = (await this.service.listHosts()).map((h) => h.name);
    return this.queues.run(hosts, async () => {
      await this.service.getTenant(n);
      const doc = this.service.checkPolicy(n, await this.service.expandServicePeers(n, document));
      // The built-in tests run here too, so a failing test blocks the save even for a tenant
      // that no NIC holds yet (the NICs run them again against what they know).
      const failed = (await this.testPolicy(n, doc)).errors.filter((e) => e.code === 'test-failed');
      if (failed.length > 0)
        throw new TgError(
          'TG_ERR_POLICY_REJECTED',
          `policy of tenant '${n}' refused: ${failed
            .slice(0, 8)
            .map((e) => `${e.path}: ${e.message}`)
            .join('; ')}`,
        );
      const old = await this.service.getPolicy(n).catch(() => null);
      // Grants before the document: a NIC refuses a policy naming a workload it cannot route.
      await this.lifecycle.publishGrants({ override: { tenant: n, document: doc }, strict: [] });
      const pushed: HostRecord[] = [];
      for (const h of await this.lifecycle.sites()) {
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
    for (const h of await this.lifecycle.sites()) {
      try {
        if (!(await this.lifecycle.policyApi(h))) {
          hosts[h.name] = 'no flow API';
          continue;
        }
        const flows = await this.agents.of(h).nic.flows(query);
        for (const f of flows) out.push({ host: h.host, ...(h.name !== h.host ? { nic: h.nic } : {}), ...f });
        hosts[h.name] = `${flows.length} flows`;
      } catch (err) {
        hosts[h.name] = (err as Error).message;
      }
    }
    const start = (f: Record<string, unknown>): string => String(f.start ?? f.startedAt ?? '');
    out.sort((a, b) => (start(a) < start(b) ? -1 : start(a) > start(b) ? 1 : 0));
    return { flows: q.limit !== undefined ? out.slice(-q.limit) : out, hosts };
  }

  /**
   * Checks a policy document and runs its built-in tests against the workloads in the store
   * (their names and labels), changing nothing: what the policy editor shows before a save.
   */
  async testPolicy(tenant: unknown, document: unknown): Promise<PolicyTestReport> {
    const n = parseBody(nameSchema, tenant, 'tenant');
    await this.service.getTenant(n);
    const directory = new WorkloadDirectory();
    for (const w of await this.service.listWorkloads()) directory.upsert(w.tenant, w.name, w.labels);
    const r = new PolicyStore(directory).check(document, n);
    const tests = (document as { tests?: unknown } | null)?.tests;
    return {
      tenant: n,
      ok: r.ok,
      tests: Array.isArray(tests) ? tests.length : 0,
      errors: r.errors,
      warnings: r.warnings,
    };
  }

  /** The installation at a glance: hosts, NICs, tenants, workloads, certificate expiry, drops. */
  async status(): Promise<InstallationStatus> {
    return installationStatus({
      service: this.service,
      agents: this.agents,
      revision: await this.store.revision(),
      startedAt: this.startedAt,
      reconcilePasses: this.reconcilePasses,
      lastReconcile: this.lastReconcile,
      certificatePem: this.certificate(),
    });
  }

  /** The legs of every workload (workload - vSwitch - NIC - fabric) with their counters. */
  topology(): Promise<Topology> {
    return topology(this.service, this.agents);
  }

  /**
   * A host's NIC key inventory (metadata only): of every NIC of the host, each entry tagged
   * with its NIC (`nic`) when the host has several; `nic` limits it to one of them.
   */
  async keys(
    host: unknown,
    nic?: unknown,
  ): Promise<{ host: string; keys: unknown[]; unreachable?: Record<string, string> }> {
    const h = await this.service.getHost(host);
    const n = nic === undefined ? undefined : parseBody(nameSchema, nic, 'nic');
    const sites = sitesOf(h).filter((s) => n === undefined || s.nic === n);
    if (sites.length === 0) throw new TgError('TG_ERR_NOT_FOUND', `host '${h.name}' has no NIC '${n}'`);
    // One NIC asked: its answer or its error. Several: the ones that answer, and why others did not.
    if (sites.length === 1 && hostNics(h).length === 1)
      return { host: h.name, keys: await this.agents.of(sites[0]).nic.keys() };
    const keys: unknown[] = [];
    const unreachable: Record<string, string> = {};
    for (const s of sites) {
      try {
        keys.push(...(await this.agents.of(s).nic.keys()).map((k) => ({ nic: s.nic, ...k })));
      } catch (err) {
        if (n !== undefined) throw err;
        unreachable[s.nic] = (err as Error).message;
      }
    }
    return { host: h.name, keys, ...(Object.keys(unreachable).length > 0 ? { unreachable } : {}) };
  }
}
