// What a lab looks like on the machine, compared with its plan: which namespaces and
// interfaces exist, are up and carry their addresses, and what carries the prefix without
// being in the plan (leftovers).
import { TgError } from '../util/errors.js';
import { findLabObjects } from './build.js';
import { type InterfaceInfo, namespaceInterfaces } from './netns.js';
import { mapLimit } from './parallel.js';
import { planInterfaces, planNodes, validatePrefix } from './plan.js';
import { type LabState, planOf, readLabState } from './state.js';

/**
 * ready: built and every planned object is in place; degraded: built but something is
 * missing, down or extra; building: a build is running; crashed: a build stopped half-way
 * (its process is gone); orphaned: objects carry the prefix but there is no state file.
 */
export type LabCondition = 'ready' | 'degraded' | 'building' | 'crashed' | 'orphaned';

export interface NamespaceStatus {
  /** Node name (`fabric`, `h1`, `h1-nic`, `h1-t1-w1`), or null for a namespace outside the plan. */
  node: string | null;
  name: string;
  exists: boolean;
  loUp: boolean;
  interfaces: InterfaceInfo[];
}

export interface InterfaceStatus {
  ns: string;
  name: string;
  exists: boolean;
  up: boolean;
  carrier: boolean;
  operstate: string;
  addrs: string[];
  expectedAddrs: string[];
  /** Exists, is up with its carrier on, and holds every planned address. */
  ok: boolean;
}

export interface LabStatus {
  prefix: string;
  condition: LabCondition;
  state: LabState | null;
  builderAlive: boolean;
  namespaces: NamespaceStatus[];
  interfaces: InterfaceStatus[];
  /** Objects that carry the prefix but are not in the plan. */
  extra: { namespaces: string[]; links: string[] };
  healthy: boolean;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Inspects lab `prefix`; TG_ERR_LAB_NOT_FOUND when it has neither a state file nor any object. */
export async function labStatus(prefix: string): Promise<LabStatus> {
  validatePrefix(prefix);
  const state = readLabState(prefix);
  const found = await findLabObjects(prefix);
  if (state === null && found.namespaces.length === 0 && found.links.length === 0) {
    throw new TgError(
      'TG_ERR_LAB_NOT_FOUND',
      `no lab '${prefix}': no state file, namespace or link carries it`,
    );
  }
  const existing = new Set(found.namespaces);
  const nodes = state ? planNodes(planOf(state)) : new Map<string, string>();
  const planned = new Set(nodes.values());
  const entries: { node: string | null; name: string }[] = [
    ...[...nodes].map(([node, name]) => ({ node, name })),
    ...found.namespaces.filter((n) => !planned.has(n)).map((name) => ({ node: null, name })),
  ];
  const namespaces = await mapLimit(entries, 4, async ({ node, name }): Promise<NamespaceStatus> => {
    const interfaces = existing.has(name) ? await namespaceInterfaces(name) : [];
    const lo = interfaces.find((i) => i.name === 'lo');
    return { node, name, exists: existing.has(name), loUp: lo?.up ?? false, interfaces };
  });
  const byNs = new Map(namespaces.map((n) => [n.name, n.interfaces]));
  const interfaces: InterfaceStatus[] = (state ? planInterfaces(planOf(state)) : []).map((p) => {
    const info = byNs.get(p.ns)?.find((i) => i.name === p.name);
    const addrs = info?.addrs ?? [];
    return {
      ns: p.ns,
      name: p.name,
      exists: info !== undefined,
      up: info?.up ?? false,
      carrier: info?.carrier ?? false,
      operstate: info?.operstate ?? 'ABSENT',
      addrs,
      expectedAddrs: p.addrs,
      ok: info?.up === true && info.carrier && p.addrs.every((a) => addrs.includes(a)),
    };
  });
  const extra = { namespaces: found.namespaces.filter((n) => !planned.has(n)), links: found.links };
  const builderAlive = state !== null && processAlive(state.builder.pid);
  const complete =
    namespaces.every((n) => n.node === null || (n.exists && n.loUp)) &&
    interfaces.every((i) => i.ok) &&
    extra.namespaces.length === 0 &&
    extra.links.length === 0;
  let condition: LabCondition;
  if (state === null) condition = 'orphaned';
  else if (state.status === 'building') condition = builderAlive ? 'building' : 'crashed';
  else condition = complete ? 'ready' : 'degraded';
  return {
    prefix,
    condition,
    state,
    builderAlive,
    namespaces,
    interfaces,
    extra,
    healthy: condition === 'ready',
  };
}
