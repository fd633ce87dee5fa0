import assert from 'node:assert/strict';
import { webcrypto, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { PlacementQuery, Requester } from '../../src/ca/approval.js';
import type { CertificateAuthority } from '../../src/ca/authority.js';
import { CsrService } from '../../src/ca/csr-api.js';
import { type Authenticator, csrAuthorize, csrRoutes } from '../../src/ca/csr-http.js';
import { splitPemCertificates } from '../../src/identity/certs.js';
import {
  type CertificateSigningRequest,
  CSR_COLLECTION_PATH,
  issuedChain,
  SIGNER_NAME,
} from '../../src/identity/csr.js';
import { createKeyAndCsr, svidSpiffeId, uriSans } from '../../src/identity/identity.js';
import * as x509 from '../../src/identity/x509.js';
import { TgError } from '../../src/util/errors.js';
import { JsonApiServer } from '../../src/util/http-json.js';
import { logger } from '../../src/util/log.js';
import { softCa } from '../helpers/ca-memory.js';

const TD = 'lab.test';
const h1: Requester = { kind: 'nic', host: 'h1', uri: `spiffe://${TD}/nic/h1` };
const h2: Requester = { kind: 'nic', host: 'h2', uri: `spiffe://${TD}/nic/h2` };
const admin: Requester = { kind: 'admin' };

/** The orchestrator's placement, as a lookup function. */
const placements = new Set(['h1/acme/web', 'h2/acme/db']);
let placementDown = false;
const isPlacedOn = (q: PlacementQuery): boolean => {
  if (placementDown) throw new Error('orchestrator unreachable');
  return placements.has(`${q.host}/${q.tenant}/${q.workload}`);
};

/** Test authenticator: the requester is named by a header. Real deployments use mtlsAuthenticator. */
const headerAuth: Authenticator = (req) => {
  const who = req.headers['x-test-requester'];
  if (who === 'admin') return admin;
  if (who === 'h1') return h1;
  throw new TgError('TG_ERR_UNAUTHENTICATED', 'no test requester header');
};

let ca: CertificateAuthority;
let service: CsrService;

let dir = '';
let server: JsonApiServer | undefined;
let socketPath = '';

before(async () => {
  ({ ca } = await softCa({}, Date.now()));
  service = new CsrService({ ca, isPlacedOn });
  dir = mkdtempSync(join(tmpdir(), 'tgca-http-'));
  socketPath = join(dir, 'csr.sock');
  server = await JsonApiServer.listen({
    socketPath,
    authorize: csrAuthorize(headerAuth),
    routes: csrRoutes({
      service,
      trustBundle: () => ca.trustBundle(),
      revocations: () => ca.revocations.list(),
    }),
    log: logger('test'),
  });
});

async function body(id: string, extra: Record<string, unknown> = {}, spec: Record<string, unknown> = {}) {
  const { csrPem } = await createKeyAndCsr(id);
  return {
    apiVersion: 'certificates.k8s.io/v1',
    kind: 'CertificateSigningRequest',
    ...extra,
    spec: {
      request: Buffer.from(csrPem).toString('base64'),
      signerName: SIGNER_NAME,
      usages: ['digital signature', 'client auth', 'server auth'],
      ...spec,
    },
  };
}

function condition(o: CertificateSigningRequest): [string, string] {
  const c = o.status.conditions.at(-1)!;
  return [c.type, c.reason];
}

test('a NIC obtains its own identity: Approved, chain in status.certificate', async () => {
  const o = await service.create(await body(`spiffe://${TD}/nic/h1`), h1);
  assert.deepEqual(condition(o), ['Approved', 'OwnNicIdentity']);
  assert.equal(o.spec.username, h1.uri);
  const chain = splitPemCertificates(issuedChain(o)!);
  assert.equal(chain.length, 1);
  assert.equal(svidSpiffeId(new X509Certificate(chain[0])).uri, `spiffe://${TD}/nic/h1`);
  ca.trustBundle().verify(chain[0]);
});

test("a NIC asking for another host's identity is Denied with a reason", async () => {
  const o = await service.create(await body(`spiffe://${TD}/nic/h2`), h1);
  assert.deepEqual(condition(o), ['Denied', 'NotOwnHostIdentity']);
  assert.match(o.status.conditions[0].message, /NIC h1 may not obtain the identity of host h2/);
  assert.equal(o.status.certificate, undefined);
});

test('workloads: only those the orchestrator placed on the requesting NIC', async () => {
  const placed = await service.create(await body(`spiffe://${TD}/tenant/acme/workload/web`), h1);
  assert.deepEqual(condition(placed), ['Approved', 'WorkloadPlacedOnNic']);
  const elsewhere = await service.create(
    await body(`spiffe://${TD}/tenant/acme/db`.replace('/db', '/workload/db')),
    h1,
  );
  assert.deepEqual(condition(elsewhere), ['Denied', 'WorkloadNotPlaced']);
  assert.match(elsewhere.status.conditions[0].message, /workload acme\/db is not placed on NIC h1/);
  const unknown = await service.create(await body(`spiffe://${TD}/tenant/blue/workload/web`), h1);
  assert.deepEqual(condition(unknown), ['Denied', 'WorkloadNotPlaced']);
  placementDown = true;
  try {
    const down = await service.create(await body(`spiffe://${TD}/tenant/acme/workload/web`), h1);
    assert.deepEqual(condition(down), ['Denied', 'PlacementUnavailable']);
  } finally {
    placementDown = false;
  }
});

test('service identities need an operator; foreign trust domains are denied', async () => {
  assert.deepEqual(condition(await service.create(await body(`spiffe://${TD}/service/orchestrator`), h1)), [
    'Denied',
    'ServiceIdentityRequiresAdmin',
  ]);
  assert.deepEqual(
    condition(await service.create(await body(`spiffe://${TD}/service/orchestrator`), admin)),
    ['Approved', 'AdminRequest'],
  );
  assert.deepEqual(condition(await service.create(await body('spiffe://other.test/nic/h1'), admin)), [
    'Denied',
    'ForeignTrustDomain',
  ]);
});

test('expirationSeconds: honoured, clamped to the maximum, refused below the minimum', async () => {
  const short = await service.create(await body(`spiffe://${TD}/nic/h1`, {}, { expirationSeconds: 600 }), h1);
  const leaf = new x509.X509Certificate(splitPemCertificates(issuedChain(short)!)[0]);
  assert.ok(Math.abs(leaf.notAfter.getTime() - Date.now() - 600_000) < 5000);
  const long = await service.create(
    await body(`spiffe://${TD}/nic/h1`, {}, { expirationSeconds: 10 * 86400 }),
    h1,
  );
  const leaf2 = new x509.X509Certificate(splitPemCertificates(issuedChain(long)!)[0]);
  assert.ok(Math.abs(leaf2.notAfter.getTime() - Date.now() - 86_400_000) < 5000);
  await assert.rejects(
    service.create(await body(`spiffe://${TD}/nic/h1`, {}, { expirationSeconds: 30 }), h1),
    /at least 60/,
  );
});

test('usages: only server auth is issued when only server auth is asked', async () => {
  const o = await service.create(
    await body(`spiffe://${TD}/nic/h1`, {}, { usages: ['digital signature', 'server auth'] }),
    h1,
  );
  const leaf = new x509.X509Certificate(splitPemCertificates(issuedChain(o)!)[0]);
  assert.deepEqual(
    [...leaf.getExtension(x509.ExtendedKeyUsageExtension)!.usages],
    [x509.ExtendedKeyUsage.serverAuth],
  );
});

test('malformed requests are 400 and store nothing', async () => {
  const before = service.list(admin).items.length;
  const invalid = (re: RegExp) => (err: unknown) =>
    err instanceof TgError && err.code === 'TG_ERR_INVALID_ARGUMENT' && re.test(err.message);
  const good = await body(`spiffe://${TD}/nic/h1`);
  await assert.rejects(
    service.create({ ...good, spec: { ...good.spec, signerName: 'kubernetes.io/kubelet-serving' } }, h1),
    invalid(/unknown signerName/),
  );
  await assert.rejects(
    service.create({ ...good, spec: { ...good.spec, usages: ['code signing'] } }, h1),
    invalid(/usage 'code signing'/),
  );
  await assert.rejects(
    service.create({ ...good, spec: { ...good.spec, usages: ['digital signature'] } }, h1),
    invalid(/server auth" or "client auth/),
  );
  await assert.rejects(
    service.create({ ...good, spec: { ...good.spec, request: 'not base64!' } }, h1),
    invalid(/spec\.request/),
  );
  await assert.rejects(
    service.create({ ...good, spec: { ...good.spec, username: 'admin' } }, h1),
    invalid(/username/),
  );
  await assert.rejects(service.create({ ...good, status: {} }, h1), invalid(/status/));
  await assert.rejects(
    service.create({ ...good, spec: { ...good.spec, request: Buffer.from('junk').toString('base64') } }, h1),
    invalid(/not a PEM/),
  );
  await assert.rejects(service.create('x', h1), invalid(/invalid CertificateSigningRequest/));
  // A request without a URI SAN:
  const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const noSan = await x509.Pkcs10CertificateRequestGenerator.create(
    { name: 'CN=x', keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } },
    webcrypto,
  );
  await assert.rejects(
    service.create(
      { ...good, spec: { ...good.spec, request: Buffer.from(noSan.toString('pem')).toString('base64') } },
      h1,
    ),
    invalid(/exactly one SPIFFE ID as URI SAN, it names 0/),
  );
  assert.equal(service.list(admin).items.length, before);
});

test('names: given, generated, conflicting; visibility per requester', async () => {
  const named = await service.create(
    await body(`spiffe://${TD}/nic/h2`, { metadata: { name: 'h2-renewal' } }),
    h2,
  );
  assert.equal(named.metadata.name, 'h2-renewal');
  await assert.rejects(
    service.create(await body(`spiffe://${TD}/nic/h2`, { metadata: { name: 'h2-renewal' } }), h2),
    (err: unknown) => err instanceof TgError && err.code === 'TG_ERR_CONFLICT',
  );
  const gen = await service.create(
    await body(`spiffe://${TD}/nic/h2`, { metadata: { generateName: 'nic-h2-' } }),
    h2,
  );
  assert.match(gen.metadata.name, /^nic-h2-[0-9a-f]{8}$/);
  assert.equal(service.get('h2-renewal', h2).metadata.uid, named.metadata.uid);
  assert.equal(service.get('h2-renewal', admin).metadata.uid, named.metadata.uid);
  assert.throws(
    () => service.get('h2-renewal', h1),
    (err: unknown) => err instanceof TgError && err.code === 'TG_ERR_NOT_FOUND',
  );
  assert.ok(service.list(h1).items.every((o) => o.spec.username === h1.uri));
  assert.ok(service.list(h2).items.every((o) => o.spec.username === h2.uri));
  assert.ok(service.list(admin).items.length > service.list(h2).items.length);
  assert.ok(Object.isFrozen(named.status.conditions[0]), 'stored objects cannot be changed by callers');
});

test('a signer failure is a Failed condition after Approved', async () => {
  const failing = new CsrService({
    ca: {
      trustDomain: TD,
      config: ca.config,
      issue: async () => {
        throw new TgError('TG_ERR_TOKEN', 'C_Sign: CKR_DEVICE_REMOVED');
      },
    },
    isPlacedOn,
  });
  const o = await failing.create(await body(`spiffe://${TD}/nic/h1`), h1);
  assert.deepEqual(
    o.status.conditions.map((c) => [c.type, c.reason]),
    [
      ['Approved', 'OwnNicIdentity'],
      ['Failed', 'SignerUnavailable'],
    ],
  );
  assert.match(o.status.conditions[1].message, /CKR_DEVICE_REMOVED/);
});

test('the object store is bounded: oldest dropped beyond the cap', async () => {
  const small = new CsrService({ ca, isPlacedOn, maxObjects: 3 });
  const names: string[] = [];
  for (let i = 0; i < 5; i++)
    names.push((await small.create(await body(`spiffe://${TD}/nic/h1`), h1)).metadata.name);
  assert.deepEqual(
    small.list(admin).items.map((o) => o.metadata.name),
    names.slice(2),
  );
});

// --- the HTTP routes, over a Unix socket ---------------------------------------------------

after(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

function call(
  method: string,
  path: string,
  who: string | undefined,
  payload?: string,
): Promise<{ status: number; type: string; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath,
        method,
        path,
        headers: { ...(who ? { 'x-test-requester': who } : {}), 'content-type': 'application/json' },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          text += d;
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), text }),
        );
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

test('HTTP: create, get and list through the routes', async () => {
  const created = await call(
    'POST',
    CSR_COLLECTION_PATH,
    'h1',
    JSON.stringify(await body(`spiffe://${TD}/nic/h1`)),
  );
  assert.equal(created.status, 201);
  const obj = JSON.parse(created.text) as CertificateSigningRequest;
  assert.deepEqual(condition(obj), ['Approved', 'OwnNicIdentity']);
  const chain = issuedChain(obj)!;
  assert.deepEqual(uriSans(new X509Certificate(splitPemCertificates(chain)[0]).raw), [
    `spiffe://${TD}/nic/h1`,
  ]);
  const got = await call('GET', `${CSR_COLLECTION_PATH}/${obj.metadata.name}`, 'h1');
  assert.equal(got.status, 200);
  assert.equal(JSON.parse(got.text).metadata.uid, obj.metadata.uid);
  const list = await call('GET', CSR_COLLECTION_PATH, 'h1');
  assert.equal(JSON.parse(list.text).kind, 'CertificateSigningRequestList');

  const denied = await call(
    'POST',
    CSR_COLLECTION_PATH,
    'h1',
    JSON.stringify(await body(`spiffe://${TD}/nic/h2`)),
  );
  assert.equal(denied.status, 201, 'a denial is a created object, as in Kubernetes');
  assert.deepEqual(condition(JSON.parse(denied.text)), ['Denied', 'NotOwnHostIdentity']);
});

test('HTTP: errors carry the catalogue code with its status, as every API of the stack; nothing crashes', async () => {
  const error = (r: { text: string }) => JSON.parse(r.text) as { code: string; message: string };
  const unauth = await call('GET', CSR_COLLECTION_PATH, undefined);
  assert.equal(unauth.status, 401);
  assert.equal(error(unauth).code, 'TG_ERR_UNAUTHENTICATED');
  const notJson = await call('POST', CSR_COLLECTION_PATH, 'h1', '{');
  assert.equal(notJson.status, 400);
  assert.equal(error(notJson).code, 'TG_ERR_INVALID_ARGUMENT');
  const huge = await call('POST', CSR_COLLECTION_PATH, 'h1', 'x'.repeat(70_000));
  assert.equal(huge.status, 413);
  assert.equal(error(huge).code, 'TG_ERR_PAYLOAD_TOO_LARGE');
  assert.equal((await call('GET', '/nope', 'h1')).status, 404);
  const wrongMethod = await call('DELETE', CSR_COLLECTION_PATH, 'h1');
  assert.equal(wrongMethod.status, 405);
  assert.equal(error(wrongMethod).code, 'TG_ERR_METHOD_NOT_ALLOWED');
  assert.equal((await call('GET', `${CSR_COLLECTION_PATH}/%E0%A4%A`, 'h1')).status, 400);
  assert.equal((await call('GET', `${CSR_COLLECTION_PATH}/missing`, 'h1')).status, 404);
  const bundle = await call('GET', '/trust-bundle', 'h1');
  assert.equal(bundle.status, 200);
  assert.equal(bundle.type, 'application/x-pem-file');
  assert.equal(bundle.text, ca.trustBundle().toPem());
  const revs = await call('GET', '/revocations', 'admin');
  assert.deepEqual(JSON.parse(revs.text), { items: [] });
});
