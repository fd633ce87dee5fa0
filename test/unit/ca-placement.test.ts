// The CSR API's placement lookup over the orchestrator's workload records.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decide } from '../../src/ca/approval.js';
import { orchestratorPlacement, type WorkloadDirectory } from '../../src/ca/placement.js';
import { workloadId } from '../../src/identity/spiffe.js';
import { TgError } from '../../src/util/errors.js';

type Rec = Awaited<ReturnType<WorkloadDirectory['showWorkload']>>;

function directory(records: Record<string, Rec>, failing = false): WorkloadDirectory {
  return {
    showWorkload: async (name) => {
      if (failing) throw new TgError('TG_ERR_COMMAND_FAILED', 'orchestrator unreachable');
      const r = records[name];
      if (r === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no workload ${name}`);
      return r;
    },
  };
}

const records: Record<string, Rec> = {
  web: { tenant: 'acme', host: 'h1', state: 'running', migratingTo: null },
  db: { tenant: 'acme', host: 'h1', state: 'migrating', migratingTo: 'h2' },
  old: { tenant: 'acme', host: 'h2', state: 'deleting', migratingTo: null },
  fresh: { tenant: 'acme', host: 'h3', state: 'creating', migratingTo: null },
};

test('placed where the orchestrator says, including a migration target; nowhere else', async () => {
  const placed = orchestratorPlacement(directory(records));
  const cases: [string, string, string, boolean][] = [
    ['h1', 'acme', 'web', true],
    ['h2', 'acme', 'web', false],
    ['h1', 'blue', 'web', false],
    ['h1', 'acme', 'db', true],
    ['h2', 'acme', 'db', true],
    ['h3', 'acme', 'db', false],
    ['h2', 'acme', 'old', false],
    ['h3', 'acme', 'fresh', true],
    ['h1', 'acme', 'nosuch', false],
  ];
  for (const [host, tenant, workload, want] of cases)
    assert.equal(await placed({ host, tenant, workload }), want, `${host} ${tenant}/${workload}`);
});

test('an orchestrator that cannot answer denies with PlacementUnavailable', async () => {
  const placed = orchestratorPlacement(directory(records, true));
  await assert.rejects(
    Promise.resolve(placed({ host: 'h1', tenant: 'acme', workload: 'web' })),
    /unreachable/,
  );
  const d = await decide(
    { kind: 'nic', host: 'h1', uri: 'spiffe://lab.test/nic/h1' },
    workloadId('lab.test', 'acme', 'web'),
    'lab.test',
    placed,
  );
  assert.equal(d.approved, false);
  assert.equal(d.reason, 'PlacementUnavailable');
  const ok = await decide(
    { kind: 'nic', host: 'h1', uri: 'spiffe://lab.test/nic/h1' },
    workloadId('lab.test', 'acme', 'web'),
    'lab.test',
    orchestratorPlacement(directory(records)),
  );
  assert.equal(ok.reason, 'WorkloadPlacedOnNic');
});
