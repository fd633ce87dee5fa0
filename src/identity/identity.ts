// A workload's or NIC's identity as its holder sees it: a private key that never leaves the
// process, and the X.509-SVID (with intermediates) the CA issued for it.
import { KeyObject, webcrypto, X509Certificate } from 'node:crypto';
import { TgError } from '../util/errors.js';
import { splitPemCertificates } from './certs.js';
import { certificateUriSans } from './san.js';
import { parseSpiffeId, type SpiffeId } from './spiffe.js';
import { certDate } from './trust-bundle.js';

export interface Identity {
  readonly spiffeId: SpiffeId;
  /** The leaf certificate. */
  readonly certificate: X509Certificate;
  readonly certificatePem: string;
  /** Intermediates after the leaf, up to (not including) the trust anchor. */
  readonly chainPem: readonly string[];
  /** Held in memory only; KeyObjects are freed by the garbage collector, not wiped. */
  readonly privateKey: KeyObject;
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface KeyAndRequest {
  readonly privateKey: KeyObject;
  /** PKCS#10 request (PEM) naming the SPIFFE ID as its only SAN. */
  readonly csrPem: string;
}

/** A fresh ECDSA P-256 key and a signed request for `spiffeId`. */
export async function createKeyAndCsr(spiffeId: SpiffeId | string): Promise<KeyAndRequest> {
  const id = typeof spiffeId === 'string' ? parseSpiffeId(spiffeId) : spiffeId;
  // The ASN.1 library is loaded only here, where a certificate request is made (san.ts says why).
  const x509 = await import('./x509.js');
  const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: 'O=tenguard',
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: id.uri }], false)],
    },
    webcrypto,
  );
  return { privateKey: KeyObject.from(keys.privateKey), csrPem: csr.toString('pem') };
}

/** The URI SANs of a certificate (DER), read from its ASN.1 structure (san.ts). */
export function uriSans(der: Uint8Array): string[] {
  return certificateUriSans(der);
}

/** The one SPIFFE ID of an X.509-SVID; throws TG_ERR_FORBIDDEN if there is not exactly one URI SAN. */
export function svidSpiffeId(cert: X509Certificate): SpiffeId {
  let uris: string[];
  try {
    uris = uriSans(cert.raw);
  } catch (err) {
    throw new TgError('TG_ERR_FORBIDDEN', 'unreadable subjectAltName', { cause: err });
  }
  if (uris.length !== 1)
    throw new TgError(
      'TG_ERR_FORBIDDEN',
      `an X.509-SVID has exactly one URI SAN, this one has ${uris.length}`,
    );
  try {
    return parseSpiffeId(uris[0]);
  } catch (err) {
    throw new TgError('TG_ERR_FORBIDDEN', (err as Error).message, { cause: err });
  }
}

/**
 * Puts a key and its issued chain (leaf first, PEM) together, checking that the leaf carries
 * this key and, when given, the expected SPIFFE ID.
 */
export function assembleIdentity(
  privateKey: KeyObject,
  chain: string | readonly string[],
  expected?: string,
): Identity {
  const pems = typeof chain === 'string' ? splitPemCertificates(chain) : [...chain];
  if (pems.length === 0) throw new TgError('TG_ERR_INVALID_ARGUMENT', 'no certificate in the issued chain');
  const certificate = new X509Certificate(pems[0]);
  if (!certificate.checkPrivateKey(privateKey))
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'the issued certificate does not carry our key');
  const spiffeId = svidSpiffeId(certificate);
  if (expected !== undefined && spiffeId.uri !== expected)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `issued for ${spiffeId.uri}, asked for ${expected}`);
  return Object.freeze({
    spiffeId,
    certificate,
    certificatePem: pems[0],
    chainPem: Object.freeze(pems.slice(1)),
    privateKey,
    serial: certificate.serialNumber.toLowerCase().replace(/^0+(?=.)/, ''),
    notBefore: certDate(certificate.validFrom),
    notAfter: certDate(certificate.validTo),
  });
}
