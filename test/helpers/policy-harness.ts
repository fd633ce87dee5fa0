// Shared set-up for the policy tests: a directory of workloads with addresses, a store, an
// engine with a flow log, a fake clock (time is passed in), and packet builders.
import { type CraftSpec, craftPacket } from '../../src/policy/craft.js';
import { WorkloadDirectory } from '../../src/policy/directory.js';
import {
  type CheckResult,
  type Direction,
  type EngineOptions,
  PolicyEngine,
} from '../../src/policy/engine.js';
import { FlowLog } from '../../src/policy/flowlog.js';
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../../src/policy/packet.js';
import { PolicyStore } from '../../src/policy/store.js';

export const SYN = TCP_SYN;
export const SYNACK = TCP_SYN | TCP_ACK;
export const ACK = TCP_ACK;
export const FINACK = TCP_FIN | TCP_ACK;
export const RST = TCP_RST;
export const RSTACK = TCP_RST | TCP_ACK;

export interface Wl {
  tenant: string;
  name: string;
  labels: Record<string, string>;
  v4: string;
  v6: string;
}

/** The workloads most tests use. */
export const WORKLOADS: Wl[] = [
  { tenant: 'acme', name: 'web-1', labels: { app: 'web', tier: 'front' }, v4: '100.64.1.1', v6: 'fd00:1::1' },
  { tenant: 'acme', name: 'web-2', labels: { app: 'web', tier: 'front' }, v4: '100.64.1.2', v6: 'fd00:1::2' },
  { tenant: 'acme', name: 'api-1', labels: { app: 'api', tier: 'back' }, v4: '100.64.1.3', v6: 'fd00:1::3' },
  { tenant: 'acme', name: 'db-1', labels: { app: 'db', tier: 'back' }, v4: '100.64.1.4', v6: 'fd00:1::4' },
  { tenant: 'blue', name: 'svc-1', labels: { app: 'svc' }, v4: '100.64.2.1', v6: 'fd00:2::1' },
  { tenant: 'blue', name: 'cli-1', labels: { app: 'cli' }, v4: '100.64.2.2', v6: 'fd00:2::2' },
];

export class Clock {
  constructor(public ms = 1_700_000_000_000) {}
  advance(seconds: number): number {
    this.ms += seconds * 1000;
    return this.ms;
  }
}

export interface World {
  directory: WorkloadDirectory;
  store: PolicyStore;
  engine: PolicyEngine;
  log: FlowLog;
  clock: Clock;
}

export function world(opts: EngineOptions = {}, workloads: Wl[] = WORKLOADS): World {
  const directory = new WorkloadDirectory();
  for (const w of workloads) directory.upsert(w.tenant, w.name, w.labels);
  const store = new PolicyStore(directory);
  const log = new FlowLog({ ringSize: 1000 });
  const engine = new PolicyEngine({ directory, store, flowLog: log, options: opts });
  return { directory, store, engine, log, clock: new Clock() };
}

export function wl(name: string): Wl {
  const w = WORKLOADS.find((x) => x.name === name);
  if (w === undefined) throw new Error(`no test workload ${name}`);
  return w;
}

export interface Pkt {
  from: string;
  to: string;
  proto: CraftSpec['proto'];
  sport?: number;
  dport?: number;
  flags?: number;
  icmpType?: number;
  icmpId?: number;
  inner?: Buffer;
  v6?: boolean;
  length?: number;
  /** Addresses instead of the workloads' own (outside peers). */
  src?: string;
  dst?: string;
}

export function packet(p: Pkt): Buffer {
  const a = WORKLOADS.find((x) => x.name === p.from);
  const b = WORKLOADS.find((x) => x.name === p.to);
  const src = p.src ?? (p.v6 ? a?.v6 : a?.v4);
  const dst = p.dst ?? (p.v6 ? b?.v6 : b?.v4);
  if (src === undefined || dst === undefined) throw new Error('packet needs addresses');
  return craftPacket({
    src,
    dst,
    proto: p.proto,
    sport: p.sport,
    dport: p.dport,
    flags: p.flags,
    icmpType: p.icmpType,
    icmpId: p.icmpId,
    inner: p.inner,
    length: p.length,
  });
}

/** A workload argument: a reference to a known workload, or null (an outside peer). */
function ref(name: string | null): { tenant: string; workload: string } | null {
  if (name === null || name.startsWith('outside')) return null;
  const w = wl(name);
  return { tenant: w.tenant, workload: w.name };
}

/** check() of a packet built from `p`, from workload p.from to p.to ("outside..." = no workload). */
export function send(w: World, p: Pkt, direction: Direction = 'both'): CheckResult {
  const buf = packet(p);
  const tenant = p.from.startsWith('outside') ? wl(p.to).tenant : wl(p.from).tenant;
  return w.engine.check(tenant, ref(p.from), ref(p.to), buf, 0, buf.length, w.clock.ms, direction);
}

/** A copy of the verdict (the engine reuses its result object). */
export function verdict(r: CheckResult): { allowed: boolean; reason: string; rule: string } {
  return { allowed: r.allowed, reason: r.reason, rule: r.rule };
}

/** Both sides of a within-tenant allow for `proto`/`ports` from `fromLabels` to `toLabels`. */
export function allowPair(
  id: string,
  fromLabels: Record<string, string>,
  toLabels: Record<string, string>,
  protocol: 'tcp' | 'udp' | 'icmp' | 'any',
  ports?: (number | string)[],
): object[] {
  return [
    {
      id: `${id}-out`,
      direction: 'egress',
      workloads: { labels: fromLabels },
      peers: [{ labels: toLabels }],
      protocol,
      ports,
    },
    {
      id: `${id}-in`,
      direction: 'ingress',
      workloads: { labels: toLabels },
      peers: [{ labels: fromLabels }],
      protocol,
      ports,
    },
  ];
}
