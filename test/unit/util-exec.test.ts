// Ending a child this process started (endChild): the polite signal first, SIGKILL after the
// grace period for one that ignores it, everything it wrote read before the promise resolves,
// and a child that has already ended returns at once.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { childJsonResult, childReady, endChild } from '../../src/util/exec.js';

function node(script: string) {
  return spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
}

test('endChild: SIGTERM ends a well-behaved child; its last output is read', async () => {
  const child = node(
    "process.on('SIGTERM', () => { process.stdout.write('bye\\n'); process.exit(0); }); process.stdout.write('ready\\n'); setInterval(() => {}, 1000);",
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  await childReady(child, 'child');
  await endChild(child, 'SIGTERM', 5000);
  assert.equal(child.exitCode, 0);
  assert.match(out, /bye\n$/);
});

test('endChild: a child that ignores the signal is killed after the grace period', async () => {
  const child = node(
    "process.on('SIGINT', () => {}); process.stdout.write('ready\\n'); setInterval(() => {}, 1000);",
  );
  await childReady(child, 'child');
  const t0 = Date.now();
  await endChild(child, 'SIGINT', 300);
  assert.equal(child.signalCode, 'SIGKILL');
  assert.ok(Date.now() - t0 >= 250, 'waited for the grace period');
});

test('endChild: a child that has already ended returns at once', async () => {
  const child = node('process.exit(3)');
  await new Promise((r) => child.once('close', r));
  await endChild(child);
  assert.equal(child.exitCode, 3);
});

test('childJsonResult: the last JSON line, or a clear error naming the probe', async () => {
  const ok = await childJsonResult(
    node('console.log("x"); console.log(JSON.stringify({ a: 1 })); console.log(JSON.stringify({ a: 2 }));'),
    5000,
    'probe',
  );
  assert.deepEqual(ok, { a: 2 });
  await assert.rejects(
    childJsonResult(node('console.error("no luck")'), 5000, 'udp probe'),
    /udp probe gave no result: no luck/,
  );
  await assert.rejects(
    childReady(node('process.exit(0)'), 'echo server'),
    /echo server ended before it was ready/,
  );
});
