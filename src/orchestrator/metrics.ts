// Prometheus metrics of the orchestrator (prom-client, one registry per orchestrator), read
// when /metrics is scraped: the store's state with its cause, and this replica's leadership.
import { Gauge, Registry } from 'prom-client';
import type { Orchestrator } from './orchestrator.js';

const STATES = ['ok', 'unavailable', 'full'] as const;

export function orchestratorMetrics(o: Orchestrator): Registry {
  const registry = new Registry();
  new Gauge({
    name: 'tenguard_orchestrator_store_state',
    help: "1 for the store's current state (ok, unavailable, full), 0 for the others; cause: the last failure",
    labelNames: ['store', 'state', 'cause'],
    registers: [registry],
    collect() {
      this.reset();
      const h = o.store.health();
      for (const s of STATES)
        this.set(
          { store: h.kind, state: s, cause: s === h.state ? (h.cause ?? '').slice(0, 200) : '' },
          s === h.state ? 1 : 0,
        );
    },
  });
  new Gauge({
    name: 'tenguard_orchestrator_leader',
    help: '1 while this replica leads (reconciles and drives agents), else 0',
    registers: [registry],
    collect() {
      this.set(o.isLeader() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'tenguard_orchestrator_forwarded_requests',
    help: 'Requests this replica forwarded to the leader',
    registers: [registry],
    collect() {
      this.set(o.replica?.forwarded ?? 0);
    },
  });
  return registry;
}

/** The registry's text and content type. */
export async function metricsText(r: Registry): Promise<{ text: string; contentType: string }> {
  return { text: await r.metrics(), contentType: r.contentType };
}
