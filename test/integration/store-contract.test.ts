// One contract, two stores: every case runs against the SQLite store (a file in a temporary
// directory) and against the etcd store on a real single-member etcd this test starts on
// loopback ports it picks (temporary data directory, ended by pid at the end, also after a
// failure). Then the etcd store's own failure cases: a member gone (503
// TG_ERR_STORE_UNAVAILABLE, health names the cause, resumes when it returns) and a lease that
// cannot be renewed (the leader stops leading at once and writes nothing more).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { EtcdCluster } from '../../src/lab/etcd.js';
import { EtcdStore } from '../../src/orchestrator/etcd-store.js';
import type { TenantRecord } from '../../src/orchestrator/model.js';
import { OrchestratorService } from '../../src/orchestrator/service.js';
import { SqliteStore } from '../../src/orchestrator/sqlite-store.js';
import type { Leadership, Store, WatchEvent } from '../../src/orchestrator/store.js';
import { TgError } from '../../src/util/errors.js';

const t = (name: string, n = 0): TenantRecord => ({
  name,
  pool: `100.64.${n}.0/24`,
  createdAt: String(n),
});

async function rejectsWith(p: Promise<unknown>, code: string, match?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof TgError, `expected a TgError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (match) assert.match(err.message, match);
    return true;
  });
}

async function until(what: string, fn: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Kit {
  kind: 'sqlite' | 'etcd';
  /** A fresh, empty store. */
  open(): Promise<Store>;
  /** A second client of the same store (etcd: another connection; SQLite: the same object). */
  peer(s: Store): Promise<Store>;
}

let cluster: EtcdCluster | null = null;
let tmp = '';
let n = 0;
const opened: Store[] = [];

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'tge-contract-'));
  cluster = await EtcdCluster.start('tge-contract', 1);
});

after(async () => {
  for (const s of opened) await s.close().catch(() => undefined);
  await cluster?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

const kits: Kit[] = [
  {
    kind: 'sqlite',
    open: async () => {
      const s = SqliteStore.open(join(tmp, `s${n++}`));
      opened.push(s);
      return s;
    },
    peer: async (s) => s,
  },
  {
    kind: 'etcd',
    open: async () => {
      const s = await EtcdStore.open({ endpoints: cluster!.endpoints, prefix: `c${n++}/` });
      opened.push(s);
      return s;
    },
    peer: async (s) => {
      const p = await EtcdStore.open({
        endpoints: cluster!.endpoints,
        prefix: (s as unknown as { ns: { prefix: Buffer } }).ns.prefix.toString(),
      });
      opened.push(p);
      return p;
    },
  },
];

for (const kit of kits) {
  describe(`store contract: ${kit.kind}`, () => {
    test('empty store, revision per committed transaction, create/mod revisions', async () => {
      const s = await kit.open();
      assert.equal(s.kind, kit.kind);
      assert.equal(await s.revision(), 0);
      assert.deepEqual((await s.dump()).entries, []);
      await s.txn((tx) => tx.put('tenant', 'a', t('a', 1), 'absent'));
      const r1 = await s.revision();
      assert.ok(r1 > 0);
      const a1 = await s.view((v) => v.get('tenant', 'a'));
      assert.deepEqual(a1?.value, t('a', 1));
      assert.equal(a1?.createRevision, r1);
      assert.equal(a1?.modRevision, r1);
      // Two writes in one transaction share one new revision.
      await s.txn((tx) => {
        tx.put('tenant', 'a', t('a', 2), { modRevision: r1 });
        tx.put('host', 'h', { name: 'h' } as never);
      });
      const r2 = await s.revision();
      assert.ok(r2 > r1);
      const [a2, h] = await s.view((v) => [v.get('tenant', 'a'), v.get('host', 'h')]);
      assert.equal(a2?.createRevision, r1);
      assert.equal(a2?.modRevision, r2);
      assert.equal(h?.modRevision, r2);
      // A transaction without writes commits nothing.
      assert.equal(await s.txn((tx) => tx.get('tenant', 'a')?.value.createdAt), '2');
      assert.equal(await s.revision(), r2);
      const d = await s.dump();
      assert.equal(d.revision, r2);
      assert.deepEqual(
        d.entries.map((e) => `${e.kind}/${e.key}`),
        ['host/h', 'tenant/a'],
      );
    });

    test('compare-and-set and refused writes change nothing', async () => {
      const s = await kit.open();
      await s.txn((tx) => tx.put('tenant', 'a', t('a', 1), 'absent'));
      const rev = (await s.view((v) => v.get('tenant', 'a')))!.modRevision;
      const before = await s.dump();
      await rejectsWith(
        s.txn((tx) => tx.put('tenant', 'a', t('a', 9), 'absent')),
        'TG_ERR_CONFLICT',
        /already exists/,
      );
      await rejectsWith(
        s.txn((tx) => tx.put('tenant', 'a', t('a', 9), { modRevision: rev + 100 })),
        'TG_ERR_CONFLICT',
        /changed/,
      );
      await rejectsWith(
        s.txn((tx) => tx.put('tenant', 'zz', t('zz', 9), { modRevision: rev })),
        'TG_ERR_NOT_FOUND',
      );
      await rejectsWith(
        s.txn((tx) => tx.delete('tenant', 'zz')),
        'TG_ERR_NOT_FOUND',
      );
      await rejectsWith(
        s.txn((tx) => tx.delete('tenant', 'a', { modRevision: rev + 1 })),
        'TG_ERR_CONFLICT',
      );
      // A thrown error after writes: none of them commit.
      await rejectsWith(
        s.txn((tx) => {
          tx.put('tenant', 'b', t('b', 2));
          tx.delete('tenant', 'a');
          throw new TgError('TG_ERR_CONFLICT', 'abort');
        }),
        'TG_ERR_CONFLICT',
        /abort/,
      );
      assert.deepEqual(await s.dump(), before);
      // The right revision succeeds.
      await s.txn((tx) => tx.delete('tenant', 'a', { modRevision: rev }));
      assert.equal(await s.view((v) => v.get('tenant', 'a')), undefined);
    });

    test('a transaction reads its own writes; lists are in key byte order', async () => {
      const s = await kit.open();
      await s.txn((tx) => {
        for (const k of ['acme/100.64.1.10', 'acme/100.64.1.2', 'blue/100.64.2.1', 'acme2/x'])
          tx.put('allocation', k, { tenant: k.split('/')[0], address: k.split('/')[1] } as never);
      });
      const keys = await s.txn((tx) => {
        tx.put('allocation', 'acme/100.64.1.3', { tenant: 'acme', address: '100.64.1.3' } as never);
        tx.delete('allocation', 'acme/100.64.1.2');
        assert.equal(tx.get('allocation', 'acme/100.64.1.2'), undefined);
        assert.ok(tx.get('allocation', 'acme/100.64.1.3'));
        return tx.list('allocation', 'acme/').map((e) => e.key);
      });
      assert.deepEqual(keys, ['acme/100.64.1.10', 'acme/100.64.1.3']);
      assert.deepEqual(await s.view((v) => v.list('allocation').map((e) => e.key)), [
        'acme/100.64.1.10',
        'acme/100.64.1.3',
        'acme2/x',
        'blue/100.64.2.1',
      ]);
      assert.deepEqual(await s.view((v) => v.list('tenant')), []);
    });

    test('concurrent read-modify-write transactions from two clients serialise', async () => {
      const s = await kit.open();
      const p = await kit.peer(s);
      await s.txn((tx) => tx.put('tenant', 'counter', t('counter', 0), 'absent'));
      const bump = (st: Store) =>
        st.txn((tx) => {
          const cur = tx.get('tenant', 'counter')!;
          tx.put('tenant', 'counter', t('counter', Number(cur.value.createdAt) + 1), {
            modRevision: cur.modRevision,
          });
        });
      await Promise.all(Array.from({ length: 20 }, (_, i) => bump(i % 2 === 0 ? s : p)));
      assert.equal((await p.view((v) => v.get('tenant', 'counter')))!.value.createdAt, '20');
    });

    test('watchers see every committed change in revision order, one call per revision', async () => {
      const s = await kit.open();
      const p = await kit.peer(s);
      const seen: WatchEvent[][] = [];
      const stop = p.watch((ev) => seen.push(ev));
      // The etcd watch starts asynchronously; give it its first revision to begin from.
      await new Promise((r) => setTimeout(r, 200));
      await s.txn((tx) => tx.put('tenant', 'a', t('a', 1)));
      await s.txn((tx) => {
        tx.put('tenant', 'b', t('b', 2));
        tx.put('host', 'h', { name: 'h' } as never);
      });
      await s.txn((tx) => tx.delete('tenant', 'a'));
      await s.txn(() => undefined);
      await until('three watch calls', () => seen.length >= 3);
      stop();
      assert.equal(seen.length, 3);
      const revs = seen.map((ev) => ev[0].revision);
      assert.ok(revs[0] < revs[1] && revs[1] < revs[2], `revisions ${revs}`);
      for (const ev of seen) assert.ok(ev.every((e) => e.revision === ev[0].revision));
      assert.deepEqual(
        seen.map((ev) => ev.map((e) => `${e.type} ${e.kind}/${e.key}`).sort()),
        [['put tenant/a'], ['put host/h', 'put tenant/b'], ['delete tenant/a']],
      );
      assert.equal(revs[2], await s.revision());
    });

    test('leadership: one leader, the next takes over on resign, a replica without it writes nothing', async () => {
      const s = await kit.open();
      const p = await kit.peer(s);
      const a: Leadership = s.campaign('replica-a', 2000);
      await until('a leads', () => a.isLeader());
      await s.txn((tx) => tx.put('tenant', 'x', t('x', 1)));
      const b: Leadership = p.campaign('replica-b', 2000);
      await until('b knows a', () => b.leader() === 'replica-a');
      assert.equal(b.isLeader(), false);
      let changes = 0;
      b.onChange(() => changes++);
      const t0 = Date.now();
      await a.resign();
      assert.equal(a.isLeader(), false);
      await until('b leads', () => b.isLeader(), 3000);
      const took = Date.now() - t0;
      assert.ok(took < 3000, `takeover took ${took} ms`);
      assert.ok(changes > 0);
      assert.equal(b.leader(), 'replica-b');
      await p.txn((tx) => tx.put('tenant', 'y', t('y', 2)));
      await b.resign();
      // s campaigned and resigned (SQLite: no candidate is left): its writes are refused.
      await rejectsWith(
        s.txn((tx) => tx.put('tenant', 'z', t('z', 3))),
        'TG_ERR_NOT_LEADER',
      );
      assert.equal(await s.view((v) => v.get('tenant', 'z')), undefined);
    });

    test("a host's NICs, their states and each workload's NIC (the service over this store)", async () => {
      const svc = new OrchestratorService(await kit.open());
      await svc.createTenant({ name: 't1', pool: '100.64.1.0/24' });
      await svc.registerHost({
        name: 'h1',
        nicApi: '/run/x/a.sock',
        vswitchApi: '/run/x/v.sock',
        netnsPrefix: 'tg-h1-',
        nics: [
          { name: 'nic1', api: '/run/x/a.sock' },
          { name: 'nic2', api: '/run/x/b.sock', fabricAddress: '198.18.0.27' },
        ],
      });
      const on: (string | undefined)[] = [];
      for (const name of ['a', 'b', 'c'])
        on.push((await svc.reserveWorkload({ tenant: 't1', name, host: 'h1' })).workload.nic);
      assert.deepEqual(on, ['nic1', 'nic2', 'nic1']);
      await svc.setNicState('h1', 'nic1', 'failed');
      const h = await svc.getHost('h1');
      assert.deepEqual(
        h.nics?.map((x) => [x.name, x.api, x.state, x.fabricAddress]),
        [
          ['nic1', '/run/x/a.sock', 'failed', undefined],
          ['nic2', '/run/x/b.sock', 'ok', '198.18.0.27'],
        ],
      );
      assert.equal((await svc.switchHost('a', h, 'nic2')).nic, 'nic2');
      assert.equal((await svc.getWorkload('a')).nic, 'nic2');
      assert.equal((await svc.reserveWorkload({ tenant: 't1', name: 'd', host: 'h1' })).workload.nic, 'nic2');
    });

    test('health is ok after successful operations', async () => {
      const s = await kit.open();
      await s.txn((tx) => tx.put('tenant', 'a', t('a', 1)));
      const h = s.health();
      assert.equal(h.kind, kit.kind);
      assert.equal(h.state, 'ok');
    });
  });
}

describe('etcd store failures', () => {
  test('a member gone: TG_ERR_STORE_UNAVAILABLE with its cause, health says so, resumes when it returns', async () => {
    // A short call deadline keeps this test short; the default is 3 s.
    const s = await EtcdStore.open({ endpoints: cluster!.endpoints, prefix: `c${n++}/`, timeoutMs: 1000 });
    opened.push(s);
    await s.txn((tx) => tx.put('tenant', 'a', t('a', 1)));
    const before = await s.dump();
    await cluster!.kill(0);
    try {
      const t0 = Date.now();
      await rejectsWith(
        s.txn((tx) => tx.put('tenant', 'b', t('b', 2))),
        'TG_ERR_STORE_UNAVAILABLE',
        /etcd at http:\/\/127\.0\.0\.1:\d+: cannot read the store/,
      );
      const ms = Date.now() - t0;
      assert.ok(ms < 10_000, `the refusal took ${ms} ms`);
      const h = s.health();
      assert.equal(h.state, 'unavailable');
      assert.ok(h.cause !== undefined && h.cause.length > 0);
      await rejectsWith(
        s.view((v) => v.list('tenant')),
        'TG_ERR_STORE_UNAVAILABLE',
      );
    } finally {
      cluster!.restart(0);
      await cluster!.waitReady();
    }
    // The client's circuit breaker may hold calls back a few seconds after the member returns.
    const end = Date.now() + 15_000;
    for (;;) {
      const ok = await s
        .txn((tx) => tx.put('tenant', 'b', t('b', 2)))
        .then(
          () => true,
          () => false,
        );
      if (ok) break;
      assert.ok(Date.now() < end, 'the store did not resume within 15 s');
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(s.health().state, 'ok');
    const after = await s.dump();
    assert.deepEqual(
      after.entries.map((e) => e.key),
      ['a', 'b'],
    );
    assert.deepEqual(after.entries[0], before.entries[0]);
  });

  test("the leader reads on its lease (no etcd round trip), a follower from etcd, a new leader sees the old one's writes", async () => {
    const s = (await kits[1].open()) as EtcdStore;
    const p = (await kits[1].peer(s)) as EtcdStore;
    const a = s.campaign('replica-a', 2000);
    await until('a leads', () => a.isLeader());
    await s.txn((tx) => tx.put('tenant', 'x', t('x', 1)));
    // Validated under the lease (by the linearizable read of that transaction), then no read
    // on the lease and no transaction's read goes to etcd: only the commit does.
    const lease = { leaderLease: true };
    const trips = s.roundTrips;
    for (let i = 0; i < 5; i++) assert.ok(await s.view((v) => v.get('tenant', 'x'), lease));
    await s.txn((tx) => tx.put('tenant', 'y', t('y', 2)));
    assert.deepEqual(await s.view((v) => v.list('tenant').map((e) => e.key), lease), ['x', 'y']);
    assert.equal(s.roundTrips - trips, 1, 'the leader made reads besides its one commit');
    // A plain view stays linearizable (an API read: a failed cluster shows at once).
    assert.ok(await s.view((v) => v.get('tenant', 'y')));
    assert.equal(s.roundTrips - trips, 2);
    // A follower reads etcd every time, on the lease or not (one read of s/rev while nothing changed).
    const b = p.campaign('replica-b', 2000);
    await until('b knows a', () => b.leader() === 'replica-a');
    await p.view((v) => v.list('tenant'));
    const ft = p.roundTrips;
    assert.deepEqual(await p.view((v) => v.list('tenant').map((e) => e.key), lease), ['x', 'y']);
    assert.deepEqual(await p.view((v) => v.list('tenant').map((e) => e.key), lease), ['x', 'y']);
    assert.equal(p.roundTrips - ft, 2);
    // The lead passes: the new leader's first read goes to etcd, and it sees what was written.
    await a.resign();
    await until('b leads', () => b.isLeader(), 3000);
    await p.txn((tx) => tx.put('tenant', 'z', t('z', 3)));
    assert.deepEqual(await p.view((v) => v.list('tenant').map((e) => e.key), lease), ['x', 'y', 'z']);
    // The old leader reads etcd again (it no longer leads) and sees the new leader's write.
    assert.ok(await s.view((v) => v.get('tenant', 'z'), lease));
    await b.resign();
  });

  test('a leader whose lease cannot be renewed stops leading at once and writes nothing', async () => {
    const s = await kits[1].open();
    const p = await kits[1].peer(s);
    const a = s.campaign('replica-a', 2000);
    await until('a leads', () => a.isLeader());
    let lostAt = 0;
    a.onChange(() => {
      if (!a.isLeader() && lostAt === 0) lostAt = Date.now();
    });
    // Freeze etcd: no keepalive is answered.
    const pid = cluster!.members[0].proc!.pid!;
    const frozenAt = Date.now();
    process.kill(pid, 'SIGSTOP');
    try {
      await until('a stops leading', () => !a.isLeader(), 3000);
      const ms = Date.now() - frozenAt;
      // The lease is 2 s; the replica stops 1.5 s after the last answered keepalive.
      assert.ok(ms <= 2000, `stopped leading ${ms} ms after etcd froze`);
      await rejectsWith(
        s.txn((tx) => tx.put('tenant', 'late', t('late', 1))),
        'TG_ERR_NOT_LEADER',
      );
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    assert.equal(await p.view((v) => v.get('tenant', 'late')), undefined);
    // It campaigns again and leads once etcd answers.
    await until('a leads again', () => a.isLeader(), 15_000);
    await s.txn((tx) => tx.put('tenant', 'again', t('again', 2)));
    assert.ok(await p.view((v) => v.get('tenant', 'again')));
  });
});
