import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { mapLimit } from '../../src/lab/parallel.js';
import { planLab, stateFilePath } from '../../src/lab/plan.js';
import {
  claimLabState,
  labStateSchema,
  newLabState,
  planOf,
  readLabState,
  removeLabState,
  writeLabState,
} from '../../src/lab/state.js';
import { TgError } from '../../src/util/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'tg-lab-state-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const isCode = (code: string) => (err: unknown) => err instanceof TgError && err.code === code;

test('state: plan round-trips through the schema', () => {
  const plan = planLab('tgu1', { hosts: 2, tenants: 2, workloads: 2 });
  const state = newLabState(plan, 6);
  assert.equal(state.status, 'building');
  assert.equal(state.builder.pid, process.pid);
  const parsed = labStateSchema.parse(JSON.parse(JSON.stringify(state)));
  assert.deepEqual(planOf(parsed), plan);
});

test('state: claim is exclusive, updates replace, remove is idempotent', () => {
  const state = newLabState(planLab('tgu2', { hosts: 1, tenants: 1, workloads: 1 }), 4);
  claimLabState(state, dir);
  const path = stateFilePath('tgu2', dir);
  assert.equal(statSync(path).mode & 0o777, 0o644);
  assert.throws(() => claimLabState(state, dir), isCode('TG_ERR_LAB_EXISTS'));
  state.steps.done.push('fabric');
  writeLabState(state, dir);
  assert.deepEqual(readLabState('tgu2', dir)?.steps.done, ['fabric']);
  assert.equal(removeLabState('tgu2', dir), true);
  assert.equal(readLabState('tgu2', dir), null);
  assert.equal(removeLabState('tgu2', dir), false);
});

test('state: malformed or foreign files are rejected with TG_ERR_CONFIG', () => {
  const path = stateFilePath('tgu3', dir);
  writeFileSync(path, '{not json');
  assert.throws(() => readLabState('tgu3', dir), isCode('TG_ERR_CONFIG'));
  const good = newLabState(planLab('tgu3', { hosts: 1, tenants: 1, workloads: 1 }), 4);
  writeFileSync(path, JSON.stringify({ ...good, extra: 1 }));
  assert.throws(() => readLabState('tgu3', dir), isCode('TG_ERR_CONFIG'));
  writeFileSync(path, JSON.stringify({ ...good, prefix: 'tgu4' }));
  assert.throws(() => readLabState('tgu3', dir), isCode('TG_ERR_CONFIG'));
  writeFileSync(path, JSON.stringify(good));
  assert.equal(readLabState('tgu3', dir)?.prefix, 'tgu3');
  removeLabState('tgu3', dir);
  assert.throws(() => readLabState('../etc', dir), isCode('TG_ERR_INVALID_ARGUMENT'));
});

test('state file holds names and addresses only', () => {
  const state = newLabState(planLab('tgu5', { hosts: 2, tenants: 2, workloads: 2 }), 6);
  claimLabState(state, dir);
  const text = readFileSync(stateFilePath('tgu5', dir), 'utf8');
  assert.doesNotMatch(text, /key|secret|psk|private/i);
  removeLabState('tgu5', dir);
});

test('mapLimit: keeps order, bounds concurrency, stops after a failure', async () => {
  let inFlight = 0;
  let peak = 0;
  const out = await mapLimit([5, 1, 4, 2, 3, 0], 2, async (n) => {
    inFlight++;
    peak = Math.max(peak, inFlight);
    await new Promise((r) => setTimeout(r, n));
    inFlight--;
    return n * 10;
  });
  assert.deepEqual(out, [50, 10, 40, 20, 30, 0]);
  assert.equal(peak, 2);

  const started: number[] = [];
  await assert.rejects(
    mapLimit([1, 2, 3, 4, 5, 6], 2, async (n) => {
      started.push(n);
      await new Promise((r) => setTimeout(r, 1));
      if (n === 2) throw new Error('boom');
      return n;
    }),
    /boom/,
  );
  assert.ok(started.length <= 3, `no new call after the failure (started ${started.join(',')})`);
  assert.equal(inFlight, 0);
  assert.deepEqual(await mapLimit([], 3, async (n: number) => n), []);
});
