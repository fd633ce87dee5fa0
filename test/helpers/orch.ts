// Shared pieces of the orchestrator integration tests: a lab with NIC agents and vSwitch
// daemons (LabAgents, src/lab/agents.ts), the orchestrator as its own process (bin/tenguard.js orchestrator),
// hosts registered through its API, a recording proxy in front of a NIC API (to learn which
// PSKs flowed through the orchestrator), and a timestamped ping stream.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LabAgents } from '../../src/lab/agents.js';
import { buildLab, destroyLab, type LabState } from '../../src/lab/index.js';
import { OrchestratorClient } from '../../src/orchestrator/client.js';
import { apiRequest, type HttpMethod } from '../../src/util/http-json.js';

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));

export function orchPrefix(): string {
  const chars = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return `tgo${[...randomBytes(4)].map((b) => chars[b % chars.length]).join('')}`;
}

export const ALLOW_WITHIN = (tenant: string) => ({
  version: 1,
  tenant,
  rules: [
    { id: 'out', action: 'allow', direction: 'egress', workloads: { labels: {} }, peers: [{ labels: {} }] },
    { id: 'in', action: 'allow', direction: 'ingress', workloads: { labels: {} }, peers: [{ labels: {} }] },
  ],
});

export class OrchProcess {
  proc: ChildProcess | null = null;
  logs = '';
  constructor(
    readonly dataDir: string,
    readonly socket: string,
    /** More `tenguard orchestrator` options (e.g. --reconcile-ms 0). */
    readonly extraArgs: readonly string[] = [],
  ) {}

  async start(): Promise<void> {
    const p = spawn(
      process.execPath,
      [
        BIN,
        'orchestrator',
        // An empty data directory: the store comes with extraArgs (--store etcd:...).
        ...(this.dataDir === '' ? [] : ['--data-dir', this.dataDir]),
        '--api-socket',
        this.socket,
        '--insecure',
        ...this.extraArgs,
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...process.env, TENGUARD_LOG_LEVEL: 'info' },
      },
    );
    p.stderr?.on('data', (d: Buffer) => {
      if (this.logs.length < 8_000_000) this.logs += d.toString();
      if (process.env.TG_ORCH_ECHO === '1') process.stderr.write(`[orch] ${d}`);
    });
    this.proc = p;
    const end = Date.now() + 20_000;
    while (Date.now() < end) {
      if (p.exitCode !== null) throw new Error(`orchestrator exited: ${this.logs.slice(-500)}`);
      const ok = await apiRequest(this.socket, 'GET', '/v1/health', undefined, { timeoutMs: 1000 }).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('orchestrator did not answer within 20 s');
  }

  /** SIGTERM, then SIGKILL after 10 s; resolves with the exit code. */
  async stop(): Promise<number | null> {
    const p = this.proc;
    if (p === null || p.exitCode !== null || p.signalCode !== null) return p?.exitCode ?? null;
    const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
    process.kill(p.pid!, 'SIGTERM');
    const t = setTimeout(() => p.exitCode === null && process.kill(p.pid!, 'SIGKILL'), 10_000);
    const code = await exited;
    clearTimeout(t);
    this.proc = null;
    return code;
  }
}

/** A recording HTTP proxy on a Unix socket in front of another API socket. */
export class RecordingProxy {
  readonly answers: string[] = [];
  private constructor(
    private readonly server: Server,
    readonly socket: string,
  ) {}

  static async start(socket: string, target: string): Promise<RecordingProxy> {
    let self: RecordingProxy | undefined;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        apiRequest(target, (req.method ?? 'GET') as HttpMethod, req.url ?? '/', undefined, {
          ...(body.length > 0 ? { rawBody: body } : {}),
        }).then(
          (r) => {
            self?.answers.push(r.raw);
            res.writeHead(r.status, { 'content-type': 'application/json' });
            res.end(r.raw);
          },
          (err: Error) => {
            res.writeHead(502, { 'content-type': 'application/json' });
            res.end(JSON.stringify({ code: 'TG_ERR_COMMAND_FAILED', message: err.message }));
          },
        );
      });
    });
    rmSync(socket, { force: true });
    await new Promise<void>((r) => server.listen(socket, r));
    self = new RecordingProxy(server, socket);
    return self;
  }

  async close(): Promise<void> {
    await new Promise<void>((r) => {
      this.server.close(() => r());
      this.server.closeAllConnections();
    });
    rmSync(this.socket, { force: true });
  }
}

export interface OrchLab {
  prefix: string;
  lab: LabState;
  agents: LabAgents;
  orch: OrchProcess;
  client: OrchestratorClient;
  dataDir: string;
  proxy: RecordingProxy;
}

/** Builds the lab, starts agents and the orchestrator, registers every host (h1's NIC behind the proxy). */
export async function startOrchLab(
  prefix: string,
  hosts = 2,
  /** More `tenguard orchestrator` options (e.g. --console 127.0.0.1:0). */
  orchArgs: readonly string[] = [],
  /** Build the lab's outside namespace too (the NICs then run with egress). */
  opts: { outside?: boolean } = {},
): Promise<OrchLab> {
  const lab = await buildLab({ prefix, hosts, tenants: 1, workloads: 0, outside: opts.outside ?? false });
  const dataDir = mkdtempSync(join(tmpdir(), `${prefix}-data-`));
  let agents: LabAgents | undefined;
  let proxy: RecordingProxy | undefined;
  const orch = new OrchProcess(dataDir, `${lab.runDir}/orch.sock`, orchArgs);
  try {
    agents = await LabAgents.start(lab, { echoLogs: process.env.TG_NIC_ECHO === '1' });
    proxy = await RecordingProxy.start(`${lab.runDir}/nic-proxy-h1.sock`, lab.hosts[0].nicApiSocket);
    await orch.start();
    const client = new OrchestratorClient(orch.socket);
    for (const h of lab.hosts)
      await client.registerHost({
        name: h.name,
        nicApi: h.index === 1 ? proxy.socket : h.nicApiSocket,
        vswitchApi: agents.vswitchds.get(h.name)!.socket,
        netnsPrefix: `${prefix}-${h.name}-o-`,
      });
    return { prefix, lab, agents, orch, client, dataDir, proxy };
  } catch (err) {
    await orch.stop().catch(() => undefined);
    await proxy?.close().catch(() => undefined);
    await agents?.stop().catch(() => undefined);
    await destroyLab(prefix).catch(() => undefined);
    rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
}

export async function stopOrchLab(l: OrchLab | undefined, prefix: string): Promise<void> {
  await l?.orch.stop().catch(() => undefined);
  await l?.proxy.close().catch(() => undefined);
  await l?.agents.stop().catch(() => undefined);
  await destroyLab(prefix).catch(() => undefined);
  if (l) rmSync(l.dataDir, { recursive: true, force: true });
}
