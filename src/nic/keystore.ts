// The NIC's key store (DESIGN.md section 2): every long-lived secret the NIC holds, in memory
// only. It creates keys from the system CSPRNG, hands them out as borrowed Buffers, and wipes
// each one (fill(0)) the moment it is removed or replaced. Outside callers see an inventory of
// metadata only: id, kind, tenant, workload, creation and rotation times, and a fingerprint
// that names a key without revealing it.
//
// Kinds:
//   nic-identity     Ed25519 secret key: signs this NIC's published statements (tenant keys)
//   nic-seal         X25519 private key: opens NIC-to-NIC sealed transfers (sealed.ts)
//   nic-on-host      X25519 private key: the on-host responder identity all vSwitches talk to
//   tenant-off-host  X25519 private key, one per tenant present on this NIC (off-host leg)
//   workload-psk     32-byte WireGuard preshared key, one per workload (on-host leg)
//
// Every secret lives in locked memory (../native/secret-pool.ts: mlock, MADV_DONTDUMP) and
// its slot is wiped and returned when the key is removed or replaced.
//
// Session keys are not here: the protocol engine derives, rotates and wipes them (keypair.ts).
// The engine keeps its own copies of private keys and PSKs (set when a key is installed); the
// NIC agent removes them from the engine whenever it removes them here.
import { createHash, randomFillSync } from 'node:crypto';
import { ed25519 } from '@noble/curves/ed25519.js';
import { secretPool } from '../native/secret-pool.js';
import { clampPrivateKey, keyFingerprint, publicKeyOf } from '../protocol/crypto.js';
import { TgError } from '../util/errors.js';

export type KeyKind = 'nic-identity' | 'nic-seal' | 'nic-on-host' | 'tenant-off-host' | 'workload-psk';

export interface KeyMetadata {
  id: string;
  kind: KeyKind;
  tenant: string | null;
  workload: string | null;
  /** ISO 8601. */
  created: string;
  /** ISO 8601 of the last rotation; null when never rotated. */
  lastRotated: string | null;
  /** A short non-secret name: of the public key for key pairs, of a one-way hash for PSKs. */
  fingerprint: string;
}

interface Entry {
  meta: KeyMetadata;
  secret: Buffer;
  /** Public key for key pairs, null for PSKs. */
  publicKey: Buffer | null;
}

export interface KeyStoreOptions {
  /** Wall clock in ms since the epoch (tests pass a fixed clock). */
  clock?: () => number;
  /** Fills a buffer with random bytes (tests pass a deterministic source). */
  fillRandom?: (buf: Buffer) => void;
}

/** Borrowed view of a stored key: valid until the key is removed or rotated. */
export interface StoredKey {
  id: string;
  secret: Buffer;
  publicKey: Buffer | null;
}

const KEY_SIZE = 32;

/** A non-secret 8-hex-digit name for a PSK: BLAKE2s over a domain label and the key. */
export function pskFingerprint(psk: Uint8Array): string {
  const h = createHash('blake2s256').update('tenguard psk fingerprint v1').update(psk).digest();
  const out = `psk:${h.subarray(0, 4).toString('hex')}`;
  h.fill(0);
  return out;
}

export class KeyStore {
  private readonly entries = new Map<string, Entry>();
  private readonly clock: () => number;
  private readonly fillRandom: (buf: Buffer) => void;
  private nextId = 1;

  constructor(opts: KeyStoreOptions = {}) {
    this.clock = opts.clock ?? Date.now;
    this.fillRandom = opts.fillRandom ?? ((b) => randomFillSync(b));
  }

  /** The NIC's Ed25519 identity key (one per NIC; a second call is a conflict). */
  createIdentityKey(): StoredKey {
    this.requireNone('nic-identity');
    const secret = this.random();
    const publicKey = Buffer.from(ed25519.getPublicKey(secret));
    return this.add('nic-identity', null, null, secret, publicKey);
  }

  /** The NIC's X25519 key for sealed transfers (one per NIC). */
  createSealKey(): StoredKey {
    this.requireNone('nic-seal');
    return this.addX25519('nic-seal', null);
  }

  /** The NIC's on-host responder key (one per NIC). */
  createOnHostKey(): StoredKey {
    this.requireNone('nic-on-host');
    return this.addX25519('nic-on-host', null);
  }

  /** A tenant's off-host key on this NIC (one per tenant). */
  createTenantKey(tenant: string): StoredKey {
    if (this.find('tenant-off-host', tenant, null) !== undefined)
      throw new TgError('TG_ERR_CONFLICT', `tenant '${tenant}' already has an off-host key`);
    return this.addX25519('tenant-off-host', tenant);
  }

  /** A workload's PSK (one per workload). */
  createWorkloadPsk(tenant: string, workload: string): StoredKey {
    if (this.find('workload-psk', null, workload) !== undefined)
      throw new TgError('TG_ERR_CONFLICT', `workload '${workload}' already has a PSK`);
    const secret = this.random();
    return this.add('workload-psk', tenant, workload, secret, null);
  }

  /**
   * Replaces a workload's PSK with a fresh one under the same id: the old bytes are wiped
   * in place (so every borrowed view of the old key reads zeros) and a new Buffer is returned.
   */
  rotateWorkloadPsk(workload: string): StoredKey {
    const e = this.find('workload-psk', null, workload);
    if (e === undefined) throw new TgError('TG_ERR_NOT_FOUND', `workload '${workload}' has no PSK`);
    const fresh = this.random();
    secretPool().free(e.secret);
    e.secret = fresh;
    e.meta.lastRotated = new Date(this.clock()).toISOString();
    e.meta.fingerprint = pskFingerprint(fresh);
    return { id: e.meta.id, secret: e.secret, publicKey: null };
  }

  /** The stored key of this kind (and tenant / workload), or undefined. Borrowed. */
  get(kind: KeyKind, opts: { tenant?: string; workload?: string } = {}): StoredKey | undefined {
    const e = this.find(kind, opts.tenant ?? null, opts.workload ?? null);
    return e === undefined ? undefined : { id: e.meta.id, secret: e.secret, publicKey: e.publicKey };
  }

  /** Wipes and forgets a key; false when there is no key with this id. */
  remove(id: string): boolean {
    const e = this.entries.get(id);
    if (e === undefined) return false;
    secretPool().free(e.secret);
    this.entries.delete(id);
    return true;
  }

  /** Wipes and forgets every key. */
  wipeAll(): void {
    for (const e of this.entries.values()) secretPool().free(e.secret);
    this.entries.clear();
  }

  /** Metadata of every key, oldest first (copies; no key material). */
  inventory(): KeyMetadata[] {
    return [...this.entries.values()].map((e) => ({ ...e.meta }));
  }

  get size(): number {
    return this.entries.size;
  }

  private addX25519(kind: KeyKind, tenant: string | null): StoredKey {
    const secret = clampPrivateKey(this.random()) as Buffer;
    const publicKey = publicKeyOf(secret);
    return this.add(kind, tenant, null, secret, publicKey);
  }

  private add(
    kind: KeyKind,
    tenant: string | null,
    workload: string | null,
    secret: Buffer,
    publicKey: Buffer | null,
  ): StoredKey {
    const id = `k${this.nextId++}`;
    const meta: KeyMetadata = {
      id,
      kind,
      tenant,
      workload,
      created: new Date(this.clock()).toISOString(),
      lastRotated: null,
      fingerprint: publicKey === null ? pskFingerprint(secret) : keyFingerprint(publicKey),
    };
    this.entries.set(id, { meta, secret, publicKey });
    return { id, secret, publicKey };
  }

  private random(): Buffer {
    const b = secretPool().alloc(KEY_SIZE);
    this.fillRandom(b);
    return b;
  }

  private requireNone(kind: KeyKind): void {
    for (const e of this.entries.values())
      if (e.meta.kind === kind) throw new TgError('TG_ERR_CONFLICT', `a ${kind} key already exists`);
  }

  private find(kind: KeyKind, tenant: string | null, workload: string | null): Entry | undefined {
    for (const e of this.entries.values()) {
      if (e.meta.kind !== kind) continue;
      if (tenant !== null && e.meta.tenant !== tenant) continue;
      if (workload !== null && e.meta.workload !== workload) continue;
      return e;
    }
    return undefined;
  }
}
