// Prometheus metrics of the orchestrator (prom-client, one registry per orchestrator), read
// when /metrics is scraped: the store's state with its cause, this replica's leadership, how
// each agent answers (up, slow, last call duration, transport failures), the work queued per
// host and reconciliation passes.
import { Counter, Gauge, Registry } from 'prom-client';
import type { AgentStatus } from './agent-health.js';
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
  agentMetrics(o, registry);
  return registry;
}

function agentMetrics(o: Orchestrator, registers: Registry): void {
  const each = (g: Gauge<'host' | 'agent'>, value: (a: AgentStatus) => number): void => {
    g.reset();
    for (const a of o.agentHealth().agents) g.set({ host: a.host, agent: a.agent }, value(a));
  };
  new Gauge({
    name: 'tenguard_orchestrator_agent_up',
    help: 'Whether the agent answered its last call within the deadline and none waits long (1) or not (0)',
    labelNames: ['host', 'agent'],
    registers: [registers],
    collect() {
      each(this, (a) => (a.condition === 'unreachable' || a.condition === 'stalled' ? 0 : 1));
    },
  });
  new Gauge({
    name: 'tenguard_orchestrator_agent_slow',
    help: 'Whether the agent answered its last call slowly (1) or not (0)',
    labelNames: ['host', 'agent'],
    registers: [registers],
    collect() {
      each(this, (a) => (a.condition === 'slow' ? 1 : 0));
    },
  });
  new Gauge({
    name: 'tenguard_orchestrator_agent_last_call_seconds',
    help: "Duration of the agent's last call in seconds, answered or not",
    labelNames: ['host', 'agent'],
    registers: [registers],
    collect() {
      each(this, (a) => a.lastCallMs / 1000);
    },
  });
  new Counter({
    name: 'tenguard_orchestrator_agent_failures_total',
    help: 'Calls to the agent that got no answer (deadline passed, connection refused)',
    labelNames: ['host', 'agent'],
    registers: [registers],
    collect() {
      this.reset();
      for (const a of o.agentHealth().agents) this.inc({ host: a.host, agent: a.agent }, a.failures);
    },
  });
  new Gauge({
    name: 'tenguard_orchestrator_host_queue_depth',
    help: "Operations queued or running on the host's work queue",
    labelNames: ['host'],
    registers: [registers],
    collect() {
      this.reset();
      for (const [host, n] of Object.entries(o.agentHealth().queued)) this.set({ host }, n);
    },
  });
  new Counter({
    name: 'tenguard_orchestrator_reconcile_passes_total',
    help: 'Host reconciliation passes finished',
    registers: [registers],
    collect() {
      this.reset();
      this.inc(o.reconcilePasses);
    },
  });
}

/** The registry's text and content type. */
export async function metricsText(r: Registry): Promise<{ text: string; contentType: string }> {
  return { text: await r.metrics(), contentType: r.contentType };
}
