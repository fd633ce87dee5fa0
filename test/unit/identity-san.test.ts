// san.ts against @peculiar/x509 (the full ASN.1 parser): the same URI SANs for certificates
// with every kind of subjectAltName, and a clear DerError (never another exception, never a
// wrong answer) for every truncation and every single-byte change of the structure.
import assert from 'node:assert/strict';
import { webcrypto, X509Certificate } from 'node:crypto';
import { test } from 'node:test';
import { svidSpiffeId } from '../../src/identity/identity.js';
import { certificateUriSans, DerError } from '../../src/identity/san.js';
import * as x509 from '../../src/identity/x509.js';
import { TgError } from '../../src/util/errors.js';

const keysP = webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
  'sign',
  'verify',
]) as Promise<webcrypto.CryptoKeyPair>;

async function cert(exts: x509.Extension[]): Promise<x509.X509Certificate> {
  return x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: '01',
      name: 'CN=san test',
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_600_000),
      keys: await keysP,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: exts,
    },
    webcrypto,
  );
}

/** The URIs as the full ASN.1 parser reads them. */
function reference(c: x509.X509Certificate): string[] {
  const out: string[] = [];
  for (const ext of c.getExtensions('2.5.29.17')) {
    const san = new x509.SubjectAlternativeNameExtension(ext.rawData);
    for (const n of san.names.items) if (n.type === 'url') out.push(n.value);
  }
  return out;
}

const san = (names: x509.JsonGeneralNames, critical = false) =>
  new x509.SubjectAlternativeNameExtension(names, critical);

const CASES: { name: string; exts: () => x509.Extension[] }[] = [
  { name: 'one SPIFFE ID', exts: () => [san([{ type: 'url', value: 'spiffe://lab.test/nic/h1' }])] },
  { name: 'critical SAN', exts: () => [san([{ type: 'url', value: 'spiffe://lab.test/service/x' }], true)] },
  {
    name: 'two URIs among other names',
    exts: () => [
      san([
        { type: 'dns', value: 'h1.example' },
        { type: 'url', value: 'spiffe://a.test/nic/h1' },
        { type: 'ip', value: '198.18.0.1' },
        { type: 'email', value: 'ops@example.org' },
        { type: 'url', value: 'https://example.org/x,y' },
      ]),
    ],
  },
  { name: 'no URI', exts: () => [san([{ type: 'dns', value: 'only.example' }])] },
  { name: 'no SAN extension', exts: () => [new x509.BasicConstraintsExtension(false, undefined, true)] },
  {
    name: 'a long URI (long-form lengths)',
    exts: () => [san([{ type: 'url', value: `spiffe://lab.test/w/${'a'.repeat(300)}` }])],
  },
  {
    name: 'SAN after other extensions',
    exts: () => [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      san([{ type: 'url', value: 'spiffe://lab.test/tenant/acme/workload/w1' }]),
    ],
  },
];

for (const c of CASES) {
  test(`certificateUriSans reads what @peculiar/x509 reads: ${c.name}`, async () => {
    const crt = await cert(c.exts());
    assert.deepEqual(certificateUriSans(new Uint8Array(crt.rawData)), reference(crt));
  });
}

test('certificateUriSans: every truncation and every trailing byte is a DerError', async () => {
  const der = new Uint8Array((await cert(CASES[2].exts())).rawData);
  for (let n = 0; n < der.length; n++)
    assert.throws(() => certificateUriSans(der.subarray(0, n)), DerError, `truncated to ${n}`);
  const longer = new Uint8Array(der.length + 1);
  longer.set(der);
  assert.throws(() => certificateUriSans(longer), DerError);
});

test('certificateUriSans: a changed byte gives a DerError or the same answer as the full parser', async () => {
  const der = new Uint8Array((await cert(CASES[2].exts())).rawData);
  let differentOk = 0;
  for (let i = 0; i < der.length; i++)
    for (const x of [0x01, 0xff]) {
      const m = Uint8Array.from(der);
      m[i] ^= x;
      let mine: string[] | DerError;
      try {
        mine = certificateUriSans(m);
      } catch (err) {
        assert.ok(err instanceof DerError, `byte ${i} ^ ${x}: ${String(err)}`);
        continue;
      }
      let theirs: string[] | null;
      try {
        theirs = reference(new x509.X509Certificate(m));
      } catch {
        theirs = null;
      }
      // Where the full parser reads the changed certificate, both agree on its URIs.
      if (theirs !== null) assert.deepEqual(mine, theirs, `byte ${i} ^ ${x}`);
      else differentOk++;
    }
  // A change in the signature or a key leaves the structure intact: both still read it.
  assert.ok(differentOk < der.length, `${differentOk} changes only this reader accepted`);
});

test('svidSpiffeId refuses certificates without exactly one URI SAN (read by san.ts)', async () => {
  const forbidden = (err: unknown) => err instanceof TgError && err.code === 'TG_ERR_FORBIDDEN';
  const none = await cert(CASES[3].exts());
  assert.throws(() => svidSpiffeId(new X509Certificate(none.toString('pem'))), forbidden);
  const two = await cert(CASES[2].exts());
  assert.throws(() => svidSpiffeId(new X509Certificate(two.toString('pem'))), forbidden);
  const one = await cert(CASES[0].exts());
  const id = svidSpiffeId(new X509Certificate(one.toString('pem')));
  assert.equal(id.uri, 'spiffe://lab.test/nic/h1');
});
