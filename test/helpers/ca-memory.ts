// Test support for the CA library without a token: a software key store (WebCrypto keys in
// memory, for unit tests only: the shipped CA signs only through PKCS#11) and helpers to
// build configurations, CAs and identities.
import { webcrypto } from 'node:crypto';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { type CaConfig, parseCaConfig } from '../../src/ca/config.js';
import type { CaKey, CaKeyStore } from '../../src/ca/key-store.js';
import { MemoryCaStore } from '../../src/ca/store.js';
import { verifyCsr } from '../../src/ca/svid.js';
import { assembleIdentity, createKeyAndCsr, type Identity } from '../../src/identity/identity.js';

export class SoftwareKeyStore implements CaKeyStore {
  readonly crypto = webcrypto;
  private readonly keys = new Map<string, CaKey>();

  async find(label: string): Promise<CaKey | undefined> {
    return this.keys.get(label);
  }

  async findOrCreate(label: string): Promise<{ key: CaKey; created: boolean }> {
    const have = this.keys.get(label);
    if (have !== undefined) return { key: have, created: false };
    const pair = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
    const spki = Buffer.from(await webcrypto.subtle.exportKey('spki', pair.publicKey));
    const key: CaKey = { label, spki, signingKey: pair.privateKey };
    this.keys.set(label, key);
    return { key, created: true };
  }

  close(): void {}
}

export function testConfig(overrides: Record<string, unknown> = {}): CaConfig {
  return parseCaConfig({
    stateDir: '/nonexistent/tg-ca-unit',
    trustDomain: 'lab.test',
    token: { label: 'unit', pin: { env: 'TG_UNIT_PIN_UNUSED' } },
    ...overrides,
  });
}

export interface SoftCa {
  ca: CertificateAuthority;
  store: MemoryCaStore;
  clock: { now: number };
}

/** A CA with a software key and an in-memory store, on a settable clock. */
export async function softCa(
  overrides: Record<string, unknown> = {},
  start = Date.UTC(2030, 0, 1),
): Promise<SoftCa> {
  const store = new MemoryCaStore();
  const clock = { now: start };
  const keys = new SoftwareKeyStore();
  const ca = CertificateAuthority.open(testConfig(overrides), {
    store,
    keys: () => keys,
    now: () => clock.now,
  });
  await ca.init();
  return { ca, store, clock };
}

/** A fresh key, a CSR and the identity the CA issues for it. */
export async function issueIdentity(
  ca: CertificateAuthority,
  spiffeId: string,
  ttlSeconds?: number,
): Promise<Identity> {
  const { privateKey, csrPem } = await createKeyAndCsr(spiffeId);
  const svid = await ca.issue({ csr: await verifyCsr(csrPem), spiffeId, ttlSeconds, requester: 'admin' });
  return assembleIdentity(privateKey, [svid.certificatePem, ...svid.chainPem], spiffeId);
}
