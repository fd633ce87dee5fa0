// What the demo asks of a control plane: tenants, workloads (create, delete, migrate),
// per-tenant policy and each host's key inventory, implemented by the orchestrator
// (orchestrator-control.ts, through its REST API). The demo's report describes it.
import type { KeyMetadata } from '../nic/keystore.js';
import type { PolicyDocument } from '../policy/model.js';

export interface DemoWorkload {
  name: string;
  tenant: string;
  host: string;
  address: string;
  /** Its IPv6 address from the tenant's ULA prefix (dual stack). */
  address6?: string;
  /** The workload's network namespace. */
  netns: string;
  /** Milliseconds per step of its last spin-up or migration, as the control plane measured them. */
  timings: Record<string, number>;
  /** The NIC of its host carrying it, on a host with several NICs. */
  nic?: string;
}

/** What killing the leading orchestrator replica showed. */
export interface DemoTakeover {
  killedPid: number;
  leaderPid: number;
  /** From the SIGKILL until another replica answered as leader. */
  takeoverMs: number;
  /** Workloads (name@host) before and after. */
  workloadsBefore: string[];
  workloadsAfter: string[];
}

export interface DemoControl {
  /** One line saying what drives the NICs and vSwitches (shown in the report). */
  describe(): string;
  /** The orchestrator's API socket (what a runtime's CNI plugin calls); absent when none. */
  readonly socket?: string;
  /** Pids of processes this control plane started (the orchestrator); ended by close(). */
  pids(): number[];
  createTenant(name: string, pool: string): Promise<void>;
  createWorkload(req: {
    name: string;
    tenant: string;
    host: string;
    labels?: Record<string, string>;
  }): Promise<DemoWorkload>;
  deleteWorkload(name: string): Promise<void>;
  /** Creates a service: a virtual address and the name <name>.<tenant>.tg, load-balanced over its selector's workloads. */
  createService(req: {
    tenant: string;
    name: string;
    selector: Record<string, string>;
    port: string;
  }): Promise<{ name: string; tenant: string; address: string }>;
  migrate(name: string, toHost: string): Promise<DemoWorkload>;
  /** The key inventory (metadata only) of a host's NICs (each entry naming its NIC on a host with several). */
  keys(host: string): Promise<(KeyMetadata & { nic?: string })[]>;
  /** A workload as the control plane has it now. */
  showWorkload(name: string): Promise<DemoWorkload>;
  /** The NICs of a host with their states ('ok', 'failed', 'draining'). */
  hostNics(host: string): Promise<{ name: string; state: string }[]>;
  /**
   * Sets a tenant's policy document; false when the NICs have no policy API (then tenants
   * are kept apart by per-tenant routing alone and nothing is enforced beyond it).
   */
  setPolicy(tenant: string, doc: PolicyDocument): Promise<boolean>;
  /** A one-time login link to the orchestrator's web console; absent when it serves none. */
  consoleLogin?(): Promise<{ url: string; expiresAt: string }>;
  /** Flow records merged from the NICs (DESIGN.md section 6); null when the NICs keep none. */
  flows(): Promise<Record<string, unknown>[] | null>;
  /**
   * Kills the leading replica and waits for another to lead (present only when the control
   * plane has several replicas).
   */
  readonly takeover?: () => Promise<DemoTakeover>;
  /** Ends what this control plane started. Idempotent. */
  close(): Promise<void>;
}

/** The policy the demo gives each tenant: its own workloads may talk to each other, nothing else. */
export function allowWithinTenant(tenant: string): PolicyDocument {
  return {
    version: 1,
    tenant,
    description: `${tenant}: every workload may open any connection to every other ${tenant} workload`,
    rules: [
      {
        id: 'within-tenant-egress',
        action: 'allow',
        direction: 'egress',
        workloads: { labels: {} },
        peers: [{ labels: {} }],
        protocol: 'any',
      },
      {
        id: 'within-tenant-ingress',
        action: 'allow',
        direction: 'ingress',
        workloads: { labels: {} },
        peers: [{ labels: {} }],
        protocol: 'any',
      },
    ],
    tests: [],
  };
}
