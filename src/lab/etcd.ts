// An etcd cluster for a lab, a test or the demo: N members of Debian's etcd (3.4) as child
// processes on loopback ports picked free, each with its own data directory under one
// temporary directory, named `<prefix>-e<i>`. Members can be killed (SIGKILL) and started
// again on the same ports and data; stop() ends every member by its pid and removes the data,
// also when a member had already died. A process exit hook SIGKILLs members still running if
// the caller never reached stop().
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { TgError } from '../util/errors.js';
import { endChild } from '../util/exec.js';

export const ETCD_BIN = process.env.TENGUARD_ETCD ?? '/usr/bin/etcd';

export interface EtcdMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  proc: ChildProcess | null;
  log: string;
}

/** A free loopback TCP port (bound then released: the caller binds it right after). */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a !== null ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

const live = new Set<ChildProcess>();
let exitHook = false;

/** PEM files of a TLS member: its certificate and key, and the CA its clients must present. */
export interface EtcdServerTls {
  cert: string;
  key: string;
  /** With it, members demand client certificates signed by this CA. */
  clientCa?: string;
}

/** etcd's --heartbeat-interval and --election-timeout (ms). */
export interface EtcdRaftTiming {
  heartbeatMs: number;
  electionMs: number;
}

/**
 * Loopback members: a lost raft leader is replaced within about a second, well inside an
 * orchestrator lease's 1.5 s of validity (the HA tests and the demo's takeover).
 */
export const LAB_RAFT_TIMING: EtcdRaftTiming = { heartbeatMs: 50, electionMs: 500 };
/** etcd's own defaults, what an operator's cluster runs unless tuned for its network. */
export const ETCD_DEFAULT_RAFT_TIMING: EtcdRaftTiming = { heartbeatMs: 100, electionMs: 1000 };

export class EtcdCluster {
  private constructor(
    readonly dir: string,
    readonly members: EtcdMember[],
    private readonly initialCluster: string,
    private readonly tls: EtcdServerTls | undefined,
    /** etcd's --quota-backend-bytes (tests of a full cluster); etcd's default when undefined. */
    private readonly quotaBackendBytes?: number,
    private readonly raft: EtcdRaftTiming = LAB_RAFT_TIMING,
  ) {}

  /** The client URLs of all members. */
  get endpoints(): string[] {
    return this.members.map((m) => m.clientUrl);
  }

  /** Starts `size` members and waits until the cluster answers. */
  static async start(
    prefix: string,
    size = 1,
    opts: {
      baseDir?: string;
      tls?: EtcdServerTls;
      quotaBackendBytes?: number;
      /** Default LAB_RAFT_TIMING. */
      raft?: EtcdRaftTiming;
    } = {},
  ): Promise<EtcdCluster> {
    if (!/^[a-z][a-z0-9-]{1,20}$/.test(prefix))
      throw new TgError('TG_ERR_INVALID_ARGUMENT', `bad etcd cluster prefix '${prefix}'`);
    const dir = mkdtempSync(join(opts.baseDir ?? tmpdir(), `${prefix}-etcd-`));
    const members: EtcdMember[] = [];
    for (let i = 0; i < size; i++) {
      const name = `${prefix}-e${i}`;
      const dataDir = join(dir, name);
      mkdirSync(dataDir, { mode: 0o700 });
      members.push({
        name,
        clientUrl: `${opts.tls === undefined ? 'http' : 'https'}://127.0.0.1:${await freeLoopbackPort()}`,
        peerUrl: `http://127.0.0.1:${await freeLoopbackPort()}`,
        dataDir,
        proc: null,
        log: '',
      });
    }
    const c = new EtcdCluster(
      dir,
      members,
      members.map((m) => `${m.name}=${m.peerUrl}`).join(','),
      opts.tls,
      opts.quotaBackendBytes,
      opts.raft,
    );
    try {
      for (const m of members) c.spawnMember(m);
      // A TLS cluster is checked by its caller, who holds the client identity.
      if (opts.tls === undefined) await c.waitReady(20_000);
      return c;
    } catch (err) {
      await c.stop();
      throw err;
    }
  }

  private spawnMember(m: EtcdMember): void {
    const args = [
      '--name',
      m.name,
      '--data-dir',
      m.dataDir,
      '--listen-client-urls',
      m.clientUrl,
      '--advertise-client-urls',
      m.clientUrl,
      '--listen-peer-urls',
      m.peerUrl,
      '--initial-advertise-peer-urls',
      m.peerUrl,
      '--initial-cluster',
      this.initialCluster,
      '--initial-cluster-state',
      'new',
      '--initial-cluster-token',
      this.members[0].name,
      '--heartbeat-interval',
      String(this.raft.heartbeatMs),
      '--election-timeout',
      String(this.raft.electionMs),
      '--logger',
      'zap',
      '--log-level',
      'warn',
    ];
    if (this.quotaBackendBytes !== undefined)
      args.push('--quota-backend-bytes', String(this.quotaBackendBytes));
    if (this.tls !== undefined) {
      args.push('--cert-file', this.tls.cert, '--key-file', this.tls.key);
      if (this.tls.clientCa !== undefined)
        args.push('--client-cert-auth', '--trusted-ca-file', this.tls.clientCa);
    }
    const p = spawn(ETCD_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    p.stderr?.on('data', (d: Buffer) => {
      if (m.log.length < 1_000_000) m.log += d.toString();
    });
    p.once('error', (err) => {
      m.log += `\nspawn failed: ${err.message}`;
    });
    p.once('exit', () => live.delete(p));
    live.add(p);
    if (!exitHook) {
      exitHook = true;
      process.once('exit', () => {
        for (const c of live) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      });
    }
    m.proc = p;
  }

  /** Waits until every running member answers a linearizable read (quorum and leader). */
  async waitReady(timeoutMs = 20_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    const running = this.members.filter((m) => m.proc !== null && m.proc.exitCode === null);
    for (const m of running) {
      const client = new Etcd3({ hosts: m.clientUrl, dialTimeout: 1000 });
      try {
        for (;;) {
          if (m.proc !== null && m.proc.exitCode !== null)
            throw new TgError('TG_ERR_COMMAND_FAILED', `etcd member ${m.name} exited: ${m.log.slice(-400)}`);
          const ok = await client
            .get('tenguard-ready')
            .options({ deadline: Date.now() + 1000 })
            .then(
              () => true,
              () => false,
            );
          if (ok) break;
          if (Date.now() > end)
            throw new TgError(
              'TG_ERR_COMMAND_FAILED',
              `etcd member ${m.name} not ready: ${m.log.slice(-400)}`,
            );
          await new Promise((r) => setTimeout(r, 100));
        }
      } finally {
        client.close();
      }
    }
  }

  /** The index of the member that is raft leader now (-1 when none answers). */
  async leaderIndex(): Promise<number> {
    for (const m of this.members) {
      if (m.proc === null) continue;
      const client = new Etcd3({ hosts: m.clientUrl, dialTimeout: 1000 });
      try {
        const st = await client.maintenance.status().catch(() => null);
        if (st !== null) {
          const i = this.members.findIndex((x) => x === m);
          return st.leader === st.header.member_id ? i : await this.indexOfMember(client, st.leader);
        }
      } finally {
        client.close();
      }
    }
    return -1;
  }

  private async indexOfMember(client: Etcd3, id: string): Promise<number> {
    const list = await client.cluster.memberList({ linearizable: false }).catch(() => null);
    const name = list?.members.find((x) => x.ID === id)?.name;
    return this.members.findIndex((m) => m.name === name);
  }

  /** SIGKILLs member `i` (its data stays, for start()). */
  async kill(i: number): Promise<void> {
    const m = this.members[i];
    if (m.proc !== null) await endChild(m.proc, 'SIGKILL', 0);
    m.proc = null;
  }

  /** Starts member `i` again on its ports and data (after kill()). */
  restart(i: number): void {
    const m = this.members[i];
    if (m.proc !== null && m.proc.exitCode === null) return;
    this.spawnMember(m);
  }

  /**
   * Stops every running member (SIGSTOP) so that an idle cluster takes no CPU (a benchmark's
   * rounds on another store); resume() continues them and waits until they answer.
   */
  pause(): void {
    for (const m of this.members)
      if (m.proc?.pid !== undefined && m.proc.exitCode === null) m.proc.kill('SIGSTOP');
    this.paused = true;
  }

  async resume(timeoutMs = 20_000): Promise<void> {
    if (!this.paused) return;
    for (const m of this.members)
      if (m.proc?.pid !== undefined && m.proc.exitCode === null) m.proc.kill('SIGCONT');
    this.paused = false;
    await this.waitReady(timeoutMs);
  }

  private paused = false;

  /** Ends every member by its pid and removes the data directories. */
  async stop(): Promise<void> {
    if (this.paused)
      for (const m of this.members)
        if (m.proc?.pid !== undefined && m.proc.exitCode === null) m.proc.kill('SIGCONT');
    this.paused = false;
    for (const m of this.members) {
      if (m.proc !== null) await endChild(m.proc, 'SIGTERM', 3000).catch(() => undefined);
      m.proc = null;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
