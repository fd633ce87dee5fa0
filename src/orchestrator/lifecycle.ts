// Spin-up, spin-down and migration of workloads (DESIGN.md section 5), driving the NIC and
// vSwitch APIs in this order:
//
//   spin-up:   namespace (ip netns add) -> vSwitch instance (its key pair, tg0 in the namespace,
//              the address allocated by the store) -> NIC registration (address, labels and the
//              vSwitch's public key -> the NIC's public key, the PSK, its endpoint) -> vSwitch
//              configured with that crypto -> tenant peers published to every NIC holding the
//              tenant -> the tenant's policy on a NIC that newly holds the tenant (after the
//              peers: a NIC refuses a document naming a workload it does not know).
//              The vSwitch instance comes before the NIC registration because the NIC binds the
//              workload to the vSwitch's public key (POST /v1/workloads needs it).
//   spin-down: vSwitch instance ends -> NIC wipes the workload's keys (and the tenant's off-host
//              key with its last workload) -> the other NICs forget the address -> namespace gone.
//   migrate:   destination namespace and instance -> the destination NIC forgets the workload
//              as a remote one -> destination registration and configuration -> the switch (the
//              store names the destination; every other NIC now routes to it) -> the source
//              side spun down -> the source NIC learns the new place.
//
// Every step is idempotent (an existing namespace, instance or registration that matches is
// taken as done). A spin-up or migration that fails part way undoes its steps in reverse and
// throws TG_ERR_STEP_FAILED naming the step. PSKs pass through this process on their way from
// the NIC to the vSwitch and are never stored or logged.
import { X509Certificate } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { SignedTenantKey, TenantPeerInput } from '../nic/agent.js';
import type { NicClient } from '../nic/client.js';
import type { PskBox } from '../nic/psk-box.js';
import { TgError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { removeNetnsResolver, writeNetnsResolver } from '../util/netns.js';
import type { VSwitchClient } from '../vswitch/client.js';
import {
  type AgentDirectory,
  addNetns,
  delNetns,
  netnsExists,
  nicHasNetworkApi,
  nicHasPolicyApi,
} from './agents.js';
import { type GrantSource, grantList, grantsDigest, tenantLinks } from './grants.js';
import { HostQueues } from './host-queues.js';
import { type HostRecord, tenantDomain, type WorkloadRecord } from './model.js';
import { type NicSite, sitesOf, workloadSiteKey } from './nics.js';
import type { OrchestratorService } from './service.js';

/** What a NIC has registered, as the orchestrator last saw or made it. */
export interface Registration {
  tenant: string;
  address: string;
  /** The IPv6 address of a dual-stack workload. */
  address6?: string;
  vswitchPublicKey: string;
}

/** What the orchestrator relays from a NIC to a vSwitch: the PSK only as a sealed box. */
export interface NicCryptoAnswer {
  nicPublicKey: string;
  sealedPsk: PskBox;
  nicEndpoint: string;
}

export type Timings = Record<string, number>;

const round = (ms: number): number => Math.round(ms * 100) / 100;

function codeOf(err: unknown): string | undefined {
  return err instanceof TgError ? err.code : undefined;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function stepFailed(what: string, step: string, err: unknown): TgError {
  if (err instanceof TgError && err.code === 'TG_ERR_STEP_FAILED') return err;
  return new TgError('TG_ERR_STEP_FAILED', `${what} failed at step '${step}': ${messageOf(err)}`, {
    cause: err,
  });
}

/** Per-host knowledge that is only valid for one NIC identity (cleared when it changes). */
interface NicView {
  identityKey: string | null;
  /**
   * `registrations` holds every workload on the NIC (read from it since the orchestrator
   * started), not only the ones registered here: peer and grant lists, which name other
   * hosts' workloads, are computed only from known views.
   */
  registrationsKnown: boolean;
  policyApi: boolean | null;
  /** workload -> registration, as on the NIC. */
  registrations: Map<string, Registration>;
  /** tenant -> the NIC's signed off-host key. */
  tenantKeys: Map<string, SignedTenantKey>;
  /** tenant -> the JSON of the peers last put. */
  published: Map<string, string>;
  /** tenant -> updatedAt of the policy document in force there. */
  policy: Map<string, string>;
  /** tenant -> grantsDigest() of the grant list last put. */
  grants: Map<string, string>;
  networkApi: boolean | null;
  /** tenant -> the JSON of the network (DNS server, services) last put. */
  network: Map<string, string>;
}

/**
 * How long an operation on one host waits for a put to another (non-strict) host's NIC before
 * going on without it: a healthy NIC answers in milliseconds, and the put itself goes on.
 */
export const OTHER_HOST_WAIT_MS = 1000;

/** Resolves when `p` settles or after `ms`, whichever is first (`p` must not reject). */
async function waitAtMost(p: Promise<unknown>, ms: number): Promise<void> {
  let t: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((r) => (t = setTimeout(r, ms)))]);
  clearTimeout(t);
}

/** Every NIC of `hosts` as a site, and host name -> record (to find a workload's site). */
function sitesAndRecords(hosts: readonly HostRecord[]): {
  sites: NicSite[];
  records: Map<string, HostRecord>;
} {
  return { sites: hosts.flatMap(sitesOf), records: new Map(hosts.map((x) => [x.name, x] as const)) };
}

export class Lifecycle {
  private readonly views = new Map<string, NicView>();
  /** Peer puts, one at a time per NIC. */
  private readonly peerPuts = new HostQueues();

  constructor(
    private readonly service: OrchestratorService,
    private readonly agents: AgentDirectory,
    private readonly log: Logger,
  ) {}

  /** Every NIC of every host, as sites (nics.ts): the lifecycle's unit of NIC knowledge. */
  async sites(): Promise<NicSite[]> {
    return (await this.service.fabric({ workloads: false })).hosts.flatMap(sitesOf);
  }

  /**
   * Forgets what a NIC that stopped answering held (its workloads moved to another NIC of its
   * host): its view is known and empty, so peer and grant lists leave it out and do not wait
   * for it. When it answers again, the reconciler reads what it really holds and removes it.
   */
  abandonNic(site: string): void {
    const v = this.resetView(site, this.view(site).identityKey);
    v.registrationsKnown = true;
  }

  // --- Views of NICs --------------------------------------------------------------------

  view(host: string): NicView {
    let v = this.views.get(host);
    if (v === undefined) {
      v = {
        identityKey: null,
        registrationsKnown: false,
        policyApi: null,
        registrations: new Map(),
        tenantKeys: new Map(),
        published: new Map(),
        policy: new Map(),
        grants: new Map(),
        networkApi: null,
        network: new Map(),
      };
      this.views.set(host, v);
    }
    return v;
  }

  /**
   * Reads a NIC's registrations into its view if they are not known yet (the first use after
   * the orchestrator started); false when its NIC does not answer.
   */
  async know(host: HostRecord): Promise<boolean> {
    const v = this.view(host.name);
    if (v.registrationsKnown) return true;
    if (!this.agents.nicReachable(host.name)) return false;
    try {
      const nic = this.agents.of(host).nic;
      const id = await nic.identity();
      const regs = await nic.workloads();
      const now = this.view(host.name);
      if (now.registrationsKnown) return true;
      if (now.identityKey !== null && now.identityKey !== id.identityKey) return false;
      this.learnRegistrations(host.name, id.identityKey, regs);
      return true;
    } catch (err) {
      this.log.warn({ host: host.name, err: messageOf(err) }, 'NIC registrations not readable');
      return false;
    }
  }

  /** Sets a view's registrations to what its NIC reported (all of them). */
  learnRegistrations(host: string, identityKey: string, regs: readonly Record<string, unknown>[]): void {
    const v = this.view(host);
    v.identityKey = identityKey;
    v.registrations.clear();
    for (const x of regs)
      v.registrations.set(String(x.workload), {
        tenant: String(x.tenant),
        address: String(x.address),
        ...(typeof x.address6 === 'string' ? { address6: x.address6 } : {}),
        vswitchPublicKey: String(x.vswitchPublicKey),
      });
    v.registrationsKnown = true;
  }

  /** Whether every host's registrations are known (read when not); false if one's are not readable. */
  private async knowAll(hosts: readonly HostRecord[]): Promise<boolean> {
    const r = await Promise.all(hosts.map((h) => this.know(h)));
    return r.every(Boolean);
  }

  /** Forgets everything about a NIC (it restarted, or its host was deregistered). */
  resetView(host: string, identityKey: string | null): NicView {
    this.views.delete(host);
    const v = this.view(host);
    v.identityKey = identityKey;
    return v;
  }

  holdsTenant(host: string, tenant: string): boolean {
    for (const r of this.view(host).registrations.values()) if (r.tenant === tenant) return true;
    return false;
  }

  async policyApi(host: HostRecord): Promise<boolean> {
    const v = this.view(host.name);
    if (v.policyApi === null) v.policyApi = await nicHasPolicyApi(this.agents.of(host).nic);
    return v.policyApi;
  }

  // --- Spin-up ----------------------------------------------------------------------------

  /**
   * Spins a reserved workload up on its host. Returns the steps' timings (ms), with `total`
   * measured from `t0` (the API call). On failure every done step is undone.
   */
  async spinUp(w: WorkloadRecord, host: HostRecord, t0: number): Promise<Timings> {
    const timings: Timings = {};
    const undo: { step: string; fn: () => Promise<unknown> }[] = [];
    let step = 'namespace';
    try {
      await this.placeOn(w, host, w.netns, timings, undo, (s) => {
        step = s;
      });
      step = 'peers';
      await this.timed(timings, step, () => this.publishTenant(w.tenant, { strict: [host.name] }));
      step = 'grants';
      await this.timed(timings, step, () => this.publishGrants({ strict: [host.name] }));
      step = 'policy';
      await this.timed(timings, step, () => this.ensurePolicy(host, w.tenant, false));
      step = 'network';
      await this.timed(timings, step, () => this.ensureNetwork(host, w.tenant, false));
    } catch (err) {
      await this.rollback(undo);
      if (undo.some((u) => u.step === 'nic-register'))
        await this.publishTenant(w.tenant).catch(() => undefined);
      throw stepFailed(`spin-up of workload '${w.name}' on host '${host.name}'`, step, err);
    }
    timings.total = round(performance.now() - t0);
    return timings;
  }

  /**
   * The host-local part of a spin-up: namespace, instance, registration, configuration,
   * policy. Pushes an undo action per step done; reports each step as it starts.
   */
  private async placeOn(
    w: WorkloadRecord,
    host: HostRecord,
    netns: string,
    timings: Timings,
    undo: { step: string; fn: () => Promise<unknown> }[],
    at: (step: string) => void,
    beforeRegister?: () => Promise<void>,
    /** A move between NICs of one host: the running instance stays (never undone here). */
    keepInstance = false,
  ): Promise<void> {
    const { vswitch } = this.agents.of(host);
    at('namespace');
    const created = await this.timed(timings, 'namespace', () => this.ensureNamespace(w, host, netns));
    if (created) undo.push({ step: 'namespace', fn: () => this.removeNamespace(w, netns) });
    at('vswitch-create');
    const inst = await this.timed(timings, 'vswitchCreate', async () => {
      if (keepInstance) {
        // A move between NICs: the running instance is kept (one call instead of two).
        const there = await vswitch.get(w.name).catch(() => undefined);
        if (
          there !== undefined &&
          there.netns === netns &&
          there.address === w.address &&
          there.address6 === w.address6 &&
          (there.state === 'created' || there.state === 'configured')
        )
          return { publicKey: there.publicKey, restarted: false };
      }
      return this.ensureInstance(vswitch, w.name, netns, w.address, w.ifname, w.address6);
    });
    if (!keepInstance) undo.push({ step: 'vswitch-create', fn: () => vswitch.delete(w.name) });
    if (beforeRegister !== undefined) {
      at('peers-prepare');
      await this.timed(timings, 'peersPrepare', beforeRegister);
    }
    at('nic-register');
    const crypto = await this.timed(timings, 'nicRegister', () => this.register(host, w, inst.publicKey));
    undo.push({ step: 'nic-register', fn: () => this.unregister(host, w.name) });
    at('vswitch-configure');
    await this.timed(timings, 'vswitchConfigure', () => vswitch.configure(w.name, crypto));
  }

  /**
   * The workload's namespace on a host. A container runtime's (netnsOwner 'runtime') must
   * exist and is never made here. Tenguard's own is recorded in the store before it is made,
   * so that reconciliation removes only namespaces it made. Returns true when made here.
   */
  async ensureNamespace(w: WorkloadRecord, host: HostRecord, netns: string): Promise<boolean> {
    if (w.netnsOwner === 'runtime') {
      if (!netnsExists(netns))
        throw new TgError(
          'TG_ERR_NOT_FOUND',
          `the container runtime's namespace '${netns}' of workload '${w.name}' does not exist`,
        );
      return false;
    }
    if (netnsExists(netns)) return false;
    await this.service.recordNamespace(netns, hostName(host), w.name);
    const made = await addNetns(netns);
    if (w.dns !== undefined) writeNetnsResolver(netns, w.dns, tenantDomain(w.tenant));
    return made;
  }

  /** Removes a namespace tenguard made and its record; a runtime's namespace is left alone. */
  async removeNamespace(w: WorkloadRecord, netns: string): Promise<void> {
    if (w.netnsOwner === 'runtime') return;
    await delNetns(netns);
    removeNetnsResolver(netns);
    await this.service.forgetNamespace(netns);
  }

  /**
   * A running instance for the workload in `netns` with `address` (and `address6`, dual
   * stack); restarts or replaces others.
   */
  async ensureInstance(
    vswitch: VSwitchClient,
    workload: string,
    netns: string,
    address: string,
    netnsIfname?: string,
    address6?: string,
  ): Promise<{ publicKey: string; restarted: boolean }> {
    const req = {
      workload,
      netns,
      address,
      ...(address6 !== undefined ? { address6 } : {}),
      ...(netnsIfname !== undefined ? { netnsIfname } : {}),
    };
    try {
      const c = await vswitch.create(req);
      return { publicKey: c.publicKey, restarted: true };
    } catch (err) {
      if (codeOf(err) !== 'TG_ERR_CONFLICT') throw err;
      const info = await vswitch.get(workload).catch(() => undefined);
      if (info === undefined) throw err;
      if (info.netns === netns && info.address === address && info.address6 === address6) {
        if (info.state === 'created' || info.state === 'configured')
          return { publicKey: info.publicKey, restarted: false };
        const r = await vswitch.restart(workload);
        return { publicKey: r.publicKey, restarted: true };
      }
      await vswitch.delete(workload);
      const c = await vswitch.create(req);
      return { publicKey: c.publicKey, restarted: true };
    }
  }

  /**
   * Registers the workload with its host's NIC and returns the crypto for its vSwitch. A
   * registration already there with the same key is kept (a fresh PSK is drawn for it); one
   * with another key is replaced.
   */
  async register(
    host: HostRecord,
    w: WorkloadRecord,
    vswitchPublicKey: string,
    /** Replace the NIC's registration of the workload in place (its tenant kept on the NIC). */
    replace = false,
  ): Promise<NicCryptoAnswer> {
    const { nic } = this.agents.of(host);
    const v = this.view(host.name);
    if (!this.holdsTenant(host.name, w.tenant)) {
      v.tenantKeys.delete(w.tenant);
      v.published.delete(w.tenant);
      v.policy.delete(w.tenant);
      v.network.delete(w.tenant);
    }
    if (v.identityKey === null) v.identityKey = (await nic.identity()).identityKey;
    const labels = Object.keys(w.labels).length > 0 && (await this.policyApi(host)) ? w.labels : undefined;
    const req = {
      tenant: w.tenant,
      workload: w.name,
      address: w.address,
      ...(w.address6 !== undefined ? { address6: w.address6 } : {}),
      vswitchPublicKey,
      ...(labels !== undefined ? { labels } : {}),
      ...(replace ? { replace } : {}),
    };
    const reg = (): Promise<NicCryptoAnswer> => nic.registerWorkload(req);
    let crypto: NicCryptoAnswer;
    try {
      crypto = await reg();
    } catch (err) {
      if (codeOf(err) !== 'TG_ERR_CONFLICT') throw err;
      const there = (await nic.workloads()).find((x) => x.workload === w.name);
      if (there === undefined) throw err;
      if (
        there.vswitchPublicKey === vswitchPublicKey &&
        there.tenant === w.tenant &&
        there.address === w.address &&
        there.address6 === w.address6
      ) {
        const id = await nic.identity();
        const { sealedPsk } = await nic.rotatePsk(w.name);
        crypto = { nicPublicKey: id.onHostPublicKey, sealedPsk, nicEndpoint: id.hostEndpoint };
      } else {
        await this.unregister(host, w.name);
        crypto = await reg();
      }
    }
    v.registrations.set(w.name, {
      tenant: w.tenant,
      address: w.address,
      ...(w.address6 !== undefined ? { address6: w.address6 } : {}),
      vswitchPublicKey,
    });
    return {
      nicPublicKey: crypto.nicPublicKey,
      sealedPsk: crypto.sealedPsk,
      nicEndpoint: crypto.nicEndpoint,
    };
  }

  /** Removes a workload from a NIC (absent is fine); forgets the tenant's key with its last workload. */
  async unregister(host: HostRecord, workload: string): Promise<void> {
    const v = this.view(host.name);
    const had = v.registrations.get(workload);
    try {
      const r = await this.agents.of(host).nic.removeWorkload(workload);
      if (r.tenantRemoved && had !== undefined) this.forgetTenant(host.name, had.tenant);
    } catch (err) {
      if (codeOf(err) !== 'TG_ERR_NOT_FOUND') throw err;
    }
    v.registrations.delete(workload);
    if (had !== undefined && !this.holdsTenant(host.name, had.tenant))
      this.forgetTenant(host.name, had.tenant);
  }

  private forgetTenant(host: string, tenant: string): void {
    const v = this.view(host);
    v.tenantKeys.delete(tenant);
    v.published.delete(tenant);
    v.policy.delete(tenant);
    v.network.delete(tenant);
  }

  // --- Spin-down --------------------------------------------------------------------------

  /** Spins a workload down where it is (or on `host` and `netns` given). */
  async spinDown(
    w: WorkloadRecord,
    host: HostRecord,
    netns = w.netns,
    timings: Timings = {},
  ): Promise<Timings> {
    const { vswitch } = this.agents.of(host);
    let step = 'vswitch-stop';
    try {
      await this.timed(timings, 'vswitchStop', async () => {
        await vswitch.delete(w.name).catch((err) => {
          if (codeOf(err) !== 'TG_ERR_NOT_FOUND') throw err;
        });
      });
      step = 'nic-remove';
      await this.timed(timings, 'nicRemove', () => this.unregister(host, w.name));
      step = 'peers';
      await this.timed(timings, 'peersRemove', () => this.publishTenant(w.tenant, { strict: [] }));
      step = 'grants';
      await this.timed(timings, 'grantsRemove', () => this.publishGrants({ strict: [] }));
      step = 'namespace';
      await this.timed(timings, 'namespaceRemove', () => this.removeNamespace(w, netns));
    } catch (err) {
      throw stepFailed(`spin-down of workload '${w.name}' on host '${host.name}'`, step, err);
    }
    return timings;
  }

  // --- Migration --------------------------------------------------------------------------

  /**
   * Moves a running workload from `from` to `to` (the record is already 'migrating'). Same
   * address, labels, name and tenant; new namespace, instance and on-host keys. Returns the
   * phases' timings. Before the switch a failure undoes the destination side and the
   * workload stays where it was; after it, the source side is left to the reconciler.
   */
  async migrate(
    w: WorkloadRecord,
    from: HostRecord,
    to: HostRecord,
    netns: string,
    t0: number,
  ): Promise<{ timings: Timings; record: WorkloadRecord }> {
    const timings: Timings = {};
    const undo: { step: string; fn: () => Promise<unknown> }[] = [];
    let step = 'namespace';
    // Between two NICs of one host (a NIC failed or drained) the namespace and the vSwitch
    // instance stay; the instance is configured with the new NIC's crypto (its leg re-points).
    const sameHost = hostName(from) === hostName(to);
    const what = sameHost
      ? `move of workload '${w.name}' from NIC '${from.name}' to NIC '${to.name}'`
      : `migration of workload '${w.name}' from '${from.name}' to '${to.name}'`;
    // A NIC that does not answer holds nothing any more as far as peers and grants go.
    if (sameHost && !this.agents.nicReachable(from.name)) this.abandonNic(from.name);
    try {
      await this.placeOn(
        w,
        to,
        netns,
        timings,
        undo,
        (s) => {
          step = s;
        },
        () =>
          this.publishTenant(w.tenant, { only: [to.name], localAlso: { host: to.name, workload: w.name } }),
        sameHost,
      );
      step = 'peers-destination';
      await this.timed(timings, 'peersDestination', () => this.publishTenant(w.tenant, { only: [to.name] }));
      step = 'grants-destination';
      await this.timed(timings, 'grantsDestination', () => this.publishGrants({ strict: [to.name] }));
      step = 'policy';
      await this.timed(timings, 'policy', () => this.ensurePolicy(to, w.tenant, false));
      step = 'network';
      await this.timed(timings, 'network', () => this.ensureNetwork(to, w.tenant, false));
    } catch (err) {
      await this.rollback(undo);
      await this.publishTenant(w.tenant).catch(() => undefined);
      throw stepFailed(what, step, err);
    }
    const record = await this.service.switchHost(
      w.name,
      await this.service.getHost(hostName(to)),
      (to as Partial<NicSite>).nic,
    );
    const tSwitch = performance.now();
    try {
      step = 'peers-switch';
      await this.timed(timings, 'peersSwitch', () => this.publishTenant(w.tenant, { strict: [to.name] }));
      await this.timed(timings, 'grantsSwitch', () => this.publishGrants({ strict: [] }));
      step = 'source';
      if (sameHost) {
        // Only the source NIC's registration goes; one that does not answer is left to the
        // reconciler (it removes the workload from it when it answers again).
        await this.timed(timings, 'sourceNicRemove', async () => {
          if (!this.agents.nicReachable(from.name)) return;
          await this.unregister(from, w.name);
          await this.publishTenant(w.tenant, { strict: [] });
          await this.publishGrants({ strict: [] });
        });
      } else {
        const down: Timings = {};
        await this.spinDown(w, from, w.netns, down);
        for (const [k, ms] of Object.entries(down)) timings[`source${k[0].toUpperCase()}${k.slice(1)}`] = ms;
      }
    } catch (err) {
      throw stepFailed(what, step, err);
    }
    timings.switchToSourceGone = round(performance.now() - tSwitch);
    timings.total = round(performance.now() - t0);
    return { timings, record };
  }

  // --- Tenant peers -------------------------------------------------------------------------

  /**
   * Gives every NIC holding `tenant` the signed off-host keys and workloads of the others
   * (the same exchange as LabAgents.syncTenant), putting only what changed since the last put
   * unless `force`. A workload registered on two NICs (mid-migration) is local to each of them
   * and, for everyone else, behind the NIC of the host the store names. `localAlso` treats a
   * workload as local on a host before it is registered there (so that NIC drops it as a
   * remote first); `only` limits the puts to some hosts.
   */
  async publishTenant(
    tenant: string,
    opts: {
      only?: string[];
      localAlso?: { host: string; workload: string };
      force?: boolean;
      /** host -> peersDigest() of what the NIC reports now: a match is not put again. */
      actual?: ReadonlyMap<string, string>;
      /**
       * Hosts whose failure fails the call (default: all). Another host is not waited on for
       * more than OTHER_HOST_WAIT_MS, and one whose NIC did not answer its last call is left
       * out (logged; the reconciler puts its peers when it answers again).
       */
      strict?: readonly string[];
    } = {},
  ): Promise<void> {
    const strict = (h: string): boolean => opts.strict === undefined || opts.strict.includes(h);
    const hosts = await this.sites();
    const targets = hosts.filter(
      (h) => this.holdsTenant(h.name, tenant) && (opts.only === undefined || opts.only.includes(h.name)),
    );
    const puts = targets.map(async (h) => {
      const v = this.view(h.name);
      if (!strict(h.name) && !this.agents.nicReachable(h.name)) {
        // Not waited on: the reconciler puts its peers when it answers again.
        v.published.delete(tenant);
        return;
      }
      // One put at a time per NIC, each computed when it runs: the last put is the newest.
      const put = this.peerPuts.run([h.name], () => this.putPeers(h, tenant, opts, strict));
      if (strict(h.name)) return put;
      const late = put.catch((err) => {
        v.published.delete(tenant);
        this.log.warn({ host: h.name, tenant, err: messageOf(err) }, 'peers not put; the reconciler retries');
      });
      await waitAtMost(late, OTHER_HOST_WAIT_MS);
    });
    const results = await Promise.allSettled(puts);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }

  /** Computes the peers of `tenant` for host `h` from the views as they are now and puts them if they changed. */
  private async putPeers(
    h: HostRecord,
    tenant: string,
    opts: {
      localAlso?: { host: string; workload: string };
      force?: boolean;
      actual?: ReadonlyMap<string, string>;
    },
    strict: (h: string) => boolean,
  ): Promise<void> {
    // One read of the store per put, made here, once this put holds its NIC's put queue.
    // That is what makes the last put right: a workload registered (in the views) before
    // this point was reserved in the store before it, so the read has its record (labels;
    // the NIC the store names for one registered on two); one registered after it is
    // followed by its own spin-up's put to this NIC, queued behind this one. A read taken
    // earlier (once per spin-up, before the queue) could miss a record whose registration
    // this put then sees, and put that workload without its labels as the last put
    // (reconciliation compares peers without labels, so it would stay so).
    const fabric = await this.service.fabric({ tenant });
    const { sites: hosts, records: hostRecords } = sitesAndRecords(fabric.hosts);
    if (!(await this.knowAll(hosts))) {
      // A list computed without some host's workloads would take them away from this NIC.
      this.view(h.name).published.delete(tenant);
      this.log.warn(
        { host: h.name, tenant },
        'peers not put: a NIC whose workloads are unknown does not answer',
      );
      return;
    }
    const records = new Map(fabric.workloads.map((r) => [r.name, r] as const));
    const holding = hosts.filter((x) => this.holdsTenant(x.name, tenant));
    const keys = new Map<string, SignedTenantKey>();
    const holders: HostRecord[] = [];
    for (const x of holding) {
      const cached = this.view(x.name).tenantKeys.get(tenant);
      if (x.name !== h.name && !strict(x.name) && !this.agents.nicReachable(x.name) && cached === undefined) {
        this.log.warn({ host: x.name, tenant }, 'NIC unreachable and its tenant key unknown; host left out');
        continue;
      }
      try {
        keys.set(x.name, await this.tenantKey(x, tenant));
        holders.push(x);
      } catch (err) {
        if (strict(x.name) || x.name === h.name) throw err;
        this.log.warn({ host: x.name, tenant, err: messageOf(err) }, 'tenant key unavailable; host left out');
      }
    }
    if (!holders.some((x) => x.name === h.name)) return;
    const labels = await this.policyApi(h);
    // From here on no await: the views are read as one snapshot.
    const placements = new Map<string, Set<string>>();
    for (const x of holding)
      for (const [name, r] of this.view(x.name).registrations)
        if (r.tenant === tenant) placements.set(name, (placements.get(name) ?? new Set()).add(x.name));
    const local = (name: string): boolean =>
      this.view(h.name).registrations.has(name) ||
      (opts.localAlso?.host === h.name && opts.localAlso.workload === name);
    const peers: TenantPeerInput[] = holders
      .filter((o) => o.name !== h.name)
      .map((o) => {
        const k = keys.get(o.name)!;
        const workloads = [...this.view(o.name).registrations]
          .filter(([name, r]) => {
            if (r.tenant !== tenant || local(name)) return false;
            const at = placements.get(name);
            const rec = records.get(name);
            return (
              at === undefined ||
              at.size === 1 ||
              (rec !== undefined && workloadSiteKey(rec, hostRecords) === o.name)
            );
          })
          .map(([name, r]) => {
            const wl = records.get(name)?.labels;
            const a6 = r.address6 !== undefined ? { address6: r.address6 } : {};
            return labels && wl !== undefined && Object.keys(wl).length > 0
              ? { workload: name, address: r.address, ...a6, labels: wl }
              : { workload: name, address: r.address, ...a6 };
          })
          .sort((a, b) => (a.workload < b.workload ? -1 : 1));
        return {
          nicIdentityKey: k.nicIdentityKey,
          endpoint: k.endpoint,
          publicKey: k.publicKey,
          signature: k.signature,
          ...(k.nicCertificate !== undefined ? { nicCertificate: k.nicCertificate } : {}),
          ...(k.identityBinding !== undefined ? { identityBinding: k.identityBinding } : {}),
          workloads,
        };
      });
    const json = JSON.stringify(peers);
    const v = this.view(h.name);
    const actual = opts.actual?.get(h.name);
    if (actual !== undefined) {
      if (actual === peersDigest(peers)) {
        v.published.set(tenant, json);
        return;
      }
    } else if (!opts.force && v.published.get(tenant) === json) return;
    try {
      await this.agents.of(h).nic.setTenantPeers(tenant, peers);
      v.published.set(tenant, json);
    } catch (err) {
      v.published.delete(tenant);
      throw err;
    }
  }

  /**
   * Puts every held tenant's grant list (grants.ts) on every NIC serving the policy API, where
   * it differs from what was last put (or from `actual`: host -> tenant -> grantsDigest of
   * what the NIC reports). `override` stands in for a tenant's stored policy document (a
   * document about to be pushed). Hosts that do not answer are skipped unless strict.
   */
  async publishGrants(
    opts: {
      override?: { tenant: string; document: unknown };
      actual?: ReadonlyMap<string, ReadonlyMap<string, string>>;
      strict?: readonly string[];
    } = {},
  ): Promise<void> {
    // Policies, hosts and workloads in one read of the store.
    const fabric = await this.service.fabric({ policies: true });
    const docs = fabric.policies;
    if (opts.override !== undefined) docs.set(opts.override.tenant, opts.override.document);
    const links = tenantLinks(docs);
    const { sites: hosts, records: hostRecords } = sitesAndRecords(fabric.hosts);
    if (!(await this.knowAll(hosts))) {
      this.log.warn(
        'grants not put: a NIC whose workloads are unknown does not answer; the reconciler retries',
      );
      return;
    }
    const anyPut = hosts.some((h) => this.view(h.name).grants.size > 0);
    if (links.size === 0 && !anyPut && opts.actual === undefined) return;
    const records = new Map(fabric.workloads.map((r) => [r.name, r] as const));
    const placed: GrantSource[] = [];
    const seen = new Set<string>();
    for (const h of hosts)
      for (const [name, r] of this.view(h.name).registrations) {
        const rec = records.get(name);
        const primary = rec === undefined || workloadSiteKey(rec, hostRecords) === h.name;
        if (seen.has(name) || !primary) continue;
        seen.add(name);
        placed.push({
          tenant: r.tenant,
          workload: name,
          address: r.address,
          ...(r.address6 !== undefined ? { address6: r.address6 } : {}),
          labels: rec?.labels ?? {},
          host: h.name,
        });
      }
    for (const h of hosts) {
      const strictHost = opts.strict === undefined || opts.strict.includes(h.name);
      // A NIC that did not answer its last call is caught up by its reconciliation (actual digests).
      if (!strictHost && !this.agents.nicReachable(h.name)) continue;
      const v = this.view(h.name);
      const tenants = new Set<string>([...v.grants.keys()]);
      for (const r of v.registrations.values()) tenants.add(r.tenant);
      for (const t of opts.actual?.get(h.name)?.keys() ?? []) tenants.add(t);
      for (const tenant of tenants) {
        const list = grantList(tenant, h.name, links, placed, (x) => this.view(x).identityKey);
        const digest = grantsDigest(list);
        const actual = opts.actual?.get(h.name)?.get(tenant);
        if (actual !== undefined ? actual === digest : (v.grants.get(tenant) ?? '') === digest) {
          if (list.length > 0) v.grants.set(tenant, digest);
          continue;
        }
        try {
          if (!(await this.policyApi(h))) break;
          await this.agents.of(h).nic.setGrants(tenant, list);
          if (list.length > 0) v.grants.set(tenant, digest);
          else v.grants.delete(tenant);
        } catch (err) {
          v.grants.delete(tenant);
          if (strictHost) throw err;
          this.log.warn(
            { host: h.name, tenant, err: messageOf(err) },
            'grants not put; the reconciler retries',
          );
        }
      }
    }
  }

  /** Reads the grant lists in force where grants matter and puts the ones that differ. */
  async reconcileGrants(
    hosts: readonly HostRecord[],
    heldBy: ReadonlyMap<string, readonly string[]>,
  ): Promise<void> {
    const links = tenantLinks((await this.service.fabric({ policies: true })).policies);
    if (links.size === 0 && hosts.every((h) => this.view(h.name).grants.size === 0)) return;
    const actual = new Map<string, Map<string, string>>();
    for (const h of hosts) {
      if (!(await this.policyApi(h).catch(() => false))) continue;
      const m = new Map<string, string>();
      const tenants = new Set([...(heldBy.get(h.name) ?? []), ...this.view(h.name).grants.keys()]);
      for (const t of tenants) {
        m.set(t, grantsDigest(await this.agents.of(h).nic.grants(t)));
      }
      actual.set(h.name, m);
    }
    await this.publishGrants({ actual, strict: [] });
  }

  /**
   * The NIC's signed off-host key of a tenant (cached while the NIC holds the tenant). Under
   * mTLS it carries the NIC's certificate chain, which the NIC renews at half life: past that
   * the key is fetched again, so that peers never get a chain about to expire.
   */
  async tenantKey(host: HostRecord, tenant: string): Promise<SignedTenantKey> {
    const v = this.view(host.name);
    let k = v.tenantKeys.get(tenant);
    if (k === undefined || !chainFresh(k.nicCertificate, Date.now())) {
      k = await this.agents.of(host).nic.tenantKey(tenant);
      v.tenantKeys.set(tenant, k);
    }
    return k;
  }

  /** The JSON of the peers last put to a host for a tenant (reconciliation compares with it). */
  published(host: string, tenant: string): string | undefined {
    return this.view(host).published.get(tenant);
  }

  // --- Policy -------------------------------------------------------------------------------

  /**
   * Makes the tenant's stored policy document the one in force on a NIC that serves the
   * policy API (nothing to do without a document: the NIC default-denies). With `verify`
   * the NIC's document is read first and only a different one is replaced.
   */
  async ensurePolicy(host: HostRecord, tenant: string, verify: boolean): Promise<void> {
    if (!(await this.policyApi(host))) return;
    const doc = await this.service.getPolicy(tenant, { leaderLease: true }).catch((err) => {
      if (codeOf(err) === 'TG_ERR_NOT_FOUND') return null;
      throw err;
    });
    if (doc === null) return;
    const v = this.view(host.name);
    if (v.policy.get(tenant) === doc.updatedAt) return;
    const nic = this.agents.of(host).nic;
    if (verify) {
      const there = await nic.getPolicy(tenant).catch(() => null);
      if (there !== null && sameJson(there, doc.document)) {
        v.policy.set(tenant, doc.updatedAt);
        return;
      }
    }
    await putPolicy(nic, tenant, doc.document);
    v.policy.set(tenant, doc.updatedAt);
  }

  // --- Tenant network: DNS server and services ----------------------------------------------

  /**
   * Puts the tenant's DNS server address and services on a NIC that serves the network API,
   * where they differ from what was last put (with `verify`, from what the NIC reports).
   */
  async ensureNetwork(host: HostRecord, tenant: string, verify: boolean): Promise<void> {
    const v = this.view(host.name);
    const nic = this.agents.of(host).nic;
    if (v.networkApi === null) v.networkApi = await nicHasNetworkApi(nic);
    if (!v.networkApi) return;
    const net = await this.service.tenantNetwork(tenant);
    const json = JSON.stringify(net);
    if (verify) {
      const there = await nic.getTenantNetwork(tenant);
      const now = JSON.stringify({
        ...(there.dns !== null ? { dns: there.dns } : {}),
        services: there.services.map((s) => ({
          name: s.name,
          address: s.address,
          ...(s.address6 !== undefined ? { address6: s.address6 } : {}),
          selector: s.selector,
          ports: s.ports,
        })),
      });
      if (now === json) {
        v.network.set(tenant, json);
        return;
      }
    } else if (v.network.get(tenant) === json) return;
    await nic.setTenantNetwork(tenant, net);
    v.network.set(tenant, json);
  }

  /** ensureNetwork on every host holding the tenant; hosts that fail are left to the reconciler. */
  async publishNetwork(tenant: string): Promise<string[]> {
    const done: string[] = [];
    for (const h of await this.sites()) {
      if (!this.holdsTenant(h.name, tenant)) continue;
      try {
        await this.ensureNetwork(h, tenant, false);
        done.push(h.name);
      } catch (err) {
        this.view(h.name).network.delete(tenant);
        this.log.warn(
          { host: h.name, tenant, err: messageOf(err) },
          'network not put; the reconciler retries',
        );
      }
    }
    return done;
  }

  // ---------------------------------------------------------------------------------------

  private async timed<T>(timings: Timings, name: string, fn: () => Promise<T>): Promise<T> {
    const t = performance.now();
    try {
      return await fn();
    } finally {
      timings[name] = round(performance.now() - t);
    }
  }

  private async rollback(undo: { step: string; fn: () => Promise<unknown> }[]): Promise<void> {
    for (const u of [...undo].reverse()) {
      try {
        await u.fn();
      } catch (err) {
        this.log.warn({ step: u.step, err: messageOf(err) }, 'undoing a step failed; the reconciler retries');
      }
    }
  }
}

/** The host a HostRecord or NIC site (nics.ts) is on. */
export function hostName(h: HostRecord): string {
  return (h as Partial<NicSite>).host ?? h.name;
}

export function putPolicy(nic: NicClient, tenant: string, document: unknown): Promise<unknown> {
  return nic.setPolicy(tenant, document);
}

/** Whether a NIC's certificate chain (leaf first) is before half its leaf's lifetime; true without one. */
export function chainFresh(chainPem: string | undefined, now: number): boolean {
  if (chainPem === undefined) return true;
  try {
    const leaf = new X509Certificate(chainPem);
    const from = Date.parse(leaf.validFrom);
    const to = Date.parse(leaf.validTo);
    return now < from + (to - from) / 2;
  } catch {
    return false;
  }
}

/** A comparable summary of a tenant's peers: each NIC's off-host key and workloads, sorted. */
export function peersDigest(
  peers: readonly {
    publicKey: string;
    endpoint: string;
    workloads: readonly { workload: string; address: string; address6?: string }[];
  }[],
): string {
  return peers
    .map(
      (p) =>
        `${p.publicKey}@${p.endpoint}:${p.workloads
          .map((w) => `${w.workload}=${w.address}${w.address6 !== undefined ? `,${w.address6}` : ''}`)
          .sort()
          .join(',')}`,
    )
    .sort()
    .join(';');
}

/** Deep equality of JSON values, object keys in any order. */
export function sameJson(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object')
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
}
