// Client-side identity renewal. An IdentityRenewer holds a key and its X.509-SVID and, at
// half the certificate's lifetime, makes a fresh key and request, has it signed through the
// provided `sign` callback (the CSR API, or the CA in-process), and switches to the new
// identity. Users read `current` whenever they build a connection; the old identity stays
// current until the new one is in hand, so nothing is interrupted. A failed renewal is
// retried with exponential backoff until the certificate expires.
//
// Events: 'renewed' (identity, previous), 'renewal-failed' (error, attempt), 'expired'
// (identity) when the current certificate ran out without a replacement.
import { EventEmitter } from 'node:events';
import { TgError } from '../util/errors.js';
import { type Clock, systemClock } from './clock.js';
import { assembleIdentity, createKeyAndCsr, type Identity } from './identity.js';

/** Signs a PEM request; returns the issued chain, leaf first (PEM text or list). */
export type SignCallback = (csrPem: string) => Promise<string | readonly string[]>;

export interface RenewerOptions {
  readonly spiffeId: string;
  readonly sign: SignCallback;
  readonly clock?: Clock;
  /** An identity already held; without one, start() obtains the first. */
  readonly initial?: Identity;
  /** Fraction of the lifetime after which to renew; default 0.5 (half life). */
  readonly renewAt?: number;
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
}

/** Smallest delay before a scheduled renewal, so a very short certificate cannot spin. */
const MIN_DELAY_MS = 100;

export class IdentityRenewer extends EventEmitter {
  private identity: Identity | undefined;
  private timer: unknown;
  private inflight: Promise<Identity> | undefined;
  private failures = 0;
  private stopped = false;
  private expiredNoticed = false;
  private readonly clock: Clock;
  private readonly fraction: number;
  private readonly retryMinMs: number;
  private readonly retryMaxMs: number;

  constructor(private readonly opts: RenewerOptions) {
    super();
    this.clock = opts.clock ?? systemClock;
    this.fraction = opts.renewAt ?? 0.5;
    if (!(this.fraction > 0 && this.fraction < 1))
      throw new TgError('TG_ERR_INVALID_ARGUMENT', 'renewAt must be between 0 and 1');
    this.retryMinMs = opts.retryMinMs ?? 1000;
    this.retryMaxMs = opts.retryMaxMs ?? 60_000;
    this.identity = opts.initial;
  }

  /** The identity to use now. */
  get current(): Identity {
    if (this.identity === undefined) throw new TgError('TG_ERR_INTERNAL', 'identity renewer not started');
    return this.identity;
  }

  /** When the current identity will be renewed (ms since the epoch). */
  renewalDue(identity: Identity = this.current): number {
    const from = identity.notBefore.getTime();
    return from + (identity.notAfter.getTime() - from) * this.fraction;
  }

  /** Obtains the first identity if none is held, then keeps it renewed. */
  async start(): Promise<Identity> {
    this.stopped = false;
    if (this.identity === undefined) await this.renewNow();
    else this.schedule();
    return this.current;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Resolves when no renewal is in flight (whatever its outcome). */
  async idle(): Promise<void> {
    while (this.inflight !== undefined) await this.inflight.catch(() => undefined);
  }

  /** Renews at once (one attempt; a renewal already running is joined, not repeated). */
  renewNow(): Promise<Identity> {
    this.inflight ??= this.renewOnce().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private async renewOnce(): Promise<Identity> {
    const { privateKey, csrPem } = await createKeyAndCsr(this.opts.spiffeId);
    const chain = await this.opts.sign(csrPem);
    const next = assembleIdentity(privateKey, chain, this.opts.spiffeId);
    if (this.identity !== undefined && next.notAfter <= this.identity.notAfter)
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        'the renewed certificate does not outlive the current one',
      );
    const previous = this.identity;
    this.identity = next;
    this.failures = 0;
    this.expiredNoticed = false;
    this.schedule();
    this.emit('renewed', next, previous);
    return next;
  }

  private schedule(): void {
    if (this.stopped || this.identity === undefined) return;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    const delay = Math.max(MIN_DELAY_MS, this.renewalDue() - this.clock.now());
    this.timer = this.clock.setTimeout(() => this.tick(), delay);
  }

  private tick(): void {
    this.timer = undefined;
    if (this.stopped) return;
    this.renewNow().catch((err: unknown) => {
      this.failures++;
      this.emit('renewal-failed', err, this.failures);
      const now = this.clock.now();
      if (this.identity !== undefined && now >= this.identity.notAfter.getTime() && !this.expiredNoticed) {
        this.expiredNoticed = true;
        this.emit('expired', this.identity);
      }
      if (this.stopped) return;
      const backoff = Math.min(this.retryMaxMs, this.retryMinMs * 2 ** (this.failures - 1));
      this.timer = this.clock.setTimeout(() => this.tick(), backoff);
    });
  }
}
