// The vSwitch daemon on a fake platform (no root, no processes): instance lifecycle, the NIC as
// the only peer, secrets passed only through the UAPI and wiped, a crash isolated and reported,
// and API validation.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { type PskBox, sealPsk } from '../../src/nic/psk-box.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { apiRequest, JsonApiServer } from '../../src/util/http-json.js';
import { logger } from '../../src/util/log.js';
import { vswitchRoutes } from '../../src/vswitch/api.js';
import { VSwitchDaemon } from '../../src/vswitch/daemon.js';
import { FakePlatform } from '../helpers/vswitch-fakes.js';

const nicKey = publicKeyOf(generatePrivateKey()).toString('base64');
const psk = (): string => generatePrivateKey().toString('base64');

/** A PSK sealed as the NIC seals it, to the instance's public key (a stranger's when none). */
function box(d: VSwitchDaemon, workload: string, p: string): PskBox {
  let instanceKey: Buffer;
  try {
    instanceKey = Buffer.from(d.get(workload).publicKey, 'base64');
  } catch {
    instanceKey = publicKeyOf(generatePrivateKey());
  }
  return sealPsk(Buffer.from(p, 'base64'), {
    workload,
    instanceKey,
    nicPublicKey: Buffer.from(nicKey, 'base64'),
  });
}
const log = logger('test-vswitch');

function daemon(platform = new FakePlatform()) {
  return { platform, d: new VSwitchDaemon({ platform, log, ifnamePrefix: 'tgx-1v' }) };
}

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

test('create: a device with its own key pair, plumbed into the namespace as tg0', async () => {
  const { platform, d } = daemon();
  const a = await d.create({ workload: 'w1', netns: 'tgx-w1', address: '100.64.1.11' });
  const b = await d.create({
    workload: 'w2',
    netns: 'tgx-w2',
    address: 'fd00:100:64:1::1:2',
    routes: ['fd00:100:64:1::/64'],
  });
  assert.equal(a.ifname, 'tgx-1v0');
  assert.equal(b.ifname, 'tgx-1v1');
  assert.notEqual(a.publicKey, b.publicKey);
  const dev = platform.devices.get(a.ifname)!;
  const first = dev.changes[0];
  assert.ok(first.privateKey);
  assert.equal(publicKeyOf(Buffer.from(first.privateKey, 'base64')).toString('base64'), a.publicKey);
  assert.ok(
    dev.handed[0].every((x) => x === 0),
    'the private key was not wiped after the UAPI call',
  );
  assert.deepEqual(platform.plumbed.get('tgx-w1'), {
    ifname: 'tgx-1v0',
    netns: 'tgx-w1',
    netnsIfname: 'tg0',
    addressCidr: '100.64.1.11/32',
    family: 4,
    routes: ['0.0.0.0/0'],
    mtu: 1420,
  });
  assert.equal(platform.plumbed.get('tgx-w2')?.addressCidr, 'fd00:100:64:1::1:2/128');
  assert.deepEqual(platform.plumbed.get('tgx-w2')?.routes, ['fd00:100:64:1::/64']);
  assert.deepEqual(
    d.list().map((i) => [i.workload, i.state, i.publicKey]),
    [
      ['w1', 'created', a.publicKey],
      ['w2', 'created', b.publicKey],
    ],
  );
});

test('configure: the NIC is the only peer, all traffic goes to it, the PSK is wiped after', async () => {
  const { platform, d } = daemon();
  const a = await d.create({ workload: 'w1', netns: 'tgx-w1', address: '100.64.1.11' });
  const p1 = psk();
  const info = await d.configure('w1', {
    nicPublicKey: nicKey,
    sealedPsk: box(d, 'w1', p1),
    nicEndpoint: '198.19.1.2:51820',
  });
  assert.equal(info.state, 'configured');
  const dev = platform.devices.get(a.ifname)!;
  const c = dev.changes[1];
  assert.equal(c.replacePeers, true);
  assert.deepEqual(c.peers, [
    {
      publicKey: nicKey,
      psk: p1,
      endpoint: '198.19.1.2:51820',
      keepalive: 25,
      allowed: ['0.0.0.0/0', '::/0'],
    },
  ]);
  const p2 = psk();
  await d.rotatePsk('w1', box(d, 'w1', p2));
  const r = dev.changes[2];
  assert.equal(r.replacePeers, false);
  assert.deepEqual(
    r.peers.map((p) => [p.publicKey, p.psk]),
    [[nicKey, p2]],
  );
  assert.ok(
    dev.handed.every((k) => k.every((x) => x === 0)),
    'a key handed to the device was not wiped',
  );
  assert.equal(JSON.stringify(d.list()).includes(p1), false, 'the PSK is listed');
  assert.equal(JSON.stringify(d.list()).includes(p2), false, 'the PSK is listed');
});

test('a crashed instance is reported, the others keep running, and it restarts with a new key', async () => {
  const { platform, d } = daemon();
  const a = await d.create({ workload: 'w1', netns: 'tgx-w1', address: '100.64.1.11' });
  const b = await d.create({ workload: 'w2', netns: 'tgx-w2', address: '100.64.1.12' });
  await d.configure('w1', {
    nicPublicKey: nicKey,
    sealedPsk: box(d, 'w1', psk()),
    nicEndpoint: '198.19.1.2:51820',
  });
  await d.configure('w2', {
    nicPublicKey: nicKey,
    sealedPsk: box(d, 'w2', psk()),
    nicEndpoint: '198.19.1.2:51820',
  });
  platform.devices.get(a.ifname)!.crash();
  await settle();
  const byName = Object.fromEntries(d.list().map((i) => [i.workload, i]));
  assert.equal(byName.w1.state, 'crashed');
  assert.deepEqual(byName.w1.exit, { code: null, signal: 'SIGKILL' });
  assert.equal(byName.w1.pid, null);
  assert.equal(byName.w2.state, 'configured');
  assert.equal(d.crashes, 1);
  assert.deepEqual(d.counts(), { instances: 2, running: 1, crashed: 1 });
  await assert.rejects(d.rotatePsk('w1', box(d, 'w1', psk())), { code: 'TG_ERR_CONFLICT' });
  await d.rotatePsk('w2', box(d, 'w2', psk()));
  await assert.rejects(d.restart('w2'), { code: 'TG_ERR_CONFLICT' });
  const again = await d.restart('w1');
  assert.notEqual(again.publicKey, a.publicKey);
  assert.equal(d.get('w1').state, 'created');
  assert.equal(d.get('w2').publicKey, b.publicKey);
  await d.delete('w1');
  assert.equal(platform.plumbed.has('tgx-w1'), false);
  assert.equal(platform.devices.get(again.ifname)?.alive, false);
  assert.deepEqual(
    d.list().map((i) => i.workload),
    ['w2'],
  );
});

test('refused requests change nothing', async () => {
  const { platform, d } = daemon();
  await d.create({ workload: 'w1', netns: 'tgx-w1', address: '100.64.1.11' });
  const before = JSON.stringify(d.list());
  const devices = platform.devices.size;
  const bad: [string, Promise<unknown>, string][] = [
    [
      'duplicate workload',
      d.create({ workload: 'w1', netns: 'tgx-w2', address: '100.64.1.12' }),
      'TG_ERR_CONFLICT',
    ],
    [
      'namespace taken',
      d.create({ workload: 'w9', netns: 'tgx-w1', address: '100.64.1.12' }),
      'TG_ERR_CONFLICT',
    ],
    [
      'unknown namespace',
      d.create({ workload: 'w9', netns: 'tgx-none', address: '100.64.1.12' }),
      'TG_ERR_NOT_FOUND',
    ],
    [
      'bad namespace name',
      d.create({ workload: 'w9', netns: '../etc', address: '100.64.1.12' }),
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'bad address',
      d.create({ workload: 'w9', netns: 'tgx-w2', address: '100.64.1.300' }),
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'bad route',
      d.create({ workload: 'w9', netns: 'tgx-w2', address: '100.64.1.12', routes: ['x/8'] }),
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'unknown instance',
      d.configure('w9', {
        nicPublicKey: nicKey,
        sealedPsk: box(d, 'w9', psk()),
        nicEndpoint: '198.19.1.2:51820',
      }),
      'TG_ERR_NOT_FOUND',
    ],
    [
      'bad endpoint',
      d.configure('w1', { nicPublicKey: nicKey, sealedPsk: box(d, 'w1', psk()), nicEndpoint: 'nic:51820' }),
      'TG_ERR_INVALID_ARGUMENT',
    ],
    [
      'bad key',
      d.configure('w1', {
        nicPublicKey: 'AAAA',
        sealedPsk: box(d, 'w1', psk()),
        nicEndpoint: '198.19.1.2:51820',
      }),
      'TG_ERR_INVALID_ARGUMENT',
    ],
    ['rotate before configure', d.rotatePsk('w1', box(d, 'w1', psk())), 'TG_ERR_CONFLICT'],
    ['delete unknown', d.delete('w9'), 'TG_ERR_NOT_FOUND'],
  ];
  for (const [what, p, code] of bad) await assert.rejects(p, { code }, what);
  assert.equal(JSON.stringify(d.list()), before);
  assert.equal(platform.devices.size, devices, 'a refused request started a device');
});

const dir = mkdtempSync(join(tmpdir(), 'tg-vswitch-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('API: validated bodies, 4xx with a code for bad input', async () => {
  const { d } = daemon();
  const sock = join(dir, 'vs.sock');
  const server = await JsonApiServer.listen({
    socketPath: sock,
    routes: vswitchRoutes(d, Date.now()),
    log,
    maxBodyBytes: 16 * 1024,
  });
  try {
    const ok = await apiRequest(sock, 'POST', '/v1/instances', {
      workload: 'w1',
      netns: 'tgx-w1',
      address: '100.64.1.11',
    });
    assert.equal(ok.status, 201);
    const cases: [string, 'GET' | 'POST' | 'PUT' | 'DELETE', string, unknown, number, string][] = [
      [
        'unknown field',
        'POST',
        '/v1/instances',
        { workload: 'w2', netns: 'tgx-w2', address: '100.64.1.12', key: 'x' },
        400,
        'TG_ERR_INVALID_ARGUMENT',
      ],
      [
        'bad workload name',
        'POST',
        '/v1/instances',
        { workload: 'W 2', netns: 'tgx-w2', address: '100.64.1.12' },
        400,
        'TG_ERR_INVALID_ARGUMENT',
      ],
      [
        'bad PSK box',
        'PUT',
        '/v1/instances/w1/nic',
        {
          nicPublicKey: nicKey,
          sealedPsk: { version: 1, ephemeral: 'short', box: 'x' },
          nicEndpoint: '198.19.1.2:51820',
        },
        400,
        'TG_ERR_INVALID_ARGUMENT',
      ],
      [
        'missing endpoint',
        'PUT',
        '/v1/instances/w1/nic',
        { nicPublicKey: nicKey, sealedPsk: box(d, 'w1', psk()) },
        400,
        'TG_ERR_INVALID_ARGUMENT',
      ],
      ['unknown instance', 'GET', '/v1/instances/w9', undefined, 404, 'TG_ERR_NOT_FOUND'],
      [
        'duplicate',
        'POST',
        '/v1/instances',
        { workload: 'w1', netns: 'tgx-w2', address: '100.64.1.12' },
        409,
        'TG_ERR_CONFLICT',
      ],
      [
        'oversized',
        'POST',
        '/v1/instances',
        { workload: 'w3', netns: 'x'.repeat(20_000), address: '100.64.1.13' },
        413,
        'TG_ERR_PAYLOAD_TOO_LARGE',
      ],
    ];
    for (const [what, method, path, body, status, code] of cases) {
      const r = await apiRequest(sock, method, path, body);
      assert.equal(r.status, status, `${what}: ${r.raw}`);
      assert.equal((r.body as { code: string }).code, code, what);
    }
    assert.deepEqual(
      d.list().map((i) => i.workload),
      ['w1'],
    );
    const list = await apiRequest(sock, 'GET', '/v1/instances');
    assert.equal((list.body as { instances: unknown[] }).instances.length, 1);
  } finally {
    await server.close();
    await d.close();
  }
});

test('a PSK box opens only for its instance, its workload and its NIC key; a refused one changes nothing', async () => {
  const { platform, d } = daemon();
  const a = await d.create({ workload: 'w1', netns: 'tgx-w1', address: '100.64.1.11' });
  await d.create({ workload: 'w2', netns: 'tgx-w2', address: '100.64.1.12' });
  const dev = platform.devices.get(a.ifname)!;
  const changes = dev.changes.length;
  const p = Buffer.from(psk(), 'base64');
  const nic = Buffer.from(nicKey, 'base64');
  const w2Key = Buffer.from(d.get('w2').publicKey, 'base64');
  const w1Key = Buffer.from(a.publicKey, 'base64');
  const otherNic = publicKeyOf(generatePrivateKey());
  const wrong: [string, PskBox][] = [
    ["sealed to w2's instance", sealPsk(p, { workload: 'w1', instanceKey: w2Key, nicPublicKey: nic })],
    [
      'sealed for another workload name',
      sealPsk(p, { workload: 'w2', instanceKey: w1Key, nicPublicKey: nic }),
    ],
    [
      'sealed for another NIC key',
      sealPsk(p, { workload: 'w1', instanceKey: w1Key, nicPublicKey: otherNic }),
    ],
  ];
  const good = sealPsk(p, { workload: 'w1', instanceKey: w1Key, nicPublicKey: nic });
  const flipped = Buffer.from(good.box, 'base64');
  flipped[3] ^= 1;
  wrong.push(['tampered', { ...good, box: flipped.toString('base64') }]);
  for (const [what, b] of wrong)
    await assert.rejects(
      d.configure('w1', { nicPublicKey: nicKey, sealedPsk: b, nicEndpoint: '198.19.1.2:51820' }),
      { code: 'TG_ERR_INVALID_ARGUMENT' },
      what,
    );
  assert.equal(dev.changes.length, changes, 'a refused box reached the device');
  assert.equal(d.get('w1').state, 'created');
  await d.configure('w1', { nicPublicKey: nicKey, sealedPsk: good, nicEndpoint: '198.19.1.2:51820' });
  assert.equal(dev.changes.at(-1)!.peers[0].psk, p.toString('base64'));
});

test('batches: creates and configures in one request each, one result per item in order, each failure its own', async () => {
  const { platform, d } = daemon();
  await d.create({ workload: 'w3', netns: 'tgx-w3', address: '100.64.1.13' });
  const sock = join(dir, 'vs-batch.sock');
  const server = await JsonApiServer.listen({ socketPath: sock, routes: vswitchRoutes(d, Date.now()), log });
  try {
    const created = await apiRequest(sock, 'POST', '/v1/instances/batch', {
      instances: [
        { workload: 'w1', netns: 'tgx-w1', address: '100.64.1.11' },
        { workload: 'w2', netns: 'tgx-nowhere', address: '100.64.1.12' },
        { workload: 'w3', netns: 'tgx-w3', address: '100.64.1.13' },
        { workload: 'w4', netns: 'tgx-w1', address: '100.64.1.14' },
        { workload: 'w5', netns: 'tgx-w2', address: '100.64.1.15' },
      ],
    });
    assert.equal(created.status, 200, created.raw);
    const results = (created.body as { results: Record<string, unknown>[] }).results;
    assert.deepEqual(
      results.map((r) => [r.workload, (r.error as { code?: string } | undefined)?.code ?? 'ok']),
      [
        ['w1', 'ok'],
        ['w2', 'TG_ERR_NOT_FOUND'],
        ['w3', 'TG_ERR_CONFLICT'],
        ['w4', 'TG_ERR_CONFLICT'],
        ['w5', 'ok'],
      ],
    );
    assert.deepEqual(
      d
        .list()
        .map((i) => i.workload)
        .sort(),
      ['w1', 'w3', 'w5'],
    );
    assert.equal(platform.plumbed.get('tgx-w2')?.addressCidr, '100.64.1.15/32');
    const p1 = psk();
    const configured = await apiRequest(sock, 'PUT', '/v1/instances/nic', {
      instances: [
        {
          workload: 'w1',
          nicPublicKey: nicKey,
          sealedPsk: box(d, 'w1', p1),
          nicEndpoint: '198.18.1.2:51820',
        },
        {
          workload: 'w2',
          nicPublicKey: nicKey,
          sealedPsk: box(d, 'w2', p1),
          nicEndpoint: '198.18.1.2:51820',
        },
        // Sealed to another instance: refused, and only this one.
        {
          workload: 'w5',
          nicPublicKey: nicKey,
          sealedPsk: box(d, 'w1', p1),
          nicEndpoint: '198.18.1.2:51820',
        },
      ],
    });
    assert.equal(configured.status, 200, configured.raw);
    const cr = (configured.body as { results: Record<string, unknown>[] }).results;
    assert.equal(cr[0].state, 'configured');
    assert.equal((cr[1].error as { code: string }).code, 'TG_ERR_NOT_FOUND');
    assert.equal(cr[2].workload, 'w5');
    assert.ok(cr[2].error !== undefined, 'a PSK sealed to another instance was accepted');
    assert.equal(d.get('w5').state, 'created');
    const empty = await apiRequest(sock, 'POST', '/v1/instances/batch', { instances: [] });
    assert.equal(empty.status, 400);
  } finally {
    await server.close();
  }
});
