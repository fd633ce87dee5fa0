// The WireGuard engine: a pure state machine over many local identities and their peers. No I/O
// and no timers of its own: the driver hands it batches and the time, and sends/writes what it
// returns. Every call returns views into reusable buffers that stay valid until the next call.
//
// Data path (per batch, one AEAD call per batch):
//   outbound: TUN packets -> route by destination (allowed IPs) -> transport header written in
//             place in the 16 bytes of headroom, padding, counter -> sealBatch -> datagrams.
//   inbound:  datagrams -> classify -> transport: receiver index -> keypair -> openBatch ->
//             replay window, key confirmation, keepalive, inner IP header, source routing check,
//             roaming, stats -> TUN packets; handshake messages and cookie replies -> handshake
//             path -> responses / cookie replies / keepalives / staged packets to send.
//   tick:     the timer wheel -> handshake retries, keepalives, rekeys, key zeroing.
// Engine-originated datagrams (handshakes, cookie replies, keepalives, staged packets) come back
// in a `control` batch with a slab of the engine's own.
//
// Identity lookup for initiations (DESIGN.md section 3): MAC1 is keyed by the responder's public
// key, so the targeted identity is the one whose precomputed MAC1 key verifies the message:
// one keyed BLAKE2s per identity at most, in insertion order, stopping at the first match. Every
// later message names its session by receiver index (one table for all identities). Responses
// and cookie replies are resolved by receiver index first and MAC1-checked against that identity
// only.
//
// Departures from wireguard-go, all deliberate:
// - In an inbound batch, transport messages are processed before handshake messages (arrival
//   order is kept within each group): data confirming a responder's "next" keypair is not lost
//   to a retried initiation that arrived in the same batch.
// - A peer without an endpoint gets no handshake initiation (wireguard-go builds one and fails
//   to send it); its packets are dropped and counted as noEndpoint.
// - tx_bytes counts datagrams when the engine hands them to the driver, not after sendmmsg.
// - Counters are limited to 2^53 - 2^13 - 1 (constants.ts, REJECT_AFTER_MESSAGES).
// - Sticky source addresses (src/net/endpoint.ts) are forgotten on a handshake retry and replaced by
//   the next authenticated datagram, and the socket falls back to a kernel-chosen source when
//   the address is gone; wireguard-go also watches route changes (netlink) and forgets a
//   source whose route now leaves by another interface. Here that source keeps being used
//   until the address disappears or a handshake is retried.

import {
  addressKey,
  checkEndpoint,
  clearEndpointSource,
  cookieSource,
  ENDPOINT_SIZE,
  endpointEquals,
  endpointRemoteEquals,
  isValidEndpoint,
} from '../net/endpoint.js';
import { TgError } from '../util/errors.js';
import { type Logger, logger } from '../util/log.js';
import type { TransportAead } from './aead.js';
import { AllowedIps, type IpPrefix, validatePrefix } from './allowedips.js';
import {
  ControlOut,
  type DatagramBatch,
  DataOut,
  type OutgoingDatagrams,
  type PacketBatch,
  slots,
  type TunBatch,
  TunOut,
} from './batch.js';
import {
  AEAD_TAG_SIZE,
  KEEPALIVE_TIMEOUT,
  KEY_SIZE,
  MAX_CONTENT_SIZE,
  MAX_MESSAGE_SIZE,
  MESSAGE_COOKIE_REPLY_SIZE,
  MESSAGE_COOKIE_REPLY_TYPE,
  MESSAGE_INITIATION_SIZE,
  MESSAGE_INITIATION_TYPE,
  MESSAGE_RESPONSE_SIZE,
  MESSAGE_RESPONSE_TYPE,
  MESSAGE_TRANSPORT_HEADER_SIZE,
  MESSAGE_TRANSPORT_SIZE,
  MESSAGE_TRANSPORT_TYPE,
  PADDING_MULTIPLE,
  PROTOCOL_VERSION,
  REJECT_AFTER_MESSAGES,
  REJECT_AFTER_TIME,
  REKEY_AFTER_MESSAGES_EFFECTIVE,
  REKEY_AFTER_TIME,
  REKEY_TIMEOUT,
} from './constants.js';
import { CookieSecret } from './cookie.js';
import { EngineCounters } from './counters.js';
import { clampPrivateKey, constantTimeEqual, keyFingerprint, publicKeyOf } from './crypto.js';
import { HandshakeRing } from './handshakequeue.js';
import { Identity } from './identity.js';
import { IndexTable } from './indextable.js';
import { Keypair } from './keypair.js';
import {
  COOKIE_REPLY_OFFSET_RECEIVER,
  counterHigh,
  counterLow,
  HANDSHAKE_OFFSET_SENDER,
  RESPONSE_OFFSET_RECEIVER,
  readTransportCounter,
  TRANSPORT_OFFSET_RECEIVER,
  writeTransportHeader,
} from './messages.js';
import {
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  deriveSessionKeys,
  HANDSHAKE_INITIATION_CREATED,
} from './noise.js';
import { Peer } from './peer.js';
import { RateLimiter } from './ratelimiter.js';
import { heapSecrets, type SecretStore } from './secrets.js';
import {
  defaultJitter,
  type PeerTimers,
  TIMER_GIVE_UP_HANDSHAKE,
  TIMER_NEW_HANDSHAKE,
  TIMER_PERSISTENT_KEEPALIVE,
  TIMER_RETRANSMIT_HANDSHAKE,
  TIMER_SEND_KEEPALIVE,
  TIMER_ZERO_KEY_MATERIAL,
  TimerWheel,
} from './timers.js';
import {
  COOKIE_REPLIES_PER_SECOND,
  COOKIE_REPLY_BURST,
  DEFAULT_MTU,
  HANDSHAKE_DH_COST,
  HANDSHAKE_PRIORITY_QUEUE_SIZE,
  HANDSHAKE_QUEUE_SIZE,
  HANDSHAKE_WORK_PER_CALL,
  INITIAL_BATCH_CAPACITY,
  MAX_PEERS_PER_IDENTITY,
  UNDER_LOAD_AFTER_TIME,
  UNDER_LOAD_HANDSHAKES_PER_SECOND,
  UNDER_LOAD_QUEUE_DEPTH,
} from './tuning.js';

export interface EngineOptions {
  /** Transport AEAD (JsTransportAead or the native batched one). */
  aead: TransportAead;
  /** Wall clock in ms since the Unix epoch, for TAI64N timestamps and last_handshake_time. Default Date.now. */
  wallClock?: () => number;
  /** Retransmission jitter in ms, uniform in [0, 334). Default Math.random based. */
  jitter?: () => number;
  /** Tunnel MTU: transport padding never grows a packet beyond it (wireguard-go). Default 1420. */
  mtu?: number;
  log?: Logger;
  /**
   * Where key material lives (secrets.ts): static private keys, PSKs, the static-static DH,
   * handshake state and session keys. Daemons pass the addon's locked pool; default: zeroed
   * heap Buffers.
   */
  secrets?: SecretStore;
}

export interface IdentityOptions {
  /** See Identity: per-peer routing tables instead of one shared table. Default false. */
  isolatedPeers?: boolean;
}

export interface PeerConfig {
  publicKey: Uint8Array;
  presharedKey?: Uint8Array | null;
  /** Endpoint record (endpoint.ts), without a source. */
  endpoint?: Uint8Array | null;
  allowedIps?: readonly IpPrefix[];
  /** Seconds, 0 (off) .. 65535. */
  persistentKeepalive?: number;
}

export interface PeerUpdate {
  /** null removes the preshared key. */
  presharedKey?: Uint8Array | null;
  /** null forgets the endpoint. */
  endpoint?: Uint8Array | null;
  /** Replace all allowed IPs first (UAPI replace_allowed_ips). */
  replaceAllowedIps?: boolean;
  addAllowedIps?: readonly IpPrefix[];
  removeAllowedIps?: readonly IpPrefix[];
  persistentKeepalive?: number;
}

/** What the UAPI's `get` reports for a peer (the preshared key only through presharedKeyOf). */
export interface PeerInfo {
  id: number;
  identityId: number;
  publicKey: Buffer;
  hasPresharedKey: boolean;
  endpoint: Buffer | null;
  allowedIps: IpPrefix[];
  persistentKeepalive: number;
  rxBytes: number;
  txBytes: number;
  /** Wall-clock ms of the last handshake, 0 when none. */
  lastHandshakeWallMs: number;
  lastHandshakeTimeSec: number;
  lastHandshakeTimeNsec: number;
  protocolVersion: number;
}

export interface SessionInfo {
  hasPrevious: boolean;
  hasCurrent: boolean;
  hasNext: boolean;
  currentIsInitiator: boolean;
  /** Engine clock (ms) when the current keypair was derived, NaN when none. */
  currentCreated: number;
  currentSendCounter: number;
}

export interface IdentityInfo {
  id: number;
  publicKey: Buffer;
  isolatedPeers: boolean;
  peerCount: number;
}

export interface OutboundResult {
  /** Transport messages in the caller's slab, to send (sendmmsg) to the given endpoints. */
  data: OutgoingDatagrams;
  /** Engine-originated datagrams (handshake initiations, staged packets) in the engine's slab. */
  control: OutgoingDatagrams;
}

export interface InboundResult {
  /** Decrypted IP packets in the caller's slab, to write to the TUN. */
  tun: TunBatch;
  /** Engine-originated datagrams (responses, cookie replies, keepalives, staged packets). */
  control: OutgoingDatagrams;
}

const EMPTY = Buffer.alloc(0);
const IPV4_HEADER_SIZE = 20;
const IPV6_HEADER_SIZE = 40;

/**
 * The largest padded packet: its transport message (32 bytes more) must still fit the
 * largest IPv4 UDP payload (65,535 - 20 - 8 = 65,507 bytes).
 */
export const MAX_PADDED_SIZE = 65_507 - MESSAGE_TRANSPORT_SIZE;

/**
 * Bytes of zero padding that bring a packet to a multiple of 16 without exceeding the MTU
 * (wireguard-go's calculatePaddingSize). Departure: a packet longer than the MTU given (the
 * link's MTU was raised after the engine was made) is never padded past MAX_PADDED_SIZE, so
 * that a packet the device can carry is not made one it cannot.
 */
export function paddingSize(packetSize: number, mtu: number): number {
  let lastUnit = packetSize;
  let pad: number;
  if (mtu === 0) pad = ((lastUnit + PADDING_MULTIPLE - 1) & ~(PADDING_MULTIPLE - 1)) - lastUnit;
  else {
    if (lastUnit > mtu) lastUnit %= mtu;
    let padded = (lastUnit + PADDING_MULTIPLE - 1) & ~(PADDING_MULTIPLE - 1);
    if (padded > mtu) padded = mtu;
    pad = padded - lastUnit;
  }
  return packetSize + pad > MAX_PADDED_SIZE ? Math.max(0, MAX_PADDED_SIZE - packetSize) : pad;
}

export class Engine {
  readonly counters = new EngineCounters();
  private readonly aead: TransportAead;
  private readonly wallClock: () => number;
  private readonly jitter: () => number;
  private readonly mtu: number;
  private readonly log: Logger;

  private readonly identities = new Map<number, Identity>();
  /** Identities in insertion order, for the MAC1 scan. */
  private identityList: Identity[] = [];
  private readonly peers = new Map<number, Peer>();
  private readonly index = new IndexTable<Peer>();
  private readonly wheel = new TimerWheel<PeerTimers<Peer>>();
  /** The responder's cookie secret, shared by every identity (cookie.ts CookieSecret). */
  private readonly cookieSecret = new CookieSecret();
  /** Under load: MAC2-valid handshake messages per source address (wireguard-go ratelimiter). */
  private readonly rateLimiter = new RateLimiter();
  /** Under load: cookie replies per source address. */
  private readonly cookieLimiter = new RateLimiter({
    perSecond: COOKIE_REPLIES_PER_SECOND,
    burst: COOKIE_REPLY_BURST,
  });
  /** Handshake messages waiting for work: proven sources first, then the rest. */
  private readonly priorityQueue = new HandshakeRing(HANDSHAKE_PRIORITY_QUEUE_SIZE);
  private readonly handshakeQueue = new HandshakeRing(HANDSHAKE_QUEUE_SIZE);
  private nextIdentityId = 1;
  private nextPeerId = 1;

  private underLoadUntil = Number.NEGATIVE_INFINITY;
  private handshakeWindowStart = Number.NEGATIVE_INFINITY;
  private handshakeWindowCount = 0;

  // Reusable per-call state.
  private readonly dataOut = new DataOut();
  private readonly tunOut = new TunOut();
  private readonly control = new ControlOut();
  /** The results handed back by every data-path call: no object per call. */
  private readonly outboundResult: OutboundResult = { data: this.dataOut, control: this.control };
  private readonly inboundResult: InboundResult = { tun: this.tunOut, control: this.control };
  private epoch = 0;
  // Per-batch arrays of objects are made with their final elements kind (slots(), batch.ts):
  // an engine made later (a device's, after the warm-up's) would otherwise change its empty
  // arrays' kind on its first packet and throw away the warmed code ("wrong map").
  private touched: (Peer | null)[] = slots(INITIAL_BATCH_CAPACITY, null);
  private touchedCount = 0;
  private dueTimers: PeerTimers<Peer>[] = [];
  private openCount = 0;
  private openOffsets = new Uint32Array(INITIAL_BATCH_CAPACITY);
  private openLengths = new Uint32Array(INITIAL_BATCH_CAPACITY);
  private openOk = new Uint8Array(INITIAL_BATCH_CAPACITY);
  private openSource = new Uint32Array(INITIAL_BATCH_CAPACITY);
  private openCounters = new Float64Array(INITIAL_BATCH_CAPACITY);
  private openKeys: Buffer[] = slots(INITIAL_BATCH_CAPACITY, EMPTY);
  private openKeypairs: (Keypair<Peer> | null)[] = slots(INITIAL_BATCH_CAPACITY, null);
  private handshakeItems = new Uint32Array(INITIAL_BATCH_CAPACITY);
  private readonly dropKeypair = (keypair: Keypair<Peer>): void => {
    this.index.delete(keypair.localIndex);
    keypair.wipe();
    this.release(keypair.sendKey);
    this.release(keypair.receiveKey);
  };
  private readonly secrets: SecretStore;
  /**
   * Secrets wiped but not yet returned to the store: a batch being built may still hold a key
   * (dataOut.keys, openKeys) of a keypair dropped in the same call, and must not find another
   * session's key in that memory; they go back at the start of the next call, or at the end
   * of a control-plane call (removePeer, removeIdentity: no batch is in progress then, and an
   * engine whose last identity goes may never be called again).
   */
  private releasing: Buffer[] = [];

  constructor(options: EngineOptions) {
    this.aead = options.aead;
    this.wallClock = options.wallClock ?? Date.now;
    this.jitter = options.jitter ?? defaultJitter;
    this.mtu = options.mtu ?? DEFAULT_MTU;
    this.log = options.log ?? logger('protocol');
    this.secrets = options.secrets ?? heapSecrets;
    if (!Number.isInteger(this.mtu) || this.mtu < 0 || this.mtu > MAX_CONTENT_SIZE) {
      throw new TgError('TG_ERR_INVALID_ARGUMENT', `mtu must be 0..${MAX_CONTENT_SIZE}`);
    }
  }

  // ====================================================================================
  // Control plane
  // ====================================================================================

  /** Adds a local identity from its 32-byte private key; returns its id. */
  addIdentity(privateKey: Uint8Array, options: IdentityOptions = {}): number {
    checkKey(privateKey, 'private key');
    const identity = new Identity(
      this.nextIdentityId++,
      privateKey,
      options.isolatedPeers ?? false,
      this.cookieSecret,
      this.secrets,
    );
    for (const other of this.identityList) {
      if (other.publicKey.equals(identity.publicKey)) {
        identity.wipe();
        this.release(identity.privateKeyRaw);
        throw new TgError('TG_ERR_CONFLICT', 'an identity with this key already exists');
      }
    }
    this.identities.set(identity.id, identity);
    this.identityList.push(identity);
    this.log.debug({ identity: identity.id, key: keyFingerprint(identity.publicKey) }, 'identity added');
    return identity.id;
  }

  /** Removes an identity with all its peers, wiping their keys. */
  removeIdentity(identityId: number): void {
    const identity = this.identityOrThrow(identityId);
    for (const peer of [...identity.peers.values()]) this.removePeer(peer.id);
    identity.wipe();
    this.release(identity.privateKeyRaw);
    this.returnReleased();
    this.identities.delete(identityId);
    this.identityList = this.identityList.filter((i) => i !== identity);
    if (this.identityList.length === 0) {
      // The last one: nothing can answer a handshake now; forget the secret and what waits.
      this.cookieSecret.wipe();
      this.priorityQueue.clear();
      this.handshakeQueue.clear();
    }
  }

  /**
   * Changes an identity's key pair (UAPI private_key): peers with the new public key are
   * removed, every peer's static-static DH is recomputed and current sessions are expired, as
   * wireguard-go's SetPrivateKey does.
   */
  setPrivateKey(identityId: number, privateKey: Uint8Array): void {
    checkKey(privateKey, 'private key');
    const identity = this.identityOrThrow(identityId);
    const clamped = clampPrivateKey(Buffer.from(privateKey));
    const same = constantTimeEqual(clamped, identity.privateKeyRaw);
    const publicKey = same ? identity.publicKey : publicKeyOf(clamped);
    clamped.fill(0);
    if (same) return;
    if (this.identityList.some((other) => other !== identity && other.publicKey.equals(publicKey))) {
      throw new TgError('TG_ERR_CONFLICT', 'an identity with this key already exists');
    }
    identity.setPrivateKey(privateKey);
    const self = identity.peers.get(identity.publicKey.toString('hex'));
    if (self !== undefined) this.removePeer(self.id);
    for (const peer of identity.peers.values()) {
      peer.recomputeStaticStatic();
      this.expireCurrentKeypairs(peer);
    }
  }

  identityInfo(identityId: number): IdentityInfo {
    const identity = this.identityOrThrow(identityId);
    return {
      id: identity.id,
      publicKey: Buffer.from(identity.publicKey),
      isolatedPeers: identity.isolatedPeers,
      peerCount: identity.peers.size,
    };
  }

  listIdentities(): IdentityInfo[] {
    return this.identityList.map((i) => this.identityInfo(i.id));
  }

  /** A copy of the identity's private key (for the UAPI's private_key); the caller wipes it. */
  privateKeyOf(identityId: number): Buffer {
    return Buffer.from(this.identityOrThrow(identityId).privateKeyRaw);
  }

  /** Adds a peer to an identity; returns its id (unique across the engine). */
  addPeer(identityId: number, config: PeerConfig, now = 0): number {
    const identity = this.identityOrThrow(identityId);
    checkKey(config.publicKey, 'public key');
    const hexKey = Buffer.from(config.publicKey).toString('hex');
    if (identity.peers.has(hexKey))
      throw new TgError('TG_ERR_CONFLICT', 'this identity already has a peer with that key');
    if (identity.publicKey.equals(Buffer.from(config.publicKey))) {
      throw new TgError('TG_ERR_INVALID_ARGUMENT', "a peer cannot have its identity's own public key");
    }
    if (identity.peers.size >= MAX_PEERS_PER_IDENTITY) {
      throw new TgError('TG_ERR_CONFLICT', `an identity has at most ${MAX_PEERS_PER_IDENTITY} peers`);
    }
    validatePeerFields(config);
    const peer = new Peer(
      this.nextPeerId++,
      identity,
      config.publicKey,
      this.wheel,
      this.jitter,
      this.dropKeypair,
      identity.isolatedPeers ? new AllowedIps<Peer>() : null,
      this.secrets,
    );
    identity.peers.set(hexKey, peer);
    this.peers.set(peer.id, peer);
    this.updatePeer(
      peer.id,
      {
        presharedKey: config.presharedKey ?? null,
        endpoint: config.endpoint ?? null,
        addAllowedIps: config.allowedIps ?? [],
        persistentKeepalive: config.persistentKeepalive ?? 0,
      },
      now,
    );
    this.log.debug(
      { identity: identityId, peer: peer.id, key: keyFingerprint(peer.remoteStatic) },
      'peer added',
    );
    return peer.id;
  }

  /**
   * Updates a peer. Turning a persistent keepalive on makes a keepalive due at once (sent on the
   * next tick), as wireguard-go's UAPI does.
   */
  updatePeer(peerId: number, update: PeerUpdate, now = 0): void {
    const peer = this.peerOrThrow(peerId);
    validatePeerFields(update);
    if (update.presharedKey !== undefined) peer.setPresharedKey(update.presharedKey);
    if (update.endpoint !== undefined) {
      if (update.endpoint === null) peer.hasEndpoint = false;
      else {
        peer.endpoint.set(update.endpoint);
        peer.hasEndpoint = true;
      }
    }
    const table = peer.ownAllowedIps ?? peer.identity.allowedIps;
    if (update.replaceAllowedIps) table.removeByPeer(peer);
    for (const prefix of update.removeAllowedIps ?? []) table.remove(prefix, peer);
    for (const prefix of update.addAllowedIps ?? []) table.insert(prefix, peer);
    if (update.persistentKeepalive !== undefined) {
      const was = peer.persistentKeepalive;
      peer.persistentKeepalive = update.persistentKeepalive;
      if (was === 0 && update.persistentKeepalive > 0) peer.timers.persistentKeepaliveAt(now);
    }
  }

  /** Removes a peer, wiping its keypairs, handshake and preshared key, and dropping staged packets. */
  removePeer(peerId: number): void {
    const peer = this.peerOrThrow(peerId);
    this.zeroAndFlushAll(peer);
    peer.timers.stopAll();
    (peer.ownAllowedIps ?? peer.identity.allowedIps).removeByPeer(peer);
    peer.identity.peers.delete(peer.remoteStatic.toString('hex'));
    this.peers.delete(peerId);
    peer.wipe();
    for (const b of peer.secretBuffers()) this.release(b);
    peer.removed = true;
    this.returnReleased();
  }

  /** The id of an identity's peer with this public key, or undefined. */
  findPeer(identityId: number, publicKey: Uint8Array): number | undefined {
    return this.identityOrThrow(identityId).peers.get(Buffer.from(publicKey).toString('hex'))?.id;
  }

  peerInfo(peerId: number): PeerInfo {
    const peer = this.peerOrThrow(peerId);
    const wall = peer.lastHandshakeWallMs;
    return {
      id: peer.id,
      identityId: peer.identity.id,
      publicKey: Buffer.from(peer.remoteStatic),
      hasPresharedKey: peer.hasPresharedKey(),
      endpoint: peer.hasEndpoint ? Buffer.from(peer.endpoint) : null,
      allowedIps: (peer.ownAllowedIps ?? peer.identity.allowedIps).entriesForPeer(peer),
      persistentKeepalive: peer.persistentKeepalive,
      rxBytes: peer.rxBytes,
      txBytes: peer.txBytes,
      lastHandshakeWallMs: wall,
      lastHandshakeTimeSec: Math.floor(wall / 1000),
      lastHandshakeTimeNsec: (wall % 1000) * 1_000_000,
      protocolVersion: PROTOCOL_VERSION,
    };
  }

  listPeers(identityId: number): PeerInfo[] {
    return [...this.identityOrThrow(identityId).peers.values()].map((p) => this.peerInfo(p.id));
  }

  /** Which keypair slots of a peer are filled (for stats and tests; keys are never exposed). */
  sessionInfo(peerId: number): SessionInfo {
    const { previous, current, next } = this.peerOrThrow(peerId).keypairs;
    return {
      hasPrevious: previous !== null,
      hasCurrent: current !== null,
      hasNext: next !== null,
      currentIsInitiator: current?.isInitiator ?? false,
      currentCreated: current?.created ?? Number.NaN,
      currentSendCounter: current?.sendCounter ?? 0,
    };
  }

  /** A copy of the peer's preshared key, or null when none (for the UAPI's get); the caller wipes it. */
  presharedKeyOf(peerId: number): Buffer | null {
    const peer = this.peerOrThrow(peerId);
    return peer.hasPresharedKey() ? Buffer.from(peer.presharedKey) : null;
  }

  /**
   * The driver's load signal: while under load, and for UNDER_LOAD_AFTER_TIME after, handshake
   * messages need a valid MAC2 (else they get a rate-limited cookie reply) and are rate-limited
   * per source address. The engine also puts itself under load when its handshake queue holds
   * UNDER_LOAD_QUEUE_DEPTH messages (wireguard-go) or more than UNDER_LOAD_HANDSHAKES_PER_SECOND
   * handshake messages arrive in a second.
   */
  setUnderLoad(underLoad: boolean, now: number): void {
    if (underLoad) this.markUnderLoad(now);
    else this.underLoadUntil = Number.NEGATIVE_INFINITY;
  }

  isUnderLoad(now: number): boolean {
    return this.underLoadUntil > now;
  }

  /** Handshake messages queued for work (the driver calls handshakes() while this is not 0). */
  get pendingHandshakes(): number {
    return this.priorityQueue.length + this.handshakeQueue.length;
  }

  /**
   * The engine clock time before which tick() has nothing to do, for a driver that does not
   * tick a quiet engine every wheel granularity: the earliest peer timer (a lower bound, made
   * exact by the first read after a tick that fired timers, a walk over the wheel's slots;
   * otherwise O(1)), or -Infinity while handshakes wait in the queue or the rate limiters hold
   * sources (their tables are collected on ticks).
   */
  get nextTimerAt(): number {
    if (this.pendingHandshakes > 0 || this.rateLimiter.size > 0 || this.cookieLimiter.size > 0)
      return Number.NEGATIVE_INFINITY;
    return this.wheel.lowWater;
  }

  /**
   * Works on queued handshake messages, at most HANDSHAKE_WORK_PER_CALL units, priority ring
   * first, and returns what that produced (responses, cookie replies, keepalives, staged
   * packets). tick() does the same at its end, inbound() too while not under load; the driver
   * calls this once per event-loop turn while pendingHandshakes is not 0, so a flood is worked
   * off in slices between the data path's batches.
   */
  handshakes(now: number): OutgoingDatagrams {
    this.beginCall();
    try {
      this.runHandshakes(now);
      this.control.finish(this.aead);
    } catch (err) {
      this.failCall(err);
    }
    return this.control;
  }

  /**
   * Sends a peer a keepalive now, which opens a session first when there is none (a handshake
   * initiation, unless one went out within REKEY_TIMEOUT): what wireguard-go does at once when
   * a persistent keepalive is turned on over its UAPI. A driver calls it then, so that the
   * first packet of a new session does not wait for the handshake. Returns what to send.
   */
  keepaliveNow(peerId: number, now: number): OutgoingDatagrams {
    this.beginCall();
    try {
      const peer = this.peerOrThrow(peerId);
      // As the persistent keepalive timer does it (tick()).
      if (peer.hasEndpoint && !peer.removed) this.sendKeepalive(peer, now);
      this.control.finish(this.aead);
    } catch (err) {
      this.failCall(err);
    }
    return this.control;
  }

  /** Peers known to the engine (for tests and stats). */
  get peerCount(): number {
    return this.peers.size;
  }

  /** Receiver indices in use (handshakes in progress plus live keypairs). */
  get indexCount(): number {
    return this.index.size;
  }

  // ====================================================================================
  // Data path: outbound
  // ====================================================================================

  /**
   * Encrypts a batch of IP packets read from the TUN of one identity. Packet i is at
   * batch.buf[offsets[i], offsets[i] + lengths[i]) with 16 bytes of headroom in front (the
   * transport header is written there) and room behind for up to 15 bytes of padding and the
   * 16-byte tag. Packets are routed by destination through the identity's allowed IPs.
   */
  outbound(identityId: number, batch: PacketBatch, now: number): OutboundResult {
    this.beginCall();
    try {
      const count = this.clampCount(batch, false);
      this.dataOut.reset(batch.buf, count);
      const identity = this.identities.get(identityId);
      if (identity === undefined) this.counters.dropped.noRoute += count;
      else this.outboundRouted(identity, batch, count, now);
      this.finishOutbound(now);
    } catch (err) {
      this.failCall(err);
    }
    return this.outboundResult;
  }

  /**
   * Like outbound(), but the caller names the peer of every packet (peerIds[i]); no routing
   * lookup is made. For identities with isolated peers, where routing is the caller's policy.
   * With `ends`, packet i's message (header, packet, padding, tag) must end by ends[i]: its
   * padding is cut to fit (a packet re-encrypted in the datagram it came in; padding is
   * optional to a receiver, which reads the packet's length from its IP header).
   */
  outboundToPeers(
    batch: PacketBatch,
    peerIds: Uint32Array,
    now: number,
    ends: Uint32Array | null = null,
  ): OutboundResult {
    this.beginCall();
    try {
      const clamped = this.clampCount(batch, false);
      const count = Math.min(clamped, peerIds.length);
      this.counters.dropped.malformed += clamped - count;
      this.dataOut.reset(batch.buf, count);
      const { buf, offsets, lengths } = batch;
      for (let i = 0; i < count; i++) {
        const off = offsets[i];
        const len = lengths[i];
        if (!this.outboundBoundsOk(buf, off, len)) continue;
        const peer = this.peers.get(peerIds[i]);
        if (peer === undefined) {
          this.counters.dropped.noRoute++;
          continue;
        }
        this.sendData(peer, buf, off, len, now, ends === null ? buf.length : ends[i]);
      }
      this.finishOutbound(now);
    } catch (err) {
      this.failCall(err);
    }
    return this.outboundResult;
  }

  private outboundRouted(identity: Identity, batch: PacketBatch, count: number, now: number): void {
    const { buf, offsets, lengths } = batch;
    const table = identity.allowedIps;
    const dropped = this.counters.dropped;
    for (let i = 0; i < count; i++) {
      const off = offsets[i];
      const len = lengths[i];
      if (!this.outboundBoundsOk(buf, off, len)) continue;
      const version = buf[off] >> 4;
      let peer: Peer | null;
      if (version === 4 && len >= IPV4_HEADER_SIZE) peer = table.lookup4(buf.readUInt32BE(off + 16));
      else if (version === 6 && len >= IPV6_HEADER_SIZE) peer = table.lookup6At(buf, off + 24);
      else {
        dropped.malformed++;
        continue;
      }
      if (peer === null) {
        dropped.noRoute++;
        continue;
      }
      this.sendData(peer, buf, off, len, now);
    }
  }

  private outboundBoundsOk(buf: Buffer, off: number, len: number): boolean {
    if (len < 1 || off < MESSAGE_TRANSPORT_HEADER_SIZE || off + len > buf.length) {
      this.counters.dropped.malformed++;
      return false;
    }
    if (len > MAX_CONTENT_SIZE) {
      this.counters.dropped.oversized++;
      return false;
    }
    return true;
  }

  /**
   * One packet for peer: into the encryption batch when a session exists, else staged. Its
   * message must end by `limit` (at most buf.length): padding is cut to fit.
   */
  private sendData(peer: Peer, buf: Buffer, off: number, len: number, now: number, limit = buf.length): void {
    const kp = peer.keypairs.current;
    if (!peer.hasEndpoint) {
      this.counters.dropped.noEndpoint++;
      return;
    }
    if (kp === null || !kp.canSend(now)) {
      if (!peer.stage(Buffer.from(buf.subarray(off, off + len)), now)) this.counters.dropped.stagedOverflow++;
      this.sendHandshakeInitiation(peer, false, now);
      return;
    }
    if (peer.staged.length > 0) this.sendStaged(peer, now);
    let padded = len + paddingSize(len, this.mtu);
    const room = Math.min(limit, buf.length) - off - AEAD_TAG_SIZE;
    if (padded > room) {
      if (len > room) {
        this.counters.dropped.noRoom++;
        return;
      }
      padded = room;
    }
    const end = off + padded;
    for (let j = off + len; j < end; j++) buf[j] = 0;
    const counter = kp.sendCounter++;
    const header = off - MESSAGE_TRANSPORT_HEADER_SIZE;
    writeTransportHeader(buf, header, kp.remoteIndex, counterLow(counter), counterHigh(counter));
    const out = this.dataOut;
    const n = out.count++;
    out.offsets[n] = header;
    out.lengths[n] = padded + MESSAGE_TRANSPORT_SIZE;
    out.plainLengths[n] = padded;
    out.keys[n] = kp.sendKey;
    out.endpoints.set(peer.endpoint, n * ENDPOINT_SIZE);
    out.identityIds[n] = peer.identity.id;
    peer.txBytes += padded + MESSAGE_TRANSPORT_SIZE;
    this.counters.txPackets++;
    this.touch(peer);
    peer.batchDataSent = true;
  }

  private finishOutbound(now: number): void {
    this.dataOut.seal(this.aead);
    for (let i = 0; i < this.touchedCount; i++) {
      const peer = this.touched[i] as Peer;
      this.afterSent(peer, peer.batchDataSent, now);
    }
    this.control.finish(this.aead);
  }

  /** Timer events and key freshness after authenticated packets were sent to peer. */
  private afterSent(peer: Peer, dataSent: boolean, now: number): void {
    const t = peer.timers;
    t.anyAuthenticatedPacketTraversal(now, peer.persistentKeepalive);
    t.anyAuthenticatedPacketSent();
    if (dataSent) t.dataSent(now);
    this.keepKeyFreshSending(peer, now);
  }

  private keepKeyFreshSending(peer: Peer, now: number): void {
    const kp = peer.keypairs.current;
    if (kp === null) return;
    if (
      kp.sendCounter > REKEY_AFTER_MESSAGES_EFFECTIVE ||
      (kp.isInitiator && now - kp.created > REKEY_AFTER_TIME)
    ) {
      this.sendHandshakeInitiation(peer, false, now);
    }
  }

  // ====================================================================================
  // Data path: inbound
  // ====================================================================================

  /**
   * Processes a batch of received UDP datagrams (batch.endpoints holds each one's source).
   * Returns decrypted packets to write to the TUN (in batch.buf) and datagrams to send.
   */
  inbound(batch: DatagramBatch, now: number): InboundResult {
    this.beginCall();
    try {
      const count = this.clampCount(batch, true);
      this.tunOut.reset(batch.buf, count);
      const handshakes = this.classify(batch, count, now);
      this.openTransports(batch, now);
      for (let k = 0; k < handshakes; k++) {
        const i = this.handshakeItems[k];
        try {
          this.admitHandshake(
            batch.buf,
            batch.offsets[i],
            batch.lengths[i],
            batch.endpoints,
            i * ENDPOINT_SIZE,
            now,
          );
        } catch (err) {
          this.counters.dropped.internal++;
          this.log.debug({ err }, 'handshake message raised');
        }
      }
      // Calm: answer at once. Under load: only in the driver's slices (handshakes()), so the
      // handshake work of an event-loop turn stays one slice however many batches it reads.
      if (!this.isUnderLoad(now)) this.runHandshakes(now);
      this.control.finish(this.aead);
    } catch (err) {
      this.failCall(err);
    }
    return this.inboundResult;
  }

  /** Pass 1: sorts datagrams into the transport open batch and the handshake list. */
  private classify(batch: DatagramBatch, count: number, now: number): number {
    const { buf, offsets, lengths } = batch;
    const dropped = this.counters.dropped;
    this.ensureOpenCapacity(count);
    let opens = 0;
    let handshakes = 0;
    let lastReceiver = -1;
    let lastKeypair: Keypair<Peer> | undefined;
    for (let i = 0; i < count; i++) {
      const off = offsets[i];
      const len = lengths[i];
      if (off + len > buf.length || len < MESSAGE_TRANSPORT_SIZE) {
        dropped.malformed++;
        continue;
      }
      if (len > MAX_MESSAGE_SIZE) {
        dropped.oversized++;
        continue;
      }
      const type = buf.readUInt32LE(off);
      if (type === MESSAGE_TRANSPORT_TYPE) {
        // Consecutive messages mostly share a receiver index: remember the last lookup.
        const receiver = buf.readUInt32LE(off + TRANSPORT_OFFSET_RECEIVER);
        let kp: Keypair<Peer> | undefined = lastKeypair;
        if (receiver !== lastReceiver || kp === undefined || kp.dropped) {
          kp = this.index.keypairs.get(receiver);
          lastReceiver = receiver;
          lastKeypair = kp;
        }
        if (kp === undefined) {
          dropped.unknownIndex++;
          continue;
        }
        if (!kp.canReceive(now)) {
          dropped.expiredKeypair++;
          continue;
        }
        const counter = readTransportCounter(buf, off);
        if (counter >= REJECT_AFTER_MESSAGES) {
          dropped.counterLimit++;
          continue;
        }
        this.openOffsets[opens] = off;
        this.openLengths[opens] = len;
        this.openKeys[opens] = kp.receiveKey;
        this.openKeypairs[opens] = kp;
        this.openCounters[opens] = counter;
        this.openSource[opens] = i;
        opens++;
      } else if (
        (type === MESSAGE_INITIATION_TYPE && len === MESSAGE_INITIATION_SIZE) ||
        (type === MESSAGE_RESPONSE_TYPE && len === MESSAGE_RESPONSE_SIZE) ||
        (type === MESSAGE_COOKIE_REPLY_TYPE && len === MESSAGE_COOKIE_REPLY_SIZE)
      ) {
        this.handshakeItems[handshakes++] = i;
      } else if (type >= MESSAGE_INITIATION_TYPE && type <= MESSAGE_COOKIE_REPLY_TYPE) {
        dropped.malformed++;
      } else {
        dropped.unknownType++;
      }
    }
    this.openCount = opens;
    return handshakes;
  }

  /** Pass 2: one openBatch, then per packet in order: replay, confirmation, inner checks, output. */
  private openTransports(batch: DatagramBatch, now: number): void {
    const n = this.openCount;
    if (n === 0) return;
    const buf = batch.buf;
    this.aead.openBatch(buf, this.openOffsets, this.openLengths, this.openKeys, n, this.openOk);
    const dropped = this.counters.dropped;
    const tun = this.tunOut;
    for (let j = 0; j < n; j++) {
      const kp = this.openKeypairs[j] as Keypair<Peer>;
      this.openKeys[j] = EMPTY;
      this.openKeypairs[j] = null;
      if (this.openOk[j] !== 1) {
        dropped.badAuth++;
        continue;
      }
      if (!kp.replay.validateCounter(this.openCounters[j], REJECT_AFTER_MESSAGES)) {
        dropped.replay++;
        continue;
      }
      const peer = kp.peer;
      this.touch(peer);
      peer.batchLastSource = this.openSource[j];
      if (peer.keypairs.receivedWith(kp)) {
        peer.timers.handshakeComplete();
        peer.lastHandshakeWallMs = this.wallClock();
        peer.batchConfirmed = true;
        this.counters.handshakesCompleted++;
      }
      const len = this.openLengths[j];
      peer.rxBytes += len;
      const p = this.openOffsets[j] + MESSAGE_TRANSPORT_HEADER_SIZE;
      const plen = len - MESSAGE_TRANSPORT_SIZE;
      if (plen === 0) {
        this.counters.keepalivesReceived++;
        continue;
      }
      peer.batchDataReceived = true;
      const version = buf[p] >> 4;
      let size: number;
      let source: Peer | null;
      const table = peer.ownAllowedIps ?? peer.identity.allowedIps;
      if (version === 4) {
        if (plen < IPV4_HEADER_SIZE) {
          dropped.malformedInner++;
          continue;
        }
        size = buf.readUInt16BE(p + 2);
        const headerSize = (buf[p] & 0x0f) * 4;
        if (size > plen || headerSize < IPV4_HEADER_SIZE || headerSize > size) {
          dropped.malformedInner++;
          continue;
        }
        source = table.lookup4(buf.readUInt32BE(p + 12));
      } else if (version === 6) {
        if (plen < IPV6_HEADER_SIZE) {
          dropped.malformedInner++;
          continue;
        }
        size = IPV6_HEADER_SIZE + buf.readUInt16BE(p + 4);
        if (size > plen) {
          dropped.malformedInner++;
          continue;
        }
        source = table.lookup6At(buf, p + 8);
      } else {
        dropped.malformedInner++;
        continue;
      }
      if (source !== peer) {
        dropped.badInnerSource++;
        continue;
      }
      const k = tun.count++;
      tun.offsets[k] = p;
      tun.lengths[k] = size;
      tun.peerIds[k] = peer.id;
      this.counters.rxPackets++;
    }
    for (let i = 0; i < this.touchedCount; i++) {
      const peer = this.touched[i] as Peer;
      if (peer.batchLastSource >= 0)
        this.setEndpointFromPacket(peer, batch.endpoints, peer.batchLastSource * ENDPOINT_SIZE);
      this.keepKeyFreshReceiving(peer, now);
      const t = peer.timers;
      t.anyAuthenticatedPacketTraversal(now, peer.persistentKeepalive);
      t.anyAuthenticatedPacketReceived();
      if (peer.batchDataReceived) t.dataReceived(now);
      if (peer.batchConfirmed) this.sendStaged(peer, now);
    }
  }

  private keepKeyFreshReceiving(peer: Peer, now: number): void {
    if (peer.timers.sentLastMinuteHandshake) return;
    const kp = peer.keypairs.current;
    if (kp?.isInitiator && now - kp.created > REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT) {
      peer.timers.sentLastMinuteHandshake = true;
      this.sendHandshakeInitiation(peer, false, now);
    }
  }

  /** The peer's endpoint becomes the packet's source, with the local address it came to (sticky source). */
  private setEndpointFromPacket(peer: Peer, endpoints: Buffer, off: number): void {
    if (!isValidEndpoint(endpoints, off)) return;
    if (peer.hasEndpoint && endpointEquals(peer.endpoint, 0, endpoints, off)) return;
    if (peer.hasEndpoint && !endpointRemoteEquals(peer.endpoint, 0, endpoints, off)) this.counters.roamed++;
    endpoints.copy(peer.endpoint, 0, off, off + ENDPOINT_SIZE);
    peer.hasEndpoint = true;
  }

  // ====================================================================================
  // Handshake path (whitepaper section 5.3, wireguard-go receive.go):
  //
  //   arrival (admitHandshake, cheap, per message):
  //     cookie reply          -> consumed at once (one XAEAD open, only for a pending handshake)
  //     response              -> receiver index names our pending initiation? priority ring
  //                              : dropped (unknownIndex)
  //     initiation, no load   -> queue
  //     initiation, load      -> valid MAC2 (engine-wide secret, no identity scan)? priority ring
  //                              : the source's cookie-reply allowance left? queue, or when
  //                                the queue is full a cookie reply at once (MAC1 scan + reply)
  //                              : dropped (cookieRateLimited)
  //     (a full queue puts the engine under load before the message is judged)
  //   work (runHandshakes, at most HANDSHAKE_WORK_PER_CALL units per engine call):
  //     priority ring first, then the queue; MAC1 finds the identity; under load a message
  //     without MAC2 gets a cookie reply instead of Diffie-Hellman work, one with MAC2 passes
  //     the per-address rate limit, then the Noise step.
  //
  // So a flood from one address costs a MAC2 check and a map lookup per message once its
  // cookie replies are spent, never fills the queue, and cannot delay a proven message behind
  // it. Departure from wireguard-go: under load a response needs no MAC2 when its receiver
  // index names one of our pending initiations (a random 32-bit value only someone who saw
  // that initiation knows), so an initiator under load does not lose a REKEY_TIMEOUT to its
  // own cookie requirement.

  /** One handshake message or cookie reply on arrival (sizes already checked by classify). */
  private admitHandshake(
    buf: Buffer,
    off: number,
    len: number,
    endpoints: Buffer,
    epOff: number,
    now: number,
  ): void {
    const type = buf.readUInt32LE(off);
    if (type === MESSAGE_COOKIE_REPLY_TYPE) {
      this.handleCookieReply(buf, off, now);
      return;
    }
    const dropped = this.counters.dropped;
    if (!isValidEndpoint(endpoints, epOff)) {
      dropped.malformed++;
      return;
    }
    this.noteHandshakeLoad(now);
    let priority = false;
    let charged = false;
    if (type === MESSAGE_RESPONSE_TYPE) {
      const peer = this.index.handshakes.get(buf.readUInt32LE(off + RESPONSE_OFFSET_RECEIVER));
      if (peer === undefined) {
        dropped.unknownIndex++;
        return;
      }
      if (peer.handshake.state !== HANDSHAKE_INITIATION_CREATED) {
        dropped.handshakeState++;
        return;
      }
      priority = true;
    } else {
      if (this.handshakeQueue.length === this.handshakeQueue.capacity) this.markUnderLoad(now);
      if (this.isUnderLoad(now)) {
        if (this.cookieSecret.checkMac2(buf, off, len, cookieSource(endpoints, epOff), now)) priority = true;
        else if (!this.cookieLimiter.allow(addressKey(endpoints, epOff), now)) {
          dropped.cookieRateLimited++;
          return;
        } else charged = true;
      }
    }
    const ring = priority ? this.priorityQueue : this.handshakeQueue;
    if (!ring.push(buf, off, len, endpoints, epOff, charged)) {
      dropped.handshakeQueueFull++;
      this.markUnderLoad(now);
      // A source with cookie replies left is answered now rather than dropped: queued, the
      // message would only have earned that reply, and dropped, a legitimate initiator behind a
      // many-address flood would wait REKEY_TIMEOUT for its next try instead of resending with
      // MAC2 at once. One MAC1 scan and one reply, the cost of a queued one, paid on arrival.
      if (charged) {
        const identity = this.identityForMac1(buf, off, len);
        if (identity === null) dropped.badMac1++;
        else {
          this.sendCookieReply(
            identity,
            buf,
            off,
            len,
            endpoints,
            epOff,
            cookieSource(endpoints, epOff),
            now,
          );
          this.counters.cookieRepliesOnArrival++;
        }
      }
      return;
    }
    if (priority) this.counters.handshakesPrioritised++;
    if (this.handshakeQueue.length >= UNDER_LOAD_QUEUE_DEPTH) this.markUnderLoad(now);
  }

  /** Works on queued messages until the call's budget is spent or both rings are empty. */
  private runHandshakes(now: number): void {
    let budget = HANDSHAKE_WORK_PER_CALL;
    while (budget > 0) {
      let ring = this.priorityQueue;
      let slot = ring.shift();
      if (slot < 0) {
        ring = this.handshakeQueue;
        slot = ring.shift();
        if (slot < 0) return;
      }
      try {
        budget -= this.handleHandshake(ring, slot, now);
      } catch (err) {
        budget -= HANDSHAKE_DH_COST;
        this.counters.dropped.internal++;
        this.log.debug({ err }, 'handshake message raised');
      }
    }
  }

  /** Works on one queued message; returns the work units it cost. */
  private handleHandshake(ring: HandshakeRing, slot: number, now: number): number {
    const buf = ring.buf;
    const off = ring.offsetOf(slot);
    const len = ring.lengthOf(slot);
    const endpoints = ring.sources;
    const epOff = slot * ENDPOINT_SIZE;
    if (buf.readUInt32LE(off) === MESSAGE_INITIATION_TYPE)
      return this.handleInitiation(buf, off, len, endpoints, epOff, ring.wasCharged(slot), now);
    return this.handleResponse(buf, off, len, endpoints, epOff, now);
  }

  private handleCookieReply(buf: Buffer, off: number, now: number): void {
    const peer = this.index.peerOf(buf.readUInt32LE(off + COOKIE_REPLY_OFFSET_RECEIVER));
    if (peer === undefined) {
      this.counters.dropped.unknownIndex++;
      return;
    }
    if (!peer.cookieGenerator.consumeReply(buf, off, now)) {
      this.counters.dropped.badCookieReply++;
      return;
    }
    this.counters.cookieRepliesConsumed++;
    // The responder is under load and dropped our initiation: send it again at once, now with
    // MAC2, instead of after REKEY_TIMEOUT. Once per initiation: a reply opens only with the
    // MAC1 of the last message sent, and the resent one is not answered by another retry.
    if (peer.handshake.state === HANDSHAKE_INITIATION_CREATED && !peer.cookieRetried) {
      peer.cookieRetried = true;
      this.counters.cookieRetries++;
      this.sendHandshakeInitiation(peer, true, now, true);
    }
  }

  // -> e, es, s, ss (noise.ts), answered with <- e, ee, se, psk
  private handleInitiation(
    buf: Buffer,
    off: number,
    len: number,
    endpoints: Buffer,
    epOff: number,
    charged: boolean,
    now: number,
  ): number {
    const dropped = this.counters.dropped;
    const identity = this.identityForMac1(buf, off, len);
    if (identity === null) {
      dropped.badMac1++;
      return 1;
    }
    if (this.isUnderLoad(now)) {
      const source = cookieSource(endpoints, epOff);
      if (!identity.cookieChecker.checkMac2(buf, off, len, source, now)) {
        if (!charged && !this.cookieLimiter.allow(addressKey(endpoints, epOff), now)) {
          dropped.cookieRateLimited++;
          return 1;
        }
        this.sendCookieReply(identity, buf, off, len, endpoints, epOff, source, now);
        return 1;
      }
      if (!this.rateLimiter.allow(addressKey(endpoints, epOff), now)) {
        dropped.rateLimited++;
        return 1;
      }
    }
    const result = consumeInitiation(identity, buf, off, (pk) => identity.peers.get(pk.toString('hex')), now);
    if (!result.ok) {
      if (result.reason === 'unknownPeer') dropped.unknownPeer++;
      else if (result.reason === 'replay') dropped.handshakeReplay++;
      else if (result.reason === 'flood') dropped.handshakeFlood++;
      else dropped.badHandshake++;
      this.log.debug({ identity: identity.id, reason: result.reason }, 'initiation refused');
      return HANDSHAKE_DH_COST;
    }
    const peer = result.peer;
    peer.timers.anyAuthenticatedPacketTraversal(now, peer.persistentKeepalive);
    peer.timers.anyAuthenticatedPacketReceived();
    this.setEndpointFromPacket(peer, endpoints, epOff);
    peer.rxBytes += len;
    this.sendHandshakeResponse(peer, now);
    return HANDSHAKE_DH_COST;
  }

  // <- e, ee, se, psk (noise.ts): the initiator's session begins; staged packets or a keepalive follow.
  private handleResponse(
    buf: Buffer,
    off: number,
    len: number,
    endpoints: Buffer,
    epOff: number,
    now: number,
  ): number {
    const dropped = this.counters.dropped;
    const peer = this.index.handshakes.get(buf.readUInt32LE(off + RESPONSE_OFFSET_RECEIVER));
    if (peer === undefined) {
      dropped.unknownIndex++;
      return 1;
    }
    const identity = peer.identity;
    if (!identity.cookieChecker.checkMac1(buf, off, len)) {
      dropped.badMac1++;
      return 1;
    }
    if (this.isUnderLoad(now) && !this.rateLimiter.allow(addressKey(endpoints, epOff), now)) {
      dropped.rateLimited++;
      return 1;
    }
    if (peer.handshake.state !== HANDSHAKE_INITIATION_CREATED) {
      dropped.handshakeState++;
      return 1;
    }
    if (!consumeResponse(identity, peer, buf, off)) {
      dropped.badHandshake++;
      return HANDSHAKE_DH_COST;
    }
    this.setEndpointFromPacket(peer, endpoints, epOff);
    peer.rxBytes += len;
    peer.timers.anyAuthenticatedPacketTraversal(now, peer.persistentKeepalive);
    peer.timers.anyAuthenticatedPacketReceived();
    if (!this.beginSymmetricSession(peer, now)) return HANDSHAKE_DH_COST;
    peer.timers.sessionDerived(now);
    peer.timers.handshakeComplete();
    peer.lastHandshakeWallMs = this.wallClock();
    this.counters.handshakesCompleted++;
    this.sendKeepalive(peer, now);
    return HANDSHAKE_DH_COST;
  }

  /** Answers a handshake message with a cookie reply to its source, addressed to its sender index. */
  private sendCookieReply(
    identity: Identity,
    buf: Buffer,
    off: number,
    len: number,
    endpoints: Buffer,
    epOff: number,
    source: Uint8Array,
    now: number,
  ): void {
    const endpoint = endpoints.subarray(epOff, epOff + ENDPOINT_SIZE);
    const replyOff = this.control.reserve(MESSAGE_COOKIE_REPLY_SIZE, endpoint, identity.id);
    const sender = buf.readUInt32LE(off + HANDSHAKE_OFFSET_SENDER);
    identity.cookieChecker.createReply(buf, off, len, sender, source, now, this.control.buf, replyOff);
    this.counters.cookieRepliesSent++;
    this.counters.dropped.cookieRequired++;
  }

  /** The identity whose MAC1 key verifies the message: one keyed BLAKE2s per identity at most. */
  private identityForMac1(buf: Buffer, off: number, len: number): Identity | null {
    const list = this.identityList;
    for (let i = 0; i < list.length; i++) if (list[i].cookieChecker.checkMac1(buf, off, len)) return list[i];
    return null;
  }

  private markUnderLoad(now: number): void {
    if (!this.isUnderLoad(now)) this.counters.underLoadEntered++;
    this.underLoadUntil = now + UNDER_LOAD_AFTER_TIME;
  }

  private noteHandshakeLoad(now: number): void {
    if (now - this.handshakeWindowStart >= 1000) {
      this.handshakeWindowStart = now;
      this.handshakeWindowCount = 0;
    }
    if (++this.handshakeWindowCount > UNDER_LOAD_HANDSHAKES_PER_SECOND) this.markUnderLoad(now);
  }

  /**
   * wireguard-go SendHandshakeInitiation: at most one per REKEY_TIMEOUT, except the one resend
   * after a cookie reply (`afterCookie`).
   */
  private sendHandshakeInitiation(peer: Peer, isRetry: boolean, now: number, afterCookie = false): void {
    if (!isRetry) peer.timers.handshakeAttempts = 0;
    const hs = peer.handshake;
    if ((!afterCookie && now - hs.lastSentHandshake < REKEY_TIMEOUT) || !peer.hasEndpoint || peer.removed)
      return;
    if (!afterCookie) peer.cookieRetried = false;
    hs.lastSentHandshake = now;
    this.index.delete(hs.localIndex);
    const senderIndex = this.index.newIndexForHandshake(peer);
    const off = this.control.reserve(MESSAGE_INITIATION_SIZE, peer.endpoint, peer.identity.id);
    if (!createInitiation(peer.identity, peer, senderIndex, this.wallClock(), this.control.buf, off)) {
      this.control.unreserve();
      this.index.delete(senderIndex);
      this.log.debug({ peer: peer.id }, 'cannot create initiation: invalid peer public key');
      return;
    }
    peer.cookieGenerator.addMacs(this.control.buf, off, MESSAGE_INITIATION_SIZE, now);
    peer.timers.anyAuthenticatedPacketTraversal(now, peer.persistentKeepalive);
    peer.timers.anyAuthenticatedPacketSent();
    peer.txBytes += MESSAGE_INITIATION_SIZE;
    this.counters.handshakeInitiationsSent++;
    peer.timers.handshakeInitiated(now);
  }

  private sendHandshakeResponse(peer: Peer, now: number): void {
    const hs = peer.handshake;
    hs.lastSentHandshake = now;
    this.index.delete(hs.localIndex);
    const senderIndex = this.index.newIndexForHandshake(peer);
    const off = this.control.reserve(MESSAGE_RESPONSE_SIZE, peer.endpoint, peer.identity.id);
    if (!createResponse(peer, senderIndex, this.control.buf, off)) {
      this.control.unreserve();
      this.index.delete(senderIndex);
      this.counters.dropped.badHandshake++;
      return;
    }
    peer.cookieGenerator.addMacs(this.control.buf, off, MESSAGE_RESPONSE_SIZE, now);
    this.beginSymmetricSession(peer, now);
    peer.timers.sessionDerived(now);
    peer.timers.anyAuthenticatedPacketTraversal(now, peer.persistentKeepalive);
    peer.timers.anyAuthenticatedPacketSent();
    peer.txBytes += MESSAGE_RESPONSE_SIZE;
    this.counters.handshakeResponsesSent++;
  }

  /** Derives the keypair from the finished handshake and installs it (keypair.ts rules). */
  private beginSymmetricSession(peer: Peer, now: number): boolean {
    const keys = deriveSessionKeys(peer.handshake);
    if (keys === null) return false;
    // Into the secret store; the KDF's own outputs are wiped at once.
    const sendKey = this.secrets.alloc(KEY_SIZE);
    const receiveKey = this.secrets.alloc(KEY_SIZE);
    sendKey.set(keys.sendKey);
    receiveKey.set(keys.receiveKey);
    keys.sendKey.fill(0);
    keys.receiveKey.fill(0);
    const kp = new Keypair<Peer>(
      peer,
      sendKey,
      receiveKey,
      keys.isInitiator,
      now,
      keys.localIndex,
      keys.remoteIndex,
    );
    this.index.swapForKeypair(keys.localIndex, kp);
    peer.keypairs.install(kp);
    return true;
  }

  /** Stages a keepalive unless packets are already staged, then sends what is staged. */
  private sendKeepalive(peer: Peer, now: number): void {
    this.counters.dropped.stagedStale += peer.dropStaleStaged(now);
    if (peer.staged.length === 0) peer.stage(EMPTY, now);
    this.sendStaged(peer, now);
  }

  /** Sends staged packets under the current keypair, or asks for a handshake when there is none. */
  private sendStaged(peer: Peer, now: number): void {
    if (peer.staged.length === 0 || peer.removed) return;
    this.counters.dropped.stagedStale += peer.dropStaleStaged(now);
    if (peer.staged.length === 0) return;
    const kp = peer.keypairs.current;
    if (kp === null || !kp.canSend(now)) {
      this.sendHandshakeInitiation(peer, false, now);
      return;
    }
    if (!peer.hasEndpoint) return;
    let dataSent = false;
    let sent = 0;
    for (const packet of peer.staged) {
      if (!kp.canSend(now)) break; // exhausted: the rest waits for the next session
      sent++;
      const padded = packet.length + paddingSize(packet.length, this.mtu);
      const counter = kp.sendCounter++;
      peer.txBytes += this.control.addTransport(
        peer.identity.id,
        peer.endpoint,
        packet,
        padded,
        kp.remoteIndex,
        counter,
        kp.sendKey,
      );
      if (packet.length > 0) {
        dataSent = true;
        this.counters.txPackets++;
      } else {
        this.counters.keepalivesSent++;
      }
    }
    peer.shiftStaged(sent);
    this.afterSent(peer, dataSent, now);
  }

  // ====================================================================================
  // Timers
  // ====================================================================================

  /**
   * Runs the timers due at `now` (the driver calls this every 100-250 ms) and returns the
   * datagrams they produced: handshake initiations and retries, keepalives.
   */
  tick(now: number): OutgoingDatagrams {
    this.beginCall();
    try {
      const n = this.wheel.due(now, this.dueTimers);
      for (let i = 0; i < n; i++) {
        const t = this.dueTimers[i];
        const peer = t.owner;
        if (peer.removed) continue;
        this.runTimers(peer, t.expire(now), now);
        t.schedule();
      }
      this.rateLimiter.collect(now);
      this.cookieLimiter.collect(now);
      this.runHandshakes(now);
      this.control.finish(this.aead);
    } catch (err) {
      this.failCall(err);
    }
    return this.control;
  }

  private runTimers(peer: Peer, actions: number, now: number): void {
    if (actions & TIMER_RETRANSMIT_HANDSHAKE) {
      // The sticky source may be what keeps the peer from answering (wireguard-go does the same).
      clearEndpointSource(peer.endpoint);
      this.sendHandshakeInitiation(peer, true, now);
    }
    if (actions & TIMER_GIVE_UP_HANDSHAKE) {
      this.counters.dropped.stagedFlushed += peer.flushStaged();
      this.log.debug({ peer: peer.id }, 'handshake did not complete, giving up');
    }
    if (actions & TIMER_SEND_KEEPALIVE) {
      this.sendKeepalive(peer, now);
      peer.timers.afterExpiredKeepalive(now);
    }
    if (actions & TIMER_NEW_HANDSHAKE) this.sendHandshakeInitiation(peer, false, now);
    if (actions & TIMER_ZERO_KEY_MATERIAL) this.zeroAndFlushAll(peer);
    if (actions & TIMER_PERSISTENT_KEEPALIVE && peer.persistentKeepalive > 0) this.sendKeepalive(peer, now);
  }

  /** Drops all keypairs and the handshake, and the staged packets (wireguard-go ZeroAndFlushAll). */
  private zeroAndFlushAll(peer: Peer): void {
    peer.keypairs.clear();
    this.index.delete(peer.handshake.localIndex);
    peer.handshake.clear();
    this.counters.dropped.stagedFlushed += peer.flushStaged();
  }

  /** Makes current sessions unusable for sending so the next packet starts a handshake. */
  private expireCurrentKeypairs(peer: Peer): void {
    this.index.delete(peer.handshake.localIndex);
    peer.handshake.clear();
    peer.handshake.lastSentHandshake = Number.NEGATIVE_INFINITY;
    if (peer.keypairs.current !== null) peer.keypairs.current.sendCounter = REJECT_AFTER_MESSAGES;
    if (peer.keypairs.next !== null) peer.keypairs.next.sendCounter = REJECT_AFTER_MESSAGES;
  }

  // ====================================================================================
  // Helpers
  // ====================================================================================

  /** Wipes a secret now and returns it to the store at the start of the next call. */
  private release(b: Buffer): void {
    b.fill(0);
    this.releasing.push(b);
  }

  private returnReleased(): void {
    if (this.releasing.length === 0) return;
    for (const b of this.releasing) this.secrets.free(b);
    this.releasing = [];
  }

  private beginCall(): void {
    this.returnReleased();
    this.control.reset();
    this.dataOut.count = 0;
    this.tunOut.count = 0;
    this.touchedCount = 0;
    this.epoch++;
  }

  private touch(peer: Peer): void {
    if (peer.batchEpoch === this.epoch) return;
    peer.batchEpoch = this.epoch;
    peer.batchDataSent = false;
    peer.batchDataReceived = false;
    peer.batchConfirmed = false;
    peer.batchLastSource = -1;
    this.touched[this.touchedCount++] = peer;
  }

  /** Items the batch really has; anything the arrays cannot describe is a counted drop. */
  private clampCount(batch: PacketBatch | DatagramBatch, withEndpoints: boolean): number {
    let n = Math.max(0, Math.floor(batch.count) || 0);
    n = Math.min(n, batch.offsets.length, batch.lengths.length);
    if (withEndpoints) n = Math.min(n, Math.floor((batch as DatagramBatch).endpoints.length / ENDPOINT_SIZE));
    if (n < batch.count) this.counters.dropped.malformed += batch.count - n;
    return n;
  }

  private ensureOpenCapacity(n: number): void {
    if (this.openOffsets.length >= n) return;
    const cap = Math.max(n, this.openOffsets.length * 2);
    this.openOffsets = new Uint32Array(cap);
    this.openLengths = new Uint32Array(cap);
    this.openOk = new Uint8Array(cap);
    this.openSource = new Uint32Array(cap);
    this.openCounters = new Float64Array(cap);
    this.handshakeItems = new Uint32Array(cap);
  }

  /** An exception escaped a batch: nothing is returned for it, and it is counted. */
  private failCall(err: unknown): void {
    this.counters.dropped.internal++;
    this.dataOut.count = 0;
    this.tunOut.count = 0;
    this.control.reset();
    this.log.error({ err }, 'protocol engine: unexpected exception in a batch');
  }

  private identityOrThrow(id: number): Identity {
    const identity = this.identities.get(id);
    if (identity === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no identity ${id}`);
    return identity;
  }

  private peerOrThrow(id: number): Peer {
    const peer = this.peers.get(id);
    if (peer === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no peer ${id}`);
    return peer;
  }
}

function checkKey(key: Uint8Array, what: string): void {
  if (!(key instanceof Uint8Array) || key.length !== KEY_SIZE) {
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `a ${what} is 32 bytes`);
  }
}

function validatePeerFields(update: PeerUpdate | PeerConfig): void {
  if (update.presharedKey !== undefined && update.presharedKey !== null)
    checkKey(update.presharedKey, 'preshared key');
  if (update.endpoint !== undefined && update.endpoint !== null) checkEndpoint(update.endpoint);
  const ka = update.persistentKeepalive;
  if (ka !== undefined && (!Number.isInteger(ka) || ka < 0 || ka > 65535)) {
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'persistent keepalive is 0..65535 seconds');
  }
  const lists = [
    (update as PeerConfig).allowedIps,
    (update as PeerUpdate).addAllowedIps,
    (update as PeerUpdate).removeAllowedIps,
  ];
  for (const list of lists) for (const prefix of list ?? []) validatePrefix(prefix);
}
