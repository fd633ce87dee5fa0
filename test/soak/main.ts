// `npm run soak`: a bounded churn run on a two-host lab driven by the orchestrator, with the
// vSwitch daemons in shared isolation (every device in the daemon, where a per-workload leak
// adds up). Two anchor workloads (one per host) ping each other the whole time; meanwhile
// workloads are created (always reusing a few names), reached by ping from the other host,
// migrated every third cycle under a ping stream, and deleted. Checked throughout and at the end:
// - after every step, each NIC's workload keys (kind workload-psk, by owner) are exactly the
//   orchestrator's live workloads on that host;
// - memory in use after a forced GC (heap, external memory, the C heap's bytes handed out), open
//   file descriptors and active handles/timers of both NIC agents, both vSwitch daemons and
//   the orchestrator (sampled through test/soak/probe.ts) grow less than 10% from the end of
//   the warm-up to the end of the run, and RSS less than 25% (see LEAK_MEASURES);
// - a workload deleted while its vSwitch daemon is down leaves no UAPI socket file once the
//   daemon is back and reconciled;
// - after teardown no namespace, link, socket file, state directory or process of the lab.
//
//   node dist/test/soak/main.js [--minutes N (20)] [--prefix P (tgsoak)] [--warmup-minutes N]
//                               [--sample-seconds N (15)] [--names N (3)] [--migrate-every N (3)]
//                               [--heap-snapshots DIR] [--json]
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pingStream } from '../../src/demo/traffic.js';
import { LabAgents } from '../../src/lab/agents.js';
import { buildLab, destroyLab, type LabState } from '../../src/lab/index.js';
import { runDirPath } from '../../src/lab/plan.js';
import { OrchestratorClient } from '../../src/orchestrator/client.js';
import type { WorkloadRecord } from '../../src/orchestrator/model.js';
import { UAPI_SOCKET_DIR } from '../../src/uapi/server.js';
import { ALLOW_WITHIN, OrchProcess } from '../helpers/orch.js';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '20' },
    prefix: { type: 'string', default: 'tgsoak' },
    'warmup-minutes': { type: 'string' },
    'sample-seconds': { type: 'string', default: '15' },
    names: { type: 'string', default: '3' },
    'migrate-every': { type: 'string', default: '3' },
    'heap-snapshots': { type: 'string' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
  strict: true,
});
if (values.help) {
  console.log(
    'usage: npm run soak -- [--minutes N (20)] [--prefix P (tgsoak)] [--warmup-minutes N] [--sample-seconds N (15)]\n' +
      '                       [--names N (3)] [--migrate-every N (3, 0: never)] [--heap-snapshots DIR] [--json]',
  );
  process.exit(0);
}
const minutes = Number(values.minutes);
const sampleS = Number(values['sample-seconds']);
const nameCount = Number(values.names);
const migrateEvery = Number(values['migrate-every']);
if (
  !(Number.isInteger(nameCount) && nameCount >= 1 && nameCount <= 20) ||
  !(Number.isInteger(migrateEvery) && migrateEvery >= 0)
) {
  console.error('soak: --names takes 1..20, --migrate-every N >= 0 (0: never)');
  process.exit(2);
}
if (!(minutes > 0 && minutes <= 24 * 60) || !(sampleS >= 1)) {
  console.error('soak: --minutes takes 0 < N <= 1440, --sample-seconds N >= 1');
  process.exit(2);
}
// Warm-up: a fifth of the run, at least one minute (at most half of a short run).
const warmupMin = Number(values['warmup-minutes'] ?? Math.min(Math.max(1, minutes / 5), minutes / 2));
const prefix = values.prefix!;
if (process.getuid?.() !== 0) {
  console.error('soak: needs root (network namespaces)');
  process.exit(2);
}

const PROBE = fileURLToPath(new URL('./probe.js', import.meta.url));
const probeDir = mkdtempSync(join(tmpdir(), `${prefix}-probe-`));
const dataDir = mkdtempSync(join(tmpdir(), `${prefix}-data-`));
// Every process the lab starts from here loads the probe; the vSwitch daemons run shared.
process.env.TG_SOAK_PROBE_DIR = probeDir;
process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --import=${PROBE}`.trim();
process.env.TENGUARD_VSWITCH_ISOLATION = 'shared';
process.env.TENGUARD_LOG_LEVEL ??= 'warn';

const say = (line: string): void => {
  console.error(`soak ${new Date().toISOString().slice(11, 19)} ${line}`);
};

interface Sample {
  at: number;
  rss: number;
  heapUsed: number;
  /** The V8 heap's committed pages (part of RSS; grows and shrinks with the collector's sizing). */
  heapTotal: number;
  /** The C heap in use (mallinfo2), where the process has the addon loaded. */
  mallocInUse?: number;
  /** Memory of C++ objects bound to JS ones (Buffers, the addon's arenas): RSS beyond the heap. */
  external: number;
  fds: number;
  handles: number;
  timers: number;
  resources: Record<string, number>;
  /** Only in samples taken with a forced collection (end of warm-up, end of run). */
  heapAfterGc?: number;
  rssAfterGc?: number;
  externalAfterGc?: number;
  /**
   * The C heap in use after the collection. Before one, mallocInUse also counts the backing
   * stores of Buffers and ArrayBuffers that are garbage but not yet collected (V8 frees them
   * with their objects, and a large heap is collected rarely), so it rises under churn with
   * nothing leaked; a leak is what stays after the collection.
   */
  mallocInUseAfterGc?: number;
}

interface Watched {
  name: string;
  pid: () => number | undefined;
  samples: Sample[];
}

const checks: { name: string; ok: boolean; detail: string }[] = [];
function check(name: string, ok: boolean, detail: string): void {
  checks.push({ name, ok, detail });
  say(`${ok ? 'PASS' : 'FAIL'}  ${name}: ${detail}`);
}

async function probe(pid: number, request?: { gc: boolean; snapshot?: string }): Promise<Sample | null> {
  const file = join(probeDir, `${pid}.json`);
  rmSync(file, { force: true });
  if (request !== undefined) writeFileSync(join(probeDir, `${pid}.request`), JSON.stringify(request));
  try {
    process.kill(pid, 'SIGUSR2');
  } catch {
    return null;
  }
  const end = Date.now() + (request?.snapshot === undefined ? 10_000 : 120_000);
  while (Date.now() < end) {
    if (existsSync(file)) {
      const j = JSON.parse(readFileSync(file, 'utf8')) as {
        rss: number;
        heapUsed: number;
        heapTotal: number;
        mallocInUse?: number;
        external: number;
        fds: number;
        resources: Record<string, number>;
        heapAfterGc?: number;
        rssAfterGc?: number;
        externalAfterGc?: number;
        mallocInUseAfterGc?: number;
      };
      const all = Object.values(j.resources).reduce((a, b) => a + b, 0);
      return {
        at: Date.now(),
        rss: j.rss,
        heapUsed: j.heapUsed,
        heapTotal: j.heapTotal,
        mallocInUse: j.mallocInUse,
        external: j.external,
        fds: j.fds,
        handles: all,
        timers: j.resources.Timeout ?? 0,
        resources: j.resources,
        heapAfterGc: j.heapAfterGc,
        rssAfterGc: j.rssAfterGc,
        externalAfterGc: j.externalAfterGc,
        mallocInUseAfterGc: j.mallocInUseAfterGc,
      };
    }
    await sleep(50);
  }
  return null;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function pingOnce(ns: string, target: string): boolean {
  try {
    execFileSync('ip', ['netns', 'exec', ns, 'ping', '-n', '-c', '1', '-W', '1', target], {
      stdio: 'ignore',
    });
    return true;
  } catch {
    return false;
  }
}

async function reachable(ns: string, target: string, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (pingOnce(ns, target)) return true;
    await sleep(100);
  }
  return false;
}

/** Each NIC's workload-key owners against the orchestrator's live workloads per host. */
async function inventoryMismatch(client: OrchestratorClient, hosts: string[]): Promise<string | null> {
  const live = (await client.listWorkloads()).filter((w) => w.state !== 'deleting');
  for (const h of hosts) {
    const keys = (await client.keys(h)).keys.filter((k) => k.kind === 'workload-psk');
    const have = keys.map((k) => String(k.workload)).sort();
    const want = live
      .filter((w) => w.host === h)
      .map((w) => w.name)
      .sort();
    if (have.join(',') !== want.join(','))
      return `${h}: NIC holds PSKs of [${have.join(' ')}], orchestrator has [${want.join(' ')}]`;
  }
  return null;
}

/** UAPI socket files of the lab's devices, and those of them nobody listens on. */
async function uapiSockets(): Promise<{ all: string[]; dead: string[] }> {
  let names: string[] = [];
  try {
    names = readdirSync(UAPI_SOCKET_DIR).filter((f) => f.startsWith(`${prefix}-`) && f.endsWith('.sock'));
  } catch {
    names = [];
  }
  const dead: string[] = [];
  for (const n of names) {
    const alive = await new Promise<boolean>((resolve) => {
      const s = connect(join(UAPI_SOCKET_DIR, n));
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (!alive) dead.push(n);
  }
  return { all: names, dead };
}

function leftovers(pids: number[]): string[] {
  const out: string[] = [];
  const ns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n === prefix || n.startsWith(`${prefix}-`));
  if (ns.length > 0) out.push(`namespaces ${ns.join(' ')}`);
  const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(': ')[1]?.split('@')[0] ?? '')
    .filter((n) => n === prefix || n.startsWith(`${prefix}-`));
  if (links.length > 0) out.push(`links ${links.join(' ')}`);
  let socks: string[] = [];
  try {
    socks = readdirSync(UAPI_SOCKET_DIR).filter((f) => f.startsWith(`${prefix}-`));
  } catch {
    socks = [];
  }
  if (socks.length > 0) out.push(`socket files ${socks.join(' ')}`);
  if (existsSync(runDirPath(prefix))) out.push(`run directory ${runDirPath(prefix)}`);
  const alive = pids.filter((p) => existsSync(`/proc/${p}`));
  if (alive.length > 0) out.push(`processes ${alive.join(' ')}`);
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (Number(p) !== process.pid && cmd.includes(`${prefix}-`) && cmd.includes('tenguard'))
        out.push(`process ${p} (${cmd.slice(0, 80)})`);
    } catch {
      // gone
    }
  }
  return out;
}

/** A measure after a forced collection, at the end of the warm-up and at the end. */
function gcGrowth(w: Watched, key: 'heapAfterGc' | 'externalAfterGc' | 'mallocInUseAfterGc') {
  const gcd = w.samples.filter((s) => s[key] !== undefined);
  if (gcd.length < 2) return null;
  const start = gcd[0][key]!;
  const end = gcd[gcd.length - 1][key]!;
  return { start, end, ratio: end / start };
}

function growth(w: Watched, warmupEnd: number, key: 'rss' | 'heapUsed' | 'fds' | 'handles' | 'timers') {
  const after = w.samples.filter((s) => s.at >= warmupEnd && s[key] !== undefined);
  if (after.length < 2) return null;
  // The median of the first three samples after the warm-up against that of the last three:
  // one sample can catch a collection just done or a request in flight.
  const median = (xs: Sample[]): number => {
    const v = xs.map((s) => s[key]!).sort((a, b) => a - b);
    return v[Math.floor(v.length / 2)];
  };
  const start = median(after.slice(0, 3));
  const end = median(after.slice(-3));
  return { start, end, ratio: start === 0 ? (end === 0 ? 1 : Number.POSITIVE_INFINITY) : end / start };
}

// What a leak grows: memory in use (the JS heap and the memory bound to JS objects after a
// forced collection, the C heap's bytes handed out after it) and handles. RSS also moves with what the
// allocators keep: V8 sizes its committed heap by its own policy and glibc keeps freed pages
// in its arenas until a trim; in 10-minute runs a vSwitch daemon's RSS rose 12-15% within
// minutes and fell back to where it began as V8 gave pages back, while all of the measures
// below stayed flat. So RSS has a wider bound, wide enough for that and narrow enough to
// catch a leak outside both heaps.
const LEAK_MEASURES = [
  'rss',
  'heapAfterGc',
  'externalAfterGc',
  'mallocInUseAfterGc',
  'fds',
  'handles',
  'timers',
] as const;
const LEAK_GROWTH = 0.1;
const RSS_GROWTH = 0.25;

async function main(): Promise<number> {
  const t0 = Date.now();
  const deadline = t0 + minutes * 60_000;
  const warmupEnd = t0 + warmupMin * 60_000;
  let lab: LabState | undefined;
  let agents: LabAgents | undefined;
  const orch = new OrchProcess(dataDir, `${runDirPath(prefix)}/orch.sock`);
  const started: number[] = [];
  let stream: ReturnType<typeof pingStream> | undefined;
  let cycles = 0;
  let migrations = 0;
  let inventoryChecks = 0;
  let samplesTaken = 0;
  const watched: Watched[] = [];
  try {
    say(`lab ${prefix}: 2 hosts, shared vSwitch daemons, ${minutes} min (warm-up ${warmupMin} min)`);
    // A lab of this prefix left by an interrupted soak goes first (the prefix is the soak's).
    await destroyLab(prefix).catch(() => undefined);
    lab = await buildLab({ prefix, hosts: 2, tenants: 1, workloads: 0 });
    agents = await LabAgents.start(lab, { logLevel: process.env.TENGUARD_LOG_LEVEL });
    await orch.start();
    const client = new OrchestratorClient(orch.socket);
    const hosts = lab.hosts.map((h) => h.name);
    for (const h of lab.hosts)
      await client.registerHost({
        name: h.name,
        nicApi: h.nicApiSocket,
        vswitchApi: agents.vswitchds.get(h.name)!.socket,
        netnsPrefix: `${prefix}-${h.name}-o-`,
      });
    for (const h of hosts) {
      const a = agents;
      watched.push({ name: `nic ${h}`, pid: () => a.nics.get(h)?.pid, samples: [] });
      watched.push({ name: `vswitchd ${h}`, pid: () => a.vswitchds.get(h)?.pid, samples: [] });
    }
    watched.push({ name: 'orchestrator', pid: () => orch.proc?.pid ?? undefined, samples: [] });
    for (const w of watched) {
      const p = w.pid();
      if (p !== undefined) started.push(p);
    }
    await client.createTenant({ name: 'acme', pool: '100.64.7.0/24' });
    await client.setPolicy('acme', ALLOW_WITHIN('acme'));
    const anchor1 = await client.createWorkload({ tenant: 'acme', name: 'anchor1', host: hosts[0] });
    const anchor2 = await client.createWorkload({ tenant: 'acme', name: 'anchor2', host: hosts[1] });
    const anchors: Record<string, WorkloadRecord> = { [hosts[0]]: anchor1, [hosts[1]]: anchor2 };
    check(
      'anchors reach each other',
      await reachable(anchor1.netns, anchor2.address, 15_000),
      `${anchor1.name} -> ${anchor2.name}`,
    );
    stream = pingStream(anchor1.netns, anchor2.address, 200, minutes * 60 + 120);

    let nextSample = 0;
    let inventoryFailures = 0;
    const inventory = async (when: string): Promise<void> => {
      inventoryChecks++;
      const m = await inventoryMismatch(client, hosts);
      if (m !== null) {
        inventoryFailures++;
        if (inventoryFailures <= 5) say(`inventory mismatch ${when}: ${m}`);
      }
    };
    const snapDir = values['heap-snapshots'];
    if (snapDir !== undefined) {
      mkdirSync(snapDir, { recursive: true });
      // Writing a snapshot roughly doubles a process's RSS for the rest of its life.
      say(
        'heap snapshots requested: RSS after the warm-up is not comparable (use them to find growers, not to measure)',
      );
    }
    let warmCollected = false;
    const sample = async (final = false): Promise<void> => {
      // A forced collection (and with --heap-snapshots a snapshot) at the end of the warm-up
      // and at the end: the heap after it is what a leak shows in; the other samples leave
      // the processes alone.
      const collect = final || (!warmCollected && Date.now() >= warmupEnd);
      const tag = final ? 'end' : 'warm';
      if (collect && !final) warmCollected = true;
      for (const w of watched) {
        const pid = w.pid();
        const request = collect
          ? {
              gc: true,
              snapshot:
                snapDir === undefined
                  ? undefined
                  : join(snapDir, `${w.name.replace(/ /g, '-')}-${tag}.heapsnapshot`),
            }
          : undefined;
        const s = pid === undefined ? null : await probe(pid, request);
        if (s !== null) w.samples.push(s);
      }
      samplesTaken++;
      const line = watched
        .map((w) => {
          const s = w.samples.at(-1);
          return s
            ? `${w.name} ${(s.rss / 1e6).toFixed(1)}MB/${(s.heapUsed / 1e6).toFixed(1)}MB/h${(s.heapTotal / 1e6).toFixed(1)}MB/x${(s.external / 1e6).toFixed(1)}MB${s.mallocInUse === undefined ? '' : `/c${(s.mallocInUse / 1e6).toFixed(1)}MB`}${s.heapAfterGc === undefined ? '' : ` (gc ${(s.heapAfterGc / 1e6).toFixed(1)}MB${s.mallocInUseAfterGc === undefined ? '' : ` c${(s.mallocInUseAfterGc / 1e6).toFixed(1)}MB`} rss ${((s.rssAfterGc ?? 0) / 1e6).toFixed(1)}MB)`} fd${s.fds} h${s.handles} t${s.timers}`
            : `${w.name} -`;
        })
        .join('; ');
      say(`cycle ${cycles}: ${line}`);
    };

    const names = Array.from({ length: nameCount }, (_, i) => `churn-${i}`);
    let unreachable = 0;
    let migrationGapMax = 0;
    while (Date.now() < deadline) {
      if (Date.now() >= nextSample) {
        await sample();
        nextSample = Date.now() + sampleS * 1000;
      }
      const name = names[cycles % names.length];
      const host = hosts[cycles % 2];
      const other = hosts[(cycles + 1) % 2];
      const w = await client.createWorkload({ tenant: 'acme', name, host });
      await inventory(`after creating ${name} on ${host}`);
      if (!(await reachable(anchors[other].netns, w.address, 10_000))) unreachable++;
      if (migrateEvery > 0 && cycles % migrateEvery === migrateEvery - 1) {
        const s = pingStream(anchors[other].netns, w.address, 50, 60);
        await reachable(anchors[other].netns, w.address, 5000);
        await client.migrateWorkload(name, other);
        migrations++;
        await inventory(`after migrating ${name} to ${other}`);
        await reachable(anchors[host].netns, w.address, 10_000);
        const r = await s.stop();
        migrationGapMax = Math.max(migrationGapMax, r.longestSilenceMs);
      }
      await client.deleteWorkload(name);
      await inventory(`after deleting ${name}`);
      cycles++;
    }
    await sample(true);
    const anchorStream = await stream.stop();
    stream = undefined;

    // Results of the churn.
    check(
      'NIC key inventories equal the live workloads after every step',
      inventoryFailures === 0,
      `${inventoryChecks} checks, ${inventoryFailures} mismatches`,
    );
    check(
      'every churned workload was reached from the other host',
      unreachable === 0,
      `${cycles} cycles, ${unreachable} unreachable`,
    );
    check(
      'the anchor ping stream ran through the churn',
      anchorStream.received > 0 && anchorStream.lost <= Math.max(3, anchorStream.sent / 100),
      `${anchorStream.sent} sent, ${anchorStream.received} replies, ${anchorStream.lost} lost, longest silence ${Math.round(anchorStream.longestSilenceMs)} ms`,
    );
    const report: Record<string, unknown>[] = [];
    for (const w of watched) {
      const rows: Record<string, unknown> = { process: w.name, samples: w.samples.length };
      const bad: string[] = [];
      for (const key of LEAK_MEASURES) {
        if (key === 'mallocInUseAfterGc' && w.samples.every((s) => s.mallocInUseAfterGc === undefined))
          continue;
        const g =
          key === 'heapAfterGc' || key === 'externalAfterGc' || key === 'mallocInUseAfterGc'
            ? gcGrowth(w, key)
            : growth(w, warmupEnd, key);
        if (g === null) {
          bad.push(`${key}: too few samples after warm-up`);
          continue;
        }
        rows[key] = g;
        // Counts that are small integers may step by one without a leak (a request in flight);
        // byte measures get 1 MB besides the ratio (a few buffers in flight on a small base).
        const slack = key === 'fds' || key === 'handles' || key === 'timers' ? 2 : key === 'rss' ? 0 : 1e6;
        const limit = key === 'rss' ? RSS_GROWTH : LEAK_GROWTH;
        if (g.end > g.start * (1 + limit) + slack) bad.push(`${key} ${g.start} -> ${g.end}`);
      }
      report.push(rows);
      const fmt = (k: string, scale = 1, unit = ''): string => {
        const g = rows[k] as { start: number; end: number } | undefined;
        return g
          ? `${k} ${(g.start / scale).toFixed(scale === 1 ? 0 : 1)}${unit} -> ${(g.end / scale).toFixed(scale === 1 ? 0 : 1)}${unit}`
          : `${k} -`;
      };
      check(
        `${w.name} stays flat after warm-up (memory in use and handles < 10%, RSS < 25%)`,
        bad.length === 0,
        [
          fmt('rss', 1e6, ' MB'),
          fmt('heapAfterGc', 1e6, ' MB'),
          fmt('externalAfterGc', 1e6, ' MB'),
          fmt('mallocInUseAfterGc', 1e6, ' MB'),
          fmt('fds'),
          fmt('handles'),
          fmt('timers'),
        ].join(', ') + (bad.length > 0 ? `; grew: ${bad.join(', ')}` : ''),
      );
    }

    // A workload deleted while its vSwitch daemon is down.
    const h2 = hosts[1];
    const orphan = await client.createWorkload({ tenant: 'acme', name: 'orphan', host: h2 });
    await agents.stopVswitchd(h2, 'SIGKILL');
    const deleted = await client.deleteWorkload('orphan').then(
      () => 'accepted',
      (e: Error) => `refused (${e.message.slice(0, 80)})`,
    );
    await agents.startVswitchd(h2);
    const vpid = agents.vswitchds.get(h2)?.pid;
    if (vpid !== undefined) started.push(vpid);
    await client.reconcile().catch(() => undefined);
    if ((await client.listWorkloads()).some((w) => w.name === 'orphan'))
      await client.deleteWorkload('orphan').catch(() => undefined);
    await client.reconcile().catch(() => undefined);
    const socks = await uapiSockets();
    const orphanGone = !socks.all.some((s) => s.includes(orphan.name)) && socks.dead.length === 0;
    check(
      'a workload deleted while its vSwitch daemon was down leaves no UAPI socket file',
      orphanGone,
      `delete while down: ${deleted}; after restart and reconcile: ${socks.all.length} socket files, ${socks.dead.length} without a listener${socks.dead.length > 0 ? ` (${socks.dead.join(' ')})` : ''}`,
    );
    check(
      'the anchor on the restarted host is reachable again',
      await reachable(anchor1.netns, anchor2.address, 20_000),
      `${anchor1.name} -> ${anchor2.name}`,
    );
    const m = await inventoryMismatch(client, hosts);
    check('key inventories equal the live workloads after the restart', m === null, m ?? 'equal');

    if (values.json)
      console.log(
        JSON.stringify(
          {
            minutes,
            warmupMinutes: warmupMin,
            cycles,
            migrations,
            inventoryChecks,
            samples: samplesTaken,
            migrationGapMaxMs: migrationGapMax,
            anchorStream,
            processes: report,
          },
          null,
          2,
        ),
      );
    say(
      `${cycles} cycles (${migrations} migrations), ${inventoryChecks} inventory checks, ${samplesTaken} samples`,
    );
  } catch (err) {
    check('soak ran to the end', false, (err as Error).stack ?? String(err));
  } finally {
    if (stream) await stream.stop().catch(() => undefined);
    await orch.stop().catch(() => undefined);
    await agents?.stop().catch(() => undefined);
    await destroyLab(prefix).catch(() => undefined);
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(probeDir, { recursive: true, force: true });
  }
  await sleep(500);
  const left = leftovers(started);
  check(
    'teardown leaves no namespace, link, socket file, run directory or process',
    left.length === 0,
    left.join('; ') || 'nothing left',
  );
  const failed = checks.filter((c) => !c.ok).length;
  console.log(`soak: ${((Date.now() - t0) / 60_000).toFixed(1)} min, ${cycles} cycles`);
  console.log(`${checks.length - failed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

process.exitCode = await main();
