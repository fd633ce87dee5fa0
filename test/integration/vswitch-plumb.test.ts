// ProcessPlatform.plumb with real links and namespaces: a link moved into a workload's
// namespace, renamed, addressed and up; moves asked for together share one `ip -batch`; a move
// that was reported done while the link stayed in the host's namespace is made again (the
// batch in the namespace would not find the link); a link that exists nowhere is a clear error.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { run, runOk } from '../../src/util/exec.js';
import { logger } from '../../src/util/log.js';
import { ProcessPlatform } from '../../src/vswitch/platform.js';
import { createNamespace, deleteNamespace, linkExists, uniqueName } from '../helpers/native-netns.js';

interface AddrInfo {
  ifname: string;
  mtu: number;
  flags: string[];
  addr_info: { local: string; prefixlen: number }[];
}

async function addrOf(ns: string, dev: string): Promise<AddrInfo> {
  const out = await runOk('ip', ['-n', ns, '-j', 'addr', 'show', 'dev', dev]);
  const [info] = JSON.parse(out) as AddrInfo[];
  return info;
}

describe('vSwitch platform: plumbing a link into a namespace', () => {
  const prefix = uniqueName('tgplm');
  const namespaces = [0, 1, 2].map((i) => `${prefix}n${i}`);
  const links = [0, 1, 2, 3].map((i) => `${prefix}l${i}`);
  let platform: ProcessPlatform;

  before(async () => {
    for (const ns of namespaces) await createNamespace(ns);
    for (const l of links) await runOk('ip', ['tuntap', 'add', 'mode', 'tun', 'name', l]);
    platform = new ProcessPlatform(logger('test.vswitch-plumb'));
  });

  after(async () => {
    for (const l of links) await run('ip', ['link', 'del', 'dev', l]);
    for (const ns of namespaces) await deleteNamespace(ns);
  });

  const plumbing = (link: string, ns: string, n: number) => ({
    ifname: link,
    netns: ns,
    addressCidr: `100.64.250.${n}/32`,
    family: 4 as const,
    routes: ['100.64.250.0/24'],
    mtu: 1380,
  });

  test('two moves at once: each link ends in its namespace as tg0, addressed, up, with its route', async () => {
    await Promise.all([
      platform.plumb(plumbing(links[0], namespaces[0], 1)),
      platform.plumb(plumbing(links[1], namespaces[1], 2)),
    ]);
    for (const [i, ns] of namespaces.slice(0, 2).entries()) {
      assert.equal(await linkExists(links[i]), false, 'the link left the host namespace');
      const a = await addrOf(ns, 'tg0');
      assert.equal(a.mtu, 1380);
      assert.ok(a.flags.includes('UP'), `tg0 in ${ns} is up`);
      assert.deepEqual(
        a.addr_info.map((x) => `${x.local}/${x.prefixlen}`),
        [`100.64.250.${i + 1}/32`],
      );
      const routes = await runOk('ip', ['-n', ns, 'route', 'show', '100.64.250.0/24']);
      assert.match(routes, /100\.64\.250\.0\/24 dev tg0/);
    }
  });

  test('a move reported done that left the link outside: plumb moves it again and finishes', async () => {
    // The shared move is replaced by one that reports success and moves nothing.
    const p = new ProcessPlatform(logger('test.vswitch-plumb'));
    (p as unknown as { moves: { move: () => Promise<void> } }).moves = { move: async () => undefined };
    await p.plumb(plumbing(links[2], namespaces[2], 3));
    assert.equal(await linkExists(links[2]), false);
    const a = await addrOf(namespaces[2], 'tg0');
    assert.deepEqual(
      a.addr_info.map((x) => x.local),
      ['100.64.250.3'],
    );
  });

  test('a link that exists nowhere: a clear error, the namespace untouched', async () => {
    const missing = `${prefix}zz`;
    const p = new ProcessPlatform(logger('test.vswitch-plumb'));
    (p as unknown as { moves: { move: () => Promise<void> } }).moves = { move: async () => undefined };
    await assert.rejects(
      p.plumb({ ...plumbing(missing, namespaces[2], 4), netnsIfname: 'tg1' }),
      (err: Error) => /Cannot find device/.test(err.message) && err.message.includes(namespaces[2]),
    );
    assert.equal(await linkExists('tg1', namespaces[2]), false);
    // The real move path names the link it could not move.
    await assert.rejects(
      platform.plumb({ ...plumbing(missing, namespaces[2], 4), netnsIfname: 'tg1' }),
      /Cannot find device|cannot find/i,
    );
  });
});
