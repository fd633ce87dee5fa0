// The orchestrator's per-host work queues and agent health: work on one host runs in order
// and apart from other hosts' work, a multi-host operation holds every queue it names
// without deadlock, and an agent is reported stalled while a call waits, unreachable when
// one gets no answer, slow when it answered late, ok again after an answer in time.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentHealth, observed, SLOW_CALL_MS } from '../../src/orchestrator/agent-health.js';
import { HostQueues } from '../../src/orchestrator/host-queues.js';
import { TgError } from '../../src/util/errors.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a hung host delays only its own queue', async () => {
  const q = new HostQueues();
  let release!: () => void;
  const hung = q.run(['h2'], () => new Promise<void>((r) => (release = r)));
  const order: string[] = [];
  const behind = q.run(['h2'], async () => order.push('h2 behind'));
  const t = performance.now();
  await q.run(['h1'], async () => order.push('h1'));
  assert.ok(performance.now() - t < 500, 'h1 waited for h2');
  assert.deepEqual(order, ['h1']);
  assert.deepEqual(q.depths(), { h2: 2 });
  release();
  await hung;
  await behind;
  assert.deepEqual(order, ['h1', 'h2 behind']);
  assert.deepEqual(q.depths(), {});
});

test('work on one host runs one at a time in arrival order, also after a failure', async () => {
  const q = new HostQueues();
  const log: string[] = [];
  let running = 0;
  const job = (name: string, fail = false) =>
    q.run(['h1'], async () => {
      running++;
      assert.equal(running, 1, 'two operations on h1 at once');
      log.push(name);
      await sleep(5);
      running--;
      if (fail) throw new Error(name);
    });
  const r = await Promise.allSettled([job('a'), job('b', true), job('c')]);
  assert.deepEqual(log, ['a', 'b', 'c']);
  assert.deepEqual(
    r.map((x) => x.status),
    ['fulfilled', 'rejected', 'fulfilled'],
  );
});

test('operations over several hosts, named in any order, never deadlock', async () => {
  const q = new HostQueues();
  const done: number[] = [];
  await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      q.run(i % 2 === 0 ? ['h1', 'h2'] : ['h2', 'h1', 'h2'], async () => {
        await sleep(1);
        done.push(i);
      }),
    ),
  );
  assert.equal(done.length, 20);
  await q.drain();
});

test('agent health: unreachable on a transport failure, slow on a late answer, ok after one in time', () => {
  let now = 1_700_000_000_000;
  const h = new AgentHealth(() => now);
  h.record('h1', 'nic', 5);
  assert.deepEqual(h.problems(), []);
  const timeout = new TgError('TG_ERR_COMMAND_FAILED', 'API /run/x.sock: no answer within 3000 ms', {
    cause: new Error('no answer'),
  });
  now += 1000;
  h.record('h1', 'nic', 3000, timeout);
  assert.equal(h.unreachable('h1', 'nic'), true);
  assert.deepEqual(h.problems(), ['h1/nic: unreachable (API /run/x.sock: no answer within 3000 ms)']);
  assert.equal(h.list()[0].since, new Date(now).toISOString());
  assert.equal(h.list()[0].failures, 1);
  // An agent's own error answer (409 and the like) is an answer.
  h.record('h1', 'nic', 3, new TgError('TG_ERR_CONFLICT', 'exists'));
  assert.equal(h.unreachable('h1', 'nic'), false);
  h.record('h1', 'vswitch', SLOW_CALL_MS + 200);
  assert.deepEqual(h.problems(), [`h1/vswitch: slow (${SLOW_CALL_MS + 200} ms)`]);
  h.record('h1', 'vswitch', 4);
  assert.deepEqual(h.problems(), []);
  h.forget('h1');
  assert.deepEqual(h.list(), []);
});

test('observed(): a call waiting longer than SLOW_CALL_MS marks its agent stalled before it ends', async () => {
  const h = new AgentHealth();
  let answer!: (v: string) => void;
  const client = observed(
    { call: () => new Promise<string>((r) => (answer = r)), name: 'x' },
    (ms, err) => h.record('h2', 'nic', ms, err),
    (ms) => h.waiting('h2', 'nic', ms),
  );
  assert.equal(client.name, 'x');
  const p = client.call();
  await sleep(SLOW_CALL_MS + 100);
  assert.equal(h.unreachable('h2', 'nic'), true);
  assert.match(h.problems()[0], /^h2\/nic: stalled \(no answer for \d+ ms\)$/);
  answer('late');
  assert.equal(await p, 'late');
  assert.equal(h.unreachable('h2', 'nic'), false);
  assert.equal(h.list()[0].condition, 'slow');
});
