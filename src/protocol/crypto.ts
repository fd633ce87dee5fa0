// Cryptographic primitives of WireGuard (whitepaper section 5.4):
//   HASH = BLAKE2s-256, MAC = keyed BLAKE2s-128, HMAC = HMAC-BLAKE2s-256, KDF1..3 = HKDF over it,
//   DH = X25519, AEAD = ChaCha20-Poly1305, XAEAD = XChaCha20-Poly1305, TAI64N timestamps.
// node:crypto (OpenSSL) does BLAKE2s-256, HMAC, X25519 and ChaCha20-Poly1305; @noble/ciphers does
// XChaCha20-Poly1305, and blake2s.ts the keyed BLAKE2s-128 MAC (neither is offered by Node).
//
// Limit: private keys handed to OpenSSL live in KeyObjects that JavaScript cannot wipe; OpenSSL
// clears X25519 private key memory when the object is freed (after garbage collection). Every
// Buffer holding a secret that this code creates is wiped when dropped.

import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  type KeyObject,
  randomFillSync,
  timingSafeEqual,
} from 'node:crypto';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { TgError } from '../util/errors.js';
import { KeyedBlake2s } from './blake2s.js';
import { AEAD_TAG_SIZE, KEY_SIZE, MAC_SIZE, TAI64N_SIZE, XNONCE_SIZE } from './constants.js';

// --- HASH, MAC, HMAC, KDF -------------------------------------------------------------

/** HASH(a || b || ...) = BLAKE2s-256. */
export function hash(...parts: Uint8Array[]): Buffer {
  const h = createHash('blake2s256');
  for (const p of parts) h.update(p);
  return h.digest();
}

/** MAC(key, data) = keyed BLAKE2s with a 16-byte digest (not a truncated BLAKE2s-256). */
export function mac(key: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(MAC_SIZE);
  const m = new KeyedBlake2s(key, MAC_SIZE);
  m.macInto(data, 0, data.length, out, 0);
  m.wipe();
  return out;
}

/** HMAC-BLAKE2s-256(key, a || b). */
export function hmac(key: Uint8Array, a: Uint8Array, b?: Uint8Array): Buffer {
  const h = createHmac('blake2s256', key);
  h.update(a);
  if (b !== undefined) h.update(b);
  return h.digest();
}

const ONE = Buffer.from([1]);
const TWO = Buffer.from([2]);
const THREE = Buffer.from([3]);

/** KDF1(key, input) = T1 with PRK = HMAC(key, input), T1 = HMAC(PRK, 0x1). */
export function kdf1(key: Uint8Array, input: Uint8Array): Buffer {
  const prk = hmac(key, input);
  const t1 = hmac(prk, ONE);
  prk.fill(0);
  return t1;
}

/** KDF2(key, input) = (T1, T2) with T2 = HMAC(PRK, T1 || 0x2). */
export function kdf2(key: Uint8Array, input: Uint8Array): [Buffer, Buffer] {
  const prk = hmac(key, input);
  const t1 = hmac(prk, ONE);
  const t2 = hmac(prk, t1, TWO);
  prk.fill(0);
  return [t1, t2];
}

/** KDF3(key, input) = (T1, T2, T3) with T3 = HMAC(PRK, T2 || 0x3). */
export function kdf3(key: Uint8Array, input: Uint8Array): [Buffer, Buffer, Buffer] {
  const prk = hmac(key, input);
  const t1 = hmac(prk, ONE);
  const t2 = hmac(prk, t1, TWO);
  const t3 = hmac(prk, t2, THREE);
  prk.fill(0);
  return [t1, t2, t3];
}

// --- X25519 ---------------------------------------------------------------------------

// DER prefixes that wrap a raw 32-byte X25519 key (RFC 8410): PKCS#8 private, SPKI public.
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

/** Clamps a Curve25519 private key in place (RFC 7748 decodeScalar25519). */
export function clampPrivateKey(k: Uint8Array): Uint8Array {
  k[0] &= 248;
  k[31] = (k[31] & 127) | 64;
  return k;
}

/** A fresh random, clamped private key. */
export function generatePrivateKey(): Buffer {
  return clampPrivateKey(randomFillSync(Buffer.alloc(KEY_SIZE))) as Buffer;
}

/** Wraps a raw private key for OpenSSL. The DER copy is wiped at once. */
export function privateKeyObject(raw: Uint8Array): KeyObject {
  if (raw.length !== KEY_SIZE) throw new TgError('TG_ERR_INVALID_ARGUMENT', 'a private key is 32 bytes');
  const der = Buffer.concat([PKCS8_X25519_PREFIX, raw]);
  try {
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } finally {
    der.fill(0);
  }
}

function publicKeyObject(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_X25519_PREFIX, raw]), format: 'der', type: 'spki' });
}

/** The public key of a raw private key (or of a KeyObject made from one). */
export function publicKeyOf(privateKey: Uint8Array | KeyObject): Buffer {
  const obj = privateKey instanceof Uint8Array ? privateKeyObject(privateKey) : privateKey;
  const spki = createPublicKey(obj).export({ format: 'der', type: 'spki' });
  return Buffer.from(spki.subarray(spki.length - KEY_SIZE));
}

/**
 * DH(private, public) = X25519. Returns null when the result is all zero (a low-order public
 * key; OpenSSL refuses it) or the public key is unusable: the handshake then fails, as in
 * wireguard-go's sharedSecret.
 */
export function dh(privateKey: Uint8Array | KeyObject, publicKey: Uint8Array): Buffer | null {
  if (publicKey.length !== KEY_SIZE) return null;
  try {
    const priv = privateKey instanceof Uint8Array ? privateKeyObject(privateKey) : privateKey;
    const out = diffieHellman({ privateKey: priv, publicKey: publicKeyObject(publicKey) });
    if (isZero(out)) return null;
    return out;
  } catch {
    return null;
  }
}

// --- AEAD and XAEAD -------------------------------------------------------------------

const ZERO_NONCE = Buffer.alloc(12);

/**
 * AEAD(key, counter 0, plaintext, aad) = ChaCha20-Poly1305, written to out at outOffset as
 * ciphertext || tag. The handshake only ever uses the zero nonce.
 */
export function aeadSealZeroNonce(
  key: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
  out: Buffer,
  outOffset: number,
): void {
  const c = createCipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: AEAD_TAG_SIZE });
  c.setAAD(aad, { plaintextLength: plaintext.length });
  const ct = c.update(plaintext);
  c.final();
  ct.copy(out, outOffset);
  c.getAuthTag().copy(out, outOffset + plaintext.length);
  ct.fill(0);
}

/** Opens ciphertext || tag with the zero nonce; null when the tag does not verify. */
export function aeadOpenZeroNonce(key: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Buffer | null {
  if (sealed.length < AEAD_TAG_SIZE) return null;
  const ctLen = sealed.length - AEAD_TAG_SIZE;
  try {
    const d = createDecipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: AEAD_TAG_SIZE });
    d.setAAD(aad, { plaintextLength: ctLen });
    d.setAuthTag(sealed.subarray(ctLen));
    const pt = d.update(sealed.subarray(0, ctLen));
    d.final();
    return pt;
  } catch {
    return null;
  }
}

/** XAEAD(key, nonce24, plaintext, aad) = XChaCha20-Poly1305: ciphertext || tag. */
export function xaeadSeal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  return xchacha20poly1305(key, nonce, aad).encrypt(plaintext);
}

/** Opens an XAEAD box; null when it does not verify. */
export function xaeadOpen(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
): Uint8Array | null {
  if (nonce.length !== XNONCE_SIZE || sealed.length < AEAD_TAG_SIZE) return null;
  try {
    return xchacha20poly1305(key, nonce, aad).decrypt(sealed);
  } catch {
    return null;
  }
}

// --- TAI64N ---------------------------------------------------------------------------

const TAI64_BASE_HIGH = 0x40000000; // 2^62, high half of the TAI64 label base 0x400000000000000a
const TAI64_BASE_LOW = 10;
/** wireguard-go whitens the nanoseconds to 2^24 ns (~16.8 ms) against timing side channels. */
const TAI64N_WHITENER = 0x1000000;

/** Writes the TAI64N label of a wall-clock time (ms since the Unix epoch) to out at offset. */
export function tai64n(wallMs: number, out: Uint8Array, offset = 0): void {
  const ms = Math.max(0, Math.floor(wallMs));
  const secs = Math.floor(ms / 1000) + TAI64_BASE_LOW;
  const nanos = (ms % 1000) * 1_000_000;
  const view = new DataView(out.buffer, out.byteOffset + offset, TAI64N_SIZE);
  view.setUint32(0, TAI64_BASE_HIGH + Math.floor(secs / 2 ** 32));
  view.setUint32(4, secs % 2 ** 32);
  view.setUint32(8, nanos - (nanos % TAI64N_WHITENER));
}

/** Whether TAI64N label a is strictly later than b (big-endian compare, as wireguard-go). */
export function tai64nAfter(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) > 0;
}

// --- Comparison, wiping, randomness ---------------------------------------------------

/** Constant-time equality for secrets and MACs; false when the lengths differ. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Constant-time test for an all-zero buffer. */
export function isZero(a: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc |= a[i];
  return acc === 0;
}

export function randomBytes(n: number): Buffer {
  return randomFillSync(Buffer.alloc(n));
}

// --- Key codec ------------------------------------------------------------------------

const BASE64_KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;
const HEX_KEY = /^[0-9a-fA-F]{64}$/;

/** Base64 of a 32-byte key, as `wg` prints it. */
export function keyToBase64(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.length).toString('base64');
}

/** Parses a base64 key (exactly 32 bytes, canonical padding), throwing TG_ERR_INVALID_ARGUMENT. */
export function keyFromBase64(text: string): Buffer {
  if (!BASE64_KEY.test(text)) {
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'a key must be 32 bytes in base64 (44 characters)');
  }
  return Buffer.from(text, 'base64');
}

/** Lower-case hex of a key, as the WireGuard UAPI carries it. */
export function keyToHex(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.length).toString('hex');
}

/** Parses a 64-digit hex key, throwing TG_ERR_INVALID_ARGUMENT. */
export function keyFromHex(text: string): Buffer {
  if (!HEX_KEY.test(text)) throw new TgError('TG_ERR_INVALID_ARGUMENT', 'a key must be 64 hex digits');
  return Buffer.from(text, 'hex');
}

/** A short, non-secret name for a public key in logs: "abcd…wxyz" of its base64. */
export function keyFingerprint(publicKey: Uint8Array): string {
  const b64 = keyToBase64(publicKey);
  return `${b64.slice(0, 4)}…${b64.slice(39, 43)}`;
}
