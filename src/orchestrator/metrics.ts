// Prometheus metrics of the orchestrator (prom-client, one registry per orchestrator): how each
// agent answers (up, slow, last call duration, transport failures), the work queued per host
// and reconciliation passes. Collected from the orchestrator's own state when scraped.
import { Counter, Gauge, Registry } from 'prom-client';
import type { Orchestrator } from './orchestrator.js';

export class OrchestratorMetrics {
  readonly registry = new Registry();

  constructor(o: Orchestrator) {
    const r = this.registry;
    const agentUp = new Gauge({
      name: 'tenguard_orchestrator_agent_up',
      help: 'Whether the agent answered its last call within the deadline and none waits long (1) or not (0)',
      labelNames: ['host', 'agent'],
      registers: [r],
    });
    const agentSlow = new Gauge({
      name: 'tenguard_orchestrator_agent_slow',
      help: 'Whether the agent answered its last call slowly (1) or not (0)',
      labelNames: ['host', 'agent'],
      registers: [r],
    });
    const lastCall = new Gauge({
      name: 'tenguard_orchestrator_agent_last_call_ms',
      help: "Duration of the agent's last call in milliseconds, answered or not",
      labelNames: ['host', 'agent'],
      registers: [r],
    });
    const failures = new Counter({
      name: 'tenguard_orchestrator_agent_failures_total',
      help: 'Calls to the agent that got no answer (deadline passed, connection refused)',
      labelNames: ['host', 'agent'],
      registers: [r],
    });
    const queued = new Gauge({
      name: 'tenguard_orchestrator_host_queue_depth',
      help: "Operations queued or running on the host's work queue",
      labelNames: ['host'],
      registers: [r],
    });
    const passes = new Counter({
      name: 'tenguard_orchestrator_reconcile_passes_total',
      help: 'Host reconciliation passes finished',
      registers: [r],
    });
    const collect = (): void => {
      const h = o.agentHealth();
      agentUp.reset();
      agentSlow.reset();
      lastCall.reset();
      failures.reset();
      queued.reset();
      passes.reset();
      for (const a of h.agents) {
        const labels = { host: a.host, agent: a.agent };
        agentUp.set(labels, a.condition === 'unreachable' || a.condition === 'stalled' ? 0 : 1);
        agentSlow.set(labels, a.condition === 'slow' ? 1 : 0);
        lastCall.set(labels, a.lastCallMs);
        failures.inc(labels, a.failures);
      }
      for (const [host, n] of Object.entries(h.queued)) queued.set({ host }, n);
      passes.inc(o.reconcilePasses);
    };
    this.collect = collect;
  }

  private readonly collect: () => void;

  async text(): Promise<{ text: string; contentType: string }> {
    this.collect();
    return { text: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}
