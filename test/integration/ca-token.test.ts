// The CA signing key in a PKCS#11 token (embedded SoftHSM2): created sensitive and not
// extractable, impossible to read out or wrap, every signature made by C_Sign inside the
// token, found again by label, and a weak key refused.
import assert from 'node:assert/strict';
import { createPublicKey, verify } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { CertificateAuthority } from '../../src/ca/authority.js';
import type { TokenKeyStore } from '../../src/ca/key-store.js';
import { P } from '../../src/ca/pkcs11-module.js';
import { TokenSigningKey } from '../../src/ca/token-key.js';
import * as x509 from '../../src/identity/x509.js';
import { TgError } from '../../src/util/errors.js';
import { run, runOk } from '../../src/util/exec.js';
import { type CaTestEnv, caTestEnv, filesUnder } from '../helpers/ca-softhsm.js';

let env: CaTestEnv;
let ca: CertificateAuthority;
let store: TokenKeyStore;

before(async () => {
  env = caTestEnv();
  ca = CertificateAuthority.open(env.config());
  const r = await ca.init();
  assert.equal(r.keyCreated, true);
  store = ca.keyStore() as TokenKeyStore;
});

after(() => {
  ca?.close();
  env?.cleanup();
});

test('the token lives under the state directory, through our own SOFTHSM2_CONF', () => {
  const conf = join(env.stateDir, 'softhsm', 'softhsm2.conf');
  assert.equal(process.env.SOFTHSM2_CONF, conf);
  const tokens = join(env.stateDir, 'softhsm', 'tokens');
  assert.equal(readdirSync(tokens).length, 1, 'one token directory');
  assert.ok(filesUnder(tokens).some((f) => f.endsWith('.object')));
});

test('the key is sensitive and not extractable, and always was', () => {
  const key = store.tokenKey('tenguard-ca');
  assert.deepEqual(key.protection(), {
    token: true,
    private: true,
    sensitive: true,
    extractable: false,
    alwaysSensitive: true,
    neverExtractable: true,
  });
});

test('reading the private value out fails (CKR_ATTRIBUTE_SENSITIVE)', () => {
  const key = store.tokenKey('tenguard-ca');
  assert.throws(
    () => store.session.getAttributes(key.privateHandle, [P.CKA_VALUE]),
    (err: unknown) =>
      err instanceof TgError && err.code === 'TG_ERR_TOKEN' && /CKR_ATTRIBUTE_SENSITIVE/.test(err.message),
  );
});

test('wrapping it out under a key of ours fails, and it cannot be made extractable', () => {
  const key = store.tokenKey('tenguard-ca');
  const lib = store.session.lib;
  const s = store.session.handle;
  const wrapping = lib.C_GenerateKey(s, { mechanism: P.CKM_AES_KEY_GEN }, [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_VALUE_LEN, value: 32 },
    { type: P.CKA_TOKEN, value: false },
    { type: P.CKA_WRAP, value: true },
    { type: P.CKA_EXTRACTABLE, value: true },
  ]);
  try {
    assert.throws(
      () =>
        lib.C_WrapKey(
          s,
          { mechanism: P.CKM_AES_KEY_WRAP_PAD },
          wrapping,
          key.privateHandle,
          Buffer.alloc(4096),
        ),
      /CKR_KEY_UNEXTRACTABLE|CKR_KEY_NOT_WRAPPABLE/,
    );
  } finally {
    lib.C_DestroyObject(s, wrapping);
  }
  assert.throws(
    () => lib.C_SetAttributeValue(s, key.privateHandle, [{ type: P.CKA_EXTRACTABLE, value: true }]),
    /CKR_ATTRIBUTE_READ_ONLY|CKR_ATTRIBUTE_VALUE_INVALID/,
  );
  assert.throws(
    () => lib.C_SetAttributeValue(s, key.privateHandle, [{ type: P.CKA_SENSITIVE, value: false }]),
    /CKR_ATTRIBUTE_READ_ONLY|CKR_ATTRIBUTE_VALUE_INVALID/,
  );
  assert.equal(key.protection().extractable, false);
});

test('signatures come from C_Sign and verify under the public half', async () => {
  const key = store.tokenKey('tenguard-ca');
  const data = Buffer.from('tenguard CA signature test');
  const sig = await key.sign(data);
  assert.equal(sig.length, 64);
  const pub = createPublicKey({ key: key.spki, format: 'der', type: 'spki' });
  assert.equal(verify('sha256', data, { key: pub, dsaEncoding: 'ieee-p1363' }, sig), true);
  assert.equal(verify('sha256', Buffer.from('other'), { key: pub, dsaEncoding: 'ieee-p1363' }, sig), false);
  // Concurrent callers are queued on the one session, none lost.
  const many = await Promise.all(Array.from({ length: 50 }, (_, i) => key.sign(Buffer.from(`m${i}`))));
  many.forEach((s, i) => {
    assert.ok(verify('sha256', Buffer.from(`m${i}`), { key: pub, dsaEncoding: 'ieee-p1363' }, s));
  });
});

test('the root is signed by the token key and verifies with OpenSSL', async () => {
  const pem = ca.trustBundle().toPem();
  const root = new x509.X509Certificate(pem);
  assert.ok(Buffer.from(root.publicKey.rawData).equals(store.tokenKey('tenguard-ca').spki));
  assert.ok(await root.isSelfSigned());
  const path = env.file('root.pem', pem);
  assert.match(await runOk('openssl', ['verify', '-CAfile', path, path]), /OK/);
  const text = await runOk('openssl', ['x509', '-in', path, '-noout', '-text']);
  assert.match(text, /CA:TRUE, pathlen:0/);
  assert.match(text, /Certificate Sign, CRL Sign/);
  assert.match(text, /ecdsa-with-SHA256/);
});

test('re-opening finds the same key and root by label; a wrong PIN is refused', async () => {
  const before = ca.trustBundle().toPem();
  ca.close();
  ca = CertificateAuthority.open(env.config());
  const again = await ca.init();
  assert.equal(again.keyCreated, false);
  assert.equal(again.certificateCreated, false);
  assert.equal(ca.trustBundle().toPem(), before);
  // PKCS#11 login state is per application: while this process is logged in, another login
  // answers CKR_USER_ALREADY_LOGGED_IN without checking the PIN. So log out first.
  ca.close();
  const wrong = CertificateAuthority.open(env.config(), { token: { pin: () => 'wrong-pin-0000' } });
  assert.throws(
    () => wrong.keyStore(),
    (err: unknown) =>
      err instanceof TgError && err.code === 'TG_ERR_TOKEN' && /PIN .*is incorrect/.test(err.message),
  );
  ca = CertificateAuthority.open(env.config());
  await ca.init();
  store = ca.keyStore() as TokenKeyStore;
});

test('a key that is or was extractable is refused', () => {
  const s = store.session;
  s.lib.C_GenerateKeyPair(
    s.handle,
    { mechanism: P.CKM_EC_KEY_PAIR_GEN },
    [
      { type: P.CKA_CLASS, value: P.CKO_PUBLIC_KEY },
      { type: P.CKA_KEY_TYPE, value: P.CKK_EC },
      { type: P.CKA_TOKEN, value: false },
      { type: P.CKA_LABEL, value: 'weak' },
      { type: P.CKA_ID, value: Buffer.from('77', 'hex') },
      { type: P.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex') },
    ],
    [
      { type: P.CKA_CLASS, value: P.CKO_PRIVATE_KEY },
      { type: P.CKA_KEY_TYPE, value: P.CKK_EC },
      { type: P.CKA_TOKEN, value: false },
      { type: P.CKA_LABEL, value: 'weak' },
      { type: P.CKA_ID, value: Buffer.from('77', 'hex') },
      { type: P.CKA_SENSITIVE, value: false },
      { type: P.CKA_EXTRACTABLE, value: true },
      { type: P.CKA_SIGN, value: true },
    ],
  );
  assert.throws(() => TokenSigningKey.find(s, 'weak'), /is or was exportable .*refusing to sign/);
});

test('a configured external token: found by label, never initialised by us', async () => {
  ca.close();
  // An operator-provided token (initialised with softhsm2-util) in its own store.
  const ext = env.file('external');
  mkdirSync(join(ext, 'tokens'), { recursive: true });
  const conf = join(ext, 'softhsm2.conf');
  writeFileSync(
    conf,
    `directories.tokendir = ${join(ext, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`,
  );
  const saved = process.env.SOFTHSM2_CONF;
  process.env.SOFTHSM2_CONF = conf;
  try {
    const r = await run('softhsm2-util', [
      '--init-token',
      '--free',
      '--label',
      'ops-token',
      '--so-pin',
      '87654321',
      '--pin',
      env.pin,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const config = env.config({
      stateDir: join(env.dir, 'ext-state'),
      token: { label: 'ops-token', pin: { env: env.pinEnv }, embedded: false },
    });
    const extCa = CertificateAuthority.open(config);
    try {
      const r1 = await extCa.init();
      assert.equal(r1.keyCreated, true);
      assert.ok(
        !existsSync(join(env.dir, 'ext-state', 'softhsm')),
        'no embedded store for an external token',
      );
    } finally {
      extCa.close();
    }
    const missing = CertificateAuthority.open(
      env.config({
        stateDir: join(env.dir, 'ext-state2'),
        token: { label: 'no-such-token', pin: { env: env.pinEnv }, embedded: false },
      }),
    );
    assert.throws(() => missing.keyStore(), /no initialised token labelled 'no-such-token'/);
  } finally {
    if (saved === undefined) delete process.env.SOFTHSM2_CONF;
    else process.env.SOFTHSM2_CONF = saved;
    ca = CertificateAuthority.open(env.config());
  }
});
