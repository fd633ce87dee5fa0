// Batched WireGuard transport AEAD (ChaCha20-Poly1305) in the addon, using the OpenSSL
// built into node: one reused cipher context, in-place, no allocation per packet.
import type { TransportAead } from '../protocol/aead.js';
import { loadNative, type RawAead } from './binding.js';

export class NativeAead implements TransportAead {
  private readonly raw: RawAead;

  constructor() {
    this.raw = new (loadNative().Aead)();
  }

  sealBatch(
    buf: Buffer,
    offsets: Uint32Array,
    plainLengths: Uint32Array,
    keys: readonly Buffer[],
    count: number,
  ): void {
    this.raw.sealBatch(buf, offsets, plainLengths, keys, count);
  }

  openBatch(
    buf: Buffer,
    offsets: Uint32Array,
    lengths: Uint32Array,
    keys: readonly Buffer[],
    count: number,
    ok: Uint8Array,
  ): void {
    this.raw.openBatch(buf, offsets, lengths, keys, count, ok);
  }

  /** Frees the cipher context, wiping the last key it held. Later calls throw ERR_TG_CLOSED. */
  close(): void {
    this.raw.close();
  }
}
