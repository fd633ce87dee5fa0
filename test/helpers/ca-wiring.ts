// Support for the mTLS wiring tests (test/integration/ca-wiring-*.test.ts): a CA with an
// embedded SoftHSM2 token serving its CSR API over TLS on a Unix socket in this process, a
// lab whose NIC agents (`tenguard nic`) and vSwitch daemons (`tenguard vswitchd`) run with
// the mTLS flags and enrol with one-time join tokens, the operator's clients (an orchestrator
// identity renewed through the CA), and the orchestrator (src/lab/control.ts) driving them
// over mTLS as that identity.
// Every process is tracked by pid and ended on stop; their logs are kept for secret scans.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PlacementQuery } from '../../src/ca/approval.js';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { parseCaConfig } from '../../src/ca/config.js';
import { CsrServer } from '../../src/ca/csr-server.js';
import { verifyCsr } from '../../src/ca/svid.js';
import { CaClient, enrol } from '../../src/identity/enrolment.js';
import { assembleIdentity, createKeyAndCsr, type Identity } from '../../src/identity/identity.js';
import { clientTlsOptions } from '../../src/identity/mtls.js';
import { IdentityRenewer } from '../../src/identity/renewal.js';
import { JOIN_TOKEN_ENV } from '../../src/identity/service-mtls.js';
import { nicId, serviceId } from '../../src/identity/spiffe.js';
import type { TrustBundle } from '../../src/identity/trust-bundle.js';
import { LabControlPlane } from '../../src/lab/control.js';
import { buildLab, destroyLab, type LabState, spawnInNode } from '../../src/lab/index.js';
import { NicClient } from '../../src/nic/client.js';
import { UAPI_SOCKET_DIR } from '../../src/uapi/server.js';
import { TgError } from '../../src/util/errors.js';
import { endChild } from '../../src/util/exec.js';
import { type ApiEndpoint, apiRequest } from '../../src/util/http-json.js';
import { logger } from '../../src/util/log.js';
import { VSwitchClient } from '../../src/vswitch/client.js';
import { type CaTestEnv, caCli, caTestEnv, TD } from './ca-softhsm.js';

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
const START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 5000;

export const ORCHESTRATOR_ID = `spiffe://${TD}/service/orchestrator`;

/** A fresh lab prefix for these tests: `tgm` and four random letters or digits. */
export function wiringPrefix(): string {
  const chars = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return `tgm${[...randomBytes(4)].map((b) => chars[b % chars.length]).join('')}`;
}

// --- The CA ----------------------------------------------------------------------------------

/** What the lab needs of a CA, in this process or a `tenguard ca serve` process. */
export interface CaHandle {
  /** The CSR API over TLS. */
  socket: string;
  /** The bundle file given to the agents at start (--ca-bundle). */
  bundleFile: string;
  /** The roots trusted now, as the operator sees them. */
  bundle(): TrustBundle;
  joinToken(spiffeId: string): Promise<string>;
  /** A client identity kept renewed at half life. */
  clientIdentity(spiffeId: string, ttlSeconds: number): Promise<IdentityRenewer>;
}

export interface WiringCa extends CaHandle {
  env: CaTestEnv;
  ca: CertificateAuthority;
  server: CsrServer;
  /** Workloads the "orchestrator" placed: `host/tenant/workload`. */
  placements: Set<string>;
  /** Every placement question the CA asked. */
  asked: PlacementQuery[];
  close(): Promise<void>;
}

export async function startWiringCa(opts: { serverTtlSeconds?: number } = {}): Promise<WiringCa> {
  const env = caTestEnv();
  const ca = CertificateAuthority.open(
    env.config({ issuance: { minTtlSeconds: 1, backdateSeconds: 0, defaultTtlSeconds: 3600 } }),
  );
  const placements = new Set<string>();
  const asked: PlacementQuery[] = [];
  try {
    await ca.init();
    const socket = join(env.dir, 'ca.sock');
    const server = await CsrServer.start({
      ca,
      socketPath: socket,
      log: logger('test.ca'),
      ttlSeconds: opts.serverTtlSeconds,
      watchMs: 300,
      isPlacedOn: (q) => {
        asked.push(q);
        return placements.has(`${q.host}/${q.tenant}/${q.workload}`);
      },
    });
    const bundleFile = env.file('bundle.pem', ca.trustBundle().toPem());
    return {
      env,
      ca,
      server,
      socket,
      bundleFile,
      placements,
      asked,
      bundle: () => ca.trustBundle(),
      joinToken: async (id) => server.joinTokens.issue(id, 60_000),
      clientIdentity: (id, ttl) => renewedIdentity(ca, id, ttl),
      close: async () => {
        await server.close();
        ca.close();
        env.cleanup();
      },
    };
  } catch (err) {
    ca.close();
    env.cleanup();
    throw err;
  }
}

/** An identity issued directly by the CA (the operator's path), for test clients. */
export async function issue(
  ca: CertificateAuthority,
  spiffeId: string,
  ttlSeconds?: number,
): Promise<Identity> {
  const { privateKey, csrPem } = await createKeyAndCsr(spiffeId);
  const svid = await ca.issue({ csr: await verifyCsr(csrPem), spiffeId, ttlSeconds, requester: 'admin' });
  return assembleIdentity(privateKey, [svid.certificatePem, ...svid.chainPem], spiffeId);
}

/** A client identity kept renewed at half life by the CA in this process. */
export async function renewedIdentity(
  ca: CertificateAuthority,
  spiffeId: string,
  ttlSeconds: number,
): Promise<IdentityRenewer> {
  const r = new IdentityRenewer({
    spiffeId,
    sign: async (csrPem) => {
      const s = await ca.issue({ csr: await verifyCsr(csrPem), spiffeId, ttlSeconds, requester: 'admin' });
      return [s.certificatePem, ...s.chainPem];
    },
  });
  await r.start();
  return r;
}

/**
 * An mTLS endpoint on a Unix socket: the identity and the CA's bundle are read at every
 * request, so renewals and rotations are followed. `identity` null: no client certificate.
 */
export function mtlsEndpoint(
  socketPath: string,
  trust: () => TrustBundle,
  identity: (() => Identity) | null,
  serverId: string,
): ApiEndpoint {
  return {
    socketPath,
    tls: () => {
      const bundle = trust();
      if (identity !== null) return clientTlsOptions(identity(), bundle, [serverId]);
      return { ca: bundle.pems(), minVersion: 'TLSv1.3', checkServerIdentity: () => undefined };
    },
  };
}

// --- The agents --------------------------------------------------------------------------------

export interface MtlsAgent {
  host: string;
  kind: 'nic' | 'vswitchd';
  socket: string;
  spiffeId: string;
  proc: ChildProcess;
  pid: number;
  exited: Promise<void>;
}

export interface MtlsLabOptions {
  hosts: number;
  tenants: number;
  workloads: number;
  certTtlSeconds: number;
  bundleRefreshSeconds?: number;
  /** The client identity the test uses: default the orchestrator's, 600 s. */
  clientTtlSeconds?: number;
}

export class MtlsLab {
  readonly nics = new Map<string, MtlsAgent>();
  readonly vswitchds = new Map<string, MtlsAgent>();
  private readonly logChunks: string[] = [];
  /** Join tokens handed to the agents (they must never show up anywhere). */
  readonly joinTokens: string[] = [];
  readonly placed = new Map<string, { tenant: string; host: string; address: string; ns: string }>();
  /** Every API answer received here or by the orchestrator, as received (for secret scans). */
  readonly responses: string[] = [];
  /** The orchestrator over the agents, calling them over mTLS as ORCHESTRATOR_ID. */
  control: LabControlPlane | undefined;

  private constructor(
    readonly lab: LabState,
    readonly ca: CaHandle,
    readonly client: IdentityRenewer,
    private readonly opts: MtlsLabOptions,
  ) {}

  static async start(prefix: string, ca: CaHandle, opts: MtlsLabOptions): Promise<MtlsLab> {
    const lab = await buildLab({
      prefix,
      hosts: opts.hosts,
      tenants: opts.tenants,
      workloads: opts.workloads,
    });
    let client: IdentityRenewer | undefined;
    let m: MtlsLab | undefined;
    try {
      client = await ca.clientIdentity(ORCHESTRATOR_ID, opts.clientTtlSeconds ?? 600);
      m = new MtlsLab(lab, ca, client, opts);
      for (const h of lab.hosts) await m.startNic(h.name);
      for (const h of lab.hosts) await m.startVswitchd(h.name);
      const self = m;
      m.control = await LabControlPlane.start(lab, m, {
        agentEndpoint: (host, agent) =>
          agent === 'nic' ? self.nicEndpoint(host) : self.vswitchEndpoint(host),
        recorder: (method, path, r) => self.responses.push(`${method} ${path} ${r.status} ${r.raw}`),
      });
      return m;
    } catch (err) {
      if (m !== undefined) await m.stop();
      else {
        client?.stop();
        await destroyLab(prefix);
      }
      throw err;
    }
  }

  logs(): string {
    return this.logChunks.join('');
  }

  /** identity null: no client certificate. */
  nicEndpoint(host: string, identity: (() => Identity) | null = () => this.client.current): ApiEndpoint {
    const n = this.nics.get(host);
    if (n === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no NIC for ${host}`);
    return mtlsEndpoint(n.socket, () => this.ca.bundle(), identity, n.spiffeId);
  }

  vswitchEndpoint(host: string, identity: (() => Identity) | null = () => this.client.current): ApiEndpoint {
    const v = this.vswitchds.get(host);
    if (v === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no vSwitch daemon for ${host}`);
    return mtlsEndpoint(v.socket, () => this.ca.bundle(), identity, v.spiffeId);
  }

  nic(host: string): NicClient {
    return new NicClient(this.nicEndpoint(host), (method, path, r) =>
      this.responses.push(`${method} ${path} ${r.status} ${r.raw}`),
    );
  }

  vswitch(host: string): VSwitchClient {
    return new VSwitchClient(this.vswitchEndpoint(host), (method, path, r) =>
      this.responses.push(`${method} ${path} ${r.status} ${r.raw}`),
    );
  }

  private commonArgs(host: string): string[] {
    const args = [
      '--ca-socket',
      this.ca.socket,
      '--ca-bundle',
      this.ca.bundleFile,
      '--trust-domain',
      TD,
      '--host-name',
      host,
      '--allow-client',
      ORCHESTRATOR_ID,
      '--cert-ttl',
      String(this.opts.certTtlSeconds),
    ];
    if (this.opts.bundleRefreshSeconds !== undefined)
      args.push('--bundle-refresh', String(this.opts.bundleRefreshSeconds));
    return args;
  }

  async startNic(host: string): Promise<MtlsAgent> {
    const h = this.hostPlan(host);
    const spiffeId = nicId(TD, host).uri;
    const args = [
      BIN,
      'nic',
      '--api-socket',
      h.nicApiSocket,
      '--host-address',
      h.pcie.nicV4,
      '--fabric-address',
      h.fabric.nicV4,
      ...this.commonArgs(host),
    ];
    const a = await this.spawnAgent(host, 'nic', h.nicNode, h.nicApiSocket, spiffeId, args);
    this.nics.set(host, a);
    return a;
  }

  async startVswitchd(host: string): Promise<MtlsAgent> {
    const h = this.hostPlan(host);
    const socket = `${this.lab.runDir}/vswitchd-${h.name}.sock`;
    const spiffeId = serviceId(TD, `vswitchd-${host}`).uri;
    const args = [
      BIN,
      'vswitchd',
      '--api-socket',
      socket,
      '--ifname-prefix',
      `${this.lab.prefix}-${h.index}v`,
      ...this.commonArgs(host),
    ];
    const a = await this.spawnAgent(host, 'vswitchd', h.name, socket, spiffeId, args);
    this.vswitchds.set(host, a);
    return a;
  }

  /** Ends every process started here, removes the sockets, the lab and the client's timer. */
  async stop(): Promise<void> {
    await this.control?.close().catch(() => undefined);
    this.control = undefined;
    this.client.stop();
    const all = [...this.vswitchds.values(), ...this.nics.values()];
    this.vswitchds.clear();
    this.nics.clear();
    await Promise.all(all.map((p) => endChild(p.proc, 'SIGTERM', STOP_GRACE_MS)));
    for (const p of all) rmSync(p.socket, { force: true });
    let names: string[] = [];
    try {
      names = readdirSync(UAPI_SOCKET_DIR);
    } catch {
      names = [];
    }
    for (const f of names)
      if (f.startsWith(`${this.lab.prefix}-`) && f.endsWith('.sock'))
        rmSync(`${UAPI_SOCKET_DIR}/${f}`, { force: true });
    await destroyLab(this.lab.prefix);
  }

  // --- Workloads, through the orchestrator over mTLS ------------------------------------------

  /** Spins the lab's planned workloads of these names up (each tenant allows itself). */
  async spinUp(names: readonly string[]): Promise<void> {
    for (const name of names) {
      const w = this.lab.workloads.find((x) => x.name === name);
      if (w === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no workload ${name}`);
      const [p] = await this.control!.place([{ name: w.name, tenant: w.tenant, host: w.host }]);
      this.placed.set(w.name, { tenant: p.tenant, host: p.host, address: p.address, ns: p.ns });
    }
  }

  /** A valid peers body for the NIC of `host` and `tenant` (the other NICs' signed keys), for API tests. */
  async peersFor(tenant: string, host: string) {
    const hosts = [
      ...new Set([...this.placed.values()].filter((w) => w.tenant === tenant).map((w) => w.host)),
    ];
    const out = [];
    for (const o of hosts) {
      if (o === host) continue;
      const k = await this.nic(o).tenantKey(tenant);
      out.push({
        nicIdentityKey: k.nicIdentityKey,
        endpoint: k.endpoint,
        publicKey: k.publicKey,
        signature: k.signature,
        nicCertificate: k.nicCertificate,
        identityBinding: k.identityBinding,
        workloads: [...this.placed.entries()]
          .filter(([, w]) => w.tenant === tenant && w.host === o)
          .map(([name, w]) => ({ workload: name, address: w.address })),
      });
    }
    return out;
  }

  /** The orchestrator puts the tenant's peers on every NIC holding it again. */
  async syncTenant(tenant: string): Promise<void> {
    await this.control!.orchestrator.lifecycle.publishTenant(tenant, { force: true });
  }

  // ---------------------------------------------------------------------------------------------

  private hostPlan(host: string): LabState['hosts'][number] {
    const h = this.lab.hosts.find((x) => x.name === host);
    if (h === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no host ${host}`);
    return h;
  }

  private async spawnAgent(
    host: string,
    kind: 'nic' | 'vswitchd',
    node: string,
    socket: string,
    spiffeId: string,
    args: string[],
  ): Promise<MtlsAgent> {
    const token = await this.ca.joinToken(spiffeId);
    this.joinTokens.push(token);
    const proc = spawnInNode(this.lab, node, process.execPath, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, TENGUARD_LOG_LEVEL: 'debug', [JOIN_TOKEN_ENV]: token },
    });
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.stderr?.on('data', (d: Buffer) => {
      const text = d.toString('utf8');
      this.logChunks.push(text);
      if (process.env.TG_WIRING_ECHO === '1') process.stderr.write(`[${kind} ${host}] ${text}`);
    });
    if (proc.pid === undefined)
      throw new TgError('TG_ERR_COMMAND_FAILED', `could not start the ${kind} of ${host}`);
    const a: MtlsAgent = { host, kind, socket, spiffeId, proc, pid: proc.pid, exited };
    const endpoint = mtlsEndpoint(
      socket,
      () => this.ca.bundle(),
      () => this.client.current,
      spiffeId,
    );
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null)
        throw new TgError(
          'TG_ERR_COMMAND_FAILED',
          `the ${kind} of ${host} exited: ${this.logs().trim().split('\n').slice(-3).join(' | ')}`,
        );
      const ok = await apiRequest(endpoint, 'GET', '/v1/health', undefined, { timeoutMs: 2000 }).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) return a;
      if (Date.now() > deadline) {
        await endChild(a.proc, 'SIGTERM', STOP_GRACE_MS);
        throw new TgError('TG_ERR_COMMAND_FAILED', `the ${kind} of ${host} did not answer over mTLS`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** A policy document letting every workload of the tenant reach every other (the NICs are default deny). */
export function allowWithinTenant(tenant: string): unknown {
  return {
    version: 1,
    tenant,
    rules: [
      { id: 'out', action: 'allow', direction: 'egress', workloads: { labels: {} }, peers: [{ labels: {} }] },
      { id: 'in', action: 'allow', direction: 'ingress', workloads: { labels: {} }, peers: [{ labels: {} }] },
    ],
  };
}

/** Writes `pem` to a file in the CA's scratch directory (for openssl). */
export function scratch(ca: { env: CaTestEnv }, name: string, text: string): string {
  const p = join(ca.env.dir, name);
  writeFileSync(p, text);
  return p;
}

// --- The CA as its own process: `tenguard ca serve --tls-socket` -------------------------------

export interface CliCa extends CaHandle {
  env: CaTestEnv;
  configFile: string;
  adminSocket: string;
  pid: number;
  /** Everything the CA process wrote to stderr (debug level). */
  logs(): string;
  /** Runs `tenguard ca --config ... <args>`; throws on a non-zero exit. */
  cli(args: string[]): Promise<string>;
  close(): Promise<void>;
}

export async function startCliCa(serverTtlSeconds: number): Promise<CliCa> {
  const env = caTestEnv();
  const configFile = env.file(
    'ca.json',
    JSON.stringify({
      stateDir: env.stateDir,
      trustDomain: TD,
      token: { label: 'tg-it', pin: { env: env.pinEnv } },
      issuance: { minTtlSeconds: 1, backdateSeconds: 0 },
    }),
  );
  const cli = async (args: string[]): Promise<string> => {
    const r = await caCli(['--config', configFile, ...args]);
    if (r.code !== 0)
      throw new TgError('TG_ERR_COMMAND_FAILED', `tenguard ca ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const chunks: string[] = [];
  let proc: ChildProcess | undefined;
  try {
    await cli(['init']);
    const bundleFile = env.file('bundle.pem', await cli(['root']));
    const adminSocket = join(env.dir, 'ca-admin.sock');
    const socket = join(env.dir, 'ca.sock');
    const p = spawn(
      process.execPath,
      [
        BIN,
        'ca',
        '--config',
        configFile,
        'serve',
        '--socket',
        adminSocket,
        '--tls-socket',
        socket,
        '--ttl',
        String(serverTtlSeconds),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TENGUARD_LOG_LEVEL: 'debug' } },
    );
    proc = p;
    p.stderr?.on('data', (d: Buffer) => chunks.push(d.toString('utf8')));
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!chunks.join('').includes('over TLS on')) {
      if (p.exitCode !== null)
        throw new TgError('TG_ERR_COMMAND_FAILED', `ca serve exited: ${chunks.join('')}`);
      if (Date.now() > deadline) throw new TgError('TG_ERR_COMMAND_FAILED', 'ca serve did not start');
      await new Promise((r) => setTimeout(r, 100));
    }
    const view = CertificateAuthority.open(
      parseCaConfig(JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>),
    );
    const joinToken = async (spiffeId: string): Promise<string> => {
      const r = await caCli(['join-token', '--socket', adminSocket, '--spiffe-id', spiffeId, '--ttl', '60']);
      if (r.code !== 0) throw new TgError('TG_ERR_COMMAND_FAILED', `join-token: ${r.stderr}`);
      return r.stdout.trim();
    };
    const bundle = (): TrustBundle => view.trustBundle();
    return {
      env,
      configFile,
      adminSocket,
      socket,
      bundleFile,
      pid: p.pid!,
      bundle,
      joinToken,
      clientIdentity: async (spiffeId, ttlSeconds) =>
        enrol({
          client: new CaClient({ socketPath: socket, bundle }),
          spiffeId,
          joinToken: await joinToken(spiffeId),
          ttlSeconds,
          log: logger('test.client'),
        }),
      logs: () => chunks.join(''),
      cli,
      close: async () => {
        view.close();
        if (p.exitCode === null && p.signalCode === null) {
          process.kill(p.pid!, 'SIGTERM');
          const t = setTimeout(() => p.exitCode === null && process.kill(p.pid!, 'SIGKILL'), STOP_GRACE_MS);
          await exited;
          clearTimeout(t);
        }
        env.cleanup();
      },
    };
  } catch (err) {
    if (proc?.pid !== undefined && proc.exitCode === null) process.kill(proc.pid, 'SIGKILL');
    env.cleanup();
    throw err;
  }
}
