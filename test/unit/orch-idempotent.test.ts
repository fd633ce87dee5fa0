// Retried creates: a request whose workload exists with the same spec is the same create
// (answered with the workload); any difference is a conflict. Table-driven over the fields.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type CreateWorkload, sameCreateSpec, type WorkloadRecord } from '../../src/orchestrator/model.js';

const record: WorkloadRecord = {
  name: 'web-1',
  tenant: 'acme',
  host: 'h1',
  address: '100.64.1.1',
  netns: 'tg-h1-o-web-1',
  labels: { app: 'web', tier: 'front' },
  state: 'running',
  migratingTo: null,
  createdAt: '2026-01-01T00:00:00.000Z',
  timings: {},
  lastError: null,
};
const runtime: WorkloadRecord = { ...record, netns: 'cni-1234', netnsOwner: 'runtime', ifname: 'eth0' };
const base: CreateWorkload = {
  tenant: 'acme',
  name: 'web-1',
  host: 'h1',
  labels: { tier: 'front', app: 'web' },
};

const cases: [string, CreateWorkload, WorkloadRecord, boolean][] = [
  ['the same spec, labels in another order', base, record, true],
  ['another tenant', { ...base, tenant: 'blue' }, record, false],
  ['another host', { ...base, host: 'h2' }, record, false],
  ['a label less', { ...base, labels: { app: 'web' } }, record, false],
  ['a label value changed', { ...base, labels: { app: 'api', tier: 'front' } }, record, false],
  ['no labels against labels', { tenant: 'acme', name: 'web-1', host: 'h1' }, record, false],
  ['no labels against none', { tenant: 'acme', name: 'web-1', host: 'h1' }, { ...record, labels: {} }, true],
  ['tg0 named against the default', { ...base, ifname: 'tg0' }, record, true],
  ['another interface', { ...base, ifname: 'eth1' }, record, false],
  ["a runtime's namespace against tenguard's", { ...base, netns: 'cni-1234' }, record, false],
  ["the runtime's namespace and interface", { ...base, netns: 'cni-1234', ifname: 'eth0' }, runtime, true],
  ["another runtime's namespace", { ...base, netns: 'cni-9999', ifname: 'eth0' }, runtime, false],
  ["tenguard's namespace against a runtime's", { ...base, ifname: 'eth0' }, runtime, false],
];

for (const [what, req, w, same] of cases)
  test(`sameCreateSpec: ${what} -> ${same ? 'the same create' : 'a conflict'}`, () => {
    assert.equal(sameCreateSpec(req, w), same);
  });
