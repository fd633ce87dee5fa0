// A two-namespace testbed for tunnel measurements and interoperability tests: two
// namespaces joined by a veth pair (the "wire"), and on each side a WireGuard-protocol
// device (wireguard-go or tenguard) configured through the standard `wg` tool, exactly as
// an operator would. Everything carries the caller's prefix and is removed by destroy().
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DATA_PLANE_NODE_ARGS } from '../device/runtime.js';
import { generatePrivateKey, publicKeyOf } from '../protocol/crypto.js';
import { uapiGet, uapiStats } from '../uapi/client.js';
import { TgError } from '../util/errors.js';
import { endChild, run, runInOk, runOk } from '../util/exec.js';

export type Implementation = 'wireguard-go' | 'tenguard';

export interface Side {
  ns: string;
  veth: string;
  wireV4: string;
  wireV6: string;
  /** The tunnel interface's name (also the UAPI socket name, so unique per testbed). */
  tun: string;
  tunV4: string;
  tunV6: string;
  privateKey: string;
  publicKey: string;
  port: number;
  proc?: ChildProcess;
}

export interface Testbed {
  prefix: string;
  a: Side;
  b: Side;
  /** Further namespaces made with addNamespace(); destroyTestbed() removes them too. */
  extraNamespaces: string[];
}

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));

/**
 * A WireGuard key pair in base64. From random bytes (protocol/crypto.ts), not from
 * generateKeyPairSync + a JWK export, which Node 20 can deadlock in when a collection during
 * the export finalises the key-generation job (a hung test file in CI).
 */
export function keyPair(): { privateKey: string; publicKey: string } {
  const priv = generatePrivateKey();
  try {
    return { privateKey: priv.toString('base64'), publicKey: publicKeyOf(priv).toString('base64') };
  } finally {
    priv.fill(0);
  }
}

/** Creates the two namespaces and the wire between them. `index` keeps parallel testbeds apart. */
export async function createTestbed(
  prefix: string,
  opts: { mtu?: number; index?: number } = {},
): Promise<Testbed> {
  if (!/^tg[a-z0-9]{1,6}$/.test(prefix))
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `bad testbed prefix '${prefix}'`);
  const i = opts.index ?? 0;
  const side = (tag: 'a' | 'b', n: number): Side => ({
    ns: `${prefix}-${tag}`,
    veth: `${prefix}${tag}v`,
    wireV4: `198.18.${200 + i}.${n}`,
    wireV6: `fd00:198:18:${200 + i}::${n}`,
    tun: `${prefix}${tag}w`,
    tunV4: `100.64.${200 + i}.${n}`,
    tunV6: `fd00:100:64:${200 + i}::${n}`,
    port: 51820 + n,
    ...keyPair(),
  });
  const tb: Testbed = { prefix, a: side('a', 1), b: side('b', 2), extraNamespaces: [] };
  const created: string[] = [];
  try {
    for (const s of [tb.a, tb.b]) {
      await runOk('ip', ['netns', 'add', s.ns]);
      created.push(s.ns);
      await runInOk(s.ns, 'ip', ['link', 'set', 'lo', 'up']);
    }
    await runOk('ip', [
      'link',
      'add',
      tb.a.veth,
      'netns',
      tb.a.ns,
      'type',
      'veth',
      'peer',
      'name',
      tb.b.veth,
      'netns',
      tb.b.ns,
    ]);
    for (const s of [tb.a, tb.b]) {
      await runInOk(s.ns, 'ip', ['addr', 'add', `${s.wireV4}/24`, 'dev', s.veth]);
      await runInOk(s.ns, 'ip', ['-6', 'addr', 'add', `${s.wireV6}/64`, 'dev', s.veth, 'nodad']);
      await runInOk(s.ns, 'ip', ['link', 'set', s.veth, 'mtu', String(opts.mtu ?? 1500), 'up']);
    }
    return tb;
  } catch (err) {
    // Only what this call made: a namespace that already existed belongs to someone else.
    for (const ns of created) await run('ip', ['netns', 'del', ns]);
    throw err;
  }
}

/** How long startDevice waits for a device to serve its UAPI socket. */
export const DEVICE_START_TIMEOUT_MS = 30_000;

/** Where a device named `name` serves the UAPI (wireguard-go and tenguard alike). */
export function uapiSocketPath(name: string): string {
  return `/var/run/wireguard/${name}.sock`;
}

/** The wireguard-go binary used unless told otherwise: the one on PATH. */
export const DEFAULT_WIREGUARD_GO = 'wireguard-go';

/**
 * The command line that runs a device for interface `tun`; `foreground: false` leaves out
 * -f, so the device detaches into the background as `wireguard-go <ifname>` does.
 * `wireguardGo` is the wireguard-go binary (default: the one on PATH); `tenguardBin` the
 * tenguard script (default: this build's bin/tenguard.js; a bench may compare another build).
 */
export function deviceArgv(
  impl: Implementation,
  tun: string,
  foreground = true,
  wireguardGo = DEFAULT_WIREGUARD_GO,
  tenguardBin = BIN,
): string[] {
  const f = foreground ? ['-f'] : [];
  return impl === 'wireguard-go'
    ? [wireguardGo, ...f, tun]
    : [process.execPath, ...DATA_PLANE_NODE_ARGS, tenguardBin, 'device', ...f, tun];
}

/** Creates namespace `<prefix>-<tag>` (loopback up), removed with the testbed. */
export async function addNamespace(tb: Testbed, tag: string): Promise<string> {
  const ns = `${tb.prefix}-${tag}`;
  await runOk('ip', ['netns', 'add', ns]);
  tb.extraNamespaces.push(ns);
  await runInOk(ns, 'ip', ['link', 'set', 'lo', 'up']);
  return ns;
}

/**
 * Waits until the device answers a UAPI get on its socket. The file alone is not enough: a
 * stale socket of an earlier device may still be there, or the file may appear a moment
 * before the device serves it.
 */
async function waitForSocket(name: string, proc: ChildProcess, timeoutMs: number): Promise<void> {
  const path = uapiSocketPath(name);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null)
      throw new TgError('TG_ERR_COMMAND_FAILED', `device for ${name} exited with ${proc.exitCode}`);
    if (existsSync(path)) {
      try {
        await uapiGet(path, 500);
        return;
      } catch {
        // not serving yet
      }
    }
    if (Date.now() > deadline)
      throw new TgError(
        'TG_ERR_COMMAND_FAILED',
        `device for ${name} did not come up in ${timeoutMs} ms (${whereStuck(proc.pid)})`,
      );
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Where process `pid` and its children wait in the kernel (/proc/PID/wchan), for the error of
 * a device that does not come up: a start that waits on the kernel's RTNL lock (held for
 * seconds while the namespaces of an earlier test are torn down) reads as rtnl_lock or
 * netdev_run_todo, a stalled runtime as a futex or epoll wait.
 */
function whereStuck(pid: number | undefined): string {
  if (pid === undefined) return 'no pid';
  const wchan = (p: string): string => {
    try {
      return readFileSync(`/proc/${p}/wchan`, 'utf8') || 'running';
    } catch {
      return 'gone';
    }
  };
  const parts = [`${pid}: ${wchan(String(pid))}`];
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      for (const c of readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim().split(/\s+/)) {
        if (c !== '') parts.push(`child ${c}: ${wchan(c)}`);
      }
    }
  } catch {
    // the process ended meanwhile
  }
  return parts.join(', ');
}

/**
 * Starts a device (in the foreground, owned by us) in the side's namespace. `ip netns exec`
 * execs the device in place, so s.proc.pid is the device's own pid. A device starts in a
 * quarter of a second here, but its start (TUN creation, `ip link set mtu`) takes the
 * kernel's RTNL lock, which the teardown of an earlier test's namespaces can hold for seconds
 * on a loaded host: the wait allows DEVICE_START_TIMEOUT_MS.
 */
export async function startDevice(
  s: Side,
  impl: Implementation,
  env: NodeJS.ProcessEnv = {},
  opts: { wireguardGo?: string; tenguardBin?: string } = {},
): Promise<void> {
  const argv = deviceArgv(impl, s.tun, true, opts.wireguardGo, opts.tenguardBin);
  const proc = spawn('ip', ['netns', 'exec', s.ns, ...argv], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...env },
  });
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  s.proc = proc;
  try {
    await waitForSocket(s.tun, proc, DEVICE_START_TIMEOUT_MS);
  } catch (err) {
    throw new TgError(
      'TG_ERR_COMMAND_FAILED',
      `${impl} on ${s.tun}: ${(err as Error).message}; stderr: ${stderr.trim()}`,
    );
  }
}

/** A tenguard device's tenguard-stats counters (uapiStats; wireguard-go has none and refuses). */
export async function deviceCounters(s: Side): Promise<Record<string, number>> {
  return Object.fromEntries(await uapiStats(uapiSocketPath(s.tun)));
}

/**
 * Waits until a tenguard device's data path warm-up (device/runtime.ts) has finished, so that
 * a measurement starts on the device a live tunnel has after its first second or two, not on
 * one still compiling; returns how long the warm-up took (ms), or null for a device that does
 * not report one (wireguard-go, an older build). Throws after `timeoutMs`.
 */
export async function waitForWarmup(s: Side, timeoutMs = 30_000): Promise<number | null> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const c = await deviceCounters(s);
    if (c['warmup.done'] === undefined) return null;
    if (c['warmup.done'] === 1) return c['warmup.ms'] ?? null;
    if (Date.now() > deadline)
      throw new TgError('TG_ERR_COMMAND_FAILED', `device ${s.tun}: warm-up not done after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface DeviceOptions {
  mtu: number;
  /** Outer transport over IPv6: the peer's endpoint is its wire IPv6 address. */
  v6Outer?: boolean;
  psk?: string;
  keepalive?: number;
  /**
   * Whether the peer's endpoint is configured (default true). Without it the device can only
   * answer: it learns the peer's endpoint from the first authenticated packet.
   */
  endpoint?: boolean;
}

/** Configures side `s` to talk to `peer` with `wg` and `ip`, as an operator would. */
export async function configureDevice(s: Side, peer: Side, opts: DeviceOptions): Promise<void> {
  await configureWg(s, peer, opts);
  await configureAddresses(s.ns, s, opts.mtu);
}

/** The `wg` half of configureDevice: key, listen port, the peer (and its PSK). */
export async function configureWg(s: Side, peer: Side, opts: Omit<DeviceOptions, 'mtu'>): Promise<void> {
  const args = [
    'set',
    s.tun,
    'private-key',
    '/dev/stdin',
    'listen-port',
    String(s.port),
    'peer',
    peer.publicKey,
  ];
  args.push('allowed-ips', `${peer.tunV4}/32,${peer.tunV6}/128`);
  if (opts.endpoint ?? true)
    args.push('endpoint', opts.v6Outer ? `[${peer.wireV6}]:${peer.port}` : `${peer.wireV4}:${peer.port}`);
  if (opts.keepalive !== undefined) args.push('persistent-keepalive', String(opts.keepalive));
  await wgWithSecret(s.ns, args, s.privateKey);
  if (opts.psk !== undefined)
    await wgWithSecret(s.ns, ['set', s.tun, 'peer', peer.publicKey, 'preshared-key', '/dev/stdin'], opts.psk);
}

/**
 * The `ip` half of configureDevice: the side's tunnel addresses, MTU and link up, in `ns`
 * (the side's own namespace, or another one the interface was moved into).
 */
export async function configureAddresses(ns: string, s: Side, mtu: number): Promise<void> {
  await runInOk(ns, 'ip', ['addr', 'add', `${s.tunV4}/24`, 'dev', s.tun]);
  await runInOk(ns, 'ip', ['-6', 'addr', 'add', `${s.tunV6}/64`, 'dev', s.tun, 'nodad']);
  await runInOk(ns, 'ip', ['link', 'set', s.tun, 'mtu', String(mtu), 'up']);
}

/**
 * Runs `wg` with a secret on its standard input, never on a command line or on disk. Node
 * hands a child a socket as stdin, which wg cannot fopen() as /dev/stdin; `cat` turns it
 * into a real pipe.
 */
export async function wgWithSecret(ns: string, args: string[], secret: string): Promise<void> {
  await runInOk(ns, 'sh', ['-c', 'cat | exec wg "$@"', 'wg', ...args], { input: `${secret}\n` });
}

/** Stops a side's device (only the process we started) and waits for it to exit. */
export async function stopDevice(s: Side): Promise<void> {
  const p = s.proc;
  if (!p) return;
  s.proc = undefined;
  await endChild(p, 'SIGTERM');
  await run('ip', ['netns', 'exec', s.ns, 'ip', 'link', 'del', s.tun]);
}

export async function destroyTestbed(tb: Testbed): Promise<void> {
  for (const s of [tb.a, tb.b]) await stopDevice(s).catch(() => undefined);
  for (const ns of [tb.a.ns, tb.b.ns, ...tb.extraNamespaces]) {
    const pids = await run('ip', ['netns', 'pids', ns]);
    for (const pid of pids.stdout.split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await run('ip', ['netns', 'del', ns]);
  }
  // A device killed above cannot remove its UAPI socket; the names carry the testbed's prefix.
  for (const s of [tb.a, tb.b]) rmSync(uapiSocketPath(s.tun), { force: true });
}

export interface IperfResult {
  mbps: number;
  retransmits: number;
  /** Bytes the receiver got. */
  bytes: number;
}

/** One bounded iperf3 TCP run from a to b (b's address given), returns receiver-side Mbit/s. */
export async function iperf(
  a: Side,
  b: Side,
  target: string,
  seconds: number,
  extra: string[] = [],
): Promise<IperfResult> {
  const server = spawn('ip', ['netns', 'exec', b.ns, 'iperf3', '-s', '-1', '-B', target, '-p', '5201'], {
    stdio: 'ignore',
  });
  try {
    await new Promise((r) => setTimeout(r, 300));
    const out = await runInOk(
      a.ns,
      'iperf3',
      ['-c', target, '-p', '5201', '-t', String(seconds), '-J', ...extra],
      {
        timeoutMs: (seconds + 20) * 1000,
      },
    );
    const j = JSON.parse(out) as {
      end: { sum_received: { bits_per_second: number; bytes: number }; sum_sent: { retransmits?: number } };
    };
    return {
      mbps: j.end.sum_received.bits_per_second / 1e6,
      retransmits: j.end.sum_sent.retransmits ?? 0,
      bytes: j.end.sum_received.bytes,
    };
  } finally {
    if (server.exitCode === null) server.kill('SIGKILL');
  }
}
