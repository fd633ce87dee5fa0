// The NIC agent's domain logic (DESIGN.md sections 2 to 5): it owns the key store, the
// protocol engine's identities and peers, and the forwarder's tables, and keeps the three in
// step. The HTTP API (api.ts) is a thin layer over these methods; the data plane
// (dataplane.ts) moves packets through the same engine and forwarder.
//
// Engine layout:
//   on-host identity (isolatedPeers): one peer per local workload = its vSwitch, allowed IPs =
//     the workload's address only, so a forged source address is dropped by cryptokey routing,
//     and tenants may use the same addresses (each peer's prefixes are its own);
//   one off-host identity per tenant present here: one peer per remote NIC holding the tenant,
//     allowed IPs = the tenant's workload addresses on that NIC.
//
// Firewall (DESIGN.md section 6): one PolicyEngine per NIC (src/policy), one conntrack zone
// per tenant, default deny for a tenant without a policy document. Its workload directory
// holds every workload this NIC may see traffic of, with labels: the local ones, the remote
// ones of each tenant's peers, and the other tenants' workloads imported by grants. It is
// rebuilt from these after every change (syncDirectory); a change bumps its generation and
// the engine re-decides an existing connection on its next packet.
//
// Every method validates everything before it changes anything: a refused request (TgError)
// leaves keys, engine and tables as they were.

import type { Identity } from '../identity/identity.js';
import { secretPool } from '../native/secret-pool.js';
import { encodeEndpoint } from '../net/endpoint.js';
import { parseEndpoint } from '../net/ip.js';
import { WorkloadDirectory } from '../policy/directory.js';
import { type EngineOptions, PolicyEngine } from '../policy/engine.js';
import { FlowLog, type FlowLogOptions, type FlowQuery, type FlowRecord } from '../policy/flowlog.js';
import { labelsSchema, type PolicyDocument } from '../policy/model.js';
import { type PolicyAccepted, PolicyStore } from '../policy/store.js';
import type { TransportAead } from '../protocol/aead.js';
import type { IpPrefix } from '../protocol/allowedips.js';
import { dh, generatePrivateKey, isZero, keyFingerprint } from '../protocol/crypto.js';
import { Engine } from '../protocol/engine.js';
import { TgError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { type HostAddress, hostPrefix, parseAddress6, parseHostAddress } from './addresses.js';
import { bindIdentityKey, type CertificateBinding, type PeerTrust, verifyBinding } from './cert-binding.js';
import { Forwarder, type ImportedWorkload, type PolicyHook } from './forwarding.js';
import { NicIdentity, sealKeyStatement, tenantKeyStatement, verifySignature } from './identity.js';
import { type KeyMetadata, KeyStore } from './keystore.js';
import {
  type KnownWorkload,
  type TenantNetworkInput,
  type TenantNetworkState,
  TenantNetworks,
} from './network.js';
import { type PskBox, sealPsk } from './psk-box.js';

export interface NicAgentOptions {
  /** The on-host endpoint vSwitches reach the NIC at ('198.19.1.2:51820'). */
  hostEndpoint: string;
  /** The fabric endpoint other NICs reach this one at; part of every signed tenant key. */
  fabricEndpoint: string;
  aead: TransportAead;
  log: Logger;
  /** Engine clock (ms, monotonic). */
  now: () => number;
  /** Wall clock for key metadata. */
  clock?: () => number;
  /** Replaces the policy engine by a stateless hook (tests only): no default deny then. */
  policy?: PolicyHook;
  /** Conntrack bounds and timeouts of the policy engine. */
  firewall?: EngineOptions;
  /** Flow log: memory ring always; a JSON-lines file with rotation when `path` is given. */
  flowLog?: FlowLogOptions;
  /** The engine's MTU (transport padding never grows a packet past it): the legs' tenant MTU. */
  mtu?: number;
}

export type Labels = Record<string, string>;

export interface RegisterWorkloadRequest {
  tenant: string;
  workload: string;
  address: string;
  /** The IPv6 address of a dual-stack workload (then `address` is its IPv4 one). */
  address6?: string;
  /** base64 */
  vswitchPublicKey: string;
  /** The workload's labels, which policy rules select on. */
  labels?: Labels;
  /**
   * Replace the workload's registration if it has one in the same tenant (its vSwitch
   * instance was made again with a new key): the old session and PSK are wiped and the
   * tenant, its off-host key and its sessions with other NICs stay, even when this is the
   * tenant's only workload here (removing and registering again would make a new tenant key
   * that every other NIC must learn before traffic passes).
   */
  replace?: boolean;
}

export interface WorkloadCrypto {
  tenant: string;
  workload: string;
  address: string;
  address6?: string;
  /** The NIC's on-host public key, base64. */
  nicPublicKey: string;
  /**
   * The workload's PSK sealed to its vSwitch instance's public key (psk-box.ts): only that
   * instance opens it; whoever relays it (the orchestrator) sees ciphertext only.
   */
  sealedPsk: PskBox;
  nicEndpoint: string;
}

export interface SignedTenantKey {
  tenant: string;
  /** The tenant's off-host public key on this NIC, base64. */
  publicKey: string;
  /** This NIC's fabric endpoint. */
  endpoint: string;
  /** This NIC's identity key (Ed25519), base64. */
  nicIdentityKey: string;
  /** Ed25519 over tenantKeyStatement(tenant, publicKey, endpoint), base64. */
  signature: string;
  /** Under mTLS: the NIC's certificate chain and its binding of nicIdentityKey (cert-binding.ts). */
  nicCertificate?: string;
  identityBinding?: string;
}

export interface TenantPeer extends SignedTenantKey {
  workloads: { workload: string; address: string; address6?: string; labels?: Labels }[];
}

export interface RemoteWorkloadInput {
  workload: string;
  address: string;
  address6?: string;
  labels?: Labels;
}

/** A workload of another tenant that a tenant's workloads may exchange traffic with (api.ts). */
export interface GrantWorkloadInput {
  tenant: string;
  workload: string;
  address: string;
  address6?: string;
  labels?: Labels;
  /** Identity key (base64) of the NIC it sits behind; absent or this NIC's own: on this host. */
  nicIdentityKey?: string;
}

interface GrantWorkload {
  tenant: string;
  workload: string;
  address: HostAddress;
  address6: HostAddress | null;
  labels: Labels;
  /** null: on this host. */
  nic: Buffer | null;
}

export interface TenantPeerInput {
  nicIdentityKey: string;
  endpoint: string;
  publicKey: string;
  signature: string;
  nicCertificate?: string;
  identityBinding?: string;
  workloads: RemoteWorkloadInput[];
}

interface LocalWorkload {
  tenant: string;
  workload: string;
  address: HostAddress;
  address6: HostAddress | null;
  vswitchPublicKey: Buffer;
  peerId: number;
  pskId: string;
  created: string;
  labels: Labels;
}

interface RemoteNic {
  nicIdentityKey: Buffer;
  publicKey: Buffer;
  endpoint: string;
  peerId: number;
  workloads: { workload: string; address: HostAddress; address6: HostAddress | null; labels: Labels }[];
}

interface Tenant {
  name: string;
  identityId: number;
  keyId: string;
  publicKey: Buffer;
  workloads: Set<string>;
  /** Remote NICs by the hex of their tenant public key. */
  remotes: Map<string, RemoteNic>;
}

function decodeKey(text: string, what: string): Buffer {
  const b = Buffer.from(text, 'base64');
  if (b.length !== 32 || b.toString('base64') !== text)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `${what} must be 32 bytes in base64`);
  if (isZero(b)) throw new TgError('TG_ERR_INVALID_ARGUMENT', `${what} must not be all zero`);
  return b;
}

function parseLabels(labels: Labels | undefined, what: string): Labels {
  if (labels === undefined) return {};
  const r = labelsSchema.safeParse(labels);
  if (!r.success)
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `${what}: ${r.error.issues.map((i) => `${i.path.join('.') || '(labels)'}: ${i.message}`).join('; ')}`,
    );
  return { ...r.data };
}

/** The host prefixes of a workload's addresses (one, or two for dual stack). */
function prefixesOf(w: { address: HostAddress; address6: HostAddress | null }): IpPrefix[] {
  return w.address6 === null ? [hostPrefix(w.address)] : [hostPrefix(w.address), hostPrefix(w.address6)];
}

/** `address6` in API answers: present only for a dual-stack workload. */
function address6Field(a: HostAddress | null): { address6?: string } {
  return a === null ? {} : { address6: a.text };
}

function decodeSignature(text: string): Buffer {
  const b = Buffer.from(text, 'base64');
  if (b.length !== 64 || b.toString('base64') !== text)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'a signature must be 64 bytes in base64');
  return b;
}

export class NicAgent {
  readonly engine: Engine;
  readonly forwarder = new Forwarder();
  readonly keys: KeyStore;
  readonly identity: NicIdentity;
  readonly onHostIdentityId: number;
  readonly startedAt = Date.now();
  readonly directory = new WorkloadDirectory();
  readonly policies: PolicyStore;
  readonly flowLog: FlowLog;
  readonly firewall: PolicyEngine;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly hostEndpoint: string;
  private readonly fabricEndpoint: string;
  private readonly onHostPublicKey: Buffer;
  private readonly sealKey: Buffer;
  private readonly sealKeySignature: Buffer;
  private readonly workloads = new Map<string, LocalWorkload>();
  private readonly tenants = new Map<string, Tenant>();
  private closed = false;
  private binding: CertificateBinding | undefined;
  private peerTrust: PeerTrust | undefined;
  /** Grant imports per tenant, kept while the tenant comes and goes (public data). */
  private readonly grants = new Map<string, GrantWorkload[]>();
  /** Foreign addresses added to off-host peers' allowed IPs for grants, per engine peer. */
  private grantIps = new Map<number, IpPrefix[]>();
  /** Directory entries this agent put there, as "tenant/workload". */
  private directoryKeys = new Set<string>();
  /** Each tenant's DNS server and services (network.ts), kept while the tenant comes and goes. */
  private readonly networks = new TenantNetworks();

  constructor(opts: NicAgentOptions) {
    if (parseEndpoint(opts.hostEndpoint) === null || parseEndpoint(opts.fabricEndpoint) === null)
      throw new TgError('TG_ERR_INVALID_ARGUMENT', 'the NIC endpoints must be numeric address:port');
    this.log = opts.log;
    this.now = opts.now;
    this.hostEndpoint = parseEndpoint(opts.hostEndpoint)!.text;
    this.fabricEndpoint = parseEndpoint(opts.fabricEndpoint)!.text;
    this.keys = new KeyStore({ clock: opts.clock });
    this.engine = new Engine({
      aead: opts.aead,
      mtu: opts.mtu,
      log: opts.log.child({ component: 'nic-engine' }),
      secrets: secretPool(),
    });
    this.policies = new PolicyStore(this.directory);
    this.flowLog = new FlowLog(opts.flowLog);
    this.firewall = new PolicyEngine({
      directory: this.directory,
      store: this.policies,
      flowLog: this.flowLog,
      options: opts.firewall,
    });
    if (opts.policy) this.forwarder.policy = opts.policy;
    else this.forwarder.attachEngine(this.firewall);
    const id = this.keys.createIdentityKey();
    this.identity = new NicIdentity(id.secret, id.publicKey as Buffer);
    const seal = this.keys.createSealKey();
    this.sealKey = seal.publicKey as Buffer;
    this.sealKeySignature = this.identity.sign(sealKeyStatement(this.sealKey));
    const onHost = this.keys.createOnHostKey();
    this.onHostPublicKey = onHost.publicKey as Buffer;
    this.onHostIdentityId = this.engine.addIdentity(onHost.secret, { isolatedPeers: true });
    this.log.info(
      {
        identity: keyFingerprint(this.identity.publicKey),
        onHost: keyFingerprint(this.onHostPublicKey),
        hostEndpoint: this.hostEndpoint,
        fabricEndpoint: this.fabricEndpoint,
      },
      'NIC agent keys created',
    );
  }

  // ------------------------------------------------------------------------------------
  // Workloads (on-host leg)

  registerWorkload(req: RegisterWorkloadRequest): WorkloadCrypto {
    this.checkOpen();
    const vsKey = decodeKey(req.vswitchPublicKey, 'vswitchPublicKey');
    const address = parseHostAddress(req.address);
    const address6 = parseAddress6(address, req.address6);
    const labels = parseLabels(req.labels, 'labels');
    const replaced = this.workloads.get(req.workload);
    if (replaced !== undefined && (req.replace !== true || replaced.tenant !== req.tenant))
      throw new TgError(
        'TG_ERR_CONFLICT',
        replaced.tenant !== req.tenant
          ? `workload '${req.workload}' is already registered in tenant '${replaced.tenant}'`
          : `workload '${req.workload}' is already registered`,
      );
    if (vsKey.equals(this.onHostPublicKey))
      throw new TgError('TG_ERR_INVALID_ARGUMENT', "vswitchPublicKey is the NIC's own key");
    if (this.engine.findPeer(this.onHostIdentityId, vsKey) !== undefined)
      throw new TgError('TG_ERR_CONFLICT', 'vswitchPublicKey belongs to another workload');
    // A low-order point gives an all-zero DH with any (clamped) private key: probe with a
    // throwaway one rather than make another copy of the on-host key.
    const probe = generatePrivateKey();
    const shared = dh(probe, vsKey);
    probe.fill(0);
    if (shared === null)
      throw new TgError('TG_ERR_INVALID_ARGUMENT', 'vswitchPublicKey is not a usable X25519 key');
    shared.fill(0);
    if (this.networks.addresses(req.tenant).has(address.text))
      throw new TgError(
        'TG_ERR_CONFLICT',
        `address ${address.text} is a service or DNS server address of tenant '${req.tenant}'`,
      );
    const existing = this.tenants.get(req.tenant);
    if (existing !== undefined) {
      const remote = this.forwarder.workloadOf(req.tenant, req.workload);
      if (remote !== undefined && !(remote.local && replaced !== undefined))
        throw new TgError('TG_ERR_CONFLICT', `workload '${req.workload}' already exists behind another NIC`);
      for (const a of address6 === null ? [address] : [address, address6]) {
        const owner = this.forwarder.addressOwner(req.tenant, a);
        if (owner !== undefined && owner.workload !== replaced?.workload)
          throw new TgError(
            'TG_ERR_CONFLICT',
            `address ${a.text} is taken by workload '${owner.workload}' in tenant '${req.tenant}'`,
          );
      }
    }

    // The old registration goes (session and PSK wiped), its tenant stays.
    if (replaced !== undefined) this.dropWorkload(replaced);
    const tenant = existing ?? this.createTenant(req.tenant);
    const psk = this.keys.createWorkloadPsk(req.tenant, req.workload);
    let peerId: number;
    try {
      peerId = this.engine.addPeer(
        this.onHostIdentityId,
        { publicKey: vsKey, presharedKey: psk.secret, allowedIps: prefixesOf({ address, address6 }) },
        this.now(),
      );
      this.forwarder.addLocalWorkload(req.tenant, req.workload, peerId, address, address6);
    } catch (err) {
      this.keys.remove(psk.id);
      if (existing === undefined || tenant.workloads.size === 0) this.destroyTenant(tenant);
      if (replaced !== undefined) this.tablesChanged();
      throw err;
    }
    const w: LocalWorkload = {
      tenant: req.tenant,
      workload: req.workload,
      address,
      address6,
      vswitchPublicKey: vsKey,
      peerId,
      pskId: psk.id,
      created: new Date().toISOString(),
      labels,
    };
    this.workloads.set(req.workload, w);
    tenant.workloads.add(req.workload);
    this.tablesChanged();
    this.log.info(
      {
        tenant: req.tenant,
        workload: req.workload,
        address: address.text,
        ...address6Field(address6),
        vswitch: keyFingerprint(vsKey),
      },
      'workload registered',
    );
    return {
      tenant: req.tenant,
      workload: req.workload,
      address: address.text,
      ...address6Field(address6),
      nicPublicKey: this.onHostPublicKey.toString('base64'),
      sealedPsk: sealPsk(psk.secret, {
        workload: req.workload,
        instanceKey: vsKey,
        nicPublicKey: this.onHostPublicKey,
      }),
      nicEndpoint: this.hostEndpoint,
    };
  }

  /** Forgets a workload's registration (session and PSK wiped); its tenant is the caller's. */
  private dropWorkload(w: LocalWorkload): void {
    this.forwarder.removeLocalWorkload(w.tenant, w.workload);
    this.engine.removePeer(w.peerId);
    this.keys.remove(w.pskId);
    this.workloads.delete(w.workload);
    this.tenants.get(w.tenant)?.workloads.delete(w.workload);
  }

  /** Removes a workload: its session and PSK are wiped at once; a tenant's last one takes the tenant along. */
  removeWorkload(workload: string): { workload: string; tenantRemoved: boolean } {
    this.checkOpen();
    const w = this.workloadOrThrow(workload);
    const tenant = this.tenants.get(w.tenant)!;
    this.dropWorkload(w);
    const tenantRemoved = tenant.workloads.size === 0;
    if (tenantRemoved) this.destroyTenant(tenant);
    this.tablesChanged();
    this.log.info({ tenant: w.tenant, workload, tenantRemoved }, 'workload removed');
    return { workload, tenantRemoved };
  }

  /**
   * A new PSK for a workload. The current session keeps working (a PSK only enters the next
   * handshake); the next handshake needs the new PSK on the vSwitch too.
   */
  rotatePsk(workload: string): { workload: string; sealedPsk: PskBox } {
    this.checkOpen();
    const w = this.workloadOrThrow(workload);
    const psk = this.keys.rotateWorkloadPsk(workload);
    this.engine.updatePeer(w.peerId, { presharedKey: psk.secret }, this.now());
    this.log.info({ tenant: w.tenant, workload }, 'workload PSK rotated');
    return {
      workload,
      sealedPsk: sealPsk(psk.secret, {
        workload,
        instanceKey: w.vswitchPublicKey,
        nicPublicKey: this.onHostPublicKey,
      }),
    };
  }

  listWorkloads(): unknown[] {
    return [...this.workloads.values()].map((w) => {
      const info = this.engine.peerInfo(w.peerId);
      const session = this.engine.sessionInfo(w.peerId);
      return {
        tenant: w.tenant,
        workload: w.workload,
        address: w.address.text,
        ...address6Field(w.address6),
        labels: w.labels,
        vswitchPublicKey: w.vswitchPublicKey.toString('base64'),
        created: w.created,
        session: session.hasCurrent,
        lastHandshake: info.lastHandshakeWallMs > 0 ? new Date(info.lastHandshakeWallMs).toISOString() : null,
        rxBytes: info.rxBytes,
        txBytes: info.txBytes,
      };
    });
  }

  inventory(): KeyMetadata[] {
    return this.keys.inventory();
  }

  // ------------------------------------------------------------------------------------
  // Tenants (off-host leg)

  tenantKey(tenant: string): SignedTenantKey {
    const t = this.tenantOrThrow(tenant);
    const signature = this.identity.sign(tenantKeyStatement(tenant, t.publicKey, this.fabricEndpoint));
    return {
      tenant,
      publicKey: t.publicKey.toString('base64'),
      endpoint: this.fabricEndpoint,
      nicIdentityKey: this.identity.publicKey.toString('base64'),
      signature: signature.toString('base64'),
      ...this.binding,
    };
  }

  // ------------------------------------------------------------------------------------
  // Certificate identity (mTLS)

  /**
   * Takes up this NIC's X.509-SVID (at start and at every renewal): its identity key is bound
   * to the certificate and the binding published with every tenant key from now on.
   */
  setCertificate(identity: Identity): void {
    this.binding = bindIdentityKey(identity, this.identity.publicKey);
  }

  /**
   * From now on a tenant peer is accepted only with a certificate chaining to `trust.bundle`,
   * naming a NIC, not revoked, that binds the peer's identity key.
   */
  setPeerTrust(trust: PeerTrust): void {
    this.peerTrust = trust;
  }

  /**
   * Replaces the remote NICs of a tenant. Every peer's signature is verified and every address
   * checked before anything changes.
   */
  setTenantPeers(tenant: string, peers: readonly TenantPeerInput[]): { tenant: string; peers: number } {
    this.checkOpen();
    const t = this.tenantOrThrow(tenant);
    const next: RemoteNic[] = [];
    const keys = new Set<string>();
    const names = new Set<string>();
    const addrs = new Set<string>();
    for (const [i, p] of peers.entries()) {
      const nicIdentityKey = decodeKey(p.nicIdentityKey, `peers.${i}.nicIdentityKey`);
      const publicKey = decodeKey(p.publicKey, `peers.${i}.publicKey`);
      const signature = decodeSignature(p.signature);
      const ep = parseEndpoint(p.endpoint);
      if (ep === null || ep.host.includes('%'))
        throw new TgError(
          'TG_ERR_INVALID_ARGUMENT',
          `peers.${i}.endpoint '${p.endpoint.slice(0, 64)}' is not address:port`,
        );
      if (this.peerTrust !== undefined) verifyBinding(p, nicIdentityKey, this.peerTrust, `peers.${i}`);
      if (!verifySignature(nicIdentityKey, tenantKeyStatement(tenant, publicKey, ep.text), signature))
        throw new TgError(
          'TG_ERR_BAD_SIGNATURE',
          `peers.${i}: the tenant key is not signed by that NIC identity for tenant '${tenant}' at ${ep.text}`,
        );
      if (nicIdentityKey.equals(this.identity.publicKey))
        throw new TgError('TG_ERR_INVALID_ARGUMENT', `peers.${i} is this NIC itself`);
      if (publicKey.equals(t.publicKey))
        throw new TgError('TG_ERR_INVALID_ARGUMENT', `peers.${i}.publicKey is this NIC's own tenant key`);
      const hex = publicKey.toString('hex');
      if (keys.has(hex)) throw new TgError('TG_ERR_INVALID_ARGUMENT', `peers.${i}.publicKey appears twice`);
      keys.add(hex);
      const workloads: RemoteNic['workloads'] = [];
      for (const [j, w] of p.workloads.entries()) {
        const address = parseHostAddress(w.address, `peers.${i}.workloads.${j}.address`);
        const address6 = parseAddress6(address, w.address6, `peers.${i}.workloads.${j}.address6`);
        const both = address6 === null ? [address] : [address, address6];
        if (names.has(w.workload) || both.some((a) => addrs.has(a.text)))
          throw new TgError(
            'TG_ERR_INVALID_ARGUMENT',
            `peers.${i}.workloads.${j} repeats a workload or address`,
          );
        const local = this.workloads.get(w.workload);
        if (local !== undefined)
          throw new TgError('TG_ERR_CONFLICT', `remote workload '${w.workload}' is registered on this NIC`);
        for (const a of both) {
          const owner = this.forwarder.addressOwner(tenant, a);
          if (owner?.local)
            throw new TgError(
              'TG_ERR_CONFLICT',
              `remote address ${a.text} is taken by local workload '${owner.workload}'`,
            );
        }
        const labels = parseLabels(w.labels, `peers.${i}.workloads.${j}.labels`);
        names.add(w.workload);
        for (const a of both) addrs.add(a.text);
        workloads.push({ workload: w.workload, address, address6, labels });
      }
      next.push({ nicIdentityKey, publicKey, endpoint: ep.text, peerId: 0, workloads });
    }

    // Apply: drop NICs no longer listed, clear the prefixes of those kept, then (re)install.
    const now = this.now();
    const keep = new Map<string, RemoteNic>();
    for (const [hex, r] of t.remotes) {
      this.forwarder.removeRemoteNic(tenant, r.peerId);
      if (keys.has(hex)) {
        this.engine.updatePeer(r.peerId, { replaceAllowedIps: true }, now);
        keep.set(hex, r);
      } else {
        this.engine.removePeer(r.peerId);
      }
    }
    t.remotes.clear();
    for (const r of next) {
      const hex = r.publicKey.toString('hex');
      const old = keep.get(hex);
      const endpoint = encodeEndpoint(r.endpoint);
      const allowedIps = r.workloads.flatMap(prefixesOf);
      if (old !== undefined) {
        r.peerId = old.peerId;
        this.engine.updatePeer(r.peerId, { endpoint, addAllowedIps: allowedIps }, now);
      } else {
        r.peerId = this.engine.addPeer(t.identityId, { publicKey: r.publicKey, endpoint, allowedIps }, now);
      }
      this.forwarder.setRemoteNic(
        tenant,
        r.peerId,
        r.workloads.map((w) => ({
          workload: w.workload,
          address: w.address,
          ...(w.address6 !== null ? { address6: w.address6 } : {}),
        })),
      );
      t.remotes.set(hex, r);
    }
    this.tablesChanged();
    this.log.info({ tenant, peers: next.length }, 'tenant peers set');
    return { tenant, peers: next.length };
  }

  listTenants(): unknown[] {
    return [...this.tenants.values()].map((t) => ({
      tenant: t.name,
      publicKey: t.publicKey.toString('base64'),
      workloads: [...t.workloads],
      peers: [...t.remotes.values()].map((r) => {
        const info = this.engine.peerInfo(r.peerId);
        return {
          nicIdentityKey: r.nicIdentityKey.toString('base64'),
          publicKey: r.publicKey.toString('base64'),
          endpoint: r.endpoint,
          workloads: r.workloads.map((w) => ({
            workload: w.workload,
            address: w.address.text,
            ...address6Field(w.address6),
            labels: w.labels,
          })),
          session: this.engine.sessionInfo(r.peerId).hasCurrent,
          lastHandshake:
            info.lastHandshakeWallMs > 0 ? new Date(info.lastHandshakeWallMs).toISOString() : null,
          rxBytes: info.rxBytes,
          txBytes: info.txBytes,
        };
      }),
    }));
  }

  // ------------------------------------------------------------------------------------
  // Cross-tenant grants (routing; whether a connection may open is the policies' business)

  /**
   * Replaces the other tenants' workloads that `tenant`'s workloads may exchange traffic with
   * (see api.ts for the contract). Checked in full before anything changes.
   */
  setGrants(
    tenant: string,
    workloads: readonly GrantWorkloadInput[],
  ): { tenant: string; workloads: number; routed: number } {
    this.checkOpen();
    const next: GrantWorkload[] = [];
    const seen = new Set<string>();
    const addrs = new Set<string>();
    for (const [i, g] of workloads.entries()) {
      if (g.tenant === tenant)
        throw new TgError(
          'TG_ERR_INVALID_ARGUMENT',
          `workloads.${i}: '${g.workload}' is of tenant '${tenant}' itself; grants name other tenants' workloads`,
        );
      const address = parseHostAddress(g.address, `workloads.${i}.address`);
      const address6 = parseAddress6(address, g.address6, `workloads.${i}.address6`);
      const both = address6 === null ? [address] : [address, address6];
      const key = `${g.tenant}/${g.workload}`;
      if (seen.has(key) || both.some((a) => addrs.has(a.text)))
        throw new TgError('TG_ERR_INVALID_ARGUMENT', `workloads.${i} repeats a workload or an address`);
      for (const a of both) {
        const owner = this.forwarder.addressOwner(tenant, a);
        if (owner !== undefined)
          throw new TgError(
            'TG_ERR_CONFLICT',
            `workloads.${i}: address ${a.text} is workload '${owner.workload}' of tenant '${tenant}' itself`,
          );
      }
      let nic: Buffer | null = null;
      if (g.nicIdentityKey !== undefined) {
        nic = decodeKey(g.nicIdentityKey, `workloads.${i}.nicIdentityKey`);
        if (nic.equals(this.identity.publicKey)) nic = null;
      }
      seen.add(key);
      for (const a of both) addrs.add(a.text);
      next.push({
        tenant: g.tenant,
        workload: g.workload,
        address,
        address6,
        labels: parseLabels(g.labels, `workloads.${i}.labels`),
        nic,
      });
    }
    if (next.length === 0) this.grants.delete(tenant);
    else this.grants.set(tenant, next);
    this.tablesChanged();
    const routed = this.tenants.has(tenant) ? this.forwarder.importsOf(tenant).length : 0;
    this.log.info({ tenant, workloads: next.length, routed }, 'tenant grants set');
    return { tenant, workloads: next.length, routed };
  }

  /** The grant imports of a tenant as given, with whether each is routed now. */
  listGrants(tenant: string): { workloads: (GrantWorkloadInput & { routed: boolean })[] } {
    const routed = new Set(this.forwarder.importsOf(tenant).map((i) => `${i.tenant}/${i.workload}`));
    return {
      workloads: (this.grants.get(tenant) ?? []).map((g) => ({
        tenant: g.tenant,
        workload: g.workload,
        address: g.address.text,
        ...address6Field(g.address6),
        labels: g.labels,
        ...(g.nic === null ? {} : { nicIdentityKey: g.nic.toString('base64') }),
        routed: routed.has(`${g.tenant}/${g.workload}`),
      })),
    };
  }

  // ------------------------------------------------------------------------------------
  // Tenant network: DNS server and services (network.ts)

  /** Replaces a tenant's DNS server address and services; endpoints follow its workloads. */
  setTenantNetwork(
    tenant: string,
    input: TenantNetworkInput,
  ): { tenant: string; services: number; dns: string | null } {
    this.checkOpen();
    const r = this.networks.set(tenant, input);
    const t = this.tenants.get(tenant);
    try {
      if (t !== undefined) this.networks.apply(this.forwarder, tenant, this.knownWorkloads(t));
    } catch (err) {
      this.networks.set(tenant, { services: [] });
      if (t !== undefined) this.networks.apply(this.forwarder, tenant, this.knownWorkloads(t));
      throw err;
    }
    this.log.info({ tenant, services: r.services, dns: r.dns }, 'tenant network set');
    return r;
  }

  /** A tenant's network as set, with endpoints and counters. */
  getTenantNetwork(tenant: string): TenantNetworkState {
    return this.networks.describe(tenant, this.forwarder);
  }

  /** Every workload of a tenant this NIC knows (its own and its peers'), with labels. */
  private knownWorkloads(t: Tenant): KnownWorkload[] {
    const out: KnownWorkload[] = [];
    for (const name of t.workloads) {
      const w = this.workloads.get(name);
      if (w !== undefined)
        out.push({ workload: w.workload, address: w.address, address6: w.address6, labels: w.labels });
    }
    for (const r of t.remotes.values()) for (const w of r.workloads) out.push(w);
    return out;
  }

  // ------------------------------------------------------------------------------------
  // Policy and flows

  /** Validates, compiles and tests a tenant's policy document; replaces the old one only if all holds. */
  setPolicy(tenant: string, doc: unknown): PolicyAccepted {
    this.checkOpen();
    return this.policies.replace(doc, tenant);
  }

  /** The document in force for a tenant. */
  getPolicy(tenant: string): PolicyDocument {
    const d = this.policies.document(tenant);
    if (d === undefined)
      throw new TgError('TG_ERR_NOT_FOUND', `no policy for tenant '${tenant}' (default deny)`);
    return d;
  }

  /** Drops a tenant's policy: its workloads are default deny again. */
  removePolicy(tenant: string): { tenant: string; removed: boolean } {
    this.checkOpen();
    return { tenant, removed: this.policies.remove(tenant) };
  }

  /**
   * Flow records matching `q`, newest first: open connections (kind "active", their decision
   * so far) and the flow log's records of ended ones and interim ones.
   */
  flows(q: FlowQuery = {}): FlowRecord[] {
    const limit = q.limit ?? 100;
    const now = Date.now();
    const all = [...this.firewall.snapshot({ ...q, limit }, now), ...this.flowLog.query({ ...q, limit })];
    all.sort((a, b) => b.endMs - a.endMs);
    return all.slice(0, limit);
  }

  // ------------------------------------------------------------------------------------
  // Identity and health

  /** This NIC's public identity: identity key, seal key (signed), on-host key, endpoints. */
  publicIdentity(): {
    identityKey: string;
    sealKey: string;
    sealKeySignature: string;
    onHostPublicKey: string;
    hostEndpoint: string;
    fabricEndpoint: string;
    nicCertificate?: string;
    identityBinding?: string;
  } {
    return {
      identityKey: this.identity.publicKey.toString('base64'),
      sealKey: this.sealKey.toString('base64'),
      sealKeySignature: this.sealKeySignature.toString('base64'),
      onHostPublicKey: this.onHostPublicKey.toString('base64'),
      hostEndpoint: this.hostEndpoint,
      fabricEndpoint: this.fabricEndpoint,
      ...this.binding,
    };
  }

  /** The seal private key, borrowed (for opening sealed transfers). */
  sealPrivateKey(): Buffer {
    return this.keys.get('nic-seal')!.secret;
  }

  counts(): { tenants: number; workloads: number; remotePeers: number } {
    let remotePeers = 0;
    for (const t of this.tenants.values()) remotePeers += t.remotes.size;
    return { tenants: this.tenants.size, workloads: this.workloads.size, remotePeers };
  }

  /** Wipes every key (engine identities and the key store). The agent is unusable afterwards. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of [...this.tenants.values()]) this.destroyTenant(t);
    this.flowLog.close();
    try {
      this.engine.removeIdentity(this.onHostIdentityId);
    } catch {
      // already gone
    }
    this.workloads.clear();
    this.keys.wipeAll();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  // ------------------------------------------------------------------------------------

  private createTenant(name: string): Tenant {
    const key = this.keys.createTenantKey(name);
    let identityId: number;
    try {
      identityId = this.engine.addIdentity(key.secret);
      this.forwarder.addTenant(name);
    } catch (err) {
      this.keys.remove(key.id);
      throw err;
    }
    const t: Tenant = {
      name,
      identityId,
      keyId: key.id,
      publicKey: Buffer.from(key.publicKey as Buffer),
      workloads: new Set(),
      remotes: new Map(),
    };
    this.tenants.set(name, t);
    this.log.info({ tenant: name, offHost: keyFingerprint(t.publicKey) }, 'tenant off-host key created');
    return t;
  }

  /** Wipes a tenant's off-host identity, its remote sessions and its local workloads. */
  private destroyTenant(t: Tenant): void {
    for (const name of t.workloads) {
      const w = this.workloads.get(name);
      if (w === undefined) continue;
      this.engine.removePeer(w.peerId);
      this.keys.remove(w.pskId);
      this.workloads.delete(name);
    }
    this.forwarder.removeTenant(t.name);
    this.networks.forget(t.name);
    this.firewall.dropZone(t.name);
    try {
      this.engine.removeIdentity(t.identityId);
    } catch {
      // already gone
    }
    this.keys.remove(t.keyId);
    this.tenants.delete(t.name);
    this.log.info({ tenant: t.name }, 'tenant off-host key wiped');
  }

  /** After every change of workloads, peers or grants: grant routes, then the directory. */
  private tablesChanged(): void {
    this.refreshGrants();
    this.syncDirectory();
    for (const t of this.tenants.values()) {
      try {
        this.networks.apply(this.forwarder, t.name, this.knownWorkloads(t));
      } catch (err) {
        this.log.warn({ tenant: t.name, err }, 'tenant network not applied');
      }
    }
  }

  /**
   * Installs every present tenant's grant imports. A foreign workload on this host is reached
   * on its vSwitch session; one behind another NIC M on the off-host session of the carrier
   * tenant: of the two tenants, the first by name that has an off-host session between this
   * NIC and M (both NICs compute the same one). When the carrier is the importing tenant, the
   * foreign address is added to that session's allowed IPs (cryptokey routing of replies).
   */
  private refreshGrants(): void {
    const now = this.now();
    for (const [peerId, prefixes] of this.grantIps) {
      try {
        this.engine.updatePeer(peerId, { removeAllowedIps: prefixes }, now);
      } catch {
        // the peer is gone, with its allowed IPs
      }
    }
    const ips = new Map<number, IpPrefix[]>();
    for (const t of this.tenants.values()) {
      const imports: ImportedWorkload[] = [];
      for (const g of this.grants.get(t.name) ?? []) {
        if (
          this.forwarder.addressOwner(t.name, g.address) !== undefined ||
          (g.address6 !== null && this.forwarder.addressOwner(t.name, g.address6) !== undefined)
        )
          continue;
        if (g.nic === null) {
          const w = this.workloads.get(g.workload);
          if (w === undefined || w.tenant !== g.tenant) continue;
          imports.push({
            tenant: g.tenant,
            workload: g.workload,
            address: w.address,
            ...(w.address6 !== null ? { address6: w.address6 } : {}),
            local: true,
            peerId: w.peerId,
          });
          continue;
        }
        const carrier = this.carrier(t.name, g.tenant, g.nic);
        if (carrier === null) continue;
        imports.push({
          tenant: g.tenant,
          workload: g.workload,
          address: g.address,
          ...(g.address6 !== null ? { address6: g.address6 } : {}),
          local: false,
          peerId: carrier.peerId,
        });
        if (carrier.tenant === t.name) {
          const list = ips.get(carrier.peerId) ?? [];
          list.push(...prefixesOf(g));
          ips.set(carrier.peerId, list);
        }
      }
      this.forwarder.setImports(t.name, imports);
    }
    for (const [peerId, prefixes] of ips) this.engine.updatePeer(peerId, { addAllowedIps: prefixes }, now);
    this.grantIps = ips;
  }

  private carrier(a: string, b: string, nic: Buffer): { tenant: string; peerId: number } | null {
    for (const name of [a, b].sort()) {
      const t = this.tenants.get(name);
      if (t === undefined) continue;
      for (const r of t.remotes.values())
        if (r.nicIdentityKey.equals(nic)) return { tenant: name, peerId: r.peerId };
    }
    return null;
  }

  /** Makes the policy directory hold exactly the workloads this NIC knows, with their labels. */
  private syncDirectory(): void {
    const want = new Map<string, { tenant: string; name: string; labels: Labels }>();
    const put = (tenant: string, name: string, labels: Labels) => {
      const k = `${tenant}/${name}`;
      if (!want.has(k)) want.set(k, { tenant, name, labels });
    };
    for (const w of this.workloads.values()) put(w.tenant, w.workload, w.labels);
    for (const t of this.tenants.values())
      for (const r of t.remotes.values()) for (const w of r.workloads) put(t.name, w.workload, w.labels);
    for (const [tenant, list] of this.grants)
      if (this.tenants.has(tenant)) for (const g of list) put(g.tenant, g.workload, g.labels);
    for (const k of this.directoryKeys)
      if (!want.has(k)) {
        const at = k.indexOf('/');
        this.directory.remove(k.slice(0, at), k.slice(at + 1));
      }
    for (const w of want.values()) this.directory.upsert(w.tenant, w.name, w.labels);
    this.directoryKeys = new Set(want.keys());
  }

  private workloadOrThrow(workload: string): LocalWorkload {
    const w = this.workloads.get(workload);
    if (w === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no workload '${workload}' on this NIC`);
    return w;
  }

  private tenantOrThrow(tenant: string): Tenant {
    const t = this.tenants.get(tenant);
    if (t === undefined)
      throw new TgError('TG_ERR_NOT_FOUND', `no tenant '${tenant}' on this NIC (unknown tenant)`);
    return t;
  }

  private checkOpen(): void {
    if (this.closed) throw new TgError('TG_ERR_CONFLICT', 'the NIC agent is shutting down');
  }
}
