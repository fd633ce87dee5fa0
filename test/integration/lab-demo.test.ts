// The demo end to end (`tenguard demo --json`): every claim it makes passes, its figures are
// there and plausible, and afterwards nothing of it is left: no namespace, link, state file,
// process or socket. Run through the orchestrator, after a crashed earlier run (kept up with
// --keep, its web console used, then ended with Ctrl-C), and interrupted with Ctrl-C.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { after, test } from 'node:test';
import { UAPI_SOCKET_DIR } from '../../src/uapi/server.js';
import { BIN, cleanup, cli, leftovers, testPrefix } from '../helpers/lab.js';

interface Report {
  control: string;
  policy: string;
  security: {
    mtls: boolean;
    trustDomain: string | null;
    pskSealed: boolean;
    pskScans: number;
    pskScansWithHits: number;
  };
  checks: { name: string; passed: boolean; detail: string }[];
  figures: Record<string, number>;
  pids: number[];
  notShown: string[];
  console: string | null;
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

/** Processes whose command line names one of the prefix's objects (namespaces, sockets, captures). */
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

/** Everything of the prefix still there: lab objects, processes, sockets. */
async function everythingLeft(prefix: string, report: Report): Promise<string[]> {
  const left = await leftovers(prefix);
  for (const pid of report.pids) if (alive(pid)) left.push(`pid ${pid}`);
  left.push(...prefixProcesses(prefix).map((p) => `process ${p}`));
  if (existsSync(`/run/tenguard/lab/${prefix}`)) left.push(`run directory /run/tenguard/lab/${prefix}`);
  const uapi = existsSync(UAPI_SOCKET_DIR) ? readdirSync(UAPI_SOCKET_DIR) : [];
  left.push(...uapi.filter((f) => f.startsWith(`${prefix}-`)).map((f) => `socket ${UAPI_SOCKET_DIR}/${f}`));
  const tmp = readdirSync('/tmp').filter((f) => f.startsWith(`${prefix}-`) && f.endsWith('.pcap'));
  left.push(...tmp.map((f) => `capture /tmp/${f}`));
  return left;
}

function names(report: Report, start: string): string[] {
  return report.checks.map((c) => c.name).filter((n) => n.startsWith(start));
}

function assertFullRun(report: Report): void {
  for (const c of report.checks) assert.ok(c.passed, `${c.name}: ${c.detail}`);
  // One check per claim of the demo.
  assert.equal(names(report, 'tenant ').length, 2);
  assert.equal(names(report, 'policy of ').length, 2);
  assert.equal(
    report.checks.filter(
      (c) =>
        / (same|cross) host: .*->/.test(c.name) && !c.name.includes('blocked') && !c.name.startsWith('IPv6'),
    ).length,
    4,
  );
  // Dual stack: both addresses everywhere, IPv6 across hosts (ping6 + TCP), another tenant blocked.
  assert.equal(names(report, "every workload has an IPv6 address from its tenant's ULA prefix").length, 1);
  assert.equal(names(report, 'IPv6 cross host: acme-web (h1) -> acme-db (h2) fd64:6440:100::').length, 1);
  assert.equal(names(report, 'IPv6 cross tenant: acme-web (acme) -> blue-db (blue)').length, 1);
  assert.equal(
    report.checks.filter((c) => c.name.endsWith(' blocked') && !c.name.startsWith('pods-')).length,
    3,
  );
  // The podman step, under mTLS like everything else: containers of one tenant across hosts,
  // another tenant's container blocked, only WireGuard on the links, keys wiped by podman rm,
  // nothing left.
  assert.equal(names(report, 'pods-a across hosts').length, 1);
  assert.equal(names(report, 'pods-a -> pods-b blocked').length, 1);
  assert.equal(names(report, 'podman rm wiped').length, 1);
  assert.equal(names(report, 'podman left nothing behind').length, 1);
  assert.equal(names(report, 'default deny: ').length, 1);
  // A service by name across hosts: the name resolves at the tenant's DNS server, the connection
  // reaches the endpoint on the other host, another tenant's name is unknown.
  assert.equal(names(report, 'service name db.acme.tg resolves to the service address').length, 1);
  assert.equal(names(report, 'service by name: acme-web (h1) to db.acme.tg:').length, 1);
  assert.equal(names(report, "another tenant's name blue-db.blue.tg is unknown").length, 1);
  assert.equal(names(report, 'the flow logs show the verdicts').length, 1);
  // Egress: an allowed name passes source-NATed to the NIC's uplink address, another name and its
  // address are blocked, the flow log has both (the allowed one with its name).
  assert.equal(names(report, 'allowed.example resolves through acme').length, 1);
  assert.equal(names(report, 'HTTP GET http://allowed.example/ from acme-web is answered').length, 1);
  assert.equal(names(report, "on the uplink the flow comes from the NIC's uplink address").length, 1);
  assert.equal(names(report, 'the flow log records the egress flow with the name').length, 1);
  assert.equal(names(report, 'other.example does not resolve').length, 1);
  assert.equal(names(report, 'HTTP to other.example and to its raw address').length, 1);
  assert.equal(names(report, 'the flow log records the denied egress flow').length, 1);
  assert.equal(names(report, 'control: the marker is visible').length, 1);
  assert.equal(
    report.checks.filter(
      (c) =>
        c.name.includes('marker absent, every UDP packet is WireGuard') &&
        !c.name.startsWith('podman traffic'),
    ).length,
    3,
  );
  // The podman step's own captures: both host links and the fabric while its containers talk.
  assert.equal(names(report, 'podman traffic on the ').length, 3);
  assert.equal(
    report.checks.filter((c) => c.name.endsWith('on-host and off-host keys are different keys')).length,
    2,
  );
  assert.equal(names(report, "each tenant's off-host key differs").length, 1);
  assert.equal(names(report, 'acme-api moved h1 -> h2').length, 1);
  assert.equal(names(report, 'the ping stream kept going').length, 1);
  assert.equal(report.checks.filter((c) => c.name.endsWith('reaches acme-api on its new host')).length, 2);
  assert.equal(names(report, "acme-api's on-host key moved").length, 1);
  assert.equal(names(report, "blue-db's PSK and blue's off-host key on h2 are wiped").length, 1);
  // A killed vSwitch daemon: restarted by the lab's supervisor, its workloads re-adopted with
  // new keys by the orchestrator, the stream through it passing again (bounded; gap printed).
  assert.equal(names(report, "the lab's supervisor restarted the vSwitch daemon of h1").length, 1);
  assert.equal(names(report, 'the orchestrator re-adopted 3 workloads of h1 with new keys').length, 1);
  assert.equal(names(report, 'acme-web (h1) -> acme-db (h2) passes again within 10 s').length, 1);
  assert.equal(names(report, 'teardown leaves nothing behind').length, 1);
  assert.equal(names(report, 'the web console serves the installation behind the API login').length, 1);
  assert.match(report.console ?? '', /^http:\/\/127\.0\.0\.1:\d+\/console\/$/);
  assert.match(report.policy, /enforced by each NIC/);
  // Secure by default: mTLS everywhere, a NIC refuses a client without a certificate, and the
  // orchestrator's memory holds no PSK after each of the 6 spin-ups, after the migration and
  // after the re-adoption of a killed vSwitch daemon's workloads.
  assert.deepEqual(report.security, {
    mtls: true,
    trustDomain: 'lab.tenguard',
    pskSealed: true,
    pskScans: 8,
    pskScansWithHits: 0,
  });
  assert.equal(names(report, 'h1: the NIC API refuses a call without a client certificate').length, 1);
  assert.equal(
    report.checks.filter((c) => c.name.includes("the orchestrator's memory holds none")).length,
    8,
  );
  assert.match(report.control, /over mTLS as spiffe:\/\/lab\.tenguard\/service\/orchestrator/);
  const f = report.figures;
  for (const k of [
    'spinup_ms_median',
    'first_packet_ms_median',
    'migration_gap_ms',
    'ipv6_rtt_ms',
    'ipv6_tcp_echo_ms',
    'egress_http_ms',
    'migration_lost_packets',
    'migration_ms',
    'spindown_ms',
    'vswitchd_kill_gap_ms',
    'vswitchd_back_ms',
    'vswitchd_readopted_ms',
    'total_ms',
  ])
    assert.equal(typeof f[k], 'number', `figure ${k}`);
  assert.ok(f.spinup_ms_median > 0 && f.spinup_ms_median < 10_000, `spin-up ${f.spinup_ms_median} ms`);
  assert.ok(f.first_packet_ms_median >= f.spinup_ms_median * 0.5 && f.first_packet_ms_median < 15_000);
  assert.ok(f.migration_ms > 0 && f.migration_ms < 20_000, `migration ${f.migration_ms} ms`);
  assert.ok(f.migration_gap_ms >= 0 && f.migration_gap_ms < 10_000, `gap ${f.migration_gap_ms} ms`);
  assert.ok(f.migration_lost_packets >= 0 && f.migration_lost_packets < 500);
  assert.ok(
    f.vswitchd_kill_gap_ms > 0 && f.vswitchd_kill_gap_ms < 10_000,
    `gap ${f.vswitchd_kill_gap_ms} ms`,
  );
  assert.ok(f.total_ms < 240_000, `the demo took ${f.total_ms} ms`);
  assert.ok(report.pids.length >= 4, 'NIC agents and vSwitch daemons are tracked by pid');
}

test('demo --json through the orchestrator: every check passes, figures are plausible, nothing is left', {
  timeout: 300_000,
}, async (t) => {
  const prefix = testPrefix();
  used.add(prefix);
  const r = await cli(['demo', '--json', '--prefix', prefix, '--iperf-seconds', '2'], { timeoutMs: 280_000 });
  const report = JSON.parse(r.stdout) as Report;
  assertFullRun(report);
  assert.equal(r.code, 0, r.stderr);
  assert.match(report.control, /^orchestrator \(tenguard orchestrator, pid \d+/);
  assert.deepEqual(report.notShown, []);
  assert.equal(typeof report.figures.mbps_cross_host, 'number');
  assert.ok(report.figures.mbps_cross_host > 1, `${report.figures.mbps_cross_host} Mbit/s`);
  assert.match(r.stderr, /\[1\/20\] lab/, 'progress goes to stderr in --json mode');
  assert.match(r.stderr, /\[20\/20\] teardown/);
  assert.match(
    r.stderr,
    /\nweb console: http:\/\/127\.0\.0\.1:\d+\/console\/ \(served while the lab was up; `tenguard demo --keep` keeps it up to look around\)\n$/,
  );
  t.diagnostic(`figures: ${JSON.stringify(report.figures)}`);
  assert.deepEqual(await everythingLeft(prefix, report), []);
});

/** GET on the console; the session cookie of a login answer. */
function consoleGet(
  url: string,
  cookie?: string,
): Promise<{ status: number; cookie: string | null; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: u.hostname, port: u.port, path: u.pathname + u.search, headers: cookie ? { cookie } : {} },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => {
          body += d.toString();
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            cookie: res.headers['set-cookie']?.[0]?.split(';')[0] ?? null,
            body,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

test('demo --keep after a crashed earlier run: leftovers removed first, the lab kept up with its console until Ctrl-C', {
  timeout: 300_000,
}, async () => {
  const prefix = testPrefix();
  used.add(prefix);
  const crash = await cli(
    ['lab', 'up', '--hosts', '1', '--tenants', '1', '--workloads', '1', '--prefix', prefix],
    { env: { TENGUARD_LAB_CRASH_AFTER: '2' } },
  );
  assert.equal(crash.signal, 'SIGKILL');
  const child = spawn(
    process.execPath,
    [BIN, 'demo', '--json', '--keep', '--prefix', prefix, '--iperf-seconds', '0'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  let kept: () => void = () => undefined;
  const keptUp = new Promise<void>((r) => {
    kept = r;
  });
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.includes('Ctrl-C ends the demo')) kept();
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 280_000);
  const closed = new Promise<number | null>((r) => child.once('close', (c) => r(c)));
  await Promise.race([keptUp, closed]);
  assert.match(stderr, /removing what an earlier run left/);
  const link = /log in with (http:\/\/127\.0\.0\.1:\d+\/console\/login\?token=\S+)/.exec(stderr)?.[1];
  assert.ok(link, `no login link while the lab is kept up: ${stderr.slice(-2000)}`);
  assert.match(stderr, /the lab stays up \(--keep\): web console at http:\/\/127\.0\.0\.1:\d+\/console\//);
  // The lab is still there, and the console shows it.
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok(child.exitCode === null, 'the demo did not stay up');
  const login = await consoleGet(link);
  assert.equal(login.status, 303);
  const workloads = await consoleGet(new URL('/v1/workloads', link).href, login.cookie ?? '');
  assert.equal(workloads.status, 200);
  assert.ok((JSON.parse(workloads.body) as { workloads: unknown[] }).workloads.length >= 4, workloads.body);
  child.kill('SIGINT');
  const code = await closed;
  clearTimeout(timer);
  assert.equal(code, 0, `a --keep run ended by Ctrl-C after passing exits 0: ${stderr.slice(-2000)}`);
  const report = JSON.parse(stdout) as Report;
  assertFullRun(report);
  assert.match(report.control, /^orchestrator \(tenguard orchestrator, pid \d+/);
  assert.ok(
    report.notShown.some((n) => n.startsWith('throughput')),
    'it says the throughput run was skipped',
  );
  assert.equal(report.figures.mbps_cross_host, undefined);
  assert.match(stderr, /\nweb console: http:\/\/127\.0\.0\.1:\d+\/console\/ \(stopped with the lab\)\n$/);
  assert.deepEqual(await everythingLeft(prefix, report), []);
});

test('Ctrl-C during the demo: it tears everything down, reports the interruption, exits 130', {
  timeout: 300_000,
}, async () => {
  const prefix = testPrefix();
  used.add(prefix);
  const child = spawn(
    process.execPath,
    [BIN, 'demo', '--json', '--prefix', prefix, '--iperf-seconds', '20'],
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
    // Interrupt during the 20 s iperf3 run.
    if (!sent && stderr.includes('throughput: iperf3')) {
      sent = true;
      setTimeout(() => child.kill('SIGINT'), 1000);
    }
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 280_000);
  const code = await new Promise<number | null>((r) => child.once('close', (c) => r(c)));
  clearTimeout(timer);
  assert.ok(sent, `the demo reached its iperf3 step: ${stderr}`);
  assert.equal(code, 130, stderr);
  const report = JSON.parse(stdout) as Report;
  const ran = report.checks.find((c) => c.name === 'demo ran to the end');
  assert.equal(ran?.passed, false);
  assert.match(ran?.detail ?? '', /interrupted/);
  assert.equal(names(report, 'acme-api moved').length, 0, 'nothing ran after the interrupt');
  const teardown = report.checks.find((c) => c.name === 'teardown leaves nothing behind');
  assert.equal(teardown?.passed, true, teardown?.detail);
  assert.deepEqual(await everythingLeft(prefix, report), []);
});
