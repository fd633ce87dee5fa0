// Regression: the orchestrator cached a NIC's signed tenant key with the NIC's certificate
// chain in it, and kept publishing that chain to the other NICs after it expired (they refuse
// a peer whose chain is not trusted). A cached key is now fetched again once its chain is past
// half its lifetime, when the NIC has renewed.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { test } from 'node:test';
import { chainFresh } from '../../src/orchestrator/lifecycle.js';
import { issueIdentity, softCa } from '../helpers/ca-memory.js';

test('a cached NIC chain is fresh before half its lifetime and stale after (or unreadable)', async () => {
  const { ca } = await softCa({}, Date.now());
  const id = await issueIdentity(ca, 'spiffe://lab.test/nic/h1', 120);
  const chain = [id.certificatePem, ...id.chainPem].join('');
  const leaf = new X509Certificate(id.certificatePem);
  const from = Date.parse(leaf.validFrom);
  const to = Date.parse(leaf.validTo);
  assert.ok(Number.isFinite(from) && Number.isFinite(to) && to > from, 'the validity dates parse');
  const half = from + (to - from) / 2;
  assert.equal(chainFresh(chain, from + 1000), true);
  assert.equal(chainFresh(chain, half - 1000), true);
  assert.equal(chainFresh(chain, half + 1000), false);
  assert.equal(chainFresh(chain, to + 1000), false);
  assert.equal(chainFresh(undefined, to + 1000), true, 'a key without a chain (no mTLS) stays cached');
  assert.equal(chainFresh('not a certificate', from), false);
});
