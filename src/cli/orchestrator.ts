// `tenguard orchestrator`: the control plane daemon. Desired state in a SQLite store in the
// data directory, REST+JSON on a Unix socket, a reconciliation pass every interval. Ends
// cleanly on SIGTERM/SIGINT (the agents and workloads keep running: a restarted
// orchestrator reloads the store and changes nothing that is right).
import { parseArgs } from 'node:util';
import { ORCHESTRATOR_MAX_BODY_BYTES, orchestratorRoutes } from '../orchestrator/api.js';
import { DEFAULT_RECONCILE_INTERVAL_MS, Orchestrator } from '../orchestrator/orchestrator.js';
import { SqliteStore } from '../orchestrator/sqlite-store.js';
import { TgError } from '../util/errors.js';
import { requireRoot } from '../util/exec.js';
import { JsonApiServer } from '../util/http-json.js';
import { logger } from '../util/log.js';

const USAGE = `usage: tenguard orchestrator --data-dir DIR --api-socket PATH [--reconcile-ms N]

Runs the orchestrator: tenants, hosts, workloads and policy in a SQLite store in DIR,
REST+JSON (OpenAPI at GET /openapi.json) on the Unix socket PATH, reconciliation every N ms
(default ${DEFAULT_RECONCILE_INTERVAL_MS}; 0: only on POST /v1/reconcile). Stops on SIGTERM/SIGINT.
`;

export async function run(args: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        'data-dir': { type: 'string' },
        'api-socket': { type: 'string' },
        'reconcile-ms': { type: 'string' },
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
  const dataDir = values['data-dir'] as string | undefined;
  const socket = values['api-socket'] as string | undefined;
  if (dataDir === undefined || socket === undefined)
    throw new TgError('TG_ERR_USAGE', `--data-dir and --api-socket are required\n${USAGE}`);
  if (!socket.startsWith('/'))
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `--api-socket must be an absolute path, not '${socket}'`);
  const msText = values['reconcile-ms'] as string | undefined;
  const interval = msText === undefined ? DEFAULT_RECONCILE_INTERVAL_MS : Number(msText);
  if (!Number.isInteger(interval) || interval < 0 || interval > 3_600_000)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', '--reconcile-ms must be an integer from 0 to 3600000');
  requireRoot('tenguard orchestrator');

  const log = logger('orchestrator');
  const store = SqliteStore.open(dataDir);
  const orch = new Orchestrator(store, log);
  let api: JsonApiServer;
  try {
    api = await JsonApiServer.listen({
      socketPath: socket,
      routes: orchestratorRoutes(orch),
      log,
      maxBodyBytes: ORCHESTRATOR_MAX_BODY_BYTES,
    });
  } catch (err) {
    await store.close();
    throw err;
  }
  orch.start(interval);
  log.info({ api: socket, dataDir, reconcileMs: interval }, 'orchestrator serving');
  const why = await new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  log.info({ why }, 'orchestrator stopping');
  await api.close();
  await orch.close();
  return 0;
}
