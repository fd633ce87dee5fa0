// mTLS with identities issued through the token, over real node:https on 127.0.0.1:
// authorisation by SPIFFE ID; a revoked, expired or foreign-domain certificate refused;
// identities renewed at half life and the CA rotated while traffic runs, with no request
// failing.
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Agent, createServer, request, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TLSSocket } from 'node:tls';
import type { PlacementQuery } from '../../src/ca/approval.js';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { CsrService } from '../../src/ca/csr-api.js';
import { csrAuthorize, csrRoutes, mtlsAuthenticator } from '../../src/ca/csr-http.js';
import { RevocationList } from '../../src/ca/revocation.js';
import { FileCaStore } from '../../src/ca/store.js';
import { verifyCsr } from '../../src/ca/svid.js';
import {
  type CertificateSigningRequest,
  CSR_COLLECTION_PATH,
  issuedChain,
  SIGNER_NAME,
} from '../../src/identity/csr.js';
import { assembleIdentity, createKeyAndCsr, type Identity } from '../../src/identity/identity.js';
import {
  authorizeRequest,
  clientTlsOptions,
  serverTlsOptions,
  updateServerIdentity,
  wipeTlsKey,
} from '../../src/identity/mtls.js';
import { IdentityRenewer } from '../../src/identity/renewal.js';
import { TrustBundle } from '../../src/identity/trust-bundle.js';
import { JsonApiServer } from '../../src/util/http-json.js';
import { logger } from '../../src/util/log.js';
import { issueIdentity, softCa } from '../helpers/ca-memory.js';
import { type CaTestEnv, caTestEnv, TD } from '../helpers/ca-softhsm.js';

let env: CaTestEnv;
let ca: CertificateAuthority;
const servers: Server[] = [];
const renewers: IdentityRenewer[] = [];

/** Issued by generation 1 before the rotation test retires it. */
let gen1Leftover: Identity | undefined;

before(async () => {
  env = caTestEnv();
  ca = CertificateAuthority.open(env.config({ issuance: { minTtlSeconds: 1, backdateSeconds: 0 } }));
  await ca.init();
  gen1Leftover = await identity(`spiffe://${TD}/nic/h9`, 3600);
});

after(async () => {
  for (const r of renewers) r.stop();
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
  ca?.close();
  env?.cleanup();
});

async function identity(id: string, ttl = 600): Promise<Identity> {
  return issueIdentity(ca, id, ttl);
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

async function listen(
  id: Identity,
  bundle: TrustBundle,
  handler: Handler,
): Promise<{ server: Server; port: number }> {
  const opts = serverTlsOptions(id, bundle);
  const server = createServer(opts, handler);
  wipeTlsKey(opts);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port };
}

/** An app server that lets NICs in, checking revocation through the store as another process would. */
function appHandler(isRevoked: (s: string) => boolean): Handler {
  return (req, res) => {
    const a = authorizeRequest(req, [`spiffe://${TD}/nic/*`], { trustDomain: TD, isRevoked });
    res.writeHead(a.allowed ? 200 : 403, { 'content-type': 'application/json' });
    res.end(JSON.stringify(a.allowed ? { id: a.id.uri, serial: a.serial } : { reason: a.reason }));
  };
}

interface Reply {
  status: number;
  body: string;
  reused: boolean;
  serverSerial: string;
}

function get(
  port: number,
  tls: ReturnType<typeof clientTlsOptions>,
  opts: { agent?: Agent; path?: string; method?: string; body?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path: opts.path ?? '/',
        method: opts.method ?? 'GET',
        agent: opts.agent ?? false,
        headers: opts.body ? { 'content-type': 'application/json' } : {},
        ...tls,
      },
      (res) => {
        const serverSerial = (res.socket as TLSSocket).getPeerX509Certificate()?.serialNumber ?? '';
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body,
            reused: req.reusedSocket,
            serverSerial,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

test('a NIC is authorised by SPIFFE ID; others are refused; the client checks the server', async () => {
  const bundle = ca.trustBundle();
  const srvId = await identity(`spiffe://${TD}/service/api`);
  const { port } = await listen(
    srvId,
    bundle,
    appHandler(() => false),
  );
  const nic = await identity(`spiffe://${TD}/nic/h1`);
  const ok = await get(port, clientTlsOptions(nic, bundle, [`spiffe://${TD}/service/api`]));
  assert.equal(ok.status, 200);
  assert.deepEqual(JSON.parse(ok.body), { id: `spiffe://${TD}/nic/h1`, serial: nic.serial });

  const wl = await identity(`spiffe://${TD}/tenant/acme/workload/web`);
  const refused = await get(port, clientTlsOptions(wl, bundle, [`spiffe://${TD}/service/api`]));
  assert.equal(refused.status, 403);
  assert.match(JSON.parse(refused.body).reason, /tenant\/acme\/workload\/web is not allowed here/);

  // The client expects another service: it refuses this server before sending anything.
  await assert.rejects(
    get(port, clientTlsOptions(nic, bundle, [`spiffe://${TD}/service/orchestrator`])),
    /server refused: spiffe:\/\/lab.test\/service\/api is not allowed here/,
  );
  // No client certificate: the TLS handshake itself fails.
  await assert.rejects(
    new Promise((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port, agent: false, ca: bundle.pems(), checkServerIdentity: () => undefined },
        resolve,
      );
      req.on('error', reject);
      req.end();
    }),
    /certificate required|alert|ECONNRESET|socket hang up/,
  );
});

test('revocation takes effect on the next request, on an open connection too', async () => {
  const bundle = ca.trustBundle();
  const revocations = new RevocationList(new FileCaStore(env.stateDir));
  const { port } = await listen(
    await identity(`spiffe://${TD}/service/api`),
    bundle,
    appHandler(revocations.isRevoked),
  );
  const nic = await identity(`spiffe://${TD}/nic/h2`);
  const tls = clientTlsOptions(nic, bundle, [`spiffe://${TD}/service/api`]);
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    assert.equal((await get(port, tls, { agent })).status, 200);
    ca.revoke(nic.serial, 'keyCompromise');
    const onOpen = await get(port, tls, { agent });
    assert.equal(onOpen.reused, true, 'same TLS connection');
    assert.equal(onOpen.status, 403);
    assert.match(JSON.parse(onOpen.body).reason, new RegExp(`certificate ${nic.serial} is revoked`));
    assert.equal((await get(port, tls)).status, 403, 'and on a new connection');
  } finally {
    agent.destroy();
  }
});

test('an expired certificate is refused: by authorisation on an open connection, by the handshake on a new one', async () => {
  const bundle = ca.trustBundle();
  const { port } = await listen(
    await identity(`spiffe://${TD}/service/api`),
    bundle,
    appHandler(() => false),
  );
  const nic = await identity(`spiffe://${TD}/nic/h3`, 2);
  const tls = clientTlsOptions(nic, bundle, [`spiffe://${TD}/service/api`]);
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    assert.equal((await get(port, tls, { agent })).status, 200);
    await sleep(Math.max(0, nic.notAfter.getTime() - Date.now()) + 1200);
    const late = await get(port, tls, { agent });
    assert.equal(late.reused, true);
    assert.equal(late.status, 403);
    assert.match(JSON.parse(late.body).reason, /certificate expired at/);
    await assert.rejects(get(port, tls), /certificate expired|alert|ECONNRESET|socket hang up/);
  } finally {
    agent.destroy();
  }
});

test('a certificate of another trust domain is refused even when its root is trusted', async () => {
  const foreign = await softCa({ trustDomain: 'other.test' }, Date.now());
  const foreignId = await issueIdentity(foreign.ca, 'spiffe://other.test/nic/h1', 600);
  const federated = ca.trustBundle().withRoot(foreign.ca.trustBundle().pems()[0]);
  const { port } = await listen(
    await identity(`spiffe://${TD}/service/api`),
    federated,
    appHandler(() => false),
  );
  const r = await get(port, clientTlsOptions(foreignId, ca.trustBundle(), [`spiffe://${TD}/service/api`]));
  assert.equal(r.status, 403);
  assert.match(JSON.parse(r.body).reason, /belongs to trust domain 'other.test', not 'lab.test'/);
});

test('renewal at half life and CA rotation while traffic runs: no request fails', async () => {
  const TTL = 3;
  let bundle = ca.trustBundle();
  const placements = new Set(['h5/acme/web']);
  const isPlacedOn = (q: PlacementQuery) => placements.has(`${q.host}/${q.tenant}/${q.workload}`);
  const revocations = new RevocationList(new FileCaStore(env.stateDir));
  const service = new CsrService({ ca, isPlacedOn });
  const seenClientSerials = new Set<string>();
  const authorize = csrAuthorize(mtlsAuthenticator({ trustDomain: TD, isRevoked: revocations.isRevoked }));

  // The CSR API server renews its own identity in-process.
  const caSvcId = `spiffe://${TD}/service/ca`;
  const srvRenewer = new IdentityRenewer({
    spiffeId: caSvcId,
    sign: async (csrPem) => {
      const s = await ca.issue({
        csr: await verifyCsr(csrPem),
        spiffeId: caSvcId,
        ttlSeconds: TTL,
        requester: 'admin',
      });
      return [s.certificatePem, ...s.chainPem];
    },
  });
  renewers.push(srvRenewer);
  await srvRenewer.start();
  const first = serverTlsOptions(srvRenewer.current, bundle);
  const api = await JsonApiServer.listen({
    tcp: { host: '127.0.0.1', port: 0 },
    tls: { options: first },
    authorize: (req) => {
      const peer = (req.socket as TLSSocket).getPeerX509Certificate();
      if (peer) seenClientSerials.add(peer.serialNumber);
      return authorize(req);
    },
    routes: csrRoutes({ service, trustBundle: () => bundle }),
    log: logger('test'),
  });
  wipeTlsKey(first);
  const port = api.port;
  const serveAs = (id: Identity): void => updateServerIdentity(api, id, bundle);
  srvRenewer.on('renewed', (id: Identity) => serveAs(id));

  // The NIC bootstraps from an operator-issued identity, then renews through the CSR API.
  const nicId = `spiffe://${TD}/nic/h5`;
  const bootstrap = await identity(nicId, TTL);
  const tlsFor = (id: Identity) =>
    clientTlsOptions(id, bundle, [caSvcId], { isRevoked: revocations.isRevoked });
  const postCsr = async (
    id: Identity,
    csrPem: string,
  ): Promise<{ obj: CertificateSigningRequest; chain: string }> => {
    const r = await get(port, tlsFor(id), {
      path: CSR_COLLECTION_PATH,
      method: 'POST',
      body: JSON.stringify({
        spec: {
          request: Buffer.from(csrPem).toString('base64'),
          signerName: SIGNER_NAME,
          usages: ['digital signature', 'client auth', 'server auth'],
          expirationSeconds: TTL,
        },
      }),
    });
    const obj = JSON.parse(r.body);
    const chain = r.status === 201 ? issuedChain(obj) : undefined;
    if (chain === undefined) throw new Error(`CSR not issued: ${r.status} ${r.body}`);
    return { obj, chain };
  };
  const nicRenewer: IdentityRenewer = new IdentityRenewer({
    spiffeId: nicId,
    initial: bootstrap,
    sign: async (csrPem): Promise<string> => (await postCsr(nicRenewer.current, csrPem)).chain,
  });
  renewers.push(nicRenewer);
  await nicRenewer.start();
  let renewals = { srv: 0, nic: 0 };
  srvRenewer.on('renewed', () => renewals.srv++);
  nicRenewer.on('renewed', () => renewals.nic++);

  // Over the same mTLS channel the NIC asks for workload identities: placed, and not placed.
  const placed = await createKeyAndCsr(`spiffe://${TD}/tenant/acme/workload/web`);
  const got = await postCsr(nicRenewer.current, placed.csrPem);
  assert.equal(got.obj.status.conditions[0].type, 'Approved');
  assembleIdentity(placed.privateKey, got.chain, `spiffe://${TD}/tenant/acme/workload/web`);
  const notPlaced = await createKeyAndCsr(`spiffe://${TD}/tenant/acme/workload/db`);
  await assert.rejects(postCsr(nicRenewer.current, notPlaced.csrPem), /WorkloadNotPlaced/);

  // Traffic: a request every 20 ms on a fresh connection with the identity current then.
  let ok = 0;
  const failures: string[] = [];
  const serverSerials = new Set<string>();
  let running = true;
  const traffic = (async () => {
    while (running) {
      try {
        const r = await get(port, tlsFor(nicRenewer.current), { path: '/trust-bundle' });
        if (r.status === 200) ok++;
        else failures.push(`${r.status} ${r.body}`);
        serverSerials.add(r.serverSerial);
      } catch (err) {
        failures.push((err as Error).message);
      }
      await sleep(20);
    }
  })();

  try {
    // Phase 1: renewals at half life on both sides.
    await sleep(4 * 1000);
    assert.ok(renewals.srv >= 2 && renewals.nic >= 2, `renewals ${JSON.stringify(renewals)}`);

    // Phase 2: rotation. The new root is distributed first, then it starts signing.
    await ca.rotatePrepare();
    bundle = ca.trustBundle();
    assert.equal(bundle.roots.length, 2);
    serveAs(srvRenewer.current);
    await sleep(300);
    await ca.rotateActivate();
    renewals = { srv: 0, nic: 0 };
    await sleep(2.5 * 1000);
    assert.ok(renewals.srv >= 1 && renewals.nic >= 1, 'both sides now hold generation-2 identities');
    const gen2 = TrustBundle.of(TD, [bundle.pems()[1]]);
    gen2.verify(srvRenewer.current.certificatePem);
    gen2.verify(nicRenewer.current.certificatePem);

    // Phase 3: retire generation 1 (its last certificates are seconds from expiry).
    const fresh = await identity(`spiffe://${TD}/nic/h6`, 600); // issued by generation 2
    ca.rotateRetire({ force: true });
    bundle = ca.trustBundle();
    assert.equal(bundle.roots.length, 1);
    serveAs(srvRenewer.current);
    await sleep(1000);
    assert.equal(
      (await get(port, clientTlsOptions(fresh, bundle, [caSvcId]), { path: '/trust-bundle' })).status,
      200,
    );
  } finally {
    running = false;
    await traffic;
    await api.close();
  }
  assert.deepEqual(failures, [], 'no request failed across renewals and rotation');
  assert.ok(ok > 30, `${ok} requests`);
  assert.ok(seenClientSerials.size >= 4, `server saw ${seenClientSerials.size} client certificates`);
  assert.ok(serverSerials.size >= 4, `client saw ${serverSerials.size} server certificates`);
});

test('after retirement a client still holding a generation-1 certificate is refused at the handshake', async () => {
  assert.ok(gen1Leftover !== undefined, 'issued by generation 1 before the rotation test');
  const bundle = ca.trustBundle();
  const { port } = await listen(
    await identity(`spiffe://${TD}/service/api`),
    bundle,
    appHandler(() => false),
  );
  await assert.rejects(
    get(port, clientTlsOptions(gen1Leftover, bundle, [`spiffe://${TD}/service/api`])),
    /unknown ca|alert|ECONNRESET|socket hang up/,
  );
});
