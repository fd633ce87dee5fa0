// The etcd store over TLS with client certificates: a member (started here, ended by pid)
// serves https on loopback with a certificate from a CA this test makes (openssl, files in a
// temporary directory) and demands client certificates from that CA. The store opens with
// --etcd-ca/--etcd-cert/--etcd-key; without a client certificate, or with one from another CA,
// it answers TG_ERR_STORE_UNAVAILABLE; an https URL without a CA is a usage error; an
// orchestrator process on it serves writes and reads.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { EtcdCluster } from '../../src/lab/etcd.js';
import { openStore, parseStoreSpec } from '../../src/orchestrator/store-spec.js';
import { TgError } from '../../src/util/errors.js';
import { runOk } from '../../src/util/exec.js';
import { apiRequest } from '../../src/util/http-json.js';
import { OrchProcess } from '../helpers/orch.js';

async function openssl(args: string[]): Promise<void> {
  await runOk('openssl', args);
}

/** A CA and, signed by it, a certificate for `cn` with the given extensions. */
async function issue(dir: string, ca: string, name: string, cn: string, ext: string): Promise<void> {
  const key = join(dir, `${name}.key`);
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
  await openssl(['req', '-new', '-key', key, '-subj', `/CN=${cn}`, '-out', join(dir, `${name}.csr`)]);
  writeFileSync(join(dir, `${name}.ext`), ext);
  await openssl([
    'x509',
    '-req',
    '-in',
    join(dir, `${name}.csr`),
    '-CA',
    join(dir, `${ca}.pem`),
    '-CAkey',
    join(dir, `${ca}.key`),
    '-CAcreateserial',
    '-days',
    '1',
    '-out',
    join(dir, `${name}.pem`),
    '-extfile',
    join(dir, `${name}.ext`),
  ]);
}

async function makeCa(dir: string, name: string): Promise<void> {
  const key = join(dir, `${name}.key`);
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
  await openssl([
    'req',
    '-x509',
    '-new',
    '-key',
    key,
    '-subj',
    `/CN=${name}`,
    '-days',
    '1',
    '-out',
    join(dir, `${name}.pem`),
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
}

test('etcd store over TLS with client certificates: opens with the right identity only; an orchestrator runs on it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tge-etcdtls-'));
  let cluster: EtcdCluster | null = null;
  let orch: OrchProcess | null = null;
  try {
    await makeCa(dir, 'ca');
    await makeCa(dir, 'rogue');
    await issue(
      dir,
      'ca',
      'server',
      'etcd',
      'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n',
    );
    await issue(dir, 'ca', 'client', 'tenguard-orchestrator', 'extendedKeyUsage=clientAuth\n');
    await issue(dir, 'rogue', 'intruder', 'intruder', 'extendedKeyUsage=clientAuth\n');
    const f = (n: string) => join(dir, n);
    cluster = await EtcdCluster.start('tge-etcdtls', 1, {
      tls: { cert: f('server.pem'), key: f('server.key'), clientCa: f('ca.pem') },
    });
    const url = cluster.endpoints[0];
    assert.match(url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const spec = parseStoreSpec(`etcd:${url}`);

    // The right client identity: wait for the member, then write and read.
    const end = Date.now() + 20_000;
    let store: Awaited<ReturnType<typeof openStore>> | null = null;
    while (store === null) {
      store = await openStore(spec, {
        tls: { ca: f('ca.pem'), cert: f('client.pem'), key: f('client.key') },
      }).catch((err: Error) => {
        if (Date.now() > end) throw err;
        return null;
      });
      if (store === null) await new Promise((r) => setTimeout(r, 200));
    }
    await store.txn((tx) => tx.put('tenant', 'a', { name: 'a', pool: '100.64.1.0/24', createdAt: 'x' }));
    assert.equal((await store.view((v) => v.get('tenant', 'a')))?.value.name, 'a');
    await store.close();

    const refused = async (tls: { ca: string; cert?: string; key?: string }, what: string) =>
      assert.rejects(
        openStore(spec, { tls, timeoutMs: 1000 }),
        (err: unknown) => err instanceof TgError && err.code === 'TG_ERR_STORE_UNAVAILABLE',
        what,
      );
    await refused({ ca: f('ca.pem') }, 'no client certificate');
    await refused(
      { ca: f('ca.pem'), cert: f('intruder.pem'), key: f('intruder.key') },
      'a client of another CA',
    );
    await assert.rejects(
      openStore(spec, {}),
      (err: unknown) =>
        err instanceof TgError && err.code === 'TG_ERR_USAGE' && /--etcd-ca/.test(err.message),
    );
    await assert.rejects(
      openStore(spec, { tls: { ca: f('ca.pem'), cert: f('client.pem') } }),
      (err: unknown) => err instanceof TgError && err.code === 'TG_ERR_USAGE',
    );

    orch = new OrchProcess('', f('orch.sock'), [
      '--store',
      `etcd:${url}`,
      '--etcd-ca',
      f('ca.pem'),
      '--etcd-cert',
      f('client.pem'),
      '--etcd-key',
      f('client.key'),
      '--reconcile-ms',
      '0',
    ]);
    await orch.start();
    const created = await apiRequest(orch.socket, 'POST', '/v1/tenants', {
      name: 'b',
      pool: '100.64.2.0/24',
    });
    assert.equal(created.status, 201, created.raw);
    const list = await apiRequest(orch.socket, 'GET', '/v1/tenants');
    assert.deepEqual(
      (list.body as { tenants: { name: string }[] }).tenants.map((t) => t.name),
      ['a', 'b'],
    );
  } finally {
    await orch?.stop();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
