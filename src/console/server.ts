// The web console: served by the orchestrator on its own TCP listener (a browser cannot speak
// to a Unix socket), on the one HTTP stack (../util/http-json.ts). What it serves:
//
//   GET  /                       -> 303 /console/
//   GET  /console/ and its files the pages (assets.ts): public, they hold no data
//   GET  /console/login?token=T  a one-time link -> 303 /console/ with the session cookie
//   POST /console/logout         ends the session
//   GET  /console/session        200 while the session lives (the pages ask it first)
//   /v1/... and /openapi.json    the orchestrator's own API routes, the same handlers and
//                                schemas as on its Unix socket (../orchestrator/api.ts)
//
// Authentication is the API's: the link comes only from POST /v1/console/login on the
// orchestrator's API socket, i.e. from an operator who passed its mTLS (`tenguard console
// login`); see sessions.ts. Everything but the pages and the login needs the session cookie
// (HttpOnly, SameSite=Strict, Secure over TLS). A request that changes anything must also
// carry `x-tenguard-console: 1` (a cross-site form cannot set it) and, when it has an Origin,
// come from the console's own origin.
//
// Every answer carries a strict Content-Security-Policy (scripts, styles and fetches from the
// console's own origin only: no inline script or style, no eval, no frames), no-store caching,
// nosniff and no referrer (so the login link never leaks through a Referer). Without TLS the
// console listens only on a loopback address.
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { z } from 'zod';
import { orchestratorRoutes } from '../orchestrator/api.js';
import type { Orchestrator } from '../orchestrator/orchestrator.js';
import { TgError } from '../util/errors.js';
import { fullAnswer, JsonApiServer, type RequestAuthorization, type Route } from '../util/http-json.js';
import type { Logger } from '../util/log.js';
import { type Asset, loadAssets } from './assets.js';
import { ConsoleSessions, SECRET_RE, SESSION_MAX_MS } from './sessions.js';

export const COOKIE = 'tg_console';
export const CSRF_HEADER = 'x-tenguard-console';

export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'cache-control': 'no-store',
};

export interface ConsoleListen {
  host: string;
  port: number;
}

/** Parses HOST:PORT ([v6]:PORT); port 0 picks a free one. */
export function parseListen(text: string): ConsoleListen {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):([0-9]{1,5})$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (m === null || host === undefined || port > 65535)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `--console ${JSON.stringify(text)}: expected HOST:PORT`);
  return { host, port };
}

function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

function cookieValue(req: IncomingMessage, name: string): string | undefined {
  const header = req.headers.cookie;
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

const LOGIN_FAILED_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tenguard console: login failed</title>
<link rel="stylesheet" href="/console/style.css"></head>
<body><main class="login"><h1>Login link not valid</h1>
<p>The link was used already or has expired. Run <code>tenguard console login</code> for a new one.</p>
</main></body></html>
`;

export interface WebConsoleOptions {
  listen: ConsoleListen;
  /** Serve over TLS with this certificate chain and key (PEM); the caller wipes the key. */
  tls?: { cert: string; key: Buffer };
  log: Logger;
}

export class WebConsole {
  private constructor(
    private readonly server: JsonApiServer,
    private readonly host: string,
    private readonly tls: boolean,
    readonly sessions: ConsoleSessions,
  ) {}

  static async start(o: Orchestrator, opts: WebConsoleOptions): Promise<WebConsole> {
    const { host, port } = opts.listen;
    if (opts.tls === undefined && !isLoopback(host))
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        `the console listens on ${host} only over TLS (--console-cert, --console-key); without TLS on a loopback address only`,
      );
    const assets = loadAssets();
    const sessions = new ConsoleSessions();
    const tls = opts.tls !== undefined;
    const publicPaths = new Set(['/', '/console/login', ...assets.map((a) => a.path)]);
    const authorize = (req: IncomingMessage): RequestAuthorization => {
      const path = (req.url ?? '/').split('?')[0];
      const method = req.method ?? 'GET';
      if (method === 'GET' && publicPaths.has(path)) return { allowed: true, id: 'public' };
      if (method !== 'GET') {
        if (req.headers[CSRF_HEADER] !== '1')
          return { allowed: false, status: 403, reason: `a change needs the ${CSRF_HEADER} header` };
        const origin = req.headers.origin;
        const own = `${tls ? 'https' : 'http'}://${req.headers.host ?? ''}`;
        if (origin !== undefined && origin !== own)
          return { allowed: false, status: 403, reason: 'a change from another origin' };
      }
      const session = cookieValue(req, COOKIE);
      if (!sessions.check(session))
        return {
          allowed: false,
          status: 401,
          reason: 'no console session: open a login link from `tenguard console login`',
        };
      return { allowed: true, id: 'console', principal: session };
    };
    const cookie = (value: string, maxAgeS: number): string =>
      `${COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeS}${tls ? '; Secure' : ''}`;
    const routes: Route[] = [
      {
        method: 'GET',
        path: '/',
        operationId: 'consoleRoot',
        summary: 'The console',
        handler: () => fullAnswer({ status: 303, text: '', headers: { location: '/console/' } }),
      },
      ...assets.map(
        (a: Asset, i): Route => ({
          method: 'GET',
          path: a.path,
          operationId: `consoleAsset${i}`,
          summary: `console file ${a.path}`,
          produces: a.contentType,
          handler: () => fullAnswer({ status: 200, text: a.body, contentType: a.contentType }),
        }),
      ),
      {
        method: 'GET',
        path: '/console/login',
        operationId: 'consoleLogin',
        summary: 'Exchange a one-time login link for a session cookie',
        query: z.strictObject({ token: z.string().max(64) }),
        handler: (req) => {
          const { token } = req.queryValues as { token: string };
          const id = SECRET_RE.test(token) ? sessions.redeem(token) : null;
          if (id === null) {
            opts.log.info('console login refused: link unknown, used or expired');
            return fullAnswer({
              status: 401,
              text: LOGIN_FAILED_PAGE,
              contentType: 'text/html; charset=utf-8',
            });
          }
          opts.log.info('console login');
          return fullAnswer({
            status: 303,
            text: '',
            headers: { location: '/console/', 'set-cookie': cookie(id, SESSION_MAX_MS / 1000) },
          });
        },
      },
      {
        method: 'POST',
        path: '/console/logout',
        operationId: 'consoleLogout',
        summary: 'End the session',
        handler: (req) => {
          sessions.end(req.client as string | undefined);
          return fullAnswer({
            status: 200,
            json: { loggedIn: false },
            headers: { 'set-cookie': cookie('', 0) },
          });
        },
      },
      {
        method: 'GET',
        path: '/console/session',
        operationId: 'consoleSession',
        summary: 'Whether the session lives',
        handler: () => ({ loggedIn: true }),
      },
      ...orchestratorRoutes(o),
    ];
    const server = await JsonApiServer.listen({
      tcp: { host, port },
      routes,
      authorize,
      log: opts.log,
      headers: SECURITY_HEADERS,
      ...(opts.tls === undefined
        ? {}
        : { tls: { options: { cert: opts.tls.cert, key: opts.tls.key }, requestCert: false, authorize } }),
    });
    return new WebConsole(server, host, tls, sessions);
  }

  get port(): number {
    return this.server.port;
  }

  /** The console's address, e.g. http://127.0.0.1:7080/console/ */
  get url(): string {
    const h = isIP(this.host) === 6 ? `[${this.host}]` : this.host;
    return `${this.tls ? 'https' : 'http'}://${h}:${this.port}/console/`;
  }

  /** A one-time login link. */
  loginLink(): { url: string; expiresAt: string } {
    const l = this.sessions.issueLink();
    return {
      url: `${this.url}login?token=${l.token}`,
      expiresAt: l.expiresAt.toISOString(),
    };
  }

  close(): Promise<void> {
    return this.server.close();
  }
}

/**
 * The route the orchestrator's API socket adds for the console: POST /v1/console/login, a
 * one-time login link (409 when the orchestrator serves no console).
 */
export function consoleApiRoutes(web: WebConsole | null): Route[] {
  return [
    {
      method: 'POST',
      path: '/v1/console/login',
      operationId: 'consoleLoginLink',
      summary: 'A one-time login link to the web console (valid 5 minutes, one use)',
      handler: () => {
        if (web === null)
          throw new TgError(
            'TG_ERR_CONFLICT',
            'this orchestrator serves no web console (start it with --console HOST:PORT)',
          );
        return web.loginLink();
      },
    },
  ];
}
