// V8 settings for a process that carries packets (a `tenguard device`, the vSwitch daemon, a
// NIC agent). Call once, early, before the data path runs.
//
// These flags take full effect only on node's command line: the memory reducer is set up before
// any JavaScript runs, and with the flag given at run time it still started "Mark-Compact
// (reduce)" collections 8 s after the first full one, pausing a quiet device for 7 to 25 ms
// (--trace-gc while pinging every 5 and 200 ms); with it on the command line there were none.
// So whoever spawns a data-plane process puts DATA_PLANE_NODE_ARGS before the script, and
// tuneRuntimeForDataPlane() sets them again for a process started without them.
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
import { cryptoThreadsDefault, setCryptoThreads } from '../native/aead.js';
import { logger } from '../util/log.js';
import { warmDataPathInBackground } from './warmup.js';
import { warmDeviceIo } from './warmup-io.js';
import { warmupFinished, warmupStarted } from './warmup-state.js';

export const DATA_PLANE_V8_FLAGS = [
  '--no-memory-reducer',
  '--no-flush-bytecode',
  '--interrupt-budget=16384',
] as const;

/** Node arguments (before the script) for spawning a process that carries packets. */
export const DATA_PLANE_NODE_ARGS: readonly string[] = DATA_PLANE_V8_FLAGS;

let applied = false;

/**
 * Sets the V8 flags above and the crypto threads (native/aead.ts, TENGUARD_CRYPTO_THREADS), and
 * starts warming the data path in the background: warmup.ts (about 1,000 in-memory round trips,
 * one per event-loop turn), then warmup-io.ts (600 round trips through two devices over packet
 * channels and loopback), about 1.5 s in all; idempotent.
 */
export function tuneRuntimeForDataPlane(): void {
  if (applied) return;
  applied = true;
  for (const flag of DATA_PLANE_V8_FLAGS) setFlagsFromString(flag);
  setCryptoThreads(cryptoThreadsDefault());
  const log = logger('device');
  warmupStarted();
  void warmDataPathInBackground(log)
    .then((r) => {
      log.debug({ delivered: r.delivered, ms: Math.round(r.ms) }, 'data path warmed up (engines)');
      return warmDeviceIo(log);
    })
    .then((r) => {
      warmupFinished();
      log.debug(
        { roundTrips: r.roundTrips, ended: r.ended, ms: Math.round(r.ms) },
        'data path warmed up (devices)',
      );
    });
}
