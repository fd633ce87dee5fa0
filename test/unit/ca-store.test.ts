import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { RevocationList } from '../../src/ca/revocation.js';
import { FileCaStore, type IssuedRecord, MemoryCaStore } from '../../src/ca/store.js';
import { TgError } from '../../src/util/errors.js';

const root = mkdtempSync(join(tmpdir(), 'tgca-store-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = () => join(root, `s${n++}`);

const issued = (serial: string, notAfter: string): IssuedRecord => ({
  serial,
  spiffeId: 'spiffe://lab.test/nic/h1',
  notBefore: '2030-01-01T00:00:00.000Z',
  notAfter,
  issuedAt: '2030-01-01T00:00:00.000Z',
  issuerKeyId: 'ab',
  requester: 'admin',
  publicKeySha256: '00',
});

test('metadata is written atomically and validated when read', () => {
  const dir = freshDir();
  const s = new FileCaStore(dir);
  assert.equal(s.loadMetadata(), undefined);
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  const m = { version: 1 as const, trustDomain: 'lab.test', generations: [] };
  s.saveMetadata(m);
  assert.deepEqual(s.loadMetadata(), m);
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.endsWith('.tmp')),
    [],
  );
  writeFileSync(join(dir, 'ca.json'), '{"version":1,"trustDomain":"x","generations":[],"privateKey":"..."}');
  assert.throws(
    () => s.loadMetadata(),
    (e: unknown) => e instanceof TgError && /damaged/.test(e.message),
  );
});

test('issued records append per day; a torn line is skipped and counted', () => {
  const dir = freshDir();
  let now = new Date('2030-01-01T12:00:00Z');
  const s = new FileCaStore(dir, () => now);
  s.appendIssued(issued('a1', '2030-01-01T13:00:00Z'));
  now = new Date('2030-01-02T12:00:00Z');
  s.appendIssued(issued('a2', '2030-01-02T13:00:00Z'));
  assert.deepEqual(readdirSync(join(dir, 'issued')).sort(), ['2030-01-01.jsonl', '2030-01-02.jsonl']);
  appendFileSync(join(dir, 'issued', '2030-01-02.jsonl'), '{"serial":"a3","spiff');
  assert.deepEqual(
    s.listIssued().map((r) => r.serial),
    ['a1', 'a2'],
  );
  assert.equal(s.badLines, 1);
  assert.throws(() => s.appendIssued({ ...issued('a4', 'x'), secret: 'no' } as IssuedRecord));
});

test('revocations are read incrementally, whole lines only', () => {
  const dir = freshDir();
  const s = new FileCaStore(dir, () => new Date('2030-01-01T12:00:00Z'));
  const r = (serial: string) => ({
    serial,
    revokedAt: '2030-01-01T12:00:00Z',
    reason: 'test',
    notAfter: '2030-01-01T13:00:00Z',
  });
  s.appendRevocation(r('b1'));
  const first = s.revocationsSince(undefined);
  assert.deepEqual(
    first.records.map((x) => x.serial),
    ['b1'],
  );
  const seg = join(dir, 'revoked', '2030-01-01.jsonl');
  appendFileSync(seg, JSON.stringify(r('b2')).slice(0, 20));
  const partial = s.revocationsSince(first.cursor);
  assert.deepEqual(partial.records, [], 'a line still being written waits');
  appendFileSync(seg, `${JSON.stringify(r('b2')).slice(20)}\n`);
  const second = s.revocationsSince(partial.cursor);
  assert.deepEqual(
    second.records.map((x) => x.serial),
    ['b2'],
  );
  assert.deepEqual(s.revocationsSince(second.cursor).records, []);
});

test('a revocation written by another process is seen on the next check', () => {
  const dir = freshDir();
  const clock = () => new Date('2030-01-01T12:00:00Z');
  const server = new RevocationList(new FileCaStore(dir, clock), { now: () => clock().getTime() });
  const cli = new FileCaStore(dir, clock);
  assert.equal(server.isRevoked('c1'), false);
  cli.appendRevocation({
    serial: 'C1',
    revokedAt: '2030-01-01T12:00:00Z',
    reason: 'keyCompromise',
    notAfter: '2030-01-01T13:00:00Z',
  });
  assert.equal(server.isRevoked('c1'), true);
  assert.equal(server.isRevoked('00:C1'), true);
  assert.equal(server.isRevoked('c2'), false);
});

test('a cached list re-reads at most once per interval', () => {
  const dir = freshDir();
  let t = Date.parse('2030-01-01T12:00:00Z');
  const store = new FileCaStore(dir, () => new Date(t));
  const list = new RevocationList(store, { refreshIntervalMs: 1000, now: () => t });
  store.appendRevocation({
    serial: 'd1',
    revokedAt: '2030-01-01T12:00:00Z',
    reason: 'x',
    notAfter: '2030-01-01T13:00:00Z',
  });
  assert.equal(list.isRevoked('d1'), false);
  t += 1000;
  assert.equal(list.isRevoked('d1'), true);
  t += 2 * 3600_000;
  list.refresh();
  assert.equal(list.list().length, 0, 'revocations of expired certificates are forgotten');
});

test('prune deletes only past segments whose certificates all expired', () => {
  const dir = freshDir();
  let now = new Date('2030-01-01T10:00:00Z');
  const s = new FileCaStore(dir, () => now);
  s.appendIssued(issued('e1', '2030-01-01T11:00:00Z'));
  now = new Date('2030-01-02T10:00:00Z');
  s.appendIssued(issued('e2', '2030-01-03T11:00:00Z'));
  now = new Date('2030-01-03T10:00:00Z');
  s.appendIssued(issued('e3', '2030-01-03T11:00:00Z'));
  assert.equal(s.prune(now), 1);
  assert.deepEqual(
    s.listIssued().map((r) => r.serial),
    ['e2', 'e3'],
  );
  assert.equal(s.prune(new Date('2030-01-04T00:00:00Z')), 2, "yesterday's segment goes once expired");
  assert.deepEqual(
    s.listIssued().map((r) => r.serial),
    [],
  );
});

test('the memory store keeps the same contract', () => {
  const m = new MemoryCaStore();
  m.appendIssued(issued('f1', '2030-01-01T11:00:00Z'));
  m.appendRevocation({ serial: 'f1', revokedAt: 'x', reason: 'y', notAfter: '2030-01-01T11:00:00Z' });
  const a = m.revocationsSince(undefined);
  assert.equal(a.records.length, 1);
  assert.equal(m.revocationsSince(a.cursor).records.length, 0);
  assert.equal(m.prune(new Date('2030-01-02T00:00:00Z')), 1);
});
