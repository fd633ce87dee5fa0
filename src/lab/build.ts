// Building and tearing down a lab. A build is a list of steps; after each one the state
// file records it. A failing or interrupted build removes what it built. Teardown works
// from names alone (the ownership rule in plan.ts), so it also clears what a crashed build
// left behind, with or without a state file.
import { existsSync, mkdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { TgError } from '../util/errors.js';
import { logger } from '../util/log.js';
import { listNamespaces, removeNetnsResolvers } from '../util/netns.js';
import {
  deleteNamespaces,
  deleteRootLinks,
  ipBatch,
  killNamespaceProcesses,
  listRootLinks,
  namespaceLinkReadiness,
} from './netns.js';
import { mapLimit } from './parallel.js';
import {
  belongsToLab,
  type HostPlan,
  hostNics,
  type LabPlan,
  planInterfaces,
  planLab,
  stateFilePath,
  validatePrefix,
  validateSize,
} from './plan.js';
import {
  claimLabState,
  type LabState,
  newLabState,
  readLabState,
  removeLabState,
  writeLabState,
} from './state.js';

const log = logger('lab');

/** iproute2 processes in flight at once while building. */
const BUILD_CONCURRENCY = 4;

export interface BuildProgress {
  step: number;
  total: number;
  name: string;
  ms: number;
}

export interface BuildOptions {
  prefix: string;
  hosts: number;
  tenants: number;
  /** Workloads per tenant per host. */
  workloads: number;
  /** NICs per host (1..4, default 1). */
  nics?: number;
  /** MTU of every link: fabric and host links (default LAB_MTU, 1,500; 1,280 to 9,000). */
  mtu?: number;
  /** Aborting stops the build after the running step and removes what was built. */
  signal?: AbortSignal;
  onProgress?: (p: BuildProgress) => void;
  /**
   * Test hook: after this many completed steps (0 = right after the state file is
   * claimed) the process kills itself with SIGKILL, leaving a half-built lab as a crash
   * would. The CLI sets it from TENGUARD_LAB_CRASH_AFTER.
   */
  crashAfterSteps?: number;
}

export interface BuildStep {
  name: string;
  run: () => Promise<void>;
}

/** Waits for every promise to settle (nothing keeps running behind a rollback), then throws the first error. */
async function settleAll(work: Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(work);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

function fabricStep(plan: LabPlan): BuildStep {
  const f = plan.fabric;
  return {
    name: 'fabric',
    run: async () => {
      await ipBatch([`netns add ${f.ns}`]);
      await ipBatch(
        [
          'link set lo up',
          `link add ${f.bridge} type bridge stp_state 0`,
          `link set ${f.bridge} mtu ${plan.mtu} up`,
          `addr add ${f.bridgeV4}/24 dev ${f.bridge}`,
          `addr add ${f.bridgeV6}/64 dev ${f.bridge} nodad`,
        ],
        { ns: f.ns },
      );
    },
  };
}

function hostStep(plan: LabPlan, h: HostPlan): BuildStep {
  const mtu = plan.mtu;
  const nics = hostNics(h);
  return {
    name: `host ${h.name}`,
    run: async () => {
      // Both ends of each veth pair are created directly inside their namespaces, so no
      // lab interface ever appears in the root namespace.
      await ipBatch([
        `netns add ${h.hostNs}`,
        ...nics.flatMap((n) => [
          `netns add ${n.ns}`,
          `link add ${n.pcie.hostIf} netns ${h.hostNs} type veth peer name ${n.pcie.nicIf} netns ${n.ns}`,
          `link add ${n.fabric.nicIf} netns ${n.ns} type veth peer name ${n.fabric.bridgeIf} netns ${plan.fabric.ns}`,
        ]),
      ]);
      // Links go up before they get addresses: an IPv6 address added to a link that is
      // down is not usable until the link's next carrier event, which linkwatch may hold
      // back for up to a second.
      await settleAll([
        ipBatch(
          [
            'link set lo up',
            ...nics.flatMap(({ pcie }) => [
              `link set ${pcie.hostIf} mtu ${mtu} up`,
              `addr add ${pcie.hostV4}/30 dev ${pcie.hostIf}`,
              `addr add ${pcie.hostV6}/64 dev ${pcie.hostIf} nodad`,
            ]),
          ],
          { ns: h.hostNs },
        ),
        ...nics.map(({ ns, pcie, fabric }) =>
          ipBatch(
            [
              'link set lo up',
              `link set ${pcie.nicIf} mtu ${mtu} up`,
              `link set ${fabric.nicIf} mtu ${mtu} up`,
              `addr add ${pcie.nicV4}/30 dev ${pcie.nicIf}`,
              `addr add ${pcie.nicV6}/64 dev ${pcie.nicIf} nodad`,
              `addr add ${fabric.nicV4}/24 dev ${fabric.nicIf}`,
              `addr add ${fabric.nicV6}/64 dev ${fabric.nicIf} nodad`,
            ],
            { ns },
          ),
        ),
        ipBatch(
          nics.map((n) => `link set ${n.fabric.bridgeIf} mtu ${mtu} master ${plan.fabric.bridge} up`),
          { ns: plan.fabric.ns },
        ),
      ]);
    },
  };
}

function workloadsStep(plan: LabPlan, h: HostPlan): BuildStep {
  const namespaces = plan.workloads.filter((w) => w.host === h.name).map((w) => w.ns);
  return {
    name: `workloads ${h.name}`,
    run: async () => {
      await ipBatch(namespaces.map((ns) => `netns add ${ns}`));
      await mapLimit(namespaces, BUILD_CONCURRENCY, (ns) => ipBatch(['link set lo up'], { ns }));
    },
  };
}

/** How long the links may take to report themselves up before the build fails. */
const SETTLE_TIMEOUT_MS = 5000;

/**
 * Waits until every lab link is operationally up and every bridge port forwards. The
 * kernel applies a veth's carrier change through linkwatch, which may defer it by up to a
 * second; until then IPv6 on that link and the bridge port stay down. `ip link show dev`
 * (RTM_GETLINK) makes recent kernels apply a pending change at once, so the links are
 * asked for by name first, and the wait is only a fallback.
 */
function settleStep(plan: LabPlan): BuildStep {
  const byNs = new Map<string, string[]>();
  for (const i of planInterfaces(plan)) byNs.set(i.ns, [...(byNs.get(i.ns) ?? []), i.name]);
  const ready = async ([ns, names]: [string, string[]]): Promise<string[]> => {
    const links = await namespaceLinkReadiness(ns);
    return names.filter((n) => {
      const l = links.find((x) => x.name === n);
      return l?.operstate !== 'UP' || (l.bridgePortState !== undefined && l.bridgePortState !== 'forwarding');
    });
  };
  return {
    name: 'links up',
    run: async () => {
      const entries = [...byNs];
      await mapLimit(entries, BUILD_CONCURRENCY, ([ns, names]) =>
        ipBatch(
          names.map((n) => `link show dev ${n}`),
          { ns },
        ),
      );
      const deadline = Date.now() + SETTLE_TIMEOUT_MS;
      for (;;) {
        const pending = (await mapLimit(entries, BUILD_CONCURRENCY, ready)).flat();
        if (pending.length === 0) return;
        if (Date.now() > deadline) {
          throw new TgError(
            'TG_ERR_COMMAND_FAILED',
            `links not up after ${SETTLE_TIMEOUT_MS} ms: ${pending.join(', ')}`,
          );
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

/**
 * The build as an ordered list of steps: fabric, each host with its NIC, each host's
 * workloads, then the wait for every link to pass traffic.
 */
export function buildSteps(plan: LabPlan): BuildStep[] {
  return [
    fabricStep(plan),
    ...plan.hosts.map((h) => hostStep(plan, h)),
    ...plan.hosts.map((h) => workloadsStep(plan, h)),
    settleStep(plan),
  ];
}

export interface LabObjects {
  /** Namespaces that belong to the prefix. */
  namespaces: string[];
  /** Root-namespace links that belong to the prefix. */
  links: string[];
  stateFile: boolean;
}

/** Everything on this machine that belongs to the prefix. */
export async function findLabObjects(prefix: string): Promise<LabObjects> {
  validatePrefix(prefix);
  const namespaces = listNamespaces().filter((n) => belongsToLab(prefix, n));
  const links = (await listRootLinks()).filter((l) => belongsToLab(prefix, l));
  // A state file counts even when unreadable: it is still a claim on the prefix.
  return { namespaces, links, stateFile: existsSync(stateFilePath(prefix)) };
}

function existsError(prefix: string, found: LabObjects): TgError {
  const names = [...(found.stateFile ? [stateFilePath(prefix)] : []), ...found.namespaces, ...found.links];
  const shown = names.slice(0, 6).join(', ') + (names.length > 6 ? `, ... (${names.length} in all)` : '');
  return new TgError(
    'TG_ERR_LAB_EXISTS',
    `lab '${prefix}' already exists (${shown}); remove it with 'tenguard lab down --prefix ${prefix}'`,
  );
}

/**
 * Builds a lab and returns its state. Throws TG_ERR_INVALID_ARGUMENT for a bad prefix or
 * size and TG_ERR_LAB_EXISTS when anything with that prefix exists, in both cases before
 * changing anything. Any later failure or an abort removes what was built.
 */
export async function buildLab(opts: BuildOptions): Promise<LabState> {
  const prefix = validatePrefix(opts.prefix);
  const plan = planLab(prefix, validateSize(opts), opts.mtu);
  if (opts.signal?.aborted)
    throw new TgError('TG_ERR_INTERRUPTED', `building lab '${prefix}' was interrupted`);
  const found = await findLabObjects(prefix);
  if (found.stateFile || found.namespaces.length > 0 || found.links.length > 0)
    throw existsError(prefix, found);

  const steps = buildSteps(plan);
  const state = newLabState(plan, steps.length);
  const t0 = performance.now();
  claimLabState(state);
  try {
    if (opts.crashAfterSteps === 0) process.kill(process.pid, 'SIGKILL');
    for (const [i, step] of steps.entries()) {
      const ts = performance.now();
      await step.run();
      state.steps.done.push(step.name);
      writeLabState(state);
      const ms = performance.now() - ts;
      log.debug({ prefix, step: step.name, ms }, 'lab step done');
      opts.onProgress?.({ step: i + 1, total: steps.length, name: step.name, ms });
      if (opts.crashAfterSteps === i + 1) process.kill(process.pid, 'SIGKILL');
      if (opts.signal?.aborted) {
        throw new TgError(
          'TG_ERR_INTERRUPTED',
          `building lab '${prefix}' was interrupted after step '${step.name}'`,
        );
      }
    }
    mkdirSync(plan.runDir, { recursive: true, mode: 0o700 });
    state.status = 'ready';
    state.readyAt = new Date().toISOString();
    state.buildMs = Math.round(performance.now() - t0);
    writeLabState(state);
    log.debug({ prefix, ms: state.buildMs, steps: steps.length }, 'lab built');
    return state;
  } catch (err) {
    log.debug({ prefix, err: (err as Error).message }, 'lab build failed; removing what was built');
    let undone: string;
    try {
      await destroyLab(prefix);
      undone = 'what was built has been removed';
    } catch (cleanupErr) {
      undone = `removing what was built failed too (${(cleanupErr as Error).message}); run 'tenguard lab down --prefix ${prefix}'`;
    }
    const code = err instanceof TgError ? err.code : 'TG_ERR_INTERNAL';
    throw new TgError(code, `${(err as Error).message}; ${undone}`, { cause: err });
  }
}

export interface DestroyReport {
  prefix: string;
  namespaces: string[];
  links: string[];
  /** Pids that were signalled inside the lab's namespaces. */
  killed: number[];
  stateFile: boolean;
  ms: number;
}

/** Teardown attempts before giving up. */
const DESTROY_ROUNDS = 3;

/**
 * Removes everything that belongs to the prefix: processes inside its namespaces
 * (SIGTERM, then SIGKILL), the namespaces, root-namespace links, the state file and run
 * directory. Works without a state file and is idempotent. Throws TG_ERR_COMMAND_FAILED
 * if anything is still there afterwards.
 */
export async function destroyLab(prefix: string): Promise<DestroyReport> {
  validatePrefix(prefix);
  const t0 = performance.now();
  const namespaces = new Set<string>();
  const links = new Set<string>();
  const killed = new Set<number>();
  // A round can fail part-way (an `ip` process killed by a terminal's Ctrl-C, a process
  // that appeared meanwhile); the next round starts again from what is there.
  for (let round = 1; ; round++) {
    try {
      const found = await findLabObjects(prefix);
      for (const n of found.namespaces) namespaces.add(n);
      for (const l of found.links) links.add(l);
      for (const pid of await killNamespaceProcesses(found.namespaces)) killed.add(pid);
      await deleteNamespaces(found.namespaces);
      await deleteRootLinks(found.links);
      const left = await findLabObjects(prefix);
      if (left.namespaces.length === 0 && left.links.length === 0) break;
      throw new TgError(
        'TG_ERR_COMMAND_FAILED',
        `could not remove all of lab '${prefix}': left ${[...left.namespaces, ...left.links].join(', ')}`,
      );
    } catch (err) {
      if (round >= DESTROY_ROUNDS) throw err;
      log.debug({ prefix, round, err: (err as Error).message }, 'lab teardown round incomplete; again');
    }
  }
  // Resolver configurations the orchestrator wrote for namespaces of the lab.
  removeNetnsResolvers(prefix);
  // The record goes last, once nothing it describes is left.
  const stateFile = removeLabState(prefix);
  const ms = Math.round(performance.now() - t0);
  if (namespaces.size > 0 || links.size > 0 || stateFile) {
    log.debug({ prefix, namespaces: namespaces.size, links: links.size, ms }, 'lab removed');
  }
  return {
    prefix,
    namespaces: [...namespaces].sort(),
    links: [...links].sort(),
    killed: [...killed].sort((a, b) => a - b),
    stateFile,
    ms,
  };
}

/** The state of a lab; TG_ERR_LAB_NOT_FOUND when it has no state file. */
export function loadLab(prefix: string): LabState {
  const state = readLabState(validatePrefix(prefix));
  if (state === null) {
    throw new TgError('TG_ERR_LAB_NOT_FOUND', `no lab '${prefix}' (no state file ${stateFilePath(prefix)})`);
  }
  return state;
}
