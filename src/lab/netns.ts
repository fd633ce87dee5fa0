// Network-namespace and link primitives over iproute2. Many operations go through one
// `ip -batch -` call, so that building or removing a lab costs a handful of processes.
import { TgError } from '../util/errors.js';
import { run, runOk } from '../util/exec.js';
import { namespaceExists } from '../util/netns.js';

/**
 * Runs iproute2 commands (one per line, without the leading `ip`) in one process, in
 * namespace `ns` when given. With `force`, a failing line does not stop the rest and the
 * call does not throw: used for teardown, where some objects may already be gone.
 */
export async function ipBatch(
  lines: readonly string[],
  opts: { ns?: string; force?: boolean } = {},
): Promise<void> {
  if (lines.length === 0) return;
  const args = [...(opts.ns ? ['-n', opts.ns] : []), ...(opts.force ? ['-force'] : []), '-batch', '-'];
  const input = `${lines.join('\n')}\n`;
  if (opts.force) {
    await run('ip', args, { input, timeoutMs: 30_000 });
    return;
  }
  await runOk('ip', args, { input, timeoutMs: 30_000 });
}

interface IpLink {
  ifname: string;
  flags?: string[];
  operstate?: string;
  addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[];
}

/** Names of the links in the root namespace. */
export async function listRootLinks(): Promise<string[]> {
  const out = await runOk('ip', ['-j', 'link', 'show']);
  return (JSON.parse(out) as IpLink[]).map((l) => l.ifname);
}

export interface InterfaceInfo {
  name: string;
  /** Administratively up (IFF_UP). */
  up: boolean;
  /** The carrier is on (LOWER_UP): the link passes traffic. */
  carrier: boolean;
  /** As the kernel reports it; it may lag the carrier by up to a second (linkwatch). */
  operstate: string;
  /** Global and site addresses in CIDR form (link-local ones left out). */
  addrs: string[];
}

/** The interfaces of a namespace with their state and addresses; [] when the namespace is gone. */
export async function namespaceInterfaces(ns: string): Promise<InterfaceInfo[]> {
  const r = await run('ip', ['-n', ns, '-j', 'addr', 'show']);
  if (r.code !== 0) return [];
  return (JSON.parse(r.stdout || '[]') as IpLink[]).map((l) => ({
    name: l.ifname,
    up: (l.flags ?? []).includes('UP'),
    carrier: (l.flags ?? []).includes('LOWER_UP'),
    operstate: l.operstate ?? 'UNKNOWN',
    addrs: (l.addr_info ?? []).filter((a) => a.scope !== 'link').map((a) => `${a.local}/${a.prefixlen}`),
  }));
}

export interface LinkReadiness {
  name: string;
  operstate: string;
  /** For a bridge port, its STP state (`forwarding` once it passes traffic). */
  bridgePortState?: string;
}

/** Operational state of each link in a namespace (with bridge-port state); [] when the namespace is gone. */
export async function namespaceLinkReadiness(ns: string): Promise<LinkReadiness[]> {
  const r = await run('ip', ['-n', ns, '-j', '-d', 'link', 'show']);
  if (r.code !== 0) return [];
  type Detailed = IpLink & { linkinfo?: { info_slave_kind?: string; info_slave_data?: { state?: string } } };
  return (JSON.parse(r.stdout || '[]') as Detailed[]).map((l) => ({
    name: l.ifname,
    operstate: l.operstate ?? 'UNKNOWN',
    ...(l.linkinfo?.info_slave_kind === 'bridge'
      ? { bridgePortState: l.linkinfo.info_slave_data?.state ?? '' }
      : {}),
  }));
}

/** Pids of the processes whose network namespace is `ns`. */
export async function namespacePids(ns: string): Promise<number[]> {
  const r = await run('ip', ['netns', 'pids', ns]);
  if (r.code !== 0) {
    if (!namespaceExists(ns)) return [];
    throw new TgError('TG_ERR_COMMAND_FAILED', `ip netns pids ${ns} exited ${r.code}: ${r.stderr.trim()}`);
  }
  return r.stdout
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number)
    .filter((pid) => pid !== process.pid);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false; // already gone
  }
}

/**
 * Ends every process inside the given namespaces: SIGTERM, then SIGKILL for those still
 * there after `graceMs`. Only pids that `ip netns pids` reports for these namespaces are
 * signalled. Returns the pids that were signalled.
 */
export async function killNamespaceProcesses(
  namespaces: readonly string[],
  graceMs = 1500,
): Promise<number[]> {
  const list = async (): Promise<number[]> =>
    [...new Set((await Promise.all(namespaces.map(namespacePids))).flat())].sort((a, b) => a - b);
  const signalled = new Set<number>();
  let pids = await list();
  if (pids.length === 0) return [];
  const deadline = Date.now() + graceMs;
  while (pids.length > 0 && Date.now() < deadline) {
    for (const pid of pids) {
      if (!signalled.has(pid) && signal(pid, 'SIGTERM')) signalled.add(pid);
    }
    await sleep(50);
    pids = await list();
  }
  for (let round = 0; pids.length > 0 && round < 20; round++) {
    for (const pid of pids) if (signal(pid, 'SIGKILL')) signalled.add(pid);
    await sleep(50);
    pids = await list();
  }
  if (pids.length > 0) {
    throw new TgError(
      'TG_ERR_COMMAND_FAILED',
      `processes ${pids.join(', ')} survived SIGKILL in lab namespaces`,
    );
  }
  return [...signalled].sort((a, b) => a - b);
}

/** Names safe to put on an `ip -batch` line (which splits on white space). */
const BATCH_SAFE = /^[A-Za-z0-9._@:-]+$/;

/** Runs `ip <verb...> <name>` for each name: batched for plain names, one call for any other. */
async function forEachName(names: readonly string[], verb: string[]): Promise<void> {
  const plain = names.filter((n) => BATCH_SAFE.test(n));
  await ipBatch(
    plain.map((n) => `${verb.join(' ')} ${n}`),
    { force: true },
  );
  for (const n of names.filter((x) => !BATCH_SAFE.test(x))) await run('ip', [...verb, n]);
}

export async function deleteNamespaces(namespaces: readonly string[]): Promise<void> {
  await forEachName(namespaces, ['netns', 'del']);
}

export async function deleteRootLinks(links: readonly string[]): Promise<void> {
  await forEachName(links, ['link', 'del']);
}
