// `tenguard orchestrator`: the control plane daemon. Desired state in a SQLite store in the
// data directory or on etcd (several replicas, one leads), REST+JSON on a Unix socket, a
// reconciliation pass every interval; `tenguard orchestrator store migrate` copies a store. Ends
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
import { startHeapTrim } from '../native/heap-trim.js';
import type { AgentEndpointOf } from '../orchestrator/agents.js';
import { ORCHESTRATOR_MAX_BODY_BYTES, orchestratorRoutes } from '../orchestrator/api.js';
import { DEFAULT_RECONCILE_INTERVAL_MS, Orchestrator } from '../orchestrator/orchestrator.js';
import { Replica } from '../orchestrator/replica.js';
import type { Store } from '../orchestrator/store.js';
import { migrateStore } from '../orchestrator/store-migrate.js';
import { type EtcdTlsFiles, openStore, parseStoreSpec } from '../orchestrator/store-spec.js';
import { TgError } from '../util/errors.js';
import { requireRoot } from '../util/exec.js';
import { JsonApiServer } from '../util/http-json.js';
import { logger } from '../util/log.js';
import { apiSocketArg, parseDaemonArgs } from './daemon-args.js';

const USAGE = `usage: tenguard orchestrator (--data-dir DIR | --store SPEC) --api-socket PATH [--reconcile-ms N]
                              [--etcd-ca F [--etcd-cert F --etcd-key F]] [--etcd-prefix P] [--lease-ms N]
                              [--console HOST:PORT [--console-cert FILE --console-key FILE]]
                              (mTLS options | --insecure)
       tenguard orchestrator store migrate --from SPEC --to SPEC [--etcd-ca F ...] [--json]

Runs the orchestrator: tenants, hosts, workloads and policy in a store, REST+JSON (OpenAPI at
GET /openapi.json) on the Unix socket PATH, reconciliation every N ms (default
${DEFAULT_RECONCILE_INTERVAL_MS}; 0: only on POST /v1/reconcile). Stops on SIGTERM/SIGINT.

--store sqlite:DIR is the embedded default (same as --data-dir DIR). --store etcd:URL[,URL...]
puts the state on an etcd cluster (client URLs; https:// ones need --etcd-ca, and
--etcd-cert/--etcd-key when the members demand client certificates; keys under --etcd-prefix,
default tenguard/). Several orchestrators may run on one etcd store: they campaign on a lease
of --lease-ms (default 2000); the leader reconciles and drives the agents, every replica serves
the API and forwards what changes anything to the leader's API socket (with mTLS, as
spiffe://TD/service/orchestrator, which the default client list then admits).

store migrate copies every entry of one store into another, empty one (an orchestrator must not
be running on either), and checks the copy.

With mTLS the orchestrator enrols as spiffe://TD/service/orchestrator, serves its API over
mTLS to the allowed clients only (default .../service/operator), and calls every NIC agent
(which must prove spiffe://TD/nic/HOST) and vSwitch daemon (.../service/vswitchd-HOST) over
mTLS as itself. --host-name does not apply.

--console HOST:PORT serves the web console there (port 0: any free port; its address is
logged): plain HTTP on a loopback address, or HTTPS with --console-cert and --console-key
(PEM). Log in with the one-time link \`tenguard console login\` prints.

${MTLS_USAGE}`;

const ETCD_OPTIONS = {
  'etcd-ca': { type: 'string' },
  'etcd-cert': { type: 'string' },
  'etcd-key': { type: 'string' },
  'etcd-prefix': { type: 'string' },
} as const;

function etcdTls(values: Record<string, unknown>): EtcdTlsFiles {
  return {
    ca: values['etcd-ca'] as string | undefined,
    cert: values['etcd-cert'] as string | undefined,
    key: values['etcd-key'] as string | undefined,
  };
}

/** `tenguard orchestrator store migrate --from SPEC --to SPEC`. */
async function storeCommand(args: string[]): Promise<number> {
  if (args[0] !== 'migrate')
    throw new TgError('TG_ERR_USAGE', `unknown store command '${args[0] ?? ''}'\n${USAGE}`);
  const values = parseDaemonArgs(
    args.slice(1),
    { from: { type: 'string' }, to: { type: 'string' }, json: { type: 'boolean' }, ...ETCD_OPTIONS },
    USAGE,
  );
  if (values === null) return 0;
  const fromText = values.from as string | undefined;
  const toText = values.to as string | undefined;
  if (fromText === undefined || toText === undefined)
    throw new TgError('TG_ERR_USAGE', `store migrate needs --from and --to\n${USAGE}`);
  const fromSpec = parseStoreSpec(fromText);
  const toSpec = parseStoreSpec(toText);
  const tls = etcdTls(values);
  const prefix = values['etcd-prefix'] as string | undefined;
  const opened: Store[] = [];
  try {
    const from = await openStore(fromSpec, { tls: fromSpec.kind === 'etcd' ? tls : undefined, prefix });
    opened.push(from);
    const to = await openStore(toSpec, { tls: toSpec.kind === 'etcd' ? tls : undefined, prefix });
    opened.push(to);
    const r = await migrateStore(from, to);
    if (values.json) process.stdout.write(`${JSON.stringify({ from: fromText, to: toText, ...r })}\n`);
    else
      process.stdout.write(
        `copied ${r.entries} entries (${Object.entries(r.byKind)
          .map(([k, n]) => `${n} ${k}`)
          .join(
            ', ',
          )}) from ${fromText} to ${toText} in ${r.transactions} transaction(s); the copy matches\n`,
      );
    return 0;
  } finally {
    for (const s of opened) await s.close().catch(() => undefined);
  }
}

export async function run(args: string[]): Promise<number> {
  if (args[0] === 'store') return storeCommand(args.slice(1));
  const values = parseDaemonArgs(
    args,
    {
      'data-dir': { type: 'string' },
      store: { type: 'string' },
      'lease-ms': { type: 'string' },
      ...ETCD_OPTIONS,
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
  const storeText = values.store as string | undefined;
  if ((dataDir === undefined) === (storeText === undefined))
    throw new TgError('TG_ERR_USAGE', `give one of --data-dir and --store\n${USAGE}`);
  const spec =
    storeText === undefined ? { kind: 'sqlite' as const, dir: dataDir! } : parseStoreSpec(storeText);
  const leaseText = values['lease-ms'] as string | undefined;
  const leaseMs = leaseText === undefined ? 2000 : Number(leaseText);
  if (!Number.isInteger(leaseMs) || leaseMs < 1000 || leaseMs > 60_000)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', '--lease-ms must be an integer from 1000 to 60000');
  const socket = apiSocketArg(values, USAGE);
  const msText = values['reconcile-ms'] as string | undefined;
  const interval = msText === undefined ? DEFAULT_RECONCILE_INTERVAL_MS : Number(msText);
  if (!Number.isInteger(interval) || interval < 0 || interval > 3_600_000)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', '--reconcile-ms must be an integer from 0 to 3600000');
  if (values['host-name'] !== undefined)
    throw new TgError('TG_ERR_USAGE', `--host-name does not apply to the orchestrator\n${USAGE}`);
  const mtlsConfig = mtlsConfigFromArgs(values, (td) => serviceId(td, 'orchestrator').uri, {
    hostName: false,
    defaultClients: (td) =>
      spec.kind === 'etcd'
        ? [serviceId(td, 'operator').uri, serviceId(td, 'orchestrator').uri]
        : [serviceId(td, 'operator').uri],
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
  startHeapTrim();

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
  let store: Store;
  try {
    store = await openStore(spec, {
      tls: spec.kind === 'etcd' ? etcdTls(values) : undefined,
      prefix: values['etcd-prefix'] as string | undefined,
    });
  } catch (err) {
    mtls?.stop();
    throw err;
  }
  const replica =
    spec.kind === 'etcd'
      ? new Replica(store.campaign(socket, leaseMs), {
          address: socket,
          probe: () => store.revision(),
          endpointOf:
            mtls === undefined || td === undefined
              ? undefined
              : (address) => mtls.clientEndpoint(address, [serviceId(td, 'orchestrator').uri]),
        })
      : undefined;
  const orch = new Orchestrator(store, log, {
    agentEndpoint,
    replica,
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
  replica?.leadership.onChange(() =>
    log.info(
      { leader: replica.isLeader(), leaderAddress: replica.leadership.leader() },
      'leadership changed',
    ),
  );
  log.info({ api: socket, store: spec, reconcileMs: interval, console: web?.url }, 'orchestrator serving');
  // The console's address on stdout too, for whoever started the orchestrator.
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
