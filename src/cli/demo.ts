// `tenguard demo` (npm run demo): the whole system in one run on one machine, with real
// traffic, then everything removed again (also on failure and on Ctrl-C). The steps live in
// src/demo/; this module parses options, handles signals and sets the exit code: 0 when every
// check passed, 1 when one failed, 130 when interrupted.
import { parseArgs } from 'node:util';
import { startOrchestratorControl } from '../demo/orchestrator-control.js';
import { DemoReporter } from '../demo/report.js';
import { runDemo, totalSteps } from '../demo/run.js';
import { validatePrefix } from '../lab/index.js';
import { TgError } from '../util/errors.js';
import { requireRoot } from '../util/exec.js';

const USAGE = `usage: tenguard demo [--json] [--prefix P] [--iperf-seconds S] [--insecure] [--keep]
                     [--store sqlite|etcd] [--nics N]

  Builds a lab of 2 hosts, starts a NIC agent and a vSwitch daemon per host and the
  orchestrator, creates 2 tenants and 6 workloads through the orchestrator's API, and shows
  with real traffic: same-tenant flows (same host, cross host), cross-tenant flows blocked,
  captures free of plaintext, per-NIC key inventories, a live migration with its gap, a
  spin-down wiping keys, a throughput figure, and the orchestrator's web console. Then it
  removes everything, and ends by printing the console's address.
  --prefix P          lab prefix (default tgdemo); an earlier run's leftovers are removed first
  --iperf-seconds S   length of the throughput run, 0..30 (default 3; 0 skips it)
  --insecure          run every API as plain HTTP instead of mTLS (logged as a warning; by
                      default the lab gets its own CA and every service a SPIFFE identity)
  --keep              after the checks, keep the lab up and print the web console's address
                      with a one-time login link; Ctrl-C then removes everything
  --store etcd        the orchestrator on a 3-member etcd cluster (loopback ports, data in the
                      lab's run directory) as 2 replicas; after the migration the leading one
                      is killed and the demo checks that the other takes over (default sqlite:
                      one orchestrator on SQLite)
  --nics N            NICs per host, 1..4 (default 1); with 2 or more each workload is placed on
                      one of its host's NICs, and a step kills the agent of one NIC under a ping
                      stream and checks that the host's other NIC carries its workloads (new
                      keys, traffic back within 3 s)
  --json              print one JSON object {control, policy, security, checks, figures, pids,
                      notShown, console}; progress goes to stderr`;

interface Options {
  json: boolean;
  prefix: string;
  iperfSeconds: number;
  insecure: boolean;
  keep: boolean;
  store: 'sqlite' | 'etcd';
  nics: number;
  help: boolean;
}

function parse(args: string[]): Options {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args,
      options: {
        json: { type: 'boolean' },
        prefix: { type: 'string' },
        'iperf-seconds': { type: 'string' },
        insecure: { type: 'boolean' },
        keep: { type: 'boolean' },
        store: { type: 'string' },
        nics: { type: 'string' },
        help: { type: 'boolean' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    throw new TgError('TG_ERR_USAGE', `${(err as Error).message}\n${USAGE}`, { cause: err });
  }
  const secondsText = (values['iperf-seconds'] as string | undefined) ?? '3';
  if (!/^[0-9]{1,2}$/.test(secondsText) || Number(secondsText) > 30)
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `--iperf-seconds ${JSON.stringify(secondsText)} must be 0..30`,
    );
  const store = (values.store as string | undefined) ?? 'sqlite';
  if (store !== 'sqlite' && store !== 'etcd')
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `--store ${JSON.stringify(store)} must be sqlite or etcd`);
  const nicsText = (values.nics as string | undefined) ?? '1';
  if (!/^[1-4]$/.test(nicsText))
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `--nics ${JSON.stringify(nicsText)} must be 1..4`);
  return {
    json: values.json === true,
    store,
    nics: Number(nicsText),
    prefix: validatePrefix((values.prefix as string | undefined) ?? 'tgdemo'),
    iperfSeconds: Number(secondsText),
    insecure: values.insecure === true,
    keep: values.keep === true,
    help: values.help === true,
  };
}

export async function run(args: string[]): Promise<number> {
  const opts = parse(args);
  if (opts.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  requireRoot('demo');
  const report = new DemoReporter(opts.json, totalSteps(opts.nics));
  report.say(`tenguard demo: per-tenant encryption end to end, lab prefix ${opts.prefix}`);

  const ac = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    if (signals === 1) {
      report.say(`\n${sig}: stopping; everything the demo started is removed before it exits`);
      ac.abort();
    } else report.say('still tearing down, please wait');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let kept = false;
  try {
    ({ kept } = await runDemo(opts, report, ac.signal, (lab, agents) =>
      startOrchestratorControl(lab, agents, { store: opts.store }),
    ));
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  report.finish();
  const url = report.result.console;
  if (url !== null && !kept)
    report.say(
      `\nweb console: ${url} (served while the lab was up; \`tenguard demo --keep\` keeps it up to look around)`,
    );
  else if (url !== null) report.say(`\nweb console: ${url} (stopped with the lab)`);
  // Ctrl-C while the lab is kept up is how a --keep run ends, not an interruption.
  if (ac.signal.aborted && !kept) return 130;
  return report.passed() ? 0 : 1;
}
