// Gives the C heap's free memory back to the system now and then. glibc keeps what the
// threads' malloc arenas (V8's worker threads, libuv's pool) freed, so a daemon's RSS creeps
// up under churn with its JavaScript heap, file descriptors and timers flat: in a 20-minute
// soak the orchestrator grew 79 -> 88 MB that way, and one malloc_trim(0) took 5.8 MB of it
// back (4.1 -> 0.4 MB resident in one thread arena). One unref'd interval per process; a
// trim costs a walk over the arenas (well under a millisecond at these sizes).
import { loadNative } from './binding.js';

/** Default interval between trims. */
export const HEAP_TRIM_INTERVAL_MS = 30_000;

/** Trims once. True when memory went back to the system. */
export function trimHeap(): boolean {
  return loadNative().trimHeap();
}

/** Trims every `intervalMs` until the returned function is called; never keeps the process up. */
export function startHeapTrim(intervalMs = HEAP_TRIM_INTERVAL_MS): () => void {
  const timer = setInterval(trimHeap, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

/** Bytes of the C heap in use, free in its arenas, and mapped on their own (mallinfo2). */
export function mallocStats(): { inUse: number; free: number; mapped: number } {
  return loadNative().mallocStats();
}
