// MAC1/MAC2 and cookies (whitepaper section 5.4.4 and 5.4.7, wireguard-go cookie.go).
//
//   mac1 = MAC(HASH(LABEL_MAC1 || Spub_receiver), msg[0 : mac1 offset])
//   mac2 = MAC(cookie, msg[0 : mac2 offset])            (zero when no fresh cookie is held)
//   cookie = MAC(Rm, source address || source port)      (Rm: random secret, renewed every 2 min)
//   cookie reply = XAEAD(HASH(LABEL_COOKIE || Spub_responder), nonce24, cookie, aad = mac1 of the message)
//
// The cookie input is the source address bytes (4 or 16) followed by the source port big-endian;
// only the responder ever computes it, so its exact form is local (the kernel uses the same).

import { KeyedBlake2s } from './blake2s.js';
import {
  COOKIE_REFRESH_TIME,
  COOKIE_SIZE,
  MAC_SIZE,
  MESSAGE_COOKIE_REPLY_SIZE,
  MESSAGE_COOKIE_REPLY_TYPE,
  WG_LABEL_COOKIE,
  WG_LABEL_MAC1,
  XNONCE_SIZE,
} from './constants.js';
import { hash, randomBytes, xaeadOpen, xaeadSeal } from './crypto.js';
import {
  COOKIE_REPLY_OFFSET_COOKIE,
  COOKIE_REPLY_OFFSET_NONCE,
  COOKIE_REPLY_OFFSET_RECEIVER,
  mac1Offset,
  mac2Offset,
} from './messages.js';

const LABEL_MAC1 = Buffer.from(WG_LABEL_MAC1, 'latin1');
const LABEL_COOKIE = Buffer.from(WG_LABEL_COOKIE, 'latin1');

/** HASH(LABEL_MAC1 || publicKey): the key of every MAC1 addressed to that public key. */
export function mac1KeyFor(publicKey: Uint8Array): Buffer {
  return hash(LABEL_MAC1, publicKey);
}

/** HASH(LABEL_COOKIE || publicKey): the key that seals cookies sent by that public key's owner. */
export function cookieKeyFor(publicKey: Uint8Array): Buffer {
  return hash(LABEL_COOKIE, publicKey);
}

/**
 * The responder's random secret Rm, renewed every COOKIE_REFRESH_TIME. One per engine: a cookie
 * proves that its holder receives datagrams at a source address, which is the same whichever
 * local identity the message is for, so MAC2 can be checked before the message's identity is
 * known (the engine sorts arriving initiations by MAC2 without scanning identities).
 */
export class CookieSecret {
  private readonly secret = Buffer.alloc(32);
  private setAt = Number.NEGATIVE_INFINITY;
  private mac2: KeyedBlake2s | null = null;
  private readonly cookie = Buffer.alloc(COOKIE_SIZE);

  /** MAC2 of the handshake message at buf[off, off+len) is valid for `source`'s cookie now. */
  checkMac2(buf: Buffer, off: number, len: number, source: Uint8Array, now: number): boolean {
    if (now - this.setAt > COOKIE_REFRESH_TIME) return false;
    this.cookieInto(source);
    const m = new KeyedBlake2s(this.cookie, MAC_SIZE);
    const ok = m.verify(buf, off, mac2Offset(len), buf, off + mac2Offset(len));
    m.wipe();
    this.cookie.fill(0);
    return ok;
  }

  /** The cookie for `source` (renewing the secret when stale), in a buffer the caller wipes. */
  cookieFor(source: Uint8Array, now: number): Buffer {
    if (now - this.setAt > COOKIE_REFRESH_TIME) {
      this.secret.set(randomBytes(this.secret.length));
      this.setAt = now;
      this.mac2?.wipe();
      this.mac2 = null;
    }
    this.cookieInto(source);
    const out = Buffer.from(this.cookie);
    this.cookie.fill(0);
    return out;
  }

  wipe(): void {
    this.secret.fill(0);
    this.setAt = Number.NEGATIVE_INFINITY;
    this.mac2?.wipe();
    this.mac2 = null;
  }

  /** cookie = MAC(Rm, source), with Rm's key block compressed once per secret. */
  private cookieInto(source: Uint8Array): void {
    if (this.mac2 === null) this.mac2 = new KeyedBlake2s(this.secret, COOKIE_SIZE);
    this.mac2.macInto(source, 0, source.length, this.cookie, 0);
  }
}

/**
 * The responder side, one per local identity: checks MAC1 (keyed by the identity's public key),
 * checks MAC2 against the cookie of the message's source, and creates cookie replies (sealed
 * under the identity's cookie key). The secret behind the cookies may be shared (CookieSecret).
 */
export class CookieChecker {
  /** MAC with the identity's MAC1 key, key block precompressed: one check is two compressions. */
  private readonly mac1: KeyedBlake2s;
  private readonly encryptionKey: Buffer;
  private readonly secret: CookieSecret;
  private readonly ownsSecret: boolean;

  /** @param secret Shared with other checkers of the same responder; default: one of its own. */
  constructor(publicKey: Uint8Array, secret?: CookieSecret) {
    this.mac1 = new KeyedBlake2s(mac1KeyFor(publicKey), MAC_SIZE);
    this.encryptionKey = cookieKeyFor(publicKey);
    this.secret = secret ?? new CookieSecret();
    this.ownsSecret = secret === undefined;
  }

  /** MAC1 of the handshake message at buf[off, off+len) is valid for this identity. One BLAKE2s. */
  checkMac1(buf: Buffer, off: number, len: number): boolean {
    return this.mac1.verify(buf, off, mac1Offset(len), buf, off + mac1Offset(len));
  }

  /** MAC2 is valid for the cookie this checker would give `source` now. */
  checkMac2(buf: Buffer, off: number, len: number, source: Uint8Array, now: number): boolean {
    return this.secret.checkMac2(buf, off, len, source, now);
  }

  /**
   * Writes a 64-byte cookie reply to out at outOff for the handshake message at buf[off, off+len)
   * received from `source`; `receiver` is that message's sender index. Renews the secret when it
   * is older than COOKIE_REFRESH_TIME.
   */
  createReply(
    buf: Buffer,
    off: number,
    len: number,
    receiver: number,
    source: Uint8Array,
    now: number,
    out: Buffer,
    outOff: number,
  ): void {
    const cookie = this.secret.cookieFor(source, now);
    const m1 = off + mac1Offset(len);
    const nonce = randomBytes(XNONCE_SIZE);
    const sealed = xaeadSeal(this.encryptionKey, nonce, cookie, buf.subarray(m1, m1 + MAC_SIZE));
    cookie.fill(0);
    out.writeUInt32LE(MESSAGE_COOKIE_REPLY_TYPE, outOff);
    out.writeUInt32LE(receiver, outOff + COOKIE_REPLY_OFFSET_RECEIVER);
    nonce.copy(out, outOff + COOKIE_REPLY_OFFSET_NONCE);
    out.set(sealed, outOff + COOKIE_REPLY_OFFSET_COOKIE);
  }

  /** Wipes the secret when this checker has its own (a shared one is wiped by its owner). */
  wipe(): void {
    if (this.ownsSecret) this.secret.wipe();
  }
}

/**
 * The sender side, one per peer: adds MAC1 (keyed by the peer's public key) and, while a fresh
 * cookie from that peer is held, MAC2 to every handshake message sent to it; consumes cookie
 * replies, which are bound to the MAC1 of the last message sent.
 */
export class CookieGenerator {
  private readonly mac1: KeyedBlake2s;
  private readonly encryptionKey: Buffer;
  private readonly cookie = Buffer.alloc(COOKIE_SIZE);
  private cookieSetAt = Number.NEGATIVE_INFINITY;
  private readonly lastMac1 = Buffer.alloc(MAC_SIZE);
  private hasLastMac1 = false;

  constructor(remotePublicKey: Uint8Array) {
    this.mac1 = new KeyedBlake2s(mac1KeyFor(remotePublicKey), MAC_SIZE);
    this.encryptionKey = cookieKeyFor(remotePublicKey);
  }

  /** Fills mac1 and mac2 of the handshake message at buf[off, off+len). */
  addMacs(buf: Buffer, off: number, len: number, now: number): void {
    const m1 = off + mac1Offset(len);
    const m2 = off + mac2Offset(len);
    this.mac1.macInto(buf, off, m1 - off, buf, m1);
    buf.copy(this.lastMac1, 0, m1, m1 + MAC_SIZE);
    this.hasLastMac1 = true;
    if (now - this.cookieSetAt > COOKIE_REFRESH_TIME) {
      buf.fill(0, m2, m2 + MAC_SIZE);
      return;
    }
    const m = new KeyedBlake2s(this.cookie, MAC_SIZE);
    m.macInto(buf, off, m2 - off, buf, m2);
    m.wipe();
  }

  /** Takes the cookie out of a 64-byte cookie reply at buf[off]; false when it does not open. */
  consumeReply(buf: Buffer, off: number, now: number): boolean {
    if (!this.hasLastMac1) return false;
    const nonce = buf.subarray(off + COOKIE_REPLY_OFFSET_NONCE, off + COOKIE_REPLY_OFFSET_COOKIE);
    const sealed = buf.subarray(off + COOKIE_REPLY_OFFSET_COOKIE, off + MESSAGE_COOKIE_REPLY_SIZE);
    const cookie = xaeadOpen(this.encryptionKey, nonce, sealed, this.lastMac1);
    if (cookie === null) return false;
    this.cookie.set(cookie);
    cookie.fill(0);
    this.cookieSetAt = now;
    return true;
  }

  wipe(): void {
    this.cookie.fill(0);
    this.cookieSetAt = Number.NEGATIVE_INFINITY;
    this.hasLastMac1 = false;
  }
}
