// Reconciliation: drives every host's NIC agent and vSwitch daemon to the desired state in
// the store, from what they report (GET /v1/identity, /v1/workloads, /v1/tenants on the NIC,
// /v1/instances on the vSwitch), changing only what differs:
// - a NIC with a new identity key restarted (and lost every key by design): each workload is
//   registered again with its running vSwitch instance's key and the instance reconfigured
//   with the new crypto; the tenant's peers are published again everywhere (the restarted
//   NIC's off-host keys are new);
// - a crashed or missing vSwitch instance is restarted or recreated (new key pair, so the
//   NIC registration is replaced in place: the NIC keeps the tenant and its off-host key), a
//   missing namespace recreated; several missing instances
//   (a vSwitch daemon that came back empty) are created in one batch call, and every
//   instance the pass configures goes to the daemon with the others ready by then (one call
//   in flight, the next carrying all that became ready meanwhile): the daemon runs its API's
//   changes one at a time, so one call per instance would queue them behind each other while
//   a batch lets the daemon work on them in parallel;
// - registrations and instances nobody wants are removed, and namespaces nobody wants that the
//   orchestrator recorded as made by itself (never by name: a runtime's namespace, or any
//   other that shares the host's prefix, is never deleted); workloads left 'deleting' by a failed spin-down are finished;
// - peers and policy documents are put only where the NIC's differ.
// A pass on state that is already right makes no change (no traffic disturbance).

import type { NicPublicIdentity } from '../nic/client.js';
import type { Logger } from '../util/log.js';
import type { VSwitchClient } from '../vswitch/client.js';
import type { ConfigureRequest } from '../vswitch/daemon.js';
import type { InstanceInfo } from '../vswitch/instance.js';
import { type AgentDirectory, delNetns, listNetns } from './agents.js';
import { type Lifecycle, peersDigest } from './lifecycle.js';
import type { HostRecord, WorkloadRecord } from './model.js';
import { type NicSite, sitesOf, workloadSite, workloadSiteKey } from './nics.js';
import type { OrchestratorService } from './service.js';

export interface ReconcileReport {
  revision: number;
  ms: number;
  /** Changes made, as 'host/what/workload' lines. */
  actions: string[];
  /** Agents that did not answer, with the reason: a NIC by its site key (nics.ts), a vSwitch daemon as 'HOST/vswitch'. */
  unreachable: Record<string, string>;
  errors: string[];
  /** Hosts whose NIC came back with a new identity in this pass. */
  nicRestarts: string[];
}

/** What a host's vSwitch daemon runs and which namespaces exist, read once per pass. */
interface HostLocal {
  instances: Map<string, InstanceInfo>;
  present: Set<string>;
}

interface HostActual {
  host: HostRecord;
  identity: NicPublicIdentity;
  tenants: {
    tenant: string;
    publicKey: string;
    peers: {
      publicKey: string;
      endpoint: string;
      workloads: { workload: string; address: string; address6?: string }[];
    }[];
  }[];
}

const msg = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** Workloads of one host brought to their desired state at a time in a pass. */
export const ENSURE_CONCURRENCY = 8;
/** Instances in one batch call to a vSwitch daemon (its API's limit). */
const MAX_BATCH = 256;

/** An instance's configuration, sent with others in one call. */
interface PendingConfigure {
  w: WorkloadRecord;
  req: ConfigureRequest & { workload: string };
}

/**
 * Configurations on their way to a vSwitch daemon: one call in flight at a time, each carrying
 * every configuration that became ready while the one before ran (up to MAX_BATCH), so that
 * the daemon configures the first instances while the NIC still registers the others.
 * `send` must not reject.
 */
class ConfigureQueue {
  private pending: PendingConfigure[] = [];
  private readonly names = new Set<string>();
  private running: Promise<void> | null = null;

  constructor(private readonly send: (chunk: PendingConfigure[]) => Promise<void>) {}

  push(p: PendingConfigure): void {
    this.pending.push(p);
    this.names.add(p.w.name);
    if (this.running === null) this.running = this.loop();
  }

  /** Whether the workload's configuration went through this queue. */
  has(workload: string): boolean {
    return this.names.has(workload);
  }

  /** Resolves once every configuration pushed so far has been sent and answered. */
  async drain(): Promise<void> {
    while (this.running !== null) await this.running;
  }

  private async loop(): Promise<void> {
    // Let the configurations ready in this turn join the first call.
    await new Promise((r) => setImmediate(r));
    while (this.pending.length > 0) {
      const chunk = this.pending.splice(0, MAX_BATCH);
      await this.send(chunk);
    }
    this.running = null;
  }
}

/** Runs `fn` over `items` with at most `limit` in flight (`fn` must not reject). */
async function eachLimited<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export class Reconciler {
  constructor(
    private readonly service: OrchestratorService,
    private readonly lifecycle: Lifecycle,
    private readonly agents: AgentDirectory,
    private readonly log: Logger,
  ) {}

  /**
   * One pass over one host: its agents, its workloads' deletions, and the peers and policies
   * on its NIC. The caller holds the host's queue; other hosts' agents are called only to
   * read a tenant key they have not given yet (a reachable one, with a deadline).
   */
  async passHost(h: HostRecord): Promise<ReconcileReport> {
    const t0 = performance.now();
    const report: ReconcileReport = {
      revision: await this.service.store.revision(),
      ms: 0,
      actions: [],
      unreachable: {},
      errors: [],
      nicRestarts: [],
    };
    const hosts = await this.service.listHosts();
    const hostRecords = new Map(hosts.map((x) => [x.name, x] as const));
    const workloads = await this.service.listWorkloads();
    const wantedNetns = new Set(workloads.filter((w) => w.state !== 'deleting').map((w) => w.netns));
    const actuals: HostActual[] = [];
    // The host's vSwitch daemon and namespaces once, then each of its NICs (nics.ts).
    let local: HostLocal | null = null;
    try {
      local = await this.hostLocal(h);
    } catch (err) {
      report.unreachable[`${h.name}/vswitch`] = msg(err);
    }
    if (local !== null) {
      for (const site of sitesOf(hostRecords.get(h.name) ?? h)) {
        try {
          actuals.push(await this.nicSite(site, workloads, hostRecords, local, report));
        } catch (err) {
          report.unreachable[site.name] = msg(err);
        }
      }
      await this.hostCleanup(h, workloads, wantedNetns, local, report);
    }
    const known = new Set(hosts.map((x) => x.name));
    const mine = workloads.filter(
      (w) => w.host === h.name || (!known.has(w.host) && hosts[0]?.name === h.name),
    );
    await this.finishDeletes(hosts, mine, report);
    await this.peersAndPolicy(actuals, report);
    report.ms = Math.round(performance.now() - t0);
    if (report.actions.length > 0 || report.errors.length > 0)
      this.log.info(
        { host: h.name, actions: report.actions.length, errors: report.errors, ms: report.ms },
        'reconciliation made changes',
      );
    return report;
  }

  /** What the host's vSwitch daemon runs and which namespaces exist. */
  private async hostLocal(h: HostRecord): Promise<HostLocal> {
    const { vswitch } = this.agents.of(h);
    const instances = new Map((await vswitch.list()).map((i) => [i.workload, i] as const));
    return { instances, present: new Set(listNetns()) };
  }

  /** One NIC of the host: its registrations and the workloads it carries. */
  private async nicSite(
    h: NicSite,
    workloads: WorkloadRecord[],
    hostRecords: ReadonlyMap<string, HostRecord>,
    local: HostLocal,
    report: ReconcileReport,
  ): Promise<HostActual> {
    const { nic, vswitch } = this.agents.of(h);
    const identity = await nic.identity();
    let view = this.lifecycle.view(h.name);
    if (view.identityKey !== identity.identityKey) {
      if (view.identityKey !== null) {
        report.nicRestarts.push(h.name);
        this.log.warn({ host: h.name }, 'NIC agent has a new identity (restarted): re-provisioning');
      }
      view = this.lifecycle.resetView(h.name, identity.identityKey);
    }
    const nicWorkloads = await nic.workloads();
    this.lifecycle.learnRegistrations(h.name, identity.identityKey, nicWorkloads);
    const { instances, present } = local;
    const desired = workloads.filter(
      (w) => w.host === h.host && w.state !== 'deleting' && workloadSiteKey(w, hostRecords) === h.name,
    );
    const desiredNames = new Set(desired.map((w) => w.name));

    // A vSwitch daemon that came back empty (every device lost) gets its instances back in one
    // call, started in parallel inside the daemon; then several workloads at a time are
    // registered with the NIC, and their instances configured in one call at the end.
    await this.createMissing(h, vswitch, desired, instances, present, report);
    const configures = new ConfigureQueue((chunk) => this.configureBatch(h, vswitch, chunk, report));
    await eachLimited(desired, ENSURE_CONCURRENCY, async (w) => {
      try {
        const did = await this.ensure(h, w, identity, instances.get(w.name), present, configures);
        for (const d of did) report.actions.push(`${h.name}/${d}/${w.name}`);
        if ((w.state === 'creating' || w.state === 'migrating') && !configures.has(w.name))
          await this.service.markRunning(w.name, w.timings);
      } catch (err) {
        report.errors.push(`${h.name}/${w.name}: ${msg(err)}`);
      }
    });
    await configures.drain();
    for (const name of [...view.registrations.keys()]) {
      if (desiredNames.has(name) || workloads.some((w) => w.name === name && w.state === 'deleting'))
        continue;
      try {
        await this.lifecycle.unregister(h, name);
        report.actions.push(`${h.name}/nic-remove/${name}`);
      } catch (err) {
        report.errors.push(`${h.name}/${name}: ${msg(err)}`);
      }
    }
    const tenants = (await nic.tenants()) as unknown as HostActual['tenants'];
    for (const t of tenants) {
      const k = view.tenantKeys.get(t.tenant);
      if (k !== undefined && k.publicKey !== t.publicKey) view.tenantKeys.delete(t.tenant);
    }
    return { host: h, identity, tenants };
  }

  /** Instances and namespaces of the host nobody wants. */
  private async hostCleanup(
    h: HostRecord,
    workloads: WorkloadRecord[],
    wantedNetns: Set<string>,
    local: HostLocal,
    report: ReconcileReport,
  ): Promise<void> {
    const { vswitch } = this.agents.of(h);
    const desiredNames = new Set(
      workloads.filter((w) => w.host === h.name && w.state !== 'deleting').map((w) => w.name),
    );
    for (const inst of local.instances.values()) {
      if (desiredNames.has(inst.workload) || !inst.netns.startsWith(h.netnsPrefix)) continue;
      if (workloads.some((w) => w.name === inst.workload && w.state === 'deleting')) continue;
      try {
        await vswitch.delete(inst.workload);
        report.actions.push(`${h.name}/vswitch-stop/${inst.workload}`);
      } catch (err) {
        report.errors.push(`${h.name}/${inst.workload}: ${msg(err)}`);
      }
    }
    // Only namespaces the orchestrator recorded as made by it, never by name: a namespace of
    // another owner (a runtime's, the lab's) that shares the host's prefix is not ours.
    for (const rec of await this.service.listNamespaces()) {
      const ns = rec.name;
      if (rec.host !== h.name || wantedNetns.has(ns)) continue;
      if (workloads.some((w) => w.state === 'deleting' && w.netns === ns)) continue;
      try {
        await delNetns(ns);
        await this.service.forgetNamespace(ns);
        report.actions.push(`${h.name}/namespace-remove/${ns}`);
      } catch (err) {
        report.errors.push(`${h.name}/${ns}: ${msg(err)}`);
      }
    }
  }

  /** Brings one workload on its host to running and configured; returns what it did. */
  private async ensure(
    h: HostRecord,
    w: WorkloadRecord,
    identity: NicPublicIdentity,
    inst: InstanceInfo | undefined,
    present: Set<string>,
    /** Where the instance's configuration goes; the caller sends them all in one call. */
    configures: ConfigureQueue,
  ): Promise<string[]> {
    const { vswitch, nic } = this.agents.of(h);
    const did: string[] = [];
    let instance = inst;
    if (!present.has(w.netns)) {
      await this.lifecycle.ensureNamespace(w, h, w.netns);
      did.push('namespace');
      if (instance !== undefined) {
        await vswitch.delete(w.name).catch(() => undefined);
        instance = undefined;
      }
    }
    let publicKey: string;
    let configured = false;
    if (
      instance === undefined ||
      instance.netns !== w.netns ||
      instance.address !== w.address ||
      instance.address6 !== w.address6 ||
      (instance.state !== 'created' && instance.state !== 'configured')
    ) {
      const r = await this.lifecycle.ensureInstance(
        vswitch,
        w.name,
        w.netns,
        w.address,
        w.ifname,
        w.address6,
      );
      publicKey = r.publicKey;
      did.push(instance?.state === 'crashed' ? 'vswitch-restart' : 'vswitch-create');
    } else {
      publicKey = instance.publicKey;
      configured =
        instance.state === 'configured' &&
        instance.nicPublicKey === identity.onHostPublicKey &&
        instance.nicEndpoint === identity.hostEndpoint;
    }
    const view = this.lifecycle.view(h.name);
    const reg = view.registrations.get(w.name);
    const sameSpec =
      reg !== undefined &&
      reg.tenant === w.tenant &&
      reg.address === w.address &&
      reg.address6 === w.address6;
    if (reg !== undefined && sameSpec && reg.vswitchPublicKey !== publicKey) {
      // A new instance (key) for the same workload: replaced in place, so that the NIC keeps
      // the tenant and its off-host key (the other NICs need learn nothing new).
      const crypto = await this.lifecycle.register(h, w, publicKey, true);
      configures.push({ w, req: { workload: w.name, ...crypto } });
      did.push('nic-replace');
      return did;
    }
    if (reg !== undefined && !sameSpec) {
      await this.lifecycle.unregister(h, w.name);
      did.push('nic-remove');
    }
    if (!view.registrations.has(w.name)) {
      const crypto = await this.lifecycle.register(h, w, publicKey);
      configures.push({ w, req: { workload: w.name, ...crypto } });
      did.push('nic-register');
    } else if (!configured) {
      const { sealedPsk } = await nic.rotatePsk(w.name);
      configures.push({
        w,
        req: {
          workload: w.name,
          nicPublicKey: identity.onHostPublicKey,
          sealedPsk,
          nicEndpoint: identity.hostEndpoint,
        },
      });
    }
    return did;
  }

  /**
   * Creates, in one call, the instances of workloads whose namespace is there but whose
   * instance is not (two or more: one alone takes ensure()'s usual way); `instances` is
   * refreshed from the daemon afterwards. A workload whose create failed is left to ensure().
   */
  private async createMissing(
    h: HostRecord,
    vswitch: VSwitchClient,
    desired: WorkloadRecord[],
    instances: Map<string, InstanceInfo>,
    present: Set<string>,
    report: ReconcileReport,
  ): Promise<void> {
    const missing = desired.filter((w) => !instances.has(w.name) && present.has(w.netns));
    if (missing.length < 2) return;
    for (let i = 0; i < missing.length; i += MAX_BATCH) {
      const chunk = missing.slice(i, i + MAX_BATCH);
      try {
        const results = await vswitch.createMany(
          chunk.map((w) => ({
            workload: w.name,
            netns: w.netns,
            address: w.address,
            ...(w.address6 !== undefined ? { address6: w.address6 } : {}),
            ...(w.ifname !== undefined ? { netnsIfname: w.ifname } : {}),
          })),
        );
        for (const [j, r] of results.entries()) {
          if ('error' in r) report.errors.push(`${h.name}/${chunk[j].name}: ${r.error.message}`);
          else report.actions.push(`${h.name}/vswitch-create/${chunk[j].name}`);
        }
      } catch (err) {
        report.errors.push(`${h.name}/vswitch-create: ${msg(err)}`);
      }
    }
    for (const i of await vswitch.list()) instances.set(i.workload, i);
  }

  /** Configures instances in one call; marks finished spin-ups running. */
  private async configureBatch(
    h: HostRecord,
    vswitch: VSwitchClient,
    chunk: PendingConfigure[],
    report: ReconcileReport,
  ): Promise<void> {
    let results: Awaited<ReturnType<VSwitchClient['configureMany']>>;
    try {
      results = await vswitch.configureMany(chunk.map((c) => c.req));
    } catch (err) {
      report.errors.push(`${h.name}/vswitch-configure: ${msg(err)}`);
      return;
    }
    for (const [j, r] of results.entries()) {
      const w = chunk[j].w;
      if ('error' in r) {
        report.errors.push(`${h.name}/${w.name}: ${r.error.message}`);
        continue;
      }
      report.actions.push(`${h.name}/vswitch-configure/${w.name}`);
      if (w.state === 'creating' || w.state === 'migrating') {
        try {
          await this.service.markRunning(w.name, w.timings);
        } catch (err) {
          report.errors.push(`${h.name}/${w.name}: ${msg(err)}`);
        }
      }
    }
  }

  private async finishDeletes(hosts: HostRecord[], workloads: WorkloadRecord[], report: ReconcileReport) {
    for (const w of workloads) {
      if (w.state !== 'deleting') continue;
      const h = hosts.find((x) => x.name === w.host);
      try {
        if (h !== undefined) await this.lifecycle.spinDown(w, workloadSite(w, h));
        await this.service.finishDelete(w.name);
        report.actions.push(`${w.host}/delete/${w.name}`);
      } catch (err) {
        report.errors.push(`${w.host}/${w.name}: ${msg(err)}`);
      }
    }
  }

  private async peersAndPolicy(actuals: HostActual[], report: ReconcileReport): Promise<void> {
    const tenants = new Set<string>();
    for (const a of actuals) for (const t of a.tenants) tenants.add(t.tenant);
    try {
      await this.lifecycle.reconcileGrants(
        actuals.map((a) => a.host),
        new Map(actuals.map((a) => [a.host.name, a.tenants.map((t) => t.tenant)] as const)),
      );
    } catch (err) {
      report.errors.push(`grants: ${msg(err)}`);
    }
    for (const tenant of tenants) {
      const actual = new Map<string, string>();
      for (const a of actuals) {
        const t = a.tenants.find((x) => x.tenant === tenant);
        if (t !== undefined) actual.set(a.host.name, peersDigest(t.peers));
      }
      const before = new Map(
        actuals.map((a) => [a.host.name, this.lifecycle.published(a.host.name, tenant)]),
      );
      try {
        const here = actuals.map((a) => a.host.name);
        await this.lifecycle.publishTenant(tenant, { actual, only: here, strict: here });
        for (const a of actuals) {
          const now = this.lifecycle.published(a.host.name, tenant);
          if (
            now !== undefined &&
            now !== before.get(a.host.name) &&
            peersDigest(JSON.parse(now)) !== actual.get(a.host.name)
          )
            report.actions.push(`${a.host.name}/peers/${tenant}`);
        }
      } catch (err) {
        report.errors.push(`peers/${tenant}: ${msg(err)}`);
      }
      for (const a of actuals) {
        if (!a.tenants.some((x) => x.tenant === tenant)) continue;
        try {
          await this.lifecycle.ensurePolicy(a.host, tenant, true);
        } catch (err) {
          report.errors.push(`${a.host.name}/policy/${tenant}: ${msg(err)}`);
        }
        try {
          await this.lifecycle.ensureNetwork(a.host, tenant, true);
        } catch (err) {
          report.errors.push(`${a.host.name}/network/${tenant}: ${msg(err)}`);
        }
      }
    }
  }
}

/** Host passes as one report: their findings together, the longest pass's ms. */
export function mergeReports(reports: readonly ReconcileReport[], revision: number): ReconcileReport {
  const out: ReconcileReport = { revision, ms: 0, actions: [], unreachable: {}, errors: [], nicRestarts: [] };
  for (const r of reports) {
    out.ms = Math.max(out.ms, r.ms);
    out.actions.push(...r.actions);
    out.errors.push(...r.errors);
    out.nicRestarts.push(...r.nicRestarts);
    Object.assign(out.unreachable, r.unreachable);
  }
  return out;
}
