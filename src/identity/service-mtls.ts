// mTLS for a control API (the NIC agent's, the vSwitch daemon's, the orchestrator's): the
// service enrols with the CA, keeps its certificate renewed, serves its API with it (the new
// certificate taken up without interrupting the API), authorises every request by the
// client's SPIFFE ID after checking the CA's revocation list, follows the CA's trust bundle
// (a rotation's next root is trusted before it signs, a retired one dropped), and gives
// endpoints for calling other services as a client with the same identity.
//
// Configuration comes from the command line (--ca-socket, --ca-bundle, --trust-domain,
// --host-name, --allow-client, --cert-ttl, --bundle-refresh) and the join token from the
// environment (TENGUARD_JOIN_TOKEN, removed from the environment once read): never a
// command-line argument or a file. Limits: the revocation list is fetched from the CA before
// every request by default (revocationMaxAgeMs 0), one CA round trip per API request; a CA
// that does not answer leaves the last list in force.
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { TgError } from '../util/errors.js';
import type { ApiEndpoint, JsonApiServer, JsonServerTls, RequestAuthorization } from '../util/http-json.js';
import type { Logger } from '../util/log.js';
import { CaClient, enrol, RemoteRevocations } from './enrolment.js';
import type { Identity } from './identity.js';
import { authorizeRequest, clientTlsOptions, serverTlsOptions, updateServerIdentity } from './mtls.js';
import type { IdentityRenewer } from './renewal.js';
import { SpiffeIdPattern } from './spiffe.js';
import { TrustBundle } from './trust-bundle.js';

export const JOIN_TOKEN_ENV = 'TENGUARD_JOIN_TOKEN';

export interface ServiceMtlsConfig {
  /** The CA's CSR API (TLS on a Unix socket). */
  readonly caSocket: string;
  /** The trusted roots (PEM). */
  readonly bundlePem: string;
  readonly trustDomain: string;
  /** This service's SPIFFE ID. */
  readonly spiffeId: string;
  readonly joinToken: string;
  /** SPIFFE IDs (patterns) of the clients allowed to call the API. */
  readonly allowedClients: readonly string[];
  readonly ttlSeconds?: number;
  /** Age beyond which the revocation list is fetched again before a request; default 0. */
  readonly revocationMaxAgeMs?: number;
  /** How often the CA's trust bundle is fetched; default DEFAULT_BUNDLE_REFRESH_MS. */
  readonly bundleRefreshMs?: number;
}

export const DEFAULT_BUNDLE_REFRESH_MS = 30_000;

/** Options of `tenguard nic` and `tenguard vswitchd` for mTLS (node:util parseArgs shape). */
export const MTLS_ARG_OPTIONS = {
  'ca-socket': { type: 'string' },
  'ca-bundle': { type: 'string' },
  'trust-domain': { type: 'string' },
  'allow-client': { type: 'string', multiple: true },
  'cert-ttl': { type: 'string' },
  'bundle-refresh': { type: 'string' },
  'host-name': { type: 'string' },
  insecure: { type: 'boolean' },
} as const;

/** Logged at start by a service running its API as plain HTTP. */
export const INSECURE_WARNING =
  'INSECURE: the API is plain HTTP without client authentication (--insecure); any process that can open its socket may call it';

export const MTLS_USAGE = `mTLS (all of --ca-socket, --ca-bundle, --trust-domain, --host-name; the one-time join
token, bound to this service's SPIFFE ID, in $${JOIN_TOKEN_ENV}, never an argument):
  --ca-socket PATH      the CA's CSR API; the certificate is obtained at start, renewed at half life
  --ca-bundle FILE      trusted roots (PEM) to start with; then the CA's bundle, fetched again
                        every --bundle-refresh seconds (default ${DEFAULT_BUNDLE_REFRESH_MS / 1000}), so a CA rotation
                        reaches the service without a restart
  --trust-domain TD     SPIFFE trust domain
  --host-name NAME      the host this service belongs to (names its SPIFFE ID)
  --allow-client ID     SPIFFE ID (or pattern with '*' segments) allowed to call the API;
                        repeatable; default spiffe://TD/service/orchestrator and .../operator
  --cert-ttl S          requested certificate lifetime in seconds (default: the CA's)
  --insecure            instead of mTLS: plain HTTP on the socket, no client authentication
                        (tests and experiments only; logged as a warning at start)
`;

function seconds(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^[0-9]{1,7}$/.test(text) || n < 1)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `${flag} must be a positive integer (seconds)`);
  return n;
}

/**
 * Reads the mTLS options from parsed arguments; undefined with --insecure (plain HTTP), which
 * must be asked for: neither given is a usage error. `idOf` makes the
 * service's SPIFFE ID from the trust domain and the host name; a service that belongs to no
 * host (the orchestrator) passes `{ hostName: false }` and gets '' as the host.
 */
export function mtlsConfigFromArgs(
  values: Record<string, unknown>,
  idOf: (trustDomain: string, host: string) => string,
  opts: { hostName?: boolean; defaultClients?: (trustDomain: string) => string[] } = {},
): ServiceMtlsConfig | undefined {
  const needsHost = opts.hostName ?? true;
  const socket = values['ca-socket'] as string | undefined;
  const bundle = values['ca-bundle'] as string | undefined;
  const td = values['trust-domain'] as string | undefined;
  const host = needsHost ? (values['host-name'] as string | undefined) : '';
  const any = socket !== undefined || bundle !== undefined || td !== undefined;
  if (values.insecure === true && any)
    throw new TgError('TG_ERR_USAGE', `--insecure and the mTLS options exclude each other\n${MTLS_USAGE}`);
  if (!any) {
    for (const f of ['allow-client', 'cert-ttl', 'bundle-refresh', 'host-name'])
      if (values[f] !== undefined)
        throw new TgError('TG_ERR_USAGE', `--${f} needs mTLS (--ca-socket and the rest)\n${MTLS_USAGE}`);
    if (values.insecure !== true)
      throw new TgError(
        'TG_ERR_USAGE',
        `the API runs over mTLS: give --ca-socket, --ca-bundle, --trust-domain${needsHost ? ', --host-name' : ''} and a join token, or --insecure for plain HTTP\n${MTLS_USAGE}`,
      );
    return undefined;
  }
  if (socket === undefined || bundle === undefined || td === undefined || host === undefined)
    throw new TgError(
      'TG_ERR_USAGE',
      `--ca-socket, --ca-bundle, --trust-domain and --host-name go together\n${MTLS_USAGE}`,
    );
  if (!socket.startsWith('/'))
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `--ca-socket must be an absolute path, not '${socket}'`);
  const spiffeId = idOf(td, host);
  const ttlSeconds = seconds(values['cert-ttl'] as string | undefined, '--cert-ttl');
  const refresh = seconds(values['bundle-refresh'] as string | undefined, '--bundle-refresh');
  const joinToken = process.env[JOIN_TOKEN_ENV];
  delete process.env[JOIN_TOKEN_ENV];
  if (joinToken === undefined || joinToken.length === 0)
    throw new TgError('TG_ERR_USAGE', `mTLS needs a join token in $${JOIN_TOKEN_ENV}`);
  let bundlePem: string;
  try {
    bundlePem = readFileSync(bundle, 'utf8');
  } catch (err) {
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `cannot read the CA bundle ${bundle}`, { cause: err });
  }
  const allowed = (values['allow-client'] as string[] | undefined) ??
    opts.defaultClients?.(td) ?? [`spiffe://${td}/service/orchestrator`, `spiffe://${td}/service/operator`];
  for (const a of allowed) SpiffeIdPattern.parse(a);
  return {
    caSocket: socket,
    bundlePem,
    trustDomain: td,
    spiffeId,
    joinToken,
    allowedClients: allowed,
    ttlSeconds,
    bundleRefreshMs: refresh === undefined ? undefined : refresh * 1000,
  };
}

export class ServiceMtls {
  private api: JsonApiServer | undefined;
  private bundleTimer: NodeJS.Timeout | undefined;
  private bundleInflight: Promise<void> | undefined;
  private readonly bundleListeners: ((b: TrustBundle) => void)[] = [];
  /** Trust-bundle fetches that failed since start. */
  bundleFailures = 0;

  private constructor(
    private trust: TrustBundle,
    private readonly client: CaClient,
    private readonly renewer: IdentityRenewer,
    readonly revocations: RemoteRevocations,
    private readonly allowed: readonly SpiffeIdPattern[],
    private readonly log: Logger,
  ) {
    renewer.on('renewed', (id: Identity) => this.takeUp(id));
  }

  /** Enrols with the CA (the first certificate) and starts renewing. */
  static async start(cfg: ServiceMtlsConfig, log: Logger): Promise<ServiceMtls> {
    const allowed = cfg.allowedClients.map((a) => SpiffeIdPattern.parse(a));
    const holder: { self?: ServiceMtls } = {};
    const initial = TrustBundle.fromPem(cfg.trustDomain, cfg.bundlePem);
    const client = new CaClient({
      socketPath: cfg.caSocket,
      bundle: () => holder.self?.bundle ?? initial,
    });
    const renewer = await enrol({
      client,
      spiffeId: cfg.spiffeId,
      joinToken: cfg.joinToken,
      ttlSeconds: cfg.ttlSeconds,
      log,
    });
    const revocations = new RemoteRevocations(
      client,
      () => renewer.current,
      log,
      cfg.revocationMaxAgeMs ?? 0,
    );
    const self = new ServiceMtls(initial, client, renewer, revocations, allowed, log);
    holder.self = self;
    try {
      await revocations.refresh();
      await self.refreshBundle();
    } catch (err) {
      renewer.stop();
      throw err;
    }
    const every = cfg.bundleRefreshMs ?? DEFAULT_BUNDLE_REFRESH_MS;
    self.bundleTimer = setInterval(() => void self.refreshBundle(), every);
    self.bundleTimer.unref();
    return self;
  }

  get identity(): Identity {
    return this.renewer.current;
  }

  /** The roots trusted now: the configured bundle, then the CA's as it changes. */
  get bundle(): TrustBundle {
    return this.trust;
  }

  /** Subscribe to renewals (identity, previous). */
  onRenewed(fn: (id: Identity) => void): void {
    this.renewer.on('renewed', fn);
  }

  /** Subscribe to trust-bundle changes (a CA rotation). */
  onBundle(fn: (b: TrustBundle) => void): void {
    this.bundleListeners.push(fn);
  }

  /**
   * Fetches the CA's trust bundle and takes it up when it changed: the API's trust anchors,
   * the CA client's, and the listeners'. A failed fetch keeps the bundle in force.
   */
  refreshBundle(): Promise<void> {
    this.bundleInflight ??= this.client
      .trustBundle(this.renewer.current)
      .then(
        (next) => {
          const before = this.trust.fingerprints().sort().join(',');
          if (next.fingerprints().sort().join(',') === before) return;
          this.trust = next;
          this.log.info({ roots: next.fingerprints().map((f) => f.slice(0, 23)) }, 'trust bundle changed');
          this.takeUp(this.renewer.current);
          for (const fn of this.bundleListeners) fn(next);
        },
        (err: unknown) => {
          this.bundleFailures++;
          this.log.warn({ err: (err as Error).message }, 'trust bundle not refreshed; the last one stays');
        },
      )
      .finally(() => {
        this.bundleInflight = undefined;
      });
    return this.bundleInflight;
  }

  /**
   * The `tls` option of a JsonApiServer. `options.key` is a PEM buffer: wipe it
   * (wipeTlsKey(tls.options)) once listen() has returned or failed.
   */
  serverTls(): JsonServerTls {
    return {
      options: serverTlsOptions(this.identity, this.trust),
      authorize: (req) => this.authorize(req),
    };
  }

  /**
   * Where to reach another service's API over mTLS as this service (the orchestrator calling
   * NIC agents and vSwitch daemons): the current identity and bundle are taken at every
   * request, and the server must prove one of `serverIds` (SPIFFE IDs or patterns).
   */
  clientEndpoint(socketPath: string, serverIds: readonly string[]): ApiEndpoint {
    const patterns = serverIds.map((p) => SpiffeIdPattern.parse(p));
    return {
      socketPath,
      tls: () =>
        clientTlsOptions(this.identity, this.trust, patterns, { isRevoked: this.revocations.isRevoked }),
    };
  }

  /** The API whose certificate and trust anchors follow renewals and rotations from now on. */
  attach(api: JsonApiServer): void {
    this.api = api;
  }

  async authorize(req: IncomingMessage): Promise<RequestAuthorization> {
    await this.revocations.refresh();
    const a = authorizeRequest(req, this.allowed, {
      trustDomain: this.trust.trustDomain,
      isRevoked: this.revocations.isRevoked,
    });
    return a.allowed
      ? { allowed: true, id: a.id.uri }
      : { allowed: false, status: a.status, reason: a.reason };
  }

  stop(): void {
    if (this.bundleTimer !== undefined) clearInterval(this.bundleTimer);
    this.bundleTimer = undefined;
    this.renewer.stop();
  }

  private takeUp(id: Identity): void {
    if (this.api === undefined) return;
    updateServerIdentity(this.api, id, this.trust);
    this.log.info({ serial: id.serial, notAfter: id.notAfter.toISOString() }, 'API TLS context updated');
  }
}
