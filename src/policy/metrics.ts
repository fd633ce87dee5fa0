// Prometheus metrics of the policy engine (prom-client). The packet path only bumps plain
// numbers on its zones; the metrics read them when scraped (collect callbacks), so no
// label lookup ever happens per packet.
import { Counter, Gauge, Registry } from 'prom-client';
import type { PolicyEngine } from './engine.js';

/** Registers the engine's metrics on `registry` (a new one by default) and returns it. */
export function registerPolicyMetrics(engine: PolicyEngine, registry: Registry = new Registry()): Registry {
  const zones = () => engine.zoneList();
  const counterPerVerdict = (name: string, help: string, pick: (c: ZoneCountersLike) => [number, number]) =>
    new Counter({
      name,
      help,
      labelNames: ['tenant', 'verdict'],
      registers: [registry],
      collect() {
        this.reset();
        for (const z of zones()) {
          const [allow, deny] = pick(z.counters);
          this.inc({ tenant: z.tenant, verdict: 'allow' }, allow);
          this.inc({ tenant: z.tenant, verdict: 'deny' }, deny);
        }
      },
    });
  counterPerVerdict('tenguard_policy_packets_total', 'Packets decided, by tenant zone and verdict.', (c) => [
    c.packetsAllowed,
    c.packetsDenied,
  ]);
  counterPerVerdict(
    'tenguard_policy_bytes_total',
    'Bytes of packets decided, by tenant zone and verdict.',
    (c) => [c.bytesAllowed, c.bytesDenied],
  );
  counterPerVerdict(
    'tenguard_policy_flows_total',
    'New connections decided by the policy, by tenant zone and verdict.',
    (c) => [c.flowsAllowed, c.flowsDenied],
  );

  const perZone = (name: string, help: string, pick: (c: ZoneCountersLike) => number) =>
    new Counter({
      name,
      help,
      labelNames: ['tenant'],
      registers: [registry],
      collect() {
        this.reset();
        for (const z of zones()) this.inc({ tenant: z.tenant }, pick(z.counters));
      },
    });
  perZone(
    'tenguard_conntrack_invalid_total',
    'Packets invalid for their connection state.',
    (c) => c.invalid,
  );
  perZone(
    'tenguard_conntrack_related_total',
    'ICMP errors passed as related to a connection.',
    (c) => c.related,
  );
  perZone(
    'tenguard_conntrack_expired_total',
    'Connections ended by idle timeout or TCP close.',
    (c) => c.expired,
  );
  perZone('tenguard_conntrack_revoked_total', 'Connections dropped after a policy change.', (c) => c.revoked);

  new Counter({
    name: 'tenguard_conntrack_evictions_total',
    help: 'Entries pushed out of a full table, by tenant zone and table (allowed, denied).',
    labelNames: ['tenant', 'table'],
    registers: [registry],
    collect() {
      this.reset();
      for (const z of zones()) {
        this.inc({ tenant: z.tenant, table: 'allowed' }, z.counters.evicted);
        this.inc({ tenant: z.tenant, table: 'denied' }, z.counters.deniedEvicted);
      }
    },
  });
  new Gauge({
    name: 'tenguard_conntrack_entries',
    help: 'Entries in use, by tenant zone and table (allowed connections, denied flows).',
    labelNames: ['tenant', 'table'],
    registers: [registry],
    collect() {
      this.reset();
      for (const z of zones()) {
        this.set({ tenant: z.tenant, table: 'allowed' }, z.allowed.size);
        this.set({ tenant: z.tenant, table: 'denied' }, z.denied.size);
      }
    },
  });
  new Gauge({
    name: 'tenguard_conntrack_limit',
    help: 'Maximum entries, by tenant zone and table.',
    labelNames: ['tenant', 'table'],
    registers: [registry],
    collect() {
      this.reset();
      for (const z of zones()) {
        this.set({ tenant: z.tenant, table: 'allowed' }, z.allowed.maxEntries);
        this.set({ tenant: z.tenant, table: 'denied' }, z.denied.maxEntries);
      }
    },
  });
  new Counter({
    name: 'tenguard_policy_drops_total',
    help: 'Packets dropped before a zone was known, by reason.',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ reason: 'malformed' }, engine.drops.malformed);
      this.inc({ reason: 'fragment' }, engine.drops.fragment);
      this.inc({ reason: 'unknown_workload' }, engine.drops.unknownWorkload);
    },
  });
  const log = engine.flowLog;
  if (log !== null) {
    new Counter({
      name: 'tenguard_flowlog_records_total',
      help: 'Flow records produced.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(log.records);
      },
    });
    new Counter({
      name: 'tenguard_flowlog_write_errors_total',
      help: 'Failed flow log writes.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(log.writeErrors);
      },
    });
    new Counter({
      name: 'tenguard_flowlog_rotations_total',
      help: 'Flow log file rotations.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(log.rotations);
      },
    });
  }
  return registry;
}

type ZoneCountersLike = ReturnType<PolicyEngine['zoneList']>[number]['counters'];
