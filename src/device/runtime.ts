// V8 settings for a process that carries packets (a `tenguard device`, the vSwitch daemon, a
// NIC agent). Call once, early, before the data path runs.
//
//   --no-memory-reducer: V8 starts full garbage collections to shrink the heap once a process
//     goes quiet; in a quiet device each one paused the loop for 5 to 25 ms (seen with
//     --trace-gc while pinging every 200 ms), exactly when a packet was waiting. The heap of a
//     device is a few MB: there is nothing worth reducing.
//   --no-flush-bytecode: V8 throws away the compiled code of functions that have not run for a
//     while; a device quiet for minutes would then run its first packets through a freshly
//     compiled, unoptimised path.
//   --interrupt-budget: how much bytecode a function runs before V8 considers optimising it
//     (default 66 KiB, three times over). A quiet device runs a few packets a second, so its
//     per-packet functions stayed unoptimised for minutes; a quarter of the default makes them
//     tier up after a few hundred packets. warmup.ts does the rest before the first packet.
import { setFlagsFromString } from 'node:v8';
import { logger } from '../util/log.js';
import { warmDataPathInBackground } from './warmup.js';

export const DATA_PLANE_V8_FLAGS = [
  '--no-memory-reducer',
  '--no-flush-bytecode',
  '--interrupt-budget=16384',
] as const;

let applied = false;

/**
 * Sets the V8 flags above and starts warming the data path in the background (warmup.ts,
 * about 1,500 in-memory round trips in slices over the first second or so); idempotent.
 */
export function tuneRuntimeForDataPlane(): void {
  if (applied) return;
  applied = true;
  for (const flag of DATA_PLANE_V8_FLAGS) setFlagsFromString(flag);
  const log = logger('device');
  void warmDataPathInBackground(log).then((r) =>
    log.debug({ delivered: r.delivered, ms: Math.round(r.ms) }, 'data path warmed up'),
  );
}
