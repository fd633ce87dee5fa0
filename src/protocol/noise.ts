// The Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s handshake of WireGuard (whitepaper section 5.4.2-5.4.5):
//
//   <- s                       (pre-message: the initiator knows the responder's static key)
//   ...
//   -> e, es, s, ss            (MessageInitiation)
//   <- e, ee, se, psk          (MessageResponse)
//
// These functions only transform handshake state and write/read message bodies; MAC1/MAC2 are
// added and checked by cookie.ts, receiver indices are assigned by the engine. Time is passed
// in: `now` is the engine's monotonic clock (ms), `wallMs` the wall clock for TAI64N.

import type { KeyObject } from 'node:crypto';
import {
  HANDSHAKE_INITIATION_RATE,
  KEY_SIZE,
  MESSAGE_INITIATION_TYPE,
  MESSAGE_RESPONSE_TYPE,
  NOISE_CONSTRUCTION,
  TAI64N_SIZE,
  WG_IDENTIFIER,
} from './constants.js';
import {
  aeadOpenZeroNonce,
  aeadSealZeroNonce,
  dh,
  generatePrivateKey,
  hash,
  kdf1,
  kdf2,
  kdf3,
  publicKeyOf,
  tai64n,
  tai64nAfter,
} from './crypto.js';
import {
  INITIATION_OFFSET_EPHEMERAL,
  INITIATION_OFFSET_SENDER,
  INITIATION_OFFSET_STATIC,
  INITIATION_OFFSET_TIMESTAMP,
  INITIATION_STATIC_SIZE,
  INITIATION_TIMESTAMP_SIZE,
  RESPONSE_EMPTY_SIZE,
  RESPONSE_OFFSET_EMPTY,
  RESPONSE_OFFSET_EPHEMERAL,
  RESPONSE_OFFSET_RECEIVER,
  RESPONSE_OFFSET_SENDER,
} from './messages.js';
import { heapSecrets, type SecretStore } from './secrets.js';

/** Ck0 = HASH(CONSTRUCTION). */
export const INITIAL_CHAIN_KEY: Buffer = hash(Buffer.from(NOISE_CONSTRUCTION, 'latin1'));
/** H0 = HASH(Ck0 || IDENTIFIER). */
export const INITIAL_HASH: Buffer = hash(INITIAL_CHAIN_KEY, Buffer.from(WG_IDENTIFIER, 'latin1'));

const EMPTY = Buffer.alloc(0);

export const HANDSHAKE_ZEROED = 0;
export const HANDSHAKE_INITIATION_CREATED = 1;
export const HANDSHAKE_INITIATION_CONSUMED = 2;
export const HANDSHAKE_RESPONSE_CREATED = 3;
export const HANDSHAKE_RESPONSE_CONSUMED = 4;

/**
 * Per-peer handshake state (wireguard-go's Handshake). The hash, chaining key and ephemeral
 * private key come from the engine's secret store (secrets.ts); the remote ephemeral is public.
 */
export class Handshake {
  state = HANDSHAKE_ZEROED;
  readonly hash: Buffer;
  readonly chainKey: Buffer;
  readonly localEphemeral: Buffer;
  readonly remoteEphemeral = Buffer.alloc(KEY_SIZE);
  /** Our receiver index for this handshake (0: none). */
  localIndex = 0;
  /** The peer's index, sent as receiver in our messages. */
  remoteIndex = 0;
  /** Greatest TAI64N timestamp consumed from this peer (replay protection across sessions). */
  readonly lastTimestamp = Buffer.alloc(TAI64N_SIZE);
  lastInitiationConsumption = Number.NEGATIVE_INFINITY;
  lastSentHandshake = Number.NEGATIVE_INFINITY;

  constructor(secrets: SecretStore = heapSecrets) {
    this.hash = secrets.alloc(32);
    this.chainKey = secrets.alloc(32);
    this.localEphemeral = secrets.alloc(KEY_SIZE);
  }

  /** The Buffers that came from the secret store (the owner returns them when done). */
  secretBuffers(): Buffer[] {
    return [this.hash, this.chainKey, this.localEphemeral];
  }

  /** Wipes the ephemeral state; keeps the replay/flood and rate bookkeeping. */
  clear(): void {
    this.hash.fill(0);
    this.chainKey.fill(0);
    this.localEphemeral.fill(0);
    this.remoteEphemeral.fill(0);
    this.localIndex = 0;
    this.state = HANDSHAKE_ZEROED;
  }
}

/** A local static identity. */
export interface LocalStatic {
  readonly publicKey: Buffer;
  readonly privateKey: KeyObject;
}

/** What the handshake needs of a peer. */
export interface NoisePeer {
  readonly handshake: Handshake;
  readonly remoteStatic: Buffer;
  /** 32 bytes; all zero when no preshared key is configured (as the spec prescribes). */
  readonly presharedKey: Buffer;
  /** DH(local static private, remote static public); null when that is invalid (all zero). */
  readonly precomputedStaticStatic: Buffer | null;
}

function mixHash(h: Buffer, data: Uint8Array): void {
  const next = hash(h, data);
  next.copy(h);
}

function mixKey(ck: Buffer, data: Uint8Array): void {
  const next = kdf1(ck, data);
  next.copy(ck);
  next.fill(0);
}

/** ck, key = KDF2(ck, input); returns key (caller wipes). */
function mixKeyAndGetKey(ck: Buffer, input: Uint8Array): Buffer {
  const [t1, t2] = kdf2(ck, input);
  t1.copy(ck);
  t1.fill(0);
  return t2;
}

/**
 * Writes type, sender, ephemeral, static and timestamp of a MessageInitiation at out[off] and
 * moves the handshake to INITIATION_CREATED. MACs are not written. False when the peer's
 * static key is unusable (all-zero DH).
 */
export function createInitiation(
  local: LocalStatic,
  peer: NoisePeer,
  senderIndex: number,
  wallMs: number,
  out: Buffer,
  off: number,
): boolean {
  const hs = peer.handshake;
  if (peer.precomputedStaticStatic === null) return false;
  INITIAL_HASH.copy(hs.hash);
  INITIAL_CHAIN_KEY.copy(hs.chainKey);
  mixHash(hs.hash, peer.remoteStatic);

  // e
  const ephemeral = generatePrivateKey();
  ephemeral.copy(hs.localEphemeral);
  ephemeral.fill(0);
  const ephemeralPublic = publicKeyOf(hs.localEphemeral);
  out.writeUInt32LE(MESSAGE_INITIATION_TYPE, off);
  out.writeUInt32LE(senderIndex, off + INITIATION_OFFSET_SENDER);
  ephemeralPublic.copy(out, off + INITIATION_OFFSET_EPHEMERAL);
  mixKey(hs.chainKey, ephemeralPublic);
  mixHash(hs.hash, ephemeralPublic);

  // es
  const es = dh(hs.localEphemeral, peer.remoteStatic);
  if (es === null) {
    hs.clear();
    return false;
  }
  let key = mixKeyAndGetKey(hs.chainKey, es);
  es.fill(0);

  // s
  aeadSealZeroNonce(key, local.publicKey, hs.hash, out, off + INITIATION_OFFSET_STATIC);
  key.fill(0);
  mixHash(
    hs.hash,
    out.subarray(off + INITIATION_OFFSET_STATIC, off + INITIATION_OFFSET_STATIC + INITIATION_STATIC_SIZE),
  );

  // ss
  key = mixKeyAndGetKey(hs.chainKey, peer.precomputedStaticStatic);

  // {timestamp}
  const timestamp = Buffer.alloc(TAI64N_SIZE);
  tai64n(wallMs, timestamp);
  aeadSealZeroNonce(key, timestamp, hs.hash, out, off + INITIATION_OFFSET_TIMESTAMP);
  key.fill(0);
  mixHash(
    hs.hash,
    out.subarray(
      off + INITIATION_OFFSET_TIMESTAMP,
      off + INITIATION_OFFSET_TIMESTAMP + INITIATION_TIMESTAMP_SIZE,
    ),
  );

  hs.localIndex = senderIndex;
  hs.state = HANDSHAKE_INITIATION_CREATED;
  return true;
}

export type ConsumeInitiationResult<P extends NoisePeer> =
  | { ok: true; peer: P }
  | { ok: false; reason: 'decrypt' | 'unknownPeer' | 'replay' | 'flood' };

/**
 * Consumes the MessageInitiation at buf[off] (MAC1 already checked) for a local identity:
 * decrypts the initiator's static key, finds the peer with `lookup`, verifies the timestamp,
 * rejects replays (timestamp not newer than the last one) and floods (less than
 * HANDSHAKE_INITIATION_RATE since the last consumption), and moves the peer's handshake to
 * INITIATION_CONSUMED. The handshake state is only touched on success.
 */
export function consumeInitiation<P extends NoisePeer>(
  local: LocalStatic,
  buf: Buffer,
  off: number,
  lookup: (remoteStatic: Buffer) => P | undefined,
  now: number,
): ConsumeInitiationResult<P> {
  const ephemeral = buf.subarray(
    off + INITIATION_OFFSET_EPHEMERAL,
    off + INITIATION_OFFSET_EPHEMERAL + KEY_SIZE,
  );
  const h = hash(INITIAL_HASH, local.publicKey);
  mixHash(h, ephemeral);
  const ck = kdf1(INITIAL_CHAIN_KEY, ephemeral);
  try {
    // es
    const es = dh(local.privateKey, ephemeral);
    if (es === null) return { ok: false, reason: 'decrypt' };
    let key = mixKeyAndGetKey(ck, es);
    es.fill(0);

    // s
    const sealedStatic = buf.subarray(
      off + INITIATION_OFFSET_STATIC,
      off + INITIATION_OFFSET_STATIC + INITIATION_STATIC_SIZE,
    );
    const remoteStatic = aeadOpenZeroNonce(key, sealedStatic, h);
    key.fill(0);
    if (remoteStatic === null) return { ok: false, reason: 'decrypt' };
    mixHash(h, sealedStatic);
    const peer = lookup(remoteStatic);
    if (peer === undefined) return { ok: false, reason: 'unknownPeer' };
    const hs = peer.handshake;

    // ss
    if (peer.precomputedStaticStatic === null) return { ok: false, reason: 'decrypt' };
    key = mixKeyAndGetKey(ck, peer.precomputedStaticStatic);

    // {timestamp}
    const sealedTimestamp = buf.subarray(
      off + INITIATION_OFFSET_TIMESTAMP,
      off + INITIATION_OFFSET_TIMESTAMP + INITIATION_TIMESTAMP_SIZE,
    );
    const timestamp = aeadOpenZeroNonce(key, sealedTimestamp, h);
    key.fill(0);
    if (timestamp === null) return { ok: false, reason: 'decrypt' };
    mixHash(h, sealedTimestamp);

    if (!tai64nAfter(timestamp, hs.lastTimestamp)) return { ok: false, reason: 'replay' };
    if (now - hs.lastInitiationConsumption <= HANDSHAKE_INITIATION_RATE)
      return { ok: false, reason: 'flood' };

    h.copy(hs.hash);
    ck.copy(hs.chainKey);
    hs.remoteIndex = buf.readUInt32LE(off + INITIATION_OFFSET_SENDER);
    ephemeral.copy(hs.remoteEphemeral);
    timestamp.copy(hs.lastTimestamp);
    if (now > hs.lastInitiationConsumption) hs.lastInitiationConsumption = now;
    hs.state = HANDSHAKE_INITIATION_CONSUMED;
    return { ok: true, peer };
  } finally {
    h.fill(0);
    ck.fill(0);
  }
}

/**
 * Writes a MessageResponse (without MACs) at out[off] for a handshake in INITIATION_CONSUMED and
 * moves it to RESPONSE_CREATED. False in any other state or on an invalid DH result.
 */
export function createResponse(peer: NoisePeer, senderIndex: number, out: Buffer, off: number): boolean {
  const hs = peer.handshake;
  if (hs.state !== HANDSHAKE_INITIATION_CONSUMED) return false;
  out.writeUInt32LE(MESSAGE_RESPONSE_TYPE, off);
  out.writeUInt32LE(senderIndex, off + RESPONSE_OFFSET_SENDER);
  out.writeUInt32LE(hs.remoteIndex, off + RESPONSE_OFFSET_RECEIVER);

  // e
  const ephemeral = generatePrivateKey();
  ephemeral.copy(hs.localEphemeral);
  ephemeral.fill(0);
  const ephemeralPublic = publicKeyOf(hs.localEphemeral);
  ephemeralPublic.copy(out, off + RESPONSE_OFFSET_EPHEMERAL);
  mixHash(hs.hash, ephemeralPublic);
  mixKey(hs.chainKey, ephemeralPublic);

  // ee
  const ee = dh(hs.localEphemeral, hs.remoteEphemeral);
  if (ee === null) {
    hs.clear();
    return false;
  }
  mixKey(hs.chainKey, ee);
  ee.fill(0);

  // se
  const se = dh(hs.localEphemeral, peer.remoteStatic);
  if (se === null) {
    hs.clear();
    return false;
  }
  mixKey(hs.chainKey, se);
  se.fill(0);

  // psk
  const [t1, tau, key] = kdf3(hs.chainKey, peer.presharedKey);
  t1.copy(hs.chainKey);
  t1.fill(0);
  mixHash(hs.hash, tau);
  tau.fill(0);

  // {}
  aeadSealZeroNonce(key, EMPTY, hs.hash, out, off + RESPONSE_OFFSET_EMPTY);
  key.fill(0);
  mixHash(
    hs.hash,
    out.subarray(off + RESPONSE_OFFSET_EMPTY, off + RESPONSE_OFFSET_EMPTY + RESPONSE_EMPTY_SIZE),
  );

  hs.localIndex = senderIndex;
  hs.state = HANDSHAKE_RESPONSE_CREATED;
  return true;
}

/**
 * Consumes the MessageResponse at buf[off] (MAC1 checked, receiver index already resolved to
 * this peer) for a handshake in INITIATION_CREATED and moves it to RESPONSE_CONSUMED. The
 * handshake state is only touched on success.
 */
export function consumeResponse(local: LocalStatic, peer: NoisePeer, buf: Buffer, off: number): boolean {
  const hs = peer.handshake;
  if (hs.state !== HANDSHAKE_INITIATION_CREATED) return false;
  const ephemeral = buf.subarray(off + RESPONSE_OFFSET_EPHEMERAL, off + RESPONSE_OFFSET_EPHEMERAL + KEY_SIZE);
  const h = hash(hs.hash, ephemeral);
  const ck = kdf1(hs.chainKey, ephemeral);
  try {
    // ee
    const ee = dh(hs.localEphemeral, ephemeral);
    if (ee === null) return false;
    mixKey(ck, ee);
    ee.fill(0);

    // se
    const se = dh(local.privateKey, ephemeral);
    if (se === null) return false;
    mixKey(ck, se);
    se.fill(0);

    // psk
    const [t1, tau, key] = kdf3(ck, peer.presharedKey);
    t1.copy(ck);
    t1.fill(0);
    mixHash(h, tau);
    tau.fill(0);

    // {}
    const sealedEmpty = buf.subarray(
      off + RESPONSE_OFFSET_EMPTY,
      off + RESPONSE_OFFSET_EMPTY + RESPONSE_EMPTY_SIZE,
    );
    const empty = aeadOpenZeroNonce(key, sealedEmpty, h);
    key.fill(0);
    if (empty === null) return false;
    mixHash(h, sealedEmpty);

    h.copy(hs.hash);
    ck.copy(hs.chainKey);
    hs.remoteIndex = buf.readUInt32LE(off + RESPONSE_OFFSET_SENDER);
    hs.state = HANDSHAKE_RESPONSE_CONSUMED;
    return true;
  } finally {
    h.fill(0);
    ck.fill(0);
  }
}

export interface SessionKeys {
  sendKey: Buffer;
  receiveKey: Buffer;
  isInitiator: boolean;
  localIndex: number;
  remoteIndex: number;
}

/**
 * Derives the transport keys once the handshake is complete on this side,
 * (T_send, T_recv) = KDF2(Ck, empty) for the initiator and the reverse for the responder, then
 * wipes the handshake (state ZEROED, localIndex 0). Null in any other state.
 */
export function deriveSessionKeys(hs: Handshake): SessionKeys | null {
  let isInitiator: boolean;
  if (hs.state === HANDSHAKE_RESPONSE_CONSUMED) isInitiator = true;
  else if (hs.state === HANDSHAKE_RESPONSE_CREATED) isInitiator = false;
  else return null;
  const [t1, t2] = kdf2(hs.chainKey, EMPTY);
  const keys: SessionKeys = {
    sendKey: isInitiator ? t1 : t2,
    receiveKey: isInitiator ? t2 : t1,
    isInitiator,
    localIndex: hs.localIndex,
    remoteIndex: hs.remoteIndex,
  };
  hs.clear();
  return keys;
}
