// The reference UAPI backend: a device held in memory that applies change sets with
// exactly the semantics UapiBackend states (those of the Linux kernel and wireguard-go).
// It sends nothing; tests drive it through the UAPI and set counters through recordTraffic().
import { x25519 } from '@noble/curves/ed25519.js';
import {
  UAPI_ERRNO,
  type UapiBackend,
  type UapiChangeSet,
  type UapiDeviceSnapshot,
  UapiError,
  type UapiPeerSnapshot,
} from './protocol.js';

interface MemoryPeer {
  publicKey: Buffer;
  presharedKey: Buffer | null;
  endpoint: string | null;
  persistentKeepalive: number;
  /** Canonical prefix texts, in the order they were added. */
  allowedIps: Set<string>;
  txBytes: bigint;
  rxBytes: bigint;
  lastHandshake: { sec: number; nsec: number };
}

export interface MemoryUapiBackendOptions {
  /** Called before a listen port is taken; returning false refuses the change with EADDRINUSE. */
  portAvailable?: (port: number) => boolean;
}

export class MemoryUapiBackend implements UapiBackend {
  private privateKey: Buffer | null = null;
  private publicKeyHex: string | null = null;
  private listenPort = 0;
  private fwmark = 0;
  /** Keyed by public key hex; Map order is creation order. */
  private readonly peers = new Map<string, MemoryPeer>();
  /** Prefix text -> public key hex of the peer that has it. */
  private readonly owners = new Map<string, string>();
  private readonly portAvailable: (port: number) => boolean;
  /** Number of change sets applied. */
  applied = 0;

  constructor(opts: MemoryUapiBackendOptions = {}) {
    this.portAvailable = opts.portAvailable ?? (() => true);
  }

  snapshot(): UapiDeviceSnapshot {
    const peers: UapiPeerSnapshot[] = [];
    for (const p of this.peers.values()) {
      peers.push({
        publicKey: p.publicKey,
        presharedKey: p.presharedKey,
        endpoint: p.endpoint,
        lastHandshake: p.lastHandshake,
        txBytes: p.txBytes,
        rxBytes: p.rxBytes,
        persistentKeepalive: p.persistentKeepalive,
        allowedIps: [...p.allowedIps],
        protocolVersion: 1,
      });
    }
    return { privateKey: this.privateKey, listenPort: this.listenPort, fwmark: this.fwmark, peers };
  }

  apply(change: UapiChangeSet): void {
    // The only refusal possible comes first, so that a refused change set changes nothing.
    if (change.listenPort !== undefined && change.listenPort !== 0 && change.listenPort !== this.listenPort) {
      if (!this.portAvailable(change.listenPort)) {
        throw new UapiError(UAPI_ERRNO.EADDRINUSE, `listen port ${change.listenPort} is in use`);
      }
    }

    if (change.privateKey !== undefined) {
      this.privateKey?.fill(0);
      if (change.privateKey === null) {
        this.privateKey = null;
        this.publicKeyHex = null;
      } else {
        this.privateKey = Buffer.from(change.privateKey);
        this.publicKeyHex = Buffer.from(x25519.getPublicKey(this.privateKey)).toString('hex');
        // A peer cannot be the device itself.
        this.removePeer(this.publicKeyHex);
      }
    }
    if (change.listenPort !== undefined) this.listenPort = change.listenPort;
    if (change.fwmark !== undefined) this.fwmark = change.fwmark;
    if (change.replacePeers) for (const hex of [...this.peers.keys()]) this.removePeer(hex);

    for (const section of change.peers) {
      const hex = section.publicKey.toString('hex');
      if (hex === this.publicKeyHex) continue;
      if (section.remove) {
        this.removePeer(hex);
        continue;
      }
      let peer = this.peers.get(hex);
      if (peer === undefined) {
        if (section.updateOnly) continue;
        peer = {
          publicKey: Buffer.from(section.publicKey),
          presharedKey: null,
          endpoint: null,
          persistentKeepalive: 0,
          allowedIps: new Set(),
          txBytes: 0n,
          rxBytes: 0n,
          lastHandshake: { sec: 0, nsec: 0 },
        };
        this.peers.set(hex, peer);
      }
      if (section.presharedKey !== undefined) {
        peer.presharedKey?.fill(0);
        peer.presharedKey = section.presharedKey === null ? null : Buffer.from(section.presharedKey);
      }
      if (section.endpoint !== undefined) peer.endpoint = section.endpoint.text;
      if (section.persistentKeepalive !== undefined) peer.persistentKeepalive = section.persistentKeepalive;
      if (section.replaceAllowedIps) {
        for (const text of peer.allowedIps) this.owners.delete(text);
        peer.allowedIps.clear();
      }
      for (const { cidr, remove } of section.allowedIps) {
        const owner = this.owners.get(cidr.text);
        if (remove) {
          if (owner === hex) {
            this.owners.delete(cidr.text);
            peer.allowedIps.delete(cidr.text);
          }
          continue;
        }
        if (owner !== undefined && owner !== hex) this.peers.get(owner)?.allowedIps.delete(cidr.text);
        this.owners.set(cidr.text, hex);
        peer.allowedIps.add(cidr.text);
      }
    }
    this.applied++;
  }

  /** Sets a peer's counters and handshake time, as a data plane would; false if no such peer. */
  recordTraffic(
    publicKey: Uint8Array,
    t: { txBytes?: bigint; rxBytes?: bigint; lastHandshake?: { sec: number; nsec: number } },
  ): boolean {
    const peer = this.peers.get(Buffer.from(publicKey).toString('hex'));
    if (peer === undefined) return false;
    if (t.txBytes !== undefined) peer.txBytes = t.txBytes;
    if (t.rxBytes !== undefined) peer.rxBytes = t.rxBytes;
    if (t.lastHandshake !== undefined) peer.lastHandshake = { ...t.lastHandshake };
    return true;
  }

  /** Zeroes every key held and forgets all state. */
  wipe(): void {
    this.privateKey?.fill(0);
    this.privateKey = null;
    this.publicKeyHex = null;
    for (const hex of [...this.peers.keys()]) this.removePeer(hex);
    this.listenPort = 0;
    this.fwmark = 0;
  }

  private removePeer(hex: string): void {
    const peer = this.peers.get(hex);
    if (peer === undefined) return;
    for (const text of peer.allowedIps) this.owners.delete(text);
    peer.presharedKey?.fill(0);
    this.peers.delete(hex);
  }
}
