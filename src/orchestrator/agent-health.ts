// How each agent (a host's NIC agent and vSwitch daemon) has answered the orchestrator's
// calls: every call through AgentDirectory's clients is timed and its outcome recorded here.
// An agent is 'unreachable' when its last call failed at the transport (no answer within the
// deadline, connection refused, socket gone), 'stalled' while a call has waited longer than
// SLOW_CALL_MS for an answer (known before the deadline passes), and 'slow' when its last
// answer took longer than that; one answer in time makes it 'ok' again. /v1/health and
// /metrics report it, and calls that fan out to many hosts leave out an unreachable or
// stalled one (the reconciler, which keeps calling it, catches it up when it answers again).
import { performance } from 'node:perf_hooks';
import { TgError } from '../util/errors.js';

/** An answer slower than this marks its agent slow (agent calls normally take milliseconds). */
export const SLOW_CALL_MS = 1000;

export type AgentKind = 'nic' | 'vswitch';
export type AgentCondition = 'ok' | 'slow' | 'stalled' | 'unreachable';

export interface AgentStatus {
  host: string;
  agent: AgentKind;
  condition: AgentCondition;
  /** Duration of the last call (ms), answered or not. */
  lastCallMs: number;
  /** When the condition last changed (ISO 8601). */
  since: string;
  /** Calls that failed at the transport, since the orchestrator started. */
  failures: number;
  calls: number;
  /** The last transport failure, while unreachable. */
  error?: string;
}

/**
 * Whether an error from an agent client is a transport failure (no answer) rather than an
 * answer: the clients wrap socket errors and timeouts with their cause; an agent's own error
 * answer (409, 404, ...) has none.
 */
export function isTransportFailure(err: unknown): boolean {
  return err instanceof TgError && err.code === 'TG_ERR_COMMAND_FAILED' && err.cause instanceof Error;
}

export class AgentHealth {
  private readonly agents = new Map<string, AgentStatus>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Records one finished call: its duration and, when it failed, the error. */
  record(host: string, agent: AgentKind, ms: number, err?: unknown): void {
    const s = this.status(host, agent);
    s.calls++;
    s.lastCallMs = Math.round(ms);
    let next: AgentCondition;
    if (err !== undefined && isTransportFailure(err)) {
      s.failures++;
      s.error = err instanceof Error ? err.message : String(err);
      next = 'unreachable';
    } else {
      delete s.error;
      next = ms > SLOW_CALL_MS ? 'slow' : 'ok';
    }
    if (next !== s.condition) {
      s.condition = next;
      s.since = new Date(this.now()).toISOString();
    }
  }

  /** A call to the agent has waited `ms` without an answer (still outstanding). */
  waiting(host: string, agent: AgentKind, ms: number): void {
    const s = this.status(host, agent);
    if (s.condition === 'unreachable' || s.condition === 'stalled') return;
    s.condition = 'stalled';
    s.error = `no answer for ${Math.round(ms)} ms`;
    s.since = new Date(this.now()).toISOString();
  }

  /** Whether the agent's last call got no answer, or one has waited too long for it. */
  unreachable(host: string, agent: AgentKind): boolean {
    const c = this.agents.get(`${host}\0${agent}`)?.condition;
    return c === 'unreachable' || c === 'stalled';
  }

  forget(host: string): void {
    this.agents.delete(`${host}\0nic`);
    this.agents.delete(`${host}\0vswitch`);
  }

  /** Every agent called so far, by host then agent. */
  list(): AgentStatus[] {
    return [...this.agents.values()]
      .map((s) => ({ ...s }))
      .sort((a, b) => (a.host === b.host ? (a.agent < b.agent ? -1 : 1) : a.host < b.host ? -1 : 1));
  }

  /** Agents that are not 'ok', as 'host/agent: condition (detail)' lines. */
  problems(): string[] {
    return this.list()
      .filter((s) => s.condition !== 'ok')
      .map(
        (s) =>
          `${s.host}/${s.agent}: ${s.condition} (${s.condition === 'slow' ? `${s.lastCallMs} ms` : (s.error ?? '')})`,
      );
  }

  private status(host: string, agent: AgentKind): AgentStatus {
    const key = `${host}\0${agent}`;
    let s = this.agents.get(key);
    if (s === undefined) {
      s = {
        host,
        agent,
        condition: 'ok',
        lastCallMs: 0,
        since: new Date(this.now()).toISOString(),
        failures: 0,
        calls: 0,
      };
      this.agents.set(key, s);
    }
    return s;
  }
}

/**
 * The client with every method that returns a promise timed and its outcome recorded.
 * Other members pass through unchanged.
 */
export function observed<T extends object>(
  client: T,
  onCall: (ms: number, err?: unknown) => void,
  onWaiting?: (ms: number) => void,
): T {
  return new Proxy(client, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        const t = performance.now();
        const r: unknown = v.apply(target, args);
        if (!(r instanceof Promise)) return r;
        const timer =
          onWaiting === undefined
            ? undefined
            : setTimeout(() => onWaiting(performance.now() - t), SLOW_CALL_MS);
        timer?.unref();
        return r.then(
          (x) => {
            clearTimeout(timer);
            onCall(performance.now() - t);
            return x;
          },
          (err: unknown) => {
            clearTimeout(timer);
            onCall(performance.now() - t, err);
            throw err;
          },
        );
      };
    },
  });
}
