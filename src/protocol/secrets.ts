// Where the engine keeps key material: static private keys, preshared keys, the precomputed
// static-static DH, handshake state (chaining key, hash, ephemeral private key) and transport
// session keys. The protocol room does no I/O and loads no addon, so the store is passed in:
// daemons pass the addon's locked pool (src/native/secret-pool.ts: mlock, MADV_DONTDUMP,
// wiped on free); tests and tools that do not care get ordinary zeroed Buffers.
//
// Contract: alloc(size) returns a zeroed Buffer of `size` bytes (at most 64) that the engine
// owns until it calls free(b); free wipes it and may hand the same memory out again. The
// engine never frees a Buffer that a batch in progress may still read: see Engine's deferred
// release.

export interface SecretStore {
  alloc(size: number): Buffer;
  free(b: Buffer): void;
}

/** Ordinary zeroed Buffers on the heap (not locked); free only wipes. */
export const heapSecrets: SecretStore = {
  alloc: (size: number) => Buffer.alloc(size),
  free: (b: Buffer) => {
    b.fill(0);
  },
};
