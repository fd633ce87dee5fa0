// The client side of the CSR API for a NIC or a service: the first certificate through a
// one-time join token, renewals at half life with the current certificate over mTLS, the
// CA's revocation list for servers that check every request, and the CA's current trust
// bundle (how a rotation's new root reaches every service before it signs anything).
import { TgError } from '../util/errors.js';
import type { ApiEndpoint } from '../util/http-json.js';
import type { Logger } from '../util/log.js';
import { normalizeSerial } from './certs.js';
import { issuedChain, SIGNER_NAME } from './csr.js';
import { CsrClient } from './csr-client.js';
import type { Identity } from './identity.js';
import { clientTlsOptions, serverOnlyTlsOptions } from './mtls.js';
import { IdentityRenewer } from './renewal.js';
import { serviceId } from './spiffe.js';
import { TrustBundle } from './trust-bundle.js';

/** The CSR server's own identity is spiffe://<td>/service/<CA_SERVICE_NAME>. */
export const CA_SERVICE_NAME = 'ca';

const USAGES = ['digital signature', 'client auth', 'server auth'];
const TIMEOUT_MS = 10_000;

export interface CaClientOptions {
  /** The CSR API's Unix socket (TLS). */
  readonly socketPath: string;
  /** The roots the CA server is verified against: read at every request (they change in a rotation). */
  readonly bundle: TrustBundle | (() => TrustBundle);
}

export class CaClient {
  private readonly caId: string;

  constructor(private readonly opts: CaClientOptions) {
    this.caId = serviceId(this.bundle().trustDomain, CA_SERVICE_NAME).uri;
  }

  private bundle(): TrustBundle {
    const b = this.opts.bundle;
    return typeof b === 'function' ? b() : b;
  }

  private endpoint(identity: Identity | undefined): ApiEndpoint {
    const { socketPath } = this.opts;
    return {
      socketPath,
      tls: () =>
        identity === undefined
          ? serverOnlyTlsOptions(this.bundle(), [this.caId])
          : clientTlsOptions(identity, this.bundle(), [this.caId]),
    };
  }

  /**
   * Has a PKCS#10 request signed; returns the chain, leaf first (PEM). Authenticated by a join
   * token (the first certificate) or by the current identity (renewal).
   */
  async sign(
    csrPem: string,
    auth: { readonly joinToken: string } | { readonly identity: Identity },
    ttlSeconds?: number,
  ): Promise<string> {
    const body = {
      spec: {
        request: Buffer.from(csrPem).toString('base64'),
        signerName: SIGNER_NAME,
        usages: USAGES,
        ...(ttlSeconds === undefined ? {} : { expirationSeconds: ttlSeconds }),
      },
    };
    const byToken = 'joinToken' in auth;
    const client = new CsrClient(
      this.endpoint(byToken ? undefined : auth.identity),
      TIMEOUT_MS,
      byToken ? { authorization: `Bearer ${auth.joinToken}` } : {},
    );
    const obj = await client.create(body).catch((err: unknown) => {
      // TG_ERR_COMMAND_FAILED: no answer, or not one of the catalogue's; as it is.
      if (!(err instanceof TgError) || err.code === 'TG_ERR_COMMAND_FAILED') throw err;
      throw new TgError(
        err.code === 'TG_ERR_UNAUTHENTICATED' ? 'TG_ERR_UNAUTHENTICATED' : 'TG_ERR_COMMAND_FAILED',
        `the CA refused the request: HTTP ${err.httpStatus} ${err.code}: ${err.message}`,
        { cause: err },
      );
    });
    const chain = issuedChain(obj);
    if (chain === undefined) {
      const c = obj.status?.conditions?.[0];
      throw new TgError(
        'TG_ERR_FORBIDDEN',
        `the CA did not issue the certificate: ${c?.type ?? '?'} ${c?.reason ?? ''}: ${c?.message ?? ''}`,
      );
    }
    return chain;
  }

  /**
   * The roots the CA asks relying parties to trust now (next, active and previous
   * generations), fetched over mTLS from a CA server verified against the current bundle.
   */
  async trustBundle(identity: Identity): Promise<TrustBundle> {
    const pem = await new CsrClient(this.endpoint(identity), TIMEOUT_MS)
      .trustBundlePem()
      .catch((err: unknown) => {
        throw new TgError('TG_ERR_COMMAND_FAILED', `trust bundle: ${(err as Error).message}`, { cause: err });
      });
    return TrustBundle.fromPem(this.bundle().trustDomain, pem);
  }

  /** Serials the CA has revoked (of certificates not yet expired). */
  async revokedSerials(identity: Identity): Promise<Set<string>> {
    const items: { serial?: unknown }[] = await new CsrClient(this.endpoint(identity), TIMEOUT_MS)
      .revocations()
      .catch((err: unknown) => {
        throw new TgError('TG_ERR_COMMAND_FAILED', `revocation list: ${(err as Error).message}`, {
          cause: err,
        });
      });
    const out = new Set<string>();
    for (const i of items) {
      if (typeof i.serial !== 'string') continue;
      try {
        out.add(normalizeSerial(i.serial));
      } catch {
        // an unreadable entry names no certificate we could be shown
      }
    }
    return out;
  }
}

/**
 * The CA's revocation list as a server sees it: refresh() fetches it when older than maxAgeMs
 * (0: on every call; concurrent calls share one fetch), isRevoked() answers from the last
 * list. A failed fetch keeps the last list and is logged: a CA outage does not stop the API,
 * and revocations made during it take effect when the CA answers again.
 */
export class RemoteRevocations {
  private revoked = new Set<string>();
  private fetchedAt = Number.NEGATIVE_INFINITY;
  private inflight: Promise<void> | undefined;
  /** Fetches that failed since start. */
  failures = 0;

  constructor(
    private readonly client: CaClient,
    private readonly identity: () => Identity,
    private readonly log: Logger,
    private readonly maxAgeMs = 0,
  ) {}

  refresh(): Promise<void> {
    if (Date.now() - this.fetchedAt < this.maxAgeMs && this.fetchedAt > 0) return Promise.resolve();
    this.inflight ??= this.client
      .revokedSerials(this.identity())
      .then(
        (set) => {
          this.revoked = set;
          this.fetchedAt = Date.now();
        },
        (err: unknown) => {
          this.failures++;
          this.log.warn({ err: (err as Error).message }, 'revocation list not refreshed; the last one stays');
        },
      )
      .finally(() => {
        this.inflight = undefined;
      });
    return this.inflight;
  }

  readonly isRevoked = (serial: string): boolean => {
    try {
      return this.revoked.has(normalizeSerial(serial));
    } catch {
      return true;
    }
  };
}

export interface EnrolOptions {
  readonly client: CaClient;
  readonly spiffeId: string;
  readonly joinToken: string;
  readonly ttlSeconds?: number;
  readonly log: Logger;
}

/**
 * Obtains the first identity with the join token and keeps it renewed at half life with the
 * current certificate. Failures are logged; the renewer retries with backoff.
 */
export async function enrol(opts: EnrolOptions): Promise<IdentityRenewer> {
  let held: Identity | undefined;
  const renewer: IdentityRenewer = new IdentityRenewer({
    spiffeId: opts.spiffeId,
    sign: (csrPem) =>
      opts.client.sign(
        csrPem,
        held === undefined ? { joinToken: opts.joinToken } : { identity: held },
        opts.ttlSeconds,
      ),
  });
  renewer.on('renewed', (id: Identity) => {
    held = id;
    opts.log.info(
      { spiffeId: id.spiffeId.uri, serial: id.serial, notAfter: id.notAfter.toISOString() },
      'identity certificate obtained',
    );
  });
  renewer.on('renewal-failed', (err: unknown, attempt: number) =>
    opts.log.warn({ err: (err as Error).message, attempt }, 'identity renewal failed'),
  );
  renewer.on('expired', () => opts.log.error({ spiffeId: opts.spiffeId }, 'identity certificate expired'));
  await renewer.start();
  return renewer;
}
