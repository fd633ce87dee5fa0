// The demo end to end: its JSON report, its exit code, and its teardown (also on Ctrl-C).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, test } from 'node:test';
import { BIN, cleanup, cli, leftovers, testPrefix } from './lab-support.js';

interface Report {
  checks: { name: string; passed: boolean; detail: string }[];
  figures: Record<string, number>;
  notBuilt: string[];
}

const used = new Set<string>();
after(() => cleanup(used));

test('demo --json: every check passes, figures are reported, the lab is gone afterwards', async (t) => {
  const prefix = testPrefix();
  used.add(prefix);
  const r = await cli(['demo', '--json', '--prefix', prefix, '--iperf-seconds', '1'], { timeoutMs: 120_000 });
  const report = JSON.parse(r.stdout) as Report;
  for (const c of report.checks) assert.ok(c.passed, `${c.name}: ${c.detail}`);
  assert.equal(r.code, 0, r.stderr);
  const names = report.checks.map((c) => c.name);
  assert.ok(names.includes('teardown leaves nothing behind'));
  assert.equal(names.filter((n) => n.startsWith('PCIe link')).length, 4);
  assert.equal(names.filter((n) => n.startsWith('fabric: NIC')).length, 2);
  for (const f of ['labUpMs', 'labDownMs', 'pcieRttAvgMs', 'fabricRttAvgMs', 'fabricTcpMbps']) {
    assert.equal(typeof report.figures[f], 'number', f);
  }
  assert.ok(report.figures.fabricTcpMbps > 0);
  assert.ok(report.notBuilt.length > 0, 'the demo says what is not built yet');
  t.diagnostic(`figures: ${JSON.stringify(report.figures)}`);
  assert.match(r.stderr, /\[1\/5\] building the lab/, 'progress goes to stderr in --json mode');
  assert.deepEqual(await leftovers(prefix), []);
});

test('demo removes leftovers of an earlier crashed run of its prefix first', async () => {
  const prefix = testPrefix();
  used.add(prefix);
  const crash = await cli(
    ['lab', 'up', '--hosts', '1', '--tenants', '1', '--workloads', '1', '--prefix', prefix],
    {
      env: { TENGUARD_LAB_CRASH_AFTER: '2' },
    },
  );
  assert.equal(crash.signal, 'SIGKILL');
  const r = await cli(['demo', '--json', '--prefix', prefix, '--iperf-seconds', '0'], { timeoutMs: 120_000 });
  assert.match(r.stderr, /removing what an earlier run left/);
  const report = JSON.parse(r.stdout) as Report;
  for (const c of report.checks) assert.ok(c.passed, `${c.name}: ${c.detail}`);
  assert.equal(r.code, 0);
  assert.deepEqual(await leftovers(prefix), []);
});

test('Ctrl-C during the demo: it tears the lab down, reports the interruption, exits 130', async () => {
  const prefix = testPrefix();
  used.add(prefix);
  const child = spawn(
    process.execPath,
    [BIN, 'demo', '--json', '--prefix', prefix, '--iperf-seconds', '10'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  let sent = false;
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    // Interrupt during the 10 s iperf3 run.
    if (!sent && stderr.includes('[4/5]')) {
      sent = true;
      setTimeout(() => child.kill('SIGINT'), 500);
    }
  });
  const code = await new Promise<number | null>((r) => child.once('close', (c) => r(c)));
  assert.ok(sent, `the demo reached its iperf3 step: ${stderr}`);
  assert.equal(code, 130, stderr);
  const report = JSON.parse(stdout) as Report;
  const ran = report.checks.find((c) => c.name === 'demo ran to the end');
  assert.equal(ran?.passed, false);
  assert.match(ran?.detail ?? '', /interrupted/);
  const teardown = report.checks.find((c) => c.name === 'teardown leaves nothing behind');
  assert.equal(teardown?.passed, true);
  assert.deepEqual(await leftovers(prefix), []);
});
