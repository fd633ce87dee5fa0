// The orchestrator end to end, driven only through its API and CLI (the NIC API is read for
// assertions only): spin-up and traffic same host and cross host, cross-tenant blocked, bad
// input changes nothing, spin-down wipes keys, migration under a ping stream, a NIC agent
// killed during traffic, an orchestrator restart without loss, and no PSK in the store.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { listNamespaces } from '../../src/lab/index.js';
import type { WorkloadRecord } from '../../src/orchestrator/model.js';
import { uapiGet } from '../../src/uapi/client.js';
import { uapiSocketPath } from '../../src/uapi/server.js';
import { run } from '../../src/util/exec.js';
import { tcpProbe } from '../helpers/nic.js';
import { ALLOW_WITHIN, type OrchLab, orchPrefix, startOrchLab, stopOrchLab } from '../helpers/orch.js';
import { ping, pingStream, pingUntilReply } from '../helpers/ping.js';

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
const prefix = orchPrefix();
let L: OrchLab | undefined;
const W = new Map<string, WorkloadRecord>();
const figures: Record<string, unknown> = {};

/** Runs the CLI without blocking this process (it serves the NIC proxy). */
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await run(process.execPath, [BIN, ...args, '--api', L!.orch.socket, '--insecure'], {
    timeoutMs: 120_000,
  });
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

async function state(): Promise<string> {
  const c = L!.client;
  const ws = (await c.listWorkloads()).map(({ timings: _t, ...rest }) => rest);
  return JSON.stringify([await c.listTenants(), await c.listHosts(), ws]);
}

before(async () => {
  L = await startOrchLab(prefix);
  await L.client.createTenant({ name: 'red', pool: '100.64.10.0/24' });
  await L.client.createTenant({ name: 'blue', pool: '100.64.20.0/24' });
  await L.client.setPolicy('red', ALLOW_WITHIN('red'));
  await L.client.setPolicy('blue', ALLOW_WITHIN('blue'));
});

after(async () => {
  if (process.env.TG_ORCH_LOGS === '1') process.stderr.write(L?.orch.logs ?? '');
  await stopOrchLab(L, prefix);
  process.stderr.write(`orchestrator figures: ${JSON.stringify(figures)}\n`);
  const left = (await listNamespaces()).filter((n) => n.startsWith(prefix));
  assert.deepEqual(left, [], 'namespaces left behind');
});

test('spin-up through the CLI and API: addresses, namespaces, same-tenant traffic same host and cross host', async () => {
  const c = L!.client;
  const r = await cli([
    'workload',
    'create',
    'a1',
    '--tenant',
    'red',
    '--host',
    'h1',
    '--label',
    'app=web',
    '--json',
  ]);
  assert.equal(r.code, 0, r.stderr);
  W.set('a1', JSON.parse(r.stdout) as WorkloadRecord);
  for (const [name, tenant, host, labels] of [
    ['a2', 'red', 'h1'],
    ['a3', 'red', 'h2', { app: 'db' }],
    ['a4', 'red', 'h2'],
    ['b1', 'blue', 'h1'],
    ['b2', 'blue', 'h2'],
  ] as [string, string, string, Record<string, string>?][])
    W.set(name, await c.createWorkload({ tenant, name, host, ...(labels ? { labels } : {}) }));
  assert.equal(W.get('a1')!.address, '100.64.10.1');
  assert.equal(W.get('a4')!.address, '100.64.10.4');
  assert.equal(W.get('b2')!.address, '100.64.20.2');
  assert.equal(W.get('a1')!.netns, `${prefix}-h1-o-a1`);
  assert.deepEqual(W.get('a1')!.labels, { app: 'web' });
  for (const w of W.values()) {
    assert.equal(w.state, 'running');
    assert.ok(w.timings.total > 0);
  }
  figures.spinUpApiMs = [...W.values()].map((w) => w.timings.total);
  const a1 = W.get('a1')!;
  assert.ok(await pingUntilReply(a1.netns, W.get('a2')!.address, 10_000), 'a1 -> a2 same host');
  assert.ok(await pingUntilReply(a1.netns, W.get('a3')!.address, 10_000), 'a1 -> a3 cross host');
  assert.equal((await ping(a1.netns, W.get('a3')!.address, { count: 5 })).received, 5);
  const tcp = await tcpProbe(a1.netns, W.get('a3')!.netns, W.get('a3')!.address, 'c0ffee00c0ffee00');
  assert.equal(tcp.echoed, 'c0ffee00c0ffee00');
  assert.ok(await pingUntilReply(W.get('b1')!.netns, W.get('b2')!.address, 10_000), 'blue cross host');
  // The NIC holds what the orchestrator registered (read for the assertion only).
  const onH2 = (await L!.agents.nic('h2').workloads()).map((x) => x.workload).sort();
  assert.deepEqual(onH2, ['a3', 'a4', 'b2']);
  const regA1 = (await L!.agents.nic('h1').workloads()).find((x) => x.workload === 'a1');
  assert.deepEqual(regA1?.labels, { app: 'web' });
  // Flow records, merged from both NICs, through the CLI.
  const f = await cli(['flows', '--tenant', 'red', '--json']);
  assert.equal(f.code, 0, f.stderr);
  const flows = JSON.parse(f.stdout) as { flows: { host: string; tenant: string; protocol: string }[] };
  assert.ok(flows.flows.length > 0);
  assert.ok(flows.flows.every((x) => x.tenant === 'red'));
  assert.deepEqual([...new Set(flows.flows.map((x) => x.host))].sort(), ['h1', 'h2']);
});

test('cross-tenant traffic is blocked', async () => {
  const a1 = W.get('a1')!;
  assert.equal((await ping(a1.netns, W.get('b1')!.address, { count: 3, waitS: 1 })).received, 0);
  assert.equal((await ping(a1.netns, W.get('b2')!.address, { count: 3, waitS: 1 })).received, 0);
  assert.equal((await ping(W.get('b2')!.netns, W.get('a3')!.address, { count: 3, waitS: 1 })).received, 0);
});

test('a cross-tenant grant: red may ping blue (same host and cross host), not the reverse; revoked again', async () => {
  const c = L!.client;
  const within = (t: string) => ALLOW_WITHIN(t).rules;
  await c.setPolicy('red', {
    version: 1,
    tenant: 'red',
    rules: [
      ...within('red'),
      {
        id: 'to-blue',
        direction: 'egress',
        workloads: { labels: {} },
        peers: [{ tenant: 'blue', labels: {} }],
        protocol: 'icmp',
      },
    ],
  });
  await c.setPolicy('blue', {
    version: 1,
    tenant: 'blue',
    rules: [
      ...within('blue'),
      {
        id: 'from-red',
        direction: 'ingress',
        workloads: { labels: {} },
        peers: [{ tenant: 'red', labels: {} }],
        protocol: 'icmp',
      },
    ],
  });
  const a1 = W.get('a1')!;
  assert.ok(await pingUntilReply(a1.netns, W.get('b1')!.address, 10_000), 'red -> blue same host');
  assert.ok(await pingUntilReply(a1.netns, W.get('b2')!.address, 10_000), 'red -> blue cross host');
  // Grants route both addresses of a dual-stack workload.
  assert.ok(await pingUntilReply(a1.netns, W.get('b1')!.address6!, 10_000), 'red -> blue same host, IPv6');
  assert.ok(await pingUntilReply(a1.netns, W.get('b2')!.address6!, 10_000), 'red -> blue cross host, IPv6');
  assert.equal(
    (await ping(W.get('b1')!.netns, a1.address, { count: 2, waitS: 1 })).received,
    0,
    'blue -> red',
  );
  const g = (await L!.agents.nic('h1').tenants()).map((t) => t.tenant);
  assert.ok(g.includes('red') && g.includes('blue'));
  await c.setPolicy('red', ALLOW_WITHIN('red'));
  await c.setPolicy('blue', ALLOW_WITHIN('blue'));
  assert.equal(
    (await ping(a1.netns, W.get('b1')!.address, { count: 3, waitS: 1 })).received,
    0,
    'grant revoked',
  );
  assert.ok(await pingUntilReply(a1.netns, W.get('a3')!.address, 10_000));
});

test('bad input through the CLI: clear errors, exit codes, state and traffic unchanged', async () => {
  const before = await state();
  const cases: [string[], number, RegExp][] = [
    [['workload', 'create', 'a1', '--tenant', 'red', '--host', 'h1'], 1, /TG_ERR_CONFLICT.*already exists/],
    [['workload', 'create', 'z1', '--tenant', 'nobody', '--host', 'h1'], 1, /TG_ERR_NOT_FOUND.*tenant/],
    [['workload', 'create', 'z1', '--tenant', 'red', '--host', 'h9'], 1, /TG_ERR_NOT_FOUND.*host/],
    [['workload', 'create', 'z1', '--tenant', 'red'], 2, /TG_ERR_USAGE.*--host/],
    [['workload', 'create', 'Z!', '--tenant', 'red', '--host', 'h1'], 2, /TG_ERR_INVALID_ARGUMENT/],
    [['workload', 'migrate', 'a1', '--to', 'h1'], 2, /already on host/],
    [['workload', 'migrate', 'a1', '--to', 'h9'], 1, /TG_ERR_NOT_FOUND.*no host/],
    [['workload', 'migrate', 'ghost', '--to', 'h2'], 1, /TG_ERR_NOT_FOUND/],
    [['workload', 'delete', 'ghost'], 1, /TG_ERR_NOT_FOUND/],
    [['tenant', 'create', 'green', '--pool', '100.64.10.128/25'], 1, /TG_ERR_CONFLICT.*overlaps/],
    [['tenant', 'create', 'green', '--pool', '10.1.0.0/16'], 2, /TG_ERR_INVALID_ARGUMENT.*100\.64\.0\.0\/10/],
    [['tenant', 'create', 'green', '--pool', '100.64.30.1/24'], 2, /TG_ERR_INVALID_ARGUMENT/],
    [['tenant', 'delete', 'red'], 1, /TG_ERR_CONFLICT.*workload/],
    [['host', 'deregister', 'h1'], 1, /TG_ERR_CONFLICT/],
    [['workload', 'frobnicate'], 2, /TG_ERR_USAGE/],
    [['tenant', 'list', '--bogus'], 2, /TG_ERR_USAGE/],
  ];
  for (const [args, code, re] of cases) {
    const r = await cli(args);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
  }
  // An exhausted pool.
  assert.equal((await cli(['tenant', 'create', 'tiny', '--pool', '100.64.40.0/30'])).code, 0);
  await L!.client.setPolicy('tiny', ALLOW_WITHIN('tiny'));
  await L!.client.createWorkload({ tenant: 'tiny', name: 't1', host: 'h1' });
  await L!.client.createWorkload({ tenant: 'tiny', name: 't2', host: 'h2' });
  const full = await state();
  const r = await cli(['workload', 'create', 't3', '--tenant', 'tiny', '--host', 'h1']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /TG_ERR_POOL_EXHAUSTED.*100\.64\.40\.0\/30/);
  assert.equal(await state(), full);
  await L!.client.deleteWorkload('t1');
  await L!.client.deleteWorkload('t2');
  await L!.client.deleteTenant('tiny');
  assert.equal(await state(), before);
  assert.equal((await ping(W.get('a1')!.netns, W.get('a3')!.address, { count: 3 })).received, 3);
  const list = await cli(['workload', 'list']);
  assert.equal(list.code, 0);
  assert.match(list.stdout, /a1\s+red\s+h1\s+100\.64\.10\.1\s+fd64:6440:a00::6440:a01\s+running\s+app=web/);
});

test('spin-down wipes the workload keys on its NIC and removes its namespace', async () => {
  const c = L!.client;
  const w = await c.createWorkload({ tenant: 'red', name: 'c1', host: 'h2' });
  // The workloads owning keys on h2 (fingerprints are random text: match the owner field only).
  const keysOf = async () => (await c.keys('h2')).keys.map((k) => k.workload).join(' ');
  assert.match(await keysOf(), /\bc1\b/);
  assert.ok((await listNamespaces()).includes(w.netns));
  const r = await cli(['workload', 'delete', 'c1', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(await keysOf(), /\bc1\b/);
  assert.ok(!(await listNamespaces()).includes(w.netns));
  assert.ok(!(await L!.agents.vswitch('h2').list()).some((i) => i.workload === 'c1'));
  // Its address is free again.
  const again = await c.createWorkload({ tenant: 'red', name: 'c2', host: 'h1' });
  assert.equal(again.address, w.address);
  await c.deleteWorkload('c2');
});

test('migration under a steady ping stream: same address and identity, peers follow', async () => {
  const c = L!.client;
  const a1 = W.get('a1')!;
  const a3 = W.get('a3')!;
  const stream = pingStream(a1.netns, a3.address, 0.01, 60);
  await new Promise((r) => setTimeout(r, 1000));
  const moved = await c.migrateWorkload('a3', 'h1');
  await new Promise((r) => setTimeout(r, 1500));
  const s = await stream.stop();
  assert.equal(moved.host, 'h1');
  assert.equal(moved.address, a3.address);
  assert.equal(moved.netns, `${prefix}-h1-o-a3`);
  assert.equal(moved.state, 'running');
  assert.ok(!(await listNamespaces()).includes(a3.netns), 'old namespace removed');
  figures.migration = { ...s, timings: moved.timings };
  assert.ok(s.received > 100, JSON.stringify(s));
  assert.ok(s.lost < 100, `lost ${s.lost} of ${s.transmitted}`);
  // Labels and identity followed it to the destination NIC.
  const reg = (await L!.agents.nic('h1').workloads()).find((x) => x.workload === 'a3');
  assert.deepEqual(reg?.labels, { app: 'db' });
  assert.equal(reg?.address, a3.address);
  assert.equal(reg?.tenant, 'red');
  assert.ok(!(await L!.agents.nic('h2').workloads()).some((x) => x.workload === 'a3'));
  // From the other host too.
  assert.ok(await pingUntilReply(W.get('a4')!.netns, a3.address, 10_000));
  W.set('a3', moved);
  // And back, through the CLI.
  const r = await cli(['workload', 'migrate', 'a3', '--to', 'h2', '--json']);
  assert.equal(r.code, 0, r.stderr);
  W.set('a3', JSON.parse(r.stdout) as WorkloadRecord);
  assert.ok(await pingUntilReply(a1.netns, a3.address, 10_000));
});

test('a NIC agent killed during traffic is re-provisioned and traffic resumes on its own', async () => {
  const a1 = W.get('a1')!;
  const a4 = W.get('a4')!;
  const oldKey = (await L!.agents.nic('h2').identity()).identityKey;
  const stream = pingStream(a1.netns, a4.address, 0.05, 120);
  await new Promise((r) => setTimeout(r, 1000));
  const tKill = Date.now();
  await L!.agents.stopNic('h2', 'SIGKILL');
  await L!.agents.startNic('h2');
  const tUp = Date.now();
  let tBack = 0;
  while (Date.now() - tUp < 30_000) {
    const after = stream.replies().filter((t) => t > tUp);
    if (after.length > 0) {
      tBack = after[0];
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 500));
  const s = await stream.stop();
  assert.ok(tBack > 0, 'traffic did not resume within 30 s');
  assert.notEqual((await L!.agents.nic('h2').identity()).identityKey, oldKey);
  figures.nicRestart = {
    recoveryFromAgentUpMs: Math.round(tBack - tUp),
    outageFromKillMs: Math.round(tBack - tKill),
    lost: s.lost,
    transmitted: s.transmitted,
  };
  // Every h2 workload is back, and cross-host traffic for the other tenant too.
  const onH2 = (await L!.agents.nic('h2').workloads()).map((x) => x.workload).sort();
  assert.deepEqual(onH2, ['a3', 'a4', 'b2']);
  assert.ok(await pingUntilReply(W.get('b1')!.netns, W.get('b2')!.address, 10_000));
});

test('an orchestrator restart disturbs no traffic and changes nothing', async () => {
  const a1 = W.get('a1')!;
  const before = await state();
  const stream = pingStream(a1.netns, W.get('a4')!.address, 0.02, 60);
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(await L!.orch.stop(), 0, 'SIGTERM ends the orchestrator cleanly');
  const logFrom = L!.orch.logs.length;
  await L!.orch.start();
  const report = await L!.client.reconcile();
  await new Promise((r) => setTimeout(r, 1500));
  const s = await stream.stop();
  figures.orchestratorRestart = { ...s, actions: report.actions };
  assert.deepEqual(report.actions, [], 'a pass after the restart changed something');
  assert.doesNotMatch(L!.orch.logs.slice(logFrom), /reconciliation made changes/);
  assert.deepEqual(report.errors, []);
  assert.equal(s.lost, 0, JSON.stringify(s));
  assert.equal(await state(), before);
});

test('a crashed vSwitch instance is restarted by the reconciler and traffic resumes', async () => {
  const a1 = W.get('a1')!;
  const a2 = W.get('a2')!;
  const before = await L!.agents.vswitch('h1').get('a2');
  assert.ok(before.pid !== null);
  process.kill(before.pid, 'SIGKILL');
  const t0 = Date.now();
  assert.ok(await pingUntilReply(a1.netns, a2.address, 20_000), 'traffic to a2 did not resume');
  figures.vswitchCrashRecoveryMs = Date.now() - t0;
  const now = await L!.agents.vswitch('h1').get('a2');
  assert.equal(now.state, 'configured');
  assert.notEqual(now.publicKey, before.publicKey);
  const reg = (await L!.agents.nic('h1').workloads()).find((x) => x.workload === 'a2');
  assert.equal(reg?.vswitchPublicKey, now.publicKey);
});

test('a spin-up failing half way rolls back and names the step; the store is unchanged', async () => {
  const before = await state();
  await L!.agents.stopNic('h2', 'SIGTERM');
  try {
    const r = await cli(['workload', 'create', 'f1', '--tenant', 'red', '--host', 'h2']);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /TG_ERR_STEP_FAILED: spin-up of workload 'f1' on host 'h2' failed at step 'nic-register'/,
    );
    assert.equal(await state(), before);
    assert.ok(!(await listNamespaces()).includes(`${prefix}-h2-o-f1`), 'namespace not rolled back');
    assert.ok(
      !(await L!.agents.vswitch('h2').list()).some((i) => i.workload === 'f1'),
      'instance not rolled back',
    );
  } finally {
    await L!.agents.startNic('h2');
  }
  assert.ok(await pingUntilReply(W.get('a1')!.netns, W.get('a4')!.address, 30_000), 'h2 not re-provisioned');
});

test('a spin-down failing half way leaves the workload deleting; the reconciler finishes it', async () => {
  const c = L!.client;
  const d = await c.createWorkload({ tenant: 'red', name: 'd1', host: 'h2' });
  await L!.agents.stopNic('h2', 'SIGTERM');
  try {
    const r = await cli(['workload', 'delete', 'd1']);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /TG_ERR_STEP_FAILED: spin-down of workload 'd1' on host 'h2' failed at step 'nic-remove'/,
    );
    const w = await c.showWorkload('d1');
    assert.equal(w.state, 'deleting');
  } finally {
    await L!.agents.startNic('h2');
  }
  const end = Date.now() + 20_000;
  while (Date.now() < end && (await c.listWorkloads()).some((w) => w.name === 'd1'))
    await new Promise((r) => setTimeout(r, 200));
  assert.ok(!(await c.listWorkloads()).some((w) => w.name === 'd1'), 'not finished by the reconciler');
  assert.ok(!(await listNamespaces()).includes(d.netns));
  assert.ok(await pingUntilReply(W.get('a1')!.netns, W.get('a4')!.address, 30_000), 'h2 not re-provisioned');
});

test('PSKs cross the orchestrator only sealed: none in the NIC answers it got, its store or its log', async () => {
  // What h1's NIC answered the orchestrator: boxes, never a PSK field.
  const boxes = L!.proxy.answers.filter((a) => a.includes('"sealedPsk"')).length;
  assert.ok(boxes >= 3, `saw ${boxes} sealed PSKs`);
  assert.ok(!L!.proxy.answers.some((a) => /"psk":/.test(a)), 'a NIC answer carries a PSK in the clear');
  // The PSKs as the vSwitch devices hold them, looked for in everything the orchestrator had.
  const psks: Buffer[] = [];
  for (const host of ['h1', 'h2'])
    for (const inst of await L!.agents.vswitch(host).list()) {
      if (inst.state !== 'configured') continue;
      const psk = (await uapiGet(uapiSocketPath(inst.ifname))).peers[0]?.presharedKey;
      if (psk instanceof Uint8Array) psks.push(Buffer.from(psk));
    }
  assert.ok(psks.length >= 3, `only ${psks.length} configured devices`);
  const files = readdirSync(L!.dataDir).map((f) => join(L!.dataDir, f));
  assert.ok(files.some((f) => f.endsWith('orchestrator.db')) && files.every((f) => existsSync(f)));
  const answers = L!.proxy.answers.join('\n');
  for (const p of psks) {
    for (const form of [p.toString('base64'), p.toString('hex')]) {
      assert.ok(!answers.includes(form), 'a PSK in an answer to the orchestrator');
      assert.ok(!L!.orch.logs.includes(form), 'a PSK in the orchestrator log');
    }
    for (const f of files) {
      const bytes = readFileSync(f);
      assert.ok(!bytes.includes(p) && !bytes.includes(Buffer.from(p.toString('base64'))), `a PSK in ${f}`);
    }
  }
});
