// podman (Debian 4.3.1) with its CNI backend runs containers from a locally imported busybox
// image on tenant networks of two lab hosts through the tenguard plugin: same tenant on one
// host and across hosts ping and exchange TCP, cross-tenant is blocked, `podman rm` wipes the
// container's keys on the NIC, `podman stop` + `start` works, nothing is left behind. All of
// podman's state lives in a temporary directory.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { listNamespaces } from '../../src/lab/index.js';
import { run } from '../../src/util/exec.js';
import { cniPrefix } from '../helpers/cni.js';
import { ALLOW_WITHIN, type OrchLab, startOrchLab, stopOrchLab } from '../helpers/orch.js';
import { CNI_CACHE, cleanCniCache, Podman } from '../helpers/podman.js';

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
const prefix = cniPrefix();
const IMAGE = `localhost/${prefix}-busybox`;
let L: OrchLab | undefined;
let P: Podman | undefined;
let dir = '';
let netnsBefore = new Set<string>();
let cacheExisted = true;
const figures: Record<string, number> = {};

const net = (tenant: string, host: string) => `${prefix}-${tenant}-${host}`;

async function ipOf(name: string): Promise<string> {
  const r = await P!.cmd(['inspect', '--format', '{{json .NetworkSettings.Networks}}', name]);
  assert.equal(r.code, 0, r.stderr);
  const nets = JSON.parse(r.stdout) as Record<string, { IPAddress: string }>;
  const ip = Object.values(nets)[0]?.IPAddress;
  assert.match(ip ?? '', /^100\.64\./, `${name} has a tenant address: ${r.stdout}`);
  return ip;
}

async function pingFrom(name: string, ip: string, count = 3): Promise<number> {
  const r = await P!.cmd(['exec', name, 'ping', '-c', String(count), '-W', '2', ip], 60_000);
  const m = /(\d+) packets received/.exec(r.stdout);
  return m === null ? 0 : Number(m[1]);
}

async function tcpEcho(name: string, ip: string, text: string): Promise<string> {
  const r = await P!.cmd(['exec', name, 'sh', '-c', `echo ${text} | nc -w 3 ${ip} 7000`], 60_000);
  return r.stdout.trim();
}

async function psks(host: string): Promise<string[]> {
  const { keys } = await L!.client.keys(host);
  return keys.filter((k) => k.kind === 'workload-psk').map((k) => String(k.workload));
}

async function start(name: string, network: string): Promise<void> {
  const r = await P!.cmd(
    P!.runArgs(name, network, IMAGE, ['sh', '-c', 'while true; do nc -l -p 7000 -e /bin/cat; done']),
  );
  assert.equal(r.code, 0, `podman run ${name}: ${r.stderr}`);
  figures[`podman_run_ms_${name.slice(prefix.length + 1)}`] = Math.round(r.ms);
}

before(async () => {
  netnsBefore = new Set(readdirSync('/run/netns'));
  cacheExisted = existsSync(CNI_CACHE);
  L = await startOrchLab(prefix);
  await L.client.createTenant({ name: 'acme', pool: '100.64.40.0/24' });
  await L.client.createTenant({ name: 'blue', pool: '100.64.41.0/24' });
  await L.client.setPolicy('acme', ALLOW_WITHIN('acme'));
  await L.client.setPolicy('blue', ALLOW_WITHIN('blue'));
  dir = mkdtempSync(join(tmpdir(), `${prefix}-podman-`));
  P = new Podman(dir);
  for (const [tenant, host] of [
    ['acme', 'h1'],
    ['acme', 'h2'],
    ['blue', 'h1'],
  ]) {
    const r = await run(process.execPath, [
      BIN,
      'cni',
      'install',
      '--tenant',
      tenant,
      '--host',
      host,
      '--network',
      net(tenant, host),
      '--bin-dir',
      P.binDir,
      '--conf-dir',
      P.confDir,
      '--orchestrator',
      L.orch.socket,
    ]);
    assert.equal(r.code, 0, r.stderr);
  }
  await P.importBusybox(IMAGE);
});

after(async () => {
  if (P !== undefined) {
    await P.cmd(['rm', '-f', '-a', '-t', '5']).catch(() => undefined);
    await P.cmd(['rmi', '-a', '-f']).catch(() => undefined);
  }
  await stopOrchLab(L, prefix);
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
  // Our networks' cached results (DEL removes them; a failure may not), and the cache
  // directory itself when this test made it.
  cleanCniCache(prefix, cacheExisted);
  process.stderr.write(`cni-podman figures: ${JSON.stringify(figures)}\n`);
  const left = (await listNamespaces()).filter(
    (n) => n.startsWith(prefix) || (n.startsWith('netns-') && !netnsBefore.has(n)),
  );
  assert.deepEqual(left, [], 'namespaces left behind');
});

test('podman containers on tenant networks of two hosts: traffic, isolation, keys, stop/start, rm', async () => {
  const before1 = await psks('h1');
  const before2 = await psks('h2');
  const a1 = `${prefix}-a1`;
  const a2 = `${prefix}-a2`;
  const a3 = `${prefix}-a3`;
  const b1 = `${prefix}-b1`;
  await start(a1, net('acme', 'h1'));
  await start(a2, net('acme', 'h1'));
  await start(a3, net('acme', 'h2'));
  await start(b1, net('blue', 'h1'));
  const [ip2, ip3, ipb] = [await ipOf(a2), await ipOf(a3), await ipOf(b1)];
  assert.equal(await pingFrom(a1, ip2), 3, 'same tenant, same host: ping');
  assert.equal(await pingFrom(a1, ip3), 3, 'same tenant, across hosts: ping');
  assert.equal(await tcpEcho(a1, ip2, 'tgcn-same-host'), 'tgcn-same-host', 'TCP same host');
  assert.equal(await tcpEcho(a1, ip3, 'tgcn-cross-host'), 'tgcn-cross-host', 'TCP across hosts');
  assert.equal(await pingFrom(a1, ipb, 2), 0, 'cross-tenant ping blocked');
  assert.equal(await tcpEcho(a1, ipb, 'tgcn-x'), '', 'cross-tenant TCP blocked');
  const during1 = await psks('h1');
  assert.equal(during1.length, before1.length + 3, 'one session key per container on h1');
  // stop + start: DEL, then ADD in a new namespace.
  const stop = await P!.cmd(['stop', '-t', '2', a3]);
  assert.equal(stop.code, 0, stop.stderr);
  assert.deepEqual(await psks('h2'), before2, 'stop wiped the key on h2');
  const st = await P!.cmd(['start', a3]);
  assert.equal(st.code, 0, st.stderr);
  const ip3b = await ipOf(a3);
  assert.equal(await pingFrom(a1, ip3b), 3, 'ping after stop + start');
  assert.equal(await tcpEcho(a1, ip3b, 'tgcn-restarted'), 'tgcn-restarted');
  // rm wipes each container's keys.
  for (const c of [a1, a2, a3, b1]) {
    const r = await P!.cmd(['rm', '-f', '-t', '2', c]);
    assert.equal(r.code, 0, r.stderr);
  }
  assert.deepEqual(await psks('h1'), before1, 'NIC h1 inventory back to before');
  assert.deepEqual(await psks('h2'), before2, 'NIC h2 inventory back to before');
  assert.deepEqual(await L!.client.listWorkloads(), [], 'no workload left');
});
