// Flow records: JSON lines on disk with size-based rotation, the query over recent records,
// the live stream, and the Prometheus metrics.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { PolicyEngine } from '../../src/policy/engine.js';
import { FlowLog, type FlowRecord, parseSince } from '../../src/policy/flowlog.js';
import { registerPolicyMetrics } from '../../src/policy/metrics.js';
import { allowPair, SYN, send, world } from '../helpers/policy-harness.js';

const dir = mkdtempSync(join(tmpdir(), 'tgflowlog-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function rec(i: number, over: Partial<FlowRecord> = {}): FlowRecord {
  const t = 1_700_000_000_000 + i * 1000;
  return {
    kind: 'end',
    start: new Date(t).toISOString(),
    end: new Date(t).toISOString(),
    startMs: t,
    endMs: t,
    tenant: i % 2 === 0 ? 'acme' : 'blue',
    srcTenant: 'acme',
    srcWorkload: 'web-1',
    dstTenant: 'acme',
    dstWorkload: 'db-1',
    family: 4,
    protocol: 'tcp',
    src: '100.64.1.1',
    dst: '100.64.1.4',
    srcPort: 40000 + i,
    dstPort: 5432,
    icmpId: null,
    icmpType: null,
    packetsToDst: i,
    bytesToDst: 100 * i,
    packetsToSrc: 0,
    bytesToSrc: 0,
    verdict: i % 3 === 0 ? 'deny' : 'allow',
    rule: 'acme/x',
    egressRule: null,
    ingressRule: null,
    state: 'ESTABLISHED',
    reason: 'expired',
    observed: 'both',
    ...over,
  };
}

function lines(path: string): FlowRecord[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as FlowRecord);
}

test('records are written as JSON lines', () => {
  const path = join(dir, 'plain.jsonl');
  const log = new FlowLog({ path });
  for (let i = 0; i < 10; i++) log.add(rec(i));
  // Buffered until flushed.
  assert.equal(existsSync(path), false);
  log.flush();
  const got = lines(path);
  assert.equal(got.length, 10);
  assert.deepEqual(got[3], rec(3));
  log.add(rec(10));
  log.close();
  assert.equal(lines(path).length, 11);
});

test('rotation by size: no file over the limit, no line split, at most maxFiles old files', () => {
  const path = join(dir, 'rot.jsonl');
  const lineBytes = Buffer.byteLength(`${JSON.stringify(rec(100))}\n`);
  const maxBytes = 4096;
  const log = new FlowLog({ path, maxBytes, maxFiles: 2, flushBytes: 1500 });
  const n = 200;
  for (let i = 100; i < 100 + n; i++) log.add(rec(i));
  log.close();
  const files = [path, `${path}.1`, `${path}.2`];
  for (const f of files) {
    assert.ok(existsSync(f), f);
    assert.ok(statSync(f).size <= maxBytes, `${f} is ${statSync(f).size} bytes`);
  }
  assert.equal(existsSync(`${path}.3`), false);
  assert.ok(log.rotations >= 3);
  // The newest records are in the current file, the ones before in .1, then .2, in order.
  const all = [...lines(`${path}.2`), ...lines(`${path}.1`), ...lines(path)];
  const ports = all.map((r) => r.srcPort);
  assert.deepEqual(
    ports,
    [...ports].sort((a, b) => (a ?? 0) - (b ?? 0)),
  );
  assert.equal(ports[ports.length - 1], 40000 + 100 + n - 1);
  assert.ok(all.length >= Math.floor((2 * maxBytes) / lineBytes));
  assert.ok(all.length < n);
});

test('rotation picks up an existing file and continues its size', () => {
  const path = join(dir, 'again.jsonl');
  const a = new FlowLog({ path, maxBytes: 2048 });
  a.add(rec(1));
  a.close();
  const size = statSync(path).size;
  const b = new FlowLog({ path, maxBytes: 2048 });
  const per = size;
  const fit = Math.floor(2048 / per) - 1;
  for (let i = 0; i < fit; i++) b.add(rec(2 + i));
  b.flush();
  assert.equal(existsSync(`${path}.1`), false);
  b.add(rec(99));
  b.add(rec(100));
  b.close();
  assert.equal(existsSync(`${path}.1`), true);
});

test('write failures are counted, never thrown', () => {
  const log = new FlowLog({ path: join(dir, 'missing-dir', 'x.jsonl') });
  log.add(rec(1));
  log.flush();
  log.close();
  assert.ok(log.writeErrors >= 1);
  assert.equal(log.query().length, 1);
});

test('query: tenant, verdict, since, limit, newest first', () => {
  const log = new FlowLog({ ringSize: 50 });
  for (let i = 0; i < 60; i++) log.add(rec(i));
  // Only the last 50 are kept.
  assert.equal(log.query({ limit: 1000 }).length, 50);
  assert.equal(log.query({ limit: 1000 }).at(-1)?.srcPort, 40010);
  const deny = log.query({ verdict: 'deny', limit: 1000 });
  assert.ok(deny.every((r) => r.verdict === 'deny'));
  assert.equal(deny.length, 16); // multiples of 3 in 10..59
  const acme = log.query({ tenant: 'blue', verdict: 'allow', limit: 3 });
  assert.deepEqual(
    acme.map((r) => r.srcPort),
    [40059, 40055, 40053],
  );
  const since = log.query({ since: rec(55).endMs, limit: 100 });
  assert.deepEqual(
    since.map((r) => r.srcPort),
    [40059, 40058, 40057, 40056, 40055],
  );
  assert.equal(log.query().length, 50);
  assert.equal(log.query({ limit: 7 }).length, 7);
});

test('parseSince: durations, times, errors', () => {
  const now = 1_700_000_000_000;
  assert.equal(parseSince('5m', now), now - 300_000);
  assert.equal(parseSince('30s', now), now - 30_000);
  assert.equal(parseSince('2h', now), now - 7_200_000);
  assert.equal(parseSince('1d', now), now - 86_400_000);
  assert.equal(parseSince('1699999999000', now), 1_699_999_999_000);
  assert.equal(parseSince('2023-11-14T22:13:20.000Z', now), now);
  assert.throws(() => parseSince('yesterday', now), RangeError);
});

test('live stream: matching records as they come, until aborted', async () => {
  const log = new FlowLog();
  const ac = new AbortController();
  const got: number[] = [];
  const reader = (async () => {
    for await (const r of log.stream({ verdict: 'deny' }, ac.signal)) {
      got.push(r.srcPort ?? 0);
      if (got.length === 3) ac.abort();
    }
  })();
  for (let i = 0; i < 12; i++) {
    log.add(rec(i));
    await new Promise((r) => setImmediate(r));
  }
  await reader;
  assert.deepEqual(got, [40000, 40003, 40006]);
  assert.equal(log.listenerCount('record'), 0);
  // The 'record' event as well.
  const seen: string[] = [];
  log.on('record', (r: FlowRecord) => seen.push(r.tenant));
  log.add(rec(1));
  assert.deepEqual(seen, ['blue']);
});

test('a slow stream reader loses the oldest records, counted', async () => {
  const log = new FlowLog({ streamQueue: 2 });
  const ac = new AbortController();
  const it = log.stream({}, ac.signal);
  const first = it.next();
  log.add(rec(1));
  assert.equal((await first).value?.srcPort, 40001);
  for (let i = 2; i < 7; i++) log.add(rec(i));
  assert.equal((await it.next()).value?.srcPort, 40005);
  assert.equal((await it.next()).value?.srcPort, 40006);
  assert.equal(log.streamDropped, 3);
  ac.abort();
  assert.equal((await it.next()).done, true);
});

test('the engine writes flow records through its log, with rule ids', () => {
  const path = join(dir, 'engine.jsonl');
  const w = world();
  const log = new FlowLog({ path });
  const engine = new PolicyEngine({ directory: w.directory, store: w.store, flowLog: log });
  w.store.replace({
    version: 1,
    tenant: 'acme',
    rules: allowPair('web-db', { app: 'web' }, { app: 'db' }, 'tcp', [5432]),
  });
  const ww = { ...w, engine, log };
  send(ww, { from: 'web-1', to: 'db-1', proto: 'tcp', sport: 1, dport: 5432, flags: SYN });
  send(ww, { from: 'db-1', to: 'web-1', proto: 'tcp', sport: 1, dport: 22, flags: SYN });
  ww.clock.advance(200);
  engine.tick(ww.clock.ms);
  const got = lines(path);
  assert.equal(got.length, 2);
  const byVerdict = Object.fromEntries(got.map((r) => [r.verdict, r]));
  assert.equal(byVerdict.allow.rule, 'acme/web-db-in');
  assert.equal(byVerdict.allow.srcWorkload, 'web-1');
  assert.equal(byVerdict.allow.dstWorkload, 'db-1');
  assert.equal(byVerdict.allow.src, '100.64.1.1');
  assert.equal(byVerdict.allow.state, 'SYN_SENT');
  assert.equal(byVerdict.deny.rule, 'acme/default-deny');
  assert.equal(byVerdict.deny.dstPort, 22);
  assert.equal(byVerdict.deny.packetsToDst, 1);
});

test('Prometheus metrics: verdicts, table occupancy and limits, evictions, drops', async () => {
  const w = world({ maxFlowsPerZone: 2 });
  w.store.replace({
    version: 1,
    tenant: 'acme',
    rules: allowPair('web-db', { app: 'web' }, { app: 'db' }, 'tcp', [5432]),
  });
  const registry = registerPolicyMetrics(w.engine);
  for (let port = 1; port <= 3; port++)
    send(w, { from: 'web-1', to: 'db-1', proto: 'tcp', sport: port, dport: 5432, flags: SYN });
  send(w, { from: 'db-1', to: 'web-1', proto: 'tcp', sport: 9, dport: 22, flags: SYN });
  w.engine.check('acme', 'web-1', 'db-1', Buffer.alloc(3), 0, 3, w.clock.ms, 'both');
  const text = await registry.metrics();
  const has = (line: string) => assert.ok(text.includes(line), `missing: ${line}\n${text}`);
  has('tenguard_policy_packets_total{tenant="acme",verdict="allow"} 3');
  has('tenguard_policy_packets_total{tenant="acme",verdict="deny"} 1');
  has('tenguard_policy_flows_total{tenant="acme",verdict="allow"} 3');
  has('tenguard_conntrack_entries{tenant="acme",table="allowed"} 2');
  has('tenguard_conntrack_entries{tenant="acme",table="denied"} 1');
  has('tenguard_conntrack_limit{tenant="acme",table="allowed"} 2');
  has('tenguard_conntrack_evictions_total{tenant="acme",table="allowed"} 1');
  has('tenguard_policy_drops_total{reason="malformed"} 1');
  has('tenguard_flowlog_records_total 1');
  // Collected again on each scrape: the values follow (a retransmitted SYN of a tracked flow).
  assert.equal(
    send(w, { from: 'web-1', to: 'db-1', proto: 'tcp', sport: 3, dport: 5432, flags: SYN }).reason,
    'established',
  );
  assert.ok(
    (await registry.metrics()).includes('tenguard_policy_packets_total{tenant="acme",verdict="allow"} 4'),
  );
});

test('the in-memory ring gives records back exactly, newest first, filtered, and wraps', () => {
  const log = new FlowLog({ ringSize: 8 });
  const odd: FlowRecord[] = [
    rec(1, {
      family: 6,
      src: 'fd00::1',
      dst: '2001:db8::5:0:0:1',
      protocol: 'icmpv6',
      srcPort: null,
      dstPort: null,
      icmpId: 7,
    }),
    rec(2, { kind: 'interim', state: 'SYN_SENT', reason: '', icmpType: 3, srcPort: null }),
    // Texts that the columns would not give back as they came: kept verbatim.
    rec(3, {
      src: '100.064.1.1',
      start: 'not a time',
      observed: 'ingress',
      egressRule: 'acme/e',
      ingressRule: 'blue/i',
    }),
    rec(4, { srcTenant: null, srcWorkload: null, dstWorkload: '#17', verdict: 'deny' }),
  ];
  for (const r of odd) log.add(r);
  assert.deepEqual(log.query(), [...odd].reverse());
  assert.deepEqual(log.query({ verdict: 'deny' }), odd.filter((r) => r.verdict === 'deny').reverse());
  assert.deepEqual(log.query({ tenant: 'blue' }), odd.filter((r) => r.tenant === 'blue').reverse());
  assert.deepEqual(log.query({ since: odd[2].endMs }), [odd[3], odd[2]]);
  assert.deepEqual(log.query({ limit: 1 }), [odd[3]]);
  // 'active' snapshots are not kept.
  log.add(rec(5, { kind: 'active' }));
  assert.equal(log.query().length, 4);
  for (let i = 10; i < 30; i++) log.add(rec(i));
  const got = log.query({ limit: 100 });
  assert.equal(got.length, 8, 'the ring keeps ringSize records');
  assert.deepEqual(
    got,
    Array.from({ length: 8 }, (_, k) => rec(29 - k)),
  );
});

test('a full ring costs what an empty one does (columns allocated at construction)', (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const n = 5000;
  const log = new FlowLog({ ringSize: n });
  gc();
  const empty = process.memoryUsage().heapUsed;
  for (let i = 0; i < n; i++) log.add(rec(i, { src: `100.64.${(i >> 8) & 255}.${i & 255}` }));
  gc();
  const perRecord = (process.memoryUsage().heapUsed - empty) / n;
  t.diagnostic(`heap per record once full: ${perRecord.toFixed(1)} bytes (record objects: about 440)`);
  assert.ok(perRecord < 100, `the ring grew by ${perRecord.toFixed(1)} bytes a record as it filled`);
  assert.equal(log.query({ limit: n }).length, n);
});
