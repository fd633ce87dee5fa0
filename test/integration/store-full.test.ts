// A full disk under the SQLite store: the orchestrator (its own process) runs on a 1 MiB tmpfs
// this test mounts under its prefix; a filler file takes the rest of the space. Every write
// then answers 507 TG_ERR_STORE_FULL with a message naming the full disk (not 500 "internal
// error"), nothing of it is stored, /v1/health and /metrics say the store is full with
// SQLite's cause; once space is freed, writes succeed and health is ok again. The tmpfs is
// unmounted at the end, also after a failure.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { run, runOk } from '../../src/util/exec.js';
import { apiRequest } from '../../src/util/http-json.js';
import { OrchProcess } from '../helpers/orch.js';

test('SQLite store on a full disk: 507 TG_ERR_STORE_FULL, health and metrics say so, writes resume when space returns', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'tge-full-'));
  const mnt = join(base, 'mnt');
  const socket = join(base, 'orch.sock');
  await runOk('mkdir', ['-p', mnt]);
  await runOk('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tge-full', mnt]);
  const orch = new OrchProcess(join(mnt, 'data'), socket, ['--reconcile-ms', '0']);
  try {
    await orch.start();
    const post = (name: string, n: number) =>
      apiRequest(socket, 'POST', '/v1/tenants', { name, pool: `100.64.${n}.0/24` });
    assert.equal((await post('before', 1)).status, 201);
    // Take every free byte of the tmpfs.
    const filler = join(mnt, 'filler');
    await run('dd', ['if=/dev/zero', `of=${filler}`, 'bs=4k'], { timeoutMs: 10_000 });
    let full: Awaited<ReturnType<typeof post>> | null = null;
    const accepted = ['before'];
    let refused = '';
    // Small writes may still fit in pages SQLite already holds: write until one does not.
    for (let i = 0; i < 50 && full === null; i++) {
      const r = await post(`t${i}`, 10 + i);
      if (r.status === 201) accepted.push(`t${i}`);
      else {
        full = r;
        refused = `t${i}`;
      }
    }
    assert.ok(full !== null, 'no write failed on a full disk');
    t.diagnostic(`answer on a full disk: ${full.status} ${full.raw}`);
    assert.equal(full.status, 507, full.raw);
    const body = full.body as { code: string; message: string };
    assert.equal(body.code, 'TG_ERR_STORE_FULL');
    assert.match(body.message, /disk is full/);
    assert.match(body.message, /nothing of this change was written/);
    const h = (await apiRequest(socket, 'GET', '/v1/health')).body as {
      status: string;
      store: { kind: string; state: string; cause?: string };
    };
    assert.equal(h.status, 'degraded');
    assert.equal(h.store.kind, 'sqlite');
    assert.equal(h.store.state, 'full');
    assert.match(h.store.cause ?? '', /database or disk is full/);
    const m = await apiRequest(socket, 'GET', '/metrics');
    assert.match(
      m.raw,
      /tenguard_orchestrator_store_state\{store="sqlite",state="full",cause="database or disk is full"\} 1/,
    );
    // Space returns: writes succeed and health is ok.
    rmSync(filler);
    const again = await post('after', 200);
    assert.equal(again.status, 201, again.raw);
    const h2 = (await apiRequest(socket, 'GET', '/v1/health')).body as {
      status: string;
      store: { state: string };
    };
    assert.equal(h2.status, 'ok');
    assert.equal(h2.store.state, 'ok');
    // Every tenant that answered 201 is there, none that was refused.
    const names = (
      (await apiRequest(socket, 'GET', '/v1/tenants')).body as { tenants: { name: string }[] }
    ).tenants
      .map((x) => x.name)
      .sort();
    assert.deepEqual(names, [...accepted, 'after'].sort());
    assert.ok(!names.includes(refused));
  } finally {
    await orch.stop();
    await run('umount', [mnt]);
    rmSync(base, { recursive: true, force: true });
  }
});
