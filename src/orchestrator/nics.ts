// A host's smart NICs (DESIGN.md section 7): what a host registered for each, where each
// workload is carried, and the placement rule. Pure functions over records; the lifecycle and
// the reconciler drive the agents.
//
// A NIC site is one NIC of one host, shaped as a HostRecord (its `nicApi` is that NIC's API,
// `vswitchApi` the host's vSwitch daemon) so the lifecycle drives it as it drives a host. Its
// `name` keys everything the orchestrator knows per NIC (views, peer puts, agent health): the
// host's name for the host's first NIC (so a one-NIC host is keyed as before), `HOST/NIC` for
// the others.
//
// Placement: a workload goes to the host's NIC in state 'ok' carrying the fewest workloads
// (those not being deleted), ties broken by the NIC's name; a NIC 'failed' or 'draining'
// takes none.
import { TgError } from '../util/errors.js';
import type { HostRecord, NicRecord, NicState, WorkloadRecord } from './model.js';

export interface NicSite extends HostRecord {
  /** The host's name (`name` is the site's key). */
  host: string;
  /** The NIC's name on its host. */
  nic: string;
  nicState: NicState;
  fabricAddress?: string;
}

/** A host's NICs: the ones it registered, or its one NIC (`nic1`, at `nicApi`). */
export function hostNics(h: HostRecord): NicRecord[] {
  return h.nics !== undefined && h.nics.length > 0 ? h.nics : [{ name: 'nic1', api: h.nicApi, state: 'ok' }];
}

/** The key of a host's NIC (see the header). */
export function siteKey(h: HostRecord, nic: string): string {
  return nic === hostNics(h)[0].name ? h.name : `${h.name}/${nic}`;
}

export function siteOf(h: HostRecord, n: NicRecord): NicSite {
  return {
    ...h,
    name: siteKey(h, n.name),
    nicApi: n.api,
    host: h.name,
    nic: n.name,
    nicState: n.state,
    ...(n.fabricAddress !== undefined ? { fabricAddress: n.fabricAddress } : {}),
  };
}

/** Every NIC of a host as a site, in registration order. */
export function sitesOf(h: HostRecord): NicSite[] {
  return hostNics(h).map((n) => siteOf(h, n));
}

/** The NIC a workload is carried by: its record's, else its host's first. */
export function nicOf(w: WorkloadRecord, h: HostRecord): string {
  return w.nic ?? hostNics(h)[0].name;
}

/** The site carrying a workload on its host. */
export function workloadSite(w: WorkloadRecord, h: HostRecord): NicSite {
  const name = nicOf(w, h);
  const n = hostNics(h).find((x) => x.name === name);
  if (n === undefined)
    throw new TgError('TG_ERR_NOT_FOUND', `workload '${w.name}': host '${h.name}' has no NIC '${name}'`);
  return siteOf(h, n);
}

/** The site key of a workload's NIC (`hosts`: the registered hosts by name). */
export function workloadSiteKey(w: WorkloadRecord, hosts: ReadonlyMap<string, HostRecord>): string {
  const h = hosts.get(w.host);
  return h === undefined ? w.host : siteKey(h, nicOf(w, h));
}

/** How many workloads (not being deleted) each NIC of a host carries. */
export function nicLoads(h: HostRecord, workloads: readonly WorkloadRecord[]): Map<string, number> {
  const loads = new Map<string, number>(hostNics(h).map((n) => [n.name, 0]));
  for (const w of workloads) {
    if (w.host !== h.name || w.state === 'deleting') continue;
    const n = nicOf(w, h);
    loads.set(n, (loads.get(n) ?? 0) + 1);
  }
  return loads;
}

/**
 * The NIC a new (or moving) workload goes to on host `h` (the rule in the header); `except`
 * is left out (the NIC it leaves). Null when no NIC may take it.
 */
export function placeOnNic(
  h: HostRecord,
  workloads: readonly WorkloadRecord[],
  except?: string,
): string | null {
  const loads = nicLoads(h, workloads);
  let best: { name: string; load: number } | null = null;
  for (const n of hostNics(h)) {
    if (n.state !== 'ok' || n.name === except) continue;
    const load = loads.get(n.name) ?? 0;
    if (best === null || load < best.load || (load === best.load && n.name < best.name))
      best = { name: n.name, load };
  }
  return best?.name ?? null;
}

/** The host record with one NIC's state changed (the NIC must exist). */
export function withNicState(h: HostRecord, nic: string, state: NicState, at: string): HostRecord {
  const nics = hostNics(h);
  if (!nics.some((n) => n.name === nic))
    throw new TgError('TG_ERR_NOT_FOUND', `host '${h.name}' has no NIC '${nic}'`);
  return { ...h, nics: nics.map((n) => (n.name === nic ? { ...n, state, since: at } : n)) };
}
