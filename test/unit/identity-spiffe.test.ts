import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nicId, parseSpiffeId, SpiffeIdPattern, serviceId, workloadId } from '../../src/identity/spiffe.js';
import { TgError } from '../../src/util/errors.js';

test('parses the three identity shapes', () => {
  const n = parseSpiffeId('spiffe://prod.example/nic/host-1');
  assert.deepEqual(
    { ...n },
    { kind: 'nic', uri: 'spiffe://prod.example/nic/host-1', trustDomain: 'prod.example', host: 'host-1' },
  );
  const w = parseSpiffeId('spiffe://prod.example/tenant/acme/workload/web_1');
  assert.equal(w.kind, 'workload');
  assert.equal(w.kind === 'workload' && `${w.tenant}/${w.workload}`, 'acme/web_1');
  const s = parseSpiffeId('spiffe://td/service/orchestrator');
  assert.equal(s.kind === 'service' && s.name, 'orchestrator');
  assert.equal(nicId('td', 'h').uri, 'spiffe://td/nic/h');
  assert.equal(workloadId('td', 't', 'w').uri, 'spiffe://td/tenant/t/workload/w');
  assert.equal(serviceId('td', 'ca').uri, 'spiffe://td/service/ca');
});

const invalid: [string, RegExp][] = [
  ['', /must start with spiffe/],
  ['SPIFFE://td/nic/h', /must start with spiffe/],
  ['https://td/nic/h', /must start with spiffe/],
  ['spiffe:///nic/h', /trust domain/],
  ['spiffe://TD/nic/h', /trust domain/],
  ['spiffe://td:8080/nic/h', /trust domain/],
  ['spiffe://user@td/nic/h', /trust domain/],
  ['spiffe://td', /expected spiffe/],
  ['spiffe://td/', /empty path segment/],
  ['spiffe://td/nic/h/', /empty path segment/],
  ['spiffe://td/nic//h', /empty path segment/],
  ['spiffe://td/nic/..', /"\." and "\.\."/],
  ['spiffe://td/nic/h?x=1', /path segments/],
  ['spiffe://td/nic/h#f', /path segments/],
  ['spiffe://td/nic/h%20', /path segments/],
  ['spiffe://td/nic/a b', /path segments/],
  ['spiffe://td/nic', /expected spiffe/],
  ['spiffe://td/tenant/t/workload', /expected spiffe/],
  ['spiffe://td/tenant/t/pod/w', /expected spiffe/],
  ['spiffe://td/other/x', /expected spiffe/],
  [`spiffe://td/nic/${'a'.repeat(64)}`, /1 to 63/],
  [`spiffe://td/nic/${'a'.repeat(2100)}`, /2048 bytes/],
];

test('rejects malformed and foreign-shaped IDs with a reason', () => {
  for (const [uri, why] of invalid) {
    assert.throws(
      () => parseSpiffeId(uri),
      (err: unknown) =>
        err instanceof TgError && err.code === 'TG_ERR_INVALID_ARGUMENT' && why.test(err.message),
      uri,
    );
  }
});

test('patterns match whole segments and never another trust domain', () => {
  const cases: [string, string, boolean][] = [
    ['spiffe://td/nic/*', 'spiffe://td/nic/h1', true],
    ['spiffe://td/nic/*', 'spiffe://other/nic/h1', false],
    ['spiffe://td/nic/*', 'spiffe://td.evil/nic/h1', false],
    ['spiffe://td/nic/*', 'spiffe://td/nic/h1/x', false],
    ['spiffe://td/nic/*', 'spiffe://td/tenant/a/workload/b', false],
    ['spiffe://td/tenant/acme/workload/*', 'spiffe://td/tenant/acme/workload/web', true],
    ['spiffe://td/tenant/acme/workload/*', 'spiffe://td/tenant/blue/workload/web', false],
    ['spiffe://td/tenant/*/workload/*', 'spiffe://td/tenant/blue/workload/web', true],
    ['spiffe://td/service/orchestrator', 'spiffe://td/service/orchestrator', true],
    ['spiffe://td/service/orchestrator', 'spiffe://td/service/orchestrator2', false],
  ];
  for (const [p, uri, want] of cases)
    assert.equal(SpiffeIdPattern.parse(p).matches(uri), want, `${p} ~ ${uri}`);
  for (const bad of ['spiffe://*/nic/h', 'spiffe://td', 'td/nic/*', 'spiffe://td/nic/a b'])
    assert.throws(() => SpiffeIdPattern.parse(bad), TgError, bad);
});
