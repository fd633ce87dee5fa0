// Thin HTTP routes over CsrService (node:http or node:https handler):
//   POST /apis/certificates.k8s.io/v1/certificatesigningrequests         create (201)
//   GET  /apis/certificates.k8s.io/v1/certificatesigningrequests         list (own, or all for admin)
//   GET  /apis/certificates.k8s.io/v1/certificatesigningrequests/<name>  one
//   GET  /trust-bundle                                                   roots to trust (PEM)
//   GET  /revocations                                                    revoked serials (JSON)
// Every request is authenticated first (a Unix socket's peer is the local operator; over
// mTLS the client certificate names a NIC). Errors are Kubernetes Status objects with the
// HTTP status and the TG_ERR code as reason; a failed request changes nothing.
import { createHash, randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { CSR_COLLECTION_PATH } from '../identity/csr.js';
import type { IsRevoked } from '../identity/mtls.js';
import { authorizeRequest } from '../identity/mtls.js';
import { parseSpiffeId, type SpiffeIdPattern } from '../identity/spiffe.js';
import type { TrustBundle } from '../identity/trust-bundle.js';
import { ERROR_CODES, TgError } from '../util/errors.js';
import { logger } from '../util/log.js';
import type { Requester } from './approval.js';
import type { CsrService } from './csr-api.js';
import type { RevocationRecord } from './store.js';

export const MAX_BODY_BYTES = 64 * 1024;

const log = logger('ca.http');

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
  readonly authenticate: Authenticator;
  readonly trustBundle: () => TrustBundle;
  readonly revocations?: () => readonly RevocationRecord[];
}

function send(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  const text = type === 'application/json' ? `${JSON.stringify(body)}\n` : String(body);
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, err: unknown): void {
  const e =
    err instanceof TgError ? err : new TgError('TG_ERR_INTERNAL', 'internal error', { cause: err as Error });
  if (e.code === 'TG_ERR_INTERNAL') log.error({ err }, 'CSR API internal error');
  const status = ERROR_CODES[e.code].http;
  send(res, status, {
    kind: 'Status',
    apiVersion: 'v1',
    status: 'Failure',
    code: status,
    reason: e.code,
    message: e.message,
  });
}

function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (c: Buffer) => {
      if (done) return;
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        done = true;
        reject(new TgError('TG_ERR_INVALID_ARGUMENT', `request body larger than ${MAX_BODY_BYTES} bytes`));
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        reject(new TgError('TG_ERR_INVALID_ARGUMENT', 'request body is not JSON'));
      }
    });
    req.on('error', (err) => {
      if (!done) reject(new TgError('TG_ERR_INVALID_ARGUMENT', 'request body not received', { cause: err }));
      done = true;
    });
  });
}

export function csrRequestHandler(
  opts: CsrRoutesOptions,
): (req: IncomingMessage, res: ServerResponse) => void {
  const route = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const requester = opts.authenticate(req);
    const path = (req.url ?? '/').split('?')[0];
    const method = req.method ?? 'GET';
    if (path === CSR_COLLECTION_PATH) {
      if (method === 'POST') return send(res, 201, await opts.service.create(await readJson(req), requester));
      if (method === 'GET') return send(res, 200, opts.service.list(requester));
      throw new TgError('TG_ERR_INVALID_ARGUMENT', `${method} is not allowed on ${path}`);
    }
    if (path.startsWith(`${CSR_COLLECTION_PATH}/`)) {
      if (method !== 'GET')
        throw new TgError('TG_ERR_INVALID_ARGUMENT', `${method} is not allowed on ${path}`);
      let name: string;
      try {
        name = decodeURIComponent(path.slice(CSR_COLLECTION_PATH.length + 1));
      } catch {
        throw new TgError('TG_ERR_INVALID_ARGUMENT', 'badly encoded name in the path');
      }
      return send(res, 200, opts.service.get(name, requester));
    }
    if (path === '/trust-bundle' && method === 'GET')
      return send(res, 200, opts.trustBundle().toPem(), 'application/x-pem-file');
    if (path === '/revocations' && method === 'GET') {
      const items = (opts.revocations?.() ?? []).map((r) => ({
        serial: r.serial,
        revokedAt: r.revokedAt,
        notAfter: r.notAfter,
      }));
      return send(res, 200, { items });
    }
    throw new TgError('TG_ERR_NOT_FOUND', `no route ${method} ${path.slice(0, 200)}`);
  };
  return (req, res) => {
    route(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendError(res, err);
      else res.destroy();
    });
  };
}
