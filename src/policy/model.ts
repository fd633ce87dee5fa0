// The policy document: one per tenant, JSON, checked by this schema (unknown keys rejected)
// before any semantic check (validate.ts) or compilation (compile.ts).
//
// {
//   "version": 1,
//   "tenant": "acme",
//   "rules": [
//     { "id": "web-egress-db", "action": "allow", "direction": "egress",
//       "workloads": { "labels": { "app": "web" } },          the selected workloads (this tenant)
//       "peers": [ { "labels": { "app": "db" } },              this tenant's workloads
//                  { "workload": "db-legacy" },
//                  { "tenant": "blue", "labels": { "app": "api" } },  another tenant's: a grant
//                  { "cidr": "203.0.113.0/24" },            outside peers, by address (toCIDR)
//                  { "fqdn": "api.example.com" },           outside peers, by DNS name (toFQDN)
//                  { "fqdn": "*.example.com" } ],           ... or by a name pattern
//       "protocol": "tcp", "ports": [5432, "6000-6010"] }
//   ],
//   "tests": [
//     { "src": { "workload": "web-1" }, "dst": { "labels": { "app": "db" } },
//       "protocol": "tcp", "port": 5432, "expect": "allow" }
//   ]
// }
//
// Semantics (the engine's contract, see compile.ts):
// - Every workload has an egress side (what it may open) and an ingress side (what may open
//   connections to it); both are default deny. A connection from S to D is allowed when S's
//   egress side allows it (S a workload) and D's ingress side allows it (D a workload). An
//   outside peer (matched by CIDR) has no side of its own.
// - On each side the rules of the workload's tenant with that direction are tried in document
//   order; the first one whose `workloads` selects the workload and whose `peers` match the
//   other end, protocol and destination port decides (allow or deny). None: default deny.
// - A rule peer naming another tenant is an explicit cross-tenant grant, one way: it lets
//   this tenant's side accept (ingress) or open (egress) that connection; the other tenant's
//   policy decides its own side. Replies of an allowed connection pass through conntrack.
// - CIDR peers (IPv4 or IPv6) match outside peers (ends that are no workload) by address, and
//   a workload end by the address it uses in the packet (its IPv4 or its IPv6 one): a rule
//   `{ "cidr": "fd64:6440:100::6440:103/128" }` denies or allows a dual-stack workload's IPv6
//   traffic only. Selector peers match workloads by identity (tenant, name, labels), never by
//   address, so such rules follow a migrating workload (which keeps its addresses anyway).
//   Policy tests name workloads without addresses: there only selectors match them.
// - FQDN peers (egress rules only) match an outside peer by the DNS names the NIC's own DNS
//   server resolved to its address for the tenant, while those answers live (their TTL, as
//   Cilium's DNS-aware policy does): `"api.example.com"` that name exactly, `"*.example.com"`
//   any name one label under example.com (as Cilium's matchPattern: `*` stands for one label,
//   never a dot). Names are compared in lower case without the trailing dot. The same rules
//   decide which names the NIC's DNS server forwards upstream for the selected workloads:
//   any other name outside tg. is REFUSED. Policy tests have no DNS answers: an "address" end
//   matches CIDR peers only, never FQDN peers.
// - `ports` are destination ports of the connection (the initiator's destination) and are
//   only allowed with protocol tcp or udp; absent means every port. `icmp` covers ICMP and
//   ICMPv6; `any` every IP protocol.
import { z } from 'zod';
import { nameSchema } from '../net/name.js';

/** Rule and test ids. */
export const RULE_ID_RE = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$/;
/** Label keys (Kubernetes-like, optional DNS prefix) and values. */
const LABEL_KEY_RE =
  /^(?:[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?\/)?[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$/;

export const MAX_RULES = 4096;
export const MAX_PEERS = 256;
export const MAX_PORT_SPECS = 64;
export const MAX_TESTS = 1024;
export const MAX_LABELS = 32;

export const labelsSchema = z
  .record(
    z.string().regex(LABEL_KEY_RE, 'must be a label key ([prefix/]name of letters, digits, ".", "_", "-")'),
    z.string().regex(LABEL_VALUE_RE, 'must be a label value (up to 63 letters, digits, ".", "_", "-")'),
  )
  .refine((l) => Object.keys(l).length <= MAX_LABELS, `at most ${MAX_LABELS} labels`);

/** Workloads of the policy's own tenant: by name, or by labels (all must match; {} selects all). */
export const selectorSchema = z
  .strictObject({
    workload: nameSchema.optional(),
    labels: labelsSchema.optional(),
  })
  .superRefine((s, ctx) => {
    if ((s.workload === undefined) === (s.labels === undefined))
      ctx.addIssue({ code: 'custom', message: 'give exactly one of "workload" or "labels"' });
  });

export const peerSchema = z
  .strictObject({
    tenant: nameSchema.optional(),
    workload: nameSchema.optional(),
    labels: labelsSchema.optional(),
    cidr: z.string().max(64).optional(),
    fqdn: z.string().max(254).optional(),
  })
  .superRefine((p, ctx) => {
    if (p.cidr !== undefined || p.fqdn !== undefined) {
      if (p.tenant !== undefined || p.workload !== undefined || p.labels !== undefined)
        ctx.addIssue({
          code: 'custom',
          message: 'a "cidr" or "fqdn" peer takes no "tenant", "workload" or "labels"',
        });
      if (p.cidr !== undefined && p.fqdn !== undefined)
        ctx.addIssue({ code: 'custom', message: 'give one of "cidr" or "fqdn" per peer' });
      return;
    }
    if ((p.workload === undefined) === (p.labels === undefined))
      ctx.addIssue({ code: 'custom', message: 'give exactly one of "workload", "labels", "cidr" or "fqdn"' });
  });

/** A destination port (1..65535) or an inclusive range "lo-hi". Range checks in validate.ts. */
export const portSpecSchema = z.union([z.number().int(), z.string().max(16)]);

export const PROTOCOLS = ['tcp', 'udp', 'icmp', 'any'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

export const ruleSchema = z.strictObject({
  id: z.string().regex(RULE_ID_RE, 'must be 1..64 of letters, digits, ".", "_", "-"'),
  description: z.string().max(1024).optional(),
  action: z.enum(['allow', 'deny']).default('allow'),
  direction: z.enum(['ingress', 'egress']),
  workloads: selectorSchema,
  peers: z.array(peerSchema).min(1).max(MAX_PEERS),
  protocol: z.enum(PROTOCOLS).default('any'),
  ports: z.array(portSpecSchema).min(1).max(MAX_PORT_SPECS).optional(),
});

/** One end of a test case: a workload (by name or by hypothetical labels) or an outside address. */
export const testEndpointSchema = z
  .strictObject({
    tenant: nameSchema.optional(),
    workload: nameSchema.optional(),
    labels: labelsSchema.optional(),
    address: z.string().max(64).optional(),
  })
  .superRefine((e, ctx) => {
    if (e.address !== undefined) {
      if (e.tenant !== undefined || e.workload !== undefined || e.labels !== undefined)
        ctx.addIssue({
          code: 'custom',
          message: 'an "address" end takes no "tenant", "workload" or "labels"',
        });
      return;
    }
    if ((e.workload === undefined) === (e.labels === undefined))
      ctx.addIssue({ code: 'custom', message: 'give exactly one of "workload", "labels" or "address"' });
  });

export const testCaseSchema = z.strictObject({
  id: z.string().regex(RULE_ID_RE, 'must be 1..64 of letters, digits, ".", "_", "-"').optional(),
  src: testEndpointSchema,
  dst: testEndpointSchema,
  protocol: z.enum(['tcp', 'udp', 'icmp']),
  port: z.number().int().optional(),
  expect: z.enum(['allow', 'deny']),
});

export const policyDocumentSchema = z.strictObject({
  version: z.literal(1),
  tenant: nameSchema,
  description: z.string().max(4096).optional(),
  rules: z.array(ruleSchema).max(MAX_RULES).default([]),
  tests: z.array(testCaseSchema).max(MAX_TESTS).default([]),
});

export type Selector = z.infer<typeof selectorSchema>;
export type Peer = z.infer<typeof peerSchema>;
export type PortSpec = z.infer<typeof portSpecSchema>;
export type Rule = z.infer<typeof ruleSchema>;
export type TestEndpoint = z.infer<typeof testEndpointSchema>;
export type TestCase = z.infer<typeof testCaseSchema>;
export type PolicyDocument = z.infer<typeof policyDocumentSchema>;

/** A problem found in a policy document; `path` names the spot, e.g. "rules[2].peers[0].cidr". */
export interface PolicyIssue {
  code: PolicyIssueCode;
  path: string;
  message: string;
}

export type PolicyIssueCode =
  | 'json'
  | 'schema'
  | 'duplicate-id'
  | 'bad-cidr'
  | 'bad-fqdn'
  | 'port-range'
  | 'ports-need-protocol'
  | 'own-tenant'
  | 'unknown-tenant'
  | 'unknown-workload'
  | 'unmatched-selector'
  | 'shadowed'
  | 'conflict'
  | 'test-failed'
  | 'test-invalid';

/** Formats a zod path as "rules[2].peers[0].cidr". */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out === '' ? '(document)' : out;
}
