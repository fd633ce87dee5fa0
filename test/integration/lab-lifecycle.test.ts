// A 2/2/2 lab through the real CLI: up, status, traffic on every link, exec, processes
// inside the lab, down; afterwards no namespace, link, state file or process is left.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { after, before, test } from 'node:test';
import {
  type LabState,
  type LabStatus,
  loadLab,
  ping,
  planLab,
  planNamespaces,
  planOf,
  runInNode,
} from '../../src/lab/index.js';
import { runOk } from '../../src/util/exec.js';
import {
  BIN,
  type CliResult,
  cleanup,
  cli,
  leftovers,
  pidsWithMarker,
  prefixNamespaces,
  testPrefix,
} from '../helpers/lab.js';

const prefix = testPrefix();
const marker = `${3000 + randomInt(1000)}.${randomInt(1_000_000)}`; // a unique `sleep` argument
const started: ChildProcess[] = [];
let lab: LabState;

function ok(r: CliResult): CliResult {
  assert.equal(r.code, 0, `exit ${r.code} ${r.signal ?? ''}: ${r.stderr}`);
  return r;
}

before(async () => {
  assert.deepEqual(await leftovers(prefix), []);
});

after(async () => {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await cleanup([prefix]);
});

test('lab up builds the planned lab and reports it', async (t) => {
  const t0 = performance.now();
  const r = ok(
    await cli([
      'lab',
      'up',
      '--hosts',
      '2',
      '--tenants',
      '2',
      '--workloads',
      '2',
      '--prefix',
      prefix,
      '--json',
    ]),
  );
  t.diagnostic(`lab up 2/2/2 via CLI: ${Math.round(performance.now() - t0)} ms wall`);
  const printed = JSON.parse(r.stdout) as LabState;
  lab = loadLab(prefix);
  assert.deepEqual(printed, lab);
  assert.equal(lab.status, 'ready');
  t.diagnostic(`build time recorded by the lab: ${lab.buildMs} ms`);
  assert.deepEqual(planOf(lab), planLab(prefix, { hosts: 2, tenants: 2, workloads: 2 }));
  assert.deepEqual(prefixNamespaces(prefix), [...planNamespaces(planOf(lab))].sort());
  assert.equal(lab.workloads.length, 8);
});

test('lab status --json matches the plan and shows every object in place', async () => {
  const r = ok(await cli(['lab', 'status', '--prefix', prefix, '--json']));
  const st = JSON.parse(r.stdout) as LabStatus;
  assert.equal(st.condition, 'ready');
  assert.equal(st.healthy, true);
  assert.deepEqual(st.state, lab);
  assert.deepEqual(st.extra, { namespaces: [], links: [] });
  assert.equal(st.namespaces.length, 13);
  for (const n of st.namespaces) assert.ok(n.exists && n.loUp, `${n.name} exists with lo up`);
  assert.equal(st.interfaces.length, 1 + 4 * 2);
  for (const i of st.interfaces) assert.ok(i.ok, `${i.ns}/${i.name}: ${JSON.stringify(i)}`);
  // Workloads hold only their loopback: no overlay until the tunnel exists.
  for (const n of st.namespaces.filter((x) => lab.workloads.some((w) => w.ns === x.name))) {
    assert.deepEqual(
      n.interfaces.map((i) => i.name),
      ['lo'],
    );
  }
  const text = ok(await cli(['lab', 'status', '--prefix', prefix])).stdout;
  assert.match(text, new RegExp(`lab ${prefix}: ready`));
  for (const w of lab.workloads)
    assert.match(text, new RegExp(`${w.name} .*${w.overlayV4.replaceAll('.', '\\.')}`));
});

test('links carry traffic: host <-> NIC on each PCIe link, NIC <-> NIC across the fabric, IPv4 and IPv6', async () => {
  const probes: [string, string][] = [];
  for (const h of lab.hosts) {
    probes.push(
      [h.name, h.pcie.nicV4],
      [h.name, h.pcie.nicV6],
      [h.nicNode, h.pcie.hostV4],
      [h.nicNode, h.pcie.hostV6],
    );
    for (const o of lab.hosts.filter((x) => x !== h))
      probes.push([h.nicNode, o.fabric.nicV4], [h.nicNode, o.fabric.nicV6]);
  }
  const results = await Promise.all(probes.map(([node, target]) => ping(lab, node, target, { count: 2 })));
  for (const r of results) assert.ok(r.ok, `${r.from} -> ${r.target}: ${r.received}/${r.sent} ${r.detail}`);
});

test('the lab wires only what the plan says: no overlay, hosts and workloads do not reach the fabric', async () => {
  const w = lab.workloads[0];
  const h1 = lab.hosts[0];
  const h2 = lab.hosts[1];
  const cases: [string, string][] = [
    [w.name, h1.pcie.nicV4],
    [w.name, lab.workloads[1].overlayV4],
    [h1.name, h2.fabric.nicV4],
    [h1.name, h2.pcie.hostV4],
  ];
  for (const [node, target] of cases) {
    const r = await runInNode(lab, node, 'ping', ['-n', '-c', '1', '-W', '1', target]);
    assert.notEqual(r.code, 0, `${node} must not reach ${target}`);
  }
  // The root namespace has no address or route in the lab's ranges.
  const addrs = JSON.parse(await runOk('ip', ['-j', 'addr', 'show'])) as { addr_info: { local: string }[] }[];
  const routes4 = JSON.parse(await runOk('ip', ['-j', '-4', 'route', 'show', 'table', 'all'])) as {
    dst: string;
  }[];
  const routes6 = JSON.parse(await runOk('ip', ['-j', '-6', 'route', 'show', 'table', 'all'])) as {
    dst: string;
  }[];
  const labish = /^(198\.1[89]\.|100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.|fd00:(198|100):)/;
  for (const a of addrs.flatMap((l) => l.addr_info)) assert.doesNotMatch(a.local, labish);
  for (const r of [...routes4, ...routes6]) assert.doesNotMatch(r.dst, labish);
});

test('lab exec runs a command in a workload namespace and returns its exit code', async () => {
  const w = lab.workloads[5];
  const r = ok(await cli(['lab', 'exec', '--prefix', prefix, w.name, '--', 'ip', '-o', 'link', 'show']));
  assert.match(r.stdout, /^1: lo:/);
  assert.equal(r.stdout.trim().split('\n').length, 1, 'a workload holds only its loopback');
  const netns = ok(await cli(['lab', 'exec', '--prefix', prefix, w.name, '--', 'ip', 'netns', 'identify']));
  assert.equal(netns.stdout.trim(), w.ns);
  const seven = await cli(['lab', 'exec', '--prefix', prefix, w.name, '--', 'sh', '-c', 'exit 7']);
  assert.equal(seven.code, 7);
  const nic = ok(
    await cli([
      'lab',
      'exec',
      '--prefix',
      prefix,
      'h2-nic',
      '--',
      'ping',
      '-c',
      '1',
      '-W',
      '1',
      lab.hosts[0].fabric.nicV4,
    ]),
  );
  assert.match(nic.stdout, /1 received/);
  const missing = await cli(['lab', 'exec', '--prefix', prefix, 'h9-t1-w1', '--', 'true']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /TG_ERR_INVALID_ARGUMENT/);
});

test('lab down removes everything, including processes running inside the lab', async (t) => {
  // One process started through `lab exec` (which waits for it), one started straight into
  // a NIC namespace and left running, as a crashed daemon would be.
  const viaExec = spawn(
    process.execPath,
    [BIN, 'lab', 'exec', '--prefix', prefix, 'h1-t2-w1', '--', 'sleep', marker],
    {
      stdio: 'ignore',
    },
  );
  started.push(viaExec);
  const daemon = spawn('ip', ['netns', 'exec', lab.hosts[1].nicNs, 'sleep', marker], {
    stdio: 'ignore',
    detached: true,
  });
  daemon.unref();
  started.push(daemon);
  const deadline = Date.now() + 10_000;
  while (pidsWithMarker(marker).length < 2 && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50));
  assert.equal(pidsWithMarker(marker).length, 2, 'both sleeps run inside the lab');
  const viaExecEnded = new Promise<number | null>((r) => viaExec.once('exit', (code) => r(code)));

  const t0 = performance.now();
  const r = ok(await cli(['lab', 'down', '--prefix', prefix, '--json']));
  t.diagnostic(`lab down 2/2/2 via CLI: ${Math.round(performance.now() - t0)} ms wall`);
  const report = JSON.parse(r.stdout) as {
    namespaces: string[];
    killed: number[];
    stateFile: boolean;
    ms: number;
  };
  t.diagnostic(`teardown time recorded by the lab: ${report.ms} ms`);
  assert.equal(report.namespaces.length, 13);
  assert.equal(report.killed.length, 2);
  assert.equal(report.stateFile, true);

  assert.deepEqual(await leftovers(prefix), []);
  assert.deepEqual(pidsWithMarker(marker), [], 'no process of the lab is left');
  assert.equal(await viaExecEnded, 128 + 15, 'lab exec reports its command ended by SIGTERM');

  const again = ok(await cli(['lab', 'down', '--prefix', prefix]));
  assert.match(again.stdout, /nothing to remove/);
});
