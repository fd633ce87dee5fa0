// A WebCrypto-shaped provider through which @peculiar/x509 signs with a token key.
//
// @peculiar/x509 builds the TBSCertificate (or CertificationRequestInfo), then calls
// crypto.subtle.sign(algorithm, signingKey, tbs) and turns the WebCrypto-format result
// (r || s for ECDSA) into the DER Ecdsa-Sig-Value of the X.509 signature. tokenCrypto
// answers that call for the CryptoKey-like handles made by tokenCryptoKey() by hashing in
// Node and calling C_Sign on the token; every other call, and every other key, goes to
// Node's own WebCrypto unchanged (digests for key identifiers, random serials, CSR checks).
import { webcrypto } from 'node:crypto';
import { TgError } from '../util/errors.js';

/** What the adapter needs from a token key: ECDSA P-256 / SHA-256, result r || s. */
export interface TokenSigner {
  readonly label: string;
  sign(data: Uint8Array): Promise<Uint8Array>;
}

const signers = new WeakMap<object, TokenSigner>();

export const TOKEN_KEY_ALGORITHM = Object.freeze({ name: 'ECDSA', namedCurve: 'P-256' });
/** The signing algorithm to hand @peculiar/x509 together with a token key. */
export const TOKEN_SIGNING_ALGORITHM = Object.freeze({ name: 'ECDSA', hash: 'SHA-256' });

/**
 * A CryptoKey-shaped, non-extractable handle standing for the private key on the token.
 * It holds no key material; only tokenCrypto.subtle.sign can use it.
 */
export function tokenCryptoKey(signer: TokenSigner): webcrypto.CryptoKey {
  const key = Object.freeze({
    type: 'private' as const,
    extractable: false,
    algorithm: TOKEN_KEY_ALGORITHM,
    usages: Object.freeze(['sign'] as const),
    [Symbol.toStringTag]: 'CryptoKey',
  });
  signers.set(key, signer);
  return key as unknown as webcrypto.CryptoKey;
}

function hashName(alg: unknown): string | undefined {
  if (typeof alg !== 'object' || alg === null) return undefined;
  const h = (alg as { hash?: unknown }).hash;
  if (typeof h === 'string') return h.toUpperCase();
  if (typeof h === 'object' && h !== null && typeof (h as { name?: unknown }).name === 'string')
    return (h as { name: string }).name.toUpperCase();
  return undefined;
}

async function signDispatch(
  algorithm: webcrypto.AlgorithmIdentifier | webcrypto.EcdsaParams,
  key: webcrypto.CryptoKey,
  data: webcrypto.BufferSource,
): Promise<ArrayBuffer> {
  const signer = signers.get(key);
  if (signer === undefined) return webcrypto.subtle.sign(algorithm, key, data);
  const name = typeof algorithm === 'string' ? algorithm : algorithm.name;
  if (name.toUpperCase() !== 'ECDSA' || hashName(algorithm) !== 'SHA-256') {
    throw new TgError(
      'TG_ERR_INTERNAL',
      `token key '${signer.label}' signs ECDSA with SHA-256 only, not ${name}/${hashName(algorithm)}`,
    );
  }
  const bytes = ArrayBuffer.isView(data)
    ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    : new Uint8Array(data);
  const sig = await signer.sign(bytes);
  return sig.buffer.slice(sig.byteOffset, sig.byteOffset + sig.byteLength) as ArrayBuffer;
}

// Node's SubtleCrypto methods insist on `this` being the real instance, so the proxy binds
// every member it passes through.
const subtle = new Proxy(webcrypto.subtle, {
  get(target, prop) {
    if (prop === 'sign') return signDispatch;
    const value = Reflect.get(target, prop, target);
    return typeof value === 'function' ? value.bind(target) : value;
  },
});

export const tokenCrypto = {
  subtle,
  getRandomValues: webcrypto.getRandomValues.bind(webcrypto),
  randomUUID: webcrypto.randomUUID.bind(webcrypto),
} as webcrypto.Crypto;
