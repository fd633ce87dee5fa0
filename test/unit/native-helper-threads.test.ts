// idleHelperThreads (native/process.c): in a fresh process every thread but the main one
// (V8's workers, libuv's pool) moves to SCHED_IDLE, the main thread keeps SCHED_OTHER, and a
// thread started afterwards (an addon crypto worker) keeps the normal policy. Checked in a
// child process through /proc/self/task/<tid>/stat (field 41: the policy; SCHED_IDLE is 5).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';

const SCHED_OTHER = 0;
const SCHED_IDLE = 5;

test('idleHelperThreads moves the helper threads to SCHED_IDLE and leaves the main thread', () => {
  const module = join(import.meta.dirname, '../../src/native/helper-threads.js');
  const aead = join(import.meta.dirname, '../../src/native/aead.js');
  const script = `
    import { readdirSync, readFileSync } from 'node:fs';
    const { idleHelperThreads } = await import(${JSON.stringify(module)});
    const { NativeAead, setCryptoThreads } = await import(${JSON.stringify(aead)});
    const policies = () => Object.fromEntries(readdirSync('/proc/self/task').map((t) => {
      const st = readFileSync('/proc/self/task/' + t + '/stat', 'utf8');
      return [t, Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[38])];
    }));
    const before = policies();
    const moved = idleHelperThreads();
    const after = policies();
    // A batch large enough to be split starts a crypto worker now, after the call.
    setCryptoThreads(2);
    const a = new NativeAead();
    const n = 64, size = 1500, stride = size + 64, buf = Buffer.alloc(n * stride);
    const offsets = new Uint32Array(n).map((_, i) => i * stride);
    const lengths = new Uint32Array(n).fill(size);
    const keys = Array.from({ length: n }, () => Buffer.alloc(32, 7));
    a.sealBatch(buf, offsets, lengths, keys, n);
    const later = policies();
    console.log(JSON.stringify({ pid: process.pid, before, moved, after, later }));
  `;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  const r = JSON.parse(out.trim().split('\n').pop() as string) as {
    pid: number;
    before: Record<string, number>;
    moved: { idled: number; failed: number };
    after: Record<string, number>;
    later: Record<string, number>;
  };
  const main = String(r.pid);
  assert.ok(
    Object.values(r.before).every((p) => p === SCHED_OTHER),
    'all normal before',
  );
  const helpers = Object.keys(r.after).filter((t) => t !== main);
  assert.ok(helpers.length >= 4, `helper threads: ${helpers.length}`);
  assert.equal(r.moved.failed, 0);
  assert.equal(r.moved.idled, helpers.length);
  assert.equal(r.after[main], SCHED_OTHER, 'the main thread keeps its policy');
  for (const t of helpers) assert.equal(r.after[t], SCHED_IDLE, `thread ${t}`);
  const started = Object.keys(r.later).filter((t) => !(t in r.after));
  assert.ok(started.length >= 1, 'the split batch started a crypto worker');
  for (const t of started)
    assert.equal(r.later[t], SCHED_OTHER, `crypto worker ${t} keeps the normal policy`);
});
