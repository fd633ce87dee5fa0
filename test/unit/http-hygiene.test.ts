// HTTP hygiene of the one server (src/util/http-json.ts): a client sending its head or its
// body slowly is cut off within the stated limits, a half-closed client still gets the answer
// of a handler that awaits, and queries are validated like bodies.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { z } from 'zod';
import { apiRequest, DEFAULT_TIMEOUTS, JsonApiServer, type Route } from '../../src/util/http-json.js';
import { logger } from '../../src/util/log.js';

const dir = mkdtempSync(join(tmpdir(), 'tg-http-hygiene-'));
const socket = join(dir, 'api.sock');
let server: JsonApiServer;

const routes: Route[] = [
  {
    method: 'GET',
    path: '/v1/slow',
    operationId: 'slow',
    summary: 'answers after 300 ms',
    handler: async () => {
      await new Promise((r) => setTimeout(r, 300));
      return { done: true };
    },
  },
  {
    method: 'POST',
    path: '/v1/echo',
    operationId: 'echo',
    summary: 'echoes after 200 ms',
    body: z.strictObject({ n: z.number() }),
    handler: async (req) => {
      await new Promise((r) => setTimeout(r, 200));
      return req.body;
    },
  },
  {
    method: 'GET',
    path: '/v1/search',
    operationId: 'search',
    summary: 'a route with a query schema',
    query: z.strictObject({ q: z.string().max(8) }),
    handler: (req) => req.queryValues,
  },
];

before(async () => {
  server = await JsonApiServer.listen({
    socketPath: socket,
    routes,
    log: logger('http-hygiene-test'),
    timeouts: { headersTimeoutMs: 700, requestTimeoutMs: 1200, idleTimeoutMs: 500 },
  });
});

after(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Sends `chunks` with `gapMs` between them (half-closing after the last when asked). */
function rawExchange(
  chunks: string[],
  opts: { gapMs?: number; halfClose?: boolean } = {},
): Promise<{ text: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const s = connect(socket);
    s.setEncoding('utf8');
    let text = '';
    let timer: NodeJS.Timeout | undefined;
    s.on('data', (d: string) => {
      text += d;
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ text, ms: Date.now() - started });
    });
    s.on('error', (err) => {
      if (
        (err as NodeJS.ErrnoException).code === 'EPIPE' ||
        (err as NodeJS.ErrnoException).code === 'ECONNRESET'
      )
        return;
      reject(err);
    });
    let i = 0;
    const next = (): void => {
      if (s.destroyed) return;
      if (i < chunks.length) {
        s.write(chunks[i++]);
        timer = setTimeout(next, opts.gapMs ?? 0);
      } else if (opts.halfClose) s.end();
    };
    s.on('connect', next);
  });
}

test('the default limits are the documented ones: head 10 s, whole request 15 s, idle 5 s', () => {
  assert.equal(DEFAULT_TIMEOUTS.headersTimeoutMs, 10_000);
  assert.equal(DEFAULT_TIMEOUTS.requestTimeoutMs, 15_000);
  assert.equal(DEFAULT_TIMEOUTS.idleTimeoutMs, 5_000);
});

test('a half-closed client gets the answer of a GET handler that awaits', async () => {
  const r = await rawExchange(['GET /v1/slow HTTP/1.1\r\nHost: x\r\n\r\n'], { halfClose: true });
  assert.match(r.text, /^HTTP\/1\.1 200 /, r.text);
  assert.match(r.text, /\{"done":true\}/);
});

test('a half-closed client gets the answer of a POST handler that awaits', async () => {
  const body = '{"n":7}';
  const r = await rawExchange(
    [
      `POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    ],
    { halfClose: true },
  );
  assert.match(r.text, /^HTTP\/1\.1 200 /, r.text);
  assert.match(r.text, /\{"n":7\}/);
});

test('a client sending its body slowly is answered 408 and cut off at the request limit', async () => {
  const head =
    'POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n';
  const r = await rawExchange([head, ...Array.from({ length: 40 }, () => ' ')], { gapMs: 150 });
  assert.ok(r.ms < 1200 + 1000 + 500, `cut off after ${r.ms} ms`);
  assert.ok(r.ms >= 1000, `cut off too early: ${r.ms} ms`);
  assert.match(r.text, /^HTTP\/1\.1 408 /, r.text);
});

test('a client sending its request head slowly is cut off at the head limit', async () => {
  const r = await rawExchange(
    ['GET /v1/slow HTTP/1.1\r\n', ...Array.from({ length: 40 }, (_, i) => `X-A${i}: 1\r\n`)],
    {
      gapMs: 100,
    },
  );
  assert.ok(r.ms < 700 + 1000 + 500, `cut off after ${r.ms} ms`);
  assert.match(r.text, /^HTTP\/1\.1 408 /, r.text);
});

test('queries: none on a route without a query schema, none twice, and the schema refuses the rest', async () => {
  const cases: [string, number][] = [
    ['/v1/slow?x=1', 400],
    ['/v1/search?q=abc&q=def', 400],
    ['/v1/search?q=abc&other=1', 400],
    ['/v1/search?q=far-too-long', 400],
    ['/v1/search', 400],
    ['/v1/search?q=abc', 200],
  ];
  for (const [path, status] of cases) {
    const r = await apiRequest(socket, 'GET', path);
    assert.equal(r.status, status, `${path}: ${r.raw}`);
    if (status === 400) assert.equal((r.body as { code: string }).code, 'TG_ERR_INVALID_ARGUMENT');
  }
});
