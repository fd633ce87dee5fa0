// Transport keypairs (whitepaper section 5.4.6) and the three slots a peer keeps them in, with the
// rotation rules of wireguard-go's BeginSymmetricSession / ReceivedWithKeypair:
// - initiator: the new keypair becomes current at once (it has key confirmation from the
//   response); the old current becomes previous (or an unconfirmed next does);
// - responder: the new keypair waits in next until the first authenticated transport message
//   arrives under it; only then does it become current (the old current becomes previous).
// A keypair leaving the slots is wiped and its receiver index released by the caller-supplied
// drop function.

import { REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME } from './constants.js';
import { ReplayFilter } from './replay.js';

export class Keypair<P = unknown> {
  /** Next counter to send (< REJECT_AFTER_MESSAGES while usable). */
  sendCounter = 0;
  readonly replay = new ReplayFilter();
  /** Set when wiped; the keys are then all zero. */
  dropped = false;

  constructor(
    readonly peer: P,
    readonly sendKey: Buffer,
    readonly receiveKey: Buffer,
    readonly isInitiator: boolean,
    /** Engine clock (ms) when the keypair was derived. */
    readonly created: number,
    readonly localIndex: number,
    readonly remoteIndex: number,
  ) {}

  /** Usable for sending: not exhausted and younger than REJECT_AFTER_TIME. */
  canSend(now: number): boolean {
    return (
      !this.dropped && this.sendCounter < REJECT_AFTER_MESSAGES && now - this.created < REJECT_AFTER_TIME
    );
  }

  /** Still accepted for receiving (wireguard-go: created + REJECT_AFTER_TIME not before now). */
  canReceive(now: number): boolean {
    return !this.dropped && now - this.created <= REJECT_AFTER_TIME;
  }

  wipe(): void {
    this.sendKey.fill(0);
    this.receiveKey.fill(0);
    this.sendCounter = REJECT_AFTER_MESSAGES;
    this.dropped = true;
  }
}

export class Keypairs<P = unknown> {
  previous: Keypair<P> | null = null;
  current: Keypair<P> | null = null;
  next: Keypair<P> | null = null;

  constructor(private readonly drop: (keypair: Keypair<P>) => void) {}

  /** Installs a freshly derived keypair (rules above). */
  install(keypair: Keypair<P>): void {
    if (keypair.isInitiator) {
      if (this.next !== null) {
        this.release(this.previous);
        this.previous = this.next;
        this.next = null;
        this.release(this.current);
      } else {
        this.release(this.previous);
        this.previous = this.current;
      }
      this.current = keypair;
    } else {
      this.release(this.next);
      this.next = keypair;
      this.release(this.previous);
      this.previous = null;
    }
  }

  /**
   * Called for every authenticated transport message: when it came under `next`, that keypair
   * is confirmed and rotated to current. Returns true on that rotation.
   */
  receivedWith(keypair: Keypair<P>): boolean {
    if (this.next !== keypair) return false;
    this.release(this.previous);
    this.previous = this.current;
    this.current = keypair;
    this.next = null;
    return true;
  }

  /** Drops all three keypairs. */
  clear(): void {
    this.release(this.previous);
    this.release(this.current);
    this.release(this.next);
    this.previous = null;
    this.current = null;
    this.next = null;
  }

  private release(keypair: Keypair<P> | null): void {
    if (keypair !== null && !keypair.dropped) this.drop(keypair);
  }
}
