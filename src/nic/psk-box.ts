// The PSK box: how a workload's PSK goes from the NIC to that workload's vSwitch instance
// through the orchestrator, which relays only ciphertext and never holds the key.
//
// Construction: seal.ts's seal with the label of use `pskBox`:
//   R           = the instance's X25519 public key (the WireGuard static key the NIC pins as
//                 the workload's on-host peer); r its private key, held by the vSwitch daemon
//   N           = the NIC's on-host public key (the peer the PSK is for)
//   context     = len-prefixed(workload); trailer = N
//   ad          = LABEL || context || E || R || N
//   box         = seal(R, ad, psk)
// Binding the workload, both ephemeral and recipient keys and the NIC's key into the
// associated data means a box opens only for that instance, that workload and that NIC peer
// (a box from a registration and one from a rotation are interchangeable: both set the PSK). Limits: the sender is not authenticated by the box itself (anyone may seal to R); the
// orchestrator that relays it also relays N, so it is trusted for topology as before, but it
// never sees a PSK. The instance's static key serves both WireGuard and this box; the KDF
// label keeps the two uses apart (the DH here is always with a fresh ephemeral key, never
// the static-static DH of the handshake).
import { z } from 'zod';
import { TgError } from '../util/errors.js';
import { lengthPrefixed } from './identity.js';
import { open, type SealBinding, seal } from './seal.js';

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

function binding(workload: string, nicPublicKey: Uint8Array): SealBinding {
  return { use: 'pskBox', context: lengthPrefixed(workload), trailer: nicPublicKey };
}

/** Seals a workload's PSK to its instance's public key (NIC side). */
export function sealPsk(
  psk: Uint8Array,
  to: { workload: string; instanceKey: Uint8Array; nicPublicKey: Uint8Array },
): PskBox {
  if (psk.length !== PSK_SIZE) throw new TgError('TG_ERR_INVALID_ARGUMENT', 'a PSK is 32 bytes');
  const { ephemeral, ciphertext } = seal(to.instanceKey, binding(to.workload, to.nicPublicKey), psk);
  return { version: 1, ephemeral: ephemeral.toString('base64'), box: ciphertext.toString('base64') };
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
  const psk = open(at.instancePrivateKey, binding(at.workload, at.nicPublicKey), E, sealed);
  if (psk === 'bad-ephemeral')
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'the PSK box has an unusable ephemeral key');
  if (psk === 'not-authentic')
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'the PSK box does not open for this instance and NIC');
  psk.copy(out);
  psk.fill(0);
}
