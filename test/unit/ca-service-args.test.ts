// The mTLS options of `tenguard nic` and `tenguard vswitchd`: all or nothing, the join token
// only from the environment (and removed from it once read), bad values refused with codes.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { parseArgs } from 'node:util';
import { run as nicRun } from '../../src/cli/nic.js';
import { run as vswitchdRun } from '../../src/cli/vswitchd.js';
import { JOIN_TOKEN_ENV, MTLS_ARG_OPTIONS, mtlsConfigFromArgs } from '../../src/identity/service-mtls.js';
import { nicId, serviceId } from '../../src/identity/spiffe.js';
import { TgError } from '../../src/util/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'tg-ca-args-'));
const bundle = join(dir, 'bundle.pem');
writeFileSync(bundle, '-----BEGIN CERTIFICATE-----\n');
after(() => rmSync(dir, { recursive: true, force: true }));

function values(args: string[]): Record<string, unknown> {
  return parseArgs({ args, options: MTLS_ARG_OPTIONS, strict: true, allowPositionals: false }).values;
}

const FULL = [
  '--ca-socket',
  '/run/ca.sock',
  '--ca-bundle',
  bundle,
  '--trust-domain',
  'lab.test',
  '--host-name',
  'h1',
];
const idOf = (td: string, host: string): string => nicId(td, host).uri;

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof TgError, String(err));
    return err.code;
  }
  return 'no error';
}

test('no mTLS option: a usage error unless --insecure asks for a plain API; a lone mTLS option is a usage error', () => {
  assert.equal(
    code(() => mtlsConfigFromArgs(values([]), idOf)),
    'TG_ERR_USAGE',
  );
  assert.equal(mtlsConfigFromArgs(values(['--insecure']), idOf), undefined);
  assert.equal(
    code(() => mtlsConfigFromArgs(values(['--allow-client', 'spiffe://lab.test/x/y']), idOf)),
    'TG_ERR_USAGE',
  );
  assert.equal(
    code(() => mtlsConfigFromArgs(values(['--cert-ttl', '20']), idOf)),
    'TG_ERR_USAGE',
  );
  for (let i = 0; i < FULL.length; i += 2) {
    const partial = [...FULL.slice(0, i), ...FULL.slice(i + 2)];
    process.env[JOIN_TOKEN_ENV] = 'a-token-of-enough-length';
    assert.equal(
      code(() => mtlsConfigFromArgs(values(partial), idOf)),
      'TG_ERR_USAGE',
      FULL[i],
    );
  }
  delete process.env[JOIN_TOKEN_ENV];
});

test('the full set: the join token is read from the environment once and removed from it', () => {
  process.env[JOIN_TOKEN_ENV] = 'tok-0123456789abcdef';
  const c = mtlsConfigFromArgs(
    values([
      ...FULL,
      '--cert-ttl',
      '20',
      '--bundle-refresh',
      '2',
      '--allow-client',
      'spiffe://lab.test/service/*',
    ]),
    idOf,
  );
  assert.ok(c !== undefined);
  assert.equal(process.env[JOIN_TOKEN_ENV], undefined);
  assert.equal(c.joinToken, 'tok-0123456789abcdef');
  assert.equal(c.spiffeId, 'spiffe://lab.test/nic/h1');
  assert.equal(c.caSocket, '/run/ca.sock');
  assert.equal(c.bundlePem, '-----BEGIN CERTIFICATE-----\n');
  assert.equal(c.ttlSeconds, 20);
  assert.equal(c.bundleRefreshMs, 2000);
  assert.deepEqual(c.allowedClients, ['spiffe://lab.test/service/*']);

  process.env[JOIN_TOKEN_ENV] = 'tok-0123456789abcdef';
  const d = mtlsConfigFromArgs(values(FULL), idOf);
  assert.deepEqual(d?.allowedClients, [
    'spiffe://lab.test/service/orchestrator',
    'spiffe://lab.test/service/operator',
  ]);
  assert.equal(d?.ttlSeconds, undefined);
});

test('a service of no host (the orchestrator) needs no --host-name', () => {
  process.env[JOIN_TOKEN_ENV] = 'tok-0123456789abcdef';
  const c = mtlsConfigFromArgs(values(FULL.slice(0, 6)), (td) => serviceId(td, 'orchestrator').uri, {
    hostName: false,
  });
  assert.equal(c?.spiffeId, 'spiffe://lab.test/service/orchestrator');
  assert.equal(process.env[JOIN_TOKEN_ENV], undefined);
});

test('bad values are refused with their codes', () => {
  const cases: [string[], string][] = [
    [[], 'TG_ERR_USAGE'], // no token in the environment
    [['--cert-ttl', '0'], 'TG_ERR_INVALID_ARGUMENT'],
    [['--cert-ttl', '1e3'], 'TG_ERR_INVALID_ARGUMENT'],
    [['--bundle-refresh=-1'], 'TG_ERR_INVALID_ARGUMENT'],
    [['--allow-client', 'https://lab.test/x'], 'TG_ERR_INVALID_ARGUMENT'],
    [['--allow-client', 'spiffe://lab.test/a//b'], 'TG_ERR_INVALID_ARGUMENT'],
  ];
  for (const [extra, want] of cases) {
    if (want !== 'TG_ERR_USAGE') process.env[JOIN_TOKEN_ENV] = 'tok-0123456789abcdef';
    assert.equal(
      code(() => mtlsConfigFromArgs(values([...FULL, ...extra]), idOf)),
      want,
      extra.join(' '),
    );
    delete process.env[JOIN_TOKEN_ENV];
  }
  process.env[JOIN_TOKEN_ENV] = 'tok-0123456789abcdef';
  const relative = ['--ca-socket', 'ca.sock', ...FULL.slice(2)];
  assert.equal(
    code(() => mtlsConfigFromArgs(values(relative), idOf)),
    'TG_ERR_INVALID_ARGUMENT',
  );
  process.env[JOIN_TOKEN_ENV] = 'tok-0123456789abcdef';
  const missing = [...FULL.slice(0, 2), '--ca-bundle', join(dir, 'absent.pem'), ...FULL.slice(4)];
  assert.equal(
    code(() => mtlsConfigFromArgs(values(missing), idOf)),
    'TG_ERR_INVALID_ARGUMENT',
  );
  process.env[JOIN_TOKEN_ENV] = 'tok-0123456789abcdef';
  assert.equal(
    code(() => mtlsConfigFromArgs(values([...FULL.slice(0, 6), '--host-name', 'a/b']), idOf)),
    'TG_ERR_INVALID_ARGUMENT',
  );
  delete process.env[JOIN_TOKEN_ENV];
});

test('the CLIs take the mTLS flags and no join token on the command line', async () => {
  const nicBase = [
    '--api-socket',
    '/tmp/x.sock',
    '--host-address',
    '198.18.0.2',
    '--fabric-address',
    '198.18.0.3',
  ];
  await assert.rejects(
    nicRun([...nicBase, '--join-token', 'x']),
    (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_USAGE',
  );
  await assert.rejects(
    nicRun([...nicBase, '--ca-socket', '/run/ca.sock']),
    (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_USAGE' && /go together/.test(e.message),
  );
  const vsBase = ['--api-socket', '/tmp/x.sock', '--ifname-prefix', 'tgx-1v'];
  await assert.rejects(
    vswitchdRun([...vsBase, '--join-token', 'x']),
    (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_USAGE',
  );
  await assert.rejects(
    vswitchdRun([...vsBase, '--trust-domain', 'lab.test']),
    (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_USAGE' && /go together/.test(e.message),
  );
  // Secure by default: neither mTLS nor --insecure is refused; both at once too.
  for (const run of [() => nicRun(nicBase), () => vswitchdRun(vsBase)])
    await assert.rejects(
      run(),
      (e: unknown) =>
        e instanceof TgError && e.code === 'TG_ERR_USAGE' && /--insecure for plain HTTP/.test(e.message),
    );
  await assert.rejects(
    nicRun([...nicBase, '--insecure', '--ca-socket', '/run/ca.sock']),
    (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_USAGE' && /exclude each other/.test(e.message),
  );
});
