// The CSR API served over TLS on a Unix socket (or a TCP port) by a CA in this process, for
// NICs and services that enrol with a join token and renew with their certificate
// (enrolmentAuthenticator). The server's own identity, spiffe://<td>/service/ca, is issued
// in-process and renewed at half life without interrupting the API.
import { CA_SERVICE_NAME } from '../identity/enrolment.js';
import type { Identity } from '../identity/identity.js';
import { serverTlsOptions, updateServerIdentity, wipeTlsKey } from '../identity/mtls.js';
import { IdentityRenewer } from '../identity/renewal.js';
import { serviceId } from '../identity/spiffe.js';
import { JsonApiServer } from '../util/http-json.js';
import type { Logger } from '../util/log.js';
import type { PlacementLookup } from './approval.js';
import type { CertificateAuthority } from './authority.js';
import { CsrService } from './csr-api.js';
import { csrAuthorize, csrRoutes, enrolmentAuthenticator, JoinTokens, MAX_BODY_BYTES } from './csr-http.js';
import { verifyCsr } from './svid.js';

export interface CsrServerOptions {
  readonly ca: CertificateAuthority;
  readonly socketPath: string;
  readonly log: Logger;
  /** Which workloads are placed on which NIC; default: none. */
  readonly isPlacedOn?: PlacementLookup;
  /** Lifetime of the server's own certificate; default the CA's default. */
  readonly ttlSeconds?: number;
  /**
   * How often the CA state is looked at for a rotation step made by another process (a new
   * root to trust, a new generation signing); default 1000 ms.
   */
  readonly watchMs?: number;
}

export class CsrServer {
  private watchTimer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly api: JsonApiServer,
    private readonly renewer: IdentityRenewer,
    readonly socketPath: string,
    /** Hand one to each NIC or service to enrol (out of band, never on disk). */
    readonly joinTokens: JoinTokens,
    readonly trustDomain: string,
  ) {}

  static async start(opts: CsrServerOptions): Promise<CsrServer> {
    const { ca } = opts;
    const td = ca.trustDomain;
    const id = serviceId(td, CA_SERVICE_NAME).uri;
    const renewer = new IdentityRenewer({
      spiffeId: id,
      sign: async (csrPem) => {
        const s = await ca.issue({
          csr: await verifyCsr(csrPem),
          spiffeId: id,
          ttlSeconds: opts.ttlSeconds,
          requester: 'admin',
        });
        return [s.certificatePem, ...s.chainPem];
      },
    });
    const first = await renewer.start();
    const isRevoked = (serial: string): boolean => ca.isRevoked(serial);
    const service = new CsrService({ ca, isPlacedOn: opts.isPlacedOn ?? (() => false) });
    const tokens = new JoinTokens();
    const tls = serverTlsOptions(first, ca.trustBundle());
    // Token holders have no certificate yet: the handshake admits them, the authenticator decides.
    let api: JsonApiServer;
    try {
      api = await JsonApiServer.listen({
        socketPath: opts.socketPath,
        tls: { options: tls },
        authorize: csrAuthorize(enrolmentAuthenticator({ trustDomain: td, isRevoked, joinTokens: tokens })),
        routes: csrRoutes({ service, trustBundle: () => ca.trustBundle(), revocations: () => ca.revoked() }),
        log: opts.log,
        maxBodyBytes: MAX_BODY_BYTES,
      });
    } finally {
      wipeTlsKey(tls);
    }
    const self = new CsrServer(api, renewer, opts.socketPath, tokens, td);
    const updateIdentity = (id: Identity): void => updateServerIdentity(api, id, ca.trustBundle());
    renewer.on('renewed', (next: Identity) => {
      updateIdentity(next);
      opts.log.info(
        { serial: next.serial, notAfter: next.notAfter.toISOString() },
        'CSR server identity renewed',
      );
    });
    renewer.on('renewal-failed', (err: unknown) =>
      opts.log.warn({ err: (err as Error).message }, 'CSR server identity renewal failed'),
    );
    // A rotation step, made here or by `tenguard ca rotate` in another process: a changed
    // bundle becomes the server's trust anchors at once (clients certified by the next
    // generation are admitted); a new active generation re-issues the server's own identity.
    let bundlePem = ca.trustBundle().toPem();
    const activeId = (): number | undefined => ca.generations().find((g) => g.state === 'active')?.id;
    let signedBy = activeId();
    self.watchTimer = setInterval(() => {
      let pem: string;
      try {
        pem = ca.trustBundle().toPem();
      } catch (err) {
        opts.log.warn({ err: (err as Error).message }, 'CA state unreadable; the trust anchors stay');
        return;
      }
      if (pem !== bundlePem) {
        bundlePem = pem;
        updateIdentity(renewer.current);
        opts.log.info('CSR server trust anchors updated');
      }
      const now = activeId();
      if (now !== undefined && now !== signedBy) {
        signedBy = now;
        renewer.renewNow().catch((err: unknown) => {
          signedBy = undefined;
          opts.log.warn({ err: (err as Error).message }, 'CSR server identity not re-issued');
        });
      }
    }, opts.watchMs ?? 1000);
    self.watchTimer.unref();
    opts.log.info({ socket: opts.socketPath, id }, 'CSR API serving over TLS');
    return self;
  }

  get identity(): Identity {
    return this.renewer.current;
  }

  async close(): Promise<void> {
    if (this.watchTimer !== undefined) clearInterval(this.watchTimer);
    this.renewer.stop();
    await this.api.close();
  }
}
