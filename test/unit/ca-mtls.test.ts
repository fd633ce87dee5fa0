import assert from 'node:assert/strict';
import { webcrypto, X509Certificate } from 'node:crypto';
import { test } from 'node:test';
import { RevocationList } from '../../src/ca/revocation.js';
import { randomSerial } from '../../src/ca/svid.js';
import { authorize, privateKeyPem } from '../../src/identity/mtls.js';
import * as x509 from '../../src/identity/x509.js';
import { issueIdentity, softCa } from '../helpers/ca-memory.js';

const TD = 'lab.test';
const NICS = [`spiffe://${TD}/nic/*`];

/** A leaf signed by a throwaway key with arbitrary SANs, to feed authorize() odd certificates. */
async function oddLeaf(sans: x509.JsonGeneralNames, ca = false): Promise<string> {
  const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomSerial(),
      name: 'O=odd',
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 3600_000),
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [
        new x509.BasicConstraintsExtension(ca, undefined, true),
        ...(sans.length ? [new x509.SubjectAlternativeNameExtension(sans)] : []),
      ],
    },
    webcrypto,
  );
  return cert.toString('pem');
}

test('authorize: the table of refusals, each with its reason', async () => {
  const { ca, clock } = await softCa({}, Date.now());
  const nic = await issueIdentity(ca, `spiffe://${TD}/nic/h1`, 600);
  const wl = await issueIdentity(ca, `spiffe://${TD}/tenant/acme/workload/web`, 600);
  const revoked = await issueIdentity(ca, `spiffe://${TD}/nic/h2`, 600);
  ca.revoke(revoked.serial, 'keyCompromise');
  const other = await softCa({ trustDomain: 'other.test' }, Date.now());
  const foreign = await issueIdentity(other.ca, 'spiffe://other.test/nic/h1', 600);
  const opts = { trustDomain: TD, isRevoked: ca.revocations.isRevoked, now: () => clock.now };

  const cases: [string, Parameters<typeof authorize>[0], readonly string[], RegExp | true][] = [
    ['own NIC', nic.certificate, NICS, true],
    ['PEM input', nic.certificatePem, NICS, true],
    ['DER input', nic.certificate.raw, NICS, true],
    ['workload where NICs are allowed', wl.certificate, NICS, /is not allowed here/],
    ['workload pattern', wl.certificate, [`spiffe://${TD}/tenant/acme/workload/*`], true],
    [
      'other tenant pattern',
      wl.certificate,
      [`spiffe://${TD}/tenant/blue/workload/*`],
      /is not allowed here/,
    ],
    ['revoked', revoked.certificate, NICS, /is revoked/],
    ['other trust domain', foreign.certificate, NICS, /trust domain 'other.test', not 'lab.test'/],
    [
      'pattern naming the other domain still refused',
      foreign.certificate,
      ['spiffe://other.test/nic/*'],
      /trust domain/,
    ],
    ['no SAN', await oddLeaf([]), NICS, /exactly one URI SAN, this one has 0/],
    [
      'two URI SANs',
      await oddLeaf([
        { type: 'url', value: `spiffe://${TD}/nic/h1` },
        { type: 'url', value: `spiffe://${TD}/nic/h2` },
      ]),
      NICS,
      /this one has 2/,
    ],
    [
      'not a SPIFFE URI',
      await oddLeaf([{ type: 'url', value: 'https://h1.example/' }]),
      NICS,
      /must start with spiffe/,
    ],
    ['CA certificate', ca.trustBundle().pems()[0], NICS, /CA certificate is not an identity/],
    ['nothing', undefined, NICS, /no certificate presented/],
    ['empty PeerCertificate', {} as never, NICS, /no certificate presented/],
    ['garbage', Buffer.from('not a certificate'), NICS, /unreadable certificate/],
    ['bad allow-list', nic.certificate, ['not-a-pattern'], /invalid allow-list/],
  ];
  for (const [name, peer, allowed, want] of cases) {
    const r = authorize(peer, allowed, opts);
    if (want === true) {
      assert.equal(r.allowed, true, `${name}: ${r.allowed ? '' : r.reason}`);
    } else {
      assert.equal(r.allowed, false, name);
      if (!r.allowed) assert.match(r.reason, want, name);
    }
  }
  const ok = authorize(nic.certificate, NICS, opts);
  assert.ok(ok.allowed && ok.id.kind === 'nic' && ok.id.host === 'h1' && ok.serial === nic.serial);
});

test('authorize: expiry and not-yet-valid are judged on the supplied clock', async () => {
  const { ca, clock } = await softCa({ issuance: { backdateSeconds: 0 } }, Date.now());
  const nic = await issueIdentity(ca, `spiffe://${TD}/nic/h1`, 60);
  const at = (t: number) => authorize(nic.certificate, NICS, { trustDomain: TD, now: () => t });
  assert.equal(at(clock.now + 59_000).allowed, true);
  const expired = at(clock.now + 61_000);
  assert.ok(!expired.allowed && /expired at/.test(expired.reason));
  const early = at(clock.now - 5_000);
  assert.ok(!early.allowed && /not valid before/.test(early.reason));
});

test('revocation takes effect on the next check', async () => {
  const { ca, clock } = await softCa({}, Date.now());
  const nic = await issueIdentity(ca, `spiffe://${TD}/nic/h1`, 600);
  const list = new RevocationList(undefined, { now: () => clock.now });
  const opts = { trustDomain: TD, isRevoked: list.isRevoked };
  assert.equal(authorize(nic.certificate, NICS, opts).allowed, true);
  list.add({
    serial: nic.serial.toUpperCase(),
    revokedAt: new Date().toISOString(),
    reason: 'test',
    notAfter: nic.notAfter.toISOString(),
  });
  assert.equal(authorize(nic.certificate, NICS, opts).allowed, false);
  assert.equal(list.isRevoked('not hex'), true, 'an unreadable serial counts as revoked');
});

test('privateKeyPem matches the standard PKCS#8 PEM encoding', async () => {
  const { ca } = await softCa({}, Date.now());
  const id = await issueIdentity(ca, `spiffe://${TD}/nic/h1`, 600);
  const pem = privateKeyPem(id.privateKey);
  assert.equal(pem.toString(), id.privateKey.export({ format: 'pem', type: 'pkcs8' }));
  assert.ok(new X509Certificate(id.certificatePem).checkPrivateKey(id.privateKey));
});
