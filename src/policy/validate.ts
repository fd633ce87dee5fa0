// Checks of a policy document beyond single fields, each reported with the rule's path:
//   errors    unknown workload named by a selector (in a tenant the directory knows);
//             a rule that can never decide anything because earlier rules of the same
//             direction already decide everything it matches ("shadowed", unreachable).
//   warnings  a foreign tenant the directory does not know (cannot be checked here);
//             a label selector that matches no registered workload (yet);
//             a rule that partly overlaps an earlier rule with the opposite action
//             ("conflict": where both match, the earlier one decides).
// The shadow analysis is exact for what it looks at (selectors by subsumption, CIDRs, protocols,
// port unions of all covering earlier rules) and conservative otherwise: a rule is called
// shadowed only when that is certain from the document and the registered workloads.
import { cidrCovers, cidrOverlaps } from './address.js';
import { selectorMatches } from './compile.js';
import type { WorkloadDirectory } from './directory.js';
import { fqdnCovers, fqdnOverlaps } from './fqdn.js';
import { formatPath, type PolicyDocument, type PolicyIssue, policyDocumentSchema } from './model.js';
import {
  mergeRanges,
  type NormalRule,
  type NormalSelector,
  normalizeRules,
  PROTO_ICMP,
  PROTO_OTHER,
  PROTO_TCP,
  PROTO_UDP,
  selectorOf,
} from './normalize.js';

export interface ParseOutcome {
  doc: PolicyDocument | null;
  rules: NormalRule[];
  errors: PolicyIssue[];
  warnings: PolicyIssue[];
}

/** Parses JSON text or an already parsed value; schema and field errors, no semantic checks. */
export function parseDocument(input: unknown): { doc: PolicyDocument | null; errors: PolicyIssue[] } {
  let value = input;
  if (typeof input === 'string' || Buffer.isBuffer(input)) {
    try {
      value = JSON.parse(String(input));
    } catch (err) {
      return {
        doc: null,
        errors: [{ code: 'json', path: '(document)', message: `not JSON: ${(err as Error).message}` }],
      };
    }
  }
  const r = policyDocumentSchema.safeParse(value);
  if (!r.success)
    return {
      doc: null,
      errors: r.error.issues.map((i) => ({ code: 'schema', path: formatPath(i.path), message: i.message })),
    };
  return { doc: r.data, errors: [] };
}

/** Everything short of the built-in tests (selftest.ts). */
export function validateDocument(input: unknown, directory: WorkloadDirectory | null): ParseOutcome {
  const parsed = parseDocument(input);
  if (parsed.doc === null) return { doc: null, rules: [], errors: parsed.errors, warnings: [] };
  const doc = parsed.doc;
  const { rules, issues } = normalizeRules(doc);
  const errors = [...issues];
  const warnings: PolicyIssue[] = [];
  if (directory !== null) checkReferences(doc, directory, errors, warnings);
  if (errors.length === 0) checkOrder(rules, directory, errors, warnings);
  return { doc, rules, errors, warnings };
}

function checkReferences(
  doc: PolicyDocument,
  directory: WorkloadDirectory,
  errors: PolicyIssue[],
  warnings: PolicyIssue[],
): void {
  const warnedTenants = new Set<string>();
  const check = (s: NormalSelector, path: string) => {
    if (!directory.hasTenant(s.tenant)) {
      if (s.tenant !== doc.tenant && !warnedTenants.has(s.tenant)) {
        warnedTenants.add(s.tenant);
        warnings.push({
          code: 'unknown-tenant',
          path,
          message: `tenant '${s.tenant}' has no workloads known here; its selectors cannot be checked`,
        });
      }
      return;
    }
    if (s.workload !== null) {
      if (directory.get(s.tenant, s.workload) === undefined)
        errors.push({
          code: 'unknown-workload',
          path: `${path}.workload`,
          message: `tenant '${s.tenant}' has no workload '${s.workload}'`,
        });
      return;
    }
    if (!directory.workloadsOf(s.tenant).some((w) => selectorMatches(s, w)))
      warnings.push({
        code: 'unmatched-selector',
        path: `${path}.labels`,
        message: `no workload of tenant '${s.tenant}' has labels ${labelText(s)}`,
      });
  };
  doc.rules.forEach((r, i) => {
    check(selectorOf(doc.tenant, r.workloads), `rules[${i}].workloads`);
    r.peers.forEach((p, j) => {
      if (p.cidr === undefined && p.fqdn === undefined)
        check(selectorOf(p.tenant ?? doc.tenant, p), `rules[${i}].peers[${j}]`);
    });
  });
}

function labelText(s: NormalSelector): string {
  return `{${s.labels.map(([k, v]) => `${k}=${v}`).join(', ')}}`;
}

/** `outer` selects every workload `inner` selects. */
function selectorCovers(
  outer: NormalSelector,
  inner: NormalSelector,
  directory: WorkloadDirectory | null,
): boolean {
  if (outer.tenant !== inner.tenant) return false;
  if (outer.workload !== null) return inner.workload === outer.workload;
  if (inner.workload !== null) {
    const w = directory?.get(inner.tenant, inner.workload);
    return w !== undefined && selectorMatches(outer, w);
  }
  const want = new Map(inner.labels);
  return outer.labels.every(([k, v]) => want.get(k) === v);
}

/** Some workload could be matched by both (conservative: true unless certainly not). */
function selectorsOverlap(
  a: NormalSelector,
  b: NormalSelector,
  directory: WorkloadDirectory | null,
): boolean {
  if (a.tenant !== b.tenant) return false;
  if (a.workload !== null && b.workload !== null) return a.workload === b.workload;
  if (a.workload !== null || b.workload !== null) {
    const named = a.workload !== null ? a : b;
    const other = a.workload !== null ? b : a;
    const w = directory?.get(named.tenant, named.workload as string);
    return w === undefined || selectorMatches(other, w);
  }
  const m = new Map(a.labels);
  return b.labels.every(([k, v]) => !m.has(k) || m.get(k) === v);
}

const FULL: Array<[number, number]> = [[0, 65535]];

function rangesCover(outer: Array<[number, number]>, inner: Array<[number, number]>): boolean {
  return inner.every(([lo, hi]) => outer.some(([a, b]) => a <= lo && hi <= b));
}

function rangesOverlap(a: Array<[number, number]>, b: Array<[number, number]>): boolean {
  return a.some(([lo, hi]) => b.some(([x, y]) => lo <= y && x <= hi));
}

type Atom =
  | { kind: 'sel'; sel: NormalSelector }
  | { kind: 'cidr'; rule: NormalRule; at: number }
  | { kind: 'fqdn'; rule: NormalRule; at: number };

function checkOrder(
  rules: NormalRule[],
  directory: WorkloadDirectory | null,
  errors: PolicyIssue[],
  warnings: PolicyIssue[],
): void {
  for (let bi = 1; bi < rules.length; bi++) {
    const b = rules[bi];
    const earlier = rules.slice(0, bi).filter((a) => a.direction === b.direction);
    if (earlier.length === 0) continue;
    const covering = earlier.filter((a) => selectorCovers(a.selected, b.selected, directory));
    // Shadowed: for every peer of b and every protocol bucket b matches, the earlier rules
    // covering that peer and bucket together cover b's ports.
    const atoms: Atom[] = [
      ...b.peers.map((sel): Atom => ({ kind: 'sel', sel })),
      ...b.cidrs.map((_, at): Atom => ({ kind: 'cidr', rule: b, at })),
      ...b.fqdns.map((_, at): Atom => ({ kind: 'fqdn', rule: b, at })),
    ];
    const deciders = new Set<string>();
    let shadowed = covering.length > 0;
    for (const atom of atoms) {
      if (!shadowed) break;
      const peerCovered = (a: NormalRule) =>
        atom.kind === 'sel'
          ? a.peers.some((p) => selectorCovers(p, atom.sel, directory))
          : atom.kind === 'cidr'
            ? a.cidrs.some((c) => cidrCovers(c, atom.rule.cidrs[atom.at]))
            : a.fqdns.some((f) => fqdnCovers(f, atom.rule.fqdns[atom.at]));
      for (const bucket of [PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_OTHER]) {
        if ((b.protoMask & bucket) === 0) continue;
        const by = covering.filter((a) => (a.protoMask & bucket) !== 0 && peerCovered(a));
        const ported = bucket === PROTO_TCP || bucket === PROTO_UDP;
        const union = mergeRanges(by.flatMap((a) => (a.ports === null || !ported ? FULL : a.ports)));
        if (!rangesCover(union, ported && b.ports !== null ? b.ports : FULL)) {
          shadowed = false;
          break;
        }
        for (const a of by) deciders.add(a.id);
      }
    }
    if (shadowed) {
      errors.push({
        code: 'shadowed',
        path: b.path,
        message: `rule '${b.id}' is unreachable: everything it matches is already decided by earlier ${b.direction} rule(s) ${[
          ...deciders,
        ]
          .map((id) => `'${id}'`)
          .join(', ')}`,
      });
      continue;
    }
    for (const a of earlier) {
      if (a.action === b.action || !selectorsOverlap(a.selected, b.selected, directory)) continue;
      if ((a.protoMask & b.protoMask) === 0) continue;
      const peersOverlap =
        a.peers.some((p) => b.peers.some((q) => selectorsOverlap(p, q, directory))) ||
        a.cidrs.some((c) => b.cidrs.some((d) => cidrOverlaps(c, d))) ||
        a.fqdns.some((f) => b.fqdns.some((g) => fqdnOverlaps(f, g)));
      if (!peersOverlap) continue;
      const portsMatter = (a.protoMask & b.protoMask & (PROTO_ICMP | PROTO_OTHER)) === 0;
      if (portsMatter && !rangesOverlap(a.ports ?? FULL, b.ports ?? FULL)) continue;
      warnings.push({
        code: 'conflict',
        path: b.path,
        message: `rule '${b.id}' (${b.action}) overlaps earlier rule '${a.id}' (${a.action}); where both match, '${a.id}' decides`,
      });
    }
  }
}
