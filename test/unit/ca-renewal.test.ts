import assert from 'node:assert/strict';
import { test } from 'node:test';
import { verifyCsr } from '../../src/ca/svid.js';
import type { Clock } from '../../src/identity/clock.js';
import { createKeyAndCsr, type Identity } from '../../src/identity/identity.js';
import { IdentityRenewer } from '../../src/identity/renewal.js';
import { TgError } from '../../src/util/errors.js';
import { softCa } from '../helpers/ca-memory.js';

/** A clock whose timers run only when the test advances time. */
class FakeClock implements Clock {
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private seq = 0;
  constructor(public t: number) {}
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== h);
  }
  get pending(): number[] {
    return this.timers.map((x) => x.at).sort((a, b) => a - b);
  }
  /** Moves time forward, running due timers in order and waiting for the work they start. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (next === undefined || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
      await this.waitFor();
      await new Promise((r) => setImmediate(r));
    }
    this.t = end;
    await this.waitFor();
    await new Promise((r) => setImmediate(r));
  }
  waitFor: () => Promise<void> = async () => {};
}

const ID = 'spiffe://lab.test/nic/h1';

async function setup(ttl = 600) {
  const start = Date.UTC(2030, 0, 1);
  const { ca, clock: caClock } = await softCa({ issuance: { backdateSeconds: 0, minTtlSeconds: 60 } }, start);
  const clock = new FakeClock(start);
  let calls = 0;
  let failNext = 0;
  const sign = async (csrPem: string): Promise<string[]> => {
    calls++;
    caClock.now = clock.now();
    if (failNext > 0) {
      failNext--;
      throw new TgError('TG_ERR_TOKEN', 'CA unreachable');
    }
    const s = await ca.issue({
      csr: await verifyCsr(csrPem),
      spiffeId: ID,
      ttlSeconds: ttl,
      requester: 'admin',
    });
    return [s.certificatePem, ...s.chainPem];
  };
  return {
    clock,
    sign,
    calls: () => calls,
    failTimes: (n: number) => {
      failNext = n;
    },
  };
}

test('renews at half life; users keep the old identity until the new one is in hand', async () => {
  const s = await setup(600);
  const r = new IdentityRenewer({ spiffeId: ID, sign: s.sign, clock: s.clock });
  s.clock.waitFor = () => r.idle();
  const renewed: Identity[] = [];
  r.on('renewed', (id: Identity) => renewed.push(id));
  const first = await r.start();
  assert.equal(s.calls(), 1);
  assert.equal(first.notAfter.getTime() - first.notBefore.getTime(), 600_000);
  assert.deepEqual(s.clock.pending, [first.notBefore.getTime() + 300_000], 'one timer, at half life');

  await s.clock.advance(299_000);
  assert.equal(s.calls(), 1, 'nothing before half life');
  assert.equal(r.current, first);
  await s.clock.advance(1_000);
  assert.equal(s.calls(), 2);
  const second = r.current;
  assert.notEqual(second.serial, first.serial);
  assert.equal(second.notBefore.getTime(), s.clock.now());
  assert.ok(!second.privateKey.equals(first.privateKey), 'a fresh key per renewal');
  assert.equal(renewed.length, 2);

  // Three more lifetimes: one renewal per half life, never a gap.
  for (let i = 0; i < 6; i++) {
    const before = r.current;
    await s.clock.advance(150_000);
    assert.ok(r.current.notAfter.getTime() > s.clock.now(), 'the current identity is always valid');
    if (i % 2 === 1) assert.notEqual(r.current.serial, before.serial);
  }
  assert.equal(s.calls(), 5);
  r.stop();
  assert.deepEqual(s.clock.pending, []);
});

test('a failed renewal is retried with backoff; the old identity stays in use meanwhile', async () => {
  const s = await setup(600);
  const r = new IdentityRenewer({
    spiffeId: ID,
    sign: s.sign,
    clock: s.clock,
    retryMinMs: 1000,
    retryMaxMs: 8000,
  });
  s.clock.waitFor = () => r.idle();
  const failures: number[] = [];
  r.on('renewal-failed', (_err: unknown, attempt: number) => failures.push(attempt));
  const first = await r.start();
  s.failTimes(3);
  await s.clock.advance(300_000);
  assert.deepEqual(failures, [1]);
  assert.equal(r.current, first);
  await s.clock.advance(1000); // retry 1 s later
  await s.clock.advance(2000); // then 2 s
  assert.deepEqual(failures, [1, 2, 3]);
  assert.equal(r.current, first);
  await s.clock.advance(4000); // then 4 s: succeeds
  assert.notEqual(r.current.serial, first.serial);
  assert.equal(s.calls(), 5);
  r.stop();
});

test('expiry without a replacement is reported once', async () => {
  const s = await setup(60);
  const r = new IdentityRenewer({
    spiffeId: ID,
    sign: s.sign,
    clock: s.clock,
    retryMinMs: 10_000,
    retryMaxMs: 10_000,
  });
  s.clock.waitFor = () => r.idle();
  let expired = 0;
  r.on('expired', () => expired++);
  r.on('renewal-failed', () => {});
  await r.start();
  s.failTimes(100);
  await s.clock.advance(120_000);
  assert.equal(expired, 1);
  r.stop();
});

test('a sign callback returning a certificate for another ID or key is refused', async () => {
  const s = await setup(600);
  const other = await setup(600);
  const r = new IdentityRenewer({
    spiffeId: ID,
    clock: s.clock,
    // Signs a different request than the one the renewer made: the key does not match.
    sign: async () => other.sign((await createKeyAndCsr(ID)).csrPem),
  });
  await assert.rejects(r.start(), /does not carry our key/);
});
