// The transport AEAD, abstracted so the driver can choose between this pure-JS version and a
// native batched one (src/native/aead.ts, in C over Node's OpenSSL, implementing this contract). The engine makes exactly one
// sealBatch or openBatch call per batch of transport messages.

import { createCipheriv, createDecipheriv } from 'node:crypto';
import { AEAD_TAG_SIZE, MESSAGE_TRANSPORT_HEADER_SIZE } from './constants.js';
import { TRANSPORT_OFFSET_COUNTER } from './messages.js';

export interface TransportAead {
  /** offsets[i] points at a 16-byte WireGuard transport header (type u32 LE=4, receiver u32 LE, counter u64 LE)
   * already written; plaintext (already padded) follows at offsets[i]+16 for plainLengths[i] bytes. Encrypts
   * in place with keys[i] (32 bytes) and nonce = 4 zero bytes || counter (8 bytes LE from the header), AAD
   * empty, and writes the 16-byte tag right after the ciphertext. */
  sealBatch(
    buf: Buffer,
    offsets: Uint32Array,
    plainLengths: Uint32Array,
    keys: readonly Buffer[],
    count: number,
  ): void;
  /** lengths[i] = whole message length (16 header + ciphertext + 16 tag). Decrypts in place (plaintext at
   * offsets[i]+16, length lengths[i]-32), ok[i] = 1 when the tag verified, else 0 (plaintext then undefined). */
  openBatch(
    buf: Buffer,
    offsets: Uint32Array,
    lengths: Uint32Array,
    keys: readonly Buffer[],
    count: number,
    ok: Uint8Array,
  ): void;
}

const CIPHER = 'chacha20-poly1305';
const OPTIONS = { authTagLength: AEAD_TAG_SIZE } as const;

/**
 * ChaCha20-Poly1305 through node:crypto, one cipher object per packet. Node has no in-place
 * API, so each result is copied back into the slab; when a tag does not verify nothing is
 * written (the slab keeps the ciphertext) and ok[i] = 0. Costs about 8 µs per packet of fixed
 * overhead on top of the cipher itself, which is why a native batched implementation exists.
 */
export class JsTransportAead implements TransportAead {
  private readonly nonce = Buffer.alloc(12);

  sealBatch(
    buf: Buffer,
    offsets: Uint32Array,
    plainLengths: Uint32Array,
    keys: readonly Buffer[],
    count: number,
  ): void {
    const nonce = this.nonce;
    for (let i = 0; i < count; i++) {
      const off = offsets[i];
      const start = off + MESSAGE_TRANSPORT_HEADER_SIZE;
      const end = start + plainLengths[i];
      const c = off + TRANSPORT_OFFSET_COUNTER;
      for (let j = 0; j < 8; j++) nonce[4 + j] = buf[c + j];
      const cipher = createCipheriv(CIPHER, keys[i], nonce, OPTIONS);
      const ct = cipher.update(buf.subarray(start, end));
      cipher.final();
      ct.copy(buf, start);
      cipher.getAuthTag().copy(buf, end);
    }
  }

  openBatch(
    buf: Buffer,
    offsets: Uint32Array,
    lengths: Uint32Array,
    keys: readonly Buffer[],
    count: number,
    ok: Uint8Array,
  ): void {
    const nonce = this.nonce;
    for (let i = 0; i < count; i++) {
      const off = offsets[i];
      const len = lengths[i];
      ok[i] = 0;
      if (len < MESSAGE_TRANSPORT_HEADER_SIZE + AEAD_TAG_SIZE) continue;
      const start = off + MESSAGE_TRANSPORT_HEADER_SIZE;
      const tagStart = off + len - AEAD_TAG_SIZE;
      const c = off + TRANSPORT_OFFSET_COUNTER;
      for (let j = 0; j < 8; j++) nonce[4 + j] = buf[c + j];
      try {
        const decipher = createDecipheriv(CIPHER, keys[i], nonce, OPTIONS);
        decipher.setAuthTag(buf.subarray(tagStart, off + len));
        const pt = decipher.update(buf.subarray(start, tagStart));
        decipher.final();
        pt.copy(buf, start);
        ok[i] = 1;
      } catch {
        // tag mismatch: ok[i] stays 0
      }
    }
  }
}
