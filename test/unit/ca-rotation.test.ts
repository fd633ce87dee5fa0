import assert from 'node:assert/strict';
import { webcrypto, X509Certificate } from 'node:crypto';
import { test } from 'node:test';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { MemoryCaStore } from '../../src/ca/store.js';
import { createRootCertificate, randomSerial, subjectKeyId, toPem } from '../../src/ca/svid.js';
import { TrustBundle } from '../../src/identity/trust-bundle.js';
import * as x509 from '../../src/identity/x509.js';
import { TgError } from '../../src/util/errors.js';
import { issueIdentity, SoftwareKeyStore, softCa, testConfig } from '../helpers/ca-memory.js';

const conflict = (re: RegExp) => (err: unknown) =>
  err instanceof TgError && err.code === 'TG_ERR_CONFLICT' && re.test(err.message);
const forbidden = (re: RegExp) => (err: unknown) =>
  err instanceof TgError && err.code === 'TG_ERR_FORBIDDEN' && re.test(err.message);
const akiOf = (pem: string): string =>
  new x509.X509Certificate(pem).getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId!;

test('rotation: prepare, activate, retire with old and new roots trusted side by side', async () => {
  const { ca, clock } = await softCa();
  const g1 = ca.trustBundle();
  assert.equal(g1.roots.length, 1);
  const a = await issueIdentity(ca, 'spiffe://lab.test/nic/h1', 3600);

  const prepared = await ca.rotatePrepare();
  assert.equal(prepared.generation.state, 'next');
  assert.equal(prepared.generation.keyLabel, 'tenguard-ca.g2');
  const both = ca.trustBundle();
  assert.equal(both.roots.length, 2, 'the next root is trusted before it signs');
  const stillOld = await issueIdentity(ca, 'spiffe://lab.test/nic/h2', 3600);
  assert.equal(
    akiOf(stillOld.certificatePem),
    akiOf(a.certificatePem),
    'generation 1 signs until activation',
  );

  await assert.rejects(ca.rotatePrepare(), conflict(/already next/));
  const active = await ca.rotateActivate();
  assert.equal(active.id, 2);
  const b = await issueIdentity(ca, 'spiffe://lab.test/nic/h3', 3600);
  assert.notEqual(akiOf(b.certificatePem), akiOf(a.certificatePem), 'generation 2 signs after activation');

  const now = new Date(clock.now);
  const bundle = ca.trustBundle();
  assert.equal(bundle.roots.length, 2);
  const rootA = bundle.verify(a.certificatePem, [], now);
  const rootB = bundle.verify(b.certificatePem, [], now);
  assert.notEqual(rootA.fingerprint256, rootB.fingerprint256);
  // Relying parties still holding only the old bundle keep accepting old certificates.
  g1.verify(a.certificatePem, [], now);
  assert.throws(() => g1.verify(b.certificatePem, [], now), forbidden(/no issuer/));

  assert.throws(() => ca.rotateRetire(), conflict(/2 certificates from generation 1 are valid until/));
  clock.now += 3601_000;
  const retired = ca.rotateRetire();
  assert.equal(retired.id, 1);
  const after = ca.trustBundle();
  assert.equal(after.roots.length, 1);
  assert.throws(
    () => after.verify(a.certificatePem, [], new Date(clock.now - 2000_000)),
    forbidden(/no issuer/),
  );
  after.verify(b.certificatePem, [], new Date(clock.now - 2000_000));
  assert.deepEqual(
    ca.generations().map((g) => [g.id, g.state]),
    [
      [1, 'retired'],
      [2, 'active'],
    ],
  );
});

test('rotation refuses to activate over an unretired previous generation; retire can be forced', async () => {
  const { ca } = await softCa();
  await issueIdentity(ca, 'spiffe://lab.test/nic/h1', 3600);
  await assert.rejects(ca.rotateActivate(), conflict(/no prepared generation/));
  await ca.rotatePrepare();
  await ca.rotateActivate();
  await ca.rotatePrepare();
  await assert.rejects(ca.rotateActivate(), conflict(/generation 1 is still trusted as previous/));
  assert.throws(() => ca.rotateRetire(), conflict(/valid until/));
  assert.equal(ca.rotateRetire({ force: true }).id, 1);
  assert.equal((await ca.rotateActivate()).id, 3);
  assert.equal(ca.trustBundle().roots.length, 2);
});

test('a revoked certificate no longer blocks retirement', async () => {
  const { ca } = await softCa();
  const a = await issueIdentity(ca, 'spiffe://lab.test/nic/h1', 3600);
  await ca.rotatePrepare();
  await ca.rotateActivate();
  ca.revoke(a.serial, 'superseded');
  assert.equal(ca.rotateRetire().id, 1);
});

test('intermediate under an external root: request, install, issue, chain', async () => {
  const { ca, clock } = await softCa({}, Date.now());
  // softCa() made a root generation; a second CA in intermediate mode:
  const keys = new SoftwareKeyStore();
  const inter = CertificateAuthority.open(testConfig(), {
    store: new MemoryCaStore(),
    keys: () => keys,
    now: () => clock.now,
  });
  const init = await inter.init({ intermediate: true });
  assert.equal(init.generation.state, 'pending');
  assert.match(init.request ?? '', /BEGIN CERTIFICATE REQUEST/);
  assert.throws(() => inter.trustBundle(), /no CA/);
  assert.equal(
    (await inter.init({ intermediate: true })).request,
    init.request,
    'init finds the pending request again',
  );

  // The external root (software here; the integration test uses openssl).
  const extKeys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const extSpki = Buffer.from(await webcrypto.subtle.exportKey('spki', extKeys.publicKey));
  const extRoot = await createRootCertificate({
    spki: extSpki,
    signingKey: extKeys.privateKey,
    crypto: webcrypto,
    subject: 'CN=External Root',
    notBefore: new Date(clock.now - 60_000),
    notAfter: new Date(clock.now + 365 * 86_400_000),
  });
  const req = new x509.Pkcs10CertificateRequest(init.request!);
  assert.ok(await req.verify(webcrypto), 'the token-signed request verifies');
  const makeIntermediate = async (ca: boolean) =>
    x509.X509CertificateGenerator.create(
      {
        serialNumber: randomSerial(),
        subject: req.subjectName,
        issuer: extRoot.subjectName,
        notBefore: new Date(clock.now - 60_000),
        notAfter: new Date(clock.now + 30 * 86_400_000),
        publicKey: req.publicKey,
        signingKey: extKeys.privateKey,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
        extensions: [
          new x509.BasicConstraintsExtension(ca, ca ? 0 : undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
          await x509.SubjectKeyIdentifierExtension.create(req.publicKey, false, webcrypto),
          new x509.AuthorityKeyIdentifierExtension(subjectKeyId(extRoot)),
        ],
      },
      webcrypto,
    );
  const notCa = await makeIntermediate(false);
  await assert.rejects(inter.installIntermediate(toPem(notCa), toPem(extRoot)), /not a CA certificate/);
  const otherRoot = ca.trustBundle().toPem();
  const good = await makeIntermediate(true);
  await assert.rejects(inter.installIntermediate(toPem(good), otherRoot), forbidden(/no issuer/));
  const wrongKey = new x509.X509Certificate(ca.trustBundle().pems()[0]);
  await assert.rejects(
    inter.installIntermediate(toPem(wrongKey), toPem(extRoot)),
    /does not carry this CA's token key/,
  );

  const installed = await inter.installIntermediate(toPem(good), toPem(extRoot));
  assert.equal(installed.state, 'active');
  const leaf = await issueIdentity(inter, 'spiffe://lab.test/nic/h9', 600);
  assert.equal(leaf.chainPem.length, 1, 'the intermediate travels with the leaf');
  const bundle = inter.trustBundle();
  assert.equal(bundle.roots[0].fingerprint256, new X509Certificate(toPem(extRoot)).fingerprint256);
  bundle.verify(leaf.certificatePem, leaf.chainPem, new Date(clock.now));
  assert.throws(() => bundle.verify(leaf.certificatePem, [], new Date(clock.now)), forbidden(/no issuer/));
});

test('trust bundle: CA certificates only, PEM round trip, removal by fingerprint, validity', async () => {
  const { ca, clock } = await softCa();
  const id = await issueIdentity(ca, 'spiffe://lab.test/nic/h1', 600);
  assert.throws(() => TrustBundle.of('lab.test', [id.certificatePem]), /not a CA certificate/);
  assert.throws(() => TrustBundle.of('lab.test', []), /at least one root/);
  const b = ca.trustBundle();
  const again = TrustBundle.fromPem('lab.test', b.toPem() + b.toPem());
  assert.equal(again.roots.length, 1, 'duplicates collapse');
  assert.throws(() => b.withoutRoot(b.fingerprints()[0]), /at least one root/);
  assert.throws(() => b.verify(id.certificatePem, [], new Date(clock.now + 601_000)), forbidden(/expired/));
  assert.throws(
    () => b.verify(id.certificatePem, [], new Date(clock.now - 3600_000)),
    forbidden(/not valid yet/),
  );
  assert.throws(() => TrustBundle.fromPem('lab.test', `${b.toPem()}junk`), /unexpected text/);
});
