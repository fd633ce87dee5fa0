// The PSK box: how a workload's PSK goes from the NIC to that workload's vSwitch instance
// through the orchestrator, which relays only ciphertext and never holds the key.
//
// Construction (an anonymous-sender ECIES over the primitives WireGuard already uses, in the
// shape of RFC 9180's base mode with X25519, a BLAKE2s HKDF and ChaCha20-Poly1305):
//   R           = the instance's X25519 public key (the WireGuard static key the NIC pins as
//                 the workload's on-host peer); r its private key, held by the vSwitch daemon
//   N           = the NIC's on-host public key (the peer the PSK is for)
//   e, E        = a fresh X25519 key pair of the NIC, used once
//   ad          = LABEL || len-prefixed(workload) || E || R || N
//   k           = KDF2(HASH(ad), DH(e, R))[1]          (noise.ts's HMAC-BLAKE2s HKDF)
//   box         = ChaCha20-Poly1305(k, nonce 0, psk, ad)   (k is used once)
// Binding the workload, both ephemeral and recipient keys and the NIC's key into the
// associated data means a box opens only for that instance, that workload and that NIC peer
// (a box from a registration and one from a rotation are interchangeable: both set the PSK). Limits: the sender is not authenticated by the box itself (anyone may seal to R); the
// orchestrator that relays it also relays N, so it is trusted for topology as before, but it
// never sees a PSK. The instance's static key serves both WireGuard and this box; the KDF
// label keeps the two uses apart (the DH here is always with a fresh ephemeral key, never
// the static-static DH of the handshake).
import { z } from 'zod';
import {
  aeadOpenZeroNonce,
  aeadSealZeroNonce,
  dh,
  generatePrivateKey,
  hash,
  kdf2,
  publicKeyOf,
} from '../protocol/crypto.js';
import { TgError } from '../util/errors.js';
import { lengthPrefixed } from './identity.js';

const LABEL = Buffer.from('tenguard psk box v1');
const TAG_SIZE = 16;
export const PSK_SIZE = 32;

/** What crosses the orchestrator: no key, only the box. */
export interface PskBox {
  version: 1;
  /** The NIC's ephemeral X25519 public key, base64. */
  ephemeral: string;
  /** The sealed PSK (32 bytes + 16-byte tag), base64. */
  box: string;
}

export const pskBoxSchema = z.strictObject({
  version: z.literal(1),
  ephemeral: z
    .string()
    .length(44)
    .regex(/^[A-Za-z0-9+/]{43}=$/),
  box: z
    .string()
    .length(64)
    .regex(/^[A-Za-z0-9+/]{64}$/),
});

function associatedData(workload: string, e: Uint8Array, r: Uint8Array, nic: Uint8Array): Buffer {
  return Buffer.concat([LABEL, lengthPrefixed(workload), e, r, nic]);
}

/** Seals a workload's PSK to its instance's public key (NIC side). */
export function sealPsk(
  psk: Uint8Array,
  to: { workload: string; instanceKey: Uint8Array; nicPublicKey: Uint8Array },
): PskBox {
  if (psk.length !== PSK_SIZE) throw new TgError('TG_ERR_INVALID_ARGUMENT', 'a PSK is 32 bytes');
  const e = generatePrivateKey();
  try {
    const E = publicKeyOf(e);
    const shared = dh(e, to.instanceKey);
    if (shared === null) throw new TgError('TG_ERR_INVALID_ARGUMENT', "the instance's key is unusable");
    const ad = associatedData(to.workload, E, to.instanceKey, to.nicPublicKey);
    const [k1, k] = kdf2(hash(ad), shared);
    shared.fill(0);
    k1.fill(0);
    const box = Buffer.alloc(PSK_SIZE + TAG_SIZE);
    aeadSealZeroNonce(k, psk, ad, box, 0);
    k.fill(0);
    return { version: 1, ephemeral: E.toString('base64'), box: box.toString('base64') };
  } finally {
    e.fill(0);
  }
}

/**
 * Opens a PSK box (vSwitch side) into `out` (32 bytes, the caller's, e.g. from the secret
 * pool). TG_ERR_INVALID_ARGUMENT when the box is malformed or does not open for this
 * instance, workload and NIC key; `out` is then left zeroed.
 */
export function openPsk(
  box: unknown,
  at: { workload: string; instancePrivateKey: Uint8Array; nicPublicKey: Uint8Array },
  out: Buffer,
): void {
  out.fill(0);
  const parsed = pskBoxSchema.safeParse(box);
  if (!parsed.success) throw new TgError('TG_ERR_INVALID_ARGUMENT', 'malformed PSK box');
  const E = Buffer.from(parsed.data.ephemeral, 'base64');
  const sealed = Buffer.from(parsed.data.box, 'base64');
  const r = publicKeyOf(at.instancePrivateKey);
  const shared = dh(at.instancePrivateKey, E);
  if (shared === null)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'the PSK box has an unusable ephemeral key');
  const ad = associatedData(at.workload, E, r, at.nicPublicKey);
  const [k1, k] = kdf2(hash(ad), shared);
  shared.fill(0);
  k1.fill(0);
  const psk = aeadOpenZeroNonce(k, sealed, ad);
  k.fill(0);
  if (psk === null)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'the PSK box does not open for this instance and NIC');
  psk.copy(out);
  psk.fill(0);
}
