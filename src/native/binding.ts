// Loads the native addon (build/Release/tenguard_native.node, built by node-gyp from
// native/) once, on first use, and describes its raw shape. Resolved from the package
// root, found by walking up from this file, so the same code works from src/native/ and
// from dist/src/native/.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TgError } from '../util/errors.js';
import type { IoStats, ReadableCallback } from './types.js';

interface RawIo {
  readonly fd: number;
  start(onReadable: ReadableCallback): void;
  stop(): void;
  close(): void;
  stats(): IoStats;
}

export interface RawTun extends RawIo {
  readonly name: string;
  readBatch(slab: Buffer, slotSize: number, headroom: number, max: number, lengths: Uint32Array): number;
  writeBatch(slab: Buffer, offsets: Uint32Array, lengths: Uint32Array, count: number): number;
  coalescing(enable?: boolean): boolean;
  mergeStats(): { packets: number; writes: number; splitPackets: number; splitReads: number };
}

export interface RawUdp extends RawIo {
  /** 4 for an AF_INET socket, 6 for AF_INET6 (dual-stack unless v6Only). */
  readonly family: 4 | 6;
  recvBatch(
    slab: Buffer,
    slotSize: number,
    headroom: number,
    max: number,
    lengths: Uint32Array,
    endpoints: Buffer,
    offsets?: Uint32Array,
  ): number;
  sendBatch(
    slab: Buffer,
    offsets: Uint32Array,
    lengths: Uint32Array,
    endpoints: Buffer,
    count: number,
  ): number;
  localEndpoint(out: Buffer): void;
  bufferSizes(): { rcvBuf: number; sndBuf: number };
  segmentation(enable?: boolean): boolean;
  receiveOffload(enable?: boolean): boolean;
  receiveMaxAge(ms?: number): number;
}

/**
 * The AEAD's two implementations (native/aead.c): RFC 8439 composed from OpenSSL's ChaCha20 and
 * Poly1305 routines (default when node exports them), or OpenSSL's EVP interface.
 */
export type AeadImplementation = 'primitives' | 'evp';

export interface RawAead {
  sealBatch(
    buf: Buffer,
    offsets: Uint32Array,
    plainLengths: Uint32Array,
    keys: readonly Buffer[],
    count: number,
  ): void;
  openBatch(
    buf: Buffer,
    offsets: Uint32Array,
    lengths: Uint32Array,
    keys: readonly Buffer[],
    count: number,
    ok: Uint8Array,
  ): void;
  close(): void;
}

export interface CryptoPoolStats {
  /** Configured parts per batch at most (setCryptoThreads). */
  threads: number;
  /** Worker threads started so far. */
  workers: number;
  /** Batches that were split. */
  parallelBatches: number;
  /** Parts that ran on a worker thread (the rest ran on the calling thread). */
  workerParts: number;
}

export interface NativeBinding {
  /** A number instead of a name adopts an fd from seqpacketPair() (multiQueue and vnetHdr false). */
  TunHandle: new (
    name: string | number,
    multiQueue: boolean,
    vnetHdr: boolean,
  ) => RawTun;
  /** A connected, non-blocking AF_UNIX SOCK_SEQPACKET pair, for two TunHandles. */
  seqpacketPair(): [number, number];
  UdpHandle: new (bind: Buffer | null, v6Only: boolean, rcvBuf: number, sndBuf: number) => RawUdp;
  Aead: new () => RawAead;
  /** Chooses the AEAD implementation of the process (native/aead.c); returns the one in use. */
  aeadImplementation(name?: AeadImplementation): AeadImplementation;
  /** Parts a large AEAD batch is split into at most (1..16, calling thread included). */
  setCryptoThreads(threads: number): void;
  cryptoPoolStats(): CryptoPoolStats;
  setDumpable(on: boolean): void;
  /** Zero-filled anonymous memory, resident only where written; unmapped when collected. */
  allocSlab(bytes: number): Buffer;
  /** Zero-filled memory aligned to 2 MiB and advised for transparent huge pages (slab.c). */
  allocHuge(bytes: number): ArrayBuffer;
  getDumpable(): number;
  /** malloc_trim(0): true when free memory went back to the system. */
  trimHeap(): boolean;
  /** The C heap (mallinfo2): bytes handed out, free in the arenas, mapped on their own. */
  mallocStats(): { inUse: number; free: number; mapped: number };
  lockedArena(bytes: number): { buffer: ArrayBuffer; locked: boolean };
  /**
   * Polls fdA and fdB (negative: ignored) without sleeping or yielding, for at most
   * maxMicros (<= 100,000): bit 0 set when fdA is readable (or in error), bit 1 for fdB, 0
   * when the window passed (native/busypoll.c).
   */
  busyWait(fdA: number, fdB: number, maxMicros: number): number;
  /**
   * Arms (true) or disarms (false) wake placement for the calling thread's UDP sends: each
   * sendmmsg then runs at SCHED_IDLE, so a local peer it wakes runs on this CPU. Arms only
   * when at most maxRunnable tasks are runnable in the system (the device: 1, itself), the
   * thread runs SCHED_OTHER and may return from SCHED_IDLE; returns whether it armed
   * (native/wake.c).
   */
  setWakeHere(on: boolean, maxRunnable: number): boolean;
  /** Whether a thread of this process may return from SCHED_IDLE (probed once; native/wake.c). */
  wakePlacementAllowed(): boolean;
  readonly ENDPOINT_SIZE: number;
  readonly MMSG_CHUNK: number;
}

const ADDON = join('build', 'Release', 'tenguard_native.node');

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'tenguard')
      return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new TgError('TG_ERR_NATIVE', 'cannot find the tenguard package root');
    dir = parent;
  }
}

let binding: NativeBinding | undefined;

/** The addon; throws TG_ERR_NATIVE (with the loader's error as cause) when it is not built. */
export function loadNative(): NativeBinding {
  if (binding !== undefined) return binding;
  const root = packageRoot();
  const path = join(root, ADDON);
  try {
    binding = createRequire(join(root, 'package.json'))(path) as NativeBinding;
  } catch (err) {
    throw new TgError(
      'TG_ERR_NATIVE',
      `cannot load the native addon ${path}; build it with 'npm run install'`,
      {
        cause: err,
      },
    );
  }
  return binding;
}
