// The web console without a lab: login links and sessions (one use, expiry, idle end), the
// listen address, the pages' files under a strict CSP (no inline script or style anywhere),
// and the server's rules over an orchestrator with an in-memory store: a session from a link,
// the change header and origin, the pages public but no data without a session.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadAssets } from '../../src/console/assets.js';
import { CONTENT_SECURITY_POLICY, parseListen, WebConsole } from '../../src/console/server.js';
import { ConsoleSessions, LINK_TTL_MS, SESSION_IDLE_MS, SESSION_MAX_MS } from '../../src/console/sessions.js';
import { sumSamples } from '../../src/orchestrator/observe.js';
import { Orchestrator } from '../../src/orchestrator/orchestrator.js';
import { SqliteStore } from '../../src/orchestrator/sqlite-store.js';
import { logger } from '../../src/util/log.js';

let orch: Orchestrator;
let web: WebConsole;

before(async () => {
  orch = new Orchestrator(SqliteStore.memory(), logger('test.console'));
  web = await WebConsole.start(orch, { listen: { host: '127.0.0.1', port: 0 }, log: logger('test.console') });
});

after(async () => {
  await web.close();
  await orch.close();
});

function http(
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: web.port, method, path, headers }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => {
        text += d.toString();
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function session(): Promise<string> {
  const link = new URL(web.loginLink().url);
  const r = await http('GET', link.pathname + link.search);
  assert.equal(r.status, 303);
  return String(r.headers['set-cookie']).split(';')[0];
}

test('a login link works once and only within its lifetime; sessions end when idle or too old', () => {
  let now = 1_000_000;
  const s = new ConsoleSessions(() => now);
  const a = s.issueLink();
  const id = s.redeem(a.token);
  assert.ok(id !== null);
  assert.equal(s.redeem(a.token), null, 'a link worked twice');
  assert.equal(s.check(id), true);
  const late = s.issueLink();
  now += LINK_TTL_MS + 1;
  assert.equal(s.redeem(late.token), null, 'an expired link worked');
  assert.equal(s.check(id), true);
  now += SESSION_IDLE_MS + 1;
  assert.equal(s.check(id), false, 'an idle session lived on');
  const b = s.redeem(s.issueLink().token)!;
  for (let t = 0; t < SESSION_MAX_MS; t += SESSION_IDLE_MS / 2) {
    now += SESSION_IDLE_MS / 2;
    if (t + SESSION_IDLE_MS / 2 < SESSION_MAX_MS) assert.equal(s.check(b), true);
  }
  now += SESSION_IDLE_MS / 2;
  assert.equal(s.check(b), false, 'a session outlived its maximum');
  for (const bad of [undefined, '', 'x', 'a'.repeat(43), `${'a'.repeat(42)}!`])
    assert.equal(s.check(bad), false);
  const c = s.redeem(s.issueLink().token)!;
  s.end(c);
  assert.equal(s.check(c), false);
});

test('the listen address: HOST:PORT, [v6]:PORT; anything else is refused', () => {
  assert.deepEqual(parseListen('127.0.0.1:7080'), { host: '127.0.0.1', port: 7080 });
  assert.deepEqual(parseListen('[::1]:0'), { host: '::1', port: 0 });
  assert.deepEqual(parseListen('localhost:80'), { host: 'localhost', port: 80 });
  for (const bad of ['127.0.0.1', ':80', '127.0.0.1:99999', '::1:80', 'a b:1'])
    assert.throws(() => parseListen(bad), /TG_ERR_INVALID_ARGUMENT|expected HOST:PORT/);
});

test('without TLS the console refuses an address that is not loopback', async () => {
  await assert.rejects(
    WebConsole.start(orch, { listen: { host: '0.0.0.0', port: 0 }, log: logger('test.console') }),
    /only over TLS/,
  );
});

test('the pages: no inline script or style, preact and htm served from node_modules with no bare import', () => {
  const assets = loadAssets();
  const byPath = new Map(assets.map((a) => [a.path, a]));
  const index = byPath.get('/console/')!;
  assert.match(index.contentType, /^text\/html/);
  for (const m of index.body.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)) {
    assert.match(m[1], /src="\/console\//, 'a script not from the console');
    assert.equal(m[2].trim(), '', 'an inline script');
  }
  assert.doesNotMatch(index.body, /<style|\sstyle=|\son[a-z]+=/i);
  for (const p of ['/console/vendor/preact.mjs', '/console/vendor/hooks.mjs', '/console/vendor/htm.mjs']) {
    const a = byPath.get(p)!;
    assert.ok(a.body.length > 500, p);
    assert.doesNotMatch(a.body, /from\s*["']preact["']|sourceMappingURL|\beval\(|new Function\(/, p);
  }
  assert.match(byPath.get('/console/vendor/hooks.mjs')!.body, /from"\.\/preact\.mjs"/);
  for (const a of assets.filter((x) => x.path.endsWith('.js')))
    assert.doesNotMatch(a.body, /https?:\/\/|innerHTML|dangerouslySetInnerHTML/, a.path);
  assert.doesNotMatch(CONTENT_SECURITY_POLICY, /unsafe|\*|https?:/);
});

test('pages are public, data needs a session from a link; changes need the header and the origin', async () => {
  const page = await http('GET', '/console/');
  assert.equal(page.status, 200);
  assert.equal(page.headers['content-security-policy'], CONTENT_SECURITY_POLICY);
  assert.equal(page.headers['x-frame-options'], 'DENY');
  assert.equal(page.headers['cache-control'], 'no-store');
  assert.equal((await http('GET', '/')).headers.location, '/console/');
  for (const p of ['/v1/tenants', '/v1/status', '/v1/topology', '/openapi.json', '/console/session'])
    assert.equal((await http('GET', p)).status, 401, p);
  assert.equal((await http('GET', '/console/login?token=nope')).status, 401);
  assert.equal((await http('GET', '/console/login')).status, 400);
  assert.equal((await http('POST', '/v1/console/login')).status, 403, 'the browser side mints no links');

  const cookie = await session();
  assert.equal((await http('GET', '/v1/status', { cookie })).status, 200);
  assert.equal((await http('POST', '/v1/console/login', { cookie, 'x-tenguard-console': '1' })).status, 404);
  const body = JSON.stringify({ name: 'acme', pool: '100.64.7.0/24' });
  const json = { cookie, 'content-type': 'application/json' };
  assert.equal((await http('POST', '/v1/tenants', json, body)).status, 403, 'a change without the header');
  const foreign = await http(
    'POST',
    '/v1/tenants',
    { ...json, 'x-tenguard-console': '1', origin: 'http://127.0.0.1:1' },
    body,
  );
  assert.equal(foreign.status, 403, 'a change from another origin');
  const made = await http(
    'POST',
    '/v1/tenants',
    { ...json, 'x-tenguard-console': '1', origin: `http://127.0.0.1:${web.port}` },
    body,
  );
  assert.equal(made.status, 201, made.body);
  assert.deepEqual(
    (await orch.service.listTenants()).map((t) => t.name),
    ['acme'],
  );
  // The policy editor's test route: a failing test is reported, nothing is stored.
  const doc = {
    version: 1,
    tenant: 'acme',
    rules: [{ id: 'out', direction: 'egress', workloads: { labels: {} }, peers: [{ labels: {} }] }],
    tests: [
      {
        id: 'never',
        src: { labels: { a: 'b' } },
        dst: { labels: {} },
        protocol: 'tcp',
        port: 1,
        expect: 'allow',
      },
    ],
  };
  const tested = await http(
    'POST',
    '/v1/tenants/acme/policy/test',
    { ...json, 'x-tenguard-console': '1' },
    JSON.stringify(doc),
  );
  assert.equal(tested.status, 200, tested.body);
  const report = JSON.parse(tested.body) as {
    ok: boolean;
    tests: number;
    errors: { code: string; path: string }[];
  };
  assert.equal(report.ok, false);
  assert.equal(report.tests, 1);
  assert.deepEqual(
    report.errors.map((e) => [e.code, e.path]),
    [['test-failed', 'tests[0]']],
  );
  await assert.rejects(orch.setPolicy('acme', doc), /expected allow, got deny/);
  await assert.rejects(orch.service.getPolicy('acme'), /has no policy document/);

  const out = await http('POST', '/console/logout', { cookie, 'x-tenguard-console': '1' });
  assert.match(
    String(out.headers['set-cookie']),
    /^tg_console=; Path=\/; HttpOnly; SameSite=Strict; Max-Age=0$/,
  );
  assert.equal((await http('GET', '/v1/status', { cookie })).status, 401);
});

test('drop counters are summed over their labels from the text format', () => {
  const sums = sumSamples(
    [
      '# HELP tenguard_nic_forward_dropped_total x',
      '# TYPE tenguard_nic_forward_dropped_total counter',
      'tenguard_nic_forward_dropped_total{reason="policy"} 3',
      'tenguard_nic_forward_dropped_total{reason="noRoute",x="a}b"} 4',
      'tenguard_nic_workloads 2',
      'garbage line',
      'tenguard_nic_keys{kind="psk"} NaN',
    ].join('\n'),
  );
  assert.equal(sums.get('tenguard_nic_forward_dropped_total'), 7);
  assert.equal(sums.get('tenguard_nic_workloads'), 2);
  assert.equal(sums.has('tenguard_nic_keys'), false);
});

test('over TLS the console is https and its session cookie is Secure', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tgu-console-tls-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    const key = readFileSync(join(dir, 'key.pem'));
    const tlsWeb = await WebConsole.start(orch, {
      listen: { host: '127.0.0.1', port: 0 },
      log: logger('test.console'),
      tls: { cert: readFileSync(join(dir, 'cert.pem'), 'utf8'), key },
    });
    key.fill(0);
    try {
      assert.match(tlsWeb.url, /^https:\/\/127\.0\.0\.1:\d+\/console\/$/);
      const link = new URL(tlsWeb.loginLink().url);
      const r = await new Promise<{ status: number; cookie: string }>((resolve, reject) => {
        const req = httpsRequest(
          {
            host: '127.0.0.1',
            port: tlsWeb.port,
            path: link.pathname + link.search,
            rejectUnauthorized: false,
          },
          (res) => {
            res.resume();
            resolve({ status: res.statusCode ?? 0, cookie: String(res.headers['set-cookie']) });
          },
        );
        req.on('error', reject);
        req.end();
      });
      assert.equal(r.status, 303);
      assert.match(r.cookie, /; HttpOnly; SameSite=Strict; Max-Age=\d+; Secure$/);
    } finally {
      await tlsWeb.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
