// Forwarding decisions of the NIC (DESIGN.md section 4), a pure function of batches: it takes
// the decrypted packets of one engine.inbound() call, each tagged with the session (peer) it
// came from, and builds one batch for engine.outboundToPeers(), each packet tagged with the
// session it must leave on. No I/O and no crypto here.
//
// The tenant and the source workload come from the session, never from addresses alone:
//   - a workload's vSwitch session      -> that workload, hence its tenant;
//   - a remote NIC's off-host session   -> that tenant (the session belongs to the tenant's
//     off-host identity); the source workload is the remote workload the inner source address
//     names in this tenant, and it must sit behind that same remote NIC.
// The destination is looked up only in that tenant's table, so tenants may share addresses:
//   - a local workload  -> its on-host session (same host, hairpinned through the NIC);
//   - a remote workload -> the off-host session to the NIC it sits behind (only for packets
//     from local workloads: a NIC never relays between two remote NICs);
//   - another tenant's workload imported into this tenant's table by a cross-tenant grant
//     (setImports; see api.ts for how the NIC learns them) -> its on-host session, or the
//     off-host session that carries the grant to its NIC;
//   - anything else (another tenant's address, an unknown one) -> dropped and counted.
// Every routed packet then passes the firewall: the policy engine (src/policy, stateful,
// default deny; the NIC agent always attaches one) or, without one, the `policy` hook. Nothing
// is ever sent in plaintext: the NIC has no TUN device, every output goes through the engine.
//
// Hot path: one Map lookup per packet for the source (cached across runs of one session), one
// trie lookup for the destination, one engine.check() (its own cost: src/policy/engine.ts), one
// memcpy into a preallocated slab. No allocation. The clock is read once per batch (`now`).

import type { PolicyEngine } from '../policy/engine.js';
import { AllowedIps } from '../protocol/allowedips.js';
import type { PacketBatch, TunBatch } from '../protocol/batch.js';
import { MESSAGE_TRANSPORT_HEADER_SIZE } from '../protocol/constants.js';
import { TgError } from '../util/errors.js';
import { type HostAddress, hostPrefix } from './addresses.js';

/** A workload as the policy hook sees it. */
export interface WorkloadRef {
  readonly tenant: string;
  readonly workload: string;
  /** True for a workload on this NIC's host, false for one behind a remote NIC. */
  readonly local: boolean;
}

/** A packet during the policy call: buf[offset, offset + length). Valid during the call only. */
export interface PacketView {
  buf: Buffer;
  offset: number;
  length: number;
}

/**
 * Decides whether a packet from src to dst (same tenant) may pass; true allows. Called once per
 * packet with a reused PacketView; it must not keep the view or throw (a throw denies).
 */
export type PolicyHook = (tenant: string, src: WorkloadRef, dst: WorkloadRef, packet: PacketView) => boolean;

/** The hook's default, for a forwarder without a policy engine (unit tests): everything routed passes. */
export const allowWithinTenant: PolicyHook = () => true;

/** A workload of another tenant made reachable from a tenant's workloads by a grant. */
export interface ImportedWorkload {
  tenant: string;
  workload: string;
  address: HostAddress;
  /** On this NIC's host (then peerId is its vSwitch session). */
  local: boolean;
  /** Engine peer id: the workload's vSwitch, or the off-host session that carries the grant. */
  peerId: number;
}

export class ForwardCounters {
  /** Local workload to local workload (hairpin on-host). */
  local = 0;
  /** Local workload to a remote workload (off-host leg out). */
  egress = 0;
  /** Remote workload to a local workload (off-host leg in). */
  ingress = 0;
  readonly dropped = {
    /** The session belongs to no workload or tenant known here (or the remote source is unknown). */
    noSource: 0,
    /** The destination is not a workload of the source's tenant (another tenant, or unknown). */
    noRoute: 0,
    /** From a remote NIC to a remote workload: NICs do not relay. */
    transit: 0,
    /** Denied by the firewall (policy, conntrack state, malformed for the engine). */
    policy: 0,
    /** Not an IPv4/IPv6 packet of a size the output slab takes. */
    malformed: 0,
  };
}

class Destination {
  constructor(
    readonly ref: WorkloadRef,
    /** Engine peer id: the workload's vSwitch (local) or the remote NIC's off-host peer. */
    readonly peerId: number,
    readonly address: HostAddress,
  ) {}
}

class TenantTable {
  readonly routes = new AllowedIps<Destination>();
  /** Workload name -> destination, for both local and remote workloads. */
  readonly byName = new Map<string, Destination>();
  /** Other tenants' workloads reachable by grants (not in byName: names are per tenant). */
  imports: Destination[] = [];
  constructor(readonly name: string) {}
}

class Source {
  constructor(
    readonly tenant: TenantTable,
    /** The local workload of a vSwitch session; null for a remote NIC's session. */
    readonly workload: WorkloadRef | null,
    readonly peerId: number,
  ) {}
}

/** Slot of the output slab: headroom for the transport header, packet, padding and tag room. */
export const FORWARD_SLOT = 2048;
const TAIL_ROOM = 32;
const MAX_FORWARD_PACKET = FORWARD_SLOT - MESSAGE_TRANSPORT_HEADER_SIZE - TAIL_ROOM;
const IPV4_HEADER = 20;
const EMPTY = Buffer.alloc(0);
const IPV6_HEADER = 40;

/** The batch forward() builds: packet i for engine peer peerIds[i]. Reused by every call. */
export interface ForwardBatch {
  batch: PacketBatch;
  peerIds: Uint32Array;
}

export class Forwarder {
  readonly counters = new ForwardCounters();
  policy: PolicyHook = allowWithinTenant;
  /** The stateful firewall; when set it decides every packet and `policy` is not called. */
  private engine: PolicyEngine | null = null;
  private readonly tenants = new Map<string, TenantTable>();
  private readonly sources = new Map<number, Source>();
  private capacity: number;
  private slab: Buffer;
  private readonly out: PacketBatch & { peerIds: Uint32Array };
  private readonly view: PacketView = { buf: Buffer.alloc(0), offset: 0, length: 0 };

  constructor(capacity = 128) {
    this.capacity = capacity;
    this.slab = Buffer.alloc(capacity * FORWARD_SLOT);
    this.out = {
      buf: this.slab,
      offsets: new Uint32Array(capacity),
      lengths: new Uint32Array(capacity),
      peerIds: new Uint32Array(capacity),
      count: 0,
    };
  }

  // ------------------------------------------------------------------------------------
  // Tables (control plane)

  /** Puts the policy engine in the path (default deny from then on). */
  attachEngine(engine: PolicyEngine): void {
    this.engine = engine;
  }

  /** Expiry and flow-log housekeeping of the engine; the data plane calls it every ~100 ms. */
  tick(now: number): void {
    this.engine?.tick(now);
  }

  /**
   * Replaces the grant imports of `tenant`: other tenants' workloads its workloads may reach
   * (whether a connection is allowed is the firewall's business, both ways).
   */
  setImports(tenant: string, imports: readonly ImportedWorkload[]): void {
    const t = this.tableOrThrow(tenant);
    for (const d of t.imports) t.routes.removeByPeer(d);
    t.imports = [];
    for (const w of imports) {
      if (w.tenant === tenant) continue;
      const own = this.tenants.get(w.tenant)?.byName.get(w.workload);
      const ref: WorkloadRef =
        own !== undefined && own.ref.local === w.local
          ? own.ref
          : Object.freeze({ tenant: w.tenant, workload: w.workload, local: w.local });
      const d = new Destination(ref, w.peerId, w.address);
      t.routes.insert(hostPrefix(w.address), d);
      t.imports.push(d);
    }
  }

  /** The grant imports of a tenant (diagnostics). */
  importsOf(tenant: string): { tenant: string; workload: string; local: boolean; peerId: number }[] {
    return (this.tenants.get(tenant)?.imports ?? []).map((d) => ({ ...d.ref, peerId: d.peerId }));
  }

  hasTenant(tenant: string): boolean {
    return this.tenants.has(tenant);
  }

  addTenant(tenant: string): void {
    if (this.tenants.has(tenant)) throw new TgError('TG_ERR_CONFLICT', `tenant '${tenant}' exists`);
    this.tenants.set(tenant, new TenantTable(tenant));
  }

  /** Forgets a tenant with all its routes and sessions. */
  removeTenant(tenant: string): void {
    const t = this.tenants.get(tenant);
    if (t === undefined) return;
    for (const [peerId, s] of this.sources) if (s.tenant === t) this.sources.delete(peerId);
    this.tenants.delete(tenant);
  }

  /** The workload (local or remote) of this tenant with this name, if any. */
  workloadOf(tenant: string, workload: string): { local: boolean; address: string } | undefined {
    const d = this.tenants.get(tenant)?.byName.get(workload);
    return d === undefined ? undefined : { local: d.ref.local, address: d.address.text };
  }

  /** The workload of this tenant that has this address, if any. */
  addressOwner(tenant: string, address: HostAddress): { workload: string; local: boolean } | undefined {
    const t = this.tenants.get(tenant);
    if (t === undefined) return undefined;
    for (const d of t.byName.values())
      if (Buffer.from(d.address.bytes).equals(Buffer.from(address.bytes)))
        return { workload: d.ref.workload, local: d.ref.local };
    return undefined;
  }

  /** A local workload: its vSwitch session `peerId` carries packets from and to `address`. */
  addLocalWorkload(tenant: string, workload: string, peerId: number, address: HostAddress): void {
    const t = this.tableOrThrow(tenant);
    if (t.byName.has(workload))
      throw new TgError('TG_ERR_CONFLICT', `workload '${workload}' exists in '${tenant}'`);
    if (this.sources.has(peerId)) throw new TgError('TG_ERR_CONFLICT', `session ${peerId} is in use`);
    const ref: WorkloadRef = Object.freeze({ tenant, workload, local: true });
    const d = new Destination(ref, peerId, address);
    t.routes.insert(hostPrefix(address), d);
    t.byName.set(workload, d);
    this.sources.set(peerId, new Source(t, ref, peerId));
  }

  removeLocalWorkload(tenant: string, workload: string): void {
    const t = this.tenants.get(tenant);
    const d = t?.byName.get(workload);
    if (t === undefined || d === undefined || !d.ref.local) return;
    t.routes.removeByPeer(d);
    t.byName.delete(workload);
    this.sources.delete(d.peerId);
  }

  /**
   * The remote workloads of a tenant behind the remote NIC whose off-host session is `peerId`,
   * replacing what that session had.
   */
  setRemoteNic(
    tenant: string,
    peerId: number,
    workloads: readonly { workload: string; address: HostAddress }[],
  ): void {
    const t = this.tableOrThrow(tenant);
    this.removeRemoteNic(tenant, peerId);
    this.sources.set(peerId, new Source(t, null, peerId));
    for (const w of workloads) {
      const ref: WorkloadRef = Object.freeze({ tenant, workload: w.workload, local: false });
      const d = new Destination(ref, peerId, w.address);
      t.routes.insert(hostPrefix(w.address), d);
      t.byName.set(w.workload, d);
    }
  }

  removeRemoteNic(tenant: string, peerId: number): void {
    const t = this.tenants.get(tenant);
    if (t === undefined) return;
    for (const [name, d] of [...t.byName]) {
      if (d.ref.local || d.peerId !== peerId) continue;
      t.routes.removeByPeer(d);
      t.byName.delete(name);
    }
    const s = this.sources.get(peerId);
    if (s !== undefined && s.tenant === t) this.sources.delete(peerId);
  }

  // ------------------------------------------------------------------------------------
  // Data path

  /**
   * Decides every packet of `tun` and copies the ones to forward into the output batch (16
   * bytes of headroom in front of each, room for padding and the tag behind). The result is
   * valid until the next call.
   */
  forward(tun: TunBatch, now: number = Date.now()): ForwardBatch {
    const out = this.out;
    const engine = this.engine;
    const n = tun.count;
    if (n > this.capacity) this.grow(n);
    const slab = this.slab;
    const { buf, offsets, lengths, peerIds } = tun;
    const dropped = this.counters.dropped;
    const view = this.view;
    view.buf = buf;
    let k = 0;
    let lastPeer = -1;
    let src: Source | undefined;
    for (let i = 0; i < n; i++) {
      const off = offsets[i];
      const len = lengths[i];
      const peerId = peerIds[i];
      if (peerId !== lastPeer) {
        src = this.sources.get(peerId);
        lastPeer = peerId;
      }
      if (src === undefined) {
        dropped.noSource++;
        continue;
      }
      const table = src.tenant.routes;
      const version = buf[off] >> 4;
      let dst: Destination | null;
      let fromAddr: Destination | null = null;
      if (version === 4 && len >= IPV4_HEADER) {
        dst = table.lookup4(buf.readUInt32BE(off + 16));
        if (src.workload === null && dst !== null) fromAddr = table.lookup4(buf.readUInt32BE(off + 12));
      } else if (version === 6 && len >= IPV6_HEADER) {
        dst = table.lookup6At(buf, off + 24);
        if (src.workload === null && dst !== null) fromAddr = table.lookup6At(buf, off + 8);
      } else {
        dropped.malformed++;
        continue;
      }
      if (dst === null) {
        dropped.noRoute++;
        continue;
      }
      let from: WorkloadRef;
      if (src.workload !== null) from = src.workload;
      else {
        if (!dst.ref.local) {
          dropped.transit++;
          continue;
        }
        if (fromAddr === null || fromAddr.peerId !== src.peerId || fromAddr.ref.local) {
          dropped.noSource++;
          continue;
        }
        from = fromAddr.ref;
      }
      if (len > MAX_FORWARD_PACKET) {
        dropped.malformed++;
        continue;
      }
      view.offset = off;
      view.length = len;
      let allowed: boolean;
      if (engine !== null) {
        const to = dst.ref;
        allowed = engine.check(
          src.tenant.name,
          from,
          to,
          buf,
          off,
          len,
          now,
          from.local ? (to.local ? 'both' : 'egress') : 'ingress',
        ).allowed;
      } else {
        try {
          allowed = this.policy(src.tenant.name, from, dst.ref, view);
        } catch {
          allowed = false;
        }
      }
      if (!allowed) {
        dropped.policy++;
        continue;
      }
      const at = k * FORWARD_SLOT + MESSAGE_TRANSPORT_HEADER_SIZE;
      buf.copy(slab, at, off, off + len);
      out.offsets[k] = at;
      out.lengths[k] = len;
      out.peerIds[k] = dst.peerId;
      k++;
      if (!dst.ref.local) this.counters.egress++;
      else if (src.workload === null) this.counters.ingress++;
      else this.counters.local++;
    }
    view.buf = EMPTY;
    out.count = k;
    return { batch: out, peerIds: out.peerIds };
  }

  private grow(n: number): void {
    this.capacity = n;
    this.slab = Buffer.alloc(n * FORWARD_SLOT);
    this.out.buf = this.slab;
    this.out.offsets = new Uint32Array(n);
    this.out.lengths = new Uint32Array(n);
    this.out.peerIds = new Uint32Array(n);
  }

  private tableOrThrow(tenant: string): TenantTable {
    const t = this.tenants.get(tenant);
    if (t === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no tenant '${tenant}'`);
    return t;
  }
}
