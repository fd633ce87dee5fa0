// Whether this process's data path warm-up (runtime.ts: warmup.ts, then warmup-io.ts) has
// finished, for the UAPI's tenguard-stats: a bench waits for it before measuring, and an
// operator can see when a new device runs its packets through optimised code.
import { performance } from 'node:perf_hooks';

let started: number | null = null;
let finishedMs: number | null = null;

/** The warm-up begins now. */
export function warmupStarted(): void {
  started = performance.now();
  finishedMs = null;
}

/** The warm-up ended now (done or given up: a failure is logged where it happens). */
export function warmupFinished(): void {
  if (started !== null) finishedMs = performance.now() - started;
}

/**
 * `warmup.done` (0 or 1) and `warmup.ms` (how long it took, once done); nothing in a process
 * that never started one (devices in tests).
 */
export function warmupCounters(): Record<string, number> {
  if (started === null) return {};
  return { 'warmup.done': finishedMs === null ? 0 : 1, 'warmup.ms': Math.round(finishedMs ?? 0) };
}
