// Node's helper threads at idle priority in a process that carries packets. V8 compiles hot
// functions (TurboFan) and runs parts of its garbage collection on platform worker threads;
// libuv's pool serves file I/O. At normal priority a 4-5 ms compile job held the CPU that a
// device's main thread needed when a packet woke it (the scheduler lets a running task reach
// its slice before a woken one runs), so that ping waited for the compiler: the 3-4 ms
// outliers of `bench latency` at 200 ms. At SCHED_IDLE those threads yield at once to any
// normal-priority thread and still run whenever a CPU is free. native/process.c.
import { loadNative } from './binding.js';

/**
 * Moves every thread of the process except the calling (main) one to SCHED_IDLE. Call early,
 * before the process starts threads of its own that carry packets (the crypto workers, which
 * start on first need, keep the normal policy). Returns how many threads moved and failed.
 */
export function idleHelperThreads(): { idled: number; failed: number } {
  return loadNative().idleHelperThreads();
}
