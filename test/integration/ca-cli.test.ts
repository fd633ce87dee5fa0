// `tenguard ca` end to end: init, root, sign, list, revoke, rotation, the CSR API served on
// a Unix socket, the benchmark; the PIN never on the command line; no private key and no PIN
// in the state directory (outside the token) or in anything the commands print.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CSR_COLLECTION_PATH, SIGNER_NAME } from '../../src/identity/csr.js';
import { CaClient } from '../../src/identity/enrolment.js';
import { TrustBundle } from '../../src/identity/trust-bundle.js';
import { runOk } from '../../src/util/exec.js';
import { apiRequest } from '../../src/util/http-json.js';
import {
  type CaTestEnv,
  type CliResult,
  caCli,
  caTestEnv,
  filesUnder,
  opensslCsr,
  TD,
} from '../helpers/ca-softhsm.js';

let env: CaTestEnv;
let config = '';
let pinFile = '';
const outputs: CliResult[] = [];

async function ca(args: string[], input?: string): Promise<CliResult> {
  const r = await caCli(['--config', config, ...args], { input });
  outputs.push(r);
  return r;
}

before(() => {
  env = caTestEnv();
  pinFile = env.file('pin', `${env.pin}\n`);
  chmodSync(pinFile, 0o600);
  config = env.file(
    'ca.json',
    JSON.stringify({
      stateDir: env.stateDir,
      trustDomain: TD,
      token: { label: 'tg-cli', pin: { file: pinFile } },
    }),
  );
});

after(() => env?.cleanup());

test('init, root, sign (file and stdin), verify with OpenSSL', async () => {
  const first = await ca(['init']);
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stderr, /generation 1: active \(root\), key 'tenguard-ca' created in the token/);
  const again = await ca(['init']);
  assert.match(again.stderr, /key 'tenguard-ca' found on the token/);
  const root = await ca(['root']);
  assert.match(root.stdout, /^-----BEGIN CERTIFICATE-----\n/);
  const rootPath = env.file('root.pem', root.stdout);

  const id = `spiffe://${TD}/nic/host-1`;
  const csrPath = join(env.dir, 'h1.csr');
  await opensslCsr(env, 'h1', id);
  const signed = await ca(['sign', '--csr', csrPath, '--spiffe-id', id, '--ttl', '600']);
  assert.equal(signed.code, 0, signed.stderr);
  const leaf = env.file('h1.pem', signed.stdout);
  assert.match(await runOk('openssl', ['verify', '-CAfile', rootPath, leaf]), /: OK/);
  assert.match(
    await runOk('openssl', ['x509', '-in', leaf, '-noout', '-ext', 'subjectAltName']),
    /URI:spiffe:\/\/lab\.test\/nic\/host-1/,
  );

  const wl = `spiffe://${TD}/tenant/acme/workload/web`;
  const viaStdin = await ca(['sign', '--csr', '-', '--spiffe-id', wl], await opensslCsr(env, 'wl', wl));
  assert.equal(viaStdin.code, 0, viaStdin.stderr);
  assert.match(
    viaStdin.stderr,
    /issued serial [0-9a-f]+ for spiffe:\/\/lab\.test\/tenant\/acme\/workload\/web/,
  );
});

test('list and revoke', async () => {
  const list = await ca(['list', '--json']);
  const rows = JSON.parse(list.stdout) as { serial: string; spiffeId: string; revoked: boolean }[];
  assert.equal(rows.length, 2);
  const target = rows.find((r) => r.spiffeId.endsWith('/nic/host-1'))!;
  const rev = await ca(['revoke', target.serial.toUpperCase(), '--reason', 'keyCompromise']);
  assert.equal(rev.code, 0, rev.stderr);
  assert.match(rev.stdout, new RegExp(`revoked ${target.serial} at .* \\(keyCompromise\\)`));
  const table = await ca(['list']);
  assert.match(table.stdout, new RegExp(`${target.serial} .* revoked +spiffe://lab\\.test/nic/host-1`));
  const unknown = await ca(['revoke', 'abcdef']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /TG_ERR_NOT_FOUND: no certificate with serial abcdef/);
});

test('bad input: usage, configuration and requests are refused with their codes', async () => {
  const pinArg = await ca(['init', '--pin', '1234']);
  assert.equal(pinArg.code, 2);
  assert.match(pinArg.stderr, /TG_ERR_USAGE: Unknown option '--pin'/);
  const badCfg = env.file(
    'bad.json',
    JSON.stringify({ stateDir: env.stateDir, trustDomain: TD, token: { label: 'x', pin: { value: '1' } } }),
  );
  const r = await caCli(['--config', badCfg, 'root']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /TG_ERR_CONFIG: invalid CA configuration/);
  const garbage = await ca(['sign', '--csr', '-', '--spiffe-id', `spiffe://${TD}/nic/x`], 'not a request');
  assert.equal(garbage.code, 2);
  assert.match(garbage.stderr, /TG_ERR_INVALID_ARGUMENT: not a PEM certificate request/);
  const badId = await ca([
    'sign',
    '--csr',
    join(env.dir, 'h1.csr'),
    '--spiffe-id',
    'spiffe://lab.test/pod/x',
  ]);
  assert.equal(badId.code, 2);
  assert.match(badId.stderr, /TG_ERR_INVALID_ARGUMENT: invalid SPIFFE ID/);
});

test('rotation through the CLI: prepare, activate, retire', async () => {
  const prep = await ca(['rotate', 'prepare']);
  assert.equal(prep.code, 0, prep.stderr);
  assert.match(prep.stderr, /generation 2: next \(root\)/);
  assert.equal((await ca(['root'])).stdout.match(/BEGIN CERTIFICATE/g)?.length, 2);
  assert.equal((await ca(['rotate', 'activate'])).code, 0);
  const refused = await ca(['rotate', 'retire']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /TG_ERR_CONFLICT: 1 certificates from generation 1 are valid until/);
  assert.equal((await ca(['rotate', 'retire', '--force'])).code, 0);
  const status = JSON.parse((await ca(['status', '--json'])).stdout) as { id: number; state: string }[];
  assert.deepEqual(
    status.map((g) => [g.id, g.state]),
    [
      [1, 'retired'],
      [2, 'active'],
    ],
  );
});

test('the CSR API on a Unix socket (mode 0600), stopped by SIGTERM', async () => {
  const socketPath = join(env.dir, 'ca.sock');
  const bin = join(import.meta.dirname, '..', '..', '..', 'bin', 'tenguard.js');
  const child = spawn(process.execPath, [bin, 'ca', '--config', config, 'serve', '--socket', socketPath], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TENGUARD_LOG_LEVEL: 'debug' },
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((r) => child.once('close', (code) => r(code)));
  try {
    for (let i = 0; i < 100 && !existsSync(socketPath); i++) await sleep(100);
    assert.ok(existsSync(socketPath), stderr);
    assert.equal(statSync(socketPath).mode & 0o777, 0o600);
    const id = `spiffe://${TD}/service/orchestrator`;
    const csr = await opensslCsr(env, 'orch', id);
    const body = JSON.stringify({
      apiVersion: 'certificates.k8s.io/v1',
      kind: 'CertificateSigningRequest',
      metadata: { name: 'orchestrator' },
      spec: {
        request: Buffer.from(csr).toString('base64'),
        signerName: SIGNER_NAME,
        usages: ['digital signature', 'server auth', 'client auth'],
      },
    });
    const reply = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request(
        {
          socketPath,
          method: 'POST',
          path: CSR_COLLECTION_PATH,
          headers: { 'content-type': 'application/json' },
        },
        (res) => {
          let text = '';
          res.on('data', (d) => {
            text += d;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
    assert.equal(reply.status, 201, reply.text);
    const obj = JSON.parse(reply.text);
    assert.equal(obj.status.conditions[0].type, 'Approved');
    assert.equal(obj.spec.username, 'admin');
    const leaf = env.file('orch.pem', Buffer.from(obj.status.certificate, 'base64').toString());
    const rootPath = env.file('root2.pem', (await ca(['root'])).stdout);
    assert.match(await runOk('openssl', ['verify', '-CAfile', rootPath, leaf]), /: OK/);
  } finally {
    if (child.exitCode === null) child.kill('SIGTERM');
  }
  assert.equal(await exited, 0);
  assert.ok(!existsSync(socketPath), 'socket removed on exit');
  outputs.push({ code: 0, stdout: '', stderr });
});

test('serve --tls-socket: one-time join tokens from the operator socket, enrolment over TLS', async () => {
  const admin = join(env.dir, 'ca-admin.sock');
  const tlsSock = join(env.dir, 'ca-tls.sock');
  const bin = join(import.meta.dirname, '..', '..', '..', 'bin', 'tenguard.js');
  const args = [
    'ca',
    '--config',
    config,
    'serve',
    '--socket',
    admin,
    '--tls-socket',
    tlsSock,
    '--ttl',
    '120',
  ];
  const child = spawn(process.execPath, [bin, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TENGUARD_LOG_LEVEL: 'debug' },
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((r) => child.once('close', (code) => r(code)));
  try {
    for (let i = 0; i < 150 && !stderr.includes('over TLS on'); i++) await sleep(100);
    assert.match(stderr, /over TLS on/);
    assert.equal(statSync(admin).mode & 0o777, 0o600);
    assert.equal(statSync(tlsSock).mode & 0o777, 0o600);
    const foreign = await caCli([
      'join-token',
      '--socket',
      admin,
      '--spiffe-id',
      'spiffe://other.test/nic/h1',
    ]);
    assert.notEqual(foreign.code, 0);
    assert.match(foreign.stderr, /not in trust domain/);
    const id = `spiffe://${TD}/nic/h1`;
    const t = await caCli(['join-token', '--socket', admin, '--spiffe-id', id, '--ttl', '60']);
    assert.equal(t.code, 0, t.stderr);
    const token = t.stdout.trim();
    assert.match(token, /^[A-Za-z0-9_-]{32}$/);
    const rootPem = (await ca(['root'])).stdout;
    const client = new CaClient({ socketPath: tlsSock, bundle: TrustBundle.fromPem(TD, rootPem) });
    const csr = await opensslCsr(env, 'nic-h1-tls', id);
    const chain = await client.sign(csr, { joinToken: token }, 300);
    const leaf = env.file('nic-h1-tls.pem', chain);
    const rootPath = env.file('root3.pem', rootPem);
    assert.match(await runOk('openssl', ['verify', '-CAfile', rootPath, leaf]), /: OK/);
    await assert.rejects(client.sign(csr, { joinToken: token }), /HTTP 401/);
    // The operator socket takes only POST with a JSON body; the TLS socket speaks only TLS.
    const get = await apiRequest(admin, 'GET', '/join-tokens');
    assert.equal(get.status, 405);
    const bad = await apiRequest(admin, 'POST', '/join-tokens', undefined, { rawBody: '{nope' });
    assert.equal(bad.status, 400);
    await assert.rejects(apiRequest(tlsSock, 'GET', '/trust-bundle', undefined, { timeoutMs: 3000 }));
  } finally {
    if (child.exitCode === null) child.kill('SIGTERM');
  }
  assert.equal(await exited, 0);
  assert.ok(!existsSync(admin) && !existsSync(tlsSock), 'sockets removed on exit');
  outputs.push({ code: 0, stdout: '', stderr });
});

test('no private key and no PIN outside the token: state directory and command output', () => {
  const tokenDir = join(env.stateDir, 'softhsm', 'tokens');
  const files = filesUnder(env.stateDir, [tokenDir]);
  assert.ok(files.some((f) => f.endsWith('ca.json')));
  assert.ok(files.some((f) => f.includes(`${join('issued', '')}`)));
  for (const f of files) {
    const text = readFileSync(f, 'latin1');
    assert.doesNotMatch(text, /PRIVATE KEY/, f);
    assert.ok(!text.includes(env.pin), `PIN in ${f}`);
  }
  for (const f of filesUnder(tokenDir))
    assert.ok(!readFileSync(f, 'latin1').includes(env.pin), `PIN in clear in ${f}`);
  assert.ok(outputs.length > 10);
  const all = outputs.map((o) => o.stderr).join('');
  assert.match(all, /"msg":"issued certificate"/, 'the debug logs were captured too');
  assert.match(all, /"msg":"generated CA signing key in the token/);
  for (const o of outputs) {
    assert.doesNotMatch(o.stdout + o.stderr, /PRIVATE KEY/);
    assert.ok(!(o.stdout + o.stderr).includes(env.pin), 'PIN printed');
  }
});

test('bench: signatures and certificates per second through a throwaway token', async () => {
  const r = await caCli(['bench', '--count', '400', '--seconds', '3', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const b = JSON.parse(r.stdout) as Record<string, number>;
  for (const k of [
    'signaturesPerSecondAsync',
    'signaturesPerSecondSync',
    'certificatesPerSecond',
    'verifyAndIssuePerSecond',
    'enrolmentsPerSecondOverTls',
  ])
    assert.ok(b[k] > 0, k);
});
