// A lab harness that plays the orchestrator's part until the orchestrator exists: it starts a
// NIC agent in each NIC namespace and a vSwitch daemon in each host namespace of a lab
// (processes tracked by pid, ended on stop), and spins workloads up and down by driving the
// NIC and vSwitch APIs in the order of DESIGN.md section 5:
//
//   spin-up:   the vSwitch instance is created in the workload's namespace (its key pair and
//              tg0), the workload is registered with the NIC (address + vSwitch public key ->
//              NIC public key, PSK, endpoint), the vSwitch is configured with that crypto, and
//              every NIC holding the tenant learns the others' signed tenant keys and workloads.
//   spin-down: the vSwitch instance ends, the NIC wipes the workload's keys (and the tenant's
//              off-host key with its last workload), and the other NICs forget its address.
//   after either, as api.ts asks: peers, then grants (with option `grants`: every NIC learns,
//              for each tenant it holds, all other tenants' placed workloads: routes only,
//              policy decides; tenants must then use distinct addresses), then
//              each touched tenant's policy to every NIC holding it. A NIC is default deny; the
//              harness pushes the policy set with setPolicy(), or by default (option
//              `defaultPolicy`) one that allows everything within the tenant, so labs that
//              only want traffic get it. Cross-tenant traffic always needs explicit policies.
//
// The harness keeps every process's log output in memory for tests (secret scans).
import type { ChildProcess } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { spawnInNode } from '../lab/run.js';
import type { LabState } from '../lab/state.js';
import { UAPI_SOCKET_DIR } from '../uapi/server.js';
import { TgError } from '../util/errors.js';
import { apiRequest } from '../util/http-json.js';
import { VSwitchClient } from '../vswitch/client.js';
import { NicClient, type ResponseRecorder } from './client.js';

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
const START_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 5000;
const MAX_LOG_BYTES = 16 * 1024 * 1024;

export interface AgentProcess {
  host: string;
  kind: 'nic' | 'vswitchd';
  socket: string;
  proc: ChildProcess;
  pid: number;
  exited: Promise<void>;
}

export interface WorkloadSpec {
  name: string;
  tenant: string;
  host: string;
  ns: string;
  address: string;
  labels?: Record<string, string>;
}

export interface PlacedWorkload extends WorkloadSpec {
  vswitchPublicKey: string;
  nicPublicKey: string;
  ifname: string;
}

export interface LabAgentsOptions {
  /** TENGUARD_LOG_LEVEL of the processes (default 'info'). */
  logLevel?: string;
  /** Echo the processes' logs to this process's stderr. */
  echoLogs?: boolean;
  /**
   * Policy of a tenant the harness was given none for (setPolicy): 'allow-within-tenant'
   * (default) or 'none' (the NIC's default deny).
   */
  defaultPolicy?: 'allow-within-tenant' | 'none';
  /** Route between tenants (grants, api.ts); without, another tenant's address has no route. */
  grants?: boolean;
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

/** The lab's workloads with their planned addresses (IPv4 overlay), optionally overridden. */
export function plannedWorkloads(
  lab: LabState,
  addressOf?: (w: LabState['workloads'][number]) => string,
): WorkloadSpec[] {
  return lab.workloads.map((w) => ({
    name: w.name,
    tenant: w.tenant,
    host: w.host,
    ns: w.ns,
    address: addressOf ? addressOf(w) : w.overlayV4,
  }));
}

export class LabAgents {
  readonly nics = new Map<string, AgentProcess & { client: NicClient }>();
  readonly vswitchds = new Map<string, AgentProcess & { client: VSwitchClient }>();
  readonly placed = new Map<string, PlacedWorkload>();
  /** Every API answer the harness received, as received (for secret scans). */
  readonly responses: string[] = [];
  /** Every tenant off-host public key (base64) a NIC published to the harness. */
  readonly offHostKeys = new Set<string>();
  /** Policies given to setPolicy(), pushed to every NIC that holds the tenant. */
  private readonly policies = new Map<string, unknown>();
  private readonly identityKeys = new Map<string, string>();
  private readonly logChunks: string[] = [];
  private logBytes = 0;
  private responseBytes = 0;
  private readonly record: ResponseRecorder = (method, path, r) => {
    if (this.responseBytes > MAX_LOG_BYTES) return;
    this.responseBytes += r.raw.length;
    this.responses.push(`${method} ${path} ${r.status} ${r.raw}`);
  };

  private constructor(
    readonly lab: LabState,
    private readonly opts: LabAgentsOptions,
  ) {}

  /** Starts a NIC agent and a vSwitch daemon per host. On failure, ends what it started. */
  static async start(lab: LabState, opts: LabAgentsOptions = {}): Promise<LabAgents> {
    const agents = new LabAgents(lab, opts);
    try {
      await Promise.all(lab.hosts.map((h) => agents.startNic(h.name)));
      await Promise.all(lab.hosts.map((h) => agents.startVswitchd(h.name)));
      return agents;
    } catch (err) {
      await agents.stop();
      throw err;
    }
  }

  nic(host: string): NicClient {
    const n = this.nics.get(host);
    if (n === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no NIC agent running for host '${host}'`);
    return n.client;
  }

  vswitch(host: string): VSwitchClient {
    const v = this.vswitchds.get(host);
    if (v === undefined)
      throw new TgError('TG_ERR_NOT_FOUND', `no vSwitch daemon running for host '${host}'`);
    return v.client;
  }

  /** Everything the agents wrote to stderr so far. */
  logs(): string {
    return this.logChunks.join('');
  }

  // ------------------------------------------------------------------------------------
  // Processes

  async startNic(host: string): Promise<AgentProcess> {
    const h = this.hostPlan(host);
    const args = [
      BIN,
      'nic',
      '--api-socket',
      h.nicApiSocket,
      '--host-address',
      h.pcie.nicV4,
      '--fabric-address',
      h.fabric.nicV4,
    ];
    const p = await this.spawnAgent(host, 'nic', h.nicNode, h.nicApiSocket, args);
    const entry = { ...p, client: new NicClient(h.nicApiSocket, this.record) };
    this.nics.set(host, entry);
    return entry;
  }

  async startVswitchd(host: string): Promise<AgentProcess> {
    const h = this.hostPlan(host);
    const socket = `${this.lab.runDir}/vswitchd-${h.name}.sock`;
    const args = [BIN, 'vswitchd', '--api-socket', socket, '--ifname-prefix', this.ifnamePrefix(h.index)];
    const p = await this.spawnAgent(host, 'vswitchd', h.name, socket, args);
    const entry = { ...p, client: new VSwitchClient(socket, this.record) };
    this.vswitchds.set(host, entry);
    return entry;
  }

  /** Ends a host's NIC agent by pid: SIGTERM (it wipes its keys), or SIGKILL to simulate a crash. */
  async stopNic(host: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const n = this.nics.get(host);
    if (n === undefined) return;
    this.nics.delete(host);
    this.identityKeys.delete(host);
    await endProcess(n, signal);
  }

  /** Ends a host's vSwitch daemon by pid (SIGKILL: a crash; its devices die with it in shared mode). */
  async stopVswitchd(host: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const v = this.vswitchds.get(host);
    if (v === undefined) return;
    this.vswitchds.delete(host);
    await endProcess(v, signal);
  }

  /** Ends every process this harness started and removes the sockets they leave behind. */
  async stop(): Promise<void> {
    const all = [...this.vswitchds.values(), ...this.nics.values()];
    this.vswitchds.clear();
    this.nics.clear();
    await Promise.all(all.map((p) => endProcess(p, 'SIGTERM')));
    for (const p of all) rmSync(p.socket, { force: true });
    this.placed.clear();
    const prefix = `${this.lab.prefix}-`;
    let names: string[] = [];
    try {
      names = readdirSync(UAPI_SOCKET_DIR);
    } catch {
      names = [];
    }
    for (const f of names)
      if (f.startsWith(prefix) && f.endsWith('.sock')) rmSync(`${UAPI_SOCKET_DIR}/${f}`, { force: true });
  }

  // ------------------------------------------------------------------------------------
  // Workloads (DESIGN.md section 5)

  /** Spins up workloads (in order), then exchanges tenant peers between the NICs. */
  async spinUp(specs: readonly WorkloadSpec[]): Promise<PlacedWorkload[]> {
    const out: PlacedWorkload[] = [];
    for (const s of specs) out.push(await this.placeOne(s));
    const tenants = new Set(specs.map((s) => s.tenant));
    for (const tenant of tenants) await this.syncTenant(tenant);
    await this.syncGrants();
    for (const tenant of tenants) await this.pushPolicy(tenant);
    return out;
  }

  /**
   * Sets a tenant's policy document on every NIC holding the tenant now, and on those that
   * get it later. A NIC refusing it throws (TG_ERR_POLICY_REJECTED); NICs already done keep it.
   */
  async setPolicy(tenant: string, doc: unknown): Promise<void> {
    this.policies.set(tenant, doc);
    await this.pushPolicy(tenant);
  }

  /** The hosts whose NIC holds `tenant` now. */
  hostsOf(tenant: string): string[] {
    return [...new Set([...this.placed.values()].filter((w) => w.tenant === tenant).map((w) => w.host))];
  }

  private async pushPolicy(tenant: string): Promise<void> {
    const doc =
      this.policies.get(tenant) ??
      ((this.opts.defaultPolicy ?? 'allow-within-tenant') === 'allow-within-tenant'
        ? allowWithinTenantPolicy(tenant)
        : undefined);
    if (doc === undefined) return;
    for (const h of this.hostsOf(tenant)) await this.nic(h).setPolicy(tenant, doc);
  }

  /** Gives every NIC, for each tenant it holds, every other tenant's placed workloads. */
  async syncGrants(): Promise<void> {
    if (!this.opts.grants) return;
    const placed = [...this.placed.values()];
    for (const h of new Set(placed.map((w) => w.host))) {
      for (const tenant of new Set(placed.filter((w) => w.host === h).map((w) => w.tenant))) {
        const workloads = [];
        for (const w of placed) {
          if (w.tenant === tenant) continue;
          workloads.push({
            tenant: w.tenant,
            workload: w.name,
            address: w.address,
            labels: w.labels ?? {},
            ...(w.host === h ? {} : { nicIdentityKey: await this.identityKey(w.host) }),
          });
        }
        await this.nic(h).setGrants(tenant, workloads);
      }
    }
  }

  private async identityKey(host: string): Promise<string> {
    let k = this.identityKeys.get(host);
    if (k === undefined) {
      k = (await this.nic(host).identity()).identityKey;
      this.identityKeys.set(host, k);
    }
    return k;
  }

  /** Spins a workload down: vSwitch first, then the NIC's keys, then the other NICs' routes. */
  async spinDown(name: string): Promise<void> {
    const w = this.placed.get(name);
    if (w === undefined) throw new TgError('TG_ERR_NOT_FOUND', `workload '${name}' is not placed`);
    await this.vswitch(w.host).delete(name);
    await this.nic(w.host).removeWorkload(name);
    this.placed.delete(name);
    await this.syncTenant(w.tenant);
    await this.syncGrants();
  }

  /**
   * Gives every NIC holding `tenant` the signed tenant keys and workload addresses of the
   * others (an empty list when it is alone).
   */
  async syncTenant(tenant: string): Promise<void> {
    const hosts = [
      ...new Set([...this.placed.values()].filter((w) => w.tenant === tenant).map((w) => w.host)),
    ];
    const keys = new Map<string, Awaited<ReturnType<NicClient['tenantKey']>>>();
    for (const h of hosts) {
      const k = await this.nic(h).tenantKey(tenant);
      keys.set(h, k);
      this.offHostKeys.add(k.publicKey);
    }
    for (const h of hosts) {
      const peers = hosts
        .filter((o) => o !== h)
        .map((o) => {
          const k = keys.get(o)!;
          return {
            nicIdentityKey: k.nicIdentityKey,
            endpoint: k.endpoint,
            publicKey: k.publicKey,
            signature: k.signature,
            workloads: [...this.placed.values()]
              .filter((w) => w.tenant === tenant && w.host === o)
              .map((w) => ({ workload: w.name, address: w.address, labels: w.labels ?? {} })),
          };
        });
      await this.nic(h).setTenantPeers(tenant, peers);
    }
  }

  private async placeOne(s: WorkloadSpec): Promise<PlacedWorkload> {
    const vs = this.vswitch(s.host);
    const created = await vs.create({ workload: s.name, netns: s.ns, address: s.address });
    try {
      const crypto = await this.nic(s.host).registerWorkload({
        tenant: s.tenant,
        workload: s.name,
        address: s.address,
        vswitchPublicKey: created.publicKey,
        labels: s.labels,
      });
      await vs.configure(s.name, {
        nicPublicKey: crypto.nicPublicKey,
        psk: crypto.psk,
        nicEndpoint: crypto.nicEndpoint,
      });
      const placed: PlacedWorkload = {
        ...s,
        vswitchPublicKey: created.publicKey,
        nicPublicKey: crypto.nicPublicKey,
        ifname: created.ifname,
      };
      this.placed.set(s.name, placed);
      return placed;
    } catch (err) {
      await vs.delete(s.name).catch(() => undefined);
      await this.nic(s.host)
        .removeWorkload(s.name)
        .catch(() => undefined);
      throw err;
    }
  }

  // ------------------------------------------------------------------------------------

  private hostPlan(host: string): LabState['hosts'][number] {
    const h = this.lab.hosts.find((x) => x.name === host);
    if (h === undefined)
      throw new TgError('TG_ERR_NOT_FOUND', `lab '${this.lab.prefix}' has no host '${host}'`);
    return h;
  }

  /** `<prefix>-<host index>v`: the 'v' keeps host 1's tenth device apart from host 10's first. */
  private ifnamePrefix(hostIndex: number): string {
    return `${this.lab.prefix}-${hostIndex}v`;
  }

  private async spawnAgent(
    host: string,
    kind: 'nic' | 'vswitchd',
    node: string,
    socket: string,
    args: string[],
  ): Promise<AgentProcess> {
    const proc = spawnInNode(this.lab, node, process.execPath, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, TENGUARD_LOG_LEVEL: this.opts.logLevel ?? 'info' },
    });
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.stderr?.on('data', (d: Buffer) => {
      const text = d.toString('utf8');
      if (this.logBytes < MAX_LOG_BYTES) {
        this.logChunks.push(text);
        this.logBytes += text.length;
      }
      if (this.opts.echoLogs) process.stderr.write(`[${kind} ${host}] ${text}`);
    });
    const pid = proc.pid;
    if (pid === undefined)
      throw new TgError('TG_ERR_COMMAND_FAILED', `could not start the ${kind} of ${host}`);
    const p: AgentProcess = { host, kind, socket, proc, pid, exited };
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null)
        throw new TgError(
          'TG_ERR_COMMAND_FAILED',
          `the ${kind} of ${host} exited (${proc.exitCode ?? proc.signalCode}): ${this.logs().trim().split('\n').slice(-3).join(' | ')}`,
        );
      const ok = await apiRequest(socket, 'GET', '/v1/health', undefined, { timeoutMs: 1000 }).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) return p;
      if (Date.now() > deadline) {
        await endProcess(p, 'SIGKILL');
        throw new TgError(
          'TG_ERR_COMMAND_FAILED',
          `the ${kind} of ${host} did not answer within ${START_TIMEOUT_MS} ms`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Ends one process we started, by its pid: `signal`, then SIGKILL after a grace period. */
async function endProcess(p: AgentProcess, signal: NodeJS.Signals): Promise<void> {
  const alive = (): boolean => p.proc.exitCode === null && p.proc.signalCode === null;
  if (!alive()) return;
  try {
    process.kill(p.pid, signal);
  } catch {
    return;
  }
  const t = setTimeout(() => {
    if (alive()) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }, STOP_GRACE_MS);
  await p.exited;
  clearTimeout(t);
}
