// Thin HTTP routes over CsrService, served by the one HTTP stack (src/util/http-json.ts):
//   POST /apis/certificates.k8s.io/v1/certificatesigningrequests         create (201)
//   GET  /apis/certificates.k8s.io/v1/certificatesigningrequests         list (own, or all for admin)
//   GET  /apis/certificates.k8s.io/v1/certificatesigningrequests/:name   one
//   GET  /trust-bundle                                                   roots to trust (PEM)
//   GET  /revocations                                                    revoked serials (JSON)
//   GET  /openapi.json                                                   this API's OpenAPI document
//   POST /join-tokens   {spiffeId, ttlSeconds?} -> 201 a one-time join token (operator socket only)
// Every request is authenticated first by the server's authorize hook (csrAuthorize: a Unix
// socket's peer is the local operator; over mTLS the client certificate names a NIC or a
// service; a join token names the identity it was issued for). Errors are the stack's
// {code, message} with the catalogue's status; a failed request changes nothing.
import { createHash, randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { z } from 'zod';
import { CSR_COLLECTION_PATH, JOIN_TOKENS_PATH } from '../identity/csr.js';
import type { IsRevoked } from '../identity/mtls.js';
import { authorizeRequest } from '../identity/mtls.js';
import { parseSpiffeId, type SpiffeIdPattern } from '../identity/spiffe.js';
import type { TrustBundle } from '../identity/trust-bundle.js';
import { TgError } from '../util/errors.js';
import { type Authorize, answer, bodyRoute, type Route, textAnswer } from '../util/http-json.js';
import { type ApiInfo, withOpenApi } from '../util/openapi.js';
import type { Requester } from './approval.js';
import { CSR_NAME_RE, type CsrService } from './csr-api.js';
import type { RevocationRecord } from './store.js';

export const MAX_BODY_BYTES = 64 * 1024;
export const CSR_API_VERSION = '1.1.0';

export const CSR_API: ApiInfo = {
  title: 'tenguard CA: CSR API',
  version: CSR_API_VERSION,
  description:
    'Certificate signing requests shaped as Kubernetes certificates.k8s.io/v1, the trust bundle and the revocation list. HTTP+JSON on a Unix socket (the operator) or over TLS (NICs and services).',
};

/** Names the requester of an HTTP request or throws TG_ERR_UNAUTHENTICATED. */
export type Authenticator = (req: IncomingMessage) => Requester;

/** For a Unix socket whose file mode admits only the operator. */
export const localAdminAuthenticator: Authenticator = () => ({ kind: 'admin' });

export interface MtlsAuthenticatorOptions {
  readonly trustDomain: string;
  readonly isRevoked?: IsRevoked;
  readonly now?: () => number;
  /** SPIFFE IDs (patterns) treated as operators; default none. */
  readonly adminIds?: readonly (string | SpiffeIdPattern)[];
}

/** Over mTLS: a NIC's client certificate makes it the requester 'nic <host>'. */
export function mtlsAuthenticator(opts: MtlsAuthenticatorOptions): Authenticator {
  const nics = [`spiffe://${opts.trustDomain}/nic/*`];
  const admins = opts.adminIds ?? [];
  return (req) => {
    if (admins.length > 0 && authorizeRequest(req, admins, opts).allowed) return { kind: 'admin' };
    const a = authorizeRequest(req, nics, opts);
    if (!a.allowed) throw new TgError('TG_ERR_UNAUTHENTICATED', a.reason);
    const id = parseSpiffeId(a.id.uri);
    if (id.kind !== 'nic') throw new TgError('TG_ERR_UNAUTHENTICATED', `${id.uri} is not a NIC`);
    return { kind: 'nic', host: id.host, uri: id.uri };
  };
}

/**
 * One-time join tokens, each bound to exactly one SPIFFE ID: how a NIC or a service obtains its
 * first certificate before it has any (as SPIRE's join-token attestation). A token is consumed
 * by the first request that presents it, whatever that request's outcome, and lapses after its
 * lifetime. Only SHA-256 digests are kept, so a lookup reveals nothing through timing.
 */
export class JoinTokens {
  private readonly tokens = new Map<string, { uri: string; expires: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  /** A fresh token for `spiffeId`, valid for `ttlMs`. Hand it over out of band, never on disk. */
  issue(spiffeId: string, ttlMs = 10 * 60_000): string {
    parseSpiffeId(spiffeId);
    const token = randomBytes(24).toString('base64url');
    this.tokens.set(digest(token), { uri: spiffeId, expires: this.now() + ttlMs });
    return token;
  }

  /** The SPIFFE ID a token is bound to, consuming it; undefined for unknown or lapsed tokens. */
  take(token: string): string | undefined {
    const key = digest(token);
    const t = this.tokens.get(key);
    this.tokens.delete(key);
    if (t === undefined || t.expires < this.now()) return undefined;
    return t.uri;
  }
}

function digest(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export interface EnrolmentAuthenticatorOptions extends MtlsAuthenticatorOptions {
  readonly joinTokens: JoinTokens;
}

/**
 * For a CSR API reached over TLS by clients that may not hold a certificate yet:
 *   Authorization: Bearer <join token>   the token's SPIFFE ID, once ('self': only that ID);
 *   a NIC certificate                    'nic <host>' (its own ID and its placed workloads);
 *   a service certificate                'self' (renews exactly its own ID);
 *   anything else                        TG_ERR_UNAUTHENTICATED.
 */
export function enrolmentAuthenticator(opts: EnrolmentAuthenticatorOptions): Authenticator {
  const nic = mtlsAuthenticator(opts);
  const services = [`spiffe://${opts.trustDomain}/service/*`];
  return (req) => {
    const auth = req.headers.authorization;
    if (auth !== undefined) {
      const m = /^Bearer ([A-Za-z0-9_-]{16,128})$/.exec(auth);
      const uri = m === null ? undefined : opts.joinTokens.take(m[1]);
      if (uri === undefined) throw new TgError('TG_ERR_UNAUTHENTICATED', 'unknown or used join token');
      return { kind: 'self', uri };
    }
    const svc = authorizeRequest(req, services, opts);
    if (svc.allowed) return { kind: 'self', uri: svc.id.uri };
    return nic(req);
  };
}

export interface CsrRoutesOptions {
  readonly service: CsrService;
  readonly trustBundle: () => TrustBundle;
  readonly revocations?: () => readonly RevocationRecord[];
  /** Serve POST /join-tokens with these (the operator's socket, beside a TLS CSR server). */
  readonly joinTokens?: { readonly tokens: JoinTokens; readonly trustDomain: string };
}

/** The authorize hook of a CSR API: the authenticator's requester is the handler's client. */
export function csrAuthorize(authenticate: Authenticator): Authorize {
  return (req) => {
    try {
      const requester = authenticate(req);
      return {
        allowed: true,
        id: requester.kind === 'nic' ? requester.uri : requester.kind === 'self' ? requester.uri : 'admin',
        principal: requester,
      };
    } catch (err) {
      if (err instanceof TgError && err.code === 'TG_ERR_UNAUTHENTICATED')
        return { allowed: false, status: 401, reason: err.message };
      throw err;
    }
  };
}

const requesterOf = (client: unknown): Requester => {
  if (client === undefined) throw new TgError('TG_ERR_UNAUTHENTICATED', 'no requester');
  return client as Requester;
};

export const joinTokenRequestSchema = z.strictObject({
  spiffeId: z.string().min(1).max(2048),
  ttlSeconds: z.number().int().min(1).max(86_400).optional(),
});

export function csrRoutes(opts: CsrRoutesOptions): Route[] {
  const routes: Route[] = [
    {
      method: 'POST',
      path: CSR_COLLECTION_PATH,
      operationId: 'createCsr',
      summary:
        'Submit a certificate signing request: approved and issued, or denied with a reason (201 either way)',
      body: z.record(z.string(), z.unknown(), 'a CertificateSigningRequest (a JSON object) is required'),
      example: {
        spec: {
          request: '<base64 of a PEM PKCS#10 request>',
          signerName: 'tenguard.io/spiffe',
          usages: ['digital signature', 'client auth'],
        },
      },
      status: 201,
      handler: async (req) => answer(201, await opts.service.create(req.body, requesterOf(req.client))),
    },
    {
      method: 'GET',
      path: CSR_COLLECTION_PATH,
      operationId: 'listCsrs',
      summary: "The requester's own requests (all of them for the operator)",
      handler: (req) => opts.service.list(requesterOf(req.client)),
    },
    {
      method: 'GET',
      path: `${CSR_COLLECTION_PATH}/:name`,
      operationId: 'getCsr',
      summary: 'One request',
      params: { name: z.string().regex(CSR_NAME_RE, 'must be a DNS subdomain name') },
      handler: (req) => opts.service.get(req.params.name, requesterOf(req.client)),
    },
    {
      method: 'GET',
      path: '/trust-bundle',
      operationId: 'trustBundle',
      summary: 'The roots to trust now (PEM): next, active and previous generations',
      produces: 'application/x-pem-file',
      handler: () => textAnswer(opts.trustBundle().toPem(), 'application/x-pem-file'),
    },
    {
      method: 'GET',
      path: '/revocations',
      operationId: 'revocations',
      summary: 'Serials of revoked certificates not yet expired',
      handler: () => ({
        items: (opts.revocations?.() ?? []).map((r) => ({
          serial: r.serial,
          revokedAt: r.revokedAt,
          notAfter: r.notAfter,
        })),
      }),
    },
  ];
  const jt = opts.joinTokens;
  if (jt !== undefined)
    routes.push(
      bodyRoute({
        method: 'POST',
        path: JOIN_TOKENS_PATH,
        operationId: 'createJoinToken',
        summary: 'A one-time join token for one SPIFFE ID of this trust domain (hand it over out of band)',
        body: joinTokenRequestSchema,
        example: { spiffeId: 'spiffe://example.org/nic/h1', ttlSeconds: 600 },
        status: 201,
        handler: (_req, body) => {
          const id = parseSpiffeId(body.spiffeId);
          if (id.trustDomain !== jt.trustDomain)
            throw new TgError(
              'TG_ERR_INVALID_ARGUMENT',
              `${id.uri} is not in trust domain '${jt.trustDomain}'`,
            );
          const ttl = body.ttlSeconds ?? 600;
          const token = jt.tokens.issue(id.uri, ttl * 1000);
          return answer(201, {
            spiffeId: id.uri,
            token,
            expiresAt: new Date(Date.now() + ttl * 1000).toISOString(),
          });
        },
      }),
    );
  return withOpenApi(CSR_API, routes);
}
