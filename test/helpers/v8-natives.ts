// V8's test natives for the warm-up probes (warmup-probe.ts, warmup-io-probe.ts), which run as
// child processes with --allow-natives-syntax: which of a set of functions are optimised.

/** V8's OptimizationStatus bit "optimized" (runtime-test.cc). */
const OPTIMIZED = 1 << 4;
// Natives syntax is only valid with the flag, so it is compiled at run time.
const status = new Function('f', 'return %GetOptimizationStatus(f);') as (f: unknown) => number;
const finishCompiles = new Function('%FinalizeOptimization();') as () => void;

/** A class's prototype as a record, to reach its (also private) methods by name. */
export const proto = (c: { prototype: unknown }): Record<string, unknown> =>
  c.prototype as Record<string, unknown>;

/** The names in `hot` whose functions run optimised code, once pending compiles are done. */
export function optimised(hot: Record<string, unknown>): string[] {
  finishCompiles();
  return Object.entries(hot)
    .filter(([, f]) => (status(f) & OPTIMIZED) !== 0)
    .map(([name]) => name);
}
