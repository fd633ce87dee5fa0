// A new user's first run: the `tenguard` command on PATH from the setup step (a shim, never
// npx), and `tenguard ca init && tenguard ca sign --csr ...` with no configuration at all (the
// default CA: an embedded SoftHSM2 token in the default state directory, a generated PIN kept
// owner-only, or the PIN from $TENGUARD_CA_PIN). Every run has its own TENGUARD_HOME and HOME,
// so nothing touches the real default directory; no command rebuilds the native addon.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { runOk } from '../../src/util/exec.js';

const ROOT = join(import.meta.dirname, '..', '..', '..');
const ADDON = join(ROOT, 'build', 'Release', 'tenguard_native.node');
let dir = '';
let binDir = '';
let addonMtime = 0;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `tenguard ...` found on PATH (the shim), with HOME and TENGUARD_HOME of its own. */
function tenguard(args: string[], env: Record<string, string | undefined>, input?: string): Promise<Result> {
  return new Promise((resolve, reject) => {
    const e: NodeJS.ProcessEnv = { ...process.env, PATH: `${binDir}:${process.env.PATH}`, ...env };
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete e[k];
    delete e.TENGUARD_CA_CONFIG;
    const child = spawn('tenguard', args, { env: e, cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const t = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

/** Runs scripts/setup.sh with the shim going to `bin`. */
function setup(bin: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(
      'bash',
      [join(ROOT, 'scripts', 'setup.sh')],
      { env: { ...process.env, TENGUARD_BIN_DIR: bin } },
      (err) => (err ? reject(err) : resolve()),
    );
  });
}

function mode(p: string): string {
  return (statSync(p).mode & 0o777).toString(8);
}

async function csr(name: string, uri: string): Promise<string> {
  const path = join(dir, `${name}.csr`);
  await runOk('openssl', [
    'req',
    '-new',
    '-nodes',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-keyout',
    join(dir, `${name}.key`),
    '-out',
    path,
    '-subj',
    `/CN=${name}`,
    '-addext',
    `subjectAltName=URI:${uri}`,
  ]);
  return path;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tgu-first-run-'));
  binDir = join(dir, 'bin');
  addonMtime = statSync(ADDON).mtimeMs;
  await setup(binDir);
});

after(() => {
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

test('the setup step puts a `tenguard` shim on PATH that runs the checkout, never npx or a build', async () => {
  const shim = readFileSync(join(binDir, 'tenguard'), 'utf8');
  assert.match(shim, /^#!\/bin\/sh\n# tenguard shim \(scripts\/setup\.sh\)/);
  assert.ok(shim.includes(`${ROOT}/bin/tenguard.js`), shim);
  assert.doesNotMatch(shim, /npx|npm|node-gyp/);
  assert.equal(mode(join(binDir, 'tenguard')), '755');
  const help = await tenguard(['--help'], { HOME: dir });
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^usage: tenguard <command>/);
  // Run again: the shim is replaced in place; a foreign file of that name is left alone.
  await setup(binDir);
  const foreign = join(dir, 'foreign');
  mkdirSync(foreign);
  writeFileSync(join(foreign, 'tenguard'), '#!/bin/sh\necho mine\n');
  await setup(foreign);
  assert.equal(readFileSync(join(foreign, 'tenguard'), 'utf8'), '#!/bin/sh\necho mine\n');
});

test('the install script keeps an up-to-date addon instead of rebuilding it', async () => {
  const out = await new Promise<string>((resolve, reject) => {
    const c = spawn(process.execPath, [join(ROOT, 'scripts', 'build-native.mjs')], {
      env: { ...process.env, HOME: dir, npm_config_cache: join(dir, 'npm-cache') },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    c.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    c.once('error', reject);
    c.once('close', (code) => (code === 0 ? resolve(err) : reject(new Error(`exit ${code}: ${err}`))));
  });
  assert.match(out, /native addon up to date/);
  assert.equal(statSync(ADDON).mtimeMs, addonMtime);
});

test('tenguard ca init && tenguard ca sign --csr with no configuration (generated PIN, owner only)', async () => {
  const home = join(dir, 'tg-home');
  const env = { HOME: dir, TENGUARD_HOME: home, TENGUARD_CA_PIN: undefined };
  const before = await tenguard(['ca', 'list'], env);
  assert.equal(before.code, 2);
  assert.match(before.stderr, /no CA: run `tenguard ca init`/);

  const init = await tenguard(['ca', 'init'], env);
  assert.equal(init.code, 0, init.stderr);
  assert.match(
    init.stderr,
    /default CA in .*tg-home\/ca: trust domain tenguard\.local, embedded SoftHSM2 token/,
  );
  assert.match(init.stderr, /generation 1: active \(root\), key 'tenguard-ca' created in the token/);
  const state = join(home, 'ca');
  assert.equal(mode(state), '700');
  assert.equal(mode(join(state, 'pin')), '600');
  assert.equal(mode(join(state, 'config.json')), '600');
  assert.equal(mode(join(state, 'softhsm', 'tokens')), '700');
  const pin = readFileSync(join(state, 'pin'), 'utf8').trim();
  assert.ok(pin.length >= 24);
  assert.ok(!init.stderr.includes(pin) && !init.stdout.includes(pin), 'the PIN was printed');

  const again = await tenguard(['ca', 'init'], env);
  assert.match(again.stderr, /key 'tenguard-ca' found on the token/);

  const id = 'spiffe://tenguard.local/service/first';
  const signed = await tenguard(['ca', 'sign', '--csr', await csr('first', id), '--spiffe-id', id], env);
  assert.equal(signed.code, 0, signed.stderr);
  assert.match(signed.stdout, /^-----BEGIN CERTIFICATE-----\n/);
  const root = await tenguard(['ca', 'root'], env);
  writeFileSync(join(dir, 'root.pem'), root.stdout);
  writeFileSync(join(dir, 'first.pem'), signed.stdout);
  assert.match(
    await runOk('openssl', ['verify', '-CAfile', join(dir, 'root.pem'), join(dir, 'first.pem')]),
    /: OK/,
  );
  const other = await tenguard(['ca', 'init', '--trust-domain', 'other.example'], env);
  assert.equal(other.code, 1);
  assert.match(other.stderr, /TG_ERR_CONFLICT: the CA in .* is for trust domain 'tenguard\.local'/);
});

test('tenguard ca init with the PIN from $TENGUARD_CA_PIN and a trust domain of its own', async () => {
  const home = join(dir, 'tg-home-env');
  const pin = 'first-run-pin-1234';
  const env = { HOME: dir, TENGUARD_HOME: home, TENGUARD_CA_PIN: pin };
  const bad = await tenguard(['ca', 'init', '--trust-domain', 'Not A Domain'], env);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /TG_ERR_CONFIG: invalid CA configuration/);
  assert.equal(existsSync(join(home, 'ca')), false, 'a refused configuration left state behind');

  const init = await tenguard(['ca', 'init', '--trust-domain', 'first.example'], env);
  assert.equal(init.code, 0, init.stderr);
  assert.match(init.stderr, /PIN from environment variable TENGUARD_CA_PIN/);
  assert.equal(existsSync(join(home, 'ca', 'pin')), false);
  assert.ok(!readFileSync(join(home, 'ca', 'config.json'), 'utf8').includes(pin));
  const id = 'spiffe://first.example/nic/h1';
  const path = await csr('envpin', id);
  const signed = await tenguard(['ca', 'sign', '--csr', path, '--spiffe-id', id], env);
  assert.equal(signed.code, 0, signed.stderr);
  const noPin = await tenguard(['ca', 'sign', '--csr', path, '--spiffe-id', id], {
    ...env,
    TENGUARD_CA_PIN: undefined,
  });
  assert.notEqual(noPin.code, 0);
  assert.match(noPin.stderr, /the PIN variable TENGUARD_CA_PIN is not set or empty/);
  assert.equal(statSync(ADDON).mtimeMs, addonMtime, 'a command rebuilt the native addon');
});

test("the README's CA quick start runs as written on a fresh state directory", async () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('### A CA in two commands'));
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(
    block?.includes('tenguard ca init') && block.includes('tenguard ca sign --csr'),
    'no quick start',
  );
  const cwd = join(dir, 'readme');
  mkdirSync(cwd);
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      'bash',
      ['-euo', 'pipefail', '-c', block as string],
      {
        cwd,
        env: {
          ...process.env,
          PATH: `${binDir}:${process.env.PATH}`,
          HOME: dir,
          TENGUARD_HOME: join(cwd, 'home'),
        },
        timeout: 60_000,
      },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}: ${stderr}`)) : resolve(stdout)),
    ),
  );
  assert.match(out, /svc\.pem: OK/);
  assert.equal(mode(join(cwd, 'home', 'ca', 'pin')), '600');
});
