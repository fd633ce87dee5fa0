// Binding a NIC's Ed25519 identity key (which signs its tenant public keys and seal key) to
// its CA-issued X.509-SVID, spiffe://<td>/nic/<host>: the NIC signs a statement naming its
// Ed25519 key and SPIFFE ID with its certificate's key (ECDSA P-256, SHA-256) and publishes
// the signature and its certificate chain beside every signed tenant key. A peer NIC accepts a
// tenant key only if the chain reaches a trusted root, the certificate names a NIC of the
// trust domain, is not revoked, and both signatures hold; an orchestrator that substitutes a
// key of its own can produce neither signature.
//
// The binding is re-made at every renewal (the certificate key changes with it); a binding
// whose certificate has expired is refused, so a relayed key is as fresh as the certificate.
import { sign, verify, X509Certificate } from 'node:crypto';
import { normalizeSerial, splitPemCertificates } from '../identity/certs.js';
import type { Identity } from '../identity/identity.js';
import { svidSpiffeId } from '../identity/identity.js';
import type { IsRevoked } from '../identity/mtls.js';
import type { TrustBundle } from '../identity/trust-bundle.js';
import { TgError } from '../util/errors.js';
import { lengthPrefixed } from './identity.js';

const BINDING_LABEL = 'tenguard nic identity key binding v1';
/** A certificate chain a peer presents: leaf and at most two intermediates. */
export const MAX_CHAIN_PEM_CHARS = 12 * 1024;

export interface CertificateBinding {
  /** The NIC's X.509-SVID chain, leaf first (PEM). */
  nicCertificate: string;
  /** ECDSA (DER, base64) by the certificate's key over bindingStatement(identity key, SPIFFE ID). */
  identityBinding: string;
}

export function bindingStatement(identityKey: Uint8Array, spiffeId: string): Buffer {
  return lengthPrefixed(BINDING_LABEL, identityKey, spiffeId);
}

export function bindIdentityKey(identity: Identity, identityKey: Uint8Array): CertificateBinding {
  if (identity.spiffeId.kind !== 'nic')
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `${identity.spiffeId.uri} is not a NIC identity`);
  const sig = sign('sha256', bindingStatement(identityKey, identity.spiffeId.uri), identity.privateKey);
  return {
    nicCertificate: [identity.certificatePem, ...identity.chainPem].join(''),
    identityBinding: sig.toString('base64'),
  };
}

export interface PeerTrust {
  readonly bundle: TrustBundle;
  readonly isRevoked?: IsRevoked;
}

/**
 * Verifies that `identityKey` is bound to a NIC certificate of the trust domain; returns the
 * NIC's host name. TG_ERR_BAD_SIGNATURE or TG_ERR_FORBIDDEN with the reason otherwise.
 */
export function verifyBinding(
  b: Partial<CertificateBinding>,
  identityKey: Uint8Array,
  trust: PeerTrust,
  what: string,
  at: Date = new Date(),
): string {
  if (b.nicCertificate === undefined || b.identityBinding === undefined)
    throw new TgError('TG_ERR_FORBIDDEN', `${what}: no NIC certificate and binding (required under mTLS)`);
  let pems: string[];
  let leaf: X509Certificate;
  try {
    pems = splitPemCertificates(b.nicCertificate);
    leaf = new X509Certificate(pems[0]);
  } catch {
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `${what}.nicCertificate is not a PEM certificate chain`);
  }
  if (pems.length === 0)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `${what}.nicCertificate is not a PEM certificate chain`);
  try {
    trust.bundle.verify(pems[0], pems.slice(1), at);
  } catch (err) {
    throw new TgError('TG_ERR_FORBIDDEN', `${what}: ${(err as Error).message}`);
  }
  const id = svidSpiffeId(leaf);
  if (id.kind !== 'nic' || id.trustDomain !== trust.bundle.trustDomain)
    throw new TgError('TG_ERR_FORBIDDEN', `${what}: ${id.uri} is not a NIC of '${trust.bundle.trustDomain}'`);
  if (trust.isRevoked?.(normalizeSerial(leaf.serialNumber)))
    throw new TgError('TG_ERR_FORBIDDEN', `${what}: the certificate of ${id.uri} is revoked`);
  const sig = Buffer.from(b.identityBinding, 'base64');
  let ok = false;
  try {
    ok = verify('sha256', bindingStatement(identityKey, id.uri), leaf.publicKey, sig);
  } catch {
    ok = false;
  }
  if (!ok)
    throw new TgError(
      'TG_ERR_BAD_SIGNATURE',
      `${what}: the identity key is not bound to the certificate of ${id.uri}`,
    );
  return id.host;
}
