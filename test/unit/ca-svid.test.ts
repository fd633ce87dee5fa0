import assert from 'node:assert/strict';
import { X509Certificate as NodeX509, webcrypto } from 'node:crypto';
import { test } from 'node:test';
import { randomSerial, verifyCsr } from '../../src/ca/svid.js';
import { normalizeSerial } from '../../src/identity/certs.js';
import { createKeyAndCsr } from '../../src/identity/identity.js';
import * as x509 from '../../src/identity/x509.js';
import { TgError } from '../../src/util/errors.js';
import { softCa } from '../helpers/ca-memory.js';

const invalidArg = (re: RegExp) => (err: unknown) =>
  err instanceof TgError && err.code === 'TG_ERR_INVALID_ARGUMENT' && re.test(err.message);

async function csrWith(
  algorithm: webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams,
  signing: webcrypto.AlgorithmIdentifier | webcrypto.EcdsaParams,
  sans: x509.JsonGeneralNames = [{ type: 'url', value: 'spiffe://lab.test/nic/h1' }],
): Promise<string> {
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: 'CN=test',
      keys,
      signingAlgorithm: signing,
      extensions: [new x509.SubjectAlternativeNameExtension(sans)],
    },
    webcrypto,
  );
  return csr.toString('pem');
}

test('verifyCsr accepts a P-256 request and reads its URI SANs', async () => {
  const { csrPem } = await createKeyAndCsr('spiffe://lab.test/nic/h1');
  const v = await verifyCsr(csrPem);
  assert.equal(v.keyType, 'ec');
  assert.equal(v.keyDescription, 'EC P-256');
  assert.deepEqual(v.uriSans, ['spiffe://lab.test/nic/h1']);
  assert.equal(v.otherSans, 0);
  assert.match(v.publicKeySha256, /^[0-9a-f]{64}$/);
  const ski = await x509.SubjectKeyIdentifierExtension.create(v.spki, false, webcrypto);
  assert.equal(v.subjectKeyId, ski.keyId, 'RFC 5280 method 1, as @peculiar/x509 computes it');
});

test('verifyCsr refuses a request whose signature does not verify', async () => {
  const { csrPem } = await createKeyAndCsr('spiffe://lab.test/nic/h1');
  const der = Buffer.from(new x509.Pkcs10CertificateRequest(csrPem).rawData);
  der[der.length - 5] ^= 0x01; // inside the signature value
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  await assert.rejects(verifyCsr(tampered), invalidArg(/does not verify|cannot be checked/));
  // A request whose body was changed after signing: another SAN swapped in.
  const other = await createKeyAndCsr('spiffe://lab.test/nic/h2');
  const a = new x509.Pkcs10CertificateRequest(csrPem);
  const b = new x509.Pkcs10CertificateRequest(other.csrPem);
  const aDer = Buffer.from(a.rawData);
  const bDer = Buffer.from(b.rawData);
  const swapped = Buffer.from(aDer.toString('latin1').replace('nic/h1', 'nic/h2'), 'latin1');
  assert.notDeepEqual(swapped, aDer);
  assert.ok(bDer.length > 0);
  const pem = `-----BEGIN CERTIFICATE REQUEST-----\n${swapped.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  await assert.rejects(verifyCsr(pem), invalidArg(/does not verify/));
});

test('verifyCsr refuses garbage, weak keys and oversized input', async () => {
  await assert.rejects(verifyCsr('hello'), invalidArg(/not a PEM certificate request/));
  await assert.rejects(
    verifyCsr('-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n'),
    invalidArg(/not valid PKCS#10/),
  );
  await assert.rejects(
    verifyCsr(`-----BEGIN CERTIFICATE REQUEST-----\n${'A'.repeat(20000)}`),
    invalidArg(/larger/),
  );
  const rsa1024 = await csrWith(
    {
      name: 'RSASSA-PKCS1-v1_5',
      modulusLength: 1024,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: 'SHA-256',
    },
    { name: 'RSASSA-PKCS1-v1_5' },
  );
  await assert.rejects(verifyCsr(rsa1024), invalidArg(/unsupported key rsa/));
  const p521 = await csrWith({ name: 'ECDSA', namedCurve: 'P-521' }, {
    name: 'ECDSA',
    hash: 'SHA-512',
  } as webcrypto.EcdsaParams);
  await assert.rejects(verifyCsr(p521), invalidArg(/unsupported key EC secp521r1/));
});

test('X.509-SVID profile: one URI SAN, leaf, usages, key ids, serial, backdated', async () => {
  const { ca, clock } = await softCa();
  const { csrPem } = await createKeyAndCsr('spiffe://lab.test/tenant/acme/workload/web');
  const svid = await ca.issue({
    csr: await verifyCsr(csrPem),
    spiffeId: 'spiffe://lab.test/tenant/acme/workload/web',
    requester: 'admin',
  });
  const cert = new x509.X509Certificate(svid.certificatePem);
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension)!;
  assert.deepEqual(
    san.names.items.map((n) => [n.type, n.value]),
    [['url', 'spiffe://lab.test/tenant/acme/workload/web']],
  );
  const bc = cert.getExtension(x509.BasicConstraintsExtension)!;
  assert.equal(bc.ca, false);
  assert.equal(bc.critical, true);
  const ku = cert.getExtension(x509.KeyUsagesExtension)!;
  assert.equal(ku.usages, x509.KeyUsageFlags.digitalSignature, 'EC keys get digitalSignature only');
  assert.equal(ku.critical, true);
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension)!;
  assert.deepEqual([...eku.usages], [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]);
  const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension)!;
  const root = new x509.X509Certificate(ca.trustBundle().pems()[0]);
  assert.equal(aki.keyId, root.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId);
  assert.ok(cert.getExtension(x509.SubjectKeyIdentifierExtension));
  assert.equal(svid.serial.length, 32, '16-octet serial, no leading zero octet');
  for (let i = 0; i < 2000; i++) {
    const s = randomSerial();
    assert.equal(normalizeSerial(s), s, 'serial text is canonical');
    assert.match(s, /^[4-7][0-9a-f]{31}$/, 'positive, no DER sign octet, 32 hex digits');
  }
  assert.equal(cert.notBefore.getTime(), Math.floor(clock.now / 1000) * 1000 - 60_000);
  assert.equal(cert.notAfter.getTime(), clock.now + 3600_000);
  assert.ok(await cert.verify({ publicKey: root.publicKey, signatureOnly: true }, webcrypto));
  assert.equal(new NodeX509(svid.certificatePem).checkIssued(new NodeX509(root.toString('pem'))), true);
});

test('RSA requests get keyEncipherment as well', async () => {
  const { ca } = await softCa();
  const pem = await csrWith(
    {
      name: 'RSASSA-PKCS1-v1_5',
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: 'SHA-256',
    },
    { name: 'RSASSA-PKCS1-v1_5' },
  );
  const svid = await ca.issue({
    csr: await verifyCsr(pem),
    spiffeId: 'spiffe://lab.test/nic/h1',
    requester: 'admin',
  });
  const ku = new x509.X509Certificate(svid.certificatePem).getExtension(x509.KeyUsagesExtension)!;
  assert.equal(ku.usages, x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment);
  const v = await verifyCsr(pem);
  assert.equal(
    v.subjectKeyId,
    (await x509.SubjectKeyIdentifierExtension.create(v.spki, false, webcrypto)).keyId,
  );
});

test('issue refuses requests that ask for other names, lifetimes out of range, other trust domains', async () => {
  const { ca } = await softCa();
  const wrongId = await verifyCsr((await createKeyAndCsr('spiffe://lab.test/nic/h2')).csrPem);
  await assert.rejects(
    ca.issue({ csr: wrongId, spiffeId: 'spiffe://lab.test/nic/h1', requester: 'admin' }),
    invalidArg(/names spiffe:\/\/lab.test\/nic\/h2/),
  );
  const dns = await verifyCsr(
    await csrWith(
      { name: 'ECDSA', namedCurve: 'P-256' },
      { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams,
      [{ type: 'dns', value: 'h1.example' }],
    ),
  );
  await assert.rejects(
    ca.issue({ csr: dns, spiffeId: 'spiffe://lab.test/nic/h1', requester: 'admin' }),
    invalidArg(/carries only its SPIFFE ID/),
  );
  const ok = await verifyCsr((await createKeyAndCsr('spiffe://lab.test/nic/h1')).csrPem);
  await assert.rejects(
    ca.issue({ csr: ok, spiffeId: 'spiffe://lab.test/nic/h1', ttlSeconds: 10, requester: 'admin' }),
    invalidArg(/outside 60 to 86400/),
  );
  await assert.rejects(
    ca.issue({ csr: ok, spiffeId: 'spiffe://lab.test/nic/h1', ttlSeconds: 86401, requester: 'admin' }),
    invalidArg(/outside/),
  );
  const foreign = await verifyCsr((await createKeyAndCsr('spiffe://other.test/nic/h1')).csrPem);
  await assert.rejects(
    ca.issue({ csr: foreign, spiffeId: 'spiffe://other.test/nic/h1', requester: 'admin' }),
    (err: unknown) => err instanceof TgError && err.code === 'TG_ERR_FORBIDDEN',
  );
});

test('serials: random, positive, canonical text', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const s = randomSerial();
    assert.match(s, /^[0-9a-f]{32}$/);
    assert.notEqual(s.slice(0, 2), '00');
    seen.add(s);
  }
  assert.equal(seen.size, 200);
  assert.equal(normalizeSerial('00:AB:cd'), 'abcd');
  assert.equal(normalizeSerial('0x00ff'), 'ff');
  assert.equal(normalizeSerial('0'), '0');
  assert.throws(() => normalizeSerial('xyz'), TgError);
  assert.throws(() => normalizeSerial('a'.repeat(41)), TgError);
});
