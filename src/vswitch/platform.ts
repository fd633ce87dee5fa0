// What a vSwitch instance needs from the machine, behind one interface so the daemon's logic
// can be tested without root: starting a tunnel device process and talking to its UAPI, and
// plumbing its TUN into a workload's namespace.
//
// The real platform runs each instance as its own `tenguard device -f <ifname>` child process
// (a crash of one cannot touch another's memory or sockets), in the vSwitch daemon's own
// network namespace (the host's), so its UDP socket stays on the host side of the host link
// while its TUN is moved into the workload's namespace and renamed tg0. Secrets reach the
// child only through its UAPI socket: never on its command line, in its environment or on disk.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DATA_PLANE_NODE_ARGS } from '../device/runtime.js';
import { uapiGet, uapiSet } from '../uapi/client.js';
import type { UapiChangeSet } from '../uapi/protocol.js';
import { uapiSocketPath } from '../uapi/server.js';
import { TgError } from '../util/errors.js';
import { run, runOk } from '../util/exec.js';
import type { Logger } from '../util/log.js';
import { namespaceExists } from '../util/netns.js';

/** The interface name a workload sees. */
export const WORKLOAD_IFNAME = 'tg0';

export interface DeviceExit {
  code: number | null;
  signal: string | null;
  /** Why a device inside the daemon (shared isolation) ended; absent for a process. */
  reason?: string;
}

export interface DeviceHandle {
  readonly ifname: string;
  /**
   * The TUN's name in the daemon's namespace when it is not `ifname`: a warm device keeps the
   * name it started with until it is plumbed (which moves and renames it in one go).
   */
  readonly linkName?: string;
  /** The device's own process; undefined when it runs inside the daemon (shared isolation). */
  readonly pid: number | undefined;
  /** Settles once, when the device process has ended. */
  readonly exited: Promise<DeviceExit>;
  uapiSet(change: UapiChangeSet): Promise<void>;
  /** Ends the process (SIGTERM, SIGKILL after a grace period) and waits for it. */
  stop(): Promise<void>;
}

export interface Plumbing {
  /** The name of the TUN in the daemon's namespace (the device's linkName, else its ifname). */
  ifname: string;
  netns: string;
  /** The interface's name inside the namespace (default tg0; a CNI runtime names its own). */
  netnsIfname?: string;
  /** 'a.b.c.d/32' or 'x::y/128'. */
  addressCidr: string;
  family: 4 | 6;
  /** A dual-stack workload's IPv6 address beside an IPv4 `addressCidr`: 'x::y/128'. */
  address6Cidr?: string;
  routes: string[];
  mtu: number;
}

export interface VSwitchPlatform {
  /** Starts a device for `ifname` and resolves once its UAPI answers. */
  launch(ifname: string, mtu: number): Promise<DeviceHandle>;
  netnsExists(netns: string): boolean;
  /** Whether the namespace already has an interface called `name`. */
  linkExists(netns: string, name: string): Promise<boolean>;
  /** Moves the TUN into the namespace as tg0, with its address, MTU, up, and routes via tg0. */
  plumb(p: Plumbing): Promise<void>;
  /** Deletes tg0 (or `netnsIfname`) in the namespace if it is there (which also ends its device). */
  unplumb(netns: string, netnsIfname?: string): Promise<void>;
  /** Ends what the platform keeps besides the instances (a warm pool). */
  close?(): Promise<void>;
}

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
const LAUNCH_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 3000;
/** An `ip -batch` line of plain words: names, addresses, prefixes, numbers. */
const BATCH_LINE = /^[A-Za-z0-9 ./:_-]+$/;

/** Whether a device answers a UAPI get on `sock` (its answer holds no key yet; it is wiped anyway). */
async function answers(sock: string): Promise<boolean> {
  try {
    const snap = await uapiGet(sock, 1000);
    if (snap.privateKey)
      Buffer.from(snap.privateKey.buffer, snap.privateKey.byteOffset, snap.privateKey.length).fill(0);
    return true;
  } catch {
    return false;
  }
}

class ChildDevice implements DeviceHandle {
  readonly exited: Promise<DeviceExit>;

  constructor(
    readonly ifname: string,
    private readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  uapiSet(change: UapiChangeSet): Promise<void> {
    return uapiSet(uapiSocketPath(this.ifname), change);
  }

  async stop(): Promise<void> {
    if (this.running) {
      this.child.kill('SIGTERM');
      const t = setTimeout(() => {
        if (this.running) this.child.kill('SIGKILL');
      }, STOP_GRACE_MS);
      await this.exited;
      clearTimeout(t);
    }
    rmSync(uapiSocketPath(this.ifname), { force: true });
  }
}

/**
 * Moves of TUNs into namespaces asked for within one event-loop turn, or while the previous
 * moves' `ip` runs (group commit), made by one `ip -force -batch` (a line that fails fails only its own move, named by its line number):
 * a daemon creating many instances at once (a batch) starts one `ip` for all their moves
 * instead of one each. When `ip` gives up on the whole batch (it exits at an argument it
 * cannot parse, e.g. a namespace that vanished), each move is tried again on its own.
 */
class MoveBatcher {
  private pending: { line: string; args: string[]; done: (err?: Error) => void }[] = [];
  private scheduled = false;
  private running = false;

  move(ifname: string, netns: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const args = ['link', 'set', 'dev', ifname, 'netns', netns];
      this.pending.push({ line: args.join(' '), args, done: (err) => (err ? reject(err) : resolve()) });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.running || this.pending.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.running = true;
      void this.flush().finally(() => {
        this.running = false;
        this.schedule();
      });
    });
  }

  private async flush(): Promise<void> {
    const batch = this.pending;
    this.pending = [];
    const one = async (m: (typeof batch)[number]): Promise<void> => {
      try {
        await runOk('ip', m.args);
        m.done();
      } catch (err) {
        m.done(err as Error);
      }
    };
    if (batch.length === 1) return one(batch[0]);
    for (const m of batch)
      if (!BATCH_LINE.test(m.line)) {
        m.done(new TgError('TG_ERR_INVALID_ARGUMENT', `cannot plumb with '${m.line}'`));
        m.line = '';
      }
    const lines = batch.filter((m) => m.line !== '');
    if (lines.length === 0) return;
    const r = await run('ip', ['-force', '-batch', '-'], {
      input: `${lines.map((m) => m.line).join('\n')}\n`,
    });
    // Each failed line's messages come before its "Command failed -:N".
    const failed = new Map<number, string>();
    let text: string[] = [];
    for (const l of r.stderr.split('\n')) {
      const m = /^Command failed -:(\d+)$/.exec(l.trim());
      if (m === null) {
        if (l.trim() !== '') text.push(l.trim());
        continue;
      }
      failed.set(Number(m[1]), text.join('; '));
      text = [];
    }
    if (r.code !== 0 && failed.size === 0) {
      await Promise.all(lines.map(one));
      return;
    }
    for (const [i, m] of lines.entries()) {
      const why = failed.get(i + 1);
      if (why === undefined) m.done();
      else m.done(new TgError('TG_ERR_COMMAND_FAILED', `ip ${m.line}: ${why}`));
    }
  }
}

export class ProcessPlatform implements VSwitchPlatform {
  private readonly moves = new MoveBatcher();

  constructor(private readonly log: Logger) {}

  async launch(ifname: string, mtu: number): Promise<DeviceHandle> {
    const sock = uapiSocketPath(ifname);
    // A socket left by a device that was killed: ours by name, nobody serves it.
    rmSync(sock, { force: true });
    // Its stdin is a pipe from this daemon: it ends when the daemon does, a SIGKILL included
    // (as systemd ends a unit's whole control group), so a restarted daemon never finds devices
    // of its predecessor that it knows nothing of holding the workloads' tg0.
    const child = spawn(
      process.execPath,
      [...DATA_PLANE_NODE_ARGS, BIN, 'device', '-f', '--parent-pipe', '--mtu', String(mtu), ifname],
      {
        stdio: ['pipe', 'ignore', 'pipe'],
      },
    );
    const dev = new ChildDevice(ifname, child);
    let tail = '';
    child.stderr?.on('data', (d: Buffer) => {
      process.stderr.write(d);
      tail = (tail + d.toString()).slice(-2000);
    });
    const deadline = Date.now() + LAUNCH_TIMEOUT_MS;
    // The socket file appears at bind(), a moment before listen(): ready means it answers.
    while (!(existsSync(sock) && (await answers(sock)))) {
      if (!dev.running) {
        throw new TgError(
          'TG_ERR_COMMAND_FAILED',
          `tunnel device ${ifname} exited before serving its UAPI: ${tail.trim().split('\n').slice(-1)[0] ?? ''}`,
        );
      }
      if (Date.now() > deadline) {
        await dev.stop();
        throw new TgError(
          'TG_ERR_COMMAND_FAILED',
          `tunnel device ${ifname} did not come up in ${LAUNCH_TIMEOUT_MS} ms`,
        );
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    this.log.debug({ ifname, pid: child.pid }, 'tunnel device started');
    return dev;
  }

  netnsExists(netns: string): boolean {
    return namespaceExists(netns);
  }

  async linkExists(netns: string, name: string): Promise<boolean> {
    return (await run('ip', ['-n', netns, 'link', 'show', 'dev', name])).code === 0;
  }

  /**
   * Two `ip` calls: the move (shared with other moves asked for at the same time), then one
   * batch inside the namespace. Each `ip` start costs more
   * the more namespaces the host has, so a host with a thousand workloads feels every call.
   * Every word of the batch is a validated name, address, prefix or number (no white space).
   */
  async plumb(p: Plumbing): Promise<void> {
    await this.moves.move(p.ifname, p.netns);
    const dev = p.netnsIfname ?? WORKLOAD_IFNAME;
    const lines = [
      `link set dev ${p.ifname} name ${dev}`,
      `addr add ${p.addressCidr} dev ${dev}${p.family === 6 ? ' nodad' : ''}`,
      ...(p.address6Cidr !== undefined ? [`addr add ${p.address6Cidr} dev ${dev} nodad`] : []),
      `link set dev ${dev} mtu ${p.mtu} up`,
      ...p.routes.map((r) => `route replace ${r} dev ${dev}`),
    ];
    for (const l of lines)
      if (!BATCH_LINE.test(l)) throw new TgError('TG_ERR_INVALID_ARGUMENT', `cannot plumb with '${l}'`);
    const input = `${lines.join('\n')}\n`;
    try {
      await runOk('ip', ['-n', p.netns, '-batch', '-'], { input });
    } catch (err) {
      // The batch stops at its first failing line, so a link it cannot find was left untouched.
      // A move that a shared `ip -batch` reported done while the link stayed in the host's
      // namespace (seen once in a hundred-workload spin-up) is made again on its own, and the
      // batch once more.
      if (!/Cannot find device/.test((err as Error).message)) throw err;
      if ((await run('ip', ['link', 'show', 'dev', p.ifname])).code !== 0) throw err;
      this.log.warn(
        { ifname: p.ifname, netns: p.netns },
        'link still outside its namespace after the move: moving it again',
      );
      await runOk('ip', ['link', 'set', 'dev', p.ifname, 'netns', p.netns]);
      await runOk('ip', ['-n', p.netns, '-batch', '-'], { input });
    }
  }

  async unplumb(netns: string, netnsIfname = WORKLOAD_IFNAME): Promise<void> {
    if (!namespaceExists(netns)) return;
    await run('ip', ['-n', netns, 'link', 'del', 'dev', netnsIfname]);
  }
}
