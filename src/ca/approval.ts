// The built-in approval policy of the CSR API: the zero-trust rule that a compromised host
// cannot mint identities other than its own.
//   admin (operator, local socket)  any tenguard identity of our trust domain
//   NIC <host>                      spiffe://<td>/nic/<host> (its own) and
//                                   spiffe://<td>/tenant/<t>/workload/<w> for workloads the
//                                   orchestrator placed on <host> (asked through isPlacedOn)
//   self <id>                       exactly <id>: a holder of a one-time join token bound to
//                                   <id> enrolling, or a service renewing its own identity
//   anyone else                     nothing
// Reasons are stable CamelCase words, as Kubernetes condition reasons are.
import type { SpiffeId } from '../identity/spiffe.js';

export type Requester =
  | { readonly kind: 'admin' }
  | { readonly kind: 'nic'; readonly host: string; readonly uri: string }
  | { readonly kind: 'self'; readonly uri: string };

export interface PlacementQuery {
  readonly host: string;
  readonly tenant: string;
  readonly workload: string;
}

/** Asks the orchestrator whether a workload is placed on a host now. */
export type PlacementLookup = (q: PlacementQuery) => boolean | Promise<boolean>;

export type Decision =
  | { readonly approved: true; readonly reason: string; readonly message: string }
  | { readonly approved: false; readonly reason: string; readonly message: string };

export function requesterName(r: Requester): string {
  return r.kind === 'admin' ? 'admin' : r.uri;
}

export async function decide(
  requester: Requester,
  id: SpiffeId,
  trustDomain: string,
  isPlacedOn: PlacementLookup,
): Promise<Decision> {
  if (id.trustDomain !== trustDomain) {
    return {
      approved: false,
      reason: 'ForeignTrustDomain',
      message: `${id.uri} is not in trust domain '${trustDomain}'`,
    };
  }
  if (requester.kind === 'admin')
    return { approved: true, reason: 'AdminRequest', message: `issued to the operator for ${id.uri}` };
  if (requester.kind === 'self') {
    if (id.uri === requester.uri)
      return { approved: true, reason: 'OwnIdentity', message: `${id.uri} enrols or renews itself` };
    return {
      approved: false,
      reason: 'NotOwnIdentity',
      message: `${requester.uri} may obtain only its own identity, not ${id.uri}`,
    };
  }
  switch (id.kind) {
    case 'nic':
      if (id.host === requester.host)
        return {
          approved: true,
          reason: 'OwnNicIdentity',
          message: `NIC ${requester.host} renews its own identity`,
        };
      return {
        approved: false,
        reason: 'NotOwnHostIdentity',
        message: `NIC ${requester.host} may not obtain the identity of host ${id.host}`,
      };
    case 'workload': {
      let placed = false;
      try {
        placed = await isPlacedOn({ host: requester.host, tenant: id.tenant, workload: id.workload });
      } catch (err) {
        return {
          approved: false,
          reason: 'PlacementUnavailable',
          message: `cannot confirm placement of ${id.tenant}/${id.workload}: ${(err as Error).message}`,
        };
      }
      if (placed) {
        return {
          approved: true,
          reason: 'WorkloadPlacedOnNic',
          message: `workload ${id.tenant}/${id.workload} is placed on ${requester.host}`,
        };
      }
      return {
        approved: false,
        reason: 'WorkloadNotPlaced',
        message: `workload ${id.tenant}/${id.workload} is not placed on NIC ${requester.host}`,
      };
    }
    case 'service':
      return {
        approved: false,
        reason: 'ServiceIdentityRequiresAdmin',
        message: `only an operator may obtain the service identity ${id.uri}`,
      };
  }
}
