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
import { setFlagsFromString } from 'node:v8';

export const DATA_PLANE_V8_FLAGS = ['--no-memory-reducer', '--no-flush-bytecode'] as const;

let applied = false;

export function tuneRuntimeForDataPlane(): void {
  if (applied) return;
  applied = true;
  for (const flag of DATA_PLANE_V8_FLAGS) setFlagsFromString(flag);
}
