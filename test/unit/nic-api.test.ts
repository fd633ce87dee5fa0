// The NIC agent's API over a Unix socket (fake UDP sockets, no root): answers for good input,
// and for bad input a 4xx with a stable code and message that changes nothing. No answer ever
// carries an off-host secret.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ed25519 } from '@noble/curves/ed25519.js';
import { FakeNetwork } from '../../src/native/fake.js';
import { NIC_MAX_BODY_BYTES } from '../../src/nic/api.js';
import { NicClient } from '../../src/nic/client.js';
import { tenantKeyStatement } from '../../src/nic/identity.js';
import { openPsk, type PskBox } from '../../src/nic/psk-box.js';
import { NicService } from '../../src/nic/service.js';
import { JsTransportAead } from '../../src/protocol/aead.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { apiRequest, type HttpMethod } from '../../src/util/http-json.js';
import { logger } from '../../src/util/log.js';

const dir = mkdtempSync(join(tmpdir(), 'tg-nic-api-'));
const net = new FakeNetwork();
let svc: NicService;
let other: NicService;
let sock: string;
let api: NicClient;
const responses: string[] = [];

const key = (): string => publicKeyOf(generatePrivateKey()).toString('base64');

async function call(method: HttpMethod, path: string, body?: unknown, raw?: string) {
  const r = await apiRequest(sock, method, path, body, raw === undefined ? {} : { rawBody: raw });
  responses.push(r.raw);
  return r;
}

/** Everything the agent holds, as the API shows it. */
async function state(): Promise<string> {
  const policy = await api.getPolicy('t1').catch((e: Error) => e.message);
  return JSON.stringify([
    await api.keys(),
    await api.workloads(),
    await api.tenants(),
    policy,
    await api.grants('t1'),
  ]);
}

before(async () => {
  const start = (name: string, host: string, fabric: string) =>
    NicService.start({
      apiSocket: join(dir, `${name}.sock`),
      hostAddress: host,
      fabricAddress: fabric,
      openSocket: (address, port) => net.createSocket({ address, port }),
      aead: new JsTransportAead(),
      log: logger('test-nic-api'),
    });
  svc = await start('a', '198.19.1.2', '198.18.0.11');
  other = await start('b', '198.19.2.2', '198.18.0.12');
  sock = join(dir, 'a.sock');
  api = new NicClient(sock);
});

after(async () => {
  await svc.close();
  await other.close();
  rmSync(dir, { recursive: true, force: true });
});

test('register, list, rotate, tenant key, metrics, health: the happy path', async () => {
  const vsPrivate = generatePrivateKey();
  const vs = publicKeyOf(vsPrivate).toString('base64');
  const open = (box: unknown, nicPublicKey: string): Buffer => {
    const out = Buffer.alloc(32);
    openPsk(
      box,
      { workload: 'w1', instancePrivateKey: vsPrivate, nicPublicKey: Buffer.from(nicPublicKey, 'base64') },
      out,
    );
    return out;
  };
  const r = await call('POST', '/v1/workloads', {
    tenant: 't1',
    workload: 'w1',
    address: '100.64.1.11',
    vswitchPublicKey: vs,
  });
  assert.equal(r.status, 201);
  const c = r.body as Record<string, string> & { sealedPsk: PskBox };
  assert.equal(c.nicEndpoint, '198.19.1.2:51820');
  assert.equal('psk' in c, false, 'a PSK in the clear');
  const psk1 = open(c.sealedPsk, c.nicPublicKey);
  assert.equal(psk1.length, 32);
  assert.equal(r.raw.includes(psk1.toString('base64')), false);
  assert.equal(c.nicPublicKey, (await api.identity()).onHostPublicKey);
  const wl = await api.workloads();
  assert.deepEqual(
    wl.map((w) => [w.tenant, w.workload, w.address, w.vswitchPublicKey]),
    [['t1', 'w1', '100.64.1.11', vs]],
  );
  const rot = await call('POST', '/v1/workloads/w1/psk');
  assert.equal(rot.status, 200);
  const psk2 = open((rot.body as { sealedPsk: PskBox }).sealedPsk, c.nicPublicKey);
  assert.equal(psk2.equals(psk1), false, 'the rotated PSK is the old one');
  assert.equal('psk' in (rot.body as object), false);
  const k = (await call('GET', '/v1/tenants/t1/key')).body as Record<string, string>;
  assert.equal(k.endpoint, '198.18.0.11:51820');
  assert.ok(
    ed25519.verify(
      Buffer.from(k.signature, 'base64'),
      tenantKeyStatement('t1', Buffer.from(k.publicKey, 'base64'), k.endpoint),
      Buffer.from(k.nicIdentityKey, 'base64'),
    ),
  );
  assert.notEqual(k.publicKey, c.nicPublicKey, 'the off-host key is the on-host key');
  const metrics = await call('GET', '/metrics');
  assert.equal(metrics.status, 200);
  assert.match(metrics.raw, /tenguard_nic_workloads 1/);
  assert.match(metrics.raw, /tenguard_nic_keys\{kind="workload-psk"\} 1/);
  const health = (await call('GET', '/v1/health')).body as Record<string, unknown>;
  assert.equal(health.status, 'ok');
  assert.equal(health.workloads, 1);
  assert.equal(health.dataPlane, true);
});

test('tenant peers: a signed key from another NIC is accepted, a bad signature is not', async () => {
  const b = new NicClient(join(dir, 'b.sock'));
  await b.registerWorkload({ tenant: 't1', workload: 'r1', address: '100.64.1.21', vswitchPublicKey: key() });
  const kb = await b.tenantKey('t1');
  const peer = { ...kb, workloads: [{ workload: 'r1', address: '100.64.1.21' }] } as Record<string, unknown>;
  delete peer.tenant;
  const ok = await call('PUT', '/v1/tenants/t1/peers', { peers: [peer] });
  assert.equal(ok.status, 200, ok.raw);
  assert.equal(((await api.tenants())[0].peers as unknown[]).length, 1);
  const before = await state();
  const cases: [string, unknown, number, string][] = [
    [
      'signature for another endpoint',
      { peers: [{ ...peer, endpoint: '198.18.0.99:51820' }] },
      400,
      'TG_ERR_BAD_SIGNATURE',
    ],
    [
      'signature by another identity',
      { peers: [{ ...peer, nicIdentityKey: key() }] },
      400,
      'TG_ERR_BAD_SIGNATURE',
    ],
    ['key swapped by a relay', { peers: [{ ...peer, publicKey: key() }] }, 400, 'TG_ERR_BAD_SIGNATURE'],
    [
      'remote workload named like a local one',
      { peers: [{ ...peer, workloads: [{ workload: 'w1', address: '100.64.1.21' }] }] },
      409,
      'TG_ERR_CONFLICT',
    ],
    [
      "remote address is a local workload's",
      { peers: [{ ...peer, workloads: [{ workload: 'r1', address: '100.64.1.11' }] }] },
      409,
      'TG_ERR_CONFLICT',
    ],
    ['the same NIC twice', { peers: [peer, peer] }, 400, 'TG_ERR_INVALID_ARGUMENT'],
    ['unknown key in a peer', { peers: [{ ...peer, trusted: true }] }, 400, 'TG_ERR_INVALID_ARGUMENT'],
    [
      'bad endpoint',
      { peers: [{ ...peer, endpoint: 'nic-b.example:51820' }] },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
  ];
  for (const [what, body, status, code] of cases) {
    const r = await call('PUT', '/v1/tenants/t1/peers', body);
    assert.equal(r.status, status, `${what}: ${r.raw}`);
    assert.equal((r.body as { code: string }).code, code, what);
  }
  assert.equal(await state(), before, 'a refused peers request changed something');
  // Peering with itself is refused too.
  const own = (await call('GET', '/v1/tenants/t1/key')).body as Record<string, unknown>;
  delete own.tenant;
  const self = await call('PUT', '/v1/tenants/t1/peers', { peers: [{ ...own, workloads: [] }] });
  assert.equal(self.status, 400);
  assert.equal(await state(), before);
});

test('bad input: 4xx with a stable code and message, and nothing changes', async () => {
  const before = await state();
  const vs = key();
  const good = { tenant: 't1', workload: 'w9', address: '100.64.1.19', vswitchPublicKey: vs };
  const lowOrder = Buffer.alloc(32);
  lowOrder[0] = 1; // the identity point: X25519 with it is all zero
  const cases: [string, HttpMethod, string, unknown, number, string, string?][] = [
    ['unknown tenant key', 'GET', '/v1/tenants/nope/key', undefined, 404, 'TG_ERR_NOT_FOUND'],
    ['unknown tenant peers', 'PUT', '/v1/tenants/nope/peers', { peers: [] }, 404, 'TG_ERR_NOT_FOUND'],
    ['bad tenant name', 'GET', '/v1/tenants/NOPE!/key', undefined, 400, 'TG_ERR_INVALID_ARGUMENT'],
    ['duplicate workload', 'POST', '/v1/workloads', { ...good, workload: 'w1' }, 409, 'TG_ERR_CONFLICT'],
    [
      'duplicate vSwitch key',
      'POST',
      '/v1/workloads',
      { ...good, vswitchPublicKey: (await api.workloads())[0].vswitchPublicKey },
      409,
      'TG_ERR_CONFLICT',
    ],
    [
      'key too short',
      'POST',
      '/v1/workloads',
      { ...good, vswitchPublicKey: 'AAAA' },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'key not base64',
      'POST',
      '/v1/workloads',
      { ...good, vswitchPublicKey: '!'.repeat(43) + '=' },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'all-zero key',
      'POST',
      '/v1/workloads',
      { ...good, vswitchPublicKey: Buffer.alloc(32).toString('base64') },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'low-order key',
      'POST',
      '/v1/workloads',
      { ...good, vswitchPublicKey: lowOrder.toString('base64') },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      "the NIC's own key",
      'POST',
      '/v1/workloads',
      { ...good, vswitchPublicKey: (await api.identity()).onHostPublicKey },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'address not an address',
      'POST',
      '/v1/workloads',
      { ...good, address: '100.64.1' },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'address with a prefix',
      'POST',
      '/v1/workloads',
      { ...good, address: '100.64.1.19/24' },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'multicast address',
      'POST',
      '/v1/workloads',
      { ...good, address: '224.0.0.1' },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'loopback address',
      'POST',
      '/v1/workloads',
      { ...good, address: '::1' },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'address taken in the tenant',
      'POST',
      '/v1/workloads',
      { ...good, address: '100.64.1.11' },
      409,
      'TG_ERR_CONFLICT',
    ],
    [
      'address of a remote workload',
      'POST',
      '/v1/workloads',
      { ...good, address: '100.64.1.21' },
      409,
      'TG_ERR_CONFLICT',
    ],
    [
      'workload known behind another NIC',
      'POST',
      '/v1/workloads',
      { ...good, workload: 'r1' },
      409,
      'TG_ERR_CONFLICT',
    ],
    ['unknown field', 'POST', '/v1/workloads', { ...good, colour: 'red' }, 400, 'TG_ERR_INVALID_ARGUMENT'],
    [
      'missing field',
      'POST',
      '/v1/workloads',
      { tenant: 't1', workload: 'w9', address: '100.64.1.19' },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    ['wrong type', 'POST', '/v1/workloads', { ...good, address: 100 }, 400, 'TG_ERR_INVALID_ARGUMENT'],
    ['not an object', 'POST', '/v1/workloads', [good], 400, 'TG_ERR_INVALID_ARGUMENT'],
    ['no body', 'POST', '/v1/workloads', undefined, 400, 'TG_ERR_INVALID_ARGUMENT'],
    ['invalid JSON', 'POST', '/v1/workloads', undefined, 400, 'TG_ERR_INVALID_ARGUMENT', '{"tenant": '],
    ['remove unknown workload', 'DELETE', '/v1/workloads/nope', undefined, 404, 'TG_ERR_NOT_FOUND'],
    ['rotate unknown workload', 'POST', '/v1/workloads/nope/psk', undefined, 404, 'TG_ERR_NOT_FOUND'],
    [
      'body where none belongs',
      'DELETE',
      '/v1/workloads/w1',
      { force: true },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'bad label key',
      'POST',
      '/v1/workloads',
      { ...good, labels: { 'a b': 'x' } },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'bad label value',
      'POST',
      '/v1/workloads',
      { ...good, labels: { app: 'x'.repeat(64) } },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    ['policy: not a document', 'PUT', '/v1/policy/t1', { rules: 5 }, 422, 'TG_ERR_POLICY_REJECTED'],
    ['policy: no body', 'PUT', '/v1/policy/t1', undefined, 400, 'TG_ERR_INVALID_ARGUMENT'],
    [
      'policy: another tenant',
      'PUT',
      '/v1/policy/t1',
      { version: 1, tenant: 't2', rules: [] },
      422,
      'TG_ERR_POLICY_REJECTED',
    ],
    ['policy: none set', 'GET', '/v1/policy/t1', undefined, 404, 'TG_ERR_NOT_FOUND'],
    ['flows: bad since', 'GET', '/v1/flows?since=soon', undefined, 400, 'TG_ERR_INVALID_ARGUMENT'],
    ['flows: unknown filter', 'GET', '/v1/flows?colour=red', undefined, 400, 'TG_ERR_INVALID_ARGUMENT'],
    [
      'grants: own tenant',
      'PUT',
      '/v1/tenants/t1/grants',
      { workloads: [{ tenant: 't1', workload: 'w1', address: '100.64.9.1' }] },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'grants: an own address',
      'PUT',
      '/v1/tenants/t1/grants',
      { workloads: [{ tenant: 't2', workload: 'x1', address: '100.64.1.11' }] },
      409,
      'TG_ERR_CONFLICT',
    ],
    ['unknown route', 'GET', '/v1/nothing', undefined, 404, 'TG_ERR_NOT_FOUND'],
    ['wrong method', 'PUT', '/v1/workloads', good, 405, 'TG_ERR_METHOD_NOT_ALLOWED'],
    [
      'too many peers',
      'PUT',
      '/v1/tenants/t1/peers',
      { peers: new Array(1025).fill({}) },
      400,
      'TG_ERR_INVALID_ARGUMENT',
    ],
  ];
  for (const [what, method, path, body, status, code, raw] of cases) {
    const r = await call(method, path, body, raw);
    assert.equal(r.status, status, `${what}: HTTP ${r.status} ${r.raw}`);
    const b = r.body as { code: string; message: string };
    assert.deepEqual(Object.keys(b).sort(), ['code', 'message'], what);
    assert.equal(b.code, code, `${what}: ${b.message}`);
    assert.ok(b.message.length > 10, `${what}: message '${b.message}'`);
    assert.equal(await state(), before, `${what} changed the agent's state`);
  }
  // Oversized bodies: declared and streamed.
  const big = JSON.stringify({ ...good, pad: 'x'.repeat(NIC_MAX_BODY_BYTES) });
  const r1 = await call('POST', '/v1/workloads', undefined, big);
  assert.equal(r1.status, 413);
  assert.equal((r1.body as { code: string }).code, 'TG_ERR_PAYLOAD_TOO_LARGE');
  assert.equal(await state(), before);
  // Streamed without a declared length, cut at the limit.
  const streamed = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(
      {
        socketPath: sock,
        method: 'POST',
        path: '/v1/workloads',
        headers: { 'transfer-encoding': 'chunked' },
      },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => {
          body += d.toString();
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    for (let i = 0; i < 8; i++) req.write('x'.repeat(NIC_MAX_BODY_BYTES / 4));
    req.end();
  });
  assert.equal(streamed.status, 413);
  assert.equal(JSON.parse(streamed.body).code, 'TG_ERR_PAYLOAD_TOO_LARGE');
  assert.equal(await state(), before);
  // The server still answers after a refused body.
  assert.equal((await call('GET', '/v1/health')).status, 200);
});

test('no API answer carries an off-host key or another NIC-internal secret', async () => {
  const offHost = ['t1']
    .map((t) => svc.agent.keys.get('tenant-off-host', { tenant: t })?.secret)
    .filter((k): k is Buffer => k !== undefined);
  const internal = ['nic-identity', 'nic-seal', 'nic-on-host'] as const;
  const secrets = [...offHost, ...internal.map((k) => svc.agent.keys.get(k)?.secret as Buffer)];
  assert.equal(secrets.length, 4);
  // Read every GET route once more.
  for (const p of [
    '/v1/health',
    '/v1/identity',
    '/v1/keys',
    '/v1/workloads',
    '/v1/tenants',
    '/v1/tenants/t1/key',
    '/metrics',
  ])
    await call('GET', p);
  const all = responses.join('\n');
  assert.ok(responses.length > 40);
  for (const s of secrets)
    for (const enc of ['base64', 'hex', 'base64url'] as const)
      assert.equal(all.includes(s.toString(enc)), false, `a NIC secret appears in an API answer (${enc})`);
});

test('register with replace: a new vSwitch key for the same workload keeps the tenant and its off-host key', async () => {
  const reg = (workload: string, vswitchPublicKey: string, extra: Record<string, unknown> = {}) =>
    call('POST', '/v1/workloads', {
      tenant: 'rp',
      workload,
      address: '100.64.7.11',
      vswitchPublicKey,
      ...extra,
    });
  assert.equal((await reg('only', key())).status, 201);
  const tenantKey = ((await call('GET', '/v1/tenants/rp/key')).body as { publicKey: string }).publicKey;
  const psks = async () =>
    (await api.keys())
      .filter((k) => k.kind === 'workload-psk' && k.workload === 'only')
      .map((k) => k.fingerprint);
  const pskBefore = await psks();
  // Without replace it is a conflict, and so is a replace into another tenant.
  assert.equal((await reg('only', key())).status, 409);
  const other = await call('POST', '/v1/workloads', {
    tenant: 'rq',
    workload: 'only',
    address: '100.64.8.11',
    vswitchPublicKey: key(),
    replace: true,
  });
  assert.equal(other.status, 409, other.raw);
  const next = key();
  const r = await reg('only', next, { replace: true });
  assert.equal(r.status, 201, r.raw);
  const wl = (await api.workloads()).filter((w) => w.workload === 'only');
  assert.deepEqual(
    wl.map((w) => [w.tenant, w.vswitchPublicKey]),
    [['rp', next]],
  );
  // The tenant (its only workload here was replaced) kept its off-host key; the PSK is new.
  assert.equal(
    ((await call('GET', '/v1/tenants/rp/key')).body as { publicKey: string }).publicKey,
    tenantKey,
  );
  const pskAfter = await psks();
  assert.equal(pskAfter.length, 1);
  assert.notDeepEqual(pskAfter, pskBefore);
  const gone = (await call('DELETE', '/v1/workloads/only')).body as { tenantRemoved: boolean };
  assert.equal(gone.tenantRemoved, true);
});
