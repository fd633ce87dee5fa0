// The test tiers' backstop (scripts/sweep-test-namespaces.mjs, run by scripts/test.sh): what a
// run made and left behind (a lab's namespaces with a process inside, a bench's namespace
// outside any lab prefix, a root-namespace link) is removed and named, with exit 1; what was
// there before the run, also under the same prefix, is left alone; a run that left nothing
// passes quietly; an interrupted run's leftovers are removed with exit 0.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { listNamespaces } from '../../src/lab/index.js';
import { testPrefix } from '../helpers/lab.js';

const SCRIPT = fileURLToPath(new URL('../../../scripts/sweep-test-namespaces.mjs', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tg-sweep-'));
const prefix = testPrefix();
const mine: string[] = [];
const started: number[] = [];

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `ip ${args.join(' ')}: ${r.stderr}`);
}
function addNs(name: string): void {
  ip('netns', 'add', name);
  mine.push(name);
}
function sweep(file: string, ...extra: string[]) {
  return spawnSync(process.execPath, [SCRIPT, '--sweep', file, ...extra], { encoding: 'utf8' });
}
function record(name: string): string {
  const file = join(dir, name);
  const r = spawnSync(process.execPath, [SCRIPT, '--record', file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return file;
}
const rootLinkExists = (name: string) => spawnSync('ip', ['link', 'show', 'dev', name]).status === 0;

after(() => {
  for (const pid of started) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // ended by the sweep
    }
  }
  for (const n of mine) spawnSync('ip', ['netns', 'del', n]);
  spawnSync('ip', ['link', 'del', `${prefix}-l`]);
  rmSync(dir, { recursive: true, force: true });
});

test('a run that left nothing passes quietly', () => {
  const file = record('quiet');
  const r = sweep(file);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '');
});

test('leftovers are removed with their processes and named; what was there before stays', async () => {
  addNs(`${prefix}-old`); // there before the run, under the same prefix
  const file = record('leak');
  addNs(`${prefix}-h1`);
  addNs(`${prefix}-h2`);
  const bench = `tgq${prefix.slice(3)}99`; // no lab prefix: removed by name
  addNs(bench);
  ip('link', 'add', `${prefix}-l`, 'type', 'veth', 'peer', 'name', `${prefix}-m`);
  const sleeper = spawn('ip', ['netns', 'exec', `${prefix}-h1`, 'sleep', '60'], { stdio: 'ignore' });
  started.push(sleeper.pid!);
  const exited = new Promise((resolve) => sleeper.once('exit', resolve));
  // Wait until the process is inside the namespace.
  for (
    let i = 0;
    i < 100 && spawnSync('ip', ['netns', 'pids', `${prefix}-h1`], { encoding: 'utf8' }).stdout.trim() === '';
    i++
  )
    spawnSync('sleep', ['0.02']);
  const r = sweep(file);
  assert.equal(r.status, 1, 'a leak fails the tier');
  assert.match(r.stderr, /a teardown is missing/);
  for (const n of [`${prefix}-h1`, `${prefix}-h2`, bench, `${prefix}-l`])
    assert.ok(r.stderr.includes(n), `${n} named`);
  const now = listNamespaces();
  for (const n of [`${prefix}-h1`, `${prefix}-h2`, bench]) assert.ok(!now.includes(n), `${n} removed`);
  assert.ok(!rootLinkExists(`${prefix}-l`) && !rootLinkExists(`${prefix}-m`), 'the root links removed');
  assert.ok(now.includes(`${prefix}-old`), 'what was there before is left alone');
  await exited; // the process inside was ended
});

test('after an interrupted run the leftovers are removed and the sweep itself succeeds', () => {
  const file = record('interrupted');
  addNs(`${prefix}-i1`);
  const r = sweep(file, '--interrupted');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /interrupted/);
  assert.ok(!listNamespaces().includes(`${prefix}-i1`));
});

test('bad arguments: usage and exit 2', () => {
  const r = spawnSync(process.execPath, [SCRIPT, '--nonsense'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /usage/);
});
