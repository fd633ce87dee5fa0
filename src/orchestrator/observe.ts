// What an operator looks at: the installation's status (orchestrator, hosts with their NIC
// and vSwitch, tenants, workloads, certificate expiry, drops) and the topology of the legs
// (workload - vSwitch - NIC - fabric) with handshake age, bytes and drops. Both are read from
// the store and the agents' APIs at the time of the call; neither carries key material: no
// private key or PSK ever reaches the orchestrator, and public keys are left out too (an
// operator compares fingerprints, which the key inventory has).
//
// An agent that does not answer is reported as such (reachable: false with the reason);
// it never fails the whole answer.
import { X509Certificate } from 'node:crypto';
import type { NicClient } from '../nic/client.js';
import type { VSwitchClient } from '../vswitch/client.js';
import type { HostRecord, NicState, WorkloadRecord } from './model.js';
import { type NicSite, sitesOf, workloadSiteKey } from './nics.js';
import type { OrchestratorService } from './service.js';

/** Prometheus counters summed into a NIC's drops. */
export const DROP_COUNTERS = [
  'tenguard_nic_forward_dropped_total',
  'tenguard_nic_engine_dropped_total',
  'tenguard_nic_io_dropped_total',
  'tenguard_policy_drops_total',
] as const;

/** Sums each metric's samples over its labels (text exposition format 0.0.4). */
export function sumSamples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    // Label values are quoted and may hold '}' (escaped quotes inside).
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)/.exec(line);
    if (m === null) continue;
    const v = Number(m[2]);
    if (!Number.isFinite(v)) continue;
    out.set(m[1], (out.get(m[1]) ?? 0) + v);
  }
  return out;
}

export interface CertificateExpiry {
  /** Whose certificate: 'orchestrator', 'nic h1', 'operator' (added by the CLI). */
  holder: string;
  spiffeId: string | null;
  notAfter: string;
  secondsLeft: number;
}

export function certificateExpiry(holder: string, pem: string, now = Date.now()): CertificateExpiry | null {
  try {
    const c = new X509Certificate(pem);
    const notAfter = new Date(c.validTo);
    const uri = /URI:(spiffe:\/\/[^,\s]+)/.exec(c.subjectAltName ?? '');
    return {
      holder,
      spiffeId: uri?.[1] ?? null,
      notAfter: notAfter.toISOString(),
      secondsLeft: Math.round((notAfter.getTime() - now) / 1000),
    };
  } catch {
    return null;
  }
}

function ageSeconds(iso: unknown, now: number): number | null {
  if (typeof iso !== 'string') return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : Math.max(0, Math.round((now - t) / 1000));
}

function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message.slice(0, 300) : String(err).slice(0, 300);
}

export interface ObservedAgents {
  of(host: HostRecord): { nic: NicClient; vswitch: VSwitchClient };
}

export interface NicDrops {
  total: number;
  byCounter: Record<string, number>;
}

async function nicDrops(nic: NicClient): Promise<NicDrops> {
  const sums = sumSamples(await nic.metrics());
  const byCounter: Record<string, number> = {};
  let total = 0;
  for (const name of DROP_COUNTERS) {
    const v = sums.get(name) ?? 0;
    byCounter[name] = v;
    total += v;
  }
  return { total, byCounter };
}

export type NicStatus =
  | {
      reachable: true;
      dataPlane: boolean;
      uptimeSeconds: number;
      tenants: number;
      workloads: number;
      remotePeers: number;
      keys: number;
      apiVersion: string;
      drops: NicDrops;
    }
  | { reachable: false; error: string };

export interface HostStatus {
  name: string;
  /** The host's (first) NIC. */
  nic: NicStatus;
  vswitch: { reachable: true; instances: number } | { reachable: false; error: string };
  /** On a host with several NICs: each of them, with its state (nics.ts). */
  nics?: (NicStatus & { nic: string; state: NicState })[];
}

export interface InstallationStatus {
  at: string;
  orchestrator: {
    status: 'ok';
    revision: number;
    uptimeSeconds: number;
    reconcilePasses: number;
    lastReconcile: { revision: number; ms: number; errors: number; unreachable: string[] } | null;
    tls: boolean;
  };
  hosts: HostStatus[];
  tenants: { count: number; withPolicy: number };
  workloads: { count: number; byState: Record<string, number> };
  certificates: CertificateExpiry[];
  drops: { total: number; byHost: Record<string, number> };
}

export interface StatusInputs {
  service: OrchestratorService;
  agents: ObservedAgents;
  revision: number;
  startedAt: number;
  reconcilePasses: number;
  lastReconcile: {
    revision: number;
    ms: number;
    errors: string[];
    unreachable: Record<string, string>;
  } | null;
  /** The orchestrator's own certificate (PEM), when it serves over mTLS. */
  certificatePem: string | null;
}

export async function installationStatus(s: StatusInputs, now = Date.now()): Promise<InstallationStatus> {
  const hosts = await s.service.listHosts();
  const tenants = await s.service.listTenants();
  const workloads = await s.service.listWorkloads();
  let withPolicy = 0;
  for (const t of tenants)
    if (
      await s.service.getPolicy(t.name).then(
        () => true,
        () => false,
      )
    )
      withPolicy++;
  const byState: Record<string, number> = {};
  for (const w of workloads) byState[w.state] = (byState[w.state] ?? 0) + 1;
  const certificates: CertificateExpiry[] = [];
  if (s.certificatePem !== null) {
    const c = certificateExpiry('orchestrator', s.certificatePem, now);
    if (c !== null) certificates.push(c);
  }
  const nicStatus = async (
    site: NicSite,
    nicClient: NicClient,
  ): Promise<{ status: NicStatus; cert: CertificateExpiry | null }> => {
    const r = await Promise.all([nicClient.health(), nicDrops(nicClient), nicClient.identity()]).then(
      ([health, drops, identity]) => ({ health, drops, identity }),
      (err: unknown) => ({ error: reason(err) }),
    );
    if ('error' in r) return { status: { reachable: false, error: r.error }, cert: null };
    const pem = r.identity.nicCertificate;
    return {
      status: {
        reachable: true,
        dataPlane: r.health.dataPlane,
        uptimeSeconds: r.health.uptimeSeconds,
        tenants: r.health.tenants,
        workloads: r.health.workloads,
        remotePeers: r.health.remotePeers,
        keys: r.health.keys,
        apiVersion: r.health.apiVersion,
        drops: r.drops,
      },
      cert: pem === undefined ? null : certificateExpiry(`nic ${site.name}`, pem, now),
    };
  };
  const hostStatus = await Promise.all(
    hosts.map(async (h): Promise<HostStatus & { certs: CertificateExpiry[]; dropsTotal: number }> => {
      const sites = sitesOf(h);
      const [nics, vswitch] = await Promise.all([
        Promise.all(sites.map((site) => nicStatus(site, s.agents.of(site).nic))),
        s.agents
          .of(h)
          .vswitch.list()
          .then(
            (l) => ({ reachable: true as const, instances: l.length }),
            (err: unknown) => ({ reachable: false as const, error: reason(err) }),
          ),
      ]);
      let dropsTotal = 0;
      for (const n of nics) if (n.status.reachable) dropsTotal += n.status.drops.total;
      return {
        name: h.name,
        nic: nics[0].status,
        vswitch,
        ...(sites.length > 1
          ? { nics: sites.map((site, i) => ({ nic: site.nic, state: site.nicState, ...nics[i].status })) }
          : {}),
        certs: nics.flatMap((n) => (n.cert === null ? [] : [n.cert])),
        dropsTotal,
      };
    }),
  );
  const byHost: Record<string, number> = {};
  let total = 0;
  for (const h of hostStatus) {
    certificates.push(...h.certs);
    if (h.nic.reachable || (h.nics ?? []).some((n) => n.reachable)) {
      byHost[h.name] = h.dropsTotal;
      total += h.dropsTotal;
    }
  }
  const last = s.lastReconcile;
  return {
    at: new Date(now).toISOString(),
    orchestrator: {
      status: 'ok',
      revision: s.revision,
      uptimeSeconds: Math.round((now - s.startedAt) / 1000),
      reconcilePasses: s.reconcilePasses,
      lastReconcile:
        last === null
          ? null
          : {
              revision: last.revision,
              ms: last.ms,
              errors: last.errors.length,
              unreachable: Object.keys(last.unreachable),
            },
      tls: s.certificatePem !== null,
    },
    hosts: hostStatus.map(({ certs: _c, dropsTotal: _d, ...h }) => h),
    tenants: { count: tenants.length, withPolicy },
    workloads: { count: workloads.length, byState },
    certificates,
    drops: { total, byHost },
  };
}

// ---------------------------------------------------------------------------------------
// Topology

export interface OnHostLeg {
  session: boolean;
  lastHandshake: string | null;
  handshakeAgeSeconds: number | null;
  rxBytes: number;
  txBytes: number;
}

export interface FabricLeg {
  tenant: string;
  /** The host whose NIC is at the other end, when the orchestrator knows it. */
  peerHost: string | null;
  endpoint: string;
  session: boolean;
  lastHandshake: string | null;
  handshakeAgeSeconds: number | null;
  rxBytes: number;
  txBytes: number;
}

export interface TopologyHost {
  /** The host's name, or `HOST/NIC` for a host's NIC after its first (nics.ts). */
  name: string;
  nic: { reachable: true; drops: NicDrops; fabricEndpoint: string } | { reachable: false; error: string };
  vswitch: { reachable: true } | { reachable: false; error: string };
  fabric: FabricLeg[];
}

export interface TopologyWorkload {
  name: string;
  tenant: string;
  host: string;
  /** The NIC carrying it, on a host with several. */
  nic?: string;
  address: string;
  state: string;
  netns: string;
  vswitch: { state: string; pid: number | null; ifname: string; netnsIfname: string } | null;
  onHost: OnHostLeg | null;
}

export interface Topology {
  at: string;
  hosts: TopologyHost[];
  workloads: TopologyWorkload[];
}

export async function topology(
  service: OrchestratorService,
  agents: ObservedAgents,
  now = Date.now(),
): Promise<Topology> {
  const hostRecords = await service.listHosts();
  const hostMap = new Map(hostRecords.map((h) => [h.name, h] as const));
  // One entry per NIC (a host's first NIC under the host's name).
  const hosts = hostRecords.flatMap(sitesOf);
  const workloads = await service.listWorkloads();
  const seen = await Promise.all(
    hosts.map(async (h) => {
      const a = agents.of(h);
      const nic = await Promise.all([
        a.nic.identity(),
        a.nic.workloads(),
        a.nic.tenants(),
        nicDrops(a.nic),
      ]).then(
        ([identity, wl, tenants, drops]) => ({ identity, wl, tenants, drops }),
        (err: unknown) => ({ error: reason(err) }),
      );
      const vswitch = await a.vswitch.list().then(
        (l) => ({ list: l }),
        (err: unknown) => ({ error: reason(err) }),
      );
      return { h, nic, vswitch };
    }),
  );
  const hostOfIdentity = new Map<string, string>();
  for (const s of seen) if (!('error' in s.nic)) hostOfIdentity.set(s.nic.identity.identityKey, s.h.name);

  const topoHosts: TopologyHost[] = seen.map(({ h, nic, vswitch }) => {
    if ('error' in nic)
      return {
        name: h.name,
        nic: { reachable: false, error: nic.error },
        vswitch: 'error' in vswitch ? { reachable: false, error: vswitch.error } : { reachable: true },
        fabric: [],
      };
    const fabric: FabricLeg[] = [];
    for (const t of nic.tenants) {
      const peers = Array.isArray(t.peers) ? (t.peers as Record<string, unknown>[]) : [];
      for (const p of peers)
        fabric.push({
          tenant: String(t.tenant),
          peerHost: hostOfIdentity.get(String(p.nicIdentityKey)) ?? null,
          endpoint: String(p.endpoint ?? ''),
          session: p.session === true,
          lastHandshake: typeof p.lastHandshake === 'string' ? p.lastHandshake : null,
          handshakeAgeSeconds: ageSeconds(p.lastHandshake, now),
          rxBytes: num(p.rxBytes),
          txBytes: num(p.txBytes),
        });
    }
    return {
      name: h.name,
      nic: { reachable: true, drops: nic.drops, fabricEndpoint: nic.identity.fabricEndpoint },
      vswitch: 'error' in vswitch ? { reachable: false, error: vswitch.error } : { reachable: true },
      fabric,
    };
  });

  const byHost = new Map(seen.map((s) => [s.h.name, s]));
  const topoWorkloads = workloads.map((w: WorkloadRecord): TopologyWorkload => {
    const s = byHost.get(workloadSiteKey(w, hostMap));
    const inst =
      s === undefined || 'error' in s.vswitch ? undefined : s.vswitch.list.find((i) => i.workload === w.name);
    const leg =
      s === undefined || 'error' in s.nic
        ? undefined
        : s.nic.wl.find((x) => x.workload === w.name && x.tenant === w.tenant);
    return {
      name: w.name,
      tenant: w.tenant,
      host: w.host,
      ...(w.nic !== undefined ? { nic: w.nic } : {}),
      address: w.address,
      state: w.state,
      netns: w.netns,
      vswitch:
        inst === undefined
          ? null
          : { state: inst.state, pid: inst.pid, ifname: inst.ifname, netnsIfname: inst.netnsIfname },
      onHost:
        leg === undefined
          ? null
          : {
              session: leg.session === true,
              lastHandshake: typeof leg.lastHandshake === 'string' ? leg.lastHandshake : null,
              handshakeAgeSeconds: ageSeconds(leg.lastHandshake, now),
              rxBytes: num(leg.rxBytes),
              txBytes: num(leg.txBytes),
            },
    };
  });
  return { at: new Date(now).toISOString(), hosts: topoHosts, workloads: topoWorkloads };
}
