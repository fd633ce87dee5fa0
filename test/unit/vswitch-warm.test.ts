// The warm pool in front of a (fake) process platform: launches are served by started, keyless
// devices (their UAPI socket renamed to the daemon's name, their TUN when plumbed), the pool
// refills in the background, an idle device that ends leaves it, a rename failure falls
// through to the next or a cold start, and close() ends the idle ones. Also through the
// daemon: its instances get keys only after they are taken.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { UapiChangeSet } from '../../src/uapi/protocol.js';
import { logger } from '../../src/util/log.js';
import { VSwitchDaemon } from '../../src/vswitch/daemon.js';
import type { DeviceExit, DeviceHandle, Plumbing, VSwitchPlatform } from '../../src/vswitch/platform.js';
import { WarmPool } from '../../src/vswitch/warm-pool.js';

class Dev implements DeviceHandle {
  readonly exited: Promise<DeviceExit>;
  keys = 0;
  alive = true;
  private end!: (e: DeviceExit) => void;
  constructor(
    readonly ifname: string,
    readonly pid: number,
  ) {
    this.exited = new Promise((r) => {
      this.end = r;
    });
  }
  async uapiSet(change: UapiChangeSet): Promise<void> {
    if (change.privateKey) this.keys++;
  }
  die(): void {
    this.alive = false;
    this.end({ code: 1, signal: null });
  }
  async stop(): Promise<void> {
    if (this.alive) this.die();
  }
}

class Platform implements VSwitchPlatform {
  readonly launched: Dev[] = [];
  readonly plumbed: Plumbing[] = [];
  private pid = 100;
  async launch(ifname: string): Promise<DeviceHandle> {
    const d = new Dev(ifname, this.pid++);
    this.launched.push(d);
    return d;
  }
  netnsExists(): boolean {
    return true;
  }
  async linkExists(): Promise<boolean> {
    return false;
  }
  async plumb(p: Plumbing): Promise<void> {
    this.plumbed.push(p);
  }
  async unplumb(): Promise<void> {}
}

const log = logger('test-warm');
const settle = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

test('launches come from the pool, renamed, and the pool refills', async () => {
  const inner = new Platform();
  const renames: [string, string][] = [];
  const pool = new WarmPool(inner, {
    size: 2,
    namePrefix: 'tgx-1v_',
    mtu: 1420,
    log,
    rename: async (from, to) => {
      renames.push([from, to]);
    },
    uapiAt: (_name, dev) => (c) => dev.uapiSet(c),
  });
  await settle();
  assert.equal(pool.size, 2);
  assert.deepEqual(
    inner.launched.map((d) => d.ifname),
    ['tgx-1v_0', 'tgx-1v_1'],
  );
  const a = await pool.launch('tgx-1v0', 1420);
  assert.equal(a.ifname, 'tgx-1v0');
  assert.equal(a.pid, inner.launched[0].pid, 'the warm device, not a new one');
  assert.deepEqual(renames, [['tgx-1v_0', 'tgx-1v0']]);
  await settle();
  assert.equal(pool.size, 2, 'refilled');
  assert.equal(inner.launched.length, 3);
  // Another MTU than the pool's: a cold start under the daemon's name.
  const b = await pool.launch('tgx-1v1', 1380);
  assert.equal(b.ifname, 'tgx-1v1');
  assert.equal(inner.launched.at(-1)?.ifname, 'tgx-1v1');
  assert.deepEqual([pool.hits, pool.misses], [1, 1]);
  // An idle device that ends leaves the pool.
  inner.launched[1].die();
  await settle();
  assert.equal(pool.size, 1);
  await pool.close();
  assert.equal(pool.size, 0);
  assert.ok(
    inner.launched.slice(1, 3).every((d) => !d.alive),
    'idle devices ended',
  );
  assert.equal(inner.launched[0].alive, true, 'a device in use is not ended by the pool');
});

test('a warm device that cannot be renamed is dropped; the next one or a cold start serves', async () => {
  const inner = new Platform();
  let fail = 1;
  const pool = new WarmPool(inner, {
    size: 2,
    namePrefix: 'tgx-1v_',
    mtu: 1420,
    log,
    rename: async () => {
      if (fail-- > 0) throw new Error('Cannot find device');
    },
    uapiAt: (_name, dev) => (c) => dev.uapiSet(c),
  });
  await settle();
  const d = await pool.launch('tgx-1v0', 1420);
  assert.equal(d.pid, inner.launched[1].pid, 'the second warm device');
  assert.equal(inner.launched[0].alive, false, 'the broken one is ended');
  assert.throws(() => new WarmPool(inner, { size: 65, namePrefix: 'tgx_', mtu: 1420, log }), /0\.\.64/);
  assert.throws(
    () => new WarmPool(inner, { size: 1, namePrefix: 'tgxxxxxxxxxxx_', mtu: 1420, log }),
    /too long/,
  );
  await pool.close();
});

test('through the daemon: keys are set only after a device is taken; close ends the pool', async () => {
  const inner = new Platform();
  const pool = new WarmPool(inner, {
    size: 3,
    namePrefix: 'tgx-1v_',
    mtu: 1420,
    log,
    rename: async () => {},
    uapiAt: (_name, dev) => (c) => dev.uapiSet(c),
  });
  await settle();
  assert.ok(
    inner.launched.every((d) => d.keys === 0),
    'warm devices hold no key',
  );
  const daemon = new VSwitchDaemon({ platform: pool, log, ifnamePrefix: 'tgx-1v' });
  const created = await daemon.create({ workload: 'w1', netns: 'tgx-w1', address: '100.64.1.11' });
  assert.equal(created.ifname, 'tgx-1v0');
  assert.equal(inner.launched[0].keys, 1, 'the taken device got its key');
  // The TUN keeps its warm name until plumbing moves and renames it (one `ip` call fewer).
  assert.equal(inner.plumbed[0].ifname, 'tgx-1v_0');
  await settle();
  await daemon.close();
  assert.ok(
    inner.launched.every((d) => !d.alive),
    'instances and idle devices ended',
  );
});
