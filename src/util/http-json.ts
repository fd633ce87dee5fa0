// HTTP+JSON over a Unix socket, for the management APIs of the NIC agent and the vSwitch
// daemon: a small router over node:http whose routes are thin functions over domain classes,
// and a client. Contract of the server:
// - request bodies are JSON, at most maxBodyBytes (413 TG_ERR_PAYLOAD_TOO_LARGE beyond; the
//   rest of the body is dropped unparsed); invalid JSON is 400 TG_ERR_INVALID_ARGUMENT;
// - a handler answers a value (200, or the status it names) or throws: a TgError becomes its
//   catalogue status with {code, message}; anything else is 500 TG_ERR_INTERNAL with a fixed
//   message (the error itself goes to the log at error level, never to the client);
// - requests that change state (any method but GET) run one at a time, in arrival order, so a
//   handler that awaits never interleaves with another change;
// - the socket file is created mode 0600; a stale one is replaced, a live one is a conflict.
import { existsSync, rmSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { z } from 'zod';
import { ERROR_CODES, type ErrorCode, TgError } from './errors.js';
import type { Logger } from './log.js';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface ApiRequest {
  method: HttpMethod;
  path: string;
  /** Values of the route's `:name` segments, URI-decoded. */
  params: Readonly<Record<string, string>>;
  /** Parsed JSON body; undefined when the request had none. */
  body: unknown;
}

/** What a handler returns: a JSON value (status 200), or a full answer. */
export interface ApiAnswer {
  status: number;
  json?: unknown;
  /** A text answer (for /metrics) instead of JSON. */
  text?: string;
  contentType?: string;
}

export interface Route {
  method: HttpMethod;
  /** '/v1/workloads/:workload'; segments starting with ':' match one non-empty segment. */
  path: string;
  handler: (req: ApiRequest) => unknown | ApiAnswer | Promise<unknown | ApiAnswer>;
}

export interface JsonServerOptions {
  socketPath: string;
  routes: readonly Route[];
  log: Logger;
  /** Default 64 KiB. */
  maxBodyBytes?: number;
  /** Called after each answer (for request counters). */
  onAnswer?: (route: string, method: string, status: number) => void;
}

export const DEFAULT_MAX_BODY_BYTES = 64 * 1024;

const ANSWER = Symbol('answer');

/** Marks a handler's result as a full answer rather than a JSON value. */
export function answer(status: number, json?: unknown): ApiAnswer & { [ANSWER]: true } {
  return { [ANSWER]: true, status, json };
}

export function textAnswer(text: string, contentType: string): ApiAnswer & { [ANSWER]: true } {
  return { [ANSWER]: true, status: 200, text, contentType };
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
          ok = false;
          break;
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
    readonly socketPath: string,
  ) {}

  static async listen(opts: JsonServerOptions): Promise<JsonApiServer> {
    const compiled = opts.routes.map((route) => ({ route, segments: splitPath(route.path) }));
    const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    await removeStaleSocket(opts.socketPath);
    const server = createServer();
    const self = new JsonApiServer(server, opts.socketPath);
    server.on('request', (req, res) => {
      void self.handle(req, res, compiled, maxBody, opts);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(opts.socketPath, 0o600);
    return self;
  }

  private async handle(
    req: IncomingMessage,
    res: ServerResponse,
    compiled: readonly CompiledRoute[],
    maxBody: number,
    opts: JsonServerOptions,
  ): Promise<void> {
    const method = req.method ?? 'GET';
    const path = (req.url ?? '/').split('?')[0];
    let routeName = 'unknown';
    const send = (status: number, body: string, contentType: string): void => {
      opts.onAnswer?.(routeName, method, status);
      res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
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
      const m = matchRoute(compiled, method, splitPath(path));
      if (m === null) {
        req.resume();
        throw new TgError('TG_ERR_NOT_FOUND', `no resource ${path}`);
      }
      if (m === 'method') {
        req.resume();
        throw new TgError('TG_ERR_METHOD_NOT_ALLOWED', `${method} is not allowed on ${path}`);
      }
      routeName = m.route.route.path;
      const body = await readJsonBody(req, maxBody);
      const apiReq: ApiRequest = { method: method as HttpMethod, path, params: m.params, body };
      const run = async (): Promise<unknown> => m.route.route.handler(apiReq);
      let result: unknown;
      if (method === 'GET') result = await run();
      else {
        const next = this.queue.then(run, run);
        this.queue = next.catch(() => undefined);
        result = await next;
      }
      if (isAnswer(result)) {
        if (result.text !== undefined) send(result.status, result.text, result.contentType ?? 'text/plain');
        else if (result.json === undefined) send(result.status, '', 'application/json');
        else send(result.status, JSON.stringify(result.json), 'application/json');
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
    rmSync(this.socketPath, { force: true });
  }
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

/** One request to a JSON API on a Unix socket. Never throws for an HTTP error status. */
export function apiRequest(
  socketPath: string,
  method: HttpMethod,
  path: string,
  body?: unknown,
  opts: { timeoutMs?: number; rawBody?: string | Buffer } = {},
): Promise<ApiResult> {
  const payload =
    opts.rawBody !== undefined
      ? Buffer.from(opts.rawBody)
      : body === undefined
        ? null
        : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath,
        method,
        path,
        headers: {
          ...(payload === null
            ? {}
            : { 'content-type': 'application/json', 'content-length': payload.length }),
        },
        timeout: opts.timeoutMs ?? 30_000,
      },
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
    req.on('timeout', () => req.destroy(new Error(`no answer from ${socketPath} within the timeout`)));
    req.on('error', (err) =>
      reject(new TgError('TG_ERR_COMMAND_FAILED', `API ${socketPath}: ${err.message}`, { cause: err })),
    );
    if (payload !== null) req.end(payload);
    else req.end();
  });
}

const errorBody = z.object({ code: z.string(), message: z.string() });

/** Like apiRequest, but a status >= 300 throws a TgError with the server's code and message. */
export async function apiCall(
  socketPath: string,
  method: HttpMethod,
  path: string,
  body?: unknown,
  opts: { timeoutMs?: number; onResponse?: (method: string, path: string, r: ApiResult) => void } = {},
): Promise<unknown> {
  const r = await apiRequest(socketPath, method, path, body, opts);
  opts.onResponse?.(method, path, r);
  if (r.status >= 200 && r.status < 300) return r.body;
  const e = errorBody.safeParse(r.body);
  if (e.success && Object.hasOwn(ERROR_CODES, e.data.code)) {
    throw new TgError(e.data.code as ErrorCode, e.data.message);
  }
  throw new TgError('TG_ERR_COMMAND_FAILED', `${method} ${path}: HTTP ${r.status}: ${r.raw.slice(0, 200)}`);
}
