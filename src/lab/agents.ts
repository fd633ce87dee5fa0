// The lab's agent processes: a NIC agent in each NIC namespace and a vSwitch daemon in each
// host namespace of a lab, started as `tenguard nic` and `tenguard vswitchd` (tracked by pid,
// ended on stop, their sockets removed), each with a typed client of its API once it answers
// its health route. It launches and ends processes only: tenants, workloads, peers, grants and
// policies are the orchestrator's (src/lab/control.ts runs one for a lab).
//
// Every process's log output is kept in memory, and every answer its clients receive is
// recorded, for tests (secret scans).
//
// The vSwitch daemons are supervised, as systemd's Restart= does on a real host
// (deploy/systemd): one that exits without being stopped here (a crash, SIGKILL) is started
// again at once with the same arguments and environment (after a second failure within
// RESTART_WINDOW_MS with a growing delay, up to RESTART_MAX_DELAY_MS). It comes back with no
// devices; the orchestrator's reconciliation re-adopts its workloads (new instances and keys,
// registered and configured as in a spin-up).
import type { ChildProcess } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DATA_PLANE_NODE_ARGS } from '../device/runtime.js';
import type { Identity } from '../identity/identity.js';
import { JOIN_TOKEN_ENV } from '../identity/service-mtls.js';
import { nicId, serviceId } from '../identity/spiffe.js';
import { NicClient, type ResponseRecorder } from '../nic/client.js';
import { UAPI_SOCKET_DIR } from '../uapi/server.js';
import { TgError } from '../util/errors.js';
import type { ApiEndpoint } from '../util/http-json.js';
import { VSwitchClient } from '../vswitch/client.js';
import type { LabCa } from './ca.js';
import { hostNics } from './plan.js';
import { spawnInNode } from './run.js';
import type { LabState } from './state.js';

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
const START_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 5000;
const MAX_LOG_BYTES = 16 * 1024 * 1024;
/** A daemon that dies again within this long after a restart is restarted after a delay. */
const RESTART_WINDOW_MS = 10_000;
const RESTART_FIRST_DELAY_MS = 250;
const RESTART_MAX_DELAY_MS = 5000;

export interface AgentProcess {
  host: string;
  kind: 'nic' | 'vswitchd';
  socket: string;
  proc: ChildProcess;
  pid: number;
  exited: Promise<void>;
  /** Date.now() when it was spawned. */
  startedAt: number;
  /** The environment it was started with (a supervised restart reuses it). */
  env: NodeJS.ProcessEnv;
}

export interface LabAgentsOptions {
  /** TENGUARD_LOG_LEVEL of the processes (default 'info'). */
  logLevel?: string;
  /** Echo the processes' logs to this process's stderr. */
  echoLogs?: boolean;
  /**
   * The lab's CA: every agent enrols with it and serves its API over mTLS, and the clients
   * here call them as the operator. Without it the agents run with --insecure (plain HTTP).
   */
  ca?: LabCa;
  /** Node options for the NIC agents' processes (e.g. --cpu-prof, --cpu-prof-dir=DIR). */
  nicNodeArgs?: string[];
  /** Restart a vSwitch daemon that exits unasked (default true). */
  superviseVswitchd?: boolean;
  /**
   * The family of the fabric's (outer) addresses the NICs reach each other at: 4 (default,
   * 198.18.0.0/24) or 6 (the lab's ULA fabric fd00:198:18::/64; plan.ts).
   */
  fabricFamily?: 4 | 6;
}

export class LabAgents {
  readonly nics = new Map<string, AgentProcess & { client: NicClient }>();
  readonly vswitchds = new Map<string, AgentProcess & { client: VSwitchClient }>();
  /** Every API answer received by these clients or `record`, as received (for secret scans). */
  readonly responses: string[] = [];
  /** Supervised restarts of each host's vSwitch daemon. */
  readonly vswitchdRestarts = new Map<string, number>();
  private readonly restartDelay = new Map<string, number>();
  private stopping = false;
  private readonly logChunks: string[] = [];
  private logBytes = 0;
  private responseBytes = 0;
  /** Records one API answer (hand it to other clients of the agents' APIs). */
  readonly record: ResponseRecorder = (method, path, r) => {
    if (this.responseBytes > MAX_LOG_BYTES) return;
    this.responseBytes += r.raw.length;
    this.responses.push(`${method} ${path} ${r.status} ${r.raw}`);
  };

  private constructor(
    readonly lab: LabState,
    private readonly opts: LabAgentsOptions,
    /** The operator's identity under mTLS (the clients here present it). */
    readonly operator: Identity | null,
  ) {}

  /** Starts a NIC agent and a vSwitch daemon per host. On failure, ends what it started. */
  static async start(lab: LabState, opts: LabAgentsOptions = {}): Promise<LabAgents> {
    const operator = opts.ca === undefined ? null : await opts.ca.issue(opts.ca.operatorId);
    const agents = new LabAgents(lab, opts, operator);
    try {
      await Promise.all(lab.hosts.flatMap((h) => hostNics(h).map((n) => agents.startNic(h.name, n.name))));
      await Promise.all(lab.hosts.map((h) => agents.startVswitchd(h.name)));
      return agents;
    } catch (err) {
      await agents.stop();
      throw err;
    }
  }

  /** The client of a host's NIC agent (`nic`: its first, or `nicK` of a lab built with --nics). */
  nic(host: string, nic = 'nic1'): NicClient {
    const n = this.nics.get(nicKey(host, nic));
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

  /**
   * Starts the agent of one NIC of a host (`nic1` by default). It is kept in `nics` under
   * the host's name for NIC 1 and under `HOST/nicK` for the others (nicKey()).
   */
  async startNic(host: string, nic = 'nic1'): Promise<AgentProcess> {
    const h = this.hostPlan(host);
    const n = hostNics(h).find((x) => x.name === nic);
    if (n === undefined) throw new TgError('TG_ERR_NOT_FOUND', `host '${host}' has no NIC '${nic}'`);
    const args = [
      ...DATA_PLANE_NODE_ARGS,
      ...(this.opts.nicNodeArgs ?? []),
      BIN,
      'nic',
      '--api-socket',
      n.apiSocket,
      '--host-address',
      n.pcie.nicV4,
      '--fabric-address',
      this.opts.fabricFamily === 6 ? n.fabric.nicV6 : n.fabric.nicV4,
      ...this.linkMtuArgs(),
    ];
    const id = this.opts.ca === undefined ? '' : nicId(this.opts.ca.trustDomain, host).uri;
    const endpoint = this.endpoint(n.apiSocket, id);
    const key = nicKey(host, nic);
    const p = await this.spawnAgent(key, 'nic', n.node, endpoint, n.apiSocket, args, id, undefined, host);
    const entry = { ...p, client: new NicClient(endpoint, this.record) };
    this.nics.set(key, entry);
    return entry;
  }

  async startVswitchd(host: string, env?: NodeJS.ProcessEnv): Promise<AgentProcess> {
    const h = this.hostPlan(host);
    const socket = this.vswitchSocket(host);
    const args = [
      ...DATA_PLANE_NODE_ARGS,
      BIN,
      'vswitchd',
      '--api-socket',
      socket,
      '--ifname-prefix',
      this.ifnamePrefix(h.index),
      ...this.linkMtuArgs(),
    ];
    const id = this.opts.ca === undefined ? '' : serviceId(this.opts.ca.trustDomain, `vswitchd-${host}`).uri;
    const endpoint = this.endpoint(socket, id);
    const p = await this.spawnAgent(host, 'vswitchd', h.name, endpoint, socket, args, id, env);
    const entry = { ...p, client: new VSwitchClient(endpoint, this.record) };
    this.vswitchds.set(host, entry);
    if (this.opts.superviseVswitchd !== false) void this.supervise(entry);
    return entry;
  }

  /** Starts the daemon again when it exits while still this host's (not stopped here). */
  private async supervise(p: AgentProcess): Promise<void> {
    await p.exited;
    const current = (): boolean => !this.stopping && this.vswitchds.get(p.host) === p;
    if (!current()) return;
    const quick = Date.now() - p.startedAt < RESTART_WINDOW_MS && this.vswitchdRestarts.has(p.host);
    const delay = quick
      ? Math.min(
          RESTART_MAX_DELAY_MS,
          Math.max(RESTART_FIRST_DELAY_MS, 2 * (this.restartDelay.get(p.host) ?? 0)),
        )
      : 0;
    this.restartDelay.set(p.host, delay);
    this.note(
      `supervisor: the vswitchd of ${p.host} (pid ${p.pid}) exited (${p.proc.exitCode ?? p.proc.signalCode}); restarting in ${delay} ms\n`,
    );
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    if (!current()) return;
    try {
      const next = await this.startVswitchd(p.host, p.env);
      this.vswitchdRestarts.set(p.host, (this.vswitchdRestarts.get(p.host) ?? 0) + 1);
      this.note(`supervisor: the vswitchd of ${p.host} runs again (pid ${next.pid})\n`);
    } catch (err) {
      this.note(`supervisor: restarting the vswitchd of ${p.host} failed: ${(err as Error).message}\n`);
      // Try again later (the entry stays the dead one, so stop() and current() still see it).
      if (current()) {
        await new Promise((r) => setTimeout(r, RESTART_MAX_DELAY_MS));
        if (current()) void this.supervise(p);
      }
    }
  }

  private note(text: string): void {
    if (this.logBytes < MAX_LOG_BYTES) {
      this.logChunks.push(text);
      this.logBytes += text.length;
    }
    if (this.opts.echoLogs) process.stderr.write(`[lab] ${text}`);
  }

  /** Ends a host's vSwitch daemon by pid (SIGKILL: a crash; in shared mode its devices die with it). */
  async stopVswitchd(host: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const v = this.vswitchds.get(host);
    if (v === undefined) return;
    this.vswitchds.delete(host);
    await endProcess(v, signal);
  }

  /** Ends a host's NIC agent by pid: SIGTERM (it wipes its keys), or SIGKILL to simulate a crash. */
  async stopNic(host: string, signal: NodeJS.Signals = 'SIGTERM', nic = 'nic1'): Promise<void> {
    const key = nicKey(host, nic);
    const n = this.nics.get(key);
    if (n === undefined) return;
    this.nics.delete(key);
    await endProcess(n, signal);
  }

  /**
   * Where an agent's API is for the operator: the socket, over mTLS when the lab has a CA
   * (`identity` null: no client certificate, to show it refused).
   */
  endpoint(socket: string, serverId: string, identity: Identity | null = this.operator): ApiEndpoint {
    const ca = this.opts.ca;
    return ca === undefined ? socket : ca.endpoint(socket, identity, serverId);
  }

  /** The lab's CA when the agents serve their APIs over mTLS. */
  get ca(): LabCa | undefined {
    return this.opts.ca;
  }

  /** The SPIFFE ID a host's NIC agent proves ('' without mTLS). */
  nicId(host: string): string {
    return this.opts.ca === undefined ? '' : nicId(this.opts.ca.trustDomain, host).uri;
  }

  /** The API socket of a host's vSwitch daemon. */
  vswitchSocket(host: string): string {
    return `${this.lab.runDir}/vswitchd-${this.hostPlan(host).name}.sock`;
  }

  /** Ends every process started here and removes the sockets they leave behind. */
  async stop(): Promise<void> {
    this.stopping = true;
    const all = [...this.vswitchds.values(), ...this.nics.values()];
    this.vswitchds.clear();
    this.nics.clear();
    await Promise.all(all.map((p) => endProcess(p, 'SIGTERM')));
    for (const p of all) rmSync(p.socket, { force: true });
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

  private hostPlan(host: string): LabState['hosts'][number] {
    const h = this.lab.hosts.find((x) => x.name === host);
    if (h === undefined)
      throw new TgError('TG_ERR_NOT_FOUND', `lab '${this.lab.prefix}' has no host '${host}'`);
    return h;
  }

  /** Every link of the lab has the lab's MTU: NICs and vSwitches derive what they need from it. */
  private linkMtuArgs(): string[] {
    return ['--host-mtu', String(this.lab.mtu), '--fabric-mtu', String(this.lab.mtu)];
  }

  /** `<prefix>-<host index>v`: the 'v' keeps host 1's tenth device apart from host 10's first. */
  private ifnamePrefix(hostIndex: number): string {
    return `${this.lab.prefix}-${hostIndex}v`;
  }

  private async spawnAgent(
    host: string,
    kind: 'nic' | 'vswitchd',
    node: string,
    endpoint: ApiEndpoint,
    socket: string,
    args: string[],
    spiffeId: string,
    baseEnv?: NodeJS.ProcessEnv,
    /** The host it serves when `host` is a NIC's key (nicKey()). */
    hostName = host,
  ): Promise<AgentProcess> {
    const env: NodeJS.ProcessEnv = {
      ...(baseEnv ?? process.env),
      TENGUARD_LOG_LEVEL: this.opts.logLevel ?? 'info',
    };
    const ca = this.opts.ca;
    if (ca === undefined) args.push('--insecure');
    else {
      args.push(
        '--ca-socket',
        ca.socket,
        '--ca-bundle',
        ca.bundleFile,
        '--trust-domain',
        ca.trustDomain,
        '--host-name',
        hostName,
      );
      env[JOIN_TOKEN_ENV] = ca.joinToken(spiffeId);
    }
    const proc = spawnInNode(this.lab, node, process.execPath, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      env,
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
    const p: AgentProcess = {
      host,
      kind,
      socket,
      proc,
      pid,
      exited,
      startedAt: Date.now(),
      env: baseEnv ?? { ...process.env },
    };
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null)
        throw new TgError(
          'TG_ERR_COMMAND_FAILED',
          `the ${kind} of ${host} exited (${proc.exitCode ?? proc.signalCode}): ${this.logs().trim().split('\n').slice(-3).join(' | ')}`,
        );
      const client =
        kind === 'nic'
          ? new NicClient(endpoint, undefined, 1000)
          : new VSwitchClient(endpoint, undefined, 1000);
      const ok = await client.health().then(
        () => true,
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

/** Where LabAgents keeps a NIC's agent: the host's name for its first NIC, `HOST/NIC` for the others. */
export function nicKey(host: string, nic: string): string {
  return nic === 'nic1' ? host : `${host}/${nic}`;
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
