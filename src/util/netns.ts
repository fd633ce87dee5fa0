// Named network namespaces as iproute2 keeps them (a file per namespace under /run/netns),
// read directly: used by the vSwitch to check a workload's namespace and by the lab; and a
// namespace's resolver configuration (/etc/netns/NAME/resolv.conf, which `ip netns exec`
// bind-mounts over /etc/resolv.conf), written by the orchestrator for the namespaces it makes.
import { mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TgError } from './errors.js';

const NETNS_DIR = '/run/netns';

/** Names of all named network namespaces (the files `ip netns add` creates). */
export function listNamespaces(): string[] {
  try {
    return readdirSync(NETNS_DIR).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new TgError('TG_ERR_INTERNAL', `cannot list ${NETNS_DIR}`, { cause: err });
  }
}

export function namespaceExists(ns: string): boolean {
  return listNamespaces().includes(ns);
}

const NETNS_ETC = '/etc/netns';
const RESOLVER_MARK = '# tenguard: the tenant DNS server at the NIC';

/** Writes a namespace's resolver configuration: one name server and a search domain. */
export function writeNetnsResolver(name: string, nameserver: string, search: string): void {
  const dir = join(NETNS_ETC, name);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  writeFileSync(join(dir, 'resolv.conf'), `${RESOLVER_MARK}\nnameserver ${nameserver}\nsearch ${search}\n`, {
    mode: 0o644,
  });
}

/**
 * Removes a resolver configuration writeNetnsResolver wrote (only such a file), and the
 * namespace's /etc/netns directory when that leaves it empty. Absent is fine.
 */
export function removeNetnsResolver(name: string): void {
  const dir = join(NETNS_ETC, name);
  const file = join(dir, 'resolv.conf');
  try {
    if (!readFileSync(file, 'utf8').startsWith(RESOLVER_MARK)) return;
    rmSync(file, { force: true });
    if (readdirSync(dir).length === 0) rmdirSync(dir);
  } catch {
    // absent
  }
}

/** removeNetnsResolver for every namespace name under /etc/netns that starts with `prefix`. */
export function removeNetnsResolvers(prefix: string): void {
  let names: string[];
  try {
    names = readdirSync(NETNS_ETC);
  } catch {
    return;
  }
  for (const n of names) if (n.startsWith(prefix)) removeNetnsResolver(n);
}
