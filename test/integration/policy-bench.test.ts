// `tenguard bench conntrack --json` (issue 7): prints exactly {"flows": {...}, "flows_ipv6":
// {...}, "nftables": {...}} with the three sizes and three keys each, and measures nftables in tg-prefixed
// namespaces it removes afterwards. One short run; the throughput ratio between 10 and
// 100,000 flows is asserted in the slow tier (test/slow/conntrack-ratio.test.ts).
import { test } from 'node:test';
import { benchConntrackChecked } from '../helpers/conntrack-bench.js';

test('bench conntrack --json: exact shape, nftables side cleaned up', { timeout: 300_000 }, async () => {
  await benchConntrackChecked();
});
