// Certificate profiles, built with @peculiar/x509 and signed through tokenCrypto:
//  - the X.509-SVID leaf (SPIFFE X509-SVID.md §4, §5): exactly one URI SAN, the SPIFFE ID;
//    basicConstraints CA:false; keyUsage digitalSignature (plus keyEncipherment for RSA
//    keys, which TLS may use for key transport; never for EC keys); extKeyUsage serverAuth
//    and/or clientAuth; SKI and AKI; a random 16-octet serial; notBefore backdated for
//    clock skew;
//  - the CA certificate: a self-signed root, or a request (PKCS#10) for an intermediate
//    signed by an external root; CA:true with pathLen 0 (it signs leaves only),
//    keyUsage keyCertSign and cRLSign.
// And the checks on an incoming PKCS#10 request.
import { createHash, createPublicKey, type KeyObject, randomBytes, type webcrypto } from 'node:crypto';
import { OID_SAN } from '../identity/certs.js';
import type { SpiffeId } from '../identity/spiffe.js';
import * as x509 from '../identity/x509.js';
import { TgError } from '../util/errors.js';
import { TOKEN_SIGNING_ALGORITHM } from './token-crypto.js';

export type SvidUsage = 'server auth' | 'client auth';
export const SVID_USAGES: readonly SvidUsage[] = ['server auth', 'client auth'];

/** Largest PKCS#10 request accepted, in PEM characters. */
export const CSR_MAX_PEM_CHARS = 16 * 1024;
const EKU_OID: Record<SvidUsage, string> = {
  'server auth': x509.ExtendedKeyUsage.serverAuth,
  'client auth': x509.ExtendedKeyUsage.clientAuth,
};

export type CsrKeyType = 'ec' | 'rsa';

/** A PKCS#10 request whose own signature verified and whose key is acceptable. */
export interface VerifiedCsr {
  readonly csr: x509.Pkcs10CertificateRequest;
  readonly spki: Buffer;
  readonly keyType: CsrKeyType;
  /** e.g. "EC P-256", "RSA 3072". */
  readonly keyDescription: string;
  /** SHA-256 of the SubjectPublicKeyInfo, hex: recorded instead of the key. */
  readonly publicKeySha256: string;
  /** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits, hex. */
  readonly subjectKeyId: string;
  /** URI SANs requested, in order. */
  readonly uriSans: readonly string[];
  /** How many SANs of other types were requested (they are never issued). */
  readonly otherSans: number;
}

function bad(message: string, cause?: unknown): TgError {
  return new TgError('TG_ERR_INVALID_ARGUMENT', message, { cause });
}

/** Parses a PEM (or DER) PKCS#10 request, checks its key and its own signature. */
export async function verifyCsr(input: string | Uint8Array): Promise<VerifiedCsr> {
  if (typeof input === 'string' && input.length > CSR_MAX_PEM_CHARS)
    throw bad(`the certificate request is larger than ${CSR_MAX_PEM_CHARS} characters`);
  if (typeof input !== 'string' && input.length > CSR_MAX_PEM_CHARS)
    throw bad(`the certificate request is larger than ${CSR_MAX_PEM_CHARS} bytes`);
  if (typeof input === 'string' && !input.includes('-----BEGIN CERTIFICATE REQUEST-----'))
    throw bad('not a PEM certificate request (no BEGIN CERTIFICATE REQUEST line)');
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(input);
  } catch (err) {
    throw bad('the certificate request is not valid PKCS#10', err);
  }
  const spki = Buffer.from(csr.publicKey.rawData);
  let keyType: CsrKeyType;
  let keyDescription: string;
  let subjectKeyId: string;
  try {
    const key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
    subjectKeyId = createHash('sha1').update(subjectPublicKeyBits(key)).digest('hex');
    const d = key.asymmetricKeyDetails ?? {};
    if (key.asymmetricKeyType === 'ec' && (d.namedCurve === 'prime256v1' || d.namedCurve === 'secp384r1')) {
      keyType = 'ec';
      keyDescription = d.namedCurve === 'prime256v1' ? 'EC P-256' : 'EC P-384';
    } else if (
      key.asymmetricKeyType === 'rsa' &&
      (d.modulusLength ?? 0) >= 2048 &&
      (d.modulusLength ?? 0) <= 8192
    ) {
      keyType = 'rsa';
      keyDescription = `RSA ${d.modulusLength}`;
    } else {
      const what = key.asymmetricKeyType === 'ec' ? `EC ${d.namedCurve}` : `${key.asymmetricKeyType}`;
      throw bad(`unsupported key ${what}: use EC P-256, EC P-384 or RSA of 2048 to 8192 bits`);
    }
  } catch (err) {
    if (err instanceof TgError) throw err;
    throw bad('the request carries an unreadable public key', err);
  }
  let ok = false;
  try {
    ok = await csr.verify();
  } catch (err) {
    throw bad('the request signature cannot be checked (unsupported algorithm)', err);
  }
  if (!ok) throw bad("the request's own signature does not verify (proof of possession failed)");

  const uriSans: string[] = [];
  let otherSans = 0;
  try {
    for (const ext of csr.getExtensions(OID_SAN)) {
      const san = new x509.SubjectAlternativeNameExtension(ext.rawData);
      for (const n of san.names.items) {
        if (n.type === 'url') uriSans.push(n.value);
        else otherSans++;
      }
    }
  } catch (err) {
    throw bad('the subjectAltName extension of the request cannot be read', err);
  }
  return Object.freeze({
    csr,
    spki,
    keyType,
    keyDescription,
    publicKeySha256: createHash('sha256').update(spki).digest('hex'),
    subjectKeyId,
    uriSans: Object.freeze(uriSans),
    otherSans,
  });
}

/**
 * The contents of the subjectPublicKey BIT STRING: the uncompressed point for EC keys
 * (RFC 5480 §2.2), the DER RSAPublicKey for RSA (RFC 3279 §2.3.1).
 */
function subjectPublicKeyBits(key: KeyObject): Buffer {
  if (key.asymmetricKeyType === 'rsa') return key.export({ format: 'der', type: 'pkcs1' });
  const jwk = key.export({ format: 'jwk' });
  return Buffer.concat([
    Buffer.from([0x04]),
    Buffer.from(jwk.x!, 'base64url'),
    Buffer.from(jwk.y!, 'base64url'),
  ]);
}

/**
 * A random positive 16-octet serial (RFC 5280 §4.1.2.2 allows up to 20 octets), hex, with 126
 * random bits. The first octet is 0x40-0x7f: positive without a DER sign octet, and its high
 * nibble is never zero, so the canonical text is always 32 hex digits.
 */
export function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = 0x40 | (b[0] & 0x3f);
  return b.toString('hex');
}

export interface CaSigner {
  /** The CA certificate whose key signs; its subject becomes the issuer. */
  readonly certificate: x509.X509Certificate;
  /** Token-backed CryptoKey (tokenCryptoKey). */
  readonly signingKey: webcrypto.CryptoKey;
  /** tokenCrypto. */
  readonly crypto: webcrypto.Crypto;
}

export function subjectKeyId(cert: x509.X509Certificate): string {
  const ski = cert.getExtension(x509.SubjectKeyIdentifierExtension);
  if (ski === null)
    throw new TgError('TG_ERR_INTERNAL', `CA certificate ${cert.subject} has no subjectKeyIdentifier`);
  return ski.keyId;
}

export interface SvidParams {
  readonly csr: VerifiedCsr;
  readonly spiffeId: SpiffeId;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly usages: readonly SvidUsage[];
  readonly serial?: string;
}

/** Issues an X.509-SVID for the request's key. The caller has decided the ID may be issued. */
export async function issueSvid(signer: CaSigner, p: SvidParams): Promise<x509.X509Certificate> {
  if (p.usages.length === 0) throw bad('at least one of "server auth" and "client auth" is needed');
  const keyUsage =
    p.csr.keyType === 'rsa'
      ? x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment
      : x509.KeyUsageFlags.digitalSignature;
  const caNotAfter = signer.certificate.notAfter;
  const notAfter = new Date(Math.min(p.notAfter.getTime(), caNotAfter.getTime()));
  return x509.X509CertificateGenerator.create(
    {
      serialNumber: p.serial ?? randomSerial(),
      // SPIFFE does not use the subject; a fixed, short one keeps the SAN non-critical.
      subject: `O=tenguard, OU=${p.spiffeId.kind}`,
      issuer: signer.certificate.subjectName,
      notBefore: p.notBefore,
      notAfter,
      publicKey: p.csr.spki,
      signingKey: signer.signingKey,
      signingAlgorithm: TOKEN_SIGNING_ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(keyUsage, true),
        new x509.ExtendedKeyUsageExtension(
          p.usages.map((u) => EKU_OID[u]),
          false,
        ),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: p.spiffeId.uri }], false),
        new x509.SubjectKeyIdentifierExtension(p.csr.subjectKeyId, false),
        new x509.AuthorityKeyIdentifierExtension(subjectKeyId(signer.certificate), false),
      ],
    },
    signer.crypto,
  );
}

export interface CaCertificateParams {
  readonly spki: Buffer;
  readonly signingKey: webcrypto.CryptoKey;
  readonly crypto: webcrypto.Crypto;
  readonly subject: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

function caExtensions(): x509.Extension[] {
  return [
    new x509.BasicConstraintsExtension(true, 0, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
  ];
}

/** A self-signed root for the token key. */
export async function createRootCertificate(p: CaCertificateParams): Promise<x509.X509Certificate> {
  const ski = await x509.SubjectKeyIdentifierExtension.create(p.spki, false, p.crypto);
  return x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: p.subject,
      issuer: p.subject,
      notBefore: p.notBefore,
      notAfter: p.notAfter,
      publicKey: p.spki,
      signingKey: p.signingKey,
      signingAlgorithm: TOKEN_SIGNING_ALGORITHM,
      extensions: [...caExtensions(), ski, new x509.AuthorityKeyIdentifierExtension(ski.keyId, false)],
    },
    p.crypto,
  );
}

/** A PKCS#10 request for an intermediate CA certificate, signed by the token key. */
export async function createIntermediateRequest(
  p: Omit<CaCertificateParams, 'notBefore' | 'notAfter'>,
): Promise<x509.Pkcs10CertificateRequest> {
  const publicKey = await p.crypto.subtle.importKey(
    'spki',
    p.spki,
    { name: 'ECDSA', namedCurve: 'P-256' },
    true,
    ['verify'],
  );
  return x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: p.subject,
      keys: { privateKey: p.signingKey, publicKey },
      signingAlgorithm: TOKEN_SIGNING_ALGORITHM,
      extensions: caExtensions(),
    },
    p.crypto,
  );
}

/** PEM with a trailing newline. */
export function toPem(item: { toString(format: 'pem'): string }): string {
  const pem = item.toString('pem').replace(/\r\n/g, '\n');
  return pem.endsWith('\n') ? pem : `${pem}\n`;
}
