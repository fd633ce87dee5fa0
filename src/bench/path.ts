// `tenguard bench path`: iperf3 TCP from workload to workload through the whole tenguard path,
// in one run on one machine, next to a single wireguard-go hop as the reference:
//   same-host:    workload -> vSwitch -> NIC -> vSwitch -> workload (two on-host legs)
//   cross-host:   workload -> vSwitch -> NIC -> fabric -> NIC -> vSwitch -> workload
//                 (on-host, off-host and on-host legs: three encryptions, three decryptions)
//   wireguard-go: two namespaces, one wireguard-go tunnel between them (one encryption hop)
// The ratio cross-host / wireguard-go is the figure of merit; all three share the machine's
// two cores with everything on the path, so only ratios within one run mean anything.
// Beside throughput: CPU seconds per GB received, over the cross-host run summed over
// tenguard's processes (both NIC agents, both vSwitch daemons and their device processes),
// and over the single hop summed over both wireguard-go processes.
import { parseArgs } from 'node:util';
import { LabAgents } from '../lab/agents.js';
import { LabControlPlane, plannedWorkloads } from '../lab/control.js';
import { buildLab, destroyLab, iperfTcpNs } from '../lab/index.js';
import { TgError } from '../util/errors.js';
import { requireRoot, runIn } from '../util/exec.js';
import { CpuMeter, cpuSecondsPerGb, wireguardGoVersion } from './cpu.js';
import {
  configureDevice,
  createTestbed,
  DEFAULT_WIREGUARD_GO,
  destroyTestbed,
  iperf,
  startDevice,
} from './testbed.js';
import { devicePids } from './tunnel.js';

const LAB_PREFIX = 'tgpath';
const TESTBED_PREFIX = 'tgpwg';
const TUNNEL_MTU = 1420;

export interface PathBenchResult {
  wireguard_go: string;
  wireguard_go_version: string;
  mbps: { 'same-host': number; 'cross-host': number; 'wireguard-go': number };
  ratio: number;
  /** tenguard: cross host, all its processes; wireguard_go: the single hop, both devices. */
  cpu_s_per_gb: { tenguard: number; wireguard_go: number };
  /** tenguard's figure split: both NIC agents, and the vSwitch daemons with their devices. */
  cpu_s_per_gb_tenguard: { nic: number; vswitch: number };
}

/** The processes of the lab's tenguard data path: NIC agents; vSwitch daemons and their devices. */
async function tenguardPids(agents: LabAgents): Promise<{ nic: number[]; vswitch: number[] }> {
  const nic = [...agents.nics.values()].map((p) => p.pid);
  const vswitch = [...agents.vswitchds.values()].map((p) => p.pid);
  for (const v of agents.vswitchds.values())
    for (const i of await v.client.list()) if (i.pid !== null) vswitch.push(i.pid);
  return { nic, vswitch };
}

export async function waitForPath(ns: string, target: string): Promise<void> {
  const end = Date.now() + 15_000;
  while (Date.now() < end) {
    const r = await runIn(ns, 'ping', ['-n', '-c', '1', '-W', '1', target], { timeoutMs: 5000 });
    if (r.code === 0) return;
  }
  throw new TgError('TG_ERR_COMMAND_FAILED', `no path to ${target} from ${ns}`);
}

/** A workload of the lab path: its name, namespace and address. */
export interface PathWorkload {
  name: string;
  ns: string;
  address: string;
}

/** The lab path of a bench: workload a, a workload on the same host and one on the other host. */
export interface LabPath {
  a: PathWorkload;
  same: PathWorkload;
  cross: PathWorkload;
  /** The lab's NIC agents and vSwitch daemons (for their process ids). */
  agents: LabAgents;
  stop: () => Promise<void>;
}

/**
 * Builds the lab (2 hosts, 1 tenant, 2 workloads per host), starts its agents and control
 * plane, places the workloads and waits until a reaches both others. stop() tears it all down.
 */
export async function openLabPath(
  log: (s: string) => void,
  opts: { nicNodeArgs?: string[] } = {},
): Promise<LabPath> {
  await destroyLab(LAB_PREFIX);
  log('building the lab (2 hosts, 1 tenant, 2 workloads per host) ...');
  const lab = await buildLab({ prefix: LAB_PREFIX, hosts: 2, tenants: 1, workloads: 2 });
  let agents: LabAgents | undefined;
  let control: LabControlPlane | undefined;
  const stop = async (): Promise<void> => {
    await control?.close();
    await agents?.stop();
    await destroyLab(LAB_PREFIX);
  };
  try {
    agents = await LabAgents.start(lab, { logLevel: 'warn', nicNodeArgs: opts.nicNodeArgs ?? [] });
    control = await LabControlPlane.start(lab, agents);
    const specs = await control.place(plannedWorkloads(lab));
    const w = (name: string) => specs.find((s) => s.name === name)!;
    const a = w('h1-t1-w1');
    const same = w('h1-t1-w2');
    const cross = w('h2-t1-w1');
    await waitForPath(a.ns, same.address);
    await waitForPath(a.ns, cross.address);
    return { a, same, cross, agents, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

export async function benchPath(opts: {
  seconds: number;
  /** The wireguard-go binary (default: the one on PATH). */
  wireguardGo?: string;
  /** Write a V8 CPU profile of each NIC agent into this directory (node --cpu-prof). */
  profileNicDir?: string;
  log?: (s: string) => void;
}): Promise<PathBenchResult> {
  requireRoot('bench path');
  const log = opts.log ?? (() => undefined);
  const round = (x: number): number => Math.round(x * 10) / 10;
  const wgBin = opts.wireguardGo ?? DEFAULT_WIREGUARD_GO;
  const wgVersion = wireguardGoVersion(wgBin);

  let sameHost: number;
  let crossHost: number;
  let tgCpuPerGb: number;
  let parts: { nic: number; vswitch: number };
  const path = await openLabPath(log, {
    nicNodeArgs:
      opts.profileNicDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${opts.profileNicDir}`],
  });
  try {
    const { a, same, cross, agents } = path;
    log(`same host (${a.name} -> ${same.name}), ${opts.seconds} s ...`);
    sameHost = (await iperfTcpNs(a.ns, same.ns, same.address, opts.seconds)).mbps;
    log(`cross host (${a.name} -> ${cross.name}), ${opts.seconds} s ...`);
    const pids = await tenguardPids(agents);
    const nicCpu = new CpuMeter(pids.nic);
    const vswitchCpu = new CpuMeter(pids.vswitch);
    nicCpu.start();
    vswitchCpu.start();
    const r = await iperfTcpNs(a.ns, cross.ns, cross.address, opts.seconds);
    const nicS = nicCpu.stop();
    const vswitchS = vswitchCpu.stop();
    tgCpuPerGb = cpuSecondsPerGb(nicS + vswitchS, r.bytes);
    parts = { nic: cpuSecondsPerGb(nicS, r.bytes), vswitch: cpuSecondsPerGb(vswitchS, r.bytes) };
    crossHost = r.mbps;
  } finally {
    await path.stop();
  }

  log(`wireguard-go single hop, ${opts.seconds} s ...`);
  const tb = await createTestbed(TESTBED_PREFIX, { mtu: 1500 });
  let wg: number;
  let wgCpuPerGb: number;
  try {
    await startDevice(tb.a, 'wireguard-go', {}, { wireguardGo: wgBin });
    await startDevice(tb.b, 'wireguard-go', {}, { wireguardGo: wgBin });
    await configureDevice(tb.a, tb.b, { mtu: TUNNEL_MTU });
    await configureDevice(tb.b, tb.a, { mtu: TUNNEL_MTU });
    await waitForPath(tb.a.ns, tb.b.tunV4);
    const cpu = new CpuMeter(devicePids(tb.a, tb.b));
    cpu.start();
    const r = await iperf(tb.a, tb.b, tb.b.tunV4, opts.seconds);
    wgCpuPerGb = cpuSecondsPerGb(cpu.stop(), r.bytes);
    wg = r.mbps;
  } finally {
    await destroyTestbed(tb);
  }
  return {
    wireguard_go: wgBin,
    wireguard_go_version: wgVersion,
    mbps: { 'same-host': round(sameHost), 'cross-host': round(crossHost), 'wireguard-go': round(wg) },
    ratio: Math.round((crossHost / wg) * 1000) / 1000,
    cpu_s_per_gb: { tenguard: tgCpuPerGb, wireguard_go: wgCpuPerGb },
    cpu_s_per_gb_tenguard: parts,
  };
}

export async function run(args: string[]): Promise<number> {
  let values: {
    json?: boolean;
    seconds?: string;
    'wireguard-go'?: string;
    'profile-nic'?: string;
    help?: boolean;
  };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        json: { type: 'boolean' },
        seconds: { type: 'string' },
        'wireguard-go': { type: 'string' },
        'profile-nic': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new TgError('TG_ERR_USAGE', (err as Error).message);
  }
  if (values.help) {
    process.stdout.write(
      'usage: tenguard bench path [--json] [--seconds S (default 10)]\n' +
        '                           [--wireguard-go BIN (default: wireguard-go on PATH)]\n' +
        '                           [--profile-nic DIR (a V8 CPU profile of each NIC agent)]\n\n' +
        'iperf3 TCP workload to workload through tenguard (same host, cross host) and over one\n' +
        `wireguard-go hop, in one run (lab '${LAB_PREFIX}', testbed '${TESTBED_PREFIX}'); also the\n` +
        'CPU seconds per GB moved of the processes on each path (cpu_s_per_gb).\n',
    );
    return 0;
  }
  const seconds = Number(values.seconds ?? 10);
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 30)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', '--seconds must be an integer from 1 to 30');
  const result = await benchPath({
    seconds,
    wireguardGo: values['wireguard-go'],
    profileNicDir: values['profile-nic'],
    log: values.json ? undefined : (s) => process.stderr.write(`${s}\n`),
  });
  if (values.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    const m = result.mbps;
    process.stdout.write(
      `workload-to-workload throughput, iperf3 TCP, tunnel MTU ${TUNNEL_MTU}, ${seconds} s each, one run ` +
        `(wireguard-go ${result.wireguard_go_version}):\n` +
        `  tenguard same host    ${m['same-host'].toFixed(1).padStart(9)} Mbit/s\n` +
        `  tenguard cross host   ${m['cross-host'].toFixed(1).padStart(9)} Mbit/s` +
        `  ${result.cpu_s_per_gb.tenguard} CPU s/GB\n` +
        `  wireguard-go one hop  ${m['wireguard-go'].toFixed(1).padStart(9)} Mbit/s` +
        `  ${result.cpu_s_per_gb.wireguard_go} CPU s/GB\n` +
        `  ratio cross host / wireguard-go: ${result.ratio}\n`,
    );
  }
  return 0;
}
