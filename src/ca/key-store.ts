// Where the CA's signing keys live. The CA asks for a key by label and gets a public key and
// a CryptoKey-shaped handle to sign with; TokenKeyStore is the one implementation shipped
// (a PKCS#11 token: the embedded SoftHSM2 or any configured module).
import type { webcrypto } from 'node:crypto';
import { TgError } from '../util/errors.js';
import { logger } from '../util/log.js';
import type { CaConfig } from './config.js';
import { readPin } from './pin.js';
import { Pkcs11Module, type Pkcs11Session } from './pkcs11-module.js';
import { initSoftHsmToken, prepareSoftHsm } from './softhsm.js';
import { tokenCrypto, tokenCryptoKey } from './token-crypto.js';
import { TokenSigningKey } from './token-key.js';

export interface CaKey {
  readonly label: string;
  /** DER SubjectPublicKeyInfo. */
  readonly spki: Buffer;
  /** Signs through `crypto` (ECDSA P-256, SHA-256); holds no key material. */
  readonly signingKey: webcrypto.CryptoKey;
}

export interface CaKeyStore {
  /** The WebCrypto provider that can sign with this store's keys. */
  readonly crypto: webcrypto.Crypto;
  find(label: string): Promise<CaKey | undefined>;
  findOrCreate(label: string): Promise<{ key: CaKey; created: boolean }>;
  close(): void;
}

const log = logger('ca.token');

export interface TokenOpenOptions {
  /** Supplies the user PIN; default: read the configured PIN source. */
  readonly pin?: () => string;
  /** Supplies the SO PIN for a first initialisation of the embedded token. */
  readonly soPin?: () => string;
}

export class TokenKeyStore implements CaKeyStore {
  readonly crypto = tokenCrypto;
  private readonly keys = new Map<string, { token: TokenSigningKey; key: CaKey }>();

  private constructor(
    private readonly module: Pkcs11Module,
    /** The logged-in session every key of this store signs in. */
    readonly session: Pkcs11Session,
    readonly tokenLabel: string,
  ) {}

  /**
   * Opens the configured token and logs in. For the embedded SoftHSM2 the token store lives
   * under <stateDir>/softhsm and the token is initialised on first use.
   */
  static open(config: CaConfig, opts: TokenOpenOptions = {}): TokenKeyStore {
    const t = config.token;
    const context = t.embedded ? prepareSoftHsm(config.stateDir).conf : '';
    const mod = Pkcs11Module.open(t.module, context);
    try {
      let pin = opts.pin?.() ?? readPin(t.pin);
      try {
        let token = mod.findToken(t.label);
        if (token === undefined) {
          if (!t.embedded) {
            throw new TgError(
              'TG_ERR_TOKEN',
              `no initialised token labelled '${t.label}' in module ${t.module}`,
            );
          }
          const so = opts.soPin?.() ?? (t.soPin === undefined ? undefined : readPin(t.soPin));
          token = initSoftHsmToken(mod, t.label, pin, so);
          log.info({ token: t.label }, 'initialised embedded SoftHSM2 token');
        }
        const session = mod.openUserSession(token, pin);
        return new TokenKeyStore(mod, session, t.label);
      } finally {
        pin = '';
      }
    } catch (err) {
      mod.close();
      throw err;
    }
  }

  async find(label: string): Promise<CaKey | undefined> {
    return this.findSync(label);
  }

  private findSync(label: string): CaKey | undefined {
    const have = this.keys.get(label);
    if (have !== undefined) return have.key;
    const token = TokenSigningKey.find(this.session, label);
    return token === undefined ? undefined : this.remember(token);
  }

  async findOrCreate(label: string): Promise<{ key: CaKey; created: boolean }> {
    const have = this.findSync(label);
    if (have !== undefined) return { key: have, created: false };
    const token = TokenSigningKey.create(this.session, label);
    log.info({ key: label }, 'generated CA signing key in the token (sensitive, not extractable)');
    return { key: this.remember(token), created: true };
  }

  /** The token-level key object, for attribute checks and measurements. */
  tokenKey(label: string): TokenSigningKey {
    this.findSync(label);
    const have = this.keys.get(label);
    if (have === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no key '${label}' on the token`);
    return have.token;
  }

  close(): void {
    this.keys.clear();
    this.session.close();
    this.module.close();
  }

  private remember(token: TokenSigningKey): CaKey {
    const key: CaKey = Object.freeze({
      label: token.label,
      spki: token.spki,
      signingKey: tokenCryptoKey(token),
    });
    this.keys.set(token.label, { token, key });
    return key;
  }
}
