// The one HTTP stack of tenguard's management APIs (NIC agent, vSwitch daemon, orchestrator,
// CSR API): HTTP+JSON on a Unix socket or a TCP port, a small router over node:http whose
// routes are thin functions over domain classes, and a client. Each route carries its schema
// (body, query, path parameters), an operationId and a summary; the server validates with
// those schemas and each API's OpenAPI document is generated from the same list
// (src/util/openapi.ts), so what is served and what is documented cannot drift.
// Contract of the server:
// - request bodies are JSON, at most maxBodyBytes (413 TG_ERR_PAYLOAD_TOO_LARGE beyond; the
//   rest of the body is dropped unparsed); a body with a content-type that is not JSON is 415
//   TG_ERR_UNSUPPORTED_MEDIA_TYPE (no content-type is taken as JSON); invalid JSON, a body, a
//   query or a path parameter its route's schema refuses, and a badly percent-encoded path are
//   400 TG_ERR_INVALID_ARGUMENT (naming each problem, never the offending value); an unknown
//   path is 404 TG_ERR_NOT_FOUND, a known path with another method 405;
// - a handler answers a value (200, or the status it names) or throws: a TgError becomes its
//   catalogue status with {code, message}; anything else is 500 TG_ERR_INTERNAL with a fixed
//   message (the error itself goes to the log at error level, never to the client). Every
//   error of every API is written by the one writer here, as {code, message};
// - requests that change state (any method but GET) run one at a time, in arrival order, so a
//   handler that awaits never interleaves with another change;
// - the socket file is created mode 0600; a stale one is replaced, a live one is a conflict;
// - a query parameter is validated like a body: a route without a query schema refuses any
//   query (400), a parameter given twice is 400, and a route's schema refuses unknown ones;
// - time limits (DEFAULT_TIMEOUTS): the request head must arrive within headersTimeoutMs
//   (10 s), the whole request, body included, within requestTimeoutMs (15 s; a client sending
//   its body slowly is answered 408 and cut off, checked every second), and an idle kept-alive
//   connection is closed after idleTimeoutMs (5 s); at most 100 headers;
// - a client that half-closes its side after sending the request (shutdown(SHUT_WR)) still
//   gets its answer, also from a handler that awaits, and then the connection is closed.
// Authorisation is one hook, `authorize`, asked about every request before routing (over TLS
// every client is asked for a certificate, so a certificate revoked or expired while a
// connection is open is refused on its next request): 401 TG_ERR_UNAUTHENTICATED or 403
// TG_ERR_FORBIDDEN, the body never read; what it admits is the handler's `req.client`.
import { existsSync, rmSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import {
  createServer,
  type IncomingMessage,
  type RequestOptions,
  request,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import type { ConnectionOptions, TlsOptions } from 'node:tls';
import type { z } from 'zod';
import { ERROR_CODES, type ErrorCode, TgError } from './errors.js';
import type { Logger } from './log.js';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface ApiRequest {
  method: HttpMethod;
  path: string;
  /** Values of the route's `:name` segments, URI-decoded (and checked by `params` schemas). */
  params: Readonly<Record<string, string>>;
  /** The JSON body, parsed by the route's `body` schema when it has one; else as sent. */
  body: unknown;
  /** The URL's query parameters (`?tenant=acme&limit=10`). */
  query?: URLSearchParams;
  /** The query parsed by the route's `query` schema (undefined without one). */
  queryValues?: unknown;
  /** What `authorize` admitted (its `principal`); undefined without the hook. */
  client?: unknown;
  /** The request's headers (lower-case names). */
  headers?: Readonly<Record<string, string | string[] | undefined>>;
}

/** What a handler returns: a JSON value (status 200), or a full answer. */
export interface ApiAnswer {
  status: number;
  json?: unknown;
  /** A text answer (for /metrics) instead of JSON. */
  text?: string;
  contentType?: string;
  /** More response headers (a redirect's Location, Set-Cookie). */
  headers?: Readonly<Record<string, string>>;
}

type Handler = (req: ApiRequest) => unknown | ApiAnswer | Promise<unknown | ApiAnswer>;

export interface Route {
  method: HttpMethod;
  /** '/v1/workloads/:workload'; segments starting with ':' match one non-empty segment. */
  path: string;
  /** The OpenAPI operationId: unique within the API. */
  operationId: string;
  summary: string;
  /**
   * The request body's schema: the server parses the body with it before the handler (400
   * naming every problem otherwise). A route without one takes its body as sent.
   */
  body?: z.ZodType;
  /** An example request body, valid against `body` (documented). */
  example?: unknown;
  /** The query's schema (every value a string, as in the URL). */
  query?: z.ZodType;
  /** Schemas of the path parameters (default: any non-empty segment). */
  params?: Readonly<Record<string, z.ZodType>>;
  /** The success status (200 unless named). */
  status?: number;
  /** The content type of a success answer that is not JSON (documented). */
  produces?: string;
  handler: Handler;
}

/** A route whose handler receives the body as its schema's output type. */
export function bodyRoute<S extends z.ZodType>(
  r: Omit<Route, 'body' | 'handler'> & {
    body: S;
    handler: (req: ApiRequest, body: z.output<S>) => ReturnType<Handler>;
  },
): Route {
  return { ...r, handler: (req) => r.handler(req, req.body as z.output<S>) };
}

/** The verdict on one request's client: who it is, or why it is refused. */
export type RequestAuthorization =
  | { readonly allowed: true; readonly id: string; readonly principal?: unknown }
  | { readonly allowed: false; readonly status: 401 | 403; readonly reason: string };

/** The one authorisation hook: decides every request before it is routed. */
export type Authorize = (req: IncomingMessage) => RequestAuthorization | Promise<RequestAuthorization>;

export interface JsonServerTls {
  /**
   * node:tls server options (key, certificate chain, trust anchors). requestCert is forced on
   * and rejectUnauthorized off: a client without an acceptable certificate completes the
   * handshake and is answered 401 with a reason by `authorize`, instead of a bare reset.
   */
  options: TlsOptions;
  /** The hook that goes with these options (pass it as JsonServerOptions.authorize). */
  authorize?: Authorize;
  /**
   * Ask every client for a certificate (default true). False for a server whose clients are
   * browsers that authenticate otherwise (the web console): they would be shown a picker.
   */
  requestCert?: boolean;
}

export interface JsonServerOptions {
  /** Where to listen: a Unix socket path, or `tcp` instead. */
  socketPath?: string;
  tcp?: { host: string; port: number };
  tls?: JsonServerTls;
  /** Asked about every request before routing (required with `tls`). */
  authorize?: Authorize;
  routes: readonly Route[];
  log: Logger;
  /** Default 64 KiB. */
  maxBodyBytes?: number;
  /** Called after each answer (for request counters). */
  onAnswer?: (route: string, method: string, status: number) => void;
  /** Time limits (tests shorten them); default DEFAULT_TIMEOUTS. */
  timeouts?: Partial<ServerTimeouts>;
  /** Headers sent with every answer, errors included (the console's Content-Security-Policy). */
  headers?: Readonly<Record<string, string>>;
}

export const DEFAULT_MAX_BODY_BYTES = 64 * 1024;

export interface ServerTimeouts {
  /** The request line and headers must arrive within this time. */
  headersTimeoutMs: number;
  /** The whole request, body included, must arrive within this time (408 and cut off). */
  requestTimeoutMs: number;
  /** An idle connection (no request in progress) is closed after this time. */
  idleTimeoutMs: number;
}

export const DEFAULT_TIMEOUTS: ServerTimeouts = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 15_000,
  idleTimeoutMs: 5_000,
};

const ANSWER = Symbol('answer');

/** Marks a handler's result as a full answer rather than a JSON value. */
export function answer(status: number, json?: unknown): ApiAnswer & { [ANSWER]: true } {
  return { [ANSWER]: true, status, json };
}

export function textAnswer(text: string, contentType: string): ApiAnswer & { [ANSWER]: true } {
  return { [ANSWER]: true, status: 200, text, contentType };
}

/** An answer with its own status, headers and a text or JSON body. */
export function fullAnswer(a: Omit<ApiAnswer, never>): ApiAnswer & { [ANSWER]: true } {
  return { ...a, [ANSWER]: true };
}

function isAnswer(v: unknown): v is ApiAnswer {
  return typeof v === 'object' && v !== null && (v as Record<symbol, unknown>)[ANSWER] === true;
}

/**
 * Validates a body against a zod schema; TG_ERR_INVALID_ARGUMENT naming every problem
 * (path and message, never the offending value, which may be a key) otherwise.
 */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown, what = 'body'): T {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const problems = r.error.issues
    .slice(0, 8)
    .map((i) => `${i.path.length > 0 ? i.path.join('.') : what}: ${i.message}`)
    .join('; ');
  throw new TgError('TG_ERR_INVALID_ARGUMENT', `invalid request: ${problems}`);
}

interface CompiledRoute {
  route: Route;
  segments: string[];
}

function splitPath(path: string): string[] {
  return path.split('/').filter((s) => s.length > 0);
}

function matchRoute(
  compiled: readonly CompiledRoute[],
  method: string,
  segments: string[],
): { route: CompiledRoute; params: Record<string, string> } | 'method' | null {
  let pathMatched = false;
  for (const c of compiled) {
    if (c.segments.length !== segments.length) continue;
    const params: Record<string, string> = {};
    let ok = true;
    for (let i = 0; i < segments.length && ok; i++) {
      const want = c.segments[i];
      if (want.startsWith(':')) {
        let value: string;
        try {
          value = decodeURIComponent(segments[i]);
        } catch {
          throw new TgError('TG_ERR_INVALID_ARGUMENT', 'badly percent-encoded segment in the path');
        }
        params[want.slice(1)] = value;
      } else if (want !== segments[i]) ok = false;
    }
    if (!ok) continue;
    pathMatched = true;
    if (c.route.method === method) return { route: c, params };
  }
  return pathMatched ? 'method' : null;
}

export class JsonApiServer {
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly server: Server,
    /** The Unix socket path; '' when listening on TCP. */
    readonly socketPath: string,
    private readonly tls: boolean,
  ) {}

  static async listen(opts: JsonServerOptions): Promise<JsonApiServer> {
    if ((opts.socketPath === undefined) === (opts.tcp === undefined))
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        'an API listens on a Unix socket or a TCP port, exactly one',
      );
    const authorize = opts.authorize ?? opts.tls?.authorize;
    if (opts.tls !== undefined && authorize === undefined)
      throw new TgError('TG_ERR_INVALID_ARGUMENT', 'an API over TLS needs an authorize hook');
    const ids = new Set<string>();
    for (const r of opts.routes) {
      if (ids.has(r.operationId))
        throw new TgError('TG_ERR_INTERNAL', `two routes share the operationId '${r.operationId}'`);
      ids.add(r.operationId);
    }
    const compiled = opts.routes.map((route) => ({ route, segments: splitPath(route.path) }));
    const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    if (opts.socketPath !== undefined) await removeStaleSocket(opts.socketPath);
    const t = { ...DEFAULT_TIMEOUTS, ...opts.timeouts };
    const limits = {
      headersTimeout: Math.min(t.headersTimeoutMs, t.requestTimeoutMs),
      requestTimeout: t.requestTimeoutMs,
      keepAliveTimeout: t.idleTimeoutMs,
      // How often Node checks the two limits above (its default, 30 s, would let a slow
      // client stay up to 30 s past them).
      connectionsCheckingInterval: Math.min(1000, t.requestTimeoutMs),
      maxHeadersCount: 100,
    };
    const server: Server =
      opts.tls === undefined
        ? createServer(limits)
        : createHttpsServer({
            ...opts.tls.options,
            ...limits,
            // A TLS handshake that does not complete is cut off like a slow request head.
            handshakeTimeout: t.headersTimeoutMs,
            requestCert: opts.tls.requestCert ?? true,
            rejectUnauthorized: false,
          });
    // A half-closed client (FIN after its request) gets the answer, then the connection ends.
    // Without this, node:http aborts the request on the FIN and an awaiting handler's answer is
    // lost. (httpAllowHalfOpen is node:http's own switch for this, used by proxies.)
    (server as unknown as { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
    const self = new JsonApiServer(server, opts.socketPath ?? '', opts.tls !== undefined);
    server.on('request', (req, res) => {
      void self.handle(req, res, compiled, maxBody, opts, authorize);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        resolve();
      };
      if (opts.socketPath !== undefined) server.listen(opts.socketPath, done);
      else server.listen(opts.tcp!.port, opts.tcp!.host, done);
    });
    if (opts.socketPath !== undefined) await chmod(opts.socketPath, 0o600);
    return self;
  }

  /** The TCP port listened on (0 for a Unix socket). */
  get port(): number {
    const a = this.server.address();
    return typeof a === 'object' && a !== null ? a.port : 0;
  }

  /**
   * Replaces the TLS key, certificate and trust anchors of a TLS server: new connections use
   * them, open ones go on. The caller wipes the key buffer it passed.
   */
  updateTls(options: TlsOptions): void {
    if (!this.tls) throw new TgError('TG_ERR_CONFLICT', 'this API does not run over TLS');
    (this.server as unknown as { setSecureContext(o: TlsOptions): void }).setSecureContext(options);
  }

  private async handle(
    req: IncomingMessage,
    res: ServerResponse,
    compiled: readonly CompiledRoute[],
    maxBody: number,
    opts: JsonServerOptions,
    authorize: Authorize | undefined,
  ): Promise<void> {
    const method = req.method ?? 'GET';
    const path = (req.url ?? '/').split('?')[0];
    let routeName = 'unknown';
    const send = (
      status: number,
      body: string,
      contentType: string,
      headers?: Readonly<Record<string, string>>,
    ): void => {
      opts.onAnswer?.(routeName, method, status);
      res.writeHead(status, {
        ...opts.headers,
        ...headers,
        'content-type': contentType,
        'content-length': Buffer.byteLength(body),
      });
      res.end(body);
    };
    const sendError = (err: unknown): void => {
      if (err instanceof TgError) {
        send(err.httpStatus, JSON.stringify({ code: err.code, message: err.message }), 'application/json');
        return;
      }
      opts.log.error({ err, method, path }, 'API handler failed');
      send(500, JSON.stringify({ code: 'TG_ERR_INTERNAL', message: 'internal error' }), 'application/json');
    };
    try {
      let client: unknown;
      if (authorize !== undefined) {
        const a = await authorize(req);
        if (!a.allowed) {
          req.resume();
          opts.log.info({ method, path, status: a.status, reason: a.reason }, 'API request refused');
          throw new TgError(
            a.status === 401 ? 'TG_ERR_UNAUTHENTICATED' : 'TG_ERR_FORBIDDEN',
            `client refused: ${a.reason}`,
          );
        }
        client = a.principal;
      }
      let m: ReturnType<typeof matchRoute>;
      try {
        m = matchRoute(compiled, method, splitPath(path));
      } catch (err) {
        req.resume();
        throw err;
      }
      if (m === null) {
        req.resume();
        throw new TgError('TG_ERR_NOT_FOUND', `no resource ${path}`);
      }
      if (m === 'method') {
        req.resume();
        throw new TgError('TG_ERR_METHOD_NOT_ALLOWED', `${method} is not allowed on ${path}`);
      }
      const route = m.route.route;
      routeName = route.path;
      const contentType = req.headers['content-type'];
      if (contentType !== undefined && hasBody(req) && !isJsonType(contentType)) {
        req.resume();
        throw new TgError(
          'TG_ERR_UNSUPPORTED_MEDIA_TYPE',
          `request bodies are application/json, not ${contentType.slice(0, 80)}`,
        );
      }
      let body = await readJsonBody(req, maxBody);
      if (route.body !== undefined) body = parseBody(route.body, body);
      const params = { ...m.params };
      for (const [k, schema] of Object.entries(route.params ?? {}))
        params[k] = parseBody(schema, params[k], k) as string;
      const query = new URLSearchParams((req.url ?? '').split('?')[1] ?? '');
      const queryValues = parseQuery(route, query);
      const apiReq: ApiRequest = {
        method: method as HttpMethod,
        path,
        params,
        body,
        query,
        queryValues,
        client,
        headers: req.headers,
      };
      const run = async (): Promise<unknown> => route.handler(apiReq);
      let result: unknown;
      if (method === 'GET') result = await run();
      else {
        const next = this.queue.then(run, run);
        this.queue = next.catch(() => undefined);
        result = await next;
      }
      if (isAnswer(result)) {
        const h = result.headers;
        if (result.text !== undefined)
          send(result.status, result.text, result.contentType ?? 'text/plain', h);
        else if (result.json === undefined) send(result.status, '', 'application/json', h);
        else send(result.status, JSON.stringify(result.json), 'application/json', h);
      } else {
        send(200, JSON.stringify(result ?? {}), 'application/json');
      }
    } catch (err) {
      if (err instanceof TgError && err.code === 'TG_ERR_PAYLOAD_TOO_LARGE') discardBody(req, maxBody);
      sendError(err);
    }
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    if (this.socketPath !== '') rmSync(this.socketPath, { force: true });
  }
}

/** The query checked like a body: refused without a schema, no parameter twice. */
function parseQuery(route: Route, query: URLSearchParams): unknown {
  const keys = [...query.keys()];
  if (route.query === undefined) {
    if (keys.length > 0)
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        `invalid request: ${route.path} takes no query parameters (got ${keys
          .slice(0, 4)
          .map((k) => `'${k.slice(0, 32)}'`)
          .join(', ')})`,
      );
    return undefined;
  }
  const seen = new Set<string>();
  for (const k of keys) {
    if (seen.has(k))
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        `invalid request: query parameter '${k.slice(0, 32)}' given twice`,
      );
    seen.add(k);
  }
  return parseBody(route.query, Object.fromEntries(query), 'query');
}

/**
 * After a 413 the rest of the body is read and dropped unparsed (so the client sees the answer
 * rather than a reset), up to DISCARD_FACTOR times the limit; beyond that the connection is cut.
 */
function discardBody(req: IncomingMessage, maxBody: number): void {
  let seen = 0;
  req.on('data', (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > DISCARD_FACTOR * maxBody) req.destroy();
  });
  req.resume();
}

const DISCARD_FACTOR = 16;

/** JSON media types: application/json and application/*+json, any parameters. */
function isJsonType(contentType: string): boolean {
  const t = contentType.split(';')[0].trim().toLowerCase();
  return t === 'application/json' || (t.startsWith('application/') && t.endsWith('+json'));
}

function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (len !== undefined && len !== '0');
}

function readJsonBody(req: IncomingMessage, maxBody: number): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 'NaN');
  if (Number.isFinite(declared) && declared > maxBody) {
    return Promise.reject(
      new TgError('TG_ERR_PAYLOAD_TOO_LARGE', `request body of ${declared} bytes exceeds ${maxBody} bytes`),
    );
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > maxBody) {
        failed = true;
        for (const c of chunks) c.fill(0);
        chunks.length = 0;
        reject(new TgError('TG_ERR_PAYLOAD_TOO_LARGE', `request body exceeds ${maxBody} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('error', (err) => {
      if (!failed)
        reject(new TgError('TG_ERR_INVALID_ARGUMENT', 'request body could not be read', { cause: err }));
      failed = true;
    });
    req.on('end', () => {
      if (failed) return;
      const raw = Buffer.concat(chunks, size);
      for (const c of chunks) c.fill(0);
      if (raw.length === 0) {
        resolve(undefined);
        return;
      }
      try {
        resolve(JSON.parse(raw.toString('utf8')));
      } catch {
        reject(new TgError('TG_ERR_INVALID_ARGUMENT', 'request body is not valid JSON'));
      } finally {
        raw.fill(0);
      }
    });
  });
}

/** Removes a socket file nobody serves; TG_ERR_CONFLICT when a live server answers on it. */
async function removeStaleSocket(path: string): Promise<void> {
  if (!existsSync(path)) return;
  const live = await new Promise<boolean>((resolve) => {
    const s = connect(path);
    const t = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, 1000);
    s.once('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
  if (live) throw new TgError('TG_ERR_CONFLICT', `${path} is already served by another process`);
  rmSync(path, { force: true });
}

// ---------------------------------------------------------------------------------------
// Client

export interface ApiResult {
  status: number;
  /** The parsed JSON answer, or the text when it is not JSON. */
  body: unknown;
  /** The answer exactly as received. */
  raw: string;
}

/**
 * Where a JSON API is: a Unix socket path (plain HTTP), or an endpoint object naming a Unix
 * socket or a TCP address and, for HTTPS, the TLS options (a function when they change, as a
 * renewed client identity does; it is called once per request).
 */
export type ApiEndpoint =
  | string
  | {
      readonly socketPath?: string;
      readonly host?: string;
      readonly port?: number;
      readonly tls?: ConnectionOptions | (() => ConnectionOptions);
    };

export function endpointName(e: ApiEndpoint): string {
  if (typeof e === 'string') return e;
  const where = e.socketPath ?? `${e.host ?? 'localhost'}:${e.port ?? 0}`;
  return e.tls === undefined ? where : `https+${where}`;
}

/** One request to a JSON API. Never throws for an HTTP error status. */
export function apiRequest(
  endpoint: ApiEndpoint,
  method: HttpMethod,
  path: string,
  body?: unknown,
  opts: { timeoutMs?: number; rawBody?: string | Buffer; headers?: Record<string, string> } = {},
): Promise<ApiResult> {
  const e = typeof endpoint === 'string' ? { socketPath: endpoint } : endpoint;
  const name = endpointName(endpoint);
  const payload =
    opts.rawBody !== undefined
      ? Buffer.from(opts.rawBody)
      : body === undefined
        ? null
        : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    let tls: ConnectionOptions | undefined;
    try {
      tls = typeof e.tls === 'function' ? e.tls() : e.tls;
    } catch (err) {
      reject(new TgError('TG_ERR_COMMAND_FAILED', `API ${name}: no client identity`, { cause: err }));
      return;
    }
    const where = e.socketPath !== undefined ? { socketPath: e.socketPath } : { host: e.host, port: e.port };
    const reqOpts: RequestOptions = {
      ...where,
      method,
      path,
      // The caller's headers may name another content type (a test of the server's 415).
      headers:
        payload === null
          ? { ...opts.headers }
          : { 'content-type': 'application/json', ...opts.headers, 'content-length': payload.length },
      timeout: opts.timeoutMs ?? 30_000,
    };
    // A fresh connection per request: a TLS session is bound to the identities it was made with.
    const req = (tls === undefined ? request : httpsRequest)(
      tls === undefined ? reqOpts : { ...reqOpts, ...tls, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const raw = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = raw;
          if ((res.headers['content-type'] ?? '').includes('application/json') && raw.length > 0) {
            try {
              parsed = JSON.parse(raw);
            } catch {
              parsed = raw;
            }
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, raw });
        });
        res.on('error', reject);
      },
    );
    // A deadline for the whole exchange, not only for silence between packets: a peer that
    // trickles its answer (or is stopped after accepting) still costs at most timeoutMs.
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const deadline = setTimeout(
      () => req.destroy(new Error(`no answer from ${name} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    deadline.unref();
    req.on('close', () => clearTimeout(deadline));
    req.on('timeout', () => req.destroy(new Error(`no answer from ${name} within ${timeoutMs} ms`)));
    req.on('error', (err) =>
      reject(new TgError('TG_ERR_COMMAND_FAILED', `API ${name}: ${err.message}`, { cause: err })),
    );
    if (payload !== null) req.end(payload);
    else req.end();
  });
}

/**
 * The {code, message} of an error answer with a code from the catalogue, else null. Checked by
 * hand: a client (the CNI plugin runs as a process per call) must not pay for loading zod.
 */
function errorOf(body: unknown): { code: ErrorCode; message: string } | null {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return null;
  const { code, message } = body as Record<string, unknown>;
  if (typeof code !== 'string' || typeof message !== 'string' || !Object.hasOwn(ERROR_CODES, code))
    return null;
  return { code: code as ErrorCode, message };
}

/** Like apiRequest, but a status >= 300 throws a TgError with the server's code and message. */
export async function apiCall(
  endpoint: ApiEndpoint,
  method: HttpMethod,
  path: string,
  body?: unknown,
  opts: {
    timeoutMs?: number;
    headers?: Record<string, string>;
    onResponse?: (method: string, path: string, r: ApiResult) => void;
  } = {},
): Promise<unknown> {
  const r = await apiRequest(endpoint, method, path, body, opts);
  opts.onResponse?.(method, path, r);
  if (r.status >= 200 && r.status < 300) return r.body;
  const e = errorOf(r.body);
  if (e !== null) throw new TgError(e.code, e.message);
  throw new TgError('TG_ERR_COMMAND_FAILED', `${method} ${path}: HTTP ${r.status}: ${r.raw.slice(0, 200)}`);
}
