// `tenguard cni`: the CNI plugin entry (the runtime's CNI_* environment and the network
// configuration on stdin; the result or error object on stdout), and `tenguard cni install`.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { orchestratorClient } from '../cni/client.js';
import { runCni } from '../cni/plugin.js';
import { CniError } from '../cni/spec.js';
import { defaultOrchestratorSocket } from '../orchestrator/client.js';
import { TgError } from '../util/errors.js';

/** With this set to 1 the plugin writes its stage times to stderr (one JSON line). */
export const CNI_TRACE_ENV = 'TENGUARD_CNI_TRACE';

export const CNI_USAGE = `usage:
  tenguard cni                      the CNI plugin (CNI_COMMAND etc. in the environment, config on stdin)
  tenguard cni install --tenant T --host H [--network NAME] [--bin-dir D] [--conf-dir D]
                       [--orchestrator SOCKET] [--cert F --key F --ca-bundle F] [--json]
                       [--exec-node PATH --exec-tenguard PATH]  (what the shim runs; default: this node and tenguard)
  Without --tenant the tenant is K8S_POD_NAMESPACE from CNI_ARGS (Kubernetes: tenant = namespace);
  pass --tenant-from-namespace to write such a configuration.
  With ${CNI_TRACE_ENV}=1 the plugin writes its stage times (ms since it started) to stderr.`;

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));

async function install(args: string[]): Promise<number> {
  // Loaded here only: the plugin's own path stays small (it is a process per runtime call).
  const { DEFAULT_BIN_DIR, DEFAULT_CONF_DIR, installCni } = await import('../cni/install.js');
  const { values: v } = parseArgs({
    args,
    options: {
      tenant: { type: 'string' },
      'tenant-from-namespace': { type: 'boolean' },
      host: { type: 'string' },
      network: { type: 'string' },
      'bin-dir': { type: 'string' },
      'conf-dir': { type: 'string' },
      orchestrator: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      'ca-bundle': { type: 'string' },
      json: { type: 'boolean' },
      'exec-node': { type: 'string' },
      'exec-tenguard': { type: 'string' },
    },
    strict: true,
  });
  if (v.host === undefined) throw new TgError('TG_ERR_USAGE', `--host is required\n${CNI_USAGE}`);
  if ((v.tenant === undefined) === (v['tenant-from-namespace'] !== true))
    throw new TgError('TG_ERR_USAGE', `give --tenant T or --tenant-from-namespace\n${CNI_USAGE}`);
  const tls = [v.cert, v.key, v['ca-bundle']];
  if (tls.some((x) => x !== undefined) && tls.some((x) => x === undefined))
    throw new TgError('TG_ERR_USAGE', `--cert, --key and --ca-bundle go together\n${CNI_USAGE}`);
  try {
    const r = installCni({
      binDir: v['bin-dir'] ?? DEFAULT_BIN_DIR,
      confDir: v['conf-dir'] ?? DEFAULT_CONF_DIR,
      network: v.network ?? (v.tenant !== undefined ? `tenguard-${v.tenant}` : 'tenguard'),
      tenant: v.tenant,
      host: v.host,
      orchestrator: v.orchestrator ?? defaultOrchestratorSocket(),
      mtls: v.cert !== undefined ? { cert: v.cert!, key: v.key!, caBundle: v['ca-bundle']! } : undefined,
      nodePath: v['exec-node'] ?? process.execPath,
      tenguardBin: v['exec-tenguard'] ?? BIN,
    });
    process.stdout.write(
      v.json === true
        ? `${JSON.stringify({ plugin: r.plugin, conflist: r.conflist, network: r.config.name })}\n`
        : `wrote ${r.plugin} and ${r.conflist} (network ${r.config.name})\n`,
    );
    return 0;
  } catch (err) {
    if (err instanceof CniError) throw new TgError('TG_ERR_INVALID_ARGUMENT', err.message);
    throw err;
  }
}

export async function run(args: string[]): Promise<number> {
  if (args[0] === 'install') return install(args.slice(1));
  if (args[0] === '--help' || args[0] === '-h') {
    process.stdout.write(`${CNI_USAGE}\n`);
    return 0;
  }
  if (args.length > 0) throw new TgError('TG_ERR_USAGE', CNI_USAGE);
  const loadedMs = performance.now();
  let stdin: Buffer;
  try {
    stdin = process.env.CNI_COMMAND === 'VERSION' && process.stdin.isTTY ? Buffer.alloc(0) : readFileSync(0);
  } catch {
    stdin = Buffer.alloc(0);
  }
  const trace = process.env[CNI_TRACE_ENV] === '1';
  let clientMs = 0;
  const out = await runCni(process.env, stdin, (cfg) => {
    const c = orchestratorClient(cfg);
    clientMs = performance.now();
    return c;
  });
  process.stdout.write(out.stdout === '' ? '' : `${out.stdout}\n`);
  if (trace) {
    // ms since the process started: node's bootstrap, this code loaded, the orchestrator
    // client made (stdin read, configuration parsed, mTLS files read), the command done.
    const r = (n: number): number => Math.round(n * 10) / 10;
    process.stderr.write(
      `${JSON.stringify({
        cniTrace: {
          bootstrap: r(performance.nodeTiming.bootstrapComplete),
          loaded: r(loadedMs),
          client: r(clientMs),
          done: r(performance.now()),
        },
      })}\n`,
    );
  }
  return out.exitCode;
}
