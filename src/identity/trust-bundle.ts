// A trust bundle: the root certificates of one trust domain that a relying party accepts.
// CA rotation keeps the old and the new root in the bundle side by side, so certificates
// chaining to either verify while the fleet moves over; the old root leaves the bundle only
// after the last certificate it signed has expired.
import { X509Certificate } from 'node:crypto';
import { TgError } from '../util/errors.js';
import { splitPemCertificates } from './certs.js';
import { validateTrustDomain } from './spiffe.js';

/** Longest chain walked: leaf, up to two intermediates, root. */
const MAX_CHAIN = 4;

export function certDate(s: string): Date {
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) throw new TgError('TG_ERR_INTERNAL', `unreadable certificate date '${s}'`);
  return d;
}

export class TrustBundle {
  private constructor(
    readonly trustDomain: string,
    readonly roots: readonly X509Certificate[],
  ) {}

  /** A bundle from PEM certificates; each must be a CA certificate. Duplicates collapse. */
  static of(trustDomain: string, pems: readonly string[]): TrustBundle {
    validateTrustDomain(trustDomain);
    const roots: X509Certificate[] = [];
    for (const pem of pems) {
      let cert: X509Certificate;
      try {
        cert = new X509Certificate(pem);
      } catch (err) {
        throw new TgError('TG_ERR_INVALID_ARGUMENT', 'a trust bundle entry is not a certificate', {
          cause: err,
        });
      }
      if (!cert.ca) throw new TgError('TG_ERR_INVALID_ARGUMENT', `${cert.subject} is not a CA certificate`);
      if (!roots.some((r) => r.fingerprint256 === cert.fingerprint256)) roots.push(cert);
    }
    if (roots.length === 0)
      throw new TgError('TG_ERR_INVALID_ARGUMENT', 'a trust bundle needs at least one root');
    return new TrustBundle(trustDomain, Object.freeze(roots));
  }

  static fromPem(trustDomain: string, text: string): TrustBundle {
    return TrustBundle.of(trustDomain, splitPemCertificates(text));
  }

  withRoot(pem: string): TrustBundle {
    return TrustBundle.of(this.trustDomain, [...this.pems(), pem]);
  }

  /** The bundle without the root of this SHA-256 fingerprint (as X509Certificate.fingerprint256). */
  withoutRoot(fingerprint256: string): TrustBundle {
    const keep = this.roots.filter((r) => r.fingerprint256 !== fingerprint256.toUpperCase());
    if (keep.length === this.roots.length)
      throw new TgError('TG_ERR_NOT_FOUND', `no root ${fingerprint256} in the bundle`);
    return TrustBundle.of(
      this.trustDomain,
      keep.map((r) => r.toString()),
    );
  }

  pems(): string[] {
    return this.roots.map((r) => r.toString());
  }

  toPem(): string {
    return this.pems().join('');
  }

  fingerprints(): string[] {
    return this.roots.map((r) => r.fingerprint256);
  }

  /**
   * Path validation at the library level (TLS does its own in OpenSSL): the leaf, through the
   * given intermediates, must reach a root of this bundle, with every signature valid, every
   * issuer a CA, and every certificate valid at `at`. Returns the root; throws
   * TG_ERR_FORBIDDEN with the reason otherwise.
   */
  verify(leafPem: string, intermediatesPem: readonly string[] = [], at: Date = new Date()): X509Certificate {
    const fail = (why: string): TgError => new TgError('TG_ERR_FORBIDDEN', `certificate not trusted: ${why}`);
    let cert: X509Certificate;
    let pool: X509Certificate[];
    try {
      cert = new X509Certificate(leafPem);
      pool = intermediatesPem.map((p) => new X509Certificate(p));
    } catch (err) {
      throw new TgError('TG_ERR_INVALID_ARGUMENT', 'unreadable certificate', { cause: err });
    }
    for (let depth = 0; depth < MAX_CHAIN; depth++) {
      if (certDate(cert.validFrom) > at) throw fail(`${cert.subject || cert.serialNumber} is not valid yet`);
      if (certDate(cert.validTo) < at) throw fail(`${cert.subject || cert.serialNumber} has expired`);
      const root = this.roots.find((r) => cert.checkIssued(r) && cert.verify(r.publicKey));
      if (root !== undefined) {
        if (certDate(root.validTo) < at || certDate(root.validFrom) > at)
          throw fail('the root is outside its validity');
        return root;
      }
      const next = pool.find((c) => c.ca && cert.checkIssued(c) && cert.verify(c.publicKey));
      if (next === undefined) throw fail('no issuer in the chain or the trust bundle');
      cert = next;
    }
    throw fail(`chain longer than ${MAX_CHAIN}`);
  }
}
