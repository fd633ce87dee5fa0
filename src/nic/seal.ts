// The one seal construction behind both of the NIC's sealed wire formats (sealed.ts, NIC to
// NIC; psk-box.ts, NIC to vSwitch instance): an anonymous-sender ECIES in the shape of RFC
// 9180's base mode, over the primitives WireGuard already uses (X25519, the HMAC-BLAKE2s HKDF of
// noise.ts, ChaCha20-Poly1305):
//   e, E        = a fresh X25519 key pair of the sealer, used once
//   R           = the recipient's X25519 public key; r its private key
//   ad          = LABEL(use) || context || E || R || trailer
//   k           = KDF2(HASH(ad), DH(e, R))[1]
//   ciphertext  = ChaCha20-Poly1305(k, nonce 0, plaintext, ad)      (k is used once)
// Each use has its own label at the front of the associated data, so a box made for one use
// never opens as another even under the same recipient key (the key schedule starts from the
// hash of ad). The context and trailer are the use's own bindings (identities, purpose,
// workload, peer key); each use fixes their layout. The seal alone does not authenticate the
// sealer (anyone may seal to R): a use that needs that signs (sealed.ts) or trusts its relay
// for it (psk-box.ts).
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

/** One label per use; a new use adds its own (never reuses one). */
export const SEAL_LABELS = {
  /** sealed.ts: a secret moving between NICs. */
  nicTransfer: Buffer.from('tenguard sealed transfer v1'),
  /** psk-box.ts: a workload's PSK, NIC to its vSwitch instance. */
  pskBox: Buffer.from('tenguard psk box v1'),
} as const;
export type SealUse = keyof typeof SEAL_LABELS;

export const SEAL_TAG_SIZE = 16;
export const SEAL_KEY_SIZE = 32;

/** What a box is bound to besides the keys: its use, and bytes before and after E || R. */
export interface SealBinding {
  use: SealUse;
  context: Uint8Array;
  trailer?: Uint8Array;
}

/** The associated data of a box (the sealer signs over it in sealed.ts). */
export function sealAssociatedData(b: SealBinding, ephemeral: Uint8Array, recipient: Uint8Array): Buffer {
  const parts = [SEAL_LABELS[b.use], b.context, ephemeral, recipient];
  if (b.trailer !== undefined) parts.push(b.trailer);
  return Buffer.concat(parts);
}

function boxKey(ad: Uint8Array, shared: Buffer): Buffer {
  const [k1, key] = kdf2(hash(ad), shared);
  shared.fill(0);
  k1.fill(0);
  return key;
}

export interface Sealed {
  ephemeral: Buffer;
  ciphertext: Buffer;
  ad: Buffer;
}

/**
 * Seals `plaintext` to `recipient` (X25519 public key). Throws TG_ERR_INVALID_ARGUMENT when the
 * recipient key is unusable (a low-order point: the shared secret would be all zeros).
 */
export function seal(recipient: Uint8Array, b: SealBinding, plaintext: Uint8Array): Sealed {
  const e = generatePrivateKey();
  try {
    const ephemeral = publicKeyOf(e);
    const shared = dh(e, recipient);
    if (shared === null) throw new TgError('TG_ERR_INVALID_ARGUMENT', "the recipient's key is unusable");
    const ad = sealAssociatedData(b, ephemeral, recipient);
    const key = boxKey(ad, shared);
    const ciphertext = Buffer.alloc(plaintext.length + SEAL_TAG_SIZE);
    aeadSealZeroNonce(key, plaintext, ad, ciphertext, 0);
    key.fill(0);
    return { ephemeral, ciphertext, ad };
  } finally {
    e.fill(0);
  }
}

/**
 * Opens a box with the recipient's private key: the plaintext (the caller wipes it),
 * 'bad-ephemeral' when E is unusable or not 32 bytes, 'not-authentic' when the box does not
 * open for this key and binding. `recipient` is the public key of `privateKey` when the caller
 * has it at hand (else derived).
 */
export function open(
  privateKey: Uint8Array,
  b: SealBinding,
  ephemeral: Uint8Array,
  ciphertext: Uint8Array,
  recipient: Uint8Array = publicKeyOf(privateKey),
): Buffer | 'bad-ephemeral' | 'not-authentic' {
  if (ephemeral.length !== SEAL_KEY_SIZE) return 'bad-ephemeral';
  if (ciphertext.length < SEAL_TAG_SIZE) return 'not-authentic';
  const shared = dh(privateKey, ephemeral);
  if (shared === null) return 'bad-ephemeral';
  const ad = sealAssociatedData(b, ephemeral, recipient);
  const key = boxKey(ad, shared);
  const plaintext = aeadOpenZeroNonce(key, ciphertext, ad);
  key.fill(0);
  return plaintext ?? 'not-authentic';
}
