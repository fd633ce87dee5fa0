// The web console end to end in a real browser: Debian's chromium driven by playwright-core
// (never a browser download of Playwright's), against the orchestrator of a two-host lab run
// with --console. Logged in through the one-time link of `tenguard console login`, the test
// creates a tenant and two workloads in the pages and sees them appear, saves a policy whose
// tests pass, watches a flow arrive in the live flow table, and sees a failing policy test
// block a save. Every view is checked with axe-core (no serious or critical violation), every
// response the pages fetch is scanned for key material, and the screenshots are kept under
// test-artifacts/console/ (the path is printed).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { type OrchLab, startOrchLab, stopOrchLab } from '../helpers/orch.js';
import { pingUntilReply } from '../helpers/ping.js';

const ROOT = join(import.meta.dirname, '..', '..', '..');
const BIN = join(ROOT, 'bin', 'tenguard.js');
const ARTIFACTS = join(ROOT, 'test-artifacts', 'console');
const CHROMIUM = '/usr/bin/chromium';
const prefix = `tgu${randomBytes(2).toString('hex').slice(0, 4)}`;

let L: OrchLab | undefined;
let browser: Browser | undefined;
let context: BrowserContext | undefined;
let page: Page;
let origin = '';
/** Every answer the pages fetched: URL, content type, body. */
const seen: { url: string; type: string; body: string }[] = [];
const axeResults: Record<string, unknown> = {};
const screenshots: string[] = [];

const POLICY_OK = {
  version: 1,
  tenant: 'acme',
  rules: [
    { id: 'out', action: 'allow', direction: 'egress', workloads: { labels: {} }, peers: [{ labels: {} }] },
    { id: 'in', action: 'allow', direction: 'ingress', workloads: { labels: {} }, peers: [{ labels: {} }] },
  ],
  tests: [
    {
      id: 'web-reaches-db',
      src: { workload: 'web' },
      dst: { workload: 'db' },
      protocol: 'tcp',
      port: 80,
      expect: 'allow',
    },
  ],
};

const POLICY_FAILING = {
  ...POLICY_OK,
  tests: [{ ...POLICY_OK.tests[0], id: 'web-must-not-reach-db', expect: 'deny' }],
};

function tenguard(args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [BIN, ...args], { timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}: ${stderr}`)) : resolve(stdout),
    ),
  );
}

async function loginLink(): Promise<string> {
  const out = await tenguard(['console', 'login', '--api', L!.orch.socket, '--insecure']);
  const url = out.split('\n')[0];
  assert.match(url, /^http:\/\/127\.0\.0\.1:[0-9]+\/console\/login\?token=[A-Za-z0-9_-]{43}$/);
  return url;
}

/** A plain HTTP request to the console (no browser). */
function http(
  method: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const u = new URL(path, origin);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: u.hostname, port: u.port, method, path: u.pathname + u.search, headers },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => {
          body += d.toString();
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

async function shot(name: string): Promise<void> {
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  screenshots.push(path);
}

/** axe-core on the page as it is; the serious and critical violations. */
async function axe(name: string): Promise<void> {
  const source = readFileSync(join(ROOT, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');
  // Through the DevTools protocol, not a <script> tag: the console's CSP allows no inline
  // script, and the check must see the page under that same policy.
  await page.evaluate(source);
  const r = (await page.evaluate(
    "axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } })",
  )) as {
    violations: { id: string; impact: string; help: string; nodes: { target: unknown }[] }[];
    passes: unknown[];
  };
  const bad = r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  axeResults[name] = {
    passes: r.passes.length,
    violations: r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.length,
    })),
  };
  assert.deepEqual(
    bad.map((v) => `${v.id} (${v.impact}): ${v.help} at ${JSON.stringify(v.nodes.map((n) => n.target))}`),
    [],
    `axe on ${name}`,
  );
}

async function view(id: string, heading: string): Promise<void> {
  await page.goto(`${origin}/console/#/${id}`);
  await page.getByRole('heading', { level: 1, name: heading }).waitFor();
}

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  L = await startOrchLab(prefix, 2, ['--console', '127.0.0.1:0']);
  const link = await loginLink();
  origin = new URL(link).origin;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on('response', (r) => {
    if (!r.url().startsWith(origin)) return;
    const type = r.headers()['content-type'] ?? '';
    r.text().then(
      (body) => seen.push({ url: r.url(), type, body }),
      () => undefined,
    );
  });
});

after(async () => {
  await context?.close().catch(() => undefined);
  await browser?.close().catch(() => undefined);
  await stopOrchLab(L, prefix);
  if (Object.keys(axeResults).length > 0)
    writeFileSync(join(ARTIFACTS, 'axe-results.json'), `${JSON.stringify(axeResults, null, 2)}\n`);
});

test('the console needs a session: links work once, changes need the header, every answer has a strict CSP', async () => {
  const anon = await http('GET', '/v1/status');
  assert.equal(anon.status, 401);
  assert.match(anon.body, /TG_ERR_UNAUTHENTICATED/);
  const csp = String(anon.headers['content-security-policy']);
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.equal(anon.headers['referrer-policy'], 'no-referrer');
  const forged = await http('POST', '/v1/tenants');
  assert.equal(forged.status, 403);

  const link = new URL(await loginLink());
  const first = await http('GET', link.pathname + link.search);
  assert.equal(first.status, 303);
  const cookie = String(first.headers['set-cookie']);
  assert.match(cookie, /^tg_console=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+$/);
  const session = cookie.split(';')[0];
  assert.equal((await http('GET', '/v1/status', { cookie: session })).status, 200);
  const again = await http('GET', link.pathname + link.search);
  assert.equal(again.status, 401, 'a login link worked twice');
  const crossSite = await http('POST', '/v1/reconcile', {
    cookie: session,
    'x-tenguard-console': '1',
    origin: 'http://evil.example',
  });
  assert.equal(crossSite.status, 403);
});

test('log in, create a tenant and workloads in the pages and see them appear', {
  timeout: 180_000,
}, async (t) => {
  const doc = await page.goto(await loginLink());
  assert.equal(new URL(page.url()).pathname, '/console/');
  assert.match(doc?.headers()['content-security-policy'] ?? '', /script-src 'self'/);
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
  const cookies = await context!.cookies();
  const c = cookies.find((x) => x.name === 'tg_console');
  assert.ok(c?.httpOnly && c.sameSite === 'Strict', JSON.stringify(c));
  assert.equal(await page.evaluate('document.cookie'), '', 'the session cookie is visible to scripts');
  await page.getByText('2 (2 NICs answering)').waitFor();
  await shot('01-overview');
  await axe('overview');

  await view('tenants', 'Tenants and workloads');
  const tenantForm = page.locator('form', { has: page.getByRole('heading', { name: 'New tenant' }) });
  await tenantForm.getByLabel('Name').fill('acme');
  await tenantForm.getByLabel('Address pool').fill('100.64.50.0/24');
  await tenantForm.getByRole('button', { name: 'Create tenant' }).click();
  await page.locator('#tenant-table tbody tr', { hasText: 'acme' }).waitFor();

  const wf = page.locator('form', { has: page.getByRole('heading', { name: 'New workload' }) });
  for (const [name, host, app] of [
    ['web', 'h1', 'web'],
    ['db', 'h2', 'db'],
  ]) {
    await wf.getByLabel('Name').fill(name);
    await wf.getByLabel('Tenant').selectOption('acme');
    await wf.getByLabel('Host').selectOption(host);
    await wf.getByLabel('Labels').fill(`app=${app}`);
    await wf.getByRole('button', { name: 'Create workload' }).click();
    await page
      .locator('#workload-table tbody tr', { hasText: name })
      .filter({ hasText: 'running' })
      .waitFor();
  }
  await page.getByRole('status').filter({ hasText: 'workload db running on h2' }).waitFor();
  const w = await L!.client.listWorkloads();
  assert.deepEqual(w.map((x) => [x.name, x.tenant, x.host, x.state]).sort(), [
    ['db', 'acme', 'h2', 'running'],
    ['web', 'acme', 'h1', 'running'],
  ]);
  await shot('02-tenants-workloads');
  await axe('tenants');
  t.diagnostic(`screenshots in ${ARTIFACTS}`);
});

test('the policy editor saves a document whose tests pass; a flow arrives in the live table', {
  timeout: 180_000,
}, async () => {
  await view('policy', 'Policy');
  await page.getByLabel('Tenant').selectOption('acme');
  await page.getByText('no policy stored').waitFor();
  await page.getByLabel('Policy document (JSON)').fill(JSON.stringify(POLICY_OK, null, 2));
  await page.getByRole('button', { name: 'Run tests' }).click();
  await page.getByText('All 1 tests passed (not saved).').waitFor();
  await page.getByRole('button', { name: 'Test and save' }).click();
  await page.getByText(/Saved and pushed to 2 NIC\(s\); all 1 tests passed\./).waitFor();
  await shot('03-policy-saved');
  await axe('policy');

  await view('flows', 'Flows');
  await page.getByLabel('Tenant').selectOption('acme');
  await page.getByLabel('Verdict').selectOption('allow');
  await page.getByLabel('Workload').fill('web');
  const web = await L!.client.showWorkload('web');
  const db = await L!.client.showWorkload('db');
  assert.ok(await pingUntilReply(web.netns, db.address, 20_000), 'web cannot ping db');
  const row = page.locator('#flow-table tbody tr', { hasText: 'acme/out' }).filter({ hasText: 'icmp' });
  await row.first().waitFor({ timeout: 30_000 });
  const cells = await row.first().locator('td').allTextContents();
  assert.equal(cells[3], 'web');
  assert.equal(cells[4], 'db');
  assert.equal(cells[7], 'allow');
  await page.getByLabel('Verdict').selectOption('deny');
  await page.locator('#flow-table tbody tr').first().waitFor({ state: 'detached' });
  await page.getByLabel('Verdict').selectOption('allow');
  await row.first().waitFor();
  await shot('04-flows');
  await axe('flows');
});

test('topology, hosts and key inventory views', { timeout: 120_000 }, async () => {
  await view('topology', 'Topology');
  const webRow = page.getByRole('listitem', { name: 'path of workload web' });
  await webRow
    .getByText(/handshake \d+ s ago/)
    .first()
    .waitFor();
  await webRow.getByText(/^h2: handshake \d+ s ago, rx [0-9.]+ (B|KiB)/).waitFor();
  await shot('05-topology');
  await axe('topology');

  await view('hosts', 'Hosts and NICs');
  await page.locator('tbody tr', { hasText: 'h1' }).filter({ hasText: 'running' }).waitFor();
  await shot('06-hosts');
  await axe('hosts');

  await view('keys', 'Keys');
  await page.getByLabel('Host').selectOption('h2');
  await page.locator('#key-table tbody tr', { hasText: 'db' }).first().waitFor();
  await shot('07-keys');
  await axe('keys');
});

test('a failing policy test blocks the save, in the page and at the API', { timeout: 120_000 }, async () => {
  const before = await L!.client.getPolicy('acme');
  await view('policy', 'Policy');
  await page.getByLabel('Tenant').selectOption('acme');
  await page.getByText(/stored policy of /).waitFor();
  await page.getByLabel('Policy document (JSON)').fill(JSON.stringify(POLICY_FAILING, null, 2));
  await page.getByRole('button', { name: 'Test and save' }).click();
  await page.getByText("Not saved: the document's tests failed.").waitFor();
  await page.locator('ul.issues li', { hasText: 'web-must-not-reach-db' }).waitFor();
  await shot('08-policy-test-blocks-save');
  await axe('policy-blocked');
  const afterDoc = await L!.client.getPolicy('acme');
  assert.equal(afterDoc.updatedAt, before.updatedAt, 'the failing document was saved');
  assert.deepEqual(afterDoc.document, before.document);
  // The API refuses it on its own too (a client that skips the test route).
  await assert.rejects(
    L!.client.setPolicy('acme', POLICY_FAILING),
    (err: Error & { code?: string }) =>
      err.code === 'TG_ERR_POLICY_REJECTED' &&
      /web-must-not-reach-db.*expected deny, got allow/.test(err.message),
  );
});

test('tenguard status summarises the running installation, as text and --json', async () => {
  const st = JSON.parse(await tenguard(['status', '--json', '--api', L!.orch.socket, '--insecure'])) as {
    orchestrator: { status: string; tls: boolean; reconcilePasses: number };
    hosts: {
      name: string;
      nic: { reachable: boolean; dataPlane?: boolean; workloads?: number; drops?: { total: number } };
      vswitch: { reachable: boolean; instances?: number };
    }[];
    tenants: { count: number; withPolicy: number };
    workloads: { count: number; byState: Record<string, number> };
    certificates: unknown[];
    drops: { total: number; byHost: Record<string, number> };
  };
  assert.equal(st.orchestrator.status, 'ok');
  assert.equal(st.orchestrator.tls, false);
  assert.deepEqual(
    st.hosts.map((h) => [
      h.name,
      h.nic.reachable,
      h.nic.dataPlane,
      h.nic.workloads,
      h.vswitch.reachable,
      h.vswitch.instances,
    ]),
    [
      ['h1', true, true, 1, true, 1],
      ['h2', true, true, 1, true, 1],
    ],
  );
  assert.deepEqual(st.tenants, { count: 1, withPolicy: 1 });
  assert.deepEqual(st.workloads, { count: 2, byState: { running: 2 } });
  assert.deepEqual(st.certificates, [], 'an orchestrator run --insecure has no certificate');
  const sum = st.hosts.reduce((n, h) => n + (h.nic.drops?.total ?? 0), 0);
  assert.equal(st.drops.total, sum);
  assert.deepEqual(Object.keys(st.drops.byHost), ['h1', 'h2']);
  const text = await tenguard(['status', '--api', L!.orch.socket, '--insecure']);
  assert.match(text, /^orchestrator {2}ok, revision \d+, up \d+s, API plain HTTP \(--insecure\)/);
  assert.match(
    text,
    /\n {2}h1 {2}NIC ok \(data plane on, up \d+s, 1 workloads, 1 tenants, 1 fabric peers, \d+ keys, \d+ drops\); vSwitch ok \(1 instances\)\n/,
  );
  assert.match(text, /\nworkloads {5}2 \(2 running\)\n/);
  assert.match(text, /\ncertificates {2}none \(no mTLS\)\n/);
});

test('no response the pages fetched carries key material', async (t) => {
  await new Promise((r) => setTimeout(r, 500)); // the last response bodies
  const api = seen.filter((s) => s.type.includes('application/json'));
  assert.ok(api.length >= 20, `only ${api.length} API answers seen`);
  const urls = new Set(api.map((s) => new URL(s.url).pathname));
  for (const p of [
    '/v1/status',
    '/v1/topology',
    '/v1/flows',
    '/v1/hosts/h2/keys',
    '/v1/workloads',
    '/v1/tenants',
  ])
    assert.ok(urls.has(p), `the pages never fetched ${p}`);
  // The NICs' public keys: the console does not even show those.
  const publicKeys = new Set<string>();
  for (const h of ['h1', 'h2']) {
    const id = await L!.agents.nic(h).identity();
    for (const k of [id.identityKey, id.sealKey, id.onHostPublicKey]) publicKeys.add(k);
  }
  const base64Key = /[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=/g;
  for (const s of seen) {
    assert.doesNotMatch(s.body, /PRIVATE KEY|"(psk|privateKey|sealedPsk|secret|pin)"\s*:/i, s.url);
    if (!s.type.includes('application/json')) continue;
    const keys = s.body.match(base64Key) ?? [];
    assert.deepEqual(keys, [], `${s.url} carries a 32-byte base64 value`);
    for (const k of publicKeys) assert.ok(!s.body.includes(k), `${s.url} carries a NIC public key`);
  }
  t.diagnostic(`${seen.length} responses scanned (${api.length} JSON answers of ${urls.size} routes)`);
  t.diagnostic(`screenshots: ${screenshots.join(' ')}`);
  t.diagnostic(`axe results: ${join(ARTIFACTS, 'axe-results.json')}`);
});
