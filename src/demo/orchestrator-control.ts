// The demo's control plane through the orchestrator: `tenguard orchestrator` runs as a child
// process of the demo (root namespace, REST API on a Unix socket and its SQLite store in the
// lab's run directory, ended by pid), the lab's hosts are registered with it (NIC and vSwitch
// API sockets, namespace prefix `<lab>-<host>-o-` so the lab's teardown owns every namespace
// it creates and its reconciler never takes a node namespace such as `<lab>-<host>-nic` for
// an unwanted workload namespace), and from then on tenants, workloads, migrations, policies and key inventories go
// through OrchestratorClient only. The orchestrator drives the NICs and vSwitches itself.
// With `store: 'etcd'` it is a 3-member etcd cluster (loopback ports, data in the lab's run
// directory) and 2 orchestrator replicas on it; the demo talks to the leading one, and
// takeover() kills that one (SIGKILL) and shows the other take over.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { JOIN_TOKEN_ENV } from '../identity/service-mtls.js';
import { serviceId } from '../identity/spiffe.js';
import type { LabAgents } from '../lab/agents.js';
import { EtcdCluster } from '../lab/etcd.js';
import { hostNics } from '../lab/plan.js';
import type { LabState } from '../lab/state.js';
import type { KeyMetadata } from '../nic/keystore.js';
import { OrchestratorClient } from '../orchestrator/client.js';
import type { WorkloadRecord } from '../orchestrator/model.js';
import type { PolicyDocument } from '../policy/model.js';
import { TgError } from '../util/errors.js';
import { type ApiEndpoint, apiRequest } from '../util/http-json.js';
import type { DemoControl, DemoTakeover, DemoWorkload } from './control.js';

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
const START_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 5000;
const MAX_LOG_CHARS = 1024 * 1024;

function toDemo(w: WorkloadRecord): DemoWorkload {
  return {
    name: w.name,
    tenant: w.tenant,
    host: w.host,
    address: w.address,
    ...(w.address6 !== undefined ? { address6: w.address6 } : {}),
    netns: w.netns,
    timings: w.timings,
    ...(w.nic !== undefined ? { nic: w.nic } : {}),
  };
}

interface ReplicaProcess {
  proc: ChildProcess;
  pid: number;
  socket: string;
  endpoint: ApiEndpoint;
  client: OrchestratorClient;
  log: string;
  exited: Promise<void>;
}

export interface OrchestratorControlOptions {
  /** 'sqlite' (default): one orchestrator; 'etcd': 3 etcd members and 2 replicas. */
  store?: 'sqlite' | 'etcd';
}

const alive = (p: ChildProcess): boolean => p.exitCode === null && p.signalCode === null;

export class OrchestratorControl implements DemoControl {
  private active = 0;

  private constructor(
    private readonly replicas: ReplicaProcess[],
    readonly dataDir: string,
    private readonly hosts: string[],
    private readonly mtls: string | null,
    private readonly cluster: EtcdCluster | null,
  ) {}

  /** The client of the replica the demo talks to (the leader). */
  get client(): OrchestratorClient {
    return this.replicas[this.active].client;
  }

  get socket(): string {
    return this.replicas[this.active].socket;
  }

  get pid(): number {
    return this.replicas[this.active].pid;
  }

  /**
   * Starts the orchestrator (or, on etcd, the cluster and the replicas) for a lab and
   * registers the lab's hosts with it; on any failure it ends what it started.
   */
  static async start(
    lab: LabState,
    agents: LabAgents,
    opts: OrchestratorControlOptions = {},
  ): Promise<OrchestratorControl> {
    const dataDir = `${lab.runDir}/orchestrator`;
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const etcd = opts.store === 'etcd';
    const cluster = etcd ? await EtcdCluster.start(`${lab.prefix}-store`, 3, { baseDir: lab.runDir }) : null;
    const replicas: ReplicaProcess[] = [];
    const ca = agents.ca;
    const id = ca === undefined ? null : serviceId(ca.trustDomain, 'orchestrator').uri;
    const c = new OrchestratorControl(
      replicas,
      dataDir,
      lab.hosts.map((h) => h.name),
      id,
      cluster,
    );
    try {
      for (let i = 0; i < (etcd ? 2 : 1); i++) {
        const socket = `${lab.runDir}/orchestrator${i === 0 ? '' : `-${i + 1}`}.sock`;
        const store =
          cluster === null ? ['--data-dir', dataDir] : ['--store', `etcd:${cluster.endpoints.join(',')}`];
        // The web console on a free loopback port (its address comes with each login link).
        const args = [BIN, 'orchestrator', ...store, '--api-socket', socket, '--console', '127.0.0.1:0'];
        const env: NodeJS.ProcessEnv = {
          ...process.env,
          TENGUARD_LOG_LEVEL: process.env.TENGUARD_LOG_LEVEL ?? 'warn',
        };
        let endpoint: ApiEndpoint = socket;
        if (ca === undefined || id === null) args.push('--insecure');
        else {
          args.push('--ca-socket', ca.socket, '--ca-bundle', ca.bundleFile, '--trust-domain', ca.trustDomain);
          env[JOIN_TOKEN_ENV] = ca.joinToken(id);
          endpoint = agents.endpoint(socket, id);
        }
        const proc = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
        if (proc.pid === undefined)
          throw new TgError('TG_ERR_COMMAND_FAILED', 'could not start `tenguard orchestrator`');
        const r: ReplicaProcess = {
          proc,
          pid: proc.pid,
          socket,
          endpoint,
          client: new OrchestratorClient(endpoint, 60_000),
          log: '',
          exited: new Promise<void>((res) => {
            if (!alive(proc)) res();
            else proc.once('exit', () => res());
          }),
        };
        proc.stderr?.on('data', (d: Buffer) => {
          if (r.log.length < MAX_LOG_CHARS) r.log += d.toString('utf8');
        });
        replicas.push(r);
        await c.waitHealthy(r);
      }
      c.active = await c.leaderIndex(START_TIMEOUT_MS);
      for (const h of lab.hosts) {
        const vs = agents.vswitchds.get(h.name);
        if (vs === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no vSwitch daemon for host '${h.name}'`);
        // A lab built with --nics N > 1: the host registers every NIC.
        const nics = hostNics(h).map((n) => ({
          name: n.name,
          api: n.apiSocket,
          fabricAddress: n.fabric.nicV4,
        }));
        await c.client.registerHost({
          name: h.name,
          nicApi: h.nicApiSocket,
          vswitchApi: vs.socket,
          netnsPrefix: `${lab.prefix}-${h.name}-o-`,
          ...(nics.length > 1 ? { nics } : {}),
        });
      }
      return c;
    } catch (err) {
      await c.close();
      throw err;
    }
  }

  describe(): string {
    const api = this.mtls === null ? 'plain HTTP (--insecure)' : `mTLS as ${this.mtls}`;
    const hosts = `hosts ${this.hosts.join(', ')} registered with their NIC and vSwitch API sockets`;
    if (this.cluster === null)
      return `orchestrator (tenguard orchestrator, pid ${this.pid}, REST API on ${this.socket} over ${api}, SQLite store in ${this.dataDir}); ${hosts}`;
    const rs = this.replicas.map(
      (r, i) => `pid ${r.pid} on ${r.socket}${i === this.active ? ' (leader)' : ''}`,
    );
    return `orchestrator: ${this.replicas.length} replicas of tenguard orchestrator (${rs.join(', ')}; REST APIs over ${api}) on an etcd store of ${this.cluster.members.length} members (${this.cluster.endpoints.join(', ')}); the leader drives the agents, the other forwards writes to it; ${hosts}`;
  }

  /** The replica the demo talks to first (it drives the agents), then the others, then etcd's. */
  pids(): number[] {
    const rs = [this.replicas[this.active], ...this.replicas.filter((_, i) => i !== this.active)];
    const etcd = (this.cluster?.members ?? []).map((m) => m.proc?.pid).filter((p) => p !== undefined);
    return [...rs.map((r) => r.pid), ...etcd];
  }

  /**
   * Kills the leading replica (SIGKILL) and waits for another to lead; from then on the demo
   * talks to the new leader. Undefined on SQLite (one orchestrator).
   */
  get takeover(): (() => Promise<DemoTakeover>) | undefined {
    if (this.cluster === null) return undefined;
    return async () => {
      const before = (await this.client.listWorkloads()).map((w) => `${w.name}@${w.host}`).sort();
      const old = this.replicas[this.active];
      const t0 = Date.now();
      old.proc.kill('SIGKILL');
      await old.exited;
      const others = this.replicas.filter((r) => r !== old && alive(r.proc));
      this.active = this.replicas.indexOf(others[0]);
      const next = await this.leaderIndex(10_000);
      const ms = Date.now() - t0;
      this.active = next;
      const after = (await this.client.listWorkloads()).map((w) => `${w.name}@${w.host}`).sort();
      return {
        killedPid: old.pid,
        leaderPid: this.pid,
        takeoverMs: ms,
        workloadsBefore: before,
        workloadsAfter: after,
      };
    };
  }

  async createTenant(name: string, pool: string): Promise<void> {
    await this.client.createTenant({ name, pool });
  }

  async createWorkload(req: {
    name: string;
    tenant: string;
    host: string;
    labels?: Record<string, string>;
  }): Promise<DemoWorkload> {
    return toDemo(await this.client.createWorkload(req));
  }

  async deleteWorkload(name: string): Promise<void> {
    await this.client.deleteWorkload(name);
  }

  async migrate(name: string, toHost: string): Promise<DemoWorkload> {
    return toDemo(await this.client.migrateWorkload(name, toHost));
  }

  async keys(host: string): Promise<(KeyMetadata & { nic?: string })[]> {
    return (await this.client.keys(host)).keys as unknown as (KeyMetadata & { nic?: string })[];
  }

  async showWorkload(name: string): Promise<DemoWorkload> {
    return toDemo(await this.client.showWorkload(name));
  }

  async hostNics(host: string): Promise<{ name: string; state: string }[]> {
    const h = await this.client.showHost(host);
    return (h.nics ?? [{ name: 'nic1', state: 'ok' }]).map((n) => ({ name: n.name, state: n.state }));
  }

  async createService(req: {
    tenant: string;
    name: string;
    selector: Record<string, string>;
    port: string;
  }): Promise<{ name: string; tenant: string; address: string }> {
    const s = await this.client.createService({
      tenant: req.tenant,
      name: req.name,
      selector: req.selector,
      ports: [req.port],
    });
    return { name: s.name, tenant: s.tenant, address: s.address };
  }

  async setPolicy(tenant: string, doc: PolicyDocument): Promise<boolean> {
    await this.client.setPolicy(tenant, doc);
    return true;
  }

  consoleLogin(): Promise<{ url: string; expiresAt: string }> {
    return this.client.consoleLogin();
  }

  async flows(): Promise<Record<string, unknown>[] | null> {
    return (await this.client.flows({ limit: 1000 })).flows;
  }

  /** The orchestrators' log output so far (stderr). */
  logs(): string {
    return this.replicas.map((r) => r.log).join('');
  }

  async close(): Promise<void> {
    for (const r of this.replicas) {
      if (alive(r.proc)) {
        try {
          process.kill(r.pid, 'SIGTERM');
        } catch {
          // already gone
        }
        const t = setTimeout(() => {
          if (alive(r.proc)) {
            try {
              process.kill(r.pid, 'SIGKILL');
            } catch {
              // gone
            }
          }
        }, STOP_GRACE_MS);
        await r.exited;
        clearTimeout(t);
      }
      rmSync(r.socket, { force: true });
    }
    await this.cluster?.stop();
  }

  /** The index of the leading replica (the only one with SQLite), waiting up to `ms`. */
  private async leaderIndex(ms: number): Promise<number> {
    if (this.cluster === null) return 0;
    const deadline = Date.now() + ms;
    for (;;) {
      for (const [i, r] of this.replicas.entries()) {
        if (!alive(r.proc)) continue;
        const h = await apiRequest(r.endpoint, 'GET', '/v1/health', undefined, { timeoutMs: 2000 }).catch(
          () => null,
        );
        if ((h?.body as { replica?: { leader?: boolean } } | undefined)?.replica?.leader === true) return i;
      }
      if (Date.now() > deadline)
        throw new TgError('TG_ERR_COMMAND_FAILED', `no orchestrator replica leads after ${ms} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private async waitHealthy(r: ReplicaProcess): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (!alive(r.proc))
        throw new TgError(
          'TG_ERR_COMMAND_FAILED',
          `tenguard orchestrator exited (${r.proc.exitCode ?? r.proc.signalCode}): ${r.log.trim().split('\n').slice(-3).join(' | ')}`,
        );
      const ok = await r.client.health().then(
        () => true,
        () => false,
      );
      if (ok) return;
      if (Date.now() > deadline)
        throw new TgError(
          'TG_ERR_COMMAND_FAILED',
          `tenguard orchestrator did not answer within ${START_TIMEOUT_MS} ms`,
        );
      await new Promise((res) => setTimeout(res, 100));
    }
  }
}

export async function startOrchestratorControl(
  lab: LabState,
  agents: LabAgents,
  opts: OrchestratorControlOptions = {},
): Promise<DemoControl> {
  return OrchestratorControl.start(lab, agents, opts);
}
