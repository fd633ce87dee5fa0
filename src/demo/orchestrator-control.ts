// The demo's control plane through the orchestrator: `tenguard orchestrator` runs as a child
// process of the demo (root namespace, REST API on a Unix socket and its SQLite store in the
// lab's run directory, ended by pid), the lab's hosts are registered with it (NIC and vSwitch
// API sockets, namespace prefix `<lab>-<host>-o-` so the lab's teardown owns every namespace
// it creates and its reconciler never takes a node namespace such as `<lab>-<host>-nic` for
// an unwanted workload namespace), and from then on tenants, workloads, migrations, policies and key inventories go
// through OrchestratorClient only. The orchestrator drives the NICs and vSwitches itself.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { JOIN_TOKEN_ENV } from '../identity/service-mtls.js';
import { serviceId } from '../identity/spiffe.js';
import type { LabAgents } from '../lab/agents.js';
import type { LabState } from '../lab/state.js';
import type { KeyMetadata } from '../nic/keystore.js';
import { OrchestratorClient } from '../orchestrator/client.js';
import type { WorkloadRecord } from '../orchestrator/model.js';
import type { PolicyDocument } from '../policy/model.js';
import { TgError } from '../util/errors.js';
import type { ApiEndpoint } from '../util/http-json.js';
import type { DemoControl, DemoWorkload } from './control.js';

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
  };
}

export class OrchestratorControl implements DemoControl {
  readonly client: OrchestratorClient;
  private log = '';
  private readonly exited: Promise<void>;

  private constructor(
    private readonly proc: ChildProcess,
    readonly pid: number,
    readonly socket: string,
    readonly dataDir: string,
    private readonly hosts: string[],
    endpoint: ApiEndpoint,
    private readonly mtls: string | null,
  ) {
    this.client = new OrchestratorClient(endpoint, 60_000);
    this.exited = new Promise<void>((r) => {
      if (proc.exitCode !== null || proc.signalCode !== null) r();
      else proc.once('exit', () => r());
    });
    proc.stderr?.on('data', (d: Buffer) => {
      if (this.log.length < MAX_LOG_CHARS) this.log += d.toString('utf8');
    });
  }

  /**
   * Starts the orchestrator for a lab and registers the lab's hosts with it; on any failure
   * it ends what it started.
   */
  static async start(lab: LabState, agents: LabAgents): Promise<OrchestratorControl> {
    const dataDir = `${lab.runDir}/orchestrator`;
    const socket = `${lab.runDir}/orchestrator.sock`;
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    // The web console on a free loopback port (its address comes with each login link).
    const args = [
      BIN,
      'orchestrator',
      '--data-dir',
      dataDir,
      '--api-socket',
      socket,
      '--console',
      '127.0.0.1:0',
    ];
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      TENGUARD_LOG_LEVEL: process.env.TENGUARD_LOG_LEVEL ?? 'warn',
    };
    const ca = agents.ca;
    let endpoint: ApiEndpoint = socket;
    let id: string | null = null;
    if (ca === undefined) args.push('--insecure');
    else {
      id = serviceId(ca.trustDomain, 'orchestrator').uri;
      args.push('--ca-socket', ca.socket, '--ca-bundle', ca.bundleFile, '--trust-domain', ca.trustDomain);
      env[JOIN_TOKEN_ENV] = ca.joinToken(id);
      endpoint = agents.endpoint(socket, id);
    }
    const proc = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    if (proc.pid === undefined)
      throw new TgError('TG_ERR_COMMAND_FAILED', 'could not start `tenguard orchestrator`');
    const c = new OrchestratorControl(
      proc,
      proc.pid,
      socket,
      dataDir,
      lab.hosts.map((h) => h.name),
      endpoint,
      id,
    );
    try {
      await c.waitHealthy();
      for (const h of lab.hosts) {
        const vs = agents.vswitchds.get(h.name);
        if (vs === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no vSwitch daemon for host '${h.name}'`);
        await c.client.registerHost({
          name: h.name,
          nicApi: h.nicApiSocket,
          vswitchApi: vs.socket,
          netnsPrefix: `${lab.prefix}-${h.name}-o-`,
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
    return `orchestrator (tenguard orchestrator, pid ${this.pid}, REST API on ${this.socket} over ${api}, SQLite store in ${this.dataDir}); hosts ${this.hosts.join(', ')} registered with their NIC and vSwitch API sockets`;
  }

  pids(): number[] {
    return [this.pid];
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

  async keys(host: string): Promise<KeyMetadata[]> {
    return (await this.client.keys(host)).keys as unknown as KeyMetadata[];
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

  /** The orchestrator's log output so far (stderr). */
  logs(): string {
    return this.log;
  }

  async close(): Promise<void> {
    const alive = (): boolean => this.proc.exitCode === null && this.proc.signalCode === null;
    if (alive()) {
      try {
        process.kill(this.pid, 'SIGTERM');
      } catch {
        // already gone
      }
      const t = setTimeout(() => {
        if (alive()) {
          try {
            process.kill(this.pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
      }, STOP_GRACE_MS);
      await this.exited;
      clearTimeout(t);
    }
    rmSync(this.socket, { force: true });
  }

  private async waitHealthy(): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null)
        throw new TgError(
          'TG_ERR_COMMAND_FAILED',
          `tenguard orchestrator exited (${this.proc.exitCode ?? this.proc.signalCode}): ${this.log.trim().split('\n').slice(-3).join(' | ')}`,
        );
      const ok = await this.client.health().then(
        () => true,
        () => false,
      );
      if (ok) return;
      if (Date.now() > deadline)
        throw new TgError(
          'TG_ERR_COMMAND_FAILED',
          `tenguard orchestrator did not answer within ${START_TIMEOUT_MS} ms`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export async function startOrchestratorControl(lab: LabState, agents: LabAgents): Promise<DemoControl> {
  return OrchestratorControl.start(lab, agents);
}
