// parseCniConfig: table of valid and broken configurations with the spec's error codes, and a
// bounded fuzz run (random and mutated bytes): only CniError with a known code ever comes out.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { MAX_CONFIG_DEPTH, parseCniArgs, parseCniConfig } from '../../src/cni/config.js';
import { workloadName } from '../../src/cni/plugin.js';
import { CNI_ERR, CniError } from '../../src/cni/spec.js';

const base = { cniVersion: '1.0.0', name: 'net', type: 'tenguard', host: 'h1', orchestrator: '/run/o.sock' };
const bytes = (v: unknown): Buffer => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));

function codeOf(input: Buffer): number | 'ok' {
  try {
    parseCniConfig(input);
    return 'ok';
  } catch (err) {
    assert.ok(err instanceof CniError, `not a CniError: ${String(err)}`);
    return err.code;
  }
}

test('configurations: accepted, or refused with the spec code', () => {
  const cases: [string, unknown, number | 'ok'][] = [
    ['minimal 1.0.0', base, 'ok'],
    ['0.4.0', { ...base, cniVersion: '0.4.0' }, 'ok'],
    ['1.1.0', { ...base, cniVersion: '1.1.0' }, 'ok'],
    [
      'keys of other plugins kept',
      { ...base, ipam: { type: 'x' }, dns: {}, capabilities: { a: true } },
      'ok',
    ],
    ['tenant and mTLS', { ...base, tenant: 'acme', mtls: { cert: '/c', key: '/k', caBundle: '/b' } }, 'ok'],
    ['GC list', { ...base, 'cni.dev/valid-attachments': [{ containerID: 'a', ifname: 'eth0' }] }, 'ok'],
    ['not JSON', '{', CNI_ERR.DECODE_FAILURE],
    ['not UTF-8', Buffer.from([0xff, 0xfe, 0x7b]), CNI_ERR.DECODE_FAILURE],
    ['array', [base], CNI_ERR.DECODE_FAILURE],
    ['null', 'null', CNI_ERR.DECODE_FAILURE],
    ['version 0.3.1', { ...base, cniVersion: '0.3.1' }, CNI_ERR.INCOMPATIBLE_VERSION],
    ['version as number', { ...base, cniVersion: 1 }, CNI_ERR.INVALID_NETWORK_CONFIG],
    ['no host', { ...base, host: undefined }, CNI_ERR.INVALID_NETWORK_CONFIG],
    ['host a number', { ...base, host: 1 }, CNI_ERR.INVALID_NETWORK_CONFIG],
    ['host upper case', { ...base, host: 'H1' }, CNI_ERR.INVALID_NETWORK_CONFIG],
    ['relative socket', { ...base, orchestrator: 'o.sock' }, CNI_ERR.INVALID_NETWORK_CONFIG],
    ['tenant an object', { ...base, tenant: {} }, CNI_ERR.INVALID_NETWORK_CONFIG],
    ['mtls missing key', { ...base, mtls: { cert: '/c', caBundle: '/b' } }, CNI_ERR.INVALID_NETWORK_CONFIG],
    [
      'mtls unknown key',
      { ...base, mtls: { cert: '/c', key: '/k', caBundle: '/b', x: 1 } },
      CNI_ERR.INVALID_NETWORK_CONFIG,
    ],
    ['prevResult a string', { ...base, prevResult: 'x' }, CNI_ERR.INVALID_NETWORK_CONFIG],
    ['timeout too small', { ...base, timeoutMs: 1 }, CNI_ERR.INVALID_NETWORK_CONFIG],
    ['too large', `{"a":"${'x'.repeat(300_000)}"}`, CNI_ERR.DECODE_FAILURE],
  ];
  for (const [what, input, want] of cases) {
    const b = Buffer.isBuffer(input) ? input : bytes(input);
    assert.equal(codeOf(b), want, what);
  }
  const e = (() => {
    try {
      parseCniConfig(bytes({ ...base, host: 1 }));
    } catch (err) {
      return err as CniError;
    }
  })();
  assert.match(e!.message, /host/, 'the message names the key');
});

test('a configuration nested too deep is refused with 6 (fuzz cni: an accepted prevResult could not be serialised again)', () => {
  const nested = (d: number) => `{"x":${'['.repeat(d)}${']'.repeat(d)}}`;
  const withPrev = (d: number) =>
    Buffer.from(`${JSON.stringify(base).slice(0, -1)},"prevResult":${nested(d)}}`, 'utf8');
  // The whole document counts: itself, prevResult, the array levels.
  assert.equal(codeOf(withPrev(MAX_CONFIG_DEPTH - 2)), 'ok');
  assert.equal(codeOf(withPrev(MAX_CONFIG_DEPTH - 1)), CNI_ERR.DECODE_FAILURE);
  assert.equal(codeOf(withPrev(120_000)), CNI_ERR.DECODE_FAILURE);
  // Brackets inside strings (escaped quotes included) are text, not nesting.
  const inString = { ...base, args: { s: `\\"${'['.repeat(200)}` } };
  assert.equal(codeOf(bytes(inString)), 'ok');
  const accepted = parseCniConfig(withPrev(MAX_CONFIG_DEPTH - 2));
  assert.deepEqual(parseCniConfig(Buffer.from(JSON.stringify(accepted))), accepted);
});

test('CNI_ARGS and workload names', () => {
  assert.deepEqual(
    [...parseCniArgs('IgnoreUnknown=1;K8S_POD_NAMESPACE=acme;X=')],
    [
      ['IgnoreUnknown', '1'],
      ['K8S_POD_NAMESPACE', 'acme'],
      ['X', ''],
    ],
  );
  assert.throws(
    () => parseCniArgs('novalue'),
    (err: CniError) => err.code === CNI_ERR.INVALID_ENV,
  );
  assert.equal(workloadName('0123456789abcdef', 'eth0'), 'c-0123456789ab');
  assert.equal(workloadName('0123456789abcdef', 'net1'), 'c-0123456789ab-net1');
  assert.match(workloadName('Pod_A.b', 'eth0'), /^c-[0-9a-f]{12}$/);
});

test('fuzz: 20,000 random and mutated inputs, only CniError with a known code', () => {
  const known = new Set<number>(Object.values(CNI_ERR));
  const seed = bytes({ ...base, tenant: 'acme', prevResult: { ips: [] } });
  for (let i = 0; i < 20_000; i++) {
    let input: Buffer;
    if (i % 2 === 0) input = randomBytes(i % 64);
    else {
      input = Buffer.from(seed);
      for (let k = 0; k < 1 + (i % 5); k++) input[(i * 7919 + k * 104729) % input.length] = randomBytes(1)[0];
    }
    const c = codeOf(input);
    assert.ok(c === 'ok' || known.has(c), `code ${c}`);
  }
});
