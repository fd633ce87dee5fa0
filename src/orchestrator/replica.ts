// One orchestrator replica among several on one store: which replica leads, and how a
// request that changes anything reaches the leader (src/orchestrator/README.md, "Replicas").
// Every replica answers reads from the store itself; a write (any POST, PUT or DELETE except
// the flow query) is forwarded as it came to the leader's API address, once: a request that
// arrives forwarded is never forwarded again (it answers TG_ERR_NOT_LEADER when this replica
// no longer leads, and the caller retries). While no leader is known (an election is running)
// a write waits up to `waitMs` for one.
import { TgError } from '../util/errors.js';
import { type ApiEndpoint, type ApiRequest, answer, apiRequest } from '../util/http-json.js';
import type { Leadership } from './store.js';

/** In the message of a forwarded request refused before any work: safe to send again. */
const REFUSED = 'refused a forwarded request';

/** Marks a request one replica forwarded to another. */
export const FORWARDED_HEADER = 'x-tenguard-forwarded-by';
export const DEFAULT_LEADER_WAIT_MS = 5000;
/** A forwarded request may run a long operation (a migration) at the leader. */
const FORWARD_TIMEOUT_MS = 120_000;

export interface ReplicaOptions {
  /** This replica's address as other replicas reach it (its API socket path). */
  address: string;
  /** How to reach another replica's address (plain, or over mTLS as this orchestrator). */
  endpointOf?: (address: string) => ApiEndpoint;
  waitMs?: number;
  /**
   * A read of the store: when no leader answers, it tells "the store fails" (its
   * TG_ERR_STORE_UNAVAILABLE is answered instead) from "an election is running".
   */
  probe?: () => Promise<unknown>;
}

export class Replica {
  forwarded = 0;
  private readonly waiters = new Set<() => void>();

  constructor(
    readonly leadership: Leadership,
    private readonly opts: ReplicaOptions,
  ) {
    leadership.onChange(() => {
      for (const w of this.waiters) w();
    });
  }

  get address(): string {
    return this.opts.address;
  }

  isLeader(): boolean {
    return this.leadership.isLeader();
  }

  status(): { address: string; leader: boolean; leaderAddress: string | null; forwarded: number } {
    return {
      address: this.opts.address,
      leader: this.isLeader(),
      leaderAddress: this.leadership.leader() ?? null,
      forwarded: this.forwarded,
    };
  }

  /**
   * Runs `local` when this replica leads; otherwise forwards the request to the leader and
   * answers what it answered.
   */
  async atLeader(req: ApiRequest, local: () => Promise<unknown>): Promise<unknown> {
    try {
      return await this.route(req, local);
    } catch (err) {
      // No leader to be found: when the store itself fails, that is the answer.
      if (err instanceof TgError && err.code === 'TG_ERR_NOT_LEADER' && this.opts.probe !== undefined)
        await this.opts.probe();
      throw err;
    }
  }

  private async route(req: ApiRequest, local: () => Promise<unknown>): Promise<unknown> {
    if (this.isLeader()) return local();
    const from = req.headers?.[FORWARDED_HEADER];
    if (from !== undefined)
      throw new TgError(
        'TG_ERR_NOT_LEADER',
        `replica ${this.opts.address} ${REFUSED} from ${String(from)}: it does not lead; retry`,
      );
    const query = req.query?.toString() ?? '';
    const path = query.length > 0 ? `${req.path}?${query}` : req.path;
    const end = Date.now() + (this.opts.waitMs ?? DEFAULT_LEADER_WAIT_MS);
    for (;;) {
      const leader = await this.awaitLeader(end);
      if (leader === this.opts.address) return local();
      const endpoint = this.opts.endpointOf?.(leader) ?? leader;
      try {
        const r = await apiRequest(endpoint, req.method, path, req.body, {
          timeoutMs: FORWARD_TIMEOUT_MS,
          headers: { [FORWARDED_HEADER]: this.opts.address },
        });
        this.forwarded++;
        // The replica asked had stopped leading and did nothing: ask the next leader.
        const refused =
          r.status === 503 &&
          (r.body as { code?: unknown })?.code === 'TG_ERR_NOT_LEADER' &&
          String((r.body as { message?: unknown }).message).includes(REFUSED);
        if (!refused || Date.now() >= end) return answer(r.status, r.raw.length === 0 ? undefined : r.body);
        await this.changeOrTimeout(Math.min(250, end - Date.now()));
      } catch (err) {
        // Not delivered (the leader's socket is gone or refuses): wait for the next leader.
        const code = ((err as Error).cause as NodeJS.ErrnoException | undefined)?.code;
        const undelivered = code === 'ECONNREFUSED' || code === 'ENOENT';
        if (!undelivered || Date.now() >= end)
          throw new TgError(
            'TG_ERR_NOT_LEADER',
            `the leader at ${leader} did not answer (${(err as Error).message}); ${undelivered ? 'retry' : 'the outcome is unknown: read before retrying'}`,
            { cause: err },
          );
        await this.changeOrTimeout(Math.min(250, end - Date.now()));
      }
    }
  }

  private changeOrTimeout(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.waiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, Math.max(0, ms));
      this.waiters.add(done);
    });
  }

  /** The leader's address, waiting up to waitMs for an election to end. */
  private async awaitLeader(end: number): Promise<string> {
    for (;;) {
      if (this.isLeader()) return this.opts.address;
      const l = this.leadership.leader();
      if (l !== undefined) return l;
      const left = end - Date.now();
      if (left <= 0)
        throw new TgError(
          'TG_ERR_NOT_LEADER',
          'no orchestrator replica leads (an election is running); retry',
        );
      await this.changeOrTimeout(Math.min(left, 250));
    }
  }
}
