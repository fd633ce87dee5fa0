// The UAPI backend of a tenguard device: maps `wg`'s view of one interface (a private key,
// a listen port, peers) onto one identity of the protocol engine. The engine needs a key
// for an identity, so until `wg` sets one the identity runs on a placeholder key that no
// one knows, and the driver neither sends nor accepts anything (hasPrivateKey false).

import { decodeEndpoint, encodeEndpoint } from '../net/endpoint.js';
import { formatIp } from '../net/ip.js';
import { generatePrivateKey } from '../protocol/crypto.js';
import type { Engine } from '../protocol/engine.js';
import {
  UAPI_ERRNO,
  type UapiBackend,
  type UapiChangeSet,
  type UapiDeviceSnapshot,
  UapiError,
} from '../uapi/protocol.js';

export interface DevicePorts {
  /** Binds the outer UDP socket to `port` (0: any); throws UapiError(EADDRINUSE) when it cannot. */
  rebind(port: number): void;
  listenPort(): number;
  /** Counters of the I/O layer, merged into the stats answer. */
  ioCounters(): Record<string, number>;
  /**
   * A keepalive to the peer now (it opens the session): called after a change that turned its
   * persistent keepalive on, as wireguard-go does at once, so a new peer's first packet does
   * not wait for a handshake. Without it the timer sends the keepalive on its next tick.
   */
  keepaliveNow?(peerId: number): void;
}

// Not from generateKeyPairSync + a JWK export: Node 20 can deadlock in that export when a
// collection during it finalises the key-generation job (seen once in CI: the main thread
// waiting forever on the key's own mutex). The protocol's keys come from random bytes.
function placeholderKey(): Buffer {
  return generatePrivateKey();
}

export class EngineUapiBackend implements UapiBackend {
  readonly identityId: number;
  hasPrivateKey = false;
  private fwmark = 0;

  constructor(
    private readonly engine: Engine,
    private readonly ports: DevicePorts,
    private readonly now: () => number,
  ) {
    const key = placeholderKey();
    this.identityId = engine.addIdentity(key);
    key.fill(0);
  }

  snapshot(): UapiDeviceSnapshot {
    const engine = this.engine;
    const peers = engine.listPeers(this.identityId).map((p) => ({
      publicKey: p.publicKey,
      presharedKey: engine.presharedKeyOf(p.id),
      endpoint: p.endpoint === null ? null : decodeEndpoint(p.endpoint),
      lastHandshake: { sec: p.lastHandshakeTimeSec, nsec: p.lastHandshakeTimeNsec },
      txBytes: p.txBytes,
      rxBytes: p.rxBytes,
      persistentKeepalive: p.persistentKeepalive,
      allowedIps: p.allowedIps.map(prefixText),
      protocolVersion: p.protocolVersion,
    }));
    return {
      privateKey: this.hasPrivateKey ? engine.privateKeyOf(this.identityId) : null,
      listenPort: this.ports.listenPort(),
      fwmark: this.fwmark,
      peers,
    };
  }

  apply(change: UapiChangeSet): void {
    const engine = this.engine;
    const id = this.identityId;
    const now = this.now();
    // The only step that can fail for reasons outside the request goes first, so a refused
    // request changes nothing.
    if (change.listenPort !== undefined && change.listenPort !== this.ports.listenPort()) {
      this.ports.rebind(change.listenPort);
    }
    if (change.privateKey !== undefined) {
      if (change.privateKey === null) {
        const key = placeholderKey();
        engine.setPrivateKey(id, key);
        key.fill(0);
        this.hasPrivateKey = false;
      } else {
        try {
          engine.setPrivateKey(id, change.privateKey);
        } catch (err) {
          throw new UapiError(UAPI_ERRNO.EINVAL, (err as Error).message, { cause: err });
        }
        this.hasPrivateKey = true;
      }
    }
    if (change.fwmark !== undefined) this.fwmark = change.fwmark;
    if (change.replacePeers) for (const p of engine.listPeers(id)) engine.removePeer(p.id);
    const own = engine.identityInfo(id).publicKey;
    const keepalives: number[] = [];
    for (const pc of change.peers) {
      if (own.equals(pc.publicKey)) continue;
      let peerId = engine.findPeer(id, pc.publicKey);
      if (pc.remove) {
        if (peerId !== undefined) engine.removePeer(peerId);
        continue;
      }
      if (peerId === undefined) {
        if (pc.updateOnly) continue;
        peerId = engine.addPeer(id, { publicKey: pc.publicKey }, now);
      }
      const add = pc.allowedIps
        .filter((a) => !a.remove)
        .map((a) => ({ address: a.cidr.address, bits: a.cidr.bits }));
      const remove = pc.allowedIps
        .filter((a) => a.remove)
        .map((a) => ({ address: a.cidr.address, bits: a.cidr.bits }));
      const keepaliveWasOff = engine.peerInfo(peerId).persistentKeepalive === 0;
      engine.updatePeer(
        peerId,
        {
          presharedKey: pc.presharedKey,
          endpoint: pc.endpoint === undefined ? undefined : encodeEndpoint(pc.endpoint.text),
          persistentKeepalive: pc.persistentKeepalive,
          replaceAllowedIps: pc.replaceAllowedIps,
          addAllowedIps: add,
          removeAllowedIps: remove,
        },
        now,
      );
      if (keepaliveWasOff && (pc.persistentKeepalive ?? 0) > 0) keepalives.push(peerId);
    }
    // After every change is in (the peer's key, PSK and endpoint), so the handshake uses them.
    if (this.hasPrivateKey) for (const p of keepalives) this.ports.keepaliveNow?.(p);
  }

  counters(): Record<string, number> {
    const out: Record<string, number> = {};
    const c = this.engine.counters;
    for (const [k, v] of Object.entries(c)) if (typeof v === 'number') out[k] = v;
    for (const [k, v] of Object.entries(c.dropped)) out[`dropped.${k}`] = v;
    // Gauges: handshake messages waiting for work, and whether the engine is under load now.
    out['handshake.queued'] = this.engine.pendingHandshakes;
    out['handshake.underLoad'] = this.engine.isUnderLoad(this.now()) ? 1 : 0;
    for (const [k, v] of Object.entries(this.ports.ioCounters())) out[k] = v;
    return out;
  }
}

function prefixText(p: { address: Uint8Array; bits: number }): string {
  return `${formatIp(p.address)}/${p.bits}`;
}
