// Batched WireGuard transport AEAD (ChaCha20-Poly1305) in the addon, using the OpenSSL
// built into node: in place, no allocation per packet; RFC 8439 composed from OpenSSL's own
// ChaCha20 and Poly1305 routines, or its EVP interface where node does not export them
// (aeadImplementation, native/aead.c says why). A large
// batch is split across the process's crypto threads (native/crypto_pool.c): the calling
// thread plus workers, each part at least 16 KiB, so single packets and small batches never
// pay a thread wake-up; the call stays synchronous.
import { availableParallelism } from 'node:os';
import type { TransportAead } from '../protocol/aead.js';
import { TgError } from '../util/errors.js';
import { type AeadImplementation, type CryptoPoolStats, loadNative, type RawAead } from './binding.js';

/** Set TENGUARD_CRYPTO_THREADS=N (1..16) to choose the crypto threads of a process. */
export const CRYPTO_THREADS_ENV = 'TENGUARD_CRYPTO_THREADS';
export const MAX_CRYPTO_THREADS = 16;

/**
 * Crypto threads a data-plane process uses unless told otherwise: half the cores, at most 4,
 * at least 1 (the other half carries the kernel's share of every packet, the TUN and UDP
 * paths, and the peers beside it). On a 2-core host: 1, everything inline.
 */
export function cryptoThreadsDefault(): number {
  const env = process.env[CRYPTO_THREADS_ENV];
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!Number.isInteger(n) || n < 1 || n > MAX_CRYPTO_THREADS)
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        `${CRYPTO_THREADS_ENV} must be an integer from 1 to ${MAX_CRYPTO_THREADS}, got '${env}'`,
      );
    return n;
  }
  return Math.max(1, Math.min(4, Math.floor(availableParallelism() / 2)));
}

/** Sets how many threads (calling thread included) one large batch may use, process-wide. */
export function setCryptoThreads(threads: number): void {
  loadNative().setCryptoThreads(threads);
}

export type { AeadImplementation, CryptoPoolStats };

/**
 * The AEAD implementation of the process: with an argument chooses it (for every NativeAead;
 * choose while no batch runs). 'primitives' throws ERR_TG_CRYPTO where node lacks them.
 */
export function aeadImplementation(name?: AeadImplementation): AeadImplementation {
  return loadNative().aeadImplementation(name);
}

export function cryptoPoolStats(): CryptoPoolStats {
  return loadNative().cryptoPoolStats();
}

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
