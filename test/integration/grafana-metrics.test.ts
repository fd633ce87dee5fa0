// The Grafana dashboard in deploy/grafana/ against real scrapes: a two-host lab with a tenant,
// two workloads and traffic between them, the /metrics of both NIC agents and of the
// orchestrator scraped; every metric the dashboard's queries name must be exposed by a scrape
// (its # TYPE line), and `promtool check metrics` (Debian's prometheus package) must pass on
// each scrape.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { apiRequest } from '../../src/util/http-json.js';
import { ALLOW_WITHIN, type OrchLab, startOrchLab, stopOrchLab } from '../helpers/orch.js';
import { pingUntilReply } from '../helpers/ping.js';

const ROOT = join(import.meta.dirname, '..', '..', '..');
const DASHBOARD = join(ROOT, 'deploy', 'grafana', 'tenguard.json');
const PROMTOOL = '/usr/bin/promtool';
const prefix = `tgu${randomBytes(2).toString('hex').slice(0, 4)}`;

let L: OrchLab | undefined;
const scrapes = new Map<string, string>();

interface Dashboard {
  panels: { id: number; type: string; targets?: { expr: string }[] }[];
  templating: { list: { name: string; query?: unknown; definition?: string }[] };
}

/** Every tenguard metric a query of the dashboard names (panels and template variables). */
function dashboardMetrics(d: Dashboard): Set<string> {
  const texts = [
    ...d.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)),
    ...d.templating.list.map((v) => JSON.stringify(v.query ?? '') + (v.definition ?? '')),
  ];
  const names = new Set<string>();
  for (const t of texts) for (const m of t.matchAll(/\btenguard_[a-z0-9_]+\b/g)) names.add(m[0]);
  return names;
}

/** Metric names a scrape exposes (# TYPE lines; histograms and summaries with their series). */
function exposed(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    out.add(m[1]);
    if (m[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) out.add(m[1] + s);
    if (m[2] === 'summary') for (const s of ['_sum', '_count']) out.add(m[1] + s);
  }
  return out;
}

function promtool(scrape: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(PROMTOOL, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    c.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    c.once('error', reject);
    c.once('close', (code) => resolve({ code, out }));
    c.stdin.end(scrape);
  });
}

before(async () => {
  L = await startOrchLab(prefix, 2);
  const c = L.client;
  await c.createTenant({ name: 'acme', pool: '100.64.60.0/24' });
  await c.setPolicy('acme', ALLOW_WITHIN('acme'));
  const a = await c.createWorkload({ tenant: 'acme', name: 'a', host: 'h1' });
  const b = await c.createWorkload({ tenant: 'acme', name: 'b', host: 'h2' });
  assert.ok(await pingUntilReply(a.netns, b.address, 20_000), 'no traffic between the workloads');
  for (const h of ['h1', 'h2']) scrapes.set(h, await L.agents.nic(h).metrics());
  const o = await apiRequest(L.orch.socket, 'GET', '/metrics');
  assert.equal(o.status, 200);
  scrapes.set('orchestrator', o.raw);
});

after(async () => {
  await stopOrchLab(L, prefix);
});

test('the dashboard is a Grafana dashboard over a Prometheus data source variable', () => {
  const d = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard & { uid: string; title: string };
  assert.equal(d.uid, 'tenguard');
  const ids = d.panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, 'panel ids repeat');
  const queries = d.panels.filter((p) => p.type !== 'row');
  assert.ok(queries.length >= 15);
  for (const p of queries) assert.ok((p.targets ?? []).length > 0, `panel ${p.id} has no query`);
  assert.ok(d.templating.list.some((v) => v.name === 'datasource'));
  assert.ok(dashboardMetrics(d).size >= 15);
});

test('every metric the dashboard uses is in a real scrape of the NIC agents and the orchestrator', (t) => {
  const d = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;
  const all = new Set<string>();
  for (const s of scrapes.values()) for (const n of exposed(s)) all.add(n);
  const missing = [...dashboardMetrics(d)].filter((n) => !all.has(n));
  assert.deepEqual(missing, [], 'metrics the dashboard queries but no NIC exposes');
  // The traffic shows in the scrapes the dashboard reads.
  assert.match(scrapes.get('h1')!, /^tenguard_nic_forwarded_packets_total\{path="egress"\} [1-9]/m);
  assert.match(scrapes.get('h1')!, /^tenguard_nic_workloads 1$/m);
  assert.match(scrapes.get('orchestrator')!, /^tenguard_orchestrator_leader 1$/m);
  t.diagnostic(`${dashboardMetrics(d).size} metrics used, ${all.size} exposed`);
});

test('promtool check metrics passes on each scrape', async () => {
  for (const [h, s] of scrapes) {
    const r = await promtool(s);
    assert.equal(r.code, 0, `promtool on ${h}'s scrape: ${r.out}`);
    assert.equal(r.out.trim(), '', `promtool on ${h}'s scrape: ${r.out}`);
  }
  // promtool does find problems: a counter without _total is one.
  const bad = await promtool('# HELP x_bytes a counter\n# TYPE x_bytes counter\nx_bytes 1\n');
  assert.notEqual(bad.code, 0);
  assert.match(bad.out, /counter metrics should have "_total" suffix/);
});
