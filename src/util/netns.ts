// Named network namespaces as iproute2 keeps them (a file per namespace under /run/netns),
// read directly: used by the vSwitch to check a workload's namespace and by the lab.
import { readdirSync } from 'node:fs';
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
