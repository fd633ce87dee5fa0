// Spin-up latency for 100 workloads through the orchestrator: from the API call to the first
// packet delivered (an echo reply from a same-tenant anchor), alternating between two hosts so
// half the paths cross the fabric. Prints median, p95 and the step medians.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { benchSpinup } from '../../src/bench/spinup.js';
import { listNamespaces } from '../../src/lab/index.js';
import { ALLOW_WITHIN, type OrchLab, orchPrefix, startOrchLab, stopOrchLab } from '../helpers/orch.js';
import { ping } from '../helpers/ping.js';

const COUNT = Number(process.env.TG_SPINUP_COUNT ?? 100);
const prefix = orchPrefix();
let L: OrchLab | undefined;

before(async () => {
  L = await startOrchLab(prefix);
  await L.client.createTenant({ name: 'bench', pool: '100.64.100.0/22' });
  await L.client.setPolicy('bench', ALLOW_WITHIN('bench'));
});

after(async () => {
  await stopOrchLab(L, prefix);
  const left = (await listNamespaces()).filter((n) => n.startsWith(prefix));
  assert.deepEqual(left, [], 'namespaces left behind');
});

test(`spin-up to first packet for ${COUNT} workloads`, { timeout: 20 * 60_000 }, async () => {
  const c = L!.client;
  const anchor = await c.createWorkload({ tenant: 'bench', name: 'anchor', host: 'h1' });
  const r = await benchSpinup(c, {
    tenant: 'bench',
    hosts: ['h1', 'h2'],
    count: COUNT,
    anchor: { name: anchor.name, address: anchor.address },
  });
  process.stderr.write(
    `spin-up to first packet, ${COUNT} workloads: median ${r.medianMs} ms, p95 ${r.p95Ms} ms, max ${r.maxMs} ms; ` +
      `API call median ${[...r.apiMs].sort((a, b) => a - b)[Math.floor(r.apiMs.length / 2)]} ms; steps ${JSON.stringify(r.stepMedians)}\n`,
  );
  assert.deepEqual(r.failures, []);
  assert.equal(r.samples.length, COUNT);
  assert.ok(r.medianMs > 0 && r.p95Ms >= r.medianMs);
  // Every benchmark workload is gone again; the anchor still answers its own tenant.
  assert.deepEqual(
    (await c.listWorkloads()).map((w) => w.name),
    ['anchor'],
  );
  assert.deepEqual((await L!.agents.nic('h2').workloads()).length, 0);
  assert.equal((await ping(anchor.netns, anchor.address, { count: 1 })).received, 1);
});
