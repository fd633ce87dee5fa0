// From a schema-valid document to rules in one canonical form: selectors with their tenant
// made explicit and labels sorted, CIDRs parsed, ports as merged inclusive ranges, the
// protocol as a bit mask. Everything here is a local check of one field: bad CIDR, port out
// of range, ports without tcp/udp, duplicate or reserved ids, a "tenant" peer naming the
// policy's own tenant. Checks that need the whole rule list or the workloads are in
// validate.ts.
import { type Cidr, parseCidrStrict } from './address.js';
import { type FqdnMatcher, parseFqdn } from './fqdn.js';
import type { PolicyDocument, PolicyIssue, PortSpec, Protocol } from './model.js';

export const PROTO_TCP = 1;
export const PROTO_UDP = 2;
export const PROTO_ICMP = 4;
export const PROTO_OTHER = 8;
export const PROTO_ALL = PROTO_TCP | PROTO_UDP | PROTO_ICMP | PROTO_OTHER;

/** Rule ids the engine uses for its own verdicts. */
export const RESERVED_RULE_IDS: ReadonlySet<string> = new Set(['default-deny']);

export function protocolMask(p: Protocol): number {
  switch (p) {
    case 'tcp':
      return PROTO_TCP;
    case 'udp':
      return PROTO_UDP;
    case 'icmp':
      return PROTO_ICMP;
    case 'any':
      return PROTO_ALL;
  }
}

/** Workloads of one tenant by name or by labels (all pairs must match; none selects all). */
export interface NormalSelector {
  tenant: string;
  workload: string | null;
  /** Sorted by key. */
  labels: ReadonlyArray<readonly [string, string]>;
  /** Canonical text, equal for equal selectors. */
  key: string;
}

export interface NormalRule {
  index: number;
  id: string;
  path: string;
  action: 'allow' | 'deny';
  direction: 'ingress' | 'egress';
  selected: NormalSelector;
  peers: NormalSelector[];
  cidrs: Cidr[];
  /** DNS names and patterns of outside peers (egress rules only). */
  fqdns: FqdnMatcher[];
  protocol: Protocol;
  protoMask: number;
  /** Merged inclusive ranges of destination ports, sorted; null: every port. */
  ports: Array<[number, number]> | null;
}

export function selectorOf(
  tenant: string,
  s: { workload?: string; labels?: Record<string, string> },
): NormalSelector {
  const labels = Object.entries(s.labels ?? {}).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const workload = s.workload ?? null;
  const key =
    workload !== null
      ? `${tenant}:w:${workload}`
      : `${tenant}:l:${labels.map(([k, v]) => `${k}=${v}`).join(',')}`;
  return { tenant, workload, labels, key };
}

/** Parses one port spec; a string with the reason when it is not 1..65535 or lo-hi with lo <= hi. */
export function parsePortSpec(spec: PortSpec): [number, number] | string {
  if (typeof spec === 'number') {
    if (!Number.isInteger(spec) || spec < 1 || spec > 65535) return `port ${spec} is out of range 1..65535`;
    return [spec, spec];
  }
  const m = /^([0-9]{1,5})(?:-([0-9]{1,5}))?$/.exec(spec);
  if (m === null) return `'${spec}' is not a port or a port range "lo-hi"`;
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo < 1 || lo > 65535) return `port ${lo} is out of range 1..65535`;
  if (hi < 1 || hi > 65535) return `port ${hi} is out of range 1..65535`;
  if (lo > hi) return `port range '${spec}' is empty (${lo} > ${hi})`;
  return [lo, hi];
}

export function mergeRanges(ranges: Array<[number, number]>): Array<[number, number]> {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
}

export function normalizeRules(doc: PolicyDocument): { rules: NormalRule[]; issues: PolicyIssue[] } {
  const issues: PolicyIssue[] = [];
  const rules: NormalRule[] = [];
  const seen = new Map<string, number>();
  doc.rules.forEach((r, index) => {
    const path = `rules[${index}]`;
    const first = seen.get(r.id);
    if (first !== undefined)
      issues.push({
        code: 'duplicate-id',
        path: `${path}.id`,
        message: `rule id '${r.id}' is already used by rules[${first}]`,
      });
    else seen.set(r.id, index);
    if (RESERVED_RULE_IDS.has(r.id))
      issues.push({ code: 'duplicate-id', path: `${path}.id`, message: `rule id '${r.id}' is reserved` });

    const peers: NormalSelector[] = [];
    const cidrs: Cidr[] = [];
    const fqdns: FqdnMatcher[] = [];
    r.peers.forEach((p, j) => {
      const ppath = `${path}.peers[${j}]`;
      if (p.fqdn !== undefined) {
        const m = parseFqdn(p.fqdn);
        if (typeof m === 'string') issues.push({ code: 'bad-fqdn', path: `${ppath}.fqdn`, message: m });
        else if (r.direction !== 'egress')
          issues.push({
            code: 'bad-fqdn',
            path: `${ppath}.fqdn`,
            message: 'an "fqdn" peer is for egress rules only (names come from the answers to its workloads)',
          });
        else fqdns.push(m);
        return;
      }
      if (p.cidr !== undefined) {
        const c = parseCidrStrict(p.cidr);
        if (typeof c === 'string') issues.push({ code: 'bad-cidr', path: `${ppath}.cidr`, message: c });
        else cidrs.push(c);
        return;
      }
      if (p.tenant === doc.tenant)
        issues.push({
          code: 'own-tenant',
          path: `${ppath}.tenant`,
          message: `"tenant": "${p.tenant}" is this policy's own tenant; name its workloads without "tenant"`,
        });
      peers.push(selectorOf(p.tenant ?? doc.tenant, p));
    });

    let ports: Array<[number, number]> | null = null;
    if (r.ports !== undefined) {
      if (r.protocol !== 'tcp' && r.protocol !== 'udp')
        issues.push({
          code: 'ports-need-protocol',
          path: `${path}.ports`,
          message: `ports need protocol "tcp" or "udp" (the rule says "${r.protocol}")`,
        });
      const ranges: Array<[number, number]> = [];
      r.ports.forEach((spec, j) => {
        const pr = parsePortSpec(spec);
        if (typeof pr === 'string')
          issues.push({ code: 'port-range', path: `${path}.ports[${j}]`, message: pr });
        else ranges.push(pr);
      });
      ports = mergeRanges(ranges);
    }

    rules.push({
      index,
      id: r.id,
      path,
      action: r.action,
      direction: r.direction,
      selected: selectorOf(doc.tenant, r.workloads),
      peers,
      cidrs,
      fqdns,
      protocol: r.protocol,
      protoMask: protocolMask(r.protocol),
      ports,
    });
  });
  return { rules, issues };
}
