import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { loadCaConfig, parseCaConfig, SOFTHSM2_MODULE } from '../../src/ca/config.js';
import { readPin } from '../../src/ca/pin.js';
import { TgError } from '../../src/util/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'tgca-cfg-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const minimal = {
  stateDir: '/var/lib/tenguard/ca',
  trustDomain: 'prod.example',
  token: { label: 'tenguard-ca', pin: { env: 'TENGUARD_CA_PIN' } },
};

const configError = (re: RegExp) => (err: unknown) =>
  err instanceof TgError && err.code === 'TG_ERR_CONFIG' && re.test(err.message);

test('defaults are filled in and the result is frozen', () => {
  const c = parseCaConfig(minimal);
  assert.equal(c.token.module, SOFTHSM2_MODULE);
  assert.equal(c.token.keyLabel, 'tenguard-ca');
  assert.equal(c.token.embedded, true);
  assert.equal(c.issuance.defaultTtlSeconds, 3600);
  assert.equal(c.issuance.backdateSeconds, 60);
  assert.equal(c.root.validityDays, 3650);
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.token) && Object.isFrozen(c.issuance));
  assert.throws(() => {
    (c.issuance as { defaultTtlSeconds: number }).defaultTtlSeconds = 1;
  }, TypeError);
});

test('unknown keys are rejected at every level', () => {
  assert.throws(() => parseCaConfig({ ...minimal, extra: 1 }), configError(/extra/));
  assert.throws(
    () => parseCaConfig({ ...minimal, token: { ...minimal.token, pinValue: '1234' } }),
    configError(/pinValue/),
  );
  assert.throws(
    () => parseCaConfig({ ...minimal, token: { ...minimal.token, pin: { value: '1234' } } }),
    configError(/token\.pin/),
  );
  assert.throws(() => parseCaConfig({ ...minimal, issuance: { ttl: 5 } }), configError(/ttl/));
});

test('bad values are named', () => {
  assert.throws(
    () => parseCaConfig({ ...minimal, stateDir: 'relative/dir' }),
    configError(/stateDir: must be an absolute path/),
  );
  assert.throws(() => parseCaConfig({ ...minimal, trustDomain: 'Prod.Example' }), configError(/trustDomain/));
  assert.throws(
    () => parseCaConfig({ ...minimal, token: { ...minimal.token, label: 'x'.repeat(33) } }),
    configError(/token\.label/),
  );
  assert.throws(
    () => parseCaConfig({ ...minimal, issuance: { minTtlSeconds: 600, defaultTtlSeconds: 300 } }),
    configError(/minTtlSeconds <= defaultTtlSeconds/),
  );
  assert.throws(
    () => parseCaConfig({ ...minimal, token: { ...minimal.token, embedded: false, soPin: { env: 'SO' } } }),
    configError(/soPin/),
  );
  assert.throws(() => parseCaConfig(null), configError(/\(root\)/));
});

test('a configuration file is read and validated', () => {
  const p = join(dir, 'ca.json');
  writeFileSync(p, JSON.stringify(minimal));
  assert.equal(loadCaConfig(p).trustDomain, 'prod.example');
  writeFileSync(p, '{ not json');
  assert.throws(() => loadCaConfig(p), configError(/not JSON/));
  assert.throws(() => loadCaConfig(join(dir, 'missing.json')), configError(/cannot read/));
});

test('PIN from the environment', () => {
  process.env.TG_UNIT_PIN = 'env-pin-1234';
  assert.equal(readPin({ env: 'TG_UNIT_PIN' }), 'env-pin-1234');
  delete process.env.TG_UNIT_PIN;
  assert.throws(() => readPin({ env: 'TG_UNIT_PIN' }), configError(/not set/));
});

test('PIN from a file: owner-only, one trailing newline dropped', () => {
  const p = join(dir, 'pin');
  writeFileSync(p, 'file-pin-5678\n', { mode: 0o600 });
  chmodSync(p, 0o600);
  assert.equal(readPin({ file: p }), 'file-pin-5678');
  chmodSync(p, 0o640);
  assert.throws(() => readPin({ file: p }), configError(/group or others/));
  chmodSync(p, 0o600);
  writeFileSync(p, '\n');
  assert.throws(() => readPin({ file: p }), configError(/empty/));
  writeFileSync(p, 'x'.repeat(300));
  assert.throws(() => readPin({ file: p }), configError(/longer than 256/));
  assert.throws(() => readPin({ file: dir }), configError(/not a regular file|group or others/));
  assert.throws(() => readPin({ file: join(dir, 'none') }), configError(/cannot open/));
});
