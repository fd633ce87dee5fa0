// Bad arguments and an existing prefix: a clear error with its code, and no change to the
// machine (the lab's namespaces, links and state file stay exactly as they were).
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { listNamespaces, stateFilePath } from '../../src/lab/index.js';
import { runOk } from '../../src/util/exec.js';
import {
  cleanup,
  cli,
  leftovers,
  prefixNamespaces,
  rootLinksStartingWith,
  testPrefix,
} from '../helpers/lab.js';

const used = new Set<string>();
after(() => cleanup(used));

const SIZE = ['--hosts', '2', '--tenants', '2', '--workloads', '2'];

/** Namespaces and root links whose names start with any of `starts`. */
async function snapshot(starts: string[]): Promise<string[]> {
  const ns = listNamespaces().filter((n) => starts.some((s) => n.startsWith(s)));
  const links: string[] = [];
  for (const s of starts) links.push(...(await rootLinksStartingWith(s)));
  return [...ns.map((n) => `ns ${n}`), ...links.map((l) => `link ${l}`)].sort();
}

test('bad arguments: clear error, exit code 2, nothing created', async () => {
  const prefix = testPrefix();
  used.add(prefix);
  const p = ['--prefix', prefix];
  const cases: [string[], string, RegExp?][] = [
    [['lab', 'up', ...p], 'TG_ERR_USAGE', /missing --hosts/],
    [['lab', 'up', '--hosts', '2', '--tenants', '2', ...p], 'TG_ERR_USAGE', /missing --workloads/],
    [
      ['lab', 'up', '--hosts', '0', '--tenants', '2', '--workloads', '2', ...p],
      'TG_ERR_INVALID_ARGUMENT',
      /hosts/,
    ],
    [['lab', 'up', '--hosts', '-1', '--tenants', '2', '--workloads', '2', ...p], 'TG_ERR_INVALID_ARGUMENT'],
    [['lab', 'up', '--hosts=-1', '--tenants', '2', '--workloads', '2', ...p], 'TG_ERR_INVALID_ARGUMENT'],
    [['lab', 'up', '--hosts', '1.5', '--tenants', '2', '--workloads', '2', ...p], 'TG_ERR_INVALID_ARGUMENT'],
    [['lab', 'up', '--hosts', 'two', '--tenants', '2', '--workloads', '2', ...p], 'TG_ERR_INVALID_ARGUMENT'],
    [
      ['lab', 'up', '--hosts', '17', '--tenants', '2', '--workloads', '2', ...p],
      'TG_ERR_INVALID_ARGUMENT',
      /1 to 16/,
    ],
    [
      ['lab', 'up', '--hosts', '2', '--tenants', '9', '--workloads', '2', ...p],
      'TG_ERR_INVALID_ARGUMENT',
      /tenants/,
    ],
    [
      ['lab', 'up', '--hosts', '2', '--tenants', '2', '--workloads', '9', ...p],
      'TG_ERR_INVALID_ARGUMENT',
      /workloads/,
    ],
    [
      ['lab', 'up', '--hosts', '16', '--tenants', '8', '--workloads', '8', ...p],
      'TG_ERR_INVALID_ARGUMENT',
      /at most/,
    ],
    [['lab', 'up', ...SIZE, '--bogus', ...p], 'TG_ERR_USAGE', /--bogus/],
    [['lab', 'up', ...SIZE, '--hosts', '3', ...p], 'TG_ERR_USAGE', /more than once/],
    [['lab', 'up', 'extra', ...SIZE, ...p], 'TG_ERR_USAGE', /extra/],
    [['lab', 'up', ...SIZE, '--prefix', 'TGBAD'], 'TG_ERR_INVALID_ARGUMENT', /prefix/],
    [['lab', 'up', ...SIZE, '--prefix', 'tgtoolong'], 'TG_ERR_INVALID_ARGUMENT', /prefix/],
    [['lab', 'up', ...SIZE, '--prefix', 'xylab'], 'TG_ERR_INVALID_ARGUMENT', /prefix/],
    [['lab', 'up', ...SIZE, '--prefix', 'tg-x'], 'TG_ERR_INVALID_ARGUMENT', /prefix/],
    [['lab', 'up', ...SIZE, '--prefix'], 'TG_ERR_USAGE'],
    [['lab', 'frobnicate'], 'TG_ERR_USAGE', /unknown subcommand/],
    [['lab'], 'TG_ERR_USAGE', /missing subcommand/],
    [['lab', 'down', '--prefix', '../x'], 'TG_ERR_INVALID_ARGUMENT', /prefix/],
    [['lab', 'down', ...p, '--force'], 'TG_ERR_USAGE'],
    [['lab', 'status', ...p, 'extra'], 'TG_ERR_USAGE'],
    [['lab', 'exec', ...p, 'h1-t1-w1'], 'TG_ERR_USAGE', /command after '--'/],
    [['lab', 'exec', ...p, '--', 'true'], 'TG_ERR_USAGE', /one node/],
    [['lab', 'exec', ...p, 'a', 'b', '--', 'true'], 'TG_ERR_USAGE', /one node/],
  ];
  const watched = [prefix, 'TGBAD', 'tgtoolong', 'xylab', 'tg-x', 'tglab'];
  const before = await snapshot(watched);
  for (const [args, code, message] of cases) {
    const r = await cli(args);
    const what = `tenguard ${args.join(' ')}`;
    assert.equal(r.code, 2, `${what}: exit ${r.code}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(code), what);
    if (message) assert.match(r.stderr, message, what);
    assert.equal(r.stdout, '', `${what} prints nothing on stdout`);
    assert.doesNotMatch(r.stderr, /\n\s+at /, `${what}: no stack trace`);
  }
  assert.deepEqual(await snapshot(watched), before);
  assert.deepEqual(await leftovers(prefix), []);
});

test('a missing lab: status and exec say so, down is a no-op', async () => {
  const prefix = testPrefix();
  used.add(prefix);
  const st = await cli(['lab', 'status', '--prefix', prefix]);
  assert.equal(st.code, 1);
  assert.match(st.stderr, /TG_ERR_LAB_NOT_FOUND/);
  const ex = await cli(['lab', 'exec', '--prefix', prefix, 'h1', '--', 'true']);
  assert.equal(ex.code, 1);
  assert.match(ex.stderr, /TG_ERR_LAB_NOT_FOUND/);
  const down = await cli(['lab', 'down', '--prefix', prefix]);
  assert.equal(down.code, 0);
  assert.match(down.stdout, /nothing to remove/);
});

test('up on an existing lab fails with TG_ERR_LAB_EXISTS and changes nothing', async () => {
  const prefix = testPrefix();
  used.add(prefix);
  const up = await cli([
    'lab',
    'up',
    '--hosts',
    '1',
    '--tenants',
    '1',
    '--workloads',
    '1',
    '--prefix',
    prefix,
  ]);
  assert.equal(up.code, 0, up.stderr);
  const before = await snapshot([prefix]);
  const stateBefore = readFileSync(stateFilePath(prefix), 'utf8');
  for (const size of [SIZE, ['--hosts', '1', '--tenants', '1', '--workloads', '1']]) {
    const again = await cli(['lab', 'up', ...size, '--prefix', prefix]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /TG_ERR_LAB_EXISTS/);
    assert.match(again.stderr, new RegExp(`lab down --prefix ${prefix}`));
  }
  assert.deepEqual(await snapshot([prefix]), before);
  assert.equal(readFileSync(stateFilePath(prefix), 'utf8'), stateBefore);
  const st = JSON.parse((await cli(['lab', 'status', '--prefix', prefix, '--json'])).stdout);
  assert.equal(st.condition, 'ready');
  assert.equal((await cli(['lab', 'down', '--prefix', prefix])).code, 0);
  assert.deepEqual(await leftovers(prefix), []);
});

test('a stray namespace or root link with the prefix also counts as an existing lab, and down removes it', async () => {
  const prefix = testPrefix();
  used.add(prefix);
  // A namespace left by something else with this prefix.
  await runOk('ip', ['netns', 'add', `${prefix}-stray`]);
  let before = await snapshot([prefix]);
  let r = await cli(['lab', 'up', ...SIZE, '--prefix', prefix]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`TG_ERR_LAB_EXISTS.*${prefix}-stray`));
  assert.deepEqual(await snapshot([prefix]), before);
  assert.ok(!existsSync(stateFilePath(prefix)));
  const orphan = JSON.parse((await cli(['lab', 'status', '--prefix', prefix, '--json'])).stdout);
  assert.equal(orphan.condition, 'orphaned');
  assert.equal((await cli(['lab', 'down', '--prefix', prefix])).code, 0);
  assert.deepEqual(await leftovers(prefix), []);

  // A veth pair in the root namespace (no address, left down) with this prefix.
  await runOk('ip', ['link', 'add', `${prefix}-va`, 'type', 'veth', 'peer', 'name', `${prefix}-vb`]);
  before = await snapshot([prefix]);
  r = await cli(['lab', 'up', ...SIZE, '--prefix', prefix]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`TG_ERR_LAB_EXISTS.*${prefix}-va`));
  assert.deepEqual(await snapshot([prefix]), before);
  const down = await cli(['lab', 'down', '--prefix', prefix, '--json']);
  assert.equal(down.code, 0);
  assert.deepEqual(JSON.parse(down.stdout).links.sort(), [`${prefix}-va`, `${prefix}-vb`]);
  assert.deepEqual(await leftovers(prefix), []);
});

test('down of one prefix leaves a lab with a longer prefix alone', async () => {
  const short = testPrefix();
  const long = `${short}z`;
  used.add(long);
  assert.deepEqual(await leftovers(short), [], 'the shorter prefix is unused');
  assert.equal(
    (await cli(['lab', 'up', '--hosts', '1', '--tenants', '1', '--workloads', '1', '--prefix', long])).code,
    0,
  );
  const before = prefixNamespaces(long);
  const r = await cli(['lab', 'down', '--prefix', short, '--json']);
  assert.equal(r.code, 0);
  const report = JSON.parse(r.stdout);
  for (const n of report.namespaces as string[])
    assert.ok(!n.startsWith(`${long}-`), `${n} is not ${short}'s`);
  assert.deepEqual(prefixNamespaces(long), before);
  assert.equal((await cli(['lab', 'down', '--prefix', long])).code, 0);
  assert.deepEqual(await leftovers(long), []);
});
