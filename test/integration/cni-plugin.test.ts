// The CNI plugin executable `tenguard cni install` writes, called exactly as the spec says
// (environment + stdin) against a lab's orchestrator, agents and namespaces a "runtime" (this
// test) made: valid (0.4.0, 1.0.0, 1.1.0) and broken configurations and environments, unknown
// tenant, missing or bad netns, a namespace whose eth0 is the runtime's, ADD twice (same and
// another namespace), DEL twice, DEL without ADD, DEL after the namespace is gone, CHECK of an
// unknown container and after the session died (device gone; key gone from the NIC), STATUS
// and GC of 1.1, an unreachable orchestrator; after each, nothing left in the orchestrator, on
// a vSwitch or on a NIC; traffic between attached namespaces; keys wiped by DEL; and
// reconciliation that removes only namespaces the orchestrator made.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { listNamespaces } from '../../src/lab/index.js';
import { run } from '../../src/util/exec.js';
import { callPlugin, cniPrefix } from '../helpers/cni.js';
import { ALLOW_WITHIN, type OrchLab, OrchProcess, startOrchLab, stopOrchLab } from '../helpers/orch.js';
import { ping } from '../helpers/ping.js';

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
const prefix = cniPrefix();
let L: OrchLab | undefined;
let dir = '';
let plugin = '';
let conf: Record<string, unknown> = {};
const runtimeNs: string[] = [];

async function newNs(tag: string): Promise<string> {
  const ns = `${prefix}-rt-${tag}`;
  const r = await run('ip', ['netns', 'add', ns]);
  assert.equal(r.code, 0, r.stderr);
  await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  runtimeNs.push(ns);
  return ns;
}

function envOf(cmd: string, id: string, ns: string | null, extra: Record<string, string> = {}) {
  return {
    CNI_COMMAND: cmd,
    CNI_CONTAINERID: id,
    ...(ns !== null ? { CNI_NETNS: `/run/netns/${ns}` } : {}),
    CNI_IFNAME: 'eth0',
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAME=${id}`,
    ...extra,
  };
}

const cfg = (over: Record<string, unknown> = {}) => JSON.stringify({ ...conf, ...over });

async function pskOf(host: string, workload: string): Promise<number> {
  const { keys } = await L!.client.keys(host);
  return keys.filter((k) => k.kind === 'workload-psk' && k.workload === workload).length;
}

/** No container workload anywhere: not in the orchestrator, on a vSwitch or on a NIC. */
async function nothingLeft(what: string): Promise<void> {
  assert.deepEqual(
    (await L!.client.listWorkloads()).map((w) => w.name),
    [],
    `${what}: no workload in the orchestrator`,
  );
  for (const h of ['h1', 'h2']) {
    const inst = (await L!.agents.vswitch(h).list()).map((i) => i.workload).filter((n) => n.startsWith('c-'));
    assert.deepEqual(inst, [], `${what}: no vSwitch instance on ${h}`);
    const nic = (await L!.agents.nic(h).workloads()).map((w) => String(w.workload));
    assert.deepEqual(nic, [], `${what}: no workload on the NIC of ${h}`);
  }
}

before(async () => {
  L = await startOrchLab(prefix);
  await L.client.createTenant({ name: 'acme', pool: '100.64.30.0/24' });
  await L.client.createTenant({ name: 'blue', pool: '100.64.31.0/24' });
  await L.client.setPolicy('acme', ALLOW_WITHIN('acme'));
  await L.client.setPolicy('blue', ALLOW_WITHIN('blue'));
  dir = mkdtempSync(join(tmpdir(), `${prefix}-cni-`));
  const r = await run(process.execPath, [
    BIN,
    'cni',
    'install',
    '--tenant',
    'acme',
    '--host',
    'h1',
    '--network',
    `${prefix}-acme`,
    '--bin-dir',
    join(dir, 'bin'),
    '--conf-dir',
    join(dir, 'net.d'),
    '--orchestrator',
    L.orch.socket,
    '--json',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const paths = JSON.parse(r.stdout) as { plugin: string; conflist: string };
  plugin = paths.plugin;
  const list = JSON.parse(readFileSync(paths.conflist, 'utf8')) as {
    cniVersion: string;
    name: string;
    plugins: Record<string, unknown>[];
  };
  // A runtime hands each plugin its entry with the list's cniVersion and name.
  conf = { cniVersion: list.cniVersion, name: list.name, ...list.plugins[0] };
});

after(async () => {
  for (const ns of runtimeNs) await run('ip', ['netns', 'del', ns]);
  await stopOrchLab(L, prefix);
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
  const left = (await listNamespaces()).filter((n) => n.startsWith(prefix));
  assert.deepEqual(left, [], 'namespaces left behind');
});

test('VERSION lists the supported versions', async () => {
  const r = await callPlugin(plugin, { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
  assert.equal(r.code, 0, r.stdout);
  assert.deepEqual(r.out, { cniVersion: '1.0.0', supportedVersions: ['0.4.0', '1.0.0', '1.1.0'] });
});

test('broken configurations and environments: the spec error codes, nothing created', async () => {
  const ns = await newNs('bad');
  const cases: { what: string; env: Record<string, string>; stdin: string; code: number; msg: RegExp }[] = [
    { what: 'not JSON', env: envOf('ADD', 'bad1', ns), stdin: '{nope', code: 6, msg: /not JSON/ },
    { what: 'a JSON array', env: envOf('ADD', 'bad1', ns), stdin: '[1]', code: 6, msg: /not a JSON object/ },
    {
      what: 'unsupported version',
      env: envOf('ADD', 'bad1', ns),
      stdin: cfg({ cniVersion: '9.9.9' }),
      code: 1,
      msg: /9\.9\.9/,
    },
    {
      what: 'host of the wrong type',
      env: envOf('ADD', 'bad1', ns),
      stdin: cfg({ host: 5 }),
      code: 7,
      msg: /host/,
    },
    {
      what: 'mtls of the wrong shape',
      env: envOf('ADD', 'bad1', ns),
      stdin: cfg({ mtls: 'x' }),
      code: 7,
      msg: /mtls/,
    },
    {
      what: 'unknown tenant',
      env: envOf('ADD', 'bad1', ns),
      stdin: cfg({ tenant: 'nosuch' }),
      code: 7,
      msg: /nosuch/,
    },
    {
      what: 'no tenant and no K8S_POD_NAMESPACE',
      env: envOf('ADD', 'bad1', ns),
      stdin: cfg({ tenant: undefined }),
      code: 7,
      msg: /no tenant/,
    },
    { what: 'CNI_NETNS missing', env: envOf('ADD', 'bad1', null), stdin: cfg(), code: 4, msg: /CNI_NETNS/ },
    {
      what: 'CNI_NETNS not a named namespace',
      env: envOf('ADD', 'bad1', null, { CNI_NETNS: '/proc/1/ns/net' }),
      stdin: cfg(),
      code: 4,
      msg: /not a named namespace/,
    },
    {
      what: 'CNI_NETNS gone',
      env: envOf('ADD', 'bad1', `${prefix}-rt-nosuch`),
      stdin: cfg(),
      code: 4,
      msg: /does not exist/,
    },
    { what: 'unknown command', env: envOf('FROB', 'bad1', ns), stdin: cfg(), code: 4, msg: /CNI_COMMAND/ },
    {
      what: 'orchestrator unreachable',
      env: envOf('ADD', 'bad1', ns),
      stdin: cfg({ orchestrator: join(dir, 'nothere.sock') }),
      code: 11,
      msg: /unreachable/,
    },
    {
      what: 'CHECK without prevResult',
      env: envOf('CHECK', 'bad1', ns),
      stdin: cfg(),
      code: 7,
      msg: /prevResult/,
    },
    {
      what: 'CHECK of a container never added',
      env: envOf('CHECK', 'bad1', ns),
      stdin: cfg({ prevResult: { cniVersion: '1.0.0', ips: [] } }),
      code: 3,
      msg: /no workload c-bad1/,
    },
    {
      what: 'CNI_CONTAINERID missing',
      env: { ...envOf('ADD', 'bad1', ns), CNI_CONTAINERID: '' },
      stdin: cfg(),
      code: 4,
      msg: /CNI_CONTAINERID/,
    },
    {
      what: 'CNI_IFNAME not an interface name',
      env: envOf('ADD', 'bad1', ns, { CNI_IFNAME: 'eth0/../x' }),
      stdin: cfg(),
      code: 4,
      msg: /CNI_IFNAME/,
    },
    {
      what: 'CNI_ARGS not KEY=VALUE',
      env: envOf('ADD', 'bad1', ns, { CNI_ARGS: 'novalue' }),
      stdin: cfg(),
      code: 4,
      msg: /CNI_ARGS/,
    },
    {
      what: 'mTLS files missing',
      env: envOf('ADD', 'bad1', ns),
      stdin: cfg({
        mtls: { cert: join(dir, 'no.pem'), key: join(dir, 'no.key'), caBundle: join(dir, 'no.ca') },
      }),
      code: 5,
      msg: /cannot read the mTLS key/,
    },
    {
      what: 'GC list of the wrong type (1.1.0)',
      env: envOf('GC', 'bad1', null),
      stdin: cfg({ cniVersion: '1.1.0', 'cni.dev/valid-attachments': 'all' }),
      code: 7,
      msg: /valid-attachments/,
    },
    {
      what: 'STATUS with the orchestrator unreachable (1.1.0)',
      env: { CNI_COMMAND: 'STATUS' },
      stdin: cfg({ cniVersion: '1.1.0', orchestrator: join(dir, 'nothere.sock') }),
      code: 50,
      msg: /does not answer/,
    },
  ];
  for (const c of cases) {
    const r = await callPlugin(plugin, c.env, c.stdin);
    assert.equal(r.code, 1, `${c.what}: exit status (${r.stdout})`);
    assert.equal(r.out?.code, c.code, `${c.what}: code (${r.stdout})`);
    assert.match(String(r.out?.msg), c.msg, c.what);
    assert.equal(typeof r.out?.cniVersion, 'string', `${c.what}: error object has cniVersion`);
  }
  await nothingLeft('after the broken calls');
  assert.equal((await run('ip', ['-n', ns, 'link', 'show', 'eth0'])).code, 1, 'no eth0 in the namespace');
  const del = await callPlugin(plugin, envOf('DEL', 'bad1', ns), cfg());
  assert.equal(del.code, 0, `DEL after a failed ADD: ${del.stdout}`);
});

test("ADD into a namespace whose eth0 is the runtime's: refused, the runtime's interface kept, nothing left", async () => {
  const ns = await newNs('busy');
  // A veth pair inside the namespace stands for the runtime's own interface.
  const made = await run('ip', ['-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'rtpeer']);
  assert.equal(made.code, 0, made.stderr);
  const r = await callPlugin(plugin, envOf('ADD', 'abababababab0a', ns), cfg());
  assert.equal(r.code, 1, r.stdout);
  assert.equal(r.out?.code, 100, r.stdout);
  assert.match(String(r.out?.msg), /eth0/);
  const link = await run('ip', ['-n', ns, '-d', '-o', 'link', 'show', 'eth0']);
  assert.match(link.stdout, / veth /, "the runtime's eth0 is still there");
  await nothingLeft('after the refused ADD');
  const del = await callPlugin(plugin, envOf('DEL', 'abababababab0a', ns), cfg());
  assert.equal(del.code, 0, del.stdout);
  assert.equal(
    (await run('ip', ['-n', ns, 'link', 'show', 'eth0'])).code,
    0,
    'DEL left the runtime eth0 alone',
  );
});

test('1.1.0: STATUS answers, GC removes the attachments the runtime no longer lists and keeps the rest', async () => {
  const v11 = (over: Record<string, unknown> = {}) => cfg({ cniVersion: '1.1.0', ...over });
  const st = await callPlugin(plugin, { CNI_COMMAND: 'STATUS' }, v11());
  assert.equal(st.code, 0, `STATUS: ${st.stdout}`);
  const g1 = await newNs('g1');
  const g2 = await newNs('g2');
  const r1 = await callPlugin(plugin, envOf('ADD', 'a1a1a1a1a1a1', g1), v11());
  assert.equal(r1.code, 0, r1.stdout);
  assert.equal((r1.out as { cniVersion: string }).cniVersion, '1.1.0');
  const r2 = await callPlugin(plugin, envOf('ADD', 'a2a2a2a2a2a2', g2), v11());
  assert.equal(r2.code, 0, r2.stdout);
  // The same container ID again, into another namespace: refused; the first attachment stays.
  const moved = await callPlugin(plugin, envOf('ADD', 'a1a1a1a1a1a1', g2), v11());
  assert.equal(moved.code, 1, moved.stdout);
  assert.equal(moved.out?.code, 100, moved.stdout);
  assert.match(String(moved.out?.msg), /c-a1a1a1a1a1a1/);
  const gc = await callPlugin(
    plugin,
    { CNI_COMMAND: 'GC' },
    v11({ 'cni.dev/valid-attachments': [{ containerID: 'a1a1a1a1a1a1', ifname: 'eth0' }] }),
  );
  assert.equal(gc.code, 0, `GC: ${gc.stdout}`);
  assert.deepEqual(
    (await L!.client.listWorkloads()).map((w) => w.name),
    ['c-a1a1a1a1a1a1'],
    'GC kept the listed attachment only',
  );
  assert.equal(await pskOf('h1', 'c-a2a2a2a2a2a2'), 0, "GC wiped the unlisted attachment's key");
  assert.equal((await run('ip', ['-n', g2, 'link', 'show', 'eth0'])).code, 1, 'its eth0 is gone');
  assert.ok((await listNamespaces()).includes(g2), "GC does not delete the runtime's namespace");
  const d = await callPlugin(plugin, envOf('DEL', 'a1a1a1a1a1a1', g1), v11());
  assert.equal(d.code, 0, d.stdout);
  await nothingLeft('after GC and DEL');
});

test('ADD (twice), traffic, CHECK, DEL (twice) wipes the keys; the runtime namespace survives', async () => {
  const a = await newNs('a');
  const b = await newNs('b');
  const other = await newNs('o');
  // Keys of other plugins and of the runtime are kept, not refused (the spec's rule).
  const extra = {
    ipam: { type: 'host-local' },
    capabilities: { portMappings: true },
    runtimeConfig: { x: 1 },
  };
  const ra = await callPlugin(plugin, envOf('ADD', 'aaaaaaaaaaaa01', a), cfg(extra));
  assert.equal(ra.code, 0, ra.stdout + ra.stderr);
  const resA = ra.out as {
    cniVersion: string;
    interfaces: { name: string; sandbox: string }[];
    ips: { address: string; interface: number }[];
    routes: { dst: string }[];
    dns: { nameservers?: string[]; search?: string[] };
  };
  assert.equal(resA.cniVersion, '1.0.0');
  // The tenant's DNS server at the NIC (the top address of acme's pool), names under acme.tg.
  assert.deepEqual(resA.dns, { nameservers: ['100.64.30.254'], search: ['acme.tg'] });
  assert.deepEqual(resA.interfaces, [{ name: 'eth0', mac: '00:00:00:00:00:00', sandbox: `/run/netns/${a}` }]);
  assert.match(resA.ips[0].address, /^100\.64\.30\.\d+\/32$/);
  assert.equal(resA.ips[0].interface, 0);
  // Dual stack: the IPv6 address derived from the IPv4 one (pool 100.64.30.0/24 -> fd64:6440:1e00::/64).
  assert.equal(resA.ips.length, 2);
  assert.equal(
    resA.ips[1].address,
    `fd64:6440:1e00::6440:1e${Number(resA.ips[0].address.split('/')[0].split('.')[3])
      .toString(16)
      .padStart(2, '0')}/128`,
  );
  assert.equal(resA.ips[1].interface, 0);
  assert.deepEqual(resA.routes, [{ dst: '0.0.0.0/0' }, { dst: '::/0' }]);
  const again = await callPlugin(plugin, envOf('ADD', 'aaaaaaaaaaaa01', a), cfg());
  assert.equal(again.code, 0, `ADD twice: ${again.stdout}`);
  assert.deepEqual(again.out, ra.out, 'ADD twice answers the same');
  // 0.4.0 configuration, tenant from K8S_POD_NAMESPACE.
  const rb = await callPlugin(
    plugin,
    envOf('ADD', 'bbbbbbbbbbbb02', b, { CNI_ARGS: 'K8S_POD_NAMESPACE=acme;K8S_POD_NAME=b' }),
    cfg({ cniVersion: '0.4.0', tenant: undefined }),
  );
  assert.equal(rb.code, 0, rb.stdout);
  const resB = rb.out as { ips: { version: string; address: string }[] };
  assert.equal(resB.ips[0].version, '4');
  assert.equal(resB.ips[1].version, '6');
  const ro = await callPlugin(plugin, envOf('ADD', 'cccccccccccc03', other), cfg({ tenant: 'blue' }));
  assert.equal(ro.code, 0, ro.stdout);
  const addrB = resB.ips[0].address.split('/')[0];
  const addrO = (ro.out as { ips: { address: string }[] }).ips[0].address.split('/')[0];
  const link = await run('ip', ['-n', a, '-o', 'addr', 'show', 'dev', 'eth0']);
  assert.match(link.stdout, new RegExp(` ${resA.ips[0].address.replaceAll('.', '\\.')} `));
  const p = await ping(a, addrB, { count: 3 });
  assert.equal(p.received, 3, 'same tenant ping a -> b');
  const p6 = await ping(a, resB.ips[1].address.split('/')[0], { count: 3 });
  assert.equal(p6.received, 3, 'same tenant ping a -> b over IPv6');
  const x = await ping(a, addrO, { count: 2, waitS: 1 });
  assert.equal(x.received, 0, 'cross-tenant ping blocked');
  const chk = await callPlugin(plugin, envOf('CHECK', 'aaaaaaaaaaaa01', a), cfg({ prevResult: ra.out }));
  assert.equal(chk.code, 0, `CHECK: ${chk.stdout}`);
  assert.equal(await pskOf('h1', 'c-aaaaaaaaaaaa'), 1, 'session key before DEL');
  const d1 = await callPlugin(plugin, envOf('DEL', 'aaaaaaaaaaaa01', a), cfg({ prevResult: ra.out }));
  assert.equal(d1.code, 0, d1.stdout);
  assert.equal(await pskOf('h1', 'c-aaaaaaaaaaaa'), 0, 'DEL wiped the session key');
  const d2 = await callPlugin(plugin, envOf('DEL', 'aaaaaaaaaaaa01', a), cfg());
  assert.equal(d2.code, 0, `DEL twice: ${d2.stdout}`);
  const d3 = await callPlugin(plugin, envOf('DEL', 'ffffffffffff09', null), cfg());
  assert.equal(d3.code, 0, `DEL without ADD: ${d3.stdout}`);
  assert.ok((await listNamespaces()).includes(a), 'the runtime namespace is not deleted by DEL');
  assert.equal((await run('ip', ['-n', a, 'link', 'show', 'eth0'])).code, 1, 'eth0 removed from it');
  // DEL after the namespace is gone.
  await run('ip', ['netns', 'del', b]);
  const d4 = await callPlugin(plugin, envOf('DEL', 'bbbbbbbbbbbb02', b), cfg());
  assert.equal(d4.code, 0, `DEL after the namespace is gone: ${d4.stdout}`);
  assert.equal(await pskOf('h1', 'c-bbbbbbbbbbbb'), 0);
  const d5 = await callPlugin(plugin, envOf('DEL', 'cccccccccccc03', other), cfg({ tenant: 'blue' }));
  assert.equal(d5.code, 0, d5.stdout);
  await nothingLeft('after DEL of every container');
});

test('CHECK after the session died fails with a message naming it; DEL still cleans', async () => {
  // Without reconciliation, which would restart the instance and so revive the session.
  await L!.orch.stop();
  const normal = L!.orch;
  L!.orch = new OrchProcess(normal.dataDir, normal.socket, ['--reconcile-ms', '0']);
  await L!.orch.start();
  const ns = await newNs('k');
  const r = await callPlugin(plugin, envOf('ADD', 'dddddddddddd04', ns), cfg());
  assert.equal(r.code, 0, r.stdout);
  const inst = (await L!.agents.vswitchds.get('h1')!.client.list()).find(
    (i) => i.workload === 'c-dddddddddddd',
  );
  assert.ok(inst?.pid, 'instance has a device process');
  process.kill(inst.pid, 'SIGKILL');
  const end = Date.now() + 5000;
  while (Date.now() < end && (await run('ip', ['-n', ns, 'link', 'show', 'eth0'])).code === 0)
    await new Promise((res) => setTimeout(res, 50));
  const chk = await callPlugin(plugin, envOf('CHECK', 'dddddddddddd04', ns), cfg({ prevResult: r.out }));
  assert.equal(chk.code, 1, chk.stdout);
  assert.equal(chk.out?.code, 100);
  assert.match(String(chk.out?.msg), /eth0/);
  const d = await callPlugin(plugin, envOf('DEL', 'dddddddddddd04', ns), cfg());
  assert.equal(d.code, 0, d.stdout);
  assert.equal(await pskOf('h1', 'c-dddddddddddd'), 0);
  // The session's key gone from the NIC while the interface stays.
  const ns2 = await newNs('k2');
  const r2 = await callPlugin(plugin, envOf('ADD', 'dddddddddddd06', ns2), cfg());
  assert.equal(r2.code, 0, r2.stdout);
  await L!.agents.nic('h1').removeWorkload('c-dddddddddddd');
  const chk2 = await callPlugin(plugin, envOf('CHECK', 'dddddddddddd06', ns2), cfg({ prevResult: r2.out }));
  assert.equal(chk2.code, 1, chk2.stdout);
  assert.equal(chk2.out?.code, 100);
  assert.match(String(chk2.out?.msg), /no session key of c-dddddddddddd/);
  const d2 = await callPlugin(plugin, envOf('DEL', 'dddddddddddd06', ns2), cfg());
  assert.equal(d2.code, 0, d2.stdout);
  await nothingLeft('after CHECKs of dead sessions and DEL');
  await L!.orch.stop();
  L!.orch = normal;
  await L!.orch.start();
});

test('reconciliation: a foreign namespace sharing the host prefix survives; one tenguard made and lost track of is removed', async () => {
  const c = L!.client;
  const hostPrefix = (await c.showHost('h1')).netnsPrefix;
  const foreign = `${hostPrefix}nic`;
  assert.equal((await run('ip', ['netns', 'add', foreign])).code, 0);
  runtimeNs.push(foreign);
  const cniNs = await newNs('keep');
  const r = await callPlugin(plugin, envOf('ADD', 'eeeeeeeeeeee05', cniNs), cfg());
  assert.equal(r.code, 0, r.stdout);
  const lost = await c.createWorkload({ tenant: 'acme', name: 'lost', host: 'h1' });
  // The orchestrator loses track of 'lost' (its record goes, its namespace record stays).
  await L!.orch.stop();
  const db = new Database(join(L!.dataDir, 'orchestrator.db'));
  db.prepare("DELETE FROM entries WHERE kind = 'workload' AND key = 'lost'").run();
  db.prepare("DELETE FROM entries WHERE kind = 'allocation' AND key = ?").run(`acme/${lost.address}`);
  db.close();
  await L!.orch.start();
  const rep = await c.reconcile();
  const names = await listNamespaces();
  assert.ok(names.includes(foreign), `foreign namespace ${foreign} survived: ${rep.actions.join(', ')}`);
  assert.ok(names.includes(cniNs), 'the runtime namespace survived');
  assert.ok(!names.includes(lost.netns), `lost namespace removed: ${rep.actions.join(', ')}`);
  const again = await c.reconcile();
  assert.deepEqual(again.actions, [], 'a second pass changes nothing');
  const d = await callPlugin(plugin, envOf('DEL', 'eeeeeeeeeeee05', cniNs), cfg());
  assert.equal(d.code, 0, d.stdout);
  assert.deepEqual(await c.listWorkloads(), []);
});
