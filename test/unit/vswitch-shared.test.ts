// The vSwitch daemon in shared isolation on fakes (no root): every instance's device runs
// inside one process over in-memory TUNs and UDP sockets, carries traffic to its NIC peer
// through the platform's one set of I/O buffers, fails alone (reported as that instance's
// state, counted), and wipes its keys when it ends.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { run as vswitchd } from '../../src/cli/vswitchd.js';
import { FakeNetwork, FakeTun } from '../../src/native/fake.js';
import { parseCidr, parseEndpoint } from '../../src/net/ip.js';
import { sealPsk } from '../../src/nic/psk-box.js';
import { JsTransportAead } from '../../src/protocol/aead.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { uapiGet } from '../../src/uapi/client.js';
import { logger } from '../../src/util/log.js';
import { vswitchRoutes } from '../../src/vswitch/api.js';
import { VSwitchDaemon } from '../../src/vswitch/daemon.js';
import type { DeviceHandle, Plumbing } from '../../src/vswitch/platform.js';
import { type Plumber, SharedPlatform } from '../../src/vswitch/shared-platform.js';
import { ipv4Packet } from '../helpers/protocol-harness.js';

const log = logger('test-vswitch-shared');
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A TUN whose reads throw once `explode` is set, as a bug in the packet path would. */
class ExplodingTun extends FakeTun {
  explode = false;

  override readBatch(
    slab: Buffer,
    slotSize: number,
    headroom: number,
    max: number,
    lengths: Uint32Array,
  ): number {
    if (this.explode) throw new TypeError('boom in the packet path');
    return super.readBatch(slab, slotSize, headroom, max, lengths);
  }
}

class FakePlumbing implements Plumber {
  readonly plumbed = new Map<string, Plumbing>();
  readonly namespaces = new Set(['tgx-w1', 'tgx-w2', 'tgx-w3']);

  netnsExists(netns: string): boolean {
    return this.namespaces.has(netns);
  }

  async linkExists(netns: string, name: string): Promise<boolean> {
    return name === 'tg0' && this.plumbed.has(netns);
  }

  async plumb(p: Plumbing): Promise<void> {
    this.plumbed.set(p.netns, p);
  }

  readonly unplumbCalls: string[] = [];

  async unplumb(netns: string): Promise<void> {
    this.unplumbCalls.push(netns);
    this.plumbed.delete(netns);
  }
}

const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

async function until(what: string, cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await settle();
  }
}

/**
 * A vSwitch daemon on a shared platform, and a peer device standing in for the NIC (on a
 * platform of its own, same fake network) that accepts each workload's key for its address.
 */
async function setup(opts: { uapiSocketDir?: string } = {}) {
  const net = new FakeNetwork();
  const tuns = new Map<string, ExplodingTun>();
  const plumbing = new FakePlumbing();
  /** Port 1 stands for a port the daemon may not bind. */
  const openSocket = (port: number) => {
    if (port === 1) throw new Error('EACCES: port 1 is not ours');
    return net.createSocket({ port });
  };
  const platform = new SharedPlatform({
    log,
    openTun: (name) => {
      const t = new ExplodingTun({ name });
      tuns.set(name, t);
      return t;
    },
    openSocket,
    aead: new JsTransportAead(),
    plumbing,
    serveUapi: opts.uapiSocketDir !== undefined,
    uapiSocketDir: opts.uapiSocketDir,
  });
  const d = new VSwitchDaemon({ platform, log, ifnamePrefix: 'tgx-1v' });

  const nicTun = new FakeTun({ name: 'tgnic0' });
  const nicSide = new SharedPlatform({
    log,
    openTun: () => nicTun,
    openSocket,
    aead: new JsTransportAead(),
    plumbing,
    serveUapi: false,
  });
  const nic: DeviceHandle = await nicSide.launch('tgnic0', 1420);
  const nicPrivate = generatePrivateKey();
  const nicPublic = publicKeyOf(nicPrivate);
  await nic.uapiSet({ privateKey: nicPrivate, replacePeers: true, peers: [] });
  nicPrivate.fill(0);
  const nicPort = nicSide.device('tgnic0')!.backend.snapshot().listenPort;

  /** Creates a workload's instance, makes it the NIC's peer for its address, and configures it. */
  const place = async (workload: string, netns: string, address: string) => {
    const c = await d.create({ workload, netns, address });
    await nic.uapiSet({
      replacePeers: false,
      peers: [
        {
          publicKey: Buffer.from(c.publicKey, 'base64'),
          remove: false,
          updateOnly: false,
          replaceAllowedIps: true,
          allowedIps: [{ cidr: parseCidr(`${address}/32`)!, remove: false }],
        },
      ],
    });
    await d.configure(workload, {
      nicPublicKey: nicPublic.toString('base64'),
      sealedPsk: sealPsk(Buffer.alloc(32), {
        workload,
        instanceKey: Buffer.from(c.publicKey, 'base64'),
        nicPublicKey: nicPublic,
      }),
      nicEndpoint: `127.0.0.1:${nicPort}`,
    });
    return c;
  };
  const close = async () => {
    await d.close();
    await nic.stop();
  };
  return { net, tuns, plumbing, platform, d, nic, nicTun, nicSide, place, close };
}

/** Injects a packet from `src` into the instance's TUN and waits until the NIC's TUN has it. */
async function sendToNic(
  s: Awaited<ReturnType<typeof setup>>,
  ifname: string,
  src: string,
  mark: number,
): Promise<Buffer> {
  const p = ipv4Packet(src, '100.64.9.9', 64, mark);
  assert.ok(s.tuns.get(ifname)!.inject(p));
  let got: Buffer | undefined;
  await until(`packet ${mark} from ${src} at the NIC`, () => {
    got = s.nicTun.written.find((w) => w.equals(p));
    return got !== undefined;
  });
  return got!;
}

test('instances share one process and one set of buffers: traffic flows both ways for each', async () => {
  const s = await setup();
  try {
    const a = await s.place('w1', 'tgx-w1', '100.64.1.11');
    const b = await s.place('w2', 'tgx-w2', '100.64.1.12');
    assert.equal(s.platform.stats().devices, 2);
    // Both at once: each readiness callback uses the shared batches to completion.
    const pa = ipv4Packet('100.64.1.11', '100.64.9.9', 100, 0x11);
    const pb = ipv4Packet('100.64.1.12', '100.64.9.9', 200, 0x22);
    s.tuns.get(a.ifname)!.inject(pa);
    s.tuns.get(b.ifname)!.inject(pb);
    await until(
      'both packets at the NIC',
      () => s.nicTun.written.some((w) => w.equals(pa)) && s.nicTun.written.some((w) => w.equals(pb)),
    );
    // And back: the NIC routes by the workload's address to that workload's instance only.
    const back = ipv4Packet('100.64.9.9', '100.64.1.12', 80, 0x33);
    s.nicTun.inject(back);
    await until('the reply in w2', () => s.tuns.get(b.ifname)!.written.some((w) => w.equals(back)));
    assert.equal(s.tuns.get(a.ifname)!.written.length, 0);
    const info = s.d.get('w1');
    assert.equal(info.state, 'configured');
    assert.equal(info.pid, null, 'no process of its own');
    assert.deepEqual(s.plumbing.plumbed.get('tgx-w1')?.ifname, a.ifname);
  } finally {
    await s.close();
  }
});

test('a device that throws ends alone: crashed with its reason, counted, the others carry on, restartable', async () => {
  const s = await setup();
  try {
    const a = await s.place('w1', 'tgx-w1', '100.64.1.11');
    const b = await s.place('w2', 'tgx-w2', '100.64.1.12');
    await sendToNic(s, a.ifname, '100.64.1.11', 1);
    s.tuns.get(a.ifname)!.explode = true;
    s.tuns.get(a.ifname)!.inject(ipv4Packet('100.64.1.11', '100.64.9.9', 64, 2));
    await until('w1 crashed', () => s.d.get('w1').state === 'crashed');
    const w1 = s.d.get('w1');
    assert.equal(w1.exit?.code, null);
    assert.match(w1.exit?.reason ?? '', /TypeError: boom in the packet path/);
    assert.equal(s.d.crashes, 1);
    assert.deepEqual(s.d.counts(), { instances: 2, running: 1, crashed: 1 });
    assert.deepEqual(s.platform.stats(), { devices: 1, failures: 1 });
    // The health route reports it as the process platform's crash would be.
    const health = vswitchRoutes(s.d, Date.now()).find((r) => r.path === '/v1/health')!;
    const h = (await health.handler({ params: {}, body: undefined } as never)) as Record<string, number>;
    assert.equal(h.crashed, 1);
    assert.equal(h.crashes, 1);
    // The other instance is untouched.
    await sendToNic(s, b.ifname, '100.64.1.12', 3);
    await assert.rejects(
      s.d.configure('w1', {
        nicPublicKey: publicKeyOf(generatePrivateKey()).toString('base64'),
        sealedPsk: sealPsk(Buffer.alloc(32), {
          workload: 'w1',
          instanceKey: Buffer.from(a.publicKey, 'base64'),
          nicPublicKey: publicKeyOf(generatePrivateKey()),
        }),
        nicEndpoint: '127.0.0.1:1',
      }),
      { code: 'TG_ERR_CONFLICT' },
    );
    // Restart: a fresh device and key pair in the same namespace.
    const r = await s.d.restart('w1');
    assert.notEqual(r.publicKey, a.publicKey);
    assert.equal(s.d.get('w1').state, 'created');
    assert.equal(s.platform.stats().devices, 2);
  } finally {
    await s.close();
  }
});

test('a device whose TUN goes away (ip link del) is reported crashed; the others carry on', async () => {
  const s = await setup();
  try {
    const a = await s.place('w1', 'tgx-w1', '100.64.1.11');
    const b = await s.place('w2', 'tgx-w2', '100.64.1.12');
    s.tuns.get(a.ifname)!.fail('EBADFD');
    await until('w1 crashed', () => s.d.get('w1').state === 'crashed');
    assert.match(s.d.get('w1').exit?.reason ?? '', /^TUN: /);
    await sendToNic(s, b.ifname, '100.64.1.12', 4);
  } finally {
    await s.close();
  }
});

test('delete ends the device: keys wiped in its engine, TUN and socket closed', async () => {
  const s = await setup();
  try {
    const a = await s.place('w1', 'tgx-w1', '100.64.1.11');
    const dev = s.platform.device(a.ifname)!;
    const id = dev.backend.identityId;
    const key = dev.engine.privateKeyOf(id);
    assert.equal(publicKeyOf(key).toString('base64'), a.publicKey);
    key.fill(0);
    await s.d.delete('w1');
    assert.equal(dev.running, false);
    assert.deepEqual(await dev.exited, { code: 0, signal: null, reason: 'stopped' });
    assert.throws(() => dev.engine.privateKeyOf(id), 'the identity (and its key) is still there');
    assert.equal(s.tuns.get(a.ifname)!.inject(ipv4Packet('100.64.1.11', '100.64.9.9', 10)), false);
    // tg0 went with the TUN's fd: no `ip` call was needed to remove it.
    assert.deepEqual(s.plumbing.unplumbCalls, []);
    assert.equal(s.platform.device(a.ifname), undefined);
    assert.deepEqual(s.platform.stats(), { devices: 0, failures: 0 });
  } finally {
    await s.close();
  }
});

test('a refused UAPI change is a TG_ERR_UAPI error and changes nothing', async () => {
  const s = await setup();
  try {
    const a = await s.place('w1', 'tgx-w1', '100.64.1.11');
    const h = await s.platform.launch('tgx-extra', 1420);
    const port = s.platform.device('tgx-extra')!.backend.snapshot().listenPort;
    await assert.rejects(h.uapiSet({ listenPort: 1, replacePeers: false, peers: [] }), {
      code: 'TG_ERR_UAPI',
    });
    assert.equal(s.platform.device('tgx-extra')!.backend.snapshot().listenPort, port);
    await h.stop();
    await assert.rejects(h.uapiSet({ replacePeers: true, peers: [] }), { code: 'TG_ERR_CONFLICT' });
    await sendToNic(s, a.ifname, '100.64.1.11', 5);
  } finally {
    await s.close();
  }
});

test('each shared device serves the WireGuard UAPI under its interface name', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-vswitch-uapi-'));
  dirs.push(dir);
  const s = await setup({ uapiSocketDir: dir });
  try {
    const a = await s.place('w1', 'tgx-w1', '100.64.1.11');
    const snap = await uapiGet(join(dir, `${a.ifname}.sock`));
    assert.ok(snap.privateKey);
    assert.equal(publicKeyOf(snap.privateKey).toString('base64'), a.publicKey);
    snap.privateKey.fill(0);
    assert.equal(snap.peers.length, 1);
    assert.equal(snap.peers[0].endpoint, parseEndpoint(s.d.get('w1').nicEndpoint!)!.text);
    assert.deepEqual([...snap.peers[0].allowedIps].sort(), ['0.0.0.0/0', '::/0']);
    await s.d.delete('w1');
    await assert.rejects(uapiGet(join(dir, `${a.ifname}.sock`), 500));
  } finally {
    await s.close();
  }
});

test('vswitchd refuses an unknown isolation before doing anything', async () => {
  await assert.rejects(
    vswitchd([
      '--api-socket',
      '/tmp/tg-none.sock',
      '--ifname-prefix',
      'tgx-1v',
      '--isolation',
      'threads',
      '--insecure',
    ]),
    { code: 'TG_ERR_INVALID_ARGUMENT', message: /must be process or shared, not 'threads'/ },
  );
  const before = process.env.TENGUARD_VSWITCH_ISOLATION;
  process.env.TENGUARD_VSWITCH_ISOLATION = 'none';
  try {
    await assert.rejects(
      vswitchd(['--api-socket', '/tmp/tg-none.sock', '--ifname-prefix', 'tgx-1v', '--insecure']),
      {
        code: 'TG_ERR_INVALID_ARGUMENT',
        message: /TENGUARD_VSWITCH_ISOLATION/,
      },
    );
  } finally {
    if (before === undefined) delete process.env.TENGUARD_VSWITCH_ISOLATION;
    else process.env.TENGUARD_VSWITCH_ISOLATION = before;
  }
});
