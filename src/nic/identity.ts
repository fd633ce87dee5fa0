// The NIC's identity: an Ed25519 key pair made at start and kept in the key store. Its public
// key names the NIC until the CA issues it a certificate; with it the NIC signs what it
// publishes, so that the orchestrator, which only relays, cannot substitute a key:
//   - each tenant's off-host public key, bound to the tenant and to this NIC's fabric endpoint;
//   - its X25519 seal key, which other NICs seal transfers to (sealed.ts).
//
// Statements are byte strings with a fixed domain label and length-prefixed fields, so no two
// different statements can have the same encoding.
import { ed25519 } from '@noble/curves/ed25519.js';
import { TgError } from '../util/errors.js';

export const IDENTITY_KEY_SIZE = 32;
export const SIGNATURE_SIZE = 64;

const TENANT_KEY_LABEL = 'tenguard tenant off-host key v1';
const SEAL_KEY_LABEL = 'tenguard nic seal key v1';

/** u16 big-endian length || bytes, for every variable field of a statement. */
export function lengthPrefixed(...fields: (string | Uint8Array)[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of fields) {
    const b = typeof f === 'string' ? Buffer.from(f, 'utf8') : Buffer.from(f);
    if (b.length > 0xffff) throw new TgError('TG_ERR_INVALID_ARGUMENT', 'statement field too long');
    const len = Buffer.alloc(2);
    len.writeUInt16BE(b.length);
    parts.push(len, b);
  }
  return Buffer.concat(parts);
}

/** What a NIC signs to publish a tenant's off-host public key. */
export function tenantKeyStatement(tenant: string, publicKey: Uint8Array, endpoint: string): Buffer {
  return lengthPrefixed(TENANT_KEY_LABEL, tenant, publicKey, endpoint);
}

/** What a NIC signs to publish its seal key. */
export function sealKeyStatement(sealKey: Uint8Array): Buffer {
  return lengthPrefixed(SEAL_KEY_LABEL, sealKey);
}

/** Ed25519 verification that never throws: false for malformed keys or signatures too. */
export function verifySignature(
  identityKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (identityKey.length !== IDENTITY_KEY_SIZE || signature.length !== SIGNATURE_SIZE) return false;
  try {
    return ed25519.verify(signature, message, identityKey);
  } catch {
    return false;
  }
}

export class NicIdentity {
  /**
   * @param secret The Ed25519 secret key, borrowed from the key store (wiped there).
   * @param publicKey Its public key.
   */
  constructor(
    private readonly secret: Buffer,
    readonly publicKey: Buffer,
  ) {
    if (secret.length !== IDENTITY_KEY_SIZE || publicKey.length !== IDENTITY_KEY_SIZE)
      throw new TgError('TG_ERR_INVALID_ARGUMENT', 'an identity key is 32 bytes');
  }

  sign(message: Uint8Array): Buffer {
    return Buffer.from(ed25519.sign(message, this.secret));
  }
}
