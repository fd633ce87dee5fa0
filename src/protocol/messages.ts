// WireGuard wire formats (whitepaper section 5.4). All integers are little-endian; the type is
// one byte followed by three zero bytes, read here as a u32 as wireguard-go does.
//
// MessageInitiation (148):  type | sender | ephemeral[32] | static[32+16] | timestamp[12+16] | mac1[16] | mac2[16]
// MessageResponse   (92):   type | sender | receiver | ephemeral[32] | empty[0+16] | mac1[16] | mac2[16]
// MessageCookieReply (64):  type | receiver | nonce[24] | cookie[16+16]
// MessageTransport (16+n):  type | receiver | counter u64 | packet[n] (ciphertext || tag)

import {
  AEAD_TAG_SIZE,
  KEY_SIZE,
  MAC_SIZE,
  MESSAGE_TRANSPORT_TYPE,
  TAI64N_SIZE,
  XNONCE_SIZE,
} from './constants.js';

export const MESSAGE_OFFSET_TYPE = 0;
/** The sender index sits at the same offset in initiations and responses. */
export const HANDSHAKE_OFFSET_SENDER = 4;

export const INITIATION_OFFSET_SENDER = HANDSHAKE_OFFSET_SENDER;
export const INITIATION_OFFSET_EPHEMERAL = 8;
export const INITIATION_OFFSET_STATIC = INITIATION_OFFSET_EPHEMERAL + KEY_SIZE; // 40
export const INITIATION_STATIC_SIZE = KEY_SIZE + AEAD_TAG_SIZE; // 48
export const INITIATION_OFFSET_TIMESTAMP = INITIATION_OFFSET_STATIC + INITIATION_STATIC_SIZE; // 88
export const INITIATION_TIMESTAMP_SIZE = TAI64N_SIZE + AEAD_TAG_SIZE; // 28
export const INITIATION_OFFSET_MAC1 = INITIATION_OFFSET_TIMESTAMP + INITIATION_TIMESTAMP_SIZE; // 116
export const INITIATION_OFFSET_MAC2 = INITIATION_OFFSET_MAC1 + MAC_SIZE; // 132

export const RESPONSE_OFFSET_SENDER = HANDSHAKE_OFFSET_SENDER;
export const RESPONSE_OFFSET_RECEIVER = 8;
export const RESPONSE_OFFSET_EPHEMERAL = 12;
export const RESPONSE_OFFSET_EMPTY = RESPONSE_OFFSET_EPHEMERAL + KEY_SIZE; // 44
export const RESPONSE_EMPTY_SIZE = AEAD_TAG_SIZE; // 16
export const RESPONSE_OFFSET_MAC1 = RESPONSE_OFFSET_EMPTY + RESPONSE_EMPTY_SIZE; // 60
export const RESPONSE_OFFSET_MAC2 = RESPONSE_OFFSET_MAC1 + MAC_SIZE; // 76

export const COOKIE_REPLY_OFFSET_RECEIVER = 4;
export const COOKIE_REPLY_OFFSET_NONCE = 8;
export const COOKIE_REPLY_OFFSET_COOKIE = COOKIE_REPLY_OFFSET_NONCE + XNONCE_SIZE; // 32
export const COOKIE_REPLY_COOKIE_SIZE = MAC_SIZE + AEAD_TAG_SIZE; // 32

export const TRANSPORT_OFFSET_RECEIVER = 4;
export const TRANSPORT_OFFSET_COUNTER = 8;
export const TRANSPORT_OFFSET_CONTENT = 16;

/** MAC1 sits 32 bytes before the end of a handshake message, MAC2 16 bytes before. */
export function mac1Offset(messageLength: number): number {
  return messageLength - 2 * MAC_SIZE;
}
export function mac2Offset(messageLength: number): number {
  return messageLength - MAC_SIZE;
}

/** Writes the 16-byte transport header; the counter is given as two u32 halves (no BigInt). */
export function writeTransportHeader(
  buf: Buffer,
  off: number,
  receiver: number,
  counterLow: number,
  counterHigh: number,
): void {
  buf.writeUInt32LE(MESSAGE_TRANSPORT_TYPE, off);
  buf.writeUInt32LE(receiver, off + TRANSPORT_OFFSET_RECEIVER);
  buf.writeUInt32LE(counterLow, off + TRANSPORT_OFFSET_COUNTER);
  buf.writeUInt32LE(counterHigh, off + TRANSPORT_OFFSET_COUNTER + 4);
}

/** Splits a counter (< 2^53) into the two u32 halves of its little-endian u64. */
export function counterLow(counter: number): number {
  return counter % 0x1_0000_0000;
}
export function counterHigh(counter: number): number {
  return Math.floor(counter / 0x1_0000_0000);
}

/** Reads a transport counter; values at or above 2^53 come back as Infinity (beyond any limit). */
export function readTransportCounter(buf: Buffer, off: number): number {
  const high = buf.readUInt32LE(off + TRANSPORT_OFFSET_COUNTER + 4);
  if (high >= 0x20_0000) return Number.POSITIVE_INFINITY;
  return high * 0x1_0000_0000 + buf.readUInt32LE(off + TRANSPORT_OFFSET_COUNTER);
}
