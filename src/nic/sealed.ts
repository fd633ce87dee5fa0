// NIC-to-NIC sealed transfer: how a secret that must move between NICs (a migrating
// workload's key, say) crosses the host and the orchestrator as ciphertext only.
//
// Construction: seal.ts's seal with the label of use `nicTransfer`, then a signature:
//   R           = the receiving NIC's seal key (X25519), published signed by its identity key
//   context     = len-prefixed(sender identity key, receiver identity key, purpose)
//   ad          = LABEL || context || E || R                      (seal.ts, no trailer)
//   ciphertext  = seal(R, ad, plaintext)
//   signature   = Ed25519(sender identity key, ad || ciphertext)
// The receiver checks the signature against the sender identity it expects, that the envelope
// names itself as receiver and the purpose it expects, then opens. Binding both identities and
// the purpose into the AEAD's associated data means an envelope cannot be replayed to another
// NIC or used for another purpose; the signature authenticates the sender (the DH alone would
// not: anyone may seal to R). Departure from a full protocol: there is no replay protection
// across time; a receiver that must not accept the same transfer twice keeps the envelope's
// ephemeral key as a one-time id.
import { z } from 'zod';
import { publicKeyOf } from '../protocol/crypto.js';
import { TgError } from '../util/errors.js';
import { lengthPrefixed, type NicIdentity, sealKeyStatement, verifySignature } from './identity.js';
import { open, type SealBinding, seal, sealAssociatedData, SEAL_TAG_SIZE as TAG_SIZE } from './seal.js';
/** Largest secret a transfer carries. */
export const MAX_SEALED_PLAINTEXT = 4096;

export interface SealedEnvelope {
  version: 1;
  /** Sender and receiver NIC identity keys, base64. */
  sender: string;
  receiver: string;
  purpose: string;
  /** The sender's ephemeral X25519 public key, base64. */
  ephemeral: string;
  /** The receiver's seal key the envelope was made for, base64. */
  sealKey: string;
  ciphertext: string;
  signature: string;
}

const b64 = (n: number) =>
  z
    .string()
    .max(Math.ceil(n / 3) * 4 + 4)
    .regex(/^[A-Za-z0-9+/]*={0,2}$/);

export const sealedEnvelopeSchema = z.strictObject({
  version: z.literal(1),
  sender: b64(32),
  receiver: b64(32),
  purpose: z.string().min(1).max(128),
  ephemeral: b64(32),
  sealKey: b64(32),
  ciphertext: b64(MAX_SEALED_PLAINTEXT + TAG_SIZE),
  signature: b64(64),
});

/** The receiver as the sender knows it: identity key, and its seal key signed by that identity. */
export interface SealRecipient {
  identityKey: Uint8Array;
  sealKey: Uint8Array;
  sealKeySignature: Uint8Array;
}

function binding(sender: Uint8Array, receiver: Uint8Array, purpose: string): SealBinding {
  return { use: 'nicTransfer', context: lengthPrefixed(sender, receiver, purpose) };
}

/**
 * Seals `plaintext` for `recipient` on behalf of `sender`. Throws TG_ERR_BAD_SIGNATURE when the
 * recipient's seal key is not signed by its identity key, TG_ERR_INVALID_ARGUMENT for bad sizes.
 */
export function sealForNic(
  sender: NicIdentity,
  recipient: SealRecipient,
  purpose: string,
  plaintext: Uint8Array,
): SealedEnvelope {
  if (plaintext.length > MAX_SEALED_PLAINTEXT)
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `a sealed transfer carries at most ${MAX_SEALED_PLAINTEXT} bytes`,
    );
  if (purpose.length === 0 || purpose.length > 128)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'a sealed transfer needs a purpose of 1..128 characters');
  if (
    !verifySignature(recipient.identityKey, sealKeyStatement(recipient.sealKey), recipient.sealKeySignature)
  )
    throw new TgError('TG_ERR_BAD_SIGNATURE', "the receiver's seal key is not signed by its identity key");
  const { ephemeral, ciphertext, ad } = seal(
    recipient.sealKey,
    binding(sender.publicKey, recipient.identityKey, purpose),
    plaintext,
  );
  const signature = sender.sign(Buffer.concat([ad, ciphertext]));
  return {
    version: 1,
    sender: sender.publicKey.toString('base64'),
    receiver: Buffer.from(recipient.identityKey).toString('base64'),
    purpose,
    ephemeral: ephemeral.toString('base64'),
    sealKey: Buffer.from(recipient.sealKey).toString('base64'),
    ciphertext: ciphertext.toString('base64'),
    signature: signature.toString('base64'),
  };
}

export interface OpenOptions {
  /** This NIC's identity key and seal private key (borrowed). */
  identityKey: Uint8Array;
  sealPrivateKey: Uint8Array;
  /** The sender the receiver expects, and the purpose. */
  expectedSender: Uint8Array;
  expectedPurpose: string;
}

/**
 * Opens an envelope: the plaintext (the caller wipes it). Throws TG_ERR_BAD_SIGNATURE when the
 * signature is not the expected sender's, TG_ERR_INVALID_ARGUMENT when the envelope is
 * malformed, for another receiver or purpose, or does not decrypt.
 */
export function openFromNic(envelope: unknown, opts: OpenOptions): Buffer {
  const parsed = sealedEnvelopeSchema.safeParse(envelope);
  if (!parsed.success) throw new TgError('TG_ERR_INVALID_ARGUMENT', 'malformed sealed envelope');
  const env = parsed.data;
  const sender = Buffer.from(env.sender, 'base64');
  const receiver = Buffer.from(env.receiver, 'base64');
  const ephemeral = Buffer.from(env.ephemeral, 'base64');
  const sealKey = Buffer.from(env.sealKey, 'base64');
  const ciphertext = Buffer.from(env.ciphertext, 'base64');
  const signature = Buffer.from(env.signature, 'base64');
  if (!sender.equals(Buffer.from(opts.expectedSender)))
    throw new TgError('TG_ERR_BAD_SIGNATURE', 'the envelope is not from the expected sender');
  if (!receiver.equals(Buffer.from(opts.identityKey)))
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'the envelope is for another NIC');
  if (env.purpose !== opts.expectedPurpose)
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `the envelope is for '${env.purpose}', not '${opts.expectedPurpose}'`,
    );
  const ownSealKey = publicKeyOf(opts.sealPrivateKey);
  if (!sealKey.equals(ownSealKey))
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'the envelope is for another seal key');
  if (ephemeral.length !== 32 || ciphertext.length < TAG_SIZE)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'malformed sealed envelope');
  const b = binding(sender, receiver, env.purpose);
  const ad = sealAssociatedData(b, ephemeral, sealKey);
  if (!verifySignature(sender, Buffer.concat([ad, ciphertext]), signature))
    throw new TgError('TG_ERR_BAD_SIGNATURE', "the envelope's signature does not verify");
  const plaintext = open(opts.sealPrivateKey, b, ephemeral, ciphertext, ownSealKey);
  if (plaintext === 'bad-ephemeral')
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'the envelope has an unusable ephemeral key');
  if (plaintext === 'not-authentic')
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'the envelope does not decrypt');
  return plaintext;
}
