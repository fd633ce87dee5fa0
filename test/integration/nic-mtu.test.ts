// Tenant TCP over the full cross-host path (workload tg0 -> vSwitch -> NIC -> fabric -> NIC ->
// vSwitch -> workload) at fabric and host link MTUs of 1,280, 1,500 and 9,000: tg0 gets the
// derived MTU, iperf3 moves data, and where the legs carry less than tg0 (1,280) the NICs
// clamp the MSS. A workload whose tg0 is larger than the legs carry gets ICMP "fragmentation
// needed" from its NIC for a DF packet (its kernel then knows the path MTU) instead of losing it.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { plannedWorkloads } from '../../src/lab/control.js';
import { iperfTcpNs } from '../../src/lab/index.js';
import { legCarry, nicTenantMtu, tunnelMtu } from '../../src/nic/mtu.js';
import { run, runOk } from '../../src/util/exec.js';
import { type NicLab, startNicLab, stopNicLab } from '../helpers/nic.js';
import { pingUntilReply } from '../helpers/ping.js';

function prefix(): string {
  const chars = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return `tgle${[...randomBytes(3)].map((b) => chars[b % chars.length]).join('')}`;
}

async function linkMtu(netns: string, dev: string): Promise<number> {
  const out = await runOk('ip', ['-n', netns, '-j', 'link', 'show', 'dev', dev]);
  return (JSON.parse(out) as { mtu: number }[])[0].mtu;
}

/** One counter of the NIC's Prometheus text (0 when absent). */
async function metric(l: NicLab, host: string, name: string, labels: string): Promise<number> {
  const text = await l.agents.nic(host).metrics();
  const line = text.split('\n').find((x: string) => x.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

async function waitForPath(netns: string, target: string): Promise<void> {
  if (!(await pingUntilReply(netns, target, 15_000))) assert.fail(`no path from ${netns} to ${target}`);
}

/** A lab of two hosts with one workload each, every link at `mtu`, workloads placed. */
async function crossHostLab(
  p: string,
  mtu: number,
): Promise<{ l: NicLab; src: string; dst: string; to: string }> {
  const l = await startNicLab(p, { hosts: 2, tenants: 1, workloads: 1, mtu });
  const placed = await l.control.place(plannedWorkloads(l.lab));
  const a = placed.find((w) => w.host === 'h1')!;
  const b = placed.find((w) => w.host === 'h2')!;
  await waitForPath(a.ns, b.address);
  return { l, src: a.ns, dst: b.ns, to: b.address };
}

for (const mtu of [1280, 1500, 9000]) {
  test(`TCP across the full path with every link at MTU ${mtu}`, { timeout: 120_000 }, async () => {
    const p = prefix();
    let l: NicLab | undefined;
    try {
      const lab = await crossHostLab(p, mtu);
      l = lab.l;
      const tg0 = tunnelMtu({ hostLink: mtu, fabric: mtu });
      assert.equal(await linkMtu(lab.src, 'tg0'), tg0, "tg0 has the MTU derived from the links'");
      assert.equal(await linkMtu(lab.dst, 'tg0'), tg0);
      const r = await iperfTcpNs(lab.src, lab.dst, lab.to, 3);
      assert.ok(r.mbps > 20, `iperf3 moved only ${r.mbps} Mbit/s`);
      if (tg0 > legCarry(mtu, 4)) {
        // tg0 is larger than one datagram carries over these links: the NICs clamped the MSS.
        assert.ok((await metric(l, 'h1', 'tenguard_nic_pmtu_events_total', 'event="mss_clamped"')) > 0);
        assert.ok((await metric(l, 'h2', 'tenguard_nic_pmtu_events_total', 'event="mss_clamped"')) > 0);
      }
      // A full-size packet of tg0's MTU without DF passes, in fragmented outer datagrams where
      // the legs carry less; with DF the first one may be answered with the path MTU instead,
      // and the kernel fragments the rest (their later fragments follow the first one through
      // the firewall).
      const size = String(tg0 - 28);
      const dont = await run(
        'ip',
        ['netns', 'exec', lab.src, 'ping', '-n', '-c', '2', '-W', '2', '-M', 'dont', '-s', size, lab.to],
        { timeoutMs: 15_000 },
      );
      assert.match(dont.stdout, / 2 received/, dont.stdout);
      const want = await run(
        'ip',
        [
          'netns',
          'exec',
          lab.src,
          'ping',
          '-n',
          '-c',
          '3',
          '-i',
          '0.3',
          '-W',
          '2',
          '-M',
          'want',
          '-s',
          size,
          lab.to,
        ],
        { timeoutMs: 15_000 },
      );
      assert.match(want.stdout, / [23] received/, want.stdout);
      if (tg0 > legCarry(mtu, 4)) {
        assert.ok((await metric(l, 'h1', 'tenguard_nic_pmtu_events_total', 'event="fragmented"')) > 0);
        const pathMtu = nicTenantMtu({ mtu, outerFamily: 4 }, { mtu, outerFamily: 4 });
        assert.match(want.stdout, new RegExp(`Frag needed and DF set \\(mtu = ${pathMtu}\\)`), want.stdout);
      }
    } finally {
      await stopNicLab(l, p);
    }
  });
}

test('a DF packet larger than the legs carry gets "fragmentation needed" from the NIC, and TCP still flows', {
  timeout: 120_000,
}, async () => {
  const p = prefix();
  let l: NicLab | undefined;
  try {
    const lab = await crossHostLab(p, 1500);
    l = lab.l;
    const carry = nicTenantMtu({ mtu: 1500, outerFamily: 4 }, { mtu: 1500, outerFamily: 4 });
    // The workload's tg0 is made larger than its legs carry (as a workload with a wrong MTU, or
    // a host whose links are larger than its peer's would have it).
    await runOk('ip', ['-n', lab.src, 'link', 'set', 'dev', 'tg0', 'mtu', '1500']);
    const probe = await run(
      'ip',
      [
        'netns',
        'exec',
        lab.src,
        'ping',
        '-n',
        '-c',
        '3',
        '-i',
        '0.3',
        '-W',
        '1',
        '-M',
        'do',
        '-s',
        String(1500 - 28),
        lab.to,
      ],
      { timeoutMs: 15_000 },
    );
    const said = `${probe.stdout}\n${probe.stderr}`;
    assert.match(said, new RegExp(`mtu ?= ?${carry}`), `ping did not learn the path MTU: ${said}`);
    const route = await runOk('ip', ['-n', lab.src, 'route', 'get', lab.to]);
    assert.match(route, new RegExp(`mtu ${carry}`), `the kernel has no path MTU for ${lab.to}: ${route}`);
    assert.ok((await metric(l, 'h1', 'tenguard_nic_pmtu_events_total', 'event="icmp_too_big"')) >= 1);
    assert.ok((await metric(l, 'h1', 'tenguard_nic_forward_dropped_total', 'reason="tooBig"')) >= 1);
    // Now at the path MTU, the same packets pass.
    const fits = await run(
      'ip',
      [
        'netns',
        'exec',
        lab.src,
        'ping',
        '-n',
        '-c',
        '2',
        '-W',
        '2',
        '-M',
        'do',
        '-s',
        String(carry - 28),
        lab.to,
      ],
      { timeoutMs: 15_000 },
    );
    assert.match(fits.stdout, / 2 received/, fits.stdout);
    // TCP from a workload whose tg0 is too large does not black-hole: the MSS is clamped.
    await run('ip', ['-n', lab.src, 'route', 'flush', 'cache']);
    const r = await iperfTcpNs(lab.src, lab.dst, lab.to, 2);
    assert.ok(r.mbps > 20, `iperf3 moved only ${r.mbps} Mbit/s`);
    assert.ok((await metric(l, 'h1', 'tenguard_nic_pmtu_events_total', 'event="mss_clamped"')) > 0);
  } finally {
    await stopNicLab(l, p);
  }
});
