// Certificates issued through the token validate with OpenSSL and carry the SPIFFE ID:
// requests made by OpenSSL (EC and RSA), the X.509-SVID profile as `openssl x509 -text`
// shows it, purposes for TLS client and server, and an intermediate CA under an external
// OpenSSL root.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { verifyCsr } from '../../src/ca/svid.js';
import { TgError } from '../../src/util/errors.js';
import { run, runOk } from '../../src/util/exec.js';
import { type CaTestEnv, caTestEnv, opensslCsr, TD } from '../helpers/ca-softhsm.js';

let env: CaTestEnv;
let ca: CertificateAuthority;
let rootPath = '';

before(async () => {
  env = caTestEnv();
  ca = CertificateAuthority.open(env.config());
  await ca.init();
  rootPath = env.file('root.pem', ca.trustBundle().toPem());
});

after(() => {
  ca?.close();
  env?.cleanup();
});

async function sign(csrPem: string, spiffeId: string, ttlSeconds?: number) {
  return ca.issue({ csr: await verifyCsr(csrPem), spiffeId, ttlSeconds, requester: 'admin' });
}

test('an OpenSSL request signed through the token validates with openssl verify', async () => {
  const id = `spiffe://${TD}/nic/host-1`;
  const svid = await sign(await opensslCsr(env, 'nic1', id), id);
  const leaf = env.file('nic1.pem', svid.certificatePem);
  assert.equal((await runOk('openssl', ['verify', '-CAfile', rootPath, leaf])).trim(), `${leaf}: OK`);
  for (const purpose of ['sslclient', 'sslserver']) {
    assert.match(await runOk('openssl', ['verify', '-purpose', purpose, '-CAfile', rootPath, leaf]), /: OK/);
  }
  const text = await runOk('openssl', ['x509', '-in', leaf, '-noout', '-text']);
  assert.match(text, /X509v3 Subject Alternative Name: *\n *URI:spiffe:\/\/lab\.test\/nic\/host-1\n/);
  assert.doesNotMatch(text, /DNS:|IP Address:|email:/);
  assert.match(text, /X509v3 Basic Constraints: critical\n *CA:FALSE/);
  assert.match(text, /X509v3 Key Usage: critical\n *Digital Signature\n/);
  assert.match(
    text,
    /X509v3 Extended Key Usage: *\n *TLS Web Server Authentication, TLS Web Client Authentication/,
  );
  assert.match(text, /X509v3 Subject Key Identifier/);
  assert.match(text, /X509v3 Authority Key Identifier/);
  assert.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
  const serial = (await runOk('openssl', ['x509', '-in', leaf, '-noout', '-serial'])).trim();
  assert.equal(serial.toLowerCase(), `serial=${svid.serial}`);
  // The issuer's key identifier in the leaf is the root's own.
  const rootText = await runOk('openssl', ['x509', '-in', rootPath, '-noout', '-text']);
  const ski = /Subject Key Identifier: *\n *([0-9A-F:]+)/.exec(rootText)?.[1];
  const aki = /Authority Key Identifier: *\n *(?:keyid:)?([0-9A-F:]+)/.exec(text)?.[1];
  assert.ok(ski !== undefined && ski === aki, `${ski} vs ${aki}`);
  // Default lifetime: one hour, notBefore backdated one minute.
  assert.equal(svid.notAfter.getTime() - svid.notBefore.getTime(), 3660_000);
});

test('a workload SVID with a chosen lifetime; an RSA request gets keyEncipherment', async () => {
  const id = `spiffe://${TD}/tenant/acme/workload/web`;
  const svid = await sign(await opensslCsr(env, 'wl', id), id, 600);
  const leaf = env.file('wl.pem', svid.certificatePem);
  assert.match(await runOk('openssl', ['verify', '-CAfile', rootPath, leaf]), /: OK/);
  assert.match(
    await runOk('openssl', ['x509', '-in', leaf, '-noout', '-ext', 'subjectAltName']),
    /URI:spiffe:\/\/lab\.test\/tenant\/acme\/workload\/web/,
  );
  assert.equal(svid.notAfter.getTime() - svid.notBefore.getTime(), 660_000);
  const rsa = await sign(await opensslCsr(env, 'rsa', undefined, true), `spiffe://${TD}/nic/host-2`);
  const rsaPath = env.file('rsa.pem', rsa.certificatePem);
  assert.match(await runOk('openssl', ['verify', '-CAfile', rootPath, rsaPath]), /: OK/);
  assert.match(
    await runOk('openssl', ['x509', '-in', rsaPath, '-noout', '-ext', 'keyUsage']),
    /Digital Signature, Key Encipherment/,
  );
});

test('a request without a SAN gets the ID given; one naming another ID is refused', async () => {
  const svid = await sign(await opensslCsr(env, 'nosan'), `spiffe://${TD}/nic/host-3`);
  const p = env.file('nosan.pem', svid.certificatePem);
  assert.match(
    await runOk('openssl', ['x509', '-in', p, '-noout', '-ext', 'subjectAltName']),
    /URI:spiffe:\/\/lab\.test\/nic\/host-3/,
  );
  await assert.rejects(
    sign(await opensslCsr(env, 'other', `spiffe://${TD}/nic/host-9`), `spiffe://${TD}/nic/host-4`),
    (err: unknown) => err instanceof TgError && /not the identity to issue/.test(err.message),
  );
});

test('a tampered OpenSSL request is refused before anything is signed', async () => {
  const pem = await opensslCsr(env, 'tamper', `spiffe://${TD}/nic/host-5`);
  const body = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  const der = Buffer.from(body, 'base64');
  const at = der.indexOf(Buffer.from('host-5'));
  der[at + 5] = '6'.charCodeAt(0);
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  const before = ca.list().length;
  await assert.rejects(verifyCsr(tampered), /does not verify/);
  assert.equal(ca.list().length, before);
});

test('an intermediate under an external OpenSSL root: request from the token, install, issue', async () => {
  ca.close();
  const inter = CertificateAuthority.open(env.config({ stateDir: `${env.dir}/inter-state` }));
  try {
    const init = await inter.init({ intermediate: true });
    assert.equal(init.generation.state, 'pending');
    const reqPath = env.file('inter.csr', init.request);
    const check = await run('openssl', ['req', '-in', reqPath, '-noout', '-verify']);
    assert.equal(check.code, 0);
    assert.match(check.stdout + check.stderr, /verify OK/, 'OpenSSL accepts the token-signed request');

    const rootKey = env.file('ext-root.key');
    const extRoot = env.file('ext-root.pem');
    await runOk('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      rootKey,
      '-out',
      extRoot,
      '-days',
      '30',
      '-subj',
      '/CN=External Root',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    const extfile = env.file(
      'inter.ext',
      'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n',
    );
    const interPath = env.file('inter.pem');
    await runOk('openssl', [
      'x509',
      '-req',
      '-in',
      reqPath,
      '-CA',
      extRoot,
      '-CAkey',
      rootKey,
      '-CAcreateserial',
      '-days',
      '10',
      '-extfile',
      extfile,
      '-out',
      interPath,
    ]);

    const g = await inter.installIntermediate(readFileSync(interPath, 'utf8'), readFileSync(extRoot, 'utf8'));
    assert.equal(g.state, 'active');
    const id = `spiffe://${TD}/nic/host-7`;
    const svid = await inter.issue({
      csr: await verifyCsr(await opensslCsr(env, 'n7', id)),
      spiffeId: id,
      requester: 'admin',
    });
    assert.equal(svid.chainPem.length, 1);
    const leaf = env.file('n7.pem', svid.certificatePem);
    const chain = env.file('n7-chain.pem', svid.chainPem.join(''));
    assert.match(await runOk('openssl', ['verify', '-CAfile', extRoot, '-untrusted', chain, leaf]), /: OK/);
    assert.notEqual(
      (await run('openssl', ['verify', '-CAfile', extRoot, leaf])).code,
      0,
      'the intermediate is needed',
    );
    assert.equal(inter.trustBundle().toPem(), readFileSync(extRoot, 'utf8').replace(/\r\n/g, '\n'));
  } finally {
    inter.close();
    ca = CertificateAuthority.open(env.config());
  }
});
