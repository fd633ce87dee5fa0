// `tenguard bench spinup`: spin-up to first delivered packet (spinup.ts) through a real
// `tenguard orchestrator` process on each store asked for, in one run over one two-host lab:
// SQLite (its data directory in the lab's run directory) and etcd (an N-member cluster on
// loopback ports, EtcdCluster). The stores take turns in `rounds` rounds of `count` workloads
// each (so that machine noise falls on both), and the result gives each store's median, p95
// and API-call median and the etcd/SQLite ratio of the medians. Each orchestrator runs with
// its own namespace prefix and is ended by pid after its round; every process, namespace and
// data directory is gone at the end, also after a failure.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { LabAgents } from '../lab/agents.js';
import { ETCD_DEFAULT_RAFT_TIMING, EtcdCluster } from '../lab/etcd.js';
import { buildLab, destroyLab, type LabState } from '../lab/index.js';
import { OrchestratorClient } from '../orchestrator/client.js';
import { TgError } from '../util/errors.js';
import { endChild } from '../util/exec.js';
import { apiRequest } from '../util/http-json.js';
import { benchSpinup, percentile } from './spinup.js';

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
export const SPINUP_LAB_PREFIX = 'tgspin';

type StoreKind = 'sqlite' | 'etcd';

export interface StoreSpinupResult {
  store: StoreKind;
  samples: number[];
  apiMs: number[];
  medianMs: number;
  p95Ms: number;
  apiMedianMs: number;
  /** Each spin-up step's median (the orchestrator's timings), the median over the rounds. */
  stepMedians: Record<string, number>;
  failures: string[];
}

export interface SpinupStoreReport {
  count: number;
  rounds: number;
  etcdMembers: number;
  stores: StoreSpinupResult[];
  /** etcd median / SQLite median (both measured in this run). */
  ratio?: number;
  apiRatio?: number;
}

async function startOrchestrator(
  socket: string,
  storeArgs: string[],
): Promise<{ proc: ChildProcess; log: () => string }> {
  let log = '';
  const proc = spawn(
    process.execPath,
    [BIN, 'orchestrator', '--api-socket', socket, '--insecure', '--reconcile-ms', '1000', ...storeArgs],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TENGUARD_LOG_LEVEL: 'warn' } },
  );
  proc.stderr?.on('data', (d: Buffer) => {
    if (log.length < 200_000) log += d.toString();
  });
  const end = Date.now() + 20_000;
  for (;;) {
    if (proc.exitCode !== null)
      throw new TgError('TG_ERR_COMMAND_FAILED', `orchestrator exited: ${log.slice(-400)}`);
    const h = await apiRequest(socket, 'GET', '/v1/health', undefined, { timeoutMs: 1000 }).catch(() => null);
    const leads = (h?.body as { replica?: { leader?: boolean } } | undefined)?.replica?.leader;
    if (h?.status === 200 && leads !== false) return { proc, log: () => log };
    if (Date.now() > end) {
      await endChild(proc, 'SIGKILL', 0);
      throw new TgError('TG_ERR_COMMAND_FAILED', `orchestrator not ready within 20 s: ${log.slice(-400)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One round on one store: an orchestrator, the lab's hosts, a tenant, an anchor, `count` spin-ups. */
async function round(
  lab: LabState,
  agents: LabAgents,
  store: StoreKind,
  storeArgs: string[],
  tag: string,
  count: number,
): Promise<{ samples: number[]; apiMs: number[]; stepMedians: Record<string, number>; failures: string[] }> {
  const socket = join(lab.runDir, `spin-${tag}.sock`);
  const o = await startOrchestrator(socket, storeArgs);
  const c = new OrchestratorClient(socket, 60_000);
  try {
    for (const h of lab.hosts)
      await c.registerHost({
        name: h.name,
        nicApi: h.nicApiSocket,
        vswitchApi: agents.vswitchds.get(h.name)!.socket,
        netnsPrefix: `${lab.prefix}-${h.name}-${tag}-`,
      });
    await c.createTenant({ name: 'spin', pool: '100.64.100.0/22' });
    await c.setPolicy('spin', {
      version: 1,
      tenant: 'spin',
      rules: [
        {
          id: 'out',
          action: 'allow',
          direction: 'egress',
          workloads: { labels: {} },
          peers: [{ labels: {} }],
        },
        {
          id: 'in',
          action: 'allow',
          direction: 'ingress',
          workloads: { labels: {} },
          peers: [{ labels: {} }],
        },
      ],
    });
    const anchor = await c.createWorkload({ tenant: 'spin', name: 'anchor', host: 'h1' });
    try {
      const r = await benchSpinup(c, {
        tenant: 'spin',
        hosts: lab.hosts.map((h) => h.name),
        count,
        anchor: { name: anchor.name, address: anchor.address },
        namePrefix: `${store}`,
      });
      return { samples: r.samples, apiMs: r.apiMs, stepMedians: r.stepMedians, failures: r.failures };
    } finally {
      await c.deleteWorkload('anchor').catch(() => undefined);
      for (const h of lab.hosts) await c.deregisterHost(h.name).catch(() => undefined);
    }
  } finally {
    await endChild(o.proc, 'SIGTERM', 10_000);
  }
}

export async function benchSpinupStores(opts: {
  stores: StoreKind[];
  count: number;
  rounds: number;
  etcdMembers: number;
  prefix?: string;
  log?: (s: string) => void;
}): Promise<SpinupStoreReport> {
  const prefix = opts.prefix ?? SPINUP_LAB_PREFIX;
  await destroyLab(prefix);
  const lab = await buildLab({ prefix, hosts: 2, tenants: 1, workloads: 0 });
  let agents: LabAgents | undefined;
  let cluster: EtcdCluster | undefined;
  const dataDir = mkdtempSync(join(lab.runDir, 'sqlite-'));
  const acc = new Map<
    StoreKind,
    { samples: number[]; apiMs: number[]; steps: Map<string, number[]>; failures: string[] }
  >();
  try {
    agents = await LabAgents.start(lab, { logLevel: 'warn' });
    // etcd's default raft timing (heartbeat 100 ms, election 1 s), as an operator's cluster
    // runs, not the lab's fast-failover timing (50/500 ms: twice the idle heartbeats); data
    // on disk with etcd's fsync per commit (SQLite here: WAL with synchronous=NORMAL, which
    // does not sync per commit, so etcd carries the stronger durability in this comparison).
    if (opts.stores.includes('etcd'))
      cluster = await EtcdCluster.start(`${prefix}-etcd`, opts.etcdMembers, {
        raft: ETCD_DEFAULT_RAFT_TIMING,
      });
    for (let r = 0; r < opts.rounds; r++) {
      // Fair both ways: the stores alternate which goes first (the first of a run meets a cold
      // lab: no workload namespaces yet, the vSwitch daemons' warm devices not used), and the
      // etcd members are stopped (SIGSTOP) while SQLite runs, so that an idle cluster does not
      // take CPU from it, as no etcd would run beside an SQLite installation.
      const order = r % 2 === 0 ? opts.stores : [...opts.stores].reverse();
      for (const store of order) {
        if (store === 'etcd') await cluster?.resume();
        else cluster?.pause();
        const tag = `${store[0]}${r}`;
        const args =
          store === 'sqlite'
            ? ['--data-dir', join(dataDir, tag)]
            : ['--store', `etcd:${cluster!.endpoints.join(',')}`, '--etcd-prefix', `spin-${tag}/`];
        const res = await round(lab, agents, store, args, tag, opts.count);
        opts.log?.(
          `round ${r + 1} ${store}: median ${percentile(
            [...res.samples].sort((a, b) => a - b),
            50,
          )} ms over ${res.samples.length}`,
        );
        const a = acc.get(store) ?? {
          samples: [] as number[],
          apiMs: [] as number[],
          steps: new Map<string, number[]>(),
          failures: [] as string[],
        };
        for (const [k, ms] of Object.entries(res.stepMedians))
          a.steps.set(k, [...(a.steps.get(k) ?? []), ms]);
        a.samples.push(...res.samples);
        a.apiMs.push(...res.apiMs);
        a.failures.push(...res.failures);
        acc.set(store, a);
      }
    }
  } finally {
    await agents?.stop().catch(() => undefined);
    await cluster?.stop().catch(() => undefined);
    rmSync(dataDir, { recursive: true, force: true });
    await destroyLab(prefix).catch(() => undefined);
  }
  const stores = opts.stores.map((store): StoreSpinupResult => {
    const a = acc.get(store)!;
    const sorted = [...a.samples].sort((x, y) => x - y);
    return {
      store,
      samples: a.samples,
      apiMs: a.apiMs,
      medianMs: percentile(sorted, 50),
      p95Ms: percentile(sorted, 95),
      apiMedianMs: percentile(
        [...a.apiMs].sort((x, y) => x - y),
        50,
      ),
      stepMedians: Object.fromEntries(
        [...a.steps].map(([k, v]) => [
          k,
          percentile(
            [...v].sort((x, y) => x - y),
            50,
          ),
        ]),
      ),
      failures: a.failures,
    };
  });
  const sq = stores.find((s) => s.store === 'sqlite');
  const et = stores.find((s) => s.store === 'etcd');
  return {
    count: opts.count,
    rounds: opts.rounds,
    etcdMembers: opts.etcdMembers,
    stores,
    ...(sq !== undefined && et !== undefined
      ? {
          ratio: Math.round((et.medianMs / sq.medianMs) * 100) / 100,
          apiRatio: Math.round((et.apiMedianMs / sq.apiMedianMs) * 100) / 100,
        }
      : {}),
  };
}

const USAGE = `usage: tenguard bench spinup [--store sqlite|etcd|both] [--count N] [--rounds R]
                             [--etcd-members M] [--prefix P] [--json]

Spin-up to first delivered packet through a \`tenguard orchestrator\` process on each store
(default both: SQLite and an M-member etcd cluster, default 3), in R rounds (default 2) of N
workloads (default 20) per store, the stores taking turns; prints each store's median, p95 and
API-call median and the etcd/SQLite ratio. Lab prefix P (default ${SPINUP_LAB_PREFIX}). Needs root.
`;

export async function run(args: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        store: { type: 'string' },
        count: { type: 'string' },
        rounds: { type: 'string' },
        'etcd-members': { type: 'string' },
        prefix: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new TgError('TG_ERR_USAGE', `${(err as Error).message}\n${USAGE}`);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const storeText = (values.store as string | undefined) ?? 'both';
  if (!['sqlite', 'etcd', 'both'].includes(storeText))
    throw new TgError('TG_ERR_INVALID_ARGUMENT', '--store must be sqlite, etcd or both');
  const int = (name: string, dflt: number, max: number): number => {
    const v = Number((values[name] as string | undefined) ?? dflt);
    if (!Number.isInteger(v) || v < 1 || v > max)
      throw new TgError('TG_ERR_INVALID_ARGUMENT', `--${name} must be an integer from 1 to ${max}`);
    return v;
  };
  const report = await benchSpinupStores({
    stores: storeText === 'both' ? ['sqlite', 'etcd'] : [storeText as StoreKind],
    count: int('count', 20, 500),
    rounds: int('rounds', 2, 10),
    etcdMembers: int('etcd-members', 3, 5),
    prefix: values.prefix as string | undefined,
    log: values.json ? undefined : (s) => process.stderr.write(`${s}\n`),
  });
  if (values.json) process.stdout.write(`${JSON.stringify(report)}\n`);
  else {
    const lines = [
      `spin-up to first packet, ${report.rounds} round(s) x ${report.count} workloads per store, one run:`,
    ];
    for (const s of report.stores)
      lines.push(
        `  ${s.store.padEnd(6)} median ${s.medianMs} ms, p95 ${s.p95Ms} ms, API call median ${s.apiMedianMs} ms` +
          `${s.store === 'etcd' ? ` (${report.etcdMembers} members)` : ''}${s.failures.length > 0 ? `, ${s.failures.length} failures` : ''}`,
      );
    if (report.ratio !== undefined)
      lines.push(`  ratio etcd / SQLite: ${report.ratio} (API call: ${report.apiRatio})`);
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  return report.stores.some((s) => s.failures.length > 0) ? 1 : 0;
}
