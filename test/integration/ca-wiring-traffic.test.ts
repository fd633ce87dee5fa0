// Renewal and CA rotation while traffic runs, end to end through the CLI: `tenguard ca serve
// --tls-socket` in its own process, NIC agents and vSwitch daemons enrolled with join tokens
// from `tenguard ca join-token`, 20-second certificates renewed at half life, and a rotation
// driven by `tenguard ca rotate prepare|activate|retire` from other processes, all while a
// ping stream crosses two NICs and a client keeps calling every API. No API request may fail
// and the ping stream may lose nothing beyond noise. Afterwards the data directories (token
// aside) and every process's log are searched for private key material.
import assert from 'node:assert/strict';
import { type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { runOk } from '../../src/util/exec.js';
import { filesUnder, TD } from '../helpers/ca-softhsm.js';
import { type CliCa, MtlsLab, scratch, startCliCa, wiringPrefix } from '../helpers/ca-wiring.js';
import { pingStream, pingUntilReply } from '../helpers/ping.js';

const CERT_TTL_S = 20;
const prefix = wiringPrefix();
let ca: CliCa;
let m: MtlsLab;
const W1 = 'h1-t1-w1';
const W2 = 'h2-t1-w1';
const clientKeys: KeyObject[] = [];

before(async () => {
  ca = await startCliCa(CERT_TTL_S);
  m = await MtlsLab.start(prefix, ca, {
    hosts: 2,
    tenants: 1,
    workloads: 1,
    certTtlSeconds: CERT_TTL_S,
    bundleRefreshSeconds: 1,
    clientTtlSeconds: CERT_TTL_S,
  });
  m.client.on('renewed', () => clientKeys.push(m.client.current.privateKey));
  clientKeys.push(m.client.current.privateKey);
  await m.spinUp([W1, W2]);
});

after(async () => {
  await m?.stop();
  await ca?.close();
});

const wl = (name: string) => m.placed.get(name)!;

/** Calls every API of the lab in a loop until stopped; counts requests and failures. */
function apiLoop() {
  let stop = false;
  let requests = 0;
  const errors: string[] = [];
  const done = (async () => {
    for (let i = 0; !stop; i++) {
      const calls: [string, () => Promise<unknown>][] = [];
      for (const h of ['h1', 'h2']) {
        calls.push([`NIC ${h} tenants`, () => m.nic(h).tenants()]);
        calls.push([`vSwitch ${h} list`, () => m.vswitch(h).list()]);
      }
      // Re-publishing the peers makes each NIC verify the other's current certificate binding.
      if (i % 8 === 0) calls.push(['tenant peers', () => m.syncTenant('t1')]);
      for (const [what, call] of calls) {
        try {
          await call();
          requests++;
        } catch (err) {
          errors.push(`${new Date().toISOString()} ${what}: ${(err as Error).message}`);
        }
      }
      await sleep(200);
    }
  })();
  return {
    async stop() {
      stop = true;
      await done;
      return { requests, errors };
    },
  };
}

function count(logs: string, msg: string, id?: string): number {
  return logs.split('\n').filter((l) => l.includes(`"msg":"${msg}"`) && (id === undefined || l.includes(id)))
    .length;
}

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

async function issuerOfNic(host: string): Promise<string> {
  const id = await m.nic(host).identity();
  return new X509Certificate(id.nicCertificate!).issuer;
}

test('renewals and a CA rotation during traffic: no API error, no traffic loss', async (t) => {
  assert.ok(await pingUntilReply(wl(W1).ns, wl(W2).address, 20_000), 'no traffic before the test');
  const pinger = pingStream(wl(W1).ns, wl(W2).address, 0.1, 240);
  const loop = apiLoop();
  let stats: { requests: number; errors: string[] } | undefined;
  let pings: { transmitted: number; received: number } | undefined;
  try {
    // Renewal: about two and a half lifetimes of 20-second certificates.
    const nicId = `spiffe://${TD}/nic/h1`;
    const first = count(m.logs(), 'identity certificate obtained', nicId);
    await sleep(2.5 * CERT_TTL_S * 1000);
    const renewals = count(m.logs(), 'identity certificate obtained', nicId) - first;
    assert.ok(renewals >= 3, `NIC h1 renewed ${renewals} times in ${2.5 * CERT_TTL_S} s`);
    const vsId = `spiffe://${TD}/service/vswitchd-h2`;
    assert.ok(count(m.logs(), 'identity certificate obtained', vsId) >= 4, 'vSwitch h2 renewals');
    assert.ok(count(ca.logs(), 'CSR server identity renewed') >= 2, 'CA server renewals');
    assert.match(await issuerOfNic('h1'), /CN=tenguard CA g1/);

    // Rotation step 1: the next root is trusted everywhere before it signs anything.
    const changedBefore = count(m.logs(), 'trust bundle changed');
    await ca.cli(['rotate', 'prepare']);
    await until(
      'every agent to trust the next root',
      () => count(m.logs(), 'trust bundle changed') >= changedBefore + 4,
      20_000,
    );
    // Step 2: the new generation signs; certificates of the old one stay valid to expiry.
    await ca.cli(['rotate', 'activate']);
    await until(
      'NIC h1 to hold a generation-2 certificate',
      async () => /CA g2/.test(await issuerOfNic('h1')),
      40_000,
    );
    await until(
      'NIC h2 to hold a generation-2 certificate',
      async () => /CA g2/.test(await issuerOfNic('h2')),
      40_000,
    );
    // Step 3: once every generation-1 certificate has expired, the old root leaves the bundle.
    await until(
      'the old generation to retire',
      () =>
        ca.cli(['rotate', 'retire']).then(
          () => true,
          () => false,
        ),
      3 * CERT_TTL_S * 1000,
    );
    await until(
      'every agent to drop the old root',
      () => count(m.logs(), 'trust bundle changed') >= changedBefore + 8,
      20_000,
    );
    assert.equal(ca.bundle().roots.length, 1);
    assert.match(ca.bundle().roots[0].subject, /CN=tenguard CA g2/);
    await sleep(CERT_TTL_S * 500);
  } finally {
    stats = await loop.stop();
    pings = await pinger.stop();
  }
  t.diagnostic(
    `API requests ${stats.requests}, errors ${stats.errors.length}; pings ${pings.received}/${pings.transmitted}; ` +
      `certificates obtained by NIC h1 ${count(m.logs(), 'identity certificate obtained', `spiffe://${TD}/nic/h1`)}, ` +
      `CA server renewals ${count(ca.logs(), 'CSR server identity renewed')}`,
  );
  assert.deepEqual(stats.errors, [], `API errors: ${stats.errors.join('\n')}`);
  assert.ok(stats.requests > 200, `only ${stats.requests} API requests made`);
  assert.ok(pings.transmitted > 500, `only ${pings.transmitted} pings sent`);
  const lost = pings.transmitted - pings.received;
  assert.ok(lost <= Math.max(2, pings.transmitted * 0.005), `${lost} of ${pings.transmitted} pings lost`);

  // The certificates now in use chain to the new root alone, as OpenSSL sees it.
  const id = await m.nic('h2').identity();
  const leaf = scratch(ca, 'nic-h2.pem', id.nicCertificate!);
  const root = scratch(ca, 'root-g2.pem', ca.bundle().toPem());
  assert.equal((await runOk('openssl', ['verify', '-CAfile', root, leaf])).trim(), `${leaf}: OK`);
  assert.equal(count(m.logs(), 'identity renewal failed'), 0);
  assert.equal(count(m.logs(), 'trust bundle not refreshed; the last one stays'), 0);
});

test('no private key in the data directories (token aside) or in any process log', () => {
  const logs = `${m.logs()}\n${ca.logs()}`;
  assert.match(ca.logs(), /"msg":"issued certificate"/, 'the CA debug log was captured');
  const needles: [string, string][] = [];
  for (const [i, k] of clientKeys.entries()) {
    const d = (k.export({ format: 'jwk' }) as { d: string }).d;
    const raw = Buffer.from(d, 'base64url');
    needles.push([d, `client key ${i}`], [raw.toString('hex'), `client key ${i} (hex)`]);
    needles.push([raw.toString('base64'), `client key ${i} (base64)`]);
  }
  for (const t of m.joinTokens) needles.push([t, 'join token']);
  needles.push([ca.env.pin, 'token PIN']);
  const tokenDir = join(ca.env.stateDir, 'softhsm', 'tokens');
  const files = [...filesUnder(ca.env.dir, [tokenDir]), ...filesUnder(m.lab.runDir)];
  const texts: [string, string][] = files.map((f) => [f, readFileSync(f, 'latin1')]);
  texts.push(['process logs', logs], ['API answers', m.responses.join('\n')]);
  for (const [where, text] of texts) {
    assert.doesNotMatch(text, /PRIVATE KEY/, where);
    for (const [needle, what] of needles) assert.ok(!text.includes(needle), `${what} in ${where}`);
  }
});
