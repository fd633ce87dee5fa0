// Two orchestrator replicas (their own processes) on one etcd member this test starts and ends
// by pid: exactly one leads; the other serves reads itself and forwards writes to the leader;
// a request that arrives forwarded at a replica that does not lead is refused without effect;
// /v1/health and /metrics show leadership and the store's state; when the leader is killed
// (SIGKILL) the other leads within 3 s and takes writes; the killed one, started again,
// follows and forwards.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { EtcdCluster } from '../../src/lab/etcd.js';
import { FORWARDED_HEADER } from '../../src/orchestrator/replica.js';
import { apiRequest } from '../../src/util/http-json.js';
import { OrchProcess } from '../helpers/orch.js';

let dir = '';
let cluster: EtcdCluster | null = null;
const replicas: OrchProcess[] = [];

interface ReplicaHealth {
  status: string;
  store: { kind: string; state: string };
  replica: { address: string; leader: boolean; leaderAddress: string | null; forwarded: number };
}

async function health(r: OrchProcess): Promise<ReplicaHealth> {
  const h = await apiRequest(r.socket, 'GET', '/v1/health', undefined, { timeoutMs: 5000 });
  assert.equal(h.status, 200, h.raw);
  return h.body as ReplicaHealth;
}

async function leaderOf(rs: OrchProcess[], ms: number): Promise<{ leader: OrchProcess; after: number }> {
  const t0 = Date.now();
  for (;;) {
    for (const r of rs)
      if ((await health(r).catch(() => null))?.replica.leader) return { leader: r, after: Date.now() - t0 };
    if (Date.now() - t0 > ms) throw new Error(`no leader within ${ms} ms`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tge-replicas-'));
  cluster = await EtcdCluster.start('tge-replicas', 1);
  for (let i = 0; i < 2; i++) {
    const r = new OrchProcess('', join(dir, `r${i}.sock`), [
      '--store',
      `etcd:${cluster.endpoints[0]}`,
      '--reconcile-ms',
      '0',
    ]);
    replicas.push(r);
    await r.start();
  }
});

after(async () => {
  for (const r of replicas) await r.stop().catch(() => undefined);
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('two replicas on one etcd: one leads, writes forwarded, reads local, failover within 3 s', async () => {
  const { leader } = await leaderOf(replicas, 10_000);
  const follower = replicas.find((r) => r !== leader)!;
  const fh = await health(follower);
  assert.equal(fh.replica.leader, false);
  assert.equal(fh.replica.leaderAddress, leader.socket);
  assert.equal(fh.store.kind, 'etcd');
  assert.equal(fh.status, 'ok');

  // A write at the follower is forwarded; both serve the result from the store.
  const created = await apiRequest(follower.socket, 'POST', '/v1/tenants', {
    name: 'acme',
    pool: '100.64.1.0/24',
  });
  assert.equal(created.status, 201, created.raw);
  assert.equal((await health(follower)).replica.forwarded, 1);
  for (const r of replicas) {
    const list = await apiRequest(r.socket, 'GET', '/v1/tenants');
    assert.deepEqual(
      (list.body as { tenants: { name: string }[] }).tenants.map((t) => t.name),
      ['acme'],
    );
  }
  // The leader's refusals pass back unchanged.
  const dup = await apiRequest(follower.socket, 'POST', '/v1/tenants', {
    name: 'acme',
    pool: '100.64.2.0/24',
  });
  assert.equal(dup.status, 409, dup.raw);
  assert.equal((dup.body as { code: string }).code, 'TG_ERR_CONFLICT');

  // A request forwarded to a replica that does not lead is refused and changes nothing.
  const refused = await apiRequest(
    follower.socket,
    'POST',
    '/v1/tenants',
    { name: 'loop', pool: '100.64.3.0/24' },
    {
      headers: { [FORWARDED_HEADER]: '/elsewhere.sock' },
    },
  );
  assert.equal(refused.status, 503, refused.raw);
  assert.equal((refused.body as { code: string }).code, 'TG_ERR_NOT_LEADER');
  assert.equal((await apiRequest(leader.socket, 'GET', '/v1/tenants/loop')).status, 404);

  // Metrics: leadership and the store's state.
  const lm = await apiRequest(leader.socket, 'GET', '/metrics');
  const fm = await apiRequest(follower.socket, 'GET', '/metrics');
  assert.match(lm.raw, /^tenguard_orchestrator_leader 1$/m);
  assert.match(fm.raw, /^tenguard_orchestrator_leader 0$/m);
  assert.match(fm.raw, /tenguard_orchestrator_store_state\{store="etcd",state="ok",cause=""\} 1/);

  // The leader dies: the follower leads within 3 s and takes writes itself.
  const tKill = Date.now();
  leader.proc!.kill('SIGKILL');
  const next = await leaderOf([follower], 10_000);
  const takeoverMs = Date.now() - tKill;
  assert.ok(takeoverMs <= 3000, `takeover after ${takeoverMs} ms`);
  const w = await apiRequest(follower.socket, 'POST', '/v1/tenants', { name: 'blue', pool: '100.64.4.0/24' });
  assert.equal(w.status, 201, w.raw);
  assert.equal(next.leader, follower);

  // The killed replica comes back as a follower and forwards to the new leader.
  leader.proc = null;
  await leader.start();
  // Its campaign learns the leader shortly after its API answers.
  let back = await health(leader);
  for (let i = 0; i < 100 && back.replica.leaderAddress === null; i++) {
    await new Promise((res) => setTimeout(res, 50));
    back = await health(leader);
  }
  assert.equal(back.replica.leader, false);
  assert.equal(back.replica.leaderAddress, follower.socket);
  const viaOld = await apiRequest(leader.socket, 'DELETE', '/v1/tenants/blue');
  assert.equal(viaOld.status, 200, viaOld.raw);
  assert.equal((await health(leader)).replica.forwarded, 1);
  assert.equal((await apiRequest(follower.socket, 'GET', '/v1/tenants/blue')).status, 404);
  process.stderr.write(`replica takeover after SIGKILL of the leader: ${takeoverMs} ms\n`);

  // etcd freezes: the leader cannot renew its lease and stops leading at once (no store call
  // is needed to see it in /metrics), before the lease could run out in etcd.
  const pid = cluster!.members[0].proc!.pid!;
  const tStop = Date.now();
  process.kill(pid, 'SIGSTOP');
  let stoppedMs = -1;
  try {
    while (Date.now() - tStop < 5000) {
      const m = await apiRequest(follower.socket, 'GET', '/metrics', undefined, { timeoutMs: 2000 });
      if (/^tenguard_orchestrator_leader 0$/m.test(m.raw)) {
        stoppedMs = Date.now() - tStop;
        break;
      }
      await new Promise((res) => setTimeout(res, 20));
    }
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  process.stderr.write(`the leader stopped leading ${stoppedMs} ms after etcd froze\n`);
  assert.ok(stoppedMs >= 0 && stoppedMs <= 2000, `stopped leading after ${stoppedMs} ms`);
  // etcd back: a replica leads again.
  await leaderOf(replicas, 15_000);
});
