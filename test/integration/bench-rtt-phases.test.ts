// `bench latency --phases` on a real tunnel: a capture in the pinging namespace of two
// `tenguard device`s splits every counted ping into outbound, remote and inbound phases, each
// positive, adding up to no more than the round trip ping reports; the capture file is gone
// afterwards and an aborted capture leaves no tcpdump behind.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { replyTimes } from '../../src/bench/latency.js';
import { PhaseCapture, phaseMedians, roundTripPhases } from '../../src/bench/rtt-phases.js';
import {
  configureDevice,
  createTestbed,
  destroyTestbed,
  startDevice,
  type Testbed,
} from '../../src/bench/testbed.js';
import { run, runIn } from '../../src/util/exec.js';

const LEAD = 2;
const COUNTED = 10;

test('phases of real round trips through two tenguard devices', { timeout: 120_000 }, async () => {
  let tb: Testbed | undefined;
  try {
    tb = await createTestbed(`tgph${process.pid % 1000}`, { index: 3 });
    await startDevice(tb.a, 'tenguard');
    await startDevice(tb.b, 'tenguard');
    await configureDevice(tb.a, tb.b, { mtu: 1420 });
    await configureDevice(tb.b, tb.a, { mtu: 1420 });
    await runIn(tb.a.ns, 'ping', ['-n', '-q', '-c', '20', '-i', '0.01', '-W', '1', tb.b.tunV4], {
      timeoutMs: 30_000,
    });

    const file = `/tmp/${tb.a.ns}-${process.pid}-phases.pcap`;
    const capture = await PhaseCapture.start(tb.a.ns, file);
    const r = await runIn(
      tb.a.ns,
      'ping',
      ['-n', '-c', String(LEAD + COUNTED), '-i', '0.02', '-W', '1', tb.b.tunV4],
      { timeoutMs: 30_000 },
    );
    const events = await capture.stop();
    assert.equal(existsSync(file), false, 'the capture file is removed once read');

    const rtts = replyTimes(r.stdout, LEAD);
    assert.equal(rtts.length, COUNTED, r.stdout);
    const p = roundTripPhases(events, LEAD);
    assert.equal(p.outbound.length, COUNTED, `matched ${p.outbound.length} of ${COUNTED} pings`);
    for (let i = 0; i < COUNTED; i++) {
      const parts = [p.outbound[i], p.remote[i], p.inbound[i]];
      assert.ok(
        parts.every((x) => x > 0),
        `ping ${i}: phases ${parts}`,
      );
    }
    const m = phaseMedians(p);
    const rttMedianUs = [...rtts].sort((x, y) => x - y)[COUNTED >> 1] * 1000;
    assert.ok(
      m.outbound + m.remote + m.inbound <= rttMedianUs * 1.25,
      `phases ${JSON.stringify(m)} against a median round trip of ${rttMedianUs} µs`,
    );

    // An aborted capture ends its tcpdump and leaves no file.
    const other = await PhaseCapture.start(tb.a.ns, `${file}.2`);
    await other.abort();
    assert.equal(existsSync(`${file}.2`), false);
    const left = await run('pgrep', ['-f', `tcpdump .*${tb.a.ns}-${process.pid}`]);
    assert.equal(left.stdout.trim(), '', 'no tcpdump left running');
  } finally {
    if (tb) await destroyTestbed(tb);
  }
});
