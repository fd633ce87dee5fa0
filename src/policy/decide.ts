// The verdict for a new connection from the compiled policies of the tenants involved (see
// model.ts for the semantics): S's egress side in S's tenant policy, D's ingress side in D's
// tenant policy, each evaluated only when that end is a workload and the caller's scope asks
// for that side. A tenant without a policy denies everything (default deny).
//
// No allocation: the verdict is written into a caller-owned Decision.
import type { Family } from './address.js';
import { type CompiledPolicy, SIDE_EGRESS, SIDE_INGRESS } from './compile.js';
import type { WorkloadInfo } from './directory.js';

/** Which sides a check evaluates: the sending NIC egress, the receiving NIC ingress, a hairpin both. */
export const SCOPE_EGRESS = 1;
export const SCOPE_INGRESS = 2;
export const SCOPE_BOTH = 3;

export interface PolicySource {
  policyOf(tenant: string): CompiledPolicy | undefined;
  /** Handle of "tenant/default-deny" for a tenant without a policy. */
  defaultDenyOf(tenant: string): number;
}

export class Decision {
  allowed = false;
  /** Rule handle that decided the egress side; 0 when not evaluated. */
  egress = 0;
  /** Rule handle that decided the ingress side; 0 when not evaluated. */
  ingress = 0;
  /** The handle that decided the connection: the denying side's, else the last side evaluated. */
  rule = 0;
}

/**
 * The DNS names an outside address has for a tenant (canonical, from the answers of the NIC's
 * DNS server), or null when none. Called only for new (or re-decided) connections with an
 * outside end, and only when the tenant's policy has FQDN peers.
 */
export type OutsideNames = (
  tenant: string,
  family: Family,
  a0: number,
  a1: number,
  a2: number,
  a3: number,
) => readonly string[] | null;

/** A workload that is not registered (policy tests): classes are computed, not cached. */
function classIn(p: CompiledPolicy, w: WorkloadInfo): number {
  return w.id > 0 ? p.classOf(w) : p.classOfLabels(w);
}

/**
 * Decides a connection src -> dst (null: an outside peer, known by its address words), IP
 * protocol bucket and destination port. Writes the verdict into `out`. With `addressed` a
 * workload peer is matched by CIDR rules at its address words too (the packet's addresses);
 * without (policy tests, which name workloads without addresses) only by selectors.
 */
export function decide(
  source: PolicySource,
  src: WorkloadInfo | null,
  dst: WorkloadInfo | null,
  family: Family,
  s0: number,
  s1: number,
  s2: number,
  s3: number,
  d0: number,
  d1: number,
  d2: number,
  d3: number,
  bucket: number,
  port: number,
  scope: number,
  out: Decision,
  addressed = true,
  names: OutsideNames | null = null,
): void {
  out.allowed = false;
  out.egress = 0;
  out.ingress = 0;
  out.rule = 0;
  let evaluated = false;
  if ((scope & SCOPE_EGRESS) !== 0 && src !== null) {
    evaluated = true;
    const p = source.policyOf(src.tenant);
    if (p === undefined) {
      out.egress = out.rule = source.defaultDenyOf(src.tenant);
      return;
    }
    const peer =
      dst === null
        ? p.outsideClass(
            family,
            d0,
            d1,
            d2,
            d3,
            names !== null && p.hasFqdns ? names(src.tenant, family, d0, d1, d2, d3) : null,
          )
        : addressed
          ? p.addressedClass(classIn(p, dst), family, d0, d1, d2, d3)
          : classIn(p, dst);
    const i = p.lookup(SIDE_EGRESS, classIn(p, src), peer, bucket, port);
    out.egress = out.rule = i < 0 ? p.defaultDeny : p.handles[i];
    if (i < 0 || p.actions[i] === 0) return;
  }
  if ((scope & SCOPE_INGRESS) !== 0 && dst !== null) {
    evaluated = true;
    const p = source.policyOf(dst.tenant);
    if (p === undefined) {
      out.ingress = out.rule = source.defaultDenyOf(dst.tenant);
      return;
    }
    const peer =
      src === null
        ? p.outsideClass(family, s0, s1, s2, s3)
        : addressed
          ? p.addressedClass(classIn(p, src), family, s0, s1, s2, s3)
          : classIn(p, src);
    const i = p.lookup(SIDE_INGRESS, classIn(p, dst), peer, bucket, port);
    out.ingress = out.rule = i < 0 ? p.defaultDeny : p.handles[i];
    if (i < 0 || p.actions[i] === 0) return;
  }
  out.allowed = evaluated;
}
