// `tenguard lab up|status|exec|down`: the network-namespace lab from the command line.
// Arguments are checked before anything is touched; a bad one is a TgError and no change.
//
// Test hook: TENGUARD_LAB_CRASH_AFTER=<n> makes `lab up` kill itself with SIGKILL after n
// completed build steps (0 = right after the state file is written), as a crash would;
// `lab down --prefix P` must then remove what was left.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { parseArgs } from 'node:util';
import {
  buildLab,
  DEFAULT_PREFIX,
  destroyLab,
  LAB_LIMITS,
  LAB_MTU,
  LAB_MTU_RANGE,
  labStatus,
  liveNodeNs,
  loadLab,
  validateLabMtu,
  validatePrefix,
  validateSize,
} from '../lab/index.js';
import { renderBuilt, renderDestroyed, renderLabStatus } from '../lab/render.js';
import { TgError } from '../util/errors.js';
import { requireRoot } from '../util/exec.js';

export const LAB_USAGE = `usage:
  tenguard lab up --hosts H --tenants T --workloads W [--nics N] [--prefix P] [--mtu M] [--json]
  tenguard lab status [--prefix P] [--json]
  tenguard lab exec [--prefix P] <node> -- <command> [args...]
  tenguard lab down [--prefix P] [--json]

  H: 1..${LAB_LIMITS.hosts} hosts, T: 1..${LAB_LIMITS.tenants} tenants, W: 0..${LAB_LIMITS.workloads} workloads per tenant per host (0: an orchestrator makes them)
     (at most ${LAB_LIMITS.totalWorkloads} workloads in all)
  N: 1..${LAB_LIMITS.nics} NICs per host (default 1; NIC K > 1 is node hH-nicK)
  M: MTU of every link, fabric and host links, ${LAB_MTU_RANGE.min}..${LAB_MTU_RANGE.max} (default ${LAB_MTU})
  P: 'tg' then up to 5 of a-z0-9 (default ${DEFAULT_PREFIX}); the lab owns every namespace and link named P or P-*
  <node>: a workload (h1-t1-w1), a host (h1), a NIC (h1-nic, h1-nic2) or fabric`;

type OptionSpec = Record<string, { type: 'string' | 'boolean' }>;

function parse(
  args: string[],
  options: OptionSpec,
  allowPositionals: boolean,
): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args,
      options: { ...options, help: { type: 'boolean' } },
      strict: true,
      allowPositionals,
      tokens: true,
    });
  } catch (err) {
    throw new TgError('TG_ERR_USAGE', `${(err as Error).message}\n${LAB_USAGE}`, { cause: err });
  }
  const seen = new Set<string>();
  for (const t of parsed.tokens ?? []) {
    if (t.kind !== 'option') continue;
    if (seen.has(t.name)) throw new TgError('TG_ERR_USAGE', `option --${t.name} given more than once`);
    seen.add(t.name);
  }
  return {
    values: parsed.values as Record<string, string | boolean | undefined>,
    positionals: parsed.positionals,
  };
}

function prefixOf(values: Record<string, string | boolean | undefined>): string {
  const p = values.prefix;
  return validatePrefix(p === undefined ? DEFAULT_PREFIX : p);
}

/** `--hosts -1` would otherwise read as a missing value followed by an unknown option. */
function rejectNegativeCounts(args: string[]): void {
  for (let i = 0; i + 1 < args.length; i++) {
    if (/^--(hosts|tenants|workloads|nics)$/.test(args[i]) && /^-[0-9]/.test(args[i + 1])) {
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        `${args[i]} ${args[i + 1]} is not a positive whole number`,
      );
    }
  }
}

function count(values: Record<string, string | boolean | undefined>, name: string): number {
  const v = values[name];
  if (v === undefined) throw new TgError('TG_ERR_USAGE', `missing --${name}\n${LAB_USAGE}`);
  if (typeof v !== 'string' || !/^[0-9]{1,6}$/.test(v)) {
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `--${name} ${JSON.stringify(v)} is not a positive whole number`,
    );
  }
  return Number(v);
}

function crashHook(): number | undefined {
  const v = process.env.TENGUARD_LAB_CRASH_AFTER;
  if (v === undefined || v === '') return undefined;
  if (!/^[0-9]{1,4}$/.test(v)) {
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `TENGUARD_LAB_CRASH_AFTER ${JSON.stringify(v)} is not a step count`,
    );
  }
  return Number(v);
}

function print(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** Runs `fn` with an AbortSignal that SIGINT/SIGTERM trigger (instead of ending the process). */
async function withSignals<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const onSignal = (): void => ac.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await fn(ac.signal);
  } catch (err) {
    if (ac.signal.aborted && !(err instanceof TgError && err.code === 'TG_ERR_INTERRUPTED')) {
      throw new TgError('TG_ERR_INTERRUPTED', 'interrupted; what was begun was removed', { cause: err });
    }
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

async function up(args: string[]): Promise<number> {
  rejectNegativeCounts(args);
  const { values, positionals } = parse(
    args,
    {
      hosts: { type: 'string' },
      tenants: { type: 'string' },
      workloads: { type: 'string' },
      nics: { type: 'string' },
      prefix: { type: 'string' },
      mtu: { type: 'string' },
      json: { type: 'boolean' },
    },
    true,
  );
  if (values.help) return help();
  if (positionals.length > 0)
    throw new TgError('TG_ERR_USAGE', `unexpected argument '${positionals[0]}'\n${LAB_USAGE}`);
  const prefix = prefixOf(values);
  const mtu = values.mtu === undefined ? LAB_MTU : validateLabMtu(count(values, 'mtu'));
  const size = validateSize({
    hosts: count(values, 'hosts'),
    tenants: count(values, 'tenants'),
    workloads: count(values, 'workloads'),
    ...(values.nics !== undefined ? { nics: count(values, 'nics') } : {}),
  });
  const crashAfterSteps = crashHook();
  requireRoot('lab up');
  const json = values.json === true;
  const state = await withSignals((signal) =>
    buildLab({
      prefix,
      ...size,
      mtu,
      signal,
      crashAfterSteps,
      onProgress: json
        ? undefined
        : (p) => process.stderr.write(`  [${p.step}/${p.total}] ${p.name} (${Math.round(p.ms)} ms)\n`),
    }),
  );
  print(
    json
      ? JSON.stringify(state, null, 2)
      : `${renderBuilt(state)}\nshow it with: tenguard lab status --prefix ${prefix}`,
  );
  return 0;
}

async function status(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    { prefix: { type: 'string' }, json: { type: 'boolean' } },
    true,
  );
  if (values.help) return help();
  if (positionals.length > 0)
    throw new TgError('TG_ERR_USAGE', `unexpected argument '${positionals[0]}'\n${LAB_USAGE}`);
  const st = await labStatus(prefixOf(values));
  print(values.json === true ? JSON.stringify(st, null, 2) : renderLabStatus(st));
  return 0;
}

async function down(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    { prefix: { type: 'string' }, json: { type: 'boolean' } },
    true,
  );
  if (values.help) return help();
  if (positionals.length > 0)
    throw new TgError('TG_ERR_USAGE', `unexpected argument '${positionals[0]}'\n${LAB_USAGE}`);
  const prefix = prefixOf(values);
  requireRoot('lab down');
  const report = await destroyLab(prefix);
  print(values.json === true ? JSON.stringify(report, null, 2) : renderDestroyed(report));
  return 0;
}

async function exec(args: string[]): Promise<number> {
  const sep = args.indexOf('--');
  const own = sep < 0 ? args : args.slice(0, sep);
  const command = sep < 0 ? [] : args.slice(sep + 1);
  const { values, positionals } = parse(own, { prefix: { type: 'string' } }, true);
  if (values.help) return help();
  if (positionals.length !== 1) {
    throw new TgError('TG_ERR_USAGE', `lab exec takes one node name before '--'\n${LAB_USAGE}`);
  }
  if (command.length === 0)
    throw new TgError('TG_ERR_USAGE', `lab exec needs a command after '--'\n${LAB_USAGE}`);
  const prefix = prefixOf(values);
  requireRoot('lab exec');
  const ns = liveNodeNs(loadLab(prefix), positionals[0]);
  const child = spawn('ip', ['netns', 'exec', ns, ...command], { stdio: 'inherit' });
  // The command gets the signals; this process stays until it has ended.
  const forward = (sig: NodeJS.Signals): void => {
    child.kill(sig);
  };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.once('error', (err) =>
        reject(
          new TgError('TG_ERR_COMMAND_FAILED', `cannot run ip netns exec: ${err.message}`, { cause: err }),
        ),
      );
      child.once('exit', (code, sig) => resolve(code ?? 128 + (sig ? (constants.signals[sig] ?? 0) : 0)));
    });
  } finally {
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
  }
}

function help(): number {
  print(LAB_USAGE);
  return 0;
}

export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'up':
      return up(rest);
    case 'status':
      return status(rest);
    case 'exec':
      return exec(rest);
    case 'down':
      return down(rest);
    case '-h':
    case '--help':
    case 'help':
      return help();
    case undefined:
      throw new TgError('TG_ERR_USAGE', `missing subcommand\n${LAB_USAGE}`);
    default:
      throw new TgError('TG_ERR_USAGE', `unknown subcommand '${sub}'\n${LAB_USAGE}`);
  }
}
