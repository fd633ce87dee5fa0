// A peer of one local identity: its static key and preshared key, handshake state, keypairs,
// cookie state, timers, endpoint, staged packets and stats.

import { ENDPOINT_SIZE } from '../net/endpoint.js';
import type { AllowedIps } from './allowedips.js';
import { KEY_SIZE } from './constants.js';
import { CookieGenerator } from './cookie.js';
import { dh } from './crypto.js';
import type { Identity } from './identity.js';
import { type Keypair, Keypairs } from './keypair.js';
import { Handshake, type NoisePeer } from './noise.js';
import { heapSecrets, type SecretStore } from './secrets.js';
import { PeerTimers, type TimerWheel } from './timers.js';
import { QUEUE_STAGED_MAX_AGE, QUEUE_STAGED_SIZE } from './tuning.js';

export class Peer implements NoisePeer {
  readonly handshake: Handshake;
  readonly keypairs: Keypairs<Peer>;
  readonly cookieGenerator: CookieGenerator;
  readonly timers: PeerTimers<Peer>;
  readonly remoteStatic: Buffer;
  /** 32 bytes, all zero when none is configured (from the secret store). */
  readonly presharedKey: Buffer;
  /** DH(identity private, remote static): a view of staticStaticSlot, null when invalid. */
  precomputedStaticStatic: Buffer | null = null;
  private readonly staticStaticSlot: Buffer;
  /** The peer's own prefixes when its identity isolates peers (see Identity.isolatedPeers). */
  readonly ownAllowedIps: AllowedIps<Peer> | null;

  /** Current endpoint record (valid when hasEndpoint). */
  readonly endpoint = Buffer.alloc(ENDPOINT_SIZE);
  hasEndpoint = false;
  /** Persistent keepalive interval in seconds, 0 = off. */
  persistentKeepalive = 0;

  /** Packets waiting for a session, oldest first; a zero-length entry is a keepalive. */
  readonly staged: Buffer[] = [];
  /** When each staged packet was staged (engine time, ms), in the same order. */
  readonly stagedAt: number[] = [];

  rxBytes = 0;
  txBytes = 0;
  /** Wall-clock ms of the last completed handshake, 0 when none. */
  lastHandshakeWallMs = 0;
  removed = false;
  /** The initiation in flight was already resent once at once after a cookie reply. */
  cookieRetried = false;

  // Per-batch bookkeeping of the engine (which batch touched this peer, and how).
  batchEpoch = 0;
  batchDataSent = false;
  batchDataReceived = false;
  batchConfirmed = false;
  batchLastSource = -1;

  constructor(
    readonly id: number,
    readonly identity: Identity,
    remoteStatic: Uint8Array,
    wheel: TimerWheel<PeerTimers<Peer>>,
    jitter: () => number,
    dropKeypair: (keypair: Keypair<Peer>) => void,
    ownAllowedIps: AllowedIps<Peer> | null,
    secrets: SecretStore = heapSecrets,
  ) {
    this.handshake = new Handshake(secrets);
    this.presharedKey = secrets.alloc(KEY_SIZE);
    this.staticStaticSlot = secrets.alloc(KEY_SIZE);
    this.remoteStatic = Buffer.from(remoteStatic);
    this.keypairs = new Keypairs<Peer>(dropKeypair);
    this.cookieGenerator = new CookieGenerator(this.remoteStatic);
    this.timers = new PeerTimers<Peer>(this, wheel, jitter);
    this.ownAllowedIps = ownAllowedIps;
    this.recomputeStaticStatic();
  }

  /** DH(identity private, peer public); recomputed when the identity's key changes. */
  recomputeStaticStatic(): void {
    this.staticStaticSlot.fill(0);
    const ss = dh(this.identity.privateKey, this.remoteStatic);
    if (ss === null) {
      this.precomputedStaticStatic = null;
      return;
    }
    this.staticStaticSlot.set(ss);
    ss.fill(0);
    this.precomputedStaticStatic = this.staticStaticSlot;
  }

  setPresharedKey(psk: Uint8Array | null): void {
    if (psk === null) this.presharedKey.fill(0);
    else this.presharedKey.set(psk);
  }

  hasPresharedKey(): boolean {
    for (let i = 0; i < KEY_SIZE; i++) if (this.presharedKey[i] !== 0) return true;
    return false;
  }

  /** Queues a copy of a packet (or a keepalive) for when a session exists; false when the oldest was pushed out. */
  stage(packet: Buffer, now: number): boolean {
    let kept = true;
    if (this.staged.length >= QUEUE_STAGED_SIZE) {
      this.staged.shift();
      this.stagedAt.shift();
      kept = false;
    }
    this.staged.push(packet);
    this.stagedAt.push(now);
    return kept;
  }

  /**
   * Drops staged packets older than QUEUE_STAGED_MAX_AGE at `now` (a packet that late is of
   * no use to its sender, and a burst of them after a stall does harm); returns how many
   * real (non-keepalive) packets were dropped.
   */
  dropStaleStaged(now: number): number {
    let k = 0;
    while (k < this.stagedAt.length && now - this.stagedAt[k] > QUEUE_STAGED_MAX_AGE) k++;
    if (k === 0) return 0;
    let n = 0;
    for (let i = 0; i < k; i++) if (this.staged[i].length > 0) n++;
    this.staged.splice(0, k);
    this.stagedAt.splice(0, k);
    return n;
  }

  /** Drops the first `n` staged packets (sent). */
  shiftStaged(n: number): void {
    this.staged.splice(0, n);
    this.stagedAt.splice(0, n);
  }

  /** Drops every staged packet; returns how many real (non-keepalive) packets were dropped. */
  flushStaged(): number {
    let n = 0;
    for (const p of this.staged) if (p.length > 0) n++;
    this.staged.length = 0;
    this.stagedAt.length = 0;
    return n;
  }

  /** Wipes what this peer holds of its own (keypairs and handshake are wiped by the engine). */
  wipe(): void {
    this.presharedKey.fill(0);
    this.staticStaticSlot.fill(0);
    this.precomputedStaticStatic = null;
    this.cookieGenerator.wipe();
    this.handshake.clear();
    this.staged.length = 0;
    this.stagedAt.length = 0;
  }

  /** The Buffers that came from the secret store (the engine returns them after wipe()). */
  secretBuffers(): Buffer[] {
    return [this.presharedKey, this.staticStaticSlot, ...this.handshake.secretBuffers()];
  }
}
