// The orchestrator under mTLS: it enrols with a one-time join token as
// spiffe://TD/service/orchestrator, serves its API over mTLS to the operator only (no
// certificate, another identity, a revoked certificate: refused), and drives NIC agents and
// vSwitch daemons that themselves run mTLS and accept only the orchestrator, so a tenant's
// workloads on two hosts are created through it and reach each other.
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Identity } from '../../src/identity/identity.js';
import { serviceId } from '../../src/identity/spiffe.js';
import { OrchestratorClient } from '../../src/orchestrator/client.js';
import { TgError } from '../../src/util/errors.js';
import { apiRequest } from '../../src/util/http-json.js';
import { TD } from '../helpers/ca-softhsm.js';
import {
  allowWithinTenant,
  issue,
  MtlsLab,
  mtlsEndpoint,
  ORCHESTRATOR_ID,
  startWiringCa,
  type WiringCa,
  wiringPrefix,
} from '../helpers/ca-wiring.js';
import { ping, pingUntilReply } from '../helpers/ping.js';

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
const prefix = wiringPrefix();
const OPERATOR = serviceId(TD, 'operator').uri;
let ca: WiringCa;
let lab: MtlsLab | undefined;
let orch: ChildProcess | undefined;
let logs = '';
const dataDir = mkdtempSync(join(tmpdir(), 'tgorchm-'));
const socket = join(dataDir, 'orchestrator.sock');

before(async () => {
  ca = await startWiringCa();
  lab = await MtlsLab.start(prefix, ca, { hosts: 2, tenants: 1, workloads: 0, certTtlSeconds: 600 });
  const token = await ca.joinToken(ORCHESTRATOR_ID);
  orch = spawn(
    process.execPath,
    [
      BIN,
      'orchestrator',
      '--data-dir',
      join(dataDir, 'store'),
      '--api-socket',
      socket,
      '--ca-socket',
      ca.socket,
      '--ca-bundle',
      ca.bundleFile,
      '--trust-domain',
      TD,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TENGUARD_JOIN_TOKEN: token } },
  );
  orch.stderr?.on('data', (d: Buffer) => {
    if (logs.length < 4_000_000) logs += d.toString();
  });
});

after(async () => {
  if (orch?.pid !== undefined && orch.exitCode === null && orch.signalCode === null) {
    const exited = new Promise((r) => orch?.once('exit', r));
    process.kill(orch.pid, 'SIGTERM');
    await exited;
  }
  await lab?.stop();
  await ca?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

/**
 * Runs the CLI without blocking this process: the agents of the lab answer from here, so a
 * synchronous spawn would leave the orchestrator's calls to them unanswered while it runs.
 */
function runCli(
  args: string[],
  opts: { encoding: 'utf8'; timeout: number; env?: NodeJS.ProcessEnv },
): Promise<{ status: number | null; stdout: string; stderr: string; error?: Error }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      args,
      { encoding: 'utf8', timeout: opts.timeout, env: opts.env ?? process.env, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const code = (err as { code?: unknown } | null)?.code;
        if (err === null) resolve({ status: 0, stdout, stderr });
        else if (typeof code === 'number') resolve({ status: code, stdout, stderr });
        else resolve({ status: null, stdout, stderr, error: err });
      },
    );
  });
}

function client(identity: Identity | null): OrchestratorClient {
  return new OrchestratorClient(
    mtlsEndpoint(socket, () => ca.bundle(), identity === null ? null : () => identity, ORCHESTRATOR_ID),
  );
}

async function waitServing(c: OrchestratorClient): Promise<void> {
  const end = Date.now() + 30_000;
  for (;;) {
    if (orch?.exitCode !== null) throw new Error(`orchestrator exited: ${logs.slice(-800)}`);
    try {
      await c.listTenants();
      return;
    } catch (err) {
      if (Date.now() > end) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

test('the API over mTLS: the operator is served; no certificate, another identity, a revoked certificate are refused', async () => {
  const operator = await issue(ca.ca, OPERATOR, 600);
  const op = client(operator);
  await waitServing(op);
  assert.deepEqual(await op.listTenants(), []);

  const bare = mtlsEndpoint(socket, () => ca.bundle(), null, ORCHESTRATOR_ID);
  const none = await apiRequest(bare, 'GET', '/v1/tenants').catch((e: Error) => e);
  assert.ok(none instanceof Error || none.status === 401, 'no certificate: refused');

  const stranger = await issue(ca.ca, serviceId(TD, 'someone').uri, 600);
  await assert.rejects(
    client(stranger).listTenants(),
    (e: unknown) => e instanceof TgError && /403|FORBIDDEN/.test(`${e.code} ${e.message}`),
  );

  const doomed = await issue(ca.ca, OPERATOR, 600);
  assert.deepEqual(await client(doomed).listTenants(), []);
  ca.ca.revoke(doomed.serial, 'keyCompromise');
  await assert.rejects(
    client(doomed).listTenants(),
    (e: unknown) => e instanceof TgError && /401|UNAUTHENTICATED/.test(`${e.code} ${e.message}`),
  );
  assert.deepEqual(await op.listTenants(), [], 'the valid operator is still served');
});

test('the orchestrator drives mTLS agents as itself: workloads on two hosts reach each other', async () => {
  assert.ok(lab);
  const op = client(await issue(ca.ca, OPERATOR, 600));
  await waitServing(op);
  for (const h of lab.lab.hosts)
    await op.registerHost({
      name: h.name,
      nicApi: lab.nics.get(h.name)!.socket,
      vswitchApi: lab.vswitchds.get(h.name)!.socket,
      netnsPrefix: `${prefix}-${h.name}-o-`,
    });
  await op.createTenant({ name: 'acme', pool: '100.64.40.0/24' });
  await op.setPolicy('acme', allowWithinTenant('acme'));
  const a = await op.createWorkload({ tenant: 'acme', name: 'web', host: 'h1' });
  const b = await op.createWorkload({ tenant: 'acme', name: 'db', host: 'h2' });
  assert.ok(
    await pingUntilReply(a.netns, b.address, 15_000),
    `web -> db over both legs: ${logs.slice(-600)}`,
  );
  assert.equal((await ping(b.netns, a.address, { count: 3, waitS: 1 })).received, 3);
  assert.doesNotMatch(logs, /PRIVATE KEY/);
});

test('the CLI speaks mTLS with the operator certificate; without it the orchestrator refuses', async () => {
  const operator = await issue(ca.ca, OPERATOR, 600);
  const certFile = join(dataDir, 'operator.pem');
  const keyFile = join(dataDir, 'operator.key');
  writeFileSync(certFile, [operator.certificatePem, ...operator.chainPem].join(''), { mode: 0o600 });
  writeFileSync(keyFile, operator.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, {
    mode: 0o600,
  });
  const tlsArgs = ['--cert', certFile, '--key', keyFile, '--ca-bundle', ca.bundleFile];
  const ok = await runCli([BIN, 'tenant', 'list', '--json', '--api', socket, ...tlsArgs], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(ok.status, 0, ok.stderr);
  const { tenants } = JSON.parse(ok.stdout) as { tenants: { name: string }[] };
  assert.ok(
    tenants.some((t) => t.name === 'acme'),
    ok.stdout,
  );
  const plain = await runCli([BIN, 'tenant', 'list', '--api', socket], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.notEqual(plain.status, 0, 'plain HTTP is not served');
  const half = await runCli([BIN, 'tenant', 'list', '--api', socket, '--cert', certFile], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(half.status, 2);
  assert.match(half.stderr, /--cert, --key and --ca-bundle go together/);
  // The operator's directory: $TENGUARD_HOME/operator/{cert,key,bundle}.pem, no flags needed.
  const home = join(dataDir, 'home');
  mkdirSync(join(home, 'operator'), { recursive: true, mode: 0o700 });
  copyFileSync(certFile, join(home, 'operator', 'cert.pem'));
  copyFileSync(keyFile, join(home, 'operator', 'key.pem'));
  copyFileSync(ca.bundleFile, join(home, 'operator', 'bundle.pem'));
  const byHome = await runCli([BIN, 'tenant', 'list', '--json', '--api', socket], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, TENGUARD_HOME: home },
  });
  assert.equal(byHome.status, 0, byHome.stderr);
  const empty = await runCli([BIN, 'tenant', 'list', '--api', socket], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, TENGUARD_HOME: join(dataDir, 'nowhere') },
  });
  assert.equal(empty.status, 2);
  assert.match(empty.stderr, /no operator credentials/);
});

test('tenguard status over mTLS: certificate expiry of the orchestrator, each NIC and the operator', async () => {
  const operator = await issue(ca.ca, OPERATOR, 600);
  const certFile = join(dataDir, 'status-operator.pem');
  const keyFile = join(dataDir, 'status-operator.key');
  writeFileSync(certFile, [operator.certificatePem, ...operator.chainPem].join(''), { mode: 0o600 });
  writeFileSync(keyFile, operator.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, {
    mode: 0o600,
  });
  const tlsArgs = ['--cert', certFile, '--key', keyFile, '--ca-bundle', ca.bundleFile];
  const t0 = Date.now();
  const r = await runCli([BIN, 'status', '--json', '--api', socket, ...tlsArgs], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  const t1 = Date.now();
  assert.equal(r.status, 0, `${r.error?.message ?? ''} ${r.stderr}`);
  const st = JSON.parse(r.stdout) as {
    orchestrator: { tls: boolean };
    hosts: { name: string; nic: { reachable: boolean } }[];
    certificates: { holder: string; spiffeId: string; notAfter: string; secondsLeft: number }[];
  };
  assert.equal(st.orchestrator.tls, true);
  assert.deepEqual(
    st.hosts.map((h) => [h.name, h.nic.reachable]),
    [
      ['h1', true],
      ['h2', true],
    ],
    r.stdout,
  );
  const certs = new Map(st.certificates.map((c) => [c.holder, c]));
  assert.deepEqual([...certs.keys()].sort(), ['nic h1', 'nic h2', 'operator', 'orchestrator']);
  assert.equal(certs.get('orchestrator')?.spiffeId, ORCHESTRATOR_ID);
  assert.equal(certs.get('nic h1')?.spiffeId, `spiffe://${TD}/nic/h1`);
  assert.equal(certs.get('operator')?.spiffeId, OPERATOR);
  for (const c of certs.values()) {
    assert.ok(c.secondsLeft > 0 && c.secondsLeft <= 86_400, `${c.holder}: ${c.secondsLeft} s left`);
    // secondsLeft was counted at some moment while the command ran.
    const at = Date.parse(c.notAfter) - c.secondsLeft * 1000;
    assert.ok(at >= t0 - 2000 && at <= t1 + 2000, `${c.holder}: counted at ${at}, ran ${t0}..${t1}`);
  }
  const text = await runCli([BIN, 'status', '--api', socket, ...tlsArgs], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.match(text.stdout, /API over mTLS/);
  assert.match(
    text.stdout,
    /\n {2}orchestrator {2}spiffe:\/\/lab\.test\/service\/orchestrator {2}expires \S+ \(in \d+/,
  );
  // This orchestrator runs no console: a login link is refused with the reason.
  const login = await runCli([BIN, 'console', 'login', '--api', socket, ...tlsArgs], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(login.status, 1);
  assert.match(login.stderr, /TG_ERR_CONFLICT: this orchestrator serves no web console/);
});
