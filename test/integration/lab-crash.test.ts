// Crashed and interrupted builds: `lab up` killed with SIGKILL after n steps (through the
// TENGUARD_LAB_CRASH_AFTER test hook) leaves a record and half a lab, which `lab down`
// removes completely; an interrupted build (SIGINT) removes what it built by itself.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { after, test } from 'node:test';
import { type LabStatus, stateFilePath } from '../../src/lab/index.js';
import { BIN, cleanup, cli, leftovers, prefixNamespaces, testPrefix } from '../helpers/lab.js';

const used = new Set<string>();
after(() => cleanup(used));

const SIZE = ['--hosts', '2', '--tenants', '2', '--workloads', '2'];
// Steps of a 2/2/2 build: fabric, host h1, host h2, workloads h1, workloads h2, links up.
const STEPS = 6;

for (const n of [0, 1, 2, 4, STEPS - 1]) {
  test(`crash after ${n} of ${STEPS} steps, then down: nothing is left`, async () => {
    const prefix = testPrefix();
    used.add(prefix);
    const r = await cli(['lab', 'up', ...SIZE, '--prefix', prefix], {
      env: { TENGUARD_LAB_CRASH_AFTER: String(n) },
    });
    assert.equal(r.signal, 'SIGKILL', `up must die by SIGKILL (exit ${r.code}, ${r.stderr})`);

    const state = JSON.parse(readFileSync(stateFilePath(prefix), 'utf8'));
    assert.equal(state.status, 'building');
    assert.equal(state.steps.done.length, n);
    assert.equal(state.steps.total, STEPS);
    const expectedNs = [0, 1, 3, 5, 9, 13][n];
    assert.equal(prefixNamespaces(prefix).length, expectedNs);

    const st = JSON.parse((await cli(['lab', 'status', '--prefix', prefix, '--json'])).stdout) as LabStatus;
    assert.equal(st.condition, 'crashed');
    assert.equal(st.builderAlive, false);

    const again = await cli(['lab', 'up', ...SIZE, '--prefix', prefix]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /TG_ERR_LAB_EXISTS/);

    const down = await cli(['lab', 'down', '--prefix', prefix]);
    assert.equal(down.code, 0, down.stderr);
    assert.deepEqual(await leftovers(prefix), []);
  });
}

test('a crashed build without its state file is still removed by down', async () => {
  const prefix = testPrefix();
  used.add(prefix);
  const r = await cli(['lab', 'up', ...SIZE, '--prefix', prefix], { env: { TENGUARD_LAB_CRASH_AFTER: '3' } });
  assert.equal(r.signal, 'SIGKILL');
  const down0 = await cli(['lab', 'down', '--prefix', prefix]);
  assert.equal(down0.code, 0);
  // Rebuild the crash, then lose the state file as well.
  const r2 = await cli(['lab', 'up', ...SIZE, '--prefix', prefix], {
    env: { TENGUARD_LAB_CRASH_AFTER: '3' },
  });
  assert.equal(r2.signal, 'SIGKILL');
  rmSync(stateFilePath(prefix));
  assert.ok(prefixNamespaces(prefix).length > 0);
  const st = JSON.parse((await cli(['lab', 'status', '--prefix', prefix, '--json'])).stdout) as LabStatus;
  assert.equal(st.condition, 'orphaned');
  const down = await cli(['lab', 'down', '--prefix', prefix]);
  assert.equal(down.code, 0, down.stderr);
  assert.deepEqual(await leftovers(prefix), []);
});

test('an interrupted build (SIGINT) removes what it built and says so', async () => {
  const prefix = testPrefix();
  used.add(prefix);
  const child = spawn(process.execPath, [BIN, 'lab', 'up', ...SIZE, '--prefix', prefix], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  let interrupted = false;
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    // Interrupt (once) as soon as the first step is reported.
    if (!interrupted && stderr.includes('[1/')) {
      interrupted = true;
      child.kill('SIGINT');
    }
  });
  const code = await new Promise<number | null>((r) => child.once('close', (c) => r(c)));
  assert.equal(code, 130, stderr);
  assert.match(stderr, /TG_ERR_INTERRUPTED: .*interrupted.*what was built has been removed/);
  assert.deepEqual(await leftovers(prefix), []);
});

test('TENGUARD_LAB_CRASH_AFTER must be a step count', async () => {
  const prefix = testPrefix();
  used.add(prefix);
  const r = await cli(['lab', 'up', ...SIZE, '--prefix', prefix], {
    env: { TENGUARD_LAB_CRASH_AFTER: 'soon' },
  });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /TG_ERR_INVALID_ARGUMENT/);
  assert.deepEqual(await leftovers(prefix), []);
});
