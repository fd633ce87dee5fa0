// The CA signing key: an ECDSA P-256 key pair generated inside the token, found again by
// label. The private half is created CKA_SENSITIVE and not CKA_EXTRACTABLE, so no call can
// read it out; every signature is a C_Sign with CKM_ECDSA over a SHA-256 digest computed
// here. A key found on the token is used only if it has always been sensitive and never
// extractable.
import { createHash, randomBytes } from 'node:crypto';
import { TgError } from '../util/errors.js';
import { type Handle, P, type Pkcs11Session, tokenError } from './pkcs11-module.js';

/** DER of the OID prime256v1 / secp256r1 (1.2.840.10045.3.1.7): CKA_EC_PARAMS for P-256. */
export const P256_EC_PARAMS = Buffer.from('06082a8648ce3d030107', 'hex');
/** SubjectPublicKeyInfo header for an uncompressed P-256 point (RFC 5480). */
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');
const P256_POINT_BYTES = 65;
/** ECDSA P-256 signatures from CKM_ECDSA are r || s, 32 bytes each (PKCS#11 v2.40 §2.3.1). */
export const P256_SIGNATURE_BYTES = 64;

export interface KeyProtection {
  readonly token: boolean;
  readonly private: boolean;
  readonly sensitive: boolean;
  readonly extractable: boolean;
  readonly alwaysSensitive: boolean;
  readonly neverExtractable: boolean;
}

/** Builds a P-256 SubjectPublicKeyInfo from CKA_EC_POINT (DER OCTET STRING, or bare from some modules). */
export function p256SpkiFromEcPoint(ecPoint: Buffer): Buffer {
  let point = ecPoint;
  if (ecPoint.length === P256_POINT_BYTES + 2 && ecPoint[0] === 0x04 && ecPoint[1] === P256_POINT_BYTES)
    point = ecPoint.subarray(2);
  if (point.length !== P256_POINT_BYTES || point[0] !== 0x04)
    throw new TgError('TG_ERR_TOKEN', 'CKA_EC_POINT is not an uncompressed P-256 point');
  return Buffer.concat([P256_SPKI_PREFIX, point]);
}

const bool = (b: Buffer | undefined): boolean => b !== undefined && b.length > 0 && b[0] !== 0;
/** A CK_ULONG attribute value (native width, little-endian on the platforms we run on). */
const ulong = (b: Buffer | undefined): number | undefined =>
  b === undefined
    ? undefined
    : b.length === 8
      ? Number(b.readBigUInt64LE())
      : b.length === 4
        ? b.readUInt32LE()
        : undefined;

export class TokenSigningKey {
  private queue: Promise<unknown> = Promise.resolve();
  private pending = 0;

  private constructor(
    private readonly session: Pkcs11Session,
    readonly label: string,
    /** CKA_ID shared by the two halves; not secret. */
    readonly id: Buffer,
    /** Object handle of the private key; a handle, not key material. */
    readonly privateHandle: Handle,
    /** DER SubjectPublicKeyInfo of the public half. */
    readonly spki: Buffer,
  ) {}

  /** Finds the key pair with this label, or undefined. Refuses a key that is not protected. */
  static find(session: Pkcs11Session, label: string): TokenSigningKey | undefined {
    const privs = session.find([
      { type: P.CKA_CLASS, value: P.CKO_PRIVATE_KEY },
      { type: P.CKA_LABEL, value: label },
    ]);
    if (privs.length === 0) return undefined;
    if (privs.length > 1)
      throw new TgError('TG_ERR_TOKEN', `${privs.length} private keys carry the label '${label}'`);
    const priv = privs[0];
    const a = session.getAttributes(priv, [P.CKA_KEY_TYPE, P.CKA_ID, P.CKA_EC_PARAMS, P.CKA_SIGN]);
    if (ulong(a.get(P.CKA_KEY_TYPE)) !== P.CKK_EC)
      throw new TgError('TG_ERR_TOKEN', `key '${label}' is not an EC key`);
    if (!P256_EC_PARAMS.equals(a.get(P.CKA_EC_PARAMS) ?? Buffer.alloc(0)))
      throw new TgError('TG_ERR_TOKEN', `key '${label}' is not on the P-256 curve`);
    if (!bool(a.get(P.CKA_SIGN))) throw new TgError('TG_ERR_TOKEN', `key '${label}' may not sign`);
    const id = a.get(P.CKA_ID) ?? Buffer.alloc(0);
    const pubs = session.find([
      { type: P.CKA_CLASS, value: P.CKO_PUBLIC_KEY },
      { type: P.CKA_LABEL, value: label },
      { type: P.CKA_ID, value: id },
    ]);
    if (pubs.length !== 1)
      throw new TgError(
        'TG_ERR_TOKEN',
        `key '${label}' has ${pubs.length} public halves on the token, need 1`,
      );
    const point = session.getAttributes(pubs[0], [P.CKA_EC_POINT]).get(P.CKA_EC_POINT);
    if (point === undefined) throw new TgError('TG_ERR_TOKEN', `key '${label}' has no CKA_EC_POINT`);
    const key = new TokenSigningKey(session, label, id, priv, p256SpkiFromEcPoint(point));
    const prot = key.protection();
    if (
      !prot.token ||
      !prot.sensitive ||
      prot.extractable ||
      !prot.alwaysSensitive ||
      !prot.neverExtractable
    ) {
      throw new TgError(
        'TG_ERR_TOKEN',
        `key '${label}' is or was exportable (${JSON.stringify(prot)}); refusing to sign with it`,
      );
    }
    return key;
  }

  /** Generates a new P-256 key pair on the token. */
  static create(session: Pkcs11Session, label: string): TokenSigningKey {
    const id = randomBytes(16);
    const common = [
      { type: P.CKA_KEY_TYPE, value: P.CKK_EC },
      { type: P.CKA_TOKEN, value: true },
      { type: P.CKA_LABEL, value: label },
      { type: P.CKA_ID, value: id },
    ];
    try {
      session.lib.C_GenerateKeyPair(
        session.handle,
        { mechanism: P.CKM_EC_KEY_PAIR_GEN },
        [
          { type: P.CKA_CLASS, value: P.CKO_PUBLIC_KEY },
          ...common,
          { type: P.CKA_EC_PARAMS, value: P256_EC_PARAMS },
          { type: P.CKA_VERIFY, value: true },
        ],
        [
          { type: P.CKA_CLASS, value: P.CKO_PRIVATE_KEY },
          ...common,
          { type: P.CKA_PRIVATE, value: true },
          { type: P.CKA_SENSITIVE, value: true },
          { type: P.CKA_EXTRACTABLE, value: false },
          { type: P.CKA_SIGN, value: true },
          { type: P.CKA_DERIVE, value: false },
          { type: P.CKA_DECRYPT, value: false },
          { type: P.CKA_UNWRAP, value: false },
        ],
      );
    } catch (err) {
      throw tokenError(`C_GenerateKeyPair for '${label}'`, err);
    }
    const key = TokenSigningKey.find(session, label);
    if (key === undefined) throw new TgError('TG_ERR_TOKEN', `key '${label}' not found after generation`);
    return key;
  }

  static findOrCreate(session: Pkcs11Session, label: string): { key: TokenSigningKey; created: boolean } {
    const found = TokenSigningKey.find(session, label);
    if (found !== undefined) return { key: found, created: false };
    return { key: TokenSigningKey.create(session, label), created: true };
  }

  /** Reads the protection attributes of the private half from the token. */
  protection(): KeyProtection {
    const a = this.session.getAttributes(this.privateHandle, [
      P.CKA_TOKEN,
      P.CKA_PRIVATE,
      P.CKA_SENSITIVE,
      P.CKA_EXTRACTABLE,
      P.CKA_ALWAYS_SENSITIVE,
      P.CKA_NEVER_EXTRACTABLE,
    ]);
    return {
      token: bool(a.get(P.CKA_TOKEN)),
      private: bool(a.get(P.CKA_PRIVATE)),
      sensitive: bool(a.get(P.CKA_SENSITIVE)),
      extractable: bool(a.get(P.CKA_EXTRACTABLE)),
      alwaysSensitive: bool(a.get(P.CKA_ALWAYS_SENSITIVE)),
      neverExtractable: bool(a.get(P.CKA_NEVER_EXTRACTABLE)),
    };
  }

  /** ECDSA P-256 with SHA-256 over `data`; returns r || s (the WebCrypto/IEEE P1363 form). */
  sign(data: Uint8Array): Promise<Buffer> {
    return this.signDigest(createHash('sha256').update(data).digest());
  }

  /**
   * Signs a 32-byte digest inside the token. Calls are queued: a session runs one
   * operation at a time, and C_SignInit/C_Sign must not interleave.
   */
  signDigest(digest: Buffer): Promise<Buffer> {
    if (digest.length !== 32)
      return Promise.reject(new TgError('TG_ERR_INTERNAL', 'SHA-256 digest must be 32 bytes'));
    const run = async (): Promise<Buffer> => {
      const lib = this.session.lib;
      try {
        lib.C_SignInit(this.session.handle, { mechanism: P.CKM_ECDSA }, this.privateHandle);
        const sig = await lib.C_SignAsync(this.session.handle, digest, Buffer.alloc(P256_SIGNATURE_BYTES));
        if (sig.length !== P256_SIGNATURE_BYTES)
          throw new TgError(
            'TG_ERR_TOKEN',
            `C_Sign returned ${sig.length} bytes, expected ${P256_SIGNATURE_BYTES}`,
          );
        return sig;
      } catch (err) {
        throw tokenError(`C_Sign with key '${this.label}'`, err);
      }
    };
    this.pending++;
    const result = this.queue.then(run, run).finally(() => {
      this.pending--;
    });
    this.queue = result.catch(() => undefined);
    return result;
  }

  /**
   * The same signature made synchronously: it blocks the event loop for the token's round
   * trip, so it is for measurement only, and refused while queued signatures are pending.
   */
  signDigestSync(digest: Buffer): Buffer {
    if (this.pending > 0)
      throw new TgError('TG_ERR_INTERNAL', 'synchronous C_Sign while signatures are queued');
    const lib = this.session.lib;
    try {
      lib.C_SignInit(this.session.handle, { mechanism: P.CKM_ECDSA }, this.privateHandle);
      return lib.C_Sign(this.session.handle, digest, Buffer.alloc(P256_SIGNATURE_BYTES));
    } catch (err) {
      throw tokenError(`C_Sign with key '${this.label}'`, err);
    }
  }
}
