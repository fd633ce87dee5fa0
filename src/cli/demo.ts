// `tenguard demo` (npm run demo): builds a lab, shows it, checks that its links carry
// traffic, measures the fabric, and tears the lab down again (also on failure and on
// Ctrl-C). It reports only what exists: the encrypted legs and the services around them
// are listed as not built yet.
//
// With --json stdout carries one object {checks: [{name, passed, detail}], figures, notBuilt}
// and progress goes to stderr. The exit code is 0 when every check passed, 1 when one
// failed, 130 when interrupted.
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import {
  buildLab,
  destroyLab,
  findLabObjects,
  iperfTcp,
  type LabState,
  labStatus,
  loadLab,
  ping,
  rootFootprint,
  runInNode,
  validatePrefix,
} from '../lab/index.js';
import { renderLabStatus } from '../lab/render.js';
import { TgError } from '../util/errors.js';
import { requireRoot } from '../util/exec.js';

const USAGE = `usage: tenguard demo [--json] [--prefix P] [--iperf-seconds S]

  Builds a lab (2 hosts, 2 tenants, 2 workloads per tenant per host), shows it, checks that
  every link carries traffic, measures the fabric with iperf3, and removes the lab. What an
  earlier run left with the same prefix (its process gone) is removed first.
  --prefix P          lab prefix (default tgdemo)
  --iperf-seconds S   length of the fabric measurement, 0..30 (default 3; 0 skips it)
  --json              print one JSON object {checks, figures, notBuilt}; progress on stderr`;

/** What the demo cannot show yet, because it does not exist yet. */
export const NOT_BUILT: readonly string[] = [
  'on-host encrypted leg: workload tg0 -> vSwitch -> NIC (workloads hold only loopback; no overlay is wired)',
  'off-host encrypted leg: NIC <-> NIC over the WireGuard protocol (fabric traffic above is plaintext)',
  'NIC agent: key authority, forwarding, firewall with conntrack, flow logs',
  'orchestrator: tenants, placement, address management, desired state',
  'CA with its signing key in a PKCS#11 token; workload and NIC identities',
  'zero-trust policy between workloads and tenants',
];

export interface DemoCheck {
  name: string;
  passed: boolean;
  detail: string;
}

export interface DemoReport {
  checks: DemoCheck[];
  figures: Record<string, number>;
  notBuilt: string[];
}

const SIZE = { hosts: 2, tenants: 2, workloads: 2 };

function parse(args: string[]): { json: boolean; prefix: string; iperfSeconds: number; help: boolean } {
  let values: Record<string, string | boolean | undefined>;
  try {
    const parsed = parseArgs({
      args,
      options: {
        json: { type: 'boolean' },
        prefix: { type: 'string' },
        'iperf-seconds': { type: 'string' },
        help: { type: 'boolean' },
      },
      strict: true,
      allowPositionals: false,
    });
    values = parsed.values;
  } catch (err) {
    throw new TgError('TG_ERR_USAGE', `${(err as Error).message}\n${USAGE}`, { cause: err });
  }
  const secondsText = (values['iperf-seconds'] as string | undefined) ?? '3';
  if (!/^[0-9]{1,2}$/.test(secondsText) || Number(secondsText) > 30) {
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `--iperf-seconds ${JSON.stringify(secondsText)} must be 0..30`,
    );
  }
  return {
    json: values.json === true,
    prefix: validatePrefix((values.prefix as string | undefined) ?? 'tgdemo'),
    iperfSeconds: Number(secondsText),
    help: values.help === true,
  };
}

function fmtMbps(mbps: number): string {
  return mbps >= 1000 ? `${(mbps / 1000).toFixed(2)} Gbit/s` : `${mbps.toFixed(0)} Mbit/s`;
}

function indent(text: string, by = '      '): string {
  return text
    .split('\n')
    .map((l) => by + l)
    .join('\n');
}

export async function run(args: string[]): Promise<number> {
  const opts = parse(args);
  if (opts.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  requireRoot('demo');
  const { prefix } = opts;
  const say = (line: string): void => {
    (opts.json ? process.stderr : process.stdout).write(`${line}\n`);
  };
  const report: DemoReport = { checks: [], figures: {}, notBuilt: [...NOT_BUILT] };
  const check = (name: string, passed: boolean, detail: string): void => {
    report.checks.push({ name, passed, detail });
    say(`      ${passed ? 'PASS' : 'FAIL'}  ${name}${detail ? `: ${detail}` : ''}`);
  };

  say(`tenguard demo: the lab as it stands, prefix ${prefix}\n`);
  await clearLeftovers(prefix, say);

  const ac = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    if (signals === 1) {
      say(`\n${sig}: stopping; the lab is removed before exiting`);
      ac.abort();
    } else {
      say('still removing the lab, please wait');
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const interrupted = (): boolean => ac.signal.aborted;
  // Another run claimed the prefix between our check and our build: its lab is not ours to remove.
  let ours = true;
  try {
    await demoBody(opts, report, say, check, ac.signal);
  } catch (err) {
    if (err instanceof TgError && err.code === 'TG_ERR_LAB_EXISTS') {
      ours = false;
      throw err;
    }
    check('demo ran to the end', false, interrupted() ? 'interrupted by a signal' : (err as Error).message);
  } finally {
    if (ours) await tearDown(prefix, report, say, check);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }

  const passed = report.checks.filter((c) => c.passed).length;
  say(`\nresult: ${passed}/${report.checks.length} checks passed`);
  say('not built yet (the demo shows each of these once it exists):');
  for (const n of NOT_BUILT) say(`  - ${n}`);
  if (opts.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  if (interrupted()) return 130;
  return passed === report.checks.length ? 0 : 1;
}

/**
 * Removes a lab an earlier run left with this prefix (its process is gone). A lab whose
 * builder still runs is someone else's: TG_ERR_LAB_EXISTS, and nothing is touched.
 */
async function clearLeftovers(prefix: string, say: (line: string) => void): Promise<void> {
  const found = await findLabObjects(prefix);
  if (!found.stateFile && found.namespaces.length === 0 && found.links.length === 0) return;
  let old: LabState | null = null;
  try {
    old = loadLab(prefix);
  } catch {
    old = null; // no readable state file: leftovers of a crash
  }
  if (old !== null && old.builder.pid !== process.pid && processAlive(old.builder.pid)) {
    throw new TgError(
      'TG_ERR_LAB_EXISTS',
      `lab '${prefix}' belongs to the running process ${old.builder.pid}; choose another --prefix`,
    );
  }
  say(`      removing what an earlier run left with prefix ${prefix}`);
  await destroyLab(prefix);
}

async function tearDown(
  prefix: string,
  report: DemoReport,
  say: (line: string) => void,
  check: (name: string, passed: boolean, detail: string) => void,
): Promise<void> {
  say('\n[5/5] tearing down');
  try {
    const t0 = performance.now();
    const r = await destroyLab(prefix);
    report.figures.labDownMs = Math.round(performance.now() - t0);
    const left = await findLabObjects(prefix);
    const clean = left.namespaces.length === 0 && left.links.length === 0 && !left.stateFile;
    check(
      'teardown leaves nothing behind',
      clean,
      `${r.namespaces.length} namespaces removed in ${report.figures.labDownMs} ms` +
        (clean ? '; no namespace, link or state file left' : ''),
    );
  } catch (err) {
    check('teardown leaves nothing behind', false, (err as Error).message);
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function demoBody(
  opts: { prefix: string; iperfSeconds: number },
  report: DemoReport,
  say: (line: string) => void,
  check: (name: string, passed: boolean, detail: string) => void,
  signal: AbortSignal,
): Promise<void> {
  const { prefix } = opts;
  say(
    `[1/5] building the lab: ${SIZE.hosts} hosts, ${SIZE.tenants} tenants, ${SIZE.workloads} workloads per tenant per host`,
  );
  const steps: string[] = [];
  const t0 = performance.now();
  const lab: LabState = await buildLab({
    prefix,
    ...SIZE,
    signal,
    onProgress: (p) => steps.push(`${p.name} ${Math.round(p.ms)} ms`),
  });
  report.figures.labUpMs = Math.round(performance.now() - t0);
  say(indent(steps.join(', ')));
  check(
    'lab built',
    true,
    `${1 + 2 * lab.hosts.length + lab.workloads.length} namespaces in ${report.figures.labUpMs} ms`,
  );

  say('\n[2/5] the lab');
  const st = await labStatus(prefix);
  say(indent(renderLabStatus(st)));
  const bad = [
    ...st.namespaces.filter((n) => !n.exists || !n.loUp).map((n) => n.name),
    ...st.interfaces.filter((i) => !i.ok).map((i) => `${i.ns}/${i.name}`),
  ];
  check('every planned namespace and link exists, is up and has its addresses', st.healthy, bad.join(', '));
  const footprint = await rootFootprint();
  check(
    'root namespace has no address or route in the lab ranges',
    footprint.length === 0,
    footprint.join(', '),
  );
  const workloadIfs = st.namespaces
    .filter((n) => lab.workloads.some((w) => w.ns === n.name))
    .filter((n) => n.interfaces.some((i) => i.name !== 'lo'))
    .map((n) => n.name);
  check(
    'workloads hold only loopback (no overlay until the tunnel exists)',
    workloadIfs.length === 0,
    workloadIfs.length
      ? `extra interfaces in ${workloadIfs.join(', ')}`
      : `${lab.workloads.length} workloads`,
  );

  say('\n[3/5] do the links carry traffic? (ping, 3 echoes each)');
  const rtts: Record<'pcie' | 'fabric', number[]> = { pcie: [], fabric: [] };
  const probe = async (
    kind: 'pcie' | 'fabric',
    name: string,
    node: string,
    target: string,
  ): Promise<void> => {
    stopIfAborted(signal);
    const r = await ping(lab, node, target, { count: 3, signal });
    stopIfAborted(signal); // an aborted probe proves nothing either way
    if (r.rttAvgMs !== null) rtts[kind].push(r.rttAvgMs);
    const detail = r.ok
      ? `${r.received}/${r.sent} replies, rtt ${r.rttAvgMs?.toFixed(3)} ms`
      : `${r.received}/${r.sent} replies ${r.detail}`;
    check(name, r.ok, detail);
  };
  for (const h of lab.hosts) {
    await probe(
      'pcie',
      `PCIe link ${h.name}: host ${h.pcie.hostV4} -> NIC ${h.pcie.nicV4}`,
      h.name,
      h.pcie.nicV4,
    );
    await probe(
      'pcie',
      `PCIe link ${h.name}: host ${h.pcie.hostV6} -> NIC ${h.pcie.nicV6}`,
      h.name,
      h.pcie.nicV6,
    );
  }
  for (const a of lab.hosts) {
    for (const b of lab.hosts.filter((x) => x.index > a.index)) {
      await probe(
        'fabric',
        `fabric: NIC ${a.name} ${a.fabric.nicV4} -> NIC ${b.name} ${b.fabric.nicV4}`,
        a.nicNode,
        b.fabric.nicV4,
      );
      await probe(
        'fabric',
        `fabric: NIC ${a.name} ${a.fabric.nicV6} -> NIC ${b.name} ${b.fabric.nicV6}`,
        a.nicNode,
        b.fabric.nicV6,
      );
    }
  }
  const avg = (xs: number[]): number =>
    Math.round((xs.reduce((s, x) => s + x, 0) / Math.max(1, xs.length)) * 1000) / 1000;
  if (rtts.pcie.length) report.figures.pcieRttAvgMs = avg(rtts.pcie);
  if (rtts.fabric.length) report.figures.fabricRttAvgMs = avg(rtts.fabric);
  // A host reaches only its own NIC: nothing routes it onto the fabric.
  const [h1, h2] = lab.hosts;
  const leak = await runInNode(lab, h1.name, 'ping', ['-n', '-c', '1', '-W', '1', h2.fabric.nicV4], {
    signal,
  });
  stopIfAborted(signal);
  check(
    `host ${h1.name} cannot reach the fabric (${h2.fabric.nicV4})`,
    leak.code !== 0,
    leak.code !== 0 ? 'no route' : 'it answered',
  );

  say(`\n[4/5] fabric throughput, plaintext: iperf3 TCP NIC ${h1.name} -> NIC ${h2.name}`);
  if (opts.iperfSeconds === 0) {
    say('      skipped (--iperf-seconds 0)');
  } else {
    try {
      const r = await iperfTcp(lab, h1.nicNode, h2.nicNode, h2.fabric.nicV4, opts.iperfSeconds, { signal });
      report.figures.fabricTcpMbps = Math.round(r.mbps);
      check(
        `fabric carries TCP (iperf3, ${opts.iperfSeconds} s)`,
        r.mbps > 0,
        `${fmtMbps(r.mbps)}, ${r.retransmits} retransmits (veth + bridge, no encryption yet)`,
      );
    } catch (err) {
      stopIfAborted(signal);
      check(`fabric carries TCP (iperf3, ${opts.iperfSeconds} s)`, false, (err as Error).message);
    }
  }
  stopIfAborted(signal);
}

function stopIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw new TgError('TG_ERR_INTERRUPTED', 'interrupted');
}
