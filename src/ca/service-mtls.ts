// mTLS for a control API (the NIC agent's, the vSwitch daemon's): the service enrols with
// the CA, keeps its certificate renewed, serves its API with it (the new certificate taken up
// without interrupting the API), and authorises every request by the client's SPIFFE ID,
// checking the CA's revocation list first.
//
// Configuration comes from the command line (--ca-socket, --ca-bundle, --trust-domain,
// --allow-client, --cert-ttl) and the join token from the environment (TENGUARD_JOIN_TOKEN,
// removed from the environment once read): never a command-line argument or a file.
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { TgError } from '../util/errors.js';
import type { JsonApiServer, JsonServerTls, RequestAuthorization } from '../util/http-json.js';
import type { Logger } from '../util/log.js';
import { CaClient, enrol, RemoteRevocations } from './enrolment.js';
import type { Identity } from './identity.js';
import { authorizeRequest, serverTlsOptions, wipeTlsKey } from './mtls.js';
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
}

/** Options of `tenguard nic` and `tenguard vswitchd` for mTLS (node:util parseArgs shape). */
export const MTLS_ARG_OPTIONS = {
  'ca-socket': { type: 'string' },
  'ca-bundle': { type: 'string' },
  'trust-domain': { type: 'string' },
  'allow-client': { type: 'string', multiple: true },
  'cert-ttl': { type: 'string' },
} as const;

export const MTLS_USAGE = `mTLS (all of --ca-socket, --ca-bundle, --trust-domain; the join token in $${JOIN_TOKEN_ENV}):
  --ca-socket PATH      the CA's CSR API; the certificate is obtained at start, renewed at half life
  --ca-bundle FILE      trusted roots (PEM)
  --trust-domain TD     SPIFFE trust domain
  --allow-client ID     SPIFFE ID (or pattern with '*' segments) allowed to call the API;
                        repeatable; default spiffe://TD/service/orchestrator and .../operator
  --cert-ttl S          requested certificate lifetime in seconds
`;

/**
 * Reads the mTLS options from parsed arguments; undefined when none is given. `idOf` makes the
 * service's SPIFFE ID from the trust domain.
 */
export function mtlsConfigFromArgs(
  values: Record<string, unknown>,
  idOf: (trustDomain: string) => string,
): ServiceMtlsConfig | undefined {
  const socket = values['ca-socket'] as string | undefined;
  const bundle = values['ca-bundle'] as string | undefined;
  const td = values['trust-domain'] as string | undefined;
  const any = socket !== undefined || bundle !== undefined || td !== undefined;
  if (!any) return undefined;
  if (socket === undefined || bundle === undefined || td === undefined)
    throw new TgError(
      'TG_ERR_USAGE',
      `--ca-socket, --ca-bundle and --trust-domain go together\n${MTLS_USAGE}`,
    );
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
  const ttlText = values['cert-ttl'] as string | undefined;
  const ttlSeconds = ttlText === undefined ? undefined : Number(ttlText);
  if (ttlSeconds !== undefined && (!Number.isInteger(ttlSeconds) || ttlSeconds < 1))
    throw new TgError('TG_ERR_INVALID_ARGUMENT', '--cert-ttl must be a positive integer (seconds)');
  const allowed = (values['allow-client'] as string[] | undefined) ?? [
    `spiffe://${td}/service/orchestrator`,
    `spiffe://${td}/service/operator`,
  ];
  for (const a of allowed) SpiffeIdPattern.parse(a);
  return {
    caSocket: socket,
    bundlePem,
    trustDomain: td,
    spiffeId: idOf(td),
    joinToken,
    allowedClients: allowed,
    ttlSeconds,
  };
}

export class ServiceMtls {
  private api: JsonApiServer | undefined;

  private constructor(
    readonly bundle: TrustBundle,
    private readonly renewer: IdentityRenewer,
    readonly revocations: RemoteRevocations,
    private readonly allowed: readonly SpiffeIdPattern[],
    private readonly log: Logger,
  ) {
    renewer.on('renewed', (id: Identity) => this.takeUp(id));
  }

  /** Enrols with the CA (the first certificate) and starts renewing. */
  static async start(cfg: ServiceMtlsConfig, log: Logger): Promise<ServiceMtls> {
    const bundle = TrustBundle.fromPem(cfg.trustDomain, cfg.bundlePem);
    const allowed = cfg.allowedClients.map((a) => SpiffeIdPattern.parse(a));
    const client = new CaClient({ socketPath: cfg.caSocket, bundle });
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
    await revocations.refresh();
    return new ServiceMtls(bundle, renewer, revocations, allowed, log);
  }

  get identity(): Identity {
    return this.renewer.current;
  }

  /** Subscribe to renewals (identity, previous). */
  onRenewed(fn: (id: Identity) => void): void {
    this.renewer.on('renewed', fn);
  }

  /**
   * The `tls` option of a JsonApiServer. `options.key` is a PEM buffer: wipe it
   * (wipeTlsKey(tls.options)) once listen() has returned or failed.
   */
  serverTls(): JsonServerTls {
    return {
      options: serverTlsOptions(this.identity, this.bundle),
      authorize: (req) => this.authorize(req),
    };
  }

  /** The API whose certificate follows renewals from now on. */
  attach(api: JsonApiServer): void {
    this.api = api;
  }

  async authorize(req: IncomingMessage): Promise<RequestAuthorization> {
    await this.revocations.refresh();
    const a = authorizeRequest(req, this.allowed, {
      trustDomain: this.bundle.trustDomain,
      isRevoked: this.revocations.isRevoked,
    });
    return a.allowed
      ? { allowed: true, id: a.id.uri }
      : { allowed: false, status: a.status, reason: a.reason };
  }

  stop(): void {
    this.renewer.stop();
  }

  private takeUp(id: Identity): void {
    if (this.api === undefined) return;
    const opts = serverTlsOptions(id, this.bundle);
    try {
      this.api.updateTls(opts);
      this.log.info({ serial: id.serial, notAfter: id.notAfter.toISOString() }, 'API certificate renewed');
    } finally {
      wipeTlsKey(opts);
    }
  }
}
