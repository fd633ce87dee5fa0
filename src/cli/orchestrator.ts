// `tenguard orchestrator`: the control plane daemon. Desired state in a SQLite store in the
// data directory, REST+JSON on a Unix socket, a reconciliation pass every interval. Ends
// cleanly on SIGTERM/SIGINT (the agents and workloads keep running: a restarted
// orchestrator reloads the store and changes nothing that is right).
import { readFileSync } from 'node:fs';
import { consoleApiRoutes, parseListen, WebConsole } from '../console/server.js';
import { wipeTlsKey } from '../identity/mtls.js';
import {
  INSECURE_WARNING,
  MTLS_ARG_OPTIONS,
  MTLS_USAGE,
  mtlsConfigFromArgs,
  ServiceMtls,
} from '../identity/service-mtls.js';
import { nicId, serviceId } from '../identity/spiffe.js';
import type { AgentEndpointOf } from '../orchestrator/agents.js';
import { ORCHESTRATOR_MAX_BODY_BYTES, orchestratorRoutes } from '../orchestrator/api.js';
import { DEFAULT_RECONCILE_INTERVAL_MS, Orchestrator } from '../orchestrator/orchestrator.js';
import { SqliteStore } from '../orchestrator/sqlite-store.js';
import { TgError } from '../util/errors.js';
import { requireRoot } from '../util/exec.js';
import { JsonApiServer } from '../util/http-json.js';
import { logger } from '../util/log.js';
import { apiSocketArg, parseDaemonArgs } from './daemon-args.js';

const USAGE = `usage: tenguard orchestrator --data-dir DIR --api-socket PATH [--reconcile-ms N]
         [--console HOST:PORT [--console-cert FILE --console-key FILE]] (mTLS options | --insecure)

Runs the orchestrator: tenants, hosts, workloads and policy in a SQLite store in DIR,
REST+JSON (OpenAPI at GET /openapi.json) on the Unix socket PATH, reconciliation every N ms
(default ${DEFAULT_RECONCILE_INTERVAL_MS}; 0: only on POST /v1/reconcile). Stops on SIGTERM/SIGINT.

With mTLS the orchestrator enrols as spiffe://TD/service/orchestrator, serves its API over
mTLS to the allowed clients only (default .../service/operator), and calls every NIC agent
(which must prove spiffe://TD/nic/HOST) and vSwitch daemon (.../service/vswitchd-HOST) over
mTLS as itself. --host-name does not apply.

--console HOST:PORT serves the web console there (port 0: any free port; its address is
logged): plain HTTP on a loopback address, or HTTPS with --console-cert and --console-key
(PEM). Log in with the one-time link \`tenguard console login\` prints.

${MTLS_USAGE}`;

export async function run(args: string[]): Promise<number> {
  const values = parseDaemonArgs(
    args,
    {
      'data-dir': { type: 'string' },
      'api-socket': { type: 'string' },
      'reconcile-ms': { type: 'string' },
      console: { type: 'string' },
      'console-cert': { type: 'string' },
      'console-key': { type: 'string' },
      ...MTLS_ARG_OPTIONS,
    },
    USAGE,
  );
  if (values === null) return 0;
  const dataDir = values['data-dir'] as string | undefined;
  if (dataDir === undefined) throw new TgError('TG_ERR_USAGE', `--data-dir is required\n${USAGE}`);
  const socket = apiSocketArg(values, USAGE);
  const msText = values['reconcile-ms'] as string | undefined;
  const interval = msText === undefined ? DEFAULT_RECONCILE_INTERVAL_MS : Number(msText);
  if (!Number.isInteger(interval) || interval < 0 || interval > 3_600_000)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', '--reconcile-ms must be an integer from 0 to 3600000');
  if (values['host-name'] !== undefined)
    throw new TgError('TG_ERR_USAGE', `--host-name does not apply to the orchestrator\n${USAGE}`);
  const mtlsConfig = mtlsConfigFromArgs(values, (td) => serviceId(td, 'orchestrator').uri, {
    hostName: false,
    defaultClients: (td) => [serviceId(td, 'operator').uri],
  });
  const consoleText = values.console as string | undefined;
  const consoleListen = consoleText === undefined ? undefined : parseListen(consoleText);
  const consoleCert = values['console-cert'] as string | undefined;
  const consoleKey = values['console-key'] as string | undefined;
  if ((consoleCert === undefined) !== (consoleKey === undefined))
    throw new TgError('TG_ERR_USAGE', `--console-cert and --console-key go together\n${USAGE}`);
  if (consoleCert !== undefined && consoleListen === undefined)
    throw new TgError('TG_ERR_USAGE', `--console-cert needs --console\n${USAGE}`);
  requireRoot('tenguard orchestrator');

  const log = logger('orchestrator');
  if (mtlsConfig === undefined) log.warn(INSECURE_WARNING);
  const mtls =
    mtlsConfig === undefined ? undefined : await ServiceMtls.start(mtlsConfig, log.child({ part: 'mtls' }));
  const td = mtlsConfig?.trustDomain;
  const agentEndpoint: AgentEndpointOf | undefined =
    mtls === undefined || td === undefined
      ? undefined
      : (host, agent, socketPath) =>
          mtls.clientEndpoint(socketPath, [
            agent === 'nic' ? nicId(td, host).uri : serviceId(td, `vswitchd-${host}`).uri,
          ]);
  const store = SqliteStore.open(dataDir);
  const orch = new Orchestrator(store, log, {
    agentEndpoint,
    certificate: () => mtls?.identity.certificatePem ?? null,
  });
  const tls = mtls?.serverTls();
  let api: JsonApiServer;
  let web: WebConsole | null = null;
  try {
    if (consoleListen !== undefined) {
      let key: Buffer | undefined;
      try {
        key = consoleKey === undefined ? undefined : readFileSync(consoleKey);
        const cert = consoleCert === undefined ? undefined : readFileSync(consoleCert, 'utf8');
        web = await WebConsole.start(orch, {
          listen: consoleListen,
          log: log.child({ part: 'console' }),
          ...(cert === undefined || key === undefined ? {} : { tls: { cert, key } }),
        });
      } finally {
        key?.fill(0);
      }
    }
    api = await JsonApiServer.listen({
      socketPath: socket,
      tls,
      routes: orchestratorRoutes(orch, consoleApiRoutes(web)),
      log,
      maxBodyBytes: ORCHESTRATOR_MAX_BODY_BYTES,
    });
  } catch (err) {
    await web?.close();
    mtls?.stop();
    await store.close();
    throw err;
  } finally {
    if (tls !== undefined) wipeTlsKey(tls.options);
  }
  mtls?.attach(api);
  orch.start(interval);
  log.info({ api: socket, dataDir, reconcileMs: interval, console: web?.url }, 'orchestrator serving');
  // The console's address on stdout too, for whoever started the orchestrator (the demo).
  if (web !== null) process.stdout.write(`tenguard orchestrator: web console at ${web.url}\n`);
  const why = await new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  log.info({ why }, 'orchestrator stopping');
  await api.close();
  await web?.close();
  await orch.close();
  mtls?.stop();
  return 0;
}
