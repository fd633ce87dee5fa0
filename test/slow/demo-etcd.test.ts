// `tenguard demo --json --store etcd --nics 2`: the orchestrator as 2 replicas on a 3-member
// etcd cluster, each host with two NICs; after the migration the leading replica is killed and
// another must lead within 3 s with the same workloads, then a NIC agent is killed and its
// workloads must be carried by the host's other NIC within 3 s, and the rest of the demo
// (vSwitch daemon recovery, spin-down, podman) runs through the new leader.
// Every check passes and nothing is left: no pid of the demo (etcd members included), no
// process naming the prefix, no run directory, no lab object.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { cleanup, cli, leftovers, testPrefix } from '../helpers/lab.js';

interface Report {
  control: string;
  checks: { name: string; passed: boolean; detail: string }[];
  figures: Record<string, number>;
  pids: number[];
}

const used = new Set<string>();
after(() => cleanup(used));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function prefixProcesses(prefix: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (
        args.some((a) => a.startsWith(`${prefix}-`) || a.includes(`/${prefix}/`) || a.includes(`/${prefix}-`))
      )
        out.push(`${entry}: ${args.join(' ').trim()}`);
    } catch {
      // ended while we looked
    }
  }
  return out;
}

test('demo --json --store etcd --nics 2: the leader and a NIC agent are killed mid-demo, the other replica and NIC take over, every check passes', {
  timeout: 420_000,
}, async (t) => {
  const prefix = testPrefix();
  used.add(prefix);
  const r = await cli(
    ['demo', '--json', '--store', 'etcd', '--nics', '2', '--prefix', prefix, '--iperf-seconds', '0'],
    {
      timeoutMs: 400_000,
    },
  );
  const report = JSON.parse(r.stdout) as Report;
  for (const c of report.checks) assert.ok(c.passed, `${c.name}: ${c.detail}`);
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    report.control,
    /^orchestrator: 2 replicas of tenguard orchestrator .* on an etcd store of 3 members/,
  );
  const takeover = report.checks.filter((c) => c.name.startsWith('leader takeover: '));
  assert.equal(takeover.length, 2);
  assert.ok(report.figures.leader_takeover_ms <= 3000, `takeover ${report.figures.leader_takeover_ms} ms`);
  const failover = report.checks.filter((c) => c.name.startsWith('NIC failover: '));
  assert.ok(failover.length >= 4, `NIC failover checks: ${failover.map((c) => c.name).join('; ')}`);
  assert.equal(typeof report.figures.nic_failover_gap_ms, 'number');
  // The steps after the takeover ran through the new leader.
  assert.equal(report.checks.filter((c) => c.name.startsWith('podman left nothing behind')).length, 1);
  t.diagnostic(`figures: ${JSON.stringify(report.figures)}`);
  // 4 NIC agents, 2 vSwitch daemons, 2 replicas, 3 etcd members at least.
  assert.ok(report.pids.length >= 11, `pids tracked: ${report.pids.length}`);
  const left = await leftovers(prefix);
  for (const pid of report.pids) if (alive(pid)) left.push(`pid ${pid}`);
  left.push(...prefixProcesses(prefix));
  if (existsSync(`/run/tenguard/lab/${prefix}`)) left.push(`run directory /run/tenguard/lab/${prefix}`);
  assert.deepEqual(left, []);
});
