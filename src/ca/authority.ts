// The certificate authority: its generations of CA keys and certificates, issuance of
// X.509-SVIDs, the issued-certificate records, revocation and rotation. All signatures are
// made through the key store (the PKCS#11 token); nothing here ever holds a CA private key.
//
// Generations and rotation without an outage:
//   pending   an intermediate key whose certificate the external root has not signed yet
//   next      trusted (in the bundle) but not signing: relying parties learn it first
//   active    trusted and signing
//   previous  trusted, no longer signing: certificates it signed stay valid to expiry
//   retired   gone from the bundle
// `rotate prepare` makes a next generation, `rotate activate` makes it active (the old one
// becomes previous), `rotate retire` drops the previous one once its certificates expired.
import { X509Certificate as NodeX509 } from 'node:crypto';
import { normalizeSerial } from '../identity/certs.js';
import { parseSpiffeId, type SpiffeId } from '../identity/spiffe.js';
import { TrustBundle } from '../identity/trust-bundle.js';
import * as x509 from '../identity/x509.js';
import { TgError } from '../util/errors.js';
import { logger } from '../util/log.js';
import type { CaConfig } from './config.js';
import { type CaKey, type CaKeyStore, TokenKeyStore, type TokenOpenOptions } from './key-store.js';
import { RevocationList } from './revocation.js';
import {
  type CaMetadata,
  type CaStore,
  FileCaStore,
  type GenerationRecord,
  type IssuedRecord,
  type RevocationRecord,
} from './store.js';
import {
  type CaSigner,
  createIntermediateRequest,
  createRootCertificate,
  issueSvid,
  SVID_USAGES,
  type SvidUsage,
  subjectKeyId,
  toPem,
  type VerifiedCsr,
} from './svid.js';

const log = logger('ca');

export interface CaOptions {
  readonly store?: CaStore;
  /** Opens the key store on first use; default: the configured PKCS#11 token. */
  readonly keys?: () => CaKeyStore;
  readonly token?: TokenOpenOptions;
  readonly now?: () => number;
}

export interface IssueRequest {
  readonly csr: VerifiedCsr;
  readonly spiffeId: SpiffeId | string;
  /** Lifetime; default issuance.defaultTtlSeconds. Outside [min, max] is an error. */
  readonly ttlSeconds?: number;
  readonly usages?: readonly SvidUsage[];
  /** 'admin' or the SPIFFE ID of the requester, recorded with the certificate. */
  readonly requester: string;
}

export interface IssuedSvid {
  readonly serial: string;
  readonly spiffeId: string;
  readonly certificatePem: string;
  /** Intermediates between the leaf and the trust anchor (empty for a root CA). */
  readonly chainPem: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface GenerationSummary {
  readonly id: number;
  readonly state: GenerationRecord['state'];
  readonly mode: GenerationRecord['mode'];
  readonly keyLabel: string;
  readonly subject?: string;
  readonly notAfter?: string;
  readonly fingerprint256?: string;
}

export interface InitResult {
  readonly generation: GenerationSummary;
  readonly keyCreated: boolean;
  readonly certificateCreated: boolean;
  /** PEM request to have signed by the external root (intermediate mode, pending). */
  readonly request?: string;
}

export interface ListedCertificate extends IssuedRecord {
  readonly revoked: boolean;
  readonly expired: boolean;
}

export const REVOCATION_REASON_MAX = 200;

interface ActiveSigner extends CaSigner {
  readonly generation: GenerationRecord;
}

function summary(g: GenerationRecord): GenerationSummary {
  if (g.certificate === undefined) return { id: g.id, state: g.state, mode: g.mode, keyLabel: g.keyLabel };
  const c = new NodeX509(g.certificate);
  return {
    id: g.id,
    state: g.state,
    mode: g.mode,
    keyLabel: g.keyLabel,
    subject: c.subject.replace(/\n/g, ', '),
    notAfter: new Date(c.validTo).toISOString(),
    fingerprint256: c.fingerprint256,
  };
}

export class CertificateAuthority {
  readonly trustDomain: string;
  readonly revocations: RevocationList;
  private readonly store: CaStore;
  private readonly now: () => number;
  private keys: CaKeyStore | undefined;
  private readonly openKeys: () => CaKeyStore;
  private signer: ActiveSigner | undefined;

  private constructor(
    readonly config: CaConfig,
    opts: CaOptions,
  ) {
    this.trustDomain = config.trustDomain;
    this.now = opts.now ?? Date.now;
    this.store = opts.store ?? new FileCaStore(config.stateDir, () => new Date(this.now()));
    this.openKeys = opts.keys ?? (() => TokenKeyStore.open(config, opts.token));
    this.revocations = new RevocationList(this.store, { now: this.now });
    const meta = this.store.loadMetadata();
    if (meta !== undefined && meta.trustDomain !== config.trustDomain) {
      throw new TgError(
        'TG_ERR_CONFIG',
        `the CA state in ${config.stateDir} belongs to trust domain '${meta.trustDomain}', not '${config.trustDomain}'`,
      );
    }
  }

  /** Opens the CA. The token is opened (and the PIN read) only when a signature is needed. */
  static open(config: CaConfig, opts: CaOptions = {}): CertificateAuthority {
    return new CertificateAuthority(config, opts);
  }

  /** The key store, opened on first use. */
  keyStore(): CaKeyStore {
    this.keys ??= this.openKeys();
    return this.keys;
  }

  close(): void {
    this.signer = undefined;
    this.keys?.close();
    this.keys = undefined;
  }

  generations(): GenerationSummary[] {
    return this.metadata().generations.map(summary);
  }

  /**
   * Creates, or finds, the first generation: the signing key in the token and a self-signed
   * root, or (intermediate) the key and a request for the external root to sign.
   */
  async init(opts: { intermediate?: boolean } = {}): Promise<InitResult> {
    const meta = this.metadata();
    const live = meta.generations.find((g) => g.state === 'active' || g.state === 'pending');
    if (live !== undefined) {
      const key = await this.keyFor(live);
      if (live.state === 'active') this.checkKeyMatches(live, key);
      return {
        generation: summary(live),
        keyCreated: false,
        certificateCreated: false,
        request: live.state === 'pending' ? live.request : undefined,
      };
    }
    return this.newGeneration(meta, opts.intermediate ? 'intermediate' : 'root', 'active');
  }

  /**
   * Installs the external root's certificate for a pending intermediate. The certificate must
   * carry the token key, be a CA certificate with keyCertSign, and chain to `anchorPem`
   * through `chainPem`. The generation becomes active (first one) or next (rotation).
   */
  async installIntermediate(certificatePem: string, anchorPem: string, chainPem: readonly string[] = []) {
    const meta = this.metadata();
    const g = meta.generations.find((x) => x.state === 'pending');
    if (g === undefined)
      throw new TgError('TG_ERR_CONFLICT', 'no intermediate is waiting for its certificate');
    const key = await this.keyFor(g);
    let cert: x509.X509Certificate;
    try {
      cert = new x509.X509Certificate(certificatePem);
    } catch (err) {
      throw new TgError('TG_ERR_INVALID_ARGUMENT', 'the intermediate certificate is not readable', {
        cause: err,
      });
    }
    if (!Buffer.from(cert.publicKey.rawData).equals(key.spki))
      throw new TgError('TG_ERR_INVALID_ARGUMENT', "the certificate does not carry this CA's token key");
    const bc = cert.getExtension(x509.BasicConstraintsExtension);
    const ku = cert.getExtension(x509.KeyUsagesExtension);
    if (!bc?.ca) throw new TgError('TG_ERR_INVALID_ARGUMENT', 'the certificate is not a CA certificate');
    if (ku === null || (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0)
      throw new TgError('TG_ERR_INVALID_ARGUMENT', 'the certificate does not allow keyCertSign');
    const keyId = subjectKeyId(cert);
    const anchorBundle = TrustBundle.of(this.trustDomain, [anchorPem]);
    anchorBundle.verify(toPem(cert), chainPem, new Date(this.now()));
    g.certificate = toPem(cert);
    g.chain = [...chainPem];
    g.anchor = anchorBundle.toPem();
    g.keyId = keyId;
    g.request = undefined;
    g.state = meta.generations.some((x) => x.state === 'active') ? 'next' : 'active';
    this.store.saveMetadata(meta);
    this.signer = undefined;
    log.info({ generation: g.id, state: g.state }, 'installed intermediate CA certificate');
    return summary(g);
  }

  /** The roots relying parties must trust now: next, active and previous generations. */
  trustBundle(): TrustBundle {
    const anchors = this.metadata()
      .generations.filter((g) => g.state === 'next' || g.state === 'active' || g.state === 'previous')
      .map((g) => g.anchor)
      .filter((a): a is string => a !== undefined);
    if (anchors.length === 0)
      throw new TgError('TG_ERR_NOT_FOUND', `no CA in ${this.config.stateDir} yet: run 'tenguard ca init'`);
    return TrustBundle.of(this.trustDomain, anchors);
  }

  /** Issues an X.509-SVID for a verified request. The caller has authorised the ID. */
  async issue(req: IssueRequest): Promise<IssuedSvid> {
    const id = typeof req.spiffeId === 'string' ? parseSpiffeId(req.spiffeId) : req.spiffeId;
    if (id.trustDomain !== this.trustDomain)
      throw new TgError('TG_ERR_FORBIDDEN', `${id.uri} is not in trust domain '${this.trustDomain}'`);
    const csr = req.csr;
    if (csr.otherSans > 0)
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        'the request asks for DNS, IP or e-mail names: an SVID carries only its SPIFFE ID',
      );
    if (csr.uriSans.length > 1 || (csr.uriSans.length === 1 && csr.uriSans[0] !== id.uri)) {
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        `the request names ${csr.uriSans.join(', ')}, which is not the identity to issue (${id.uri})`,
      );
    }
    const iss = this.config.issuance;
    const ttl = req.ttlSeconds ?? iss.defaultTtlSeconds;
    if (!Number.isInteger(ttl) || ttl < iss.minTtlSeconds || ttl > iss.maxTtlSeconds) {
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        `lifetime ${ttl} s is outside ${iss.minTtlSeconds} to ${iss.maxTtlSeconds} s`,
      );
    }
    const usages = req.usages ?? SVID_USAGES;
    const signer = await this.activeSigner();
    const now = this.now();
    const cert = await issueSvid(signer, {
      csr,
      spiffeId: id,
      notBefore: new Date(now - iss.backdateSeconds * 1000),
      notAfter: new Date(now + ttl * 1000),
      usages,
    });
    const serial = normalizeSerial(cert.serialNumber);
    const g = signer.generation;
    this.store.appendIssued({
      serial,
      spiffeId: id.uri,
      notBefore: cert.notBefore.toISOString(),
      notAfter: cert.notAfter.toISOString(),
      issuedAt: new Date(now).toISOString(),
      issuerKeyId: g.keyId ?? '',
      requester: req.requester,
      publicKeySha256: csr.publicKeySha256,
    });
    // The issued record above is the audit trail; this line is for debugging.
    log.debug(
      {
        serial,
        spiffeId: id.uri,
        requester: req.requester,
        notAfter: cert.notAfter.toISOString(),
        generation: g.id,
      },
      'issued certificate',
    );
    return {
      serial,
      spiffeId: id.uri,
      certificatePem: toPem(cert),
      chainPem: g.mode === 'intermediate' ? [g.certificate!, ...g.chain] : [],
      notBefore: cert.notBefore,
      notAfter: cert.notAfter,
    };
  }

  list(): ListedCertificate[] {
    const now = this.now();
    const revoked = this.revokedSerials();
    return this.store.listIssued().map((r) => ({
      ...r,
      revoked: revoked.has(r.serial),
      expired: Date.parse(r.notAfter) < now,
    }));
  }

  /** The revoked serials, re-read from the store once. */
  private revokedSerials(): Set<string> {
    this.revocations.refresh();
    return new Set(this.revocations.list().map((r) => normalizeSerial(r.serial)));
  }

  /** Revokes an issued certificate; effective at once here and, through the store, elsewhere. */
  revoke(serialText: string, reason = 'unspecified'): RevocationRecord {
    const serial = normalizeSerial(serialText);
    if (reason.length === 0 || reason.length > REVOCATION_REASON_MAX || /[\p{Cc}]/u.test(reason))
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        `reason must be 1 to ${REVOCATION_REASON_MAX} printable characters`,
      );
    this.revocations.refresh();
    const known = this.revocations.list().find((r) => normalizeSerial(r.serial) === serial);
    if (known !== undefined) return known;
    const issued = this.store.listIssued().find((r) => r.serial === serial);
    if (issued === undefined)
      throw new TgError('TG_ERR_NOT_FOUND', `no certificate with serial ${serial} was issued here`);
    const record: RevocationRecord = {
      serial,
      revokedAt: new Date(this.now()).toISOString(),
      reason,
      notAfter: issued.notAfter,
    };
    this.store.appendRevocation(record);
    this.revocations.add(record);
    log.warn({ serial, spiffeId: issued.spiffeId, reason }, 'revoked certificate');
    return record;
  }

  isRevoked(serial: string): boolean {
    return this.revocations.isRevoked(serial);
  }

  /** Revocations of certificates not yet expired, re-read from the store. */
  revoked(): RevocationRecord[] {
    this.revocations.refresh();
    return this.revocations.list();
  }

  /** Rotation step 1: a new key and CA certificate, trusted but not yet signing. */
  async rotatePrepare(opts: { intermediate?: boolean } = {}): Promise<InitResult> {
    const meta = this.metadata();
    if (!meta.generations.some((g) => g.state === 'active'))
      throw new TgError('TG_ERR_CONFLICT', "no active CA to rotate from: run 'tenguard ca init'");
    const busy = meta.generations.find((g) => g.state === 'next' || g.state === 'pending');
    if (busy !== undefined)
      throw new TgError('TG_ERR_CONFLICT', `generation ${busy.id} is already ${busy.state}`);
    return this.newGeneration(meta, opts.intermediate ? 'intermediate' : 'root', 'next');
  }

  /**
   * Rotation step 2: the next generation signs from now on; the active one becomes previous
   * and stays trusted. Distribute the bundle (which already holds the next root) first.
   */
  async rotateActivate(): Promise<GenerationSummary> {
    const meta = this.metadata();
    const next = meta.generations.find((g) => g.state === 'next');
    if (next === undefined)
      throw new TgError('TG_ERR_CONFLICT', "no prepared generation: run 'tenguard ca rotate prepare'");
    const prev = meta.generations.find((g) => g.state === 'previous');
    if (prev !== undefined)
      throw new TgError(
        'TG_ERR_CONFLICT',
        `generation ${prev.id} is still trusted as previous: retire it first`,
      );
    this.checkKeyMatches(next, await this.keyFor(next));
    for (const g of meta.generations) if (g.state === 'active') g.state = 'previous';
    next.state = 'active';
    this.store.saveMetadata(meta);
    this.signer = undefined;
    log.info({ generation: next.id }, 'rotated: new CA generation is active');
    return summary(next);
  }

  /**
   * Rotation step 3: the previous generation leaves the trust bundle. Refused while
   * certificates it signed are unexpired and unrevoked, unless forced.
   */
  rotateRetire(opts: { force?: boolean } = {}): GenerationSummary {
    const meta = this.metadata();
    const prev = meta.generations.find((g) => g.state === 'previous');
    if (prev === undefined) throw new TgError('TG_ERR_CONFLICT', 'no previous generation to retire');
    const now = this.now();
    const revoked = this.revokedSerials();
    const live = this.store
      .listIssued()
      .filter((r) => r.issuerKeyId === prev.keyId && Date.parse(r.notAfter) > now && !revoked.has(r.serial));
    if (live.length > 0 && !opts.force) {
      const last = live.reduce((a, b) => (a.notAfter > b.notAfter ? a : b));
      throw new TgError(
        'TG_ERR_CONFLICT',
        `${live.length} certificates from generation ${prev.id} are valid until ${last.notAfter}; retire after that or force`,
      );
    }
    prev.state = 'retired';
    this.store.saveMetadata(meta);
    log.info({ generation: prev.id, forced: live.length > 0 }, 'retired CA generation');
    return summary(prev);
  }

  /** Removes expired issued-certificate records and their revocations. */
  prune(): number {
    return this.store.prune(new Date(this.now()));
  }

  private metadata(): CaMetadata {
    return this.store.loadMetadata() ?? { version: 1, trustDomain: this.trustDomain, generations: [] };
  }

  private keyLabel(id: number): string {
    return id === 1 ? this.config.token.keyLabel : `${this.config.token.keyLabel}.g${id}`;
  }

  private async keyFor(g: GenerationRecord): Promise<CaKey> {
    const key = await this.keyStore().find(g.keyLabel);
    if (key === undefined)
      throw new TgError(
        'TG_ERR_TOKEN',
        `the key '${g.keyLabel}' of CA generation ${g.id} is not on the token`,
      );
    return key;
  }

  private checkKeyMatches(g: GenerationRecord, key: CaKey): void {
    const cert = new x509.X509Certificate(g.certificate!);
    if (!Buffer.from(cert.publicKey.rawData).equals(key.spki)) {
      throw new TgError(
        'TG_ERR_TOKEN',
        `the key '${g.keyLabel}' on the token does not match the certificate of CA generation ${g.id}`,
      );
    }
  }

  private async newGeneration(
    meta: CaMetadata,
    mode: 'root' | 'intermediate',
    state: 'active' | 'next',
  ): Promise<InitResult> {
    const id = meta.generations.reduce((m, g) => Math.max(m, g.id), 0) + 1;
    const keyLabel = this.keyLabel(id);
    const store = this.keyStore();
    const { key, created } = await store.findOrCreate(keyLabel);
    const root = this.config.root;
    const subject: x509.JsonName = [
      { CN: [`${root.commonName ?? 'tenguard CA'} g${id}`] },
      { O: [root.organization] },
    ];
    const now = this.now();
    const g: GenerationRecord = {
      id,
      keyLabel,
      mode,
      state,
      createdAt: new Date(now).toISOString(),
      chain: [],
    };
    if (mode === 'root') {
      const cert = await createRootCertificate({
        spki: key.spki,
        signingKey: key.signingKey,
        crypto: store.crypto,
        subject: new x509.Name(subject).toString(),
        notBefore: new Date(now - this.config.issuance.backdateSeconds * 1000),
        notAfter: new Date(now + root.validityDays * 86_400_000),
      });
      g.certificate = toPem(cert);
      g.anchor = g.certificate;
      g.keyId = subjectKeyId(cert);
    } else {
      const csr = await createIntermediateRequest({
        spki: key.spki,
        signingKey: key.signingKey,
        crypto: store.crypto,
        subject: new x509.Name(subject).toString(),
      });
      g.state = 'pending';
      g.request = toPem(csr);
    }
    meta.generations.push(g);
    this.store.saveMetadata(meta);
    log.info(
      { generation: id, mode, state: g.state, key: keyLabel, keyCreated: created },
      'new CA generation',
    );
    return {
      generation: summary(g),
      keyCreated: created,
      certificateCreated: mode === 'root',
      request: g.request,
    };
  }

  private async activeSigner(): Promise<ActiveSigner> {
    const meta = this.metadata();
    const g = meta.generations.find((x) => x.state === 'active');
    if (g === undefined || g.certificate === undefined)
      throw new TgError(
        'TG_ERR_NOT_FOUND',
        `no active CA in ${this.config.stateDir}: run 'tenguard ca init'`,
      );
    if (this.signer?.generation.id === g.id && this.signer.generation.keyId === g.keyId) return this.signer;
    const key = await this.keyFor(g);
    this.checkKeyMatches(g, key);
    this.signer = {
      generation: g,
      certificate: new x509.X509Certificate(g.certificate),
      signingKey: key.signingKey,
      crypto: this.keyStore().crypto,
    };
    return this.signer;
  }
}
