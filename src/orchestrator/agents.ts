// The orchestrator's reach into a host: the NIC agent's and vSwitch daemon's APIs (through
// their typed clients) and the workload namespaces it creates itself. It only ever talks to
// the agents' APIs; it never starts or ends their processes. Every call has a short deadline
// and is recorded in AgentHealth (a hung agent costs one deadline, then is reported by name).
import { readdirSync } from 'node:fs';
import { NicClient, type ResponseRecorder } from '../nic/client.js';
import { TgError } from '../util/errors.js';
import { run } from '../util/exec.js';
import type { ApiEndpoint } from '../util/http-json.js';
import { VSwitchClient } from '../vswitch/client.js';
import { AgentHealth, observed } from './agent-health.js';
import type { HostRecord } from './model.js';

/**
 * Deadlines of one agent call (the whole request). A NIC agent answers in milliseconds; a
 * vSwitch daemon may start a device process (create, restart), which takes longer on a
 * loaded machine.
 */
export const NIC_CALL_DEADLINE_MS = 3000;
export const VSWITCH_CALL_DEADLINE_MS = 6000;

/** Where `ip netns add` puts named namespaces. */
const NETNS_DIR = '/run/netns';

export interface HostAgents {
  nic: NicClient;
  vswitch: VSwitchClient;
}

/** How the orchestrator reaches an agent's API socket: plain, or over mTLS as itself. */
export type AgentEndpointOf = (host: string, agent: 'nic' | 'vswitch', socketPath: string) => ApiEndpoint;

export class AgentDirectory {
  private readonly clients = new Map<string, HostAgents & { key: string }>();
  /** How every agent answered its calls so far. */
  readonly health = new AgentHealth();

  constructor(
    private readonly endpointOf: AgentEndpointOf = (_h, _a, socketPath) => socketPath,
    /** Sees every answer of an agent (tests scan them for secrets). */
    private readonly recorder?: ResponseRecorder,
    /** Throws when agents must not be called (a replica that does not lead). */
    private readonly gate: () => void = () => undefined,
  ) {}

  /** How to reach one agent's socket (also of a host not registered yet). */
  endpoint(host: string, agent: 'nic' | 'vswitch', socketPath: string): ApiEndpoint {
    return this.endpointOf(host, agent, socketPath);
  }

  /**
   * The clients of a host's agents (made once per socket pair): of its first NIC, or of the
   * NIC a site names (nics.ts; its health is kept under the site's key, the vSwitch's under
   * the host's name).
   */
  of(host: HostRecord): HostAgents {
    this.gate();
    const key = `${host.nicApi}\0${host.vswitchApi}`;
    const c = this.clients.get(host.name);
    if (c !== undefined && c.key === key) return c;
    const h = host.name;
    const vh = (host as { host?: string }).host ?? h;
    const made = {
      key,
      nic: observed(
        new NicClient(this.endpointOf(vh, 'nic', host.nicApi), this.recorder, NIC_CALL_DEADLINE_MS),
        (ms, err) => this.health.record(h, 'nic', ms, err),
        (ms) => this.health.waiting(h, 'nic', ms),
      ),
      vswitch: observed(
        new VSwitchClient(
          this.endpointOf(vh, 'vswitch', host.vswitchApi),
          this.recorder,
          VSWITCH_CALL_DEADLINE_MS,
        ),
        (ms, err) => this.health.record(vh, 'vswitch', ms, err),
        (ms) => this.health.waiting(vh, 'vswitch', ms),
      ),
    };
    this.clients.set(host.name, made);
    return made;
  }

  forget(host: string): void {
    this.clients.delete(host);
    this.health.forget(host);
  }

  /** Whether a host's NIC agent answered its last call and none waits long (fan-outs skip it otherwise). */
  nicReachable(host: string): boolean {
    return !this.health.unreachable(host, 'nic');
  }
}

/**
 * Whether a NIC serves the policy API (PUT/GET /v1/policy/:tenant, GET /v1/flows, workload
 * labels): the capabilities its health answer lists (a NIC that lists none has none).
 */
export async function nicHasPolicyApi(nic: NicClient): Promise<boolean> {
  const h = await nic.health();
  return Array.isArray(h.capabilities) && h.capabilities.includes('policy');
}

/** Whether a NIC serves the tenant network API (DNS server and services). */
export async function nicHasNetworkApi(nic: NicClient): Promise<boolean> {
  const h = await nic.health();
  return Array.isArray(h.capabilities) && (h.capabilities as readonly string[]).includes('network');
}

// --- Namespaces ---------------------------------------------------------------------------

export function netnsExists(name: string): boolean {
  return listNetns().includes(name);
}

export function listNetns(): string[] {
  try {
    return readdirSync(NETNS_DIR);
  } catch {
    return [];
  }
}

/** Creates a named namespace with loopback up. Returns false when it already existed. */
export async function addNetns(name: string): Promise<boolean> {
  if (netnsExists(name)) return false;
  const r = await run('ip', ['netns', 'add', name], { timeoutMs: 15_000 });
  if (r.code !== 0) {
    if (r.stderr.includes('File exists')) return false;
    throw new TgError('TG_ERR_COMMAND_FAILED', `ip netns add ${name}: ${r.stderr.trim()}`);
  }
  const up = await run('ip', ['-n', name, 'link', 'set', 'lo', 'up'], { timeoutMs: 15_000 });
  if (up.code !== 0) {
    await run('ip', ['netns', 'del', name]);
    throw new TgError('TG_ERR_COMMAND_FAILED', `ip -n ${name} link set lo up: ${up.stderr.trim()}`);
  }
  return true;
}

/** Removes a named namespace; absent is fine. */
export async function delNetns(name: string): Promise<void> {
  if (!netnsExists(name)) return;
  const r = await run('ip', ['netns', 'del', name], { timeoutMs: 15_000 });
  if (r.code !== 0 && netnsExists(name))
    throw new TgError('TG_ERR_COMMAND_FAILED', `ip netns del ${name}: ${r.stderr.trim()}`);
}
