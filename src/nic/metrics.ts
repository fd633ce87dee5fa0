// Prometheus metrics of the NIC agent (prom-client, one registry per agent). The data path
// keeps plain number counters (no per-packet calls into prom-client); collectors copy them
// into the registry when /metrics is scraped. The firewall's metrics (verdicts, drops by
// reason, conntrack occupancy and evictions, flow log) are src/policy/metrics.ts's, on the
// same registry.

import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import { registerPolicyMetrics } from '../policy/metrics.js';
import type { NicAgent } from './agent.js';
import type { IoCounters } from './dataplane.js';

export interface NicMetricsSources {
  agent: NicAgent;
  /** I/O counters of the data plane, when one runs. */
  io?: () => IoCounters;
  /** Exceptions caught at the data plane's loop boundary. */
  loopErrors?: () => number;
  /** Also export Node's process metrics (CPU, memory, event loop lag). Default false. */
  processMetrics?: boolean;
}

function setCounter<T extends string>(
  c: Counter<T>,
  labels: Partial<Record<T, string>>,
  value: number,
): void {
  c.inc(labels, value);
}

export class NicMetrics {
  readonly registry = new Registry();
  private readonly apiRequests: Counter<'route' | 'method' | 'status'>;

  constructor(src: NicMetricsSources) {
    const r = this.registry;
    if (src.processMetrics) {
      collectDefaultMetrics({ register: r, prefix: 'tenguard_nic_' });
      // prom-client names these three gauges with a counter's `_total` suffix, which Prometheus
      // tooling refuses (`promtool check metrics`); their per-type gauges without the suffix
      // (nodejs_active_handles{type}, ...) carry the same counts.
      for (const name of ['active_handles_total', 'active_requests_total', 'active_resources_total'])
        r.removeSingleMetric(`tenguard_nic_nodejs_${name}`);
    }
    const agent = src.agent;
    new Gauge({
      name: 'tenguard_nic_workloads',
      help: 'Workloads registered on this NIC',
      registers: [r],
      collect() {
        this.set(agent.counts().workloads);
      },
    });
    new Gauge({
      name: 'tenguard_nic_handshake_queue',
      help: 'Handshake messages waiting for work (both legs; drops and cookie replies are engine events and drops)',
      registers: [r],
      collect() {
        this.set(agent.engine.pendingHandshakes);
      },
    });
    new Gauge({
      name: 'tenguard_nic_tenants',
      help: 'Tenants with an off-host identity on this NIC',
      registers: [r],
      collect() {
        this.set(agent.counts().tenants);
      },
    });
    new Gauge({
      name: 'tenguard_nic_remote_peers',
      help: 'Off-host sessions configured (remote NIC per tenant)',
      registers: [r],
      collect() {
        this.set(agent.counts().remotePeers);
      },
    });
    new Gauge({
      name: 'tenguard_nic_keys',
      help: 'Keys held in the key store, by kind',
      labelNames: ['kind'],
      registers: [r],
      collect() {
        this.reset();
        const by = new Map<string, number>();
        for (const k of agent.inventory()) by.set(k.kind, (by.get(k.kind) ?? 0) + 1);
        for (const [kind, n] of by) this.set({ kind }, n);
      },
    });
    new Counter({
      name: 'tenguard_nic_forwarded_packets_total',
      help: 'Packets forwarded, by path (local: same host; egress: to a remote NIC; ingress: from one)',
      labelNames: ['path'],
      registers: [r],
      collect() {
        this.reset();
        const c = agent.forwarder.counters;
        setCounter(this, { path: 'local' }, c.local);
        setCounter(this, { path: 'egress' }, c.egress);
        setCounter(this, { path: 'ingress' }, c.ingress);
      },
    });
    new Counter({
      name: 'tenguard_nic_pmtu_events_total',
      help:
        'Path MTU work on tenant packets: ICMP too-big answers sent or suppressed (rate, ICMP errors), ' +
        'TCP SYNs with their MSS clamped, packets forwarded in fragmented outer datagrams, ' +
        'non-first tenant fragments let through after their first',
      labelNames: ['event'],
      registers: [r],
      collect() {
        this.reset();
        const c = agent.forwarder.counters;
        setCounter(this, { event: 'icmp_too_big' }, c.icmpTooBig);
        setCounter(this, { event: 'icmp_too_big_suppressed' }, c.icmpTooBigSuppressed);
        setCounter(this, { event: 'mss_clamped' }, c.mssClamped);
        setCounter(this, { event: 'fragmented' }, c.fragmented);
        setCounter(this, { event: 'fragments_followed' }, c.fragmentsFollowed);
      },
    });
    new Counter({
      name: 'tenguard_nic_forward_dropped_total',
      help: 'Decrypted packets the forwarder dropped, by reason',
      labelNames: ['reason'],
      registers: [r],
      collect() {
        this.reset();
        for (const [reason, v] of Object.entries(agent.forwarder.counters.dropped))
          setCounter(this, { reason }, v);
      },
    });
    new Counter({
      name: 'tenguard_nic_egress_total',
      help: 'Egress: packets to and from the uplink, denied packets, DNS names forwarded or refused, upstream answers dropped',
      labelNames: ['event'],
      registers: [r],
      collect() {
        this.reset();
        const e = agent.forwarder.egressState;
        if (e === null) return;
        setCounter(this, { event: 'to_uplink' }, e.counters.toUplink);
        setCounter(this, { event: 'from_uplink' }, e.counters.fromUplink);
        setCounter(this, { event: 'denied' }, e.counters.denied);
        setCounter(this, { event: 'dns_forwarded' }, e.counters.dnsForwarded);
        setCounter(this, { event: 'dns_refused' }, e.counters.dnsRefused);
        setCounter(this, { event: 'upstream_malformed' }, e.upstream.counters.malformed);
        setCounter(this, { event: 'upstream_oversized' }, e.upstream.counters.oversized);
        setCounter(this, { event: 'upstream_timeouts' }, e.upstream.counters.timeouts);
        for (const [reason, v] of Object.entries(e.snat.counters.dropped))
          setCounter(this, { event: `snat_dropped_${reason}` }, v);
      },
    });
    new Counter({
      name: 'tenguard_nic_engine_dropped_total',
      help: 'Datagrams and packets the protocol engine dropped, by reason',
      labelNames: ['reason'],
      registers: [r],
      collect() {
        this.reset();
        for (const [reason, v] of Object.entries(agent.engine.counters.dropped))
          setCounter(this, { reason }, v);
      },
    });
    new Counter({
      name: 'tenguard_nic_engine_events_total',
      help: 'Protocol engine events (packets, keepalives, handshakes, cookies)',
      labelNames: ['event'],
      registers: [r],
      collect() {
        this.reset();
        for (const [event, v] of Object.entries(agent.engine.counters))
          if (typeof v === 'number') setCounter(this, { event }, v);
      },
    });
    if (src.io !== undefined) {
      const io = src.io;
      new Counter({
        name: 'tenguard_nic_io_dropped_total',
        help: 'UDP I/O drops and errors, by socket and kind',
        labelNames: ['counter'],
        registers: [r],
        collect() {
          this.reset();
          for (const [counter, v] of Object.entries(io())) setCounter(this, { counter }, v);
        },
      });
    }
    if (src.loopErrors !== undefined) {
      const le = src.loopErrors;
      new Counter({
        name: 'tenguard_nic_loop_errors_total',
        help: 'Unexpected exceptions caught at the data plane loop boundary',
        registers: [r],
        collect() {
          this.reset();
          this.inc(le());
        },
      });
    }
    registerPolicyMetrics(agent.firewall, r);
    this.apiRequests = new Counter({
      name: 'tenguard_nic_api_requests_total',
      help: 'API requests answered, by route, method and status',
      labelNames: ['route', 'method', 'status'],
      registers: [r],
    });
  }

  countRequest(route: string, method: string, status: number): void {
    this.apiRequests.inc({ route, method, status: String(status) });
  }

  async text(): Promise<{ text: string; contentType: string }> {
    return { text: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}
