// Spin-up latency: from the API call that creates a workload to the first packet it gets
// delivered (an ICMP echo reply from a same-tenant anchor workload). Creates `count`
// workloads through the orchestrator, round-robin over the hosts given, measures each, then
// deletes them. Bounded: one ping attempt per 20 ms, at most `timeoutMs` per workload.
import { performance } from 'node:perf_hooks';
import type { OrchestratorClient } from '../orchestrator/client.js';
import { run } from '../util/exec.js';

export interface SpinupBenchOptions {
  tenant: string;
  hosts: readonly string[];
  count: number;
  /** A running workload of `tenant` the new ones ping. */
  anchor: { name: string; address: string };
  namePrefix?: string;
  timeoutMs?: number;
}

export interface SpinupBenchResult {
  count: number;
  /** ms from the API call to the first echo reply, per workload, in creation order. */
  samples: number[];
  /** ms of the API call alone (the orchestrator's own timings.total). */
  apiMs: number[];
  /** Median ms of each spin-up step (the orchestrator's timings). */
  stepMedians: Record<string, number>;
  medianMs: number;
  p95Ms: number;
  maxMs: number;
  failures: string[];
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export async function benchSpinup(
  client: OrchestratorClient,
  o: SpinupBenchOptions,
): Promise<SpinupBenchResult> {
  const prefix = o.namePrefix ?? 'bench';
  const timeout = o.timeoutMs ?? 10_000;
  const samples: number[] = [];
  const apiMs: number[] = [];
  const steps = new Map<string, number[]>();
  const failures: string[] = [];
  const created: string[] = [];
  try {
    for (let i = 0; i < o.count; i++) {
      const name = `${prefix}-${i}`;
      const t0 = performance.now();
      const w = await client.createWorkload({ tenant: o.tenant, name, host: o.hosts[i % o.hosts.length] });
      created.push(name);
      apiMs.push(w.timings.total ?? Number.NaN);
      for (const [k, ms] of Object.entries(w.timings)) steps.set(k, [...(steps.get(k) ?? []), ms]);
      let ok = false;
      while (performance.now() - t0 < timeout) {
        const r = await run(
          'ip',
          ['netns', 'exec', w.netns, 'ping', '-n', '-c', '1', '-W', '1', o.anchor.address],
          {
            timeoutMs: 5000,
          },
        );
        if (r.code === 0) {
          ok = true;
          break;
        }
        await new Promise((res) => setTimeout(res, 20));
      }
      if (ok) samples.push(Math.round(performance.now() - t0));
      else failures.push(`${name}: no reply from ${o.anchor.name} within ${timeout} ms`);
    }
  } finally {
    for (const n of created) await client.deleteWorkload(n).catch(() => undefined);
  }
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    count: o.count,
    samples,
    apiMs,
    stepMedians: Object.fromEntries(
      [...steps].map(
        ([k, v]) =>
          [
            k,
            percentile(
              [...v].sort((a, b) => a - b),
              50,
            ),
          ] as const,
      ),
    ),
    medianMs: percentile(sorted, 50),
    p95Ms: percentile(sorted, 95),
    maxMs: sorted.at(-1) ?? Number.NaN,
    failures,
  };
}
