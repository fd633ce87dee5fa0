// Key material in locked memory. Secrets (private keys, PSKs, seal keys) are Buffers carved
// out of arenas the native addon maps with mlock (never swapped), MADV_DONTDUMP (never in a
// core file) and MADV_DONTFORK (not inherited by a child), instead of Node's ordinary heap
// and pooled Buffers. Each key is a slot of SLOT_SIZE bytes; free() wipes it and returns it
// to the pool. Allocation never fails for want of locking: an arena whose mlock was refused
// (RLIMIT_MEMLOCK) is still used and counted in stats().unlocked.
//
// What this cannot cover, because Node or OpenSSL copies the bytes where we cannot reach:
// - TLS private keys: the PEM text handed to tls.createSecureContext lives on inside OpenSSL;
// - node:crypto KeyObjects and cipher contexts (X25519 DH, ChaCha20-Poly1305, HMAC) copy the
//   key into OpenSSL's own memory for the length of the call or the object's life;
// - the protocol engine keeps its own key material here (the daemons pass this pool as its
//   SecretStore, src/protocol/secrets.ts), but the intermediate outputs of each handshake
//   step (DH results, KDF outputs, the per-message AEAD key) are short-lived heap Buffers,
//   wiped right after use, not locked; see src/protocol/README.md;
// - anything a caller turns into a string (base64 or hex text): V8 strings are immutable and
//   stay until collected. No secret is sent as text in tenguard's APIs any more (PSKs cross
//   as sealed boxes), but the UAPI text protocol (`wg set ... private-key`) still carries
//   keys in hex through the device's socket.
import { loadNative } from './binding.js';

/** Bytes per slot: the largest key kept here (32-byte keys; 64 for Ed25519 expanded forms). */
export const SLOT_SIZE = 64;
const ARENA_BYTES = 64 * 1024;

interface Arena {
  buffer: ArrayBuffer;
  locked: boolean;
}

export interface SecretPoolStats {
  arenas: number;
  unlocked: number;
  inUse: number;
  free: number;
}

export class SecretPool {
  private readonly arenas: Arena[] = [];
  private readonly freeSlots: Buffer[] = [];
  private readonly owned = new WeakSet<ArrayBuffer>();
  private inUse = 0;

  constructor(private readonly mapArena: (bytes: number) => Arena = (b) => loadNative().lockedArena(b)) {}

  /** A zeroed secret of `size` bytes (at most SLOT_SIZE) in locked memory. */
  alloc(size = 32): Buffer {
    if (!Number.isInteger(size) || size < 1 || size > SLOT_SIZE)
      throw new RangeError(`a pooled secret is 1 to ${SLOT_SIZE} bytes`);
    if (this.freeSlots.length === 0) this.grow();
    const slot = this.freeSlots.pop()!;
    this.inUse++;
    return slot.subarray(0, size);
  }

  /** A pooled copy of `bytes` (the caller wipes its own copy). */
  copyOf(bytes: Uint8Array): Buffer {
    const b = this.alloc(bytes.length);
    b.set(bytes);
    return b;
  }

  /** Whether `b` lives in this pool's memory. */
  owns(b: Uint8Array): boolean {
    return this.owned.has(b.buffer as ArrayBuffer);
  }

  /** Wipes a secret and returns its slot; a Buffer from elsewhere is only wiped. */
  free(b: Buffer): void {
    b.fill(0);
    if (!this.owns(b)) return;
    const slot = Buffer.from(b.buffer, b.byteOffset, SLOT_SIZE);
    slot.fill(0);
    this.freeSlots.push(slot);
    this.inUse--;
  }

  stats(): SecretPoolStats {
    return {
      arenas: this.arenas.length,
      unlocked: this.arenas.filter((a) => !a.locked).length,
      inUse: this.inUse,
      free: this.freeSlots.length,
    };
  }

  private grow(): void {
    const a = this.mapArena(ARENA_BYTES);
    this.arenas.push(a);
    this.owned.add(a.buffer);
    for (let off = a.buffer.byteLength - SLOT_SIZE; off >= 0; off -= SLOT_SIZE)
      this.freeSlots.push(Buffer.from(a.buffer, off, SLOT_SIZE));
  }
}

let shared: SecretPool | undefined;

/** The process's pool (arenas are mapped on first use). */
export function secretPool(): SecretPool {
  shared ??= new SecretPool();
  return shared;
}
