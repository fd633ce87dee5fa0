// A local static identity (DESIGN.md section 3: a NIC is one responder with many identities).
// Each identity has its own key pair, MAC1/cookie state, peers, and cryptokey routing table.

import type { KeyObject } from 'node:crypto';
import { AllowedIps } from './allowedips.js';
import { CookieChecker, type CookieSecret } from './cookie.js';
import { clampPrivateKey, privateKeyObject, publicKeyOf } from './crypto.js';
import type { LocalStatic } from './noise.js';
import type { Peer } from './peer.js';
import { heapSecrets, type SecretStore } from './secrets.js';

export class Identity implements LocalStatic {
  privateKey: KeyObject;
  publicKey: Buffer;
  cookieChecker: CookieChecker;
  /**
   * Raw private key (clamped), from the engine's secret store; kept for the UAPI's private_key
   * and the static-static DH, wiped on removal (its slot is then returned by the engine).
   */
  readonly privateKeyRaw: Buffer;
  /** Peers by the hex of their public key. */
  readonly peers = new Map<string, Peer>();
  /** Shared routing table of the identity (unused when peers are isolated). */
  readonly allowedIps = new AllowedIps<Peer>();

  /**
   * @param isolatedPeers When false (WireGuard semantics), all peers share one routing table:
   *   outbound packets are routed by destination, and an inbound packet is accepted when the
   *   longest-prefix match of its source is the peer it came from. When true, each peer keeps its
   *   own prefixes (they may overlap between peers, e.g. tenants with the same address space on
   *   one on-host identity): inbound packets are checked against the sending peer's prefixes
   *   only, and the caller picks the peer for outbound packets (Engine.outboundToPeers).
   * @param cookieSecret The responder's cookie secret, shared by all identities of an engine.
   */
  constructor(
    readonly id: number,
    privateKey: Uint8Array,
    readonly isolatedPeers: boolean,
    private readonly cookieSecret?: CookieSecret,
    secrets: SecretStore = heapSecrets,
  ) {
    this.privateKeyRaw = secrets.alloc(32);
    this.privateKeyRaw.set(privateKey);
    clampPrivateKey(this.privateKeyRaw);
    this.privateKey = privateKeyObject(this.privateKeyRaw);
    this.publicKey = publicKeyOf(this.privateKey);
    this.cookieChecker = new CookieChecker(this.publicKey, cookieSecret);
  }

  /** Replaces the key pair (the caller recomputes the peers' static-static DH). */
  setPrivateKey(privateKey: Uint8Array): void {
    this.privateKeyRaw.set(privateKey);
    clampPrivateKey(this.privateKeyRaw);
    this.privateKey = privateKeyObject(this.privateKeyRaw);
    this.publicKey = publicKeyOf(this.privateKey);
    this.cookieChecker.wipe();
    this.cookieChecker = new CookieChecker(this.publicKey, this.cookieSecret);
  }

  wipe(): void {
    this.privateKeyRaw.fill(0);
    this.cookieChecker.wipe();
  }
}
