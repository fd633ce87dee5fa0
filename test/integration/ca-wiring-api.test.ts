// mTLS wired through the running agents: a CA serving its CSR API over TLS on a Unix socket,
// NIC agents and vSwitch daemons in a lab that enrol with one-time join tokens and serve
// their APIs over mTLS; clients without a certificate, with the wrong SPIFFE ID, with an
// expired or a revoked certificate refused by every API; CSRs for another host's identity or
// for a workload not placed on the requesting NIC denied with a reason; tampered signed
// tenant keys refused by a NIC with nothing changed; and no private key anywhere on disk or in
// a log.
import assert from 'node:assert/strict';
import { type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type CertificateSigningRequest,
  CSR_COLLECTION_PATH,
  issuedChain,
  SIGNER_NAME,
} from '../../src/identity/csr.js';
import { CA_SERVICE_NAME, CaClient } from '../../src/identity/enrolment.js';
import { createKeyAndCsr, type Identity } from '../../src/identity/identity.js';
import { ServiceMtls } from '../../src/identity/service-mtls.js';
import { serviceId } from '../../src/identity/spiffe.js';
import type { TenantPeerInput } from '../../src/nic/agent.js';
import { NicClient } from '../../src/nic/client.js';
import { tenantKeyStatement } from '../../src/nic/identity.js';
import { runOk } from '../../src/util/exec.js';
import { type ApiEndpoint, apiRequest } from '../../src/util/http-json.js';
import { logger } from '../../src/util/log.js';
import { filesUnder, TD } from '../helpers/ca-softhsm.js';
import {
  issue,
  MtlsLab,
  mtlsEndpoint,
  ORCHESTRATOR_ID,
  scratch,
  startWiringCa,
  type WiringCa,
  wiringPrefix,
} from '../helpers/ca-wiring.js';
import { ping, pingUntilReply } from '../helpers/ping.js';

const prefix = wiringPrefix();
let ca: WiringCa;
let m: MtlsLab;
/** Private keys this process holds, for the leak scan. */
const heldKeys: KeyObject[] = [];

before(async () => {
  ca = await startWiringCa();
  m = await MtlsLab.start(prefix, ca, { hosts: 2, tenants: 1, workloads: 1, certTtlSeconds: 600 });
  await m.spinUp(['h1-t1-w1', 'h2-t1-w1']);
});

after(async () => {
  await m?.stop();
  await ca?.close();
});

const W1 = 'h1-t1-w1';
const W2 = 'h2-t1-w1';

function addressOf(name: string): string {
  return m.placed.get(name)!.address;
}

function nsOf(name: string): string {
  return m.placed.get(name)!.ns;
}

async function held(id: string, ttl?: number): Promise<Identity> {
  const i = await issue(ca.ca, id, ttl);
  heldKeys.push(i.privateKey);
  return i;
}

test('agents enrol with join tokens and serve over mTLS; their certificates verify with openssl', async () => {
  const id = await m.nic('h1').identity();
  assert.ok(id.nicCertificate !== undefined && id.identityBinding !== undefined);
  const leaf = new X509Certificate(id.nicCertificate);
  assert.equal(leaf.subjectAltName, `URI:spiffe://${TD}/nic/h1`);
  const leafPath = scratch(ca, 'nic-h1.pem', leaf.toString());
  const rootPath = scratch(ca, 'root.pem', ca.ca.trustBundle().toPem());
  assert.equal((await runOk('openssl', ['verify', '-CAfile', rootPath, leafPath])).trim(), `${leafPath}: OK`);
  assert.match(
    await runOk('openssl', ['x509', '-in', leafPath, '-noout', '-ext', 'subjectAltName']),
    new RegExp(`URI:spiffe://${TD}/nic/h1`),
  );
  // The certificate the NIC serves its API with is that same one.
  const listed = ca.ca.list().find((r) => r.serial === leaf.serialNumber.toLowerCase().replace(/^0+/, ''));
  assert.equal(listed?.spiffeId, `spiffe://${TD}/nic/h1`);
  assert.equal(listed!.requester, `spiffe://${TD}/nic/h1`);
  const vs = await m.vswitch('h2').list();
  assert.deepEqual(
    vs.map((i) => i.workload),
    [W2],
  );
  // Every join token was used once and cannot be used again.
  const client = new CaClient({ socketPath: ca.socket, bundle: ca.ca.trustBundle() });
  const { csrPem } = await createKeyAndCsr(`spiffe://${TD}/nic/h1`);
  await assert.rejects(client.sign(csrPem, { joinToken: m.joinTokens[0] }), /HTTP 401/);
  // Traffic between the two workloads crosses both NICs.
  assert.ok(await pingUntilReply(nsOf(W1), addressOf(W2), 20_000), 'no reply across the NICs');
});

test("a service enrolled through ServiceMtls calls the agents as a client (the orchestrator's side)", async (t) => {
  const svc = await ServiceMtls.start(
    {
      caSocket: ca.socket,
      bundlePem: readFileSync(ca.bundleFile, 'utf8'),
      trustDomain: TD,
      spiffeId: ORCHESTRATOR_ID,
      joinToken: await ca.joinToken(ORCHESTRATOR_ID),
      allowedClients: [`spiffe://${TD}/service/operator`],
      ttlSeconds: 600,
    },
    logger('test.orchestrator'),
  );
  try {
    heldKeys.push(svc.identity.privateKey);
    assert.equal(svc.identity.spiffeId.uri, ORCHESTRATOR_ID);
    const nic = new NicClient(svc.clientEndpoint(m.nics.get('h1')!.socket, [`spiffe://${TD}/nic/*`]));
    assert.deepEqual(
      (await nic.tenants()).map((t) => t.tenant),
      ['t1'],
    );
    // Cost of one request: a full TLS 1.3 handshake each way plus the NIC's revocation fetch.
    const t0 = performance.now();
    for (let i = 0; i < 30; i++) await nic.tenants();
    t.diagnostic(
      `NIC API over mTLS: ${((performance.now() - t0) / 30).toFixed(1)} ms per request (30 sequential)`,
    );
    // The server must prove the expected identity: a vSwitch daemon is not a NIC.
    const wrong = new NicClient(svc.clientEndpoint(m.vswitchds.get('h1')!.socket, [`spiffe://${TD}/nic/*`]));
    await assert.rejects(
      wrong.tenants(),
      /server refused: spiffe:\/\/lab\.test\/service\/vswitchd-h1 is not allowed/,
    );
  } finally {
    svc.stop();
  }
});

interface Api {
  name: string;
  endpoint: (identity: (() => Identity) | null) => ApiEndpoint;
  path: string;
}

function apis(): Api[] {
  const caId = serviceId(TD, CA_SERVICE_NAME).uri;
  return [
    { name: 'NIC API', endpoint: (i) => m.nicEndpoint('h1', i), path: '/v1/tenants' },
    { name: 'vSwitch API', endpoint: (i) => m.vswitchEndpoint('h1', i), path: '/v1/instances' },
    {
      name: 'CSR API',
      endpoint: (i) => mtlsEndpoint(ca.socket, ca.bundle, i, caId),
      path: CSR_COLLECTION_PATH,
    },
  ];
}

async function status(api: Api, identity: Identity | undefined): Promise<{ status: number; raw: string }> {
  const r = await apiRequest(
    api.endpoint(identity === undefined ? null : () => identity),
    'GET',
    api.path,
    undefined,
    { timeoutMs: 10_000 },
  );
  return { status: r.status, raw: r.raw };
}

test('refused by every API: no certificate, wrong SPIFFE ID, expired, revoked', async () => {
  const good = await held(ORCHESTRATOR_ID, 600);
  const wrong = await held(`spiffe://${TD}/service/intruder`, 600);
  const workload = await held(`spiffe://${TD}/tenant/t1/workload/${W1}`, 600);
  const expiring = await held(ORCHESTRATOR_ID, 1);
  const revoked = await held(ORCHESTRATOR_ID, 600);
  for (const api of apis()) {
    const ok = await status(api, good);
    assert.equal(ok.status, 200, `${api.name} refused a valid client: ${ok.raw}`);
    const none = await status(api, undefined);
    assert.equal(none.status, 401, `${api.name} without a certificate: ${none.raw}`);
    assert.match(none.raw, /no certificate presented/);
  }
  for (const api of apis().slice(0, 2)) {
    const r = await status(api, wrong);
    assert.equal(r.status, 403, `${api.name}, wrong ID: ${r.raw}`);
    assert.match(r.raw, /service\/intruder is not allowed here/);
  }
  // The CSR API admits NICs and services (each for its own identity); a workload identity is no requester.
  const csrApi = apis()[2];
  const w = await status(csrApi, workload);
  assert.equal(w.status, 401, w.raw);
  assert.match(w.raw, /tenant\/t1\/workload/);

  // Expired: refused at every API (the handshake itself admits nobody past notAfter).
  while (Date.now() <= expiring.notAfter.getTime() + 1000) await sleep(250);
  for (const api of apis()) {
    const r = await status(api, expiring);
    assert.equal(r.status, 401, `${api.name}, expired: ${r.raw}`);
    assert.match(r.raw, /expired/i);
  }

  // Revoked: accepted first, refused on the next request after `revoke`.
  for (const api of apis()) assert.equal((await status(api, revoked)).status, 200, api.name);
  ca.ca.revoke(revoked.serial, 'key compromise');
  for (const api of apis()) {
    const r = await status(api, revoked);
    assert.equal(r.status, 401, `${api.name}, revoked: ${r.raw}`);
    assert.match(r.raw, /is revoked/);
  }
  // The valid client is still served everywhere.
  for (const api of apis()) assert.equal((await status(api, good)).status, 200, api.name);
});

async function requestCsr(requester: Identity, spiffeId: string): Promise<CertificateSigningRequest> {
  const { csrPem } = await createKeyAndCsr(spiffeId);
  const r = await apiRequest(
    mtlsEndpoint(ca.socket, ca.bundle, () => requester, serviceId(TD, CA_SERVICE_NAME).uri),
    'POST',
    CSR_COLLECTION_PATH,
    {
      spec: {
        request: Buffer.from(csrPem).toString('base64'),
        signerName: SIGNER_NAME,
        usages: ['digital signature', 'client auth', 'server auth'],
        expirationSeconds: 600,
      },
    },
    { timeoutMs: 10_000 },
  );
  assert.equal(r.status, 201, r.raw);
  return r.body as CertificateSigningRequest;
}

test("CSRs for another host's identity or a workload not placed on the NIC are denied with a reason", async () => {
  const nic1 = await held(`spiffe://${TD}/nic/h1`, 600);
  const other = await requestCsr(nic1, `spiffe://${TD}/nic/h2`);
  assert.equal(other.status?.conditions?.[0]?.type, 'Denied');
  assert.equal(other.status?.conditions?.[0]?.reason, 'NotOwnHostIdentity');
  assert.match(other.status?.conditions?.[0]?.message ?? '', /NIC h1 may not obtain the identity of host h2/);
  assert.equal(issuedChain(other), undefined);

  // The workload on h2 is placed there, not on h1.
  ca.placements.add(`h2/t1/${W2}`);
  const asked = ca.asked.length;
  const notPlaced = await requestCsr(nic1, `spiffe://${TD}/tenant/t1/workload/${W2}`);
  assert.equal(notPlaced.status?.conditions?.[0]?.type, 'Denied');
  assert.equal(notPlaced.status?.conditions?.[0]?.reason, 'WorkloadNotPlaced');
  assert.match(notPlaced.status?.conditions?.[0]?.message ?? '', new RegExp(`${W2} is not placed on NIC h1`));
  assert.deepEqual(ca.asked.slice(asked), [{ host: 'h1', tenant: 't1', workload: W2 }]);

  // Once the orchestrator places it on h1, the same request is approved and issued.
  ca.placements.add(`h1/t1/${W1}`);
  const placed = await requestCsr(nic1, `spiffe://${TD}/tenant/t1/workload/${W1}`);
  assert.equal(placed.status?.conditions?.[0]?.type, 'Approved');
  assert.equal(placed.status?.conditions?.[0]?.reason, 'WorkloadPlacedOnNic');
  const chain = issuedChain(placed);
  assert.ok(chain !== undefined);
  const leafPath = scratch(ca, 'wl.pem', chain);
  const rootPath = scratch(ca, 'root.pem', ca.ca.trustBundle().toPem());
  assert.match(await runOk('openssl', ['verify', '-CAfile', rootPath, leafPath]), /: OK/);
  assert.match(
    await runOk('openssl', ['x509', '-in', leafPath, '-noout', '-ext', 'subjectAltName']),
    new RegExp(`URI:spiffe://${TD}/tenant/t1/workload/${W1}`),
  );

  // A join token bound to one identity obtains no other.
  const token = ca.server.joinTokens.issue(`spiffe://${TD}/nic/h1`);
  const client = new CaClient({ socketPath: ca.socket, bundle: ca.ca.trustBundle() });
  const { csrPem } = await createKeyAndCsr(`spiffe://${TD}/nic/h2`);
  await assert.rejects(client.sign(csrPem, { joinToken: token }), /Denied NotOwnIdentity/);
});

function flipByteB64(b64: string, at: number): string {
  const b = Buffer.from(b64, 'base64');
  b[at % b.length] ^= 0x01;
  return b.toString('base64');
}

test('a tampered signed tenant key is refused by the NIC and nothing changes', async () => {
  const nic1 = new NicClient(m.nicEndpoint('h1'));
  const [good] = (await m.peersFor('t1', 'h1')) as TenantPeerInput[];
  assert.ok(good.nicCertificate !== undefined && good.identityBinding !== undefined);
  const before = JSON.stringify(await nic1.tenants());
  const h1Key = await m.nic('h1').tenantKey('t1');
  const stranger = await held(`spiffe://${TD}/nic/h9`, 600);
  // An attacker (the orchestrator) with a key pair of its own signs its own tenant key.
  const { ed25519 } = await import('@noble/curves/ed25519.js');
  const attacker = ed25519.utils.randomSecretKey();
  const attackerPub = Buffer.from(ed25519.getPublicKey(attacker)).toString('base64');
  const attackerTenantKey = Buffer.from(ed25519.getPublicKey(ed25519.utils.randomSecretKey())).toString(
    'base64',
  );
  const cases: [string, TenantPeerInput, RegExp][] = [
    [
      'binding with a flipped byte',
      { ...good, identityBinding: flipByteB64(good.identityBinding!, 20) },
      /not bound|signature/,
    ],
    [
      'no certificate and binding',
      { ...good, nicCertificate: undefined, identityBinding: undefined },
      /required under mTLS/,
    ],
    ['the certificate of another NIC', { ...good, nicCertificate: h1Key.nicCertificate }, /not bound/],
    [
      'a certificate issued to a NIC that never bound this key',
      { ...good, nicCertificate: stranger.certificatePem },
      /not bound/,
    ],
    [
      'a certificate not from our CA',
      {
        ...good,
        nicCertificate: good.nicCertificate!.replace(
          /([A-Za-z0-9+/]{40})\n/,
          (s) => s.slice(0, 10) + (s[10] === 'A' ? 'B' : 'A') + s.slice(11),
        ),
      },
      /not trusted|not a PEM|unreadable|not bound/,
    ],
    [
      'a tenant key with a flipped byte',
      { ...good, publicKey: flipByteB64(good.publicKey, 5) },
      /not signed/,
    ],
    ['a signature with a flipped byte', { ...good, signature: flipByteB64(good.signature, 7) }, /not signed/],
    ['an endpoint changed', { ...good, endpoint: good.endpoint.replace(/:(\d+)$/, ':1') }, /not signed/],
    [
      "the attacker's own identity key and tenant key, signed by itself, beside the NIC's certificate",
      {
        ...good,
        nicIdentityKey: attackerPub,
        publicKey: attackerTenantKey,
        signature: Buffer.from(
          ed25519.sign(
            tenantKeyStatement('t1', Buffer.from(attackerTenantKey, 'base64'), good.endpoint),
            attacker,
          ),
        ).toString('base64'),
      },
      /not bound/,
    ],
  ];
  for (const [what, peer, re] of cases) {
    const r = await apiRequest(m.nicEndpoint('h1'), 'PUT', '/v1/tenants/t1/peers', { peers: [peer] });
    assert.ok(r.status === 400 || r.status === 403, `${what}: HTTP ${r.status} ${r.raw}`);
    assert.match(r.raw, re, what);
    assert.equal(JSON.stringify(await nic1.tenants()), before, `${what} changed the NIC's state`);
  }
  // The untampered peer list is still accepted, and traffic still flows.
  assert.equal((await nic1.setTenantPeers('t1', [good])).peers, 1);
  const p = await ping(nsOf(W1), addressOf(W2), { count: 3 });
  assert.equal(p.received, 3);

  // Once the CA revokes NIC h2's certificate, its signed keys are refused by its peers.
  const serial = new X509Certificate(good.nicCertificate!).serialNumber;
  ca.ca.revoke(serial, 'host compromised');
  const afterGood = JSON.stringify(await nic1.tenants());
  const r = await apiRequest(m.nicEndpoint('h1'), 'PUT', '/v1/tenants/t1/peers', { peers: [good] });
  assert.equal(r.status, 403, r.raw);
  assert.match(r.raw, /nic\/h2 is revoked/);
  assert.equal(JSON.stringify(await nic1.tenants()), afterGood);
});

test('no private key on disk (token directory aside) or in any log or API answer', async () => {
  const logs = m.logs();
  assert.match(logs, /identity certificate obtained/, 'the debug logs were captured');
  const needles: [string, string][] = [];
  const addKey = (k: KeyObject, what: string): void => {
    const jwk = k.export({ format: 'jwk' }) as { d?: string };
    const d = Buffer.from(jwk.d!, 'base64url');
    needles.push([d.toString('hex'), `${what} (hex)`], [d.toString('base64'), `${what} (base64)`]);
    needles.push([jwk.d!, `${what} (base64url)`]);
    const der = k.export({ format: 'der', type: 'pkcs8' });
    needles.push([der.toString('base64').slice(0, 60), `${what} (PKCS#8)`]);
  };
  for (const [i, k] of heldKeys.entries()) addKey(k, `test key ${i}`);
  addKey(ca.server.identity.privateKey, 'CSR server identity');
  addKey(m.client.current.privateKey, 'client identity');
  for (const t of m.joinTokens) needles.push([t, 'join token']);
  needles.push([ca.env.pin, 'token PIN']);

  const tokenDir = join(ca.env.stateDir, 'softhsm', 'tokens');
  const files = [
    ...filesUnder(ca.env.dir, [tokenDir]).filter((f) => !f.endsWith('.key')),
    ...filesUnder(m.lab.runDir),
  ];
  assert.ok(files.some((f) => f.endsWith('ca.json')));
  const texts: [string, string][] = files.map((f) => [f, readFileSync(f, 'latin1')]);
  texts.push(['agent logs', logs], ['API answers', m.responses.join('\n')]);
  for (const [where, text] of texts) {
    assert.doesNotMatch(text, /PRIVATE KEY/, where);
    for (const [needle, what] of needles) assert.ok(!text.includes(needle), `${what} in ${where}`);
  }
  // The NICs' answers carry certificates and bindings only.
  assert.match(m.responses.join('\n'), /BEGIN CERTIFICATE/);
});
