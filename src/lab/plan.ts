// The lab's naming and addressing plan: pure functions from (prefix, size) to every
// namespace, interface and address the lab will hold. No I/O here, so the plan can be
// checked in unit tests and used by code that only needs to know where things are.
//
// Ownership rule: an object (namespace or link) belongs to the lab with prefix P when its
// name is P or begins with "P-". The dash keeps prefixes apart: `tg` never owns `tglab-h1`.
//
// Addresses (all inside lab namespaces only; the root namespace gets none of them):
//   fabric          198.18.0.0/24        fd00:198:18::/64      bridge .1 / ::1, NIC h at .(10+h) / ::(10+h)
//   PCIe link of h  198.19.h.0/30        fd00:198:19:h::/64    host .1 / ::1, NIC .2 / ::2
//   NIC k>1 of h    fabric .(10+16(k-1)+h) / ::(same); PCIe link 198.19.h.(4(k-1))/30 and
//                   fd00:198:19:(100k+h)::/64, host .(4(k-1)+1) / ::1, NIC .(4(k-1)+2) / ::2
//                   (`--nics N`: NIC 1 keeps the names and addresses of a one-NIC lab)
//   overlay of t    100.64.t.0/24        fd64:6440:t00::/64    workload hN-tT-wW at .(10N+W) / the
//                                                             IPv6 address derived from it
//                                                             (orchestrator/pool.ts: t=1 ->
//                                                             fd64:6440:100::/64, .11 -> ::6440:10b)
// The overlay addresses are planned and recorded only: until the tunnel exists the lab
// configures no overlay.
import { address6Of, OVERLAY6_RANGE, parsePool, pool6Of } from '../orchestrator/pool.js';
import { TgError } from '../util/errors.js';

/** Upper bounds that keep names within 15 characters and a lab buildable in seconds. */
export const LAB_LIMITS = Object.freeze({
  hosts: 16,
  tenants: 8,
  workloads: 8,
  /** Workload namespaces in the whole lab (hosts * tenants * workloads). */
  totalWorkloads: 256,
  /** NICs per host. */
  nics: 4,
});

export const PREFIX_RE = /^tg[a-z0-9]{0,5}$/;
export const DEFAULT_PREFIX = 'tglab';
/** Linux IFNAMSIZ - 1. */
export const IFNAME_MAX = 15;
/** MTU of the lab's links (fabric and host links) unless a build asks for another. */
export const LAB_MTU = 1500;
/** Link MTUs a lab may be built with (the range tenant traffic is tested over). */
export const LAB_MTU_RANGE = Object.freeze({ min: 1280, max: 9000 });

export interface LabSize {
  hosts: number;
  tenants: number;
  /** Workloads per tenant per host. */
  workloads: number;
  /** NICs per host (absent: 1). */
  nics?: number;
}

export interface PcieLink {
  subnetV4: string;
  subnetV6: string;
  /** Interface in the host namespace. */
  hostIf: string;
  /** Interface in the NIC namespace. */
  nicIf: string;
  hostV4: string;
  nicV4: string;
  hostV6: string;
  nicV6: string;
}

export interface FabricPort {
  /** The NIC's network port, in the NIC namespace. */
  nicIf: string;
  /** Its peer, a port of the fabric bridge in the fabric namespace. */
  bridgeIf: string;
  nicV4: string;
  nicV6: string;
}

export interface HostPlan {
  /** `h1` .. `hN`; also the node name of the host namespace. */
  name: string;
  index: number;
  hostNs: string;
  /** Node name of the NIC namespace, `hN-nic`. */
  nicNode: string;
  nicNs: string;
  pcie: PcieLink;
  fabric: FabricPort;
  /** Where the NIC agent's management API socket goes (root-namespace Unix socket). */
  nicApiSocket: string;
  /** The host's NICs after the first (`--nics N`, N > 1): `nic2` .. `nicN`. */
  extraNics?: NicPlan[];
}

/** One NIC of a host: its namespace, its PCIe link to the host, its fabric port and API socket. */
export interface NicPlan {
  /** `nic1` .. `nicN` (the name the host registers it with). */
  name: string;
  /** Node name of its namespace: `hN-nic` for NIC 1, `hN-nicK` for NIC K. */
  node: string;
  ns: string;
  pcie: PcieLink;
  fabric: FabricPort;
  apiSocket: string;
}

export interface TenantPlan {
  /** `t1` .. `tT`. */
  name: string;
  index: number;
  overlayV4: string;
  overlayV6: string;
}

export interface WorkloadPlan {
  /** `hN-tT-wW`; also the node name of its namespace. */
  name: string;
  ns: string;
  host: string;
  tenant: string;
  /** 1-based index among the tenant's workloads on this host. */
  index: number;
  /** Planned overlay addresses (host addresses, no prefix length); not configured by the lab. */
  overlayV4: string;
  overlayV6: string;
}

export interface FabricPlan {
  ns: string;
  bridge: string;
  subnetV4: string;
  subnetV6: string;
  bridgeV4: string;
  bridgeV6: string;
}

export interface LabPlan {
  prefix: string;
  size: LabSize;
  mtu: number;
  /** Root-namespace directory for the lab's sockets and runtime files. */
  runDir: string;
  fabric: FabricPlan;
  hosts: HostPlan[];
  tenants: TenantPlan[];
  workloads: WorkloadPlan[];
}

/** One interface the lab configures, with the addresses it carries (CIDR form). */
export interface PlannedInterface {
  ns: string;
  name: string;
  addrs: string[];
}

export const LAB_STATE_DIR = '/run/tenguard/lab';

/**
 * Every address the lab uses lies in one of these ranges, and only inside lab namespaces.
 * The IPv6 ranges are /48s of fd00::/8 that stay clear of fd00::/64, which hosts (this
 * one included) often use for their own network.
 */
export const LAB_RANGES: readonly string[] = Object.freeze([
  '198.18.0.0/15',
  '100.64.0.0/10',
  'fd00:198:18::/48',
  'fd00:198:19::/48',
  OVERLAY6_RANGE,
]);

export function validatePrefix(prefix: unknown): string {
  if (typeof prefix !== 'string' || !PREFIX_RE.test(prefix)) {
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `bad lab prefix ${JSON.stringify(prefix)}: it must match ${PREFIX_RE} ('tg' then up to 5 of a-z0-9)`,
    );
  }
  return prefix;
}

/** Workloads may be 0: a lab whose workload namespaces an orchestrator creates itself. */
function validateCount(what: keyof LabSize, value: unknown): number {
  const max = LAB_LIMITS[what];
  const min = what === 'workloads' ? 0 : 1;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `bad number of ${what} ${JSON.stringify(value)}: it must be an integer from ${min} to ${max}`,
    );
  }
  return value;
}

export function validateSize(size: {
  hosts: unknown;
  tenants: unknown;
  workloads: unknown;
  nics?: unknown;
}): LabSize {
  const s: LabSize = {
    hosts: validateCount('hosts', size.hosts),
    tenants: validateCount('tenants', size.tenants),
    workloads: validateCount('workloads', size.workloads),
  };
  if (size.nics !== undefined) {
    const n = validateCount('nics', size.nics);
    if (n > 1) s.nics = n;
  }
  const total = s.hosts * s.tenants * s.workloads;
  if (total > LAB_LIMITS.totalWorkloads) {
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `${s.hosts} hosts x ${s.tenants} tenants x ${s.workloads} workloads = ${total} workload namespaces; ` +
        `the lab allows at most ${LAB_LIMITS.totalWorkloads}`,
    );
  }
  return s;
}

/** True when a namespace or link named `name` belongs to the lab with this prefix. */
export function belongsToLab(prefix: string, name: string): boolean {
  return name === prefix || name.startsWith(`${prefix}-`);
}

export function stateFilePath(prefix: string, dir = LAB_STATE_DIR): string {
  return `${dir}/${validatePrefix(prefix)}.json`;
}

export function runDirPath(prefix: string, dir = LAB_STATE_DIR): string {
  return `${dir}/${validatePrefix(prefix)}`;
}

/** The namespace of a lab node: `fabric`, `hN`, `hN-nic` or a workload `hN-tT-wW`. */
export function nodeNamespace(prefix: string, node: string): string {
  return `${prefix}-${node}`;
}

function ifname(prefix: string, suffix: string): string {
  const name = `${prefix}-${suffix}`;
  if (name.length > IFNAME_MAX) {
    throw new TgError('TG_ERR_INTERNAL', `interface name '${name}' is longer than ${IFNAME_MAX} characters`);
  }
  return name;
}

export function validateLabMtu(mtu: unknown): number {
  if (
    typeof mtu !== 'number' ||
    !Number.isInteger(mtu) ||
    mtu < LAB_MTU_RANGE.min ||
    mtu > LAB_MTU_RANGE.max
  ) {
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `bad lab MTU ${JSON.stringify(mtu)}: it must be an integer from ${LAB_MTU_RANGE.min} to ${LAB_MTU_RANGE.max}`,
    );
  }
  return mtu;
}

/** `mtu` is the MTU of every link of the lab: the fabric and each host link (default LAB_MTU). */
export function planLab(prefix: string, size: LabSize, mtu: number = LAB_MTU): LabPlan {
  validatePrefix(prefix);
  const s = validateSize(size);
  validateLabMtu(mtu);
  const fabric: FabricPlan = {
    ns: nodeNamespace(prefix, 'fabric'),
    bridge: ifname(prefix, 'br'),
    subnetV4: '198.18.0.0/24',
    subnetV6: 'fd00:198:18::/64',
    bridgeV4: '198.18.0.1',
    bridgeV6: 'fd00:198:18::1',
  };
  const runDir = runDirPath(prefix);
  const hosts: HostPlan[] = [];
  for (let h = 1; h <= s.hosts; h++) {
    hosts.push({
      name: `h${h}`,
      index: h,
      hostNs: nodeNamespace(prefix, `h${h}`),
      nicNode: `h${h}-nic`,
      nicNs: nodeNamespace(prefix, `h${h}-nic`),
      pcie: {
        subnetV4: `198.19.${h}.0/30`,
        subnetV6: `fd00:198:19:${h}::/64`,
        hostIf: ifname(prefix, `h${h}pci`),
        nicIf: ifname(prefix, `n${h}pci`),
        hostV4: `198.19.${h}.1`,
        nicV4: `198.19.${h}.2`,
        hostV6: `fd00:198:19:${h}::1`,
        nicV6: `fd00:198:19:${h}::2`,
      },
      fabric: {
        nicIf: ifname(prefix, `n${h}fab`),
        bridgeIf: ifname(prefix, `f${h}nic`),
        nicV4: `198.18.0.${10 + h}`,
        nicV6: `fd00:198:18::${10 + h}`,
      },
      nicApiSocket: `${runDir}/nic-h${h}.sock`,
    });
    const extra: NicPlan[] = [];
    for (let k = 2; k <= (s.nics ?? 1); k++) {
      const base = 4 * (k - 1);
      const v6 = `fd00:198:19:${100 * k + h}::`;
      const fab = 10 + 16 * (k - 1) + h;
      extra.push({
        name: `nic${k}`,
        node: `h${h}-nic${k}`,
        ns: nodeNamespace(prefix, `h${h}-nic${k}`),
        pcie: {
          subnetV4: `198.19.${h}.${base}/30`,
          subnetV6: `${v6}/64`,
          hostIf: ifname(prefix, `h${h}p${k}`),
          nicIf: ifname(prefix, `n${h}p${k}`),
          hostV4: `198.19.${h}.${base + 1}`,
          nicV4: `198.19.${h}.${base + 2}`,
          hostV6: `${v6}1`,
          nicV6: `${v6}2`,
        },
        fabric: {
          nicIf: ifname(prefix, `n${h}f${k}`),
          bridgeIf: ifname(prefix, `f${h}n${k}`),
          nicV4: `198.18.0.${fab}`,
          nicV6: `fd00:198:18::${fab}`,
        },
        apiSocket: `${runDir}/nic-h${h}-nic${k}.sock`,
      });
    }
    if (extra.length > 0) hosts[hosts.length - 1].extraNics = extra;
  }
  const tenants: TenantPlan[] = [];
  for (let t = 1; t <= s.tenants; t++) {
    tenants.push({
      name: `t${t}`,
      index: t,
      overlayV4: `100.64.${t}.0/24`,
      overlayV6: pool6Of(parsePool(`100.64.${t}.0/24`)),
    });
  }
  const workloads: WorkloadPlan[] = [];
  for (let h = 1; h <= s.hosts; h++) {
    for (let t = 1; t <= s.tenants; t++) {
      for (let w = 1; w <= s.workloads; w++) {
        const name = `h${h}-t${t}-w${w}`;
        workloads.push({
          name,
          ns: nodeNamespace(prefix, name),
          host: `h${h}`,
          tenant: `t${t}`,
          index: w,
          overlayV4: `100.64.${t}.${10 * h + w}`,
          overlayV6: address6Of(pool6Of(parsePool(`100.64.${t}.0/24`)), `100.64.${t}.${10 * h + w}`),
        });
      }
    }
  }
  return { prefix, size: s, mtu, runDir, fabric, hosts, tenants, workloads };
}

/** Every NIC of a host, the first one (the host plan's own fields) included. */
export function hostNics(h: HostPlan): NicPlan[] {
  return [
    { name: 'nic1', node: h.nicNode, ns: h.nicNs, pcie: h.pcie, fabric: h.fabric, apiSocket: h.nicApiSocket },
    ...(h.extraNics ?? []),
  ];
}

/** Every namespace of the plan: fabric, then per host its host and NIC namespaces, then workloads. */
export function planNamespaces(plan: LabPlan): string[] {
  return [
    plan.fabric.ns,
    ...plan.hosts.flatMap((h) => [h.hostNs, ...hostNics(h).map((n) => n.ns)]),
    ...plan.workloads.map((w) => w.ns),
  ];
}

/** Every non-loopback interface the lab configures, with its addresses. */
export function planInterfaces(plan: LabPlan): PlannedInterface[] {
  const f = plan.fabric;
  const out: PlannedInterface[] = [
    { ns: f.ns, name: f.bridge, addrs: [`${f.bridgeV4}/24`, `${f.bridgeV6}/64`] },
  ];
  for (const h of plan.hosts)
    for (const n of hostNics(h))
      out.push(
        { ns: h.hostNs, name: n.pcie.hostIf, addrs: [`${n.pcie.hostV4}/30`, `${n.pcie.hostV6}/64`] },
        { ns: n.ns, name: n.pcie.nicIf, addrs: [`${n.pcie.nicV4}/30`, `${n.pcie.nicV6}/64`] },
        { ns: n.ns, name: n.fabric.nicIf, addrs: [`${n.fabric.nicV4}/24`, `${n.fabric.nicV6}/64`] },
        { ns: f.ns, name: n.fabric.bridgeIf, addrs: [] },
      );
  return out;
}

/** Node names (`fabric`, `hN`, `hN-nic`, workloads) mapped to their namespaces. */
export function planNodes(plan: LabPlan): Map<string, string> {
  const nodes = new Map<string, string>([['fabric', plan.fabric.ns]]);
  for (const h of plan.hosts) {
    nodes.set(h.name, h.hostNs);
    for (const n of hostNics(h)) nodes.set(n.node, n.ns);
  }
  for (const w of plan.workloads) nodes.set(w.name, w.ns);
  return nodes;
}
