// Dual stack in a real lab (issue 15), once with the NICs meeting over the IPv4 fabric and once
// over the IPv6 fabric (fd00:198:18::/64, the outer of the off-host leg): every workload gets
// an IPv4 and an IPv6 address from its tenant (the IPv6 one derived from the IPv4 one), the
// namespace holds both with default routes via tg0, and real traffic checks every leg:
//
//   t1-a (h1)  t1-b (h1)  t1-c (h2)     tenant t1 (100.64.1.0/24, fd64:6440:100::/64)
//                         t2-x (h2)     tenant t2 (100.64.2.0/24, fd64:6440:200::/64)
//
// ping and TCP over IPv4 and IPv6, same host and cross host; captures on h1's host link and
// fabric port hold only WireGuard on UDP 51820 (no inner IPv6, ICMPv6 echo or TCP, no
// marker); t1 cannot reach t2's IPv6 address; a policy rule by IPv6 CIDR denies a workload's
// IPv6 traffic while its IPv4 traffic passes, and the NIC's flow log records the denial.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync, statSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { allowWithinTenantPolicy, type PlacedWorkload } from '../../src/lab/control.js';
import { run, runOk } from '../../src/util/exec.js';
import {
  type Capture,
  captureContains,
  decodeWireGuard,
  marker,
  type NicLab,
  startCapture,
  startNicLab,
  stopNicLab,
  tcpProbe,
} from '../helpers/nic.js';
import { ping, pingUntilReply } from '../helpers/ping.js';

const NIC_PORT = 51820;
/** Payload markers of the traffic below, searched for in the captures. */
const PING_MARK = marker(16);
const TCP_MARK = marker(64);

function dualPrefix(): string {
  const chars = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return `tgd${[...randomBytes(4)].map((b) => chars[b % chars.length]).join('')}`;
}

/** tshark: how many frames of `file` match the display filter. */
async function frames(file: string, filter: string): Promise<number> {
  const out = await runOk('tshark', ['-r', file, '-Y', filter, '-T', 'fields', '-e', 'frame.number'], {
    timeoutMs: 60_000,
  });
  return out.split('\n').filter((l) => l.trim() !== '').length;
}

for (const fabric of [4, 6] as const) {
  describe(`dual stack over the IPv${fabric} fabric`, { timeout: 300_000 }, () => {
    const prefix = dualPrefix();
    let L: NicLab | undefined;
    let ws: PlacedWorkload[] = [];
    let hostCapture: Capture | undefined;
    let fabricCapture: Capture | undefined;
    const hostPcap = `/tmp/${prefix}-hostlink.pcap`;
    const fabricPcap = `/tmp/${prefix}-fabric.pcap`;
    const W = (name: string): PlacedWorkload => {
      const w = ws.find((x) => x.name === name);
      assert.ok(w, `no workload ${name}`);
      return w;
    };
    const v6 = (name: string): string => {
      const a = W(name).address6;
      assert.ok(a !== undefined, `${name} has no IPv6 address`);
      return a;
    };

    before(async () => {
      L = await startNicLab(prefix, { hosts: 2, tenants: 2, workloads: 1 }, { fabricFamily: fabric });
      const h1 = L.lab.hosts[0];
      hostCapture = await startCapture(h1.hostNs, h1.pcie.hostIf, hostPcap);
      fabricCapture = await startCapture(h1.nicNs, h1.fabric.nicIf, fabricPcap);
      ws = await L.control.place([
        { name: 't1-a', tenant: 't1', host: 'h1' },
        { name: 't1-b', tenant: 't1', host: 'h1' },
        { name: 't1-c', tenant: 't1', host: 'h2' },
        { name: 't2-x', tenant: 't2', host: 'h2' },
      ]);
    });

    after(async () => {
      await hostCapture?.stop().catch(() => undefined);
      await fabricCapture?.stop().catch(() => undefined);
      await stopNicLab(L, prefix);
      for (const f of [hostPcap, fabricPcap]) rmSync(f, { force: true });
    });

    test('every workload has both addresses: store, NIC, namespace (address and default route)', async () => {
      assert.ok(L);
      const pools = await L.control.orchestrator.service.listTenants();
      assert.deepEqual(
        pools.map((t) => [t.name, t.pool, t.pool6]),
        [
          ['t1', '100.64.1.0/24', 'fd64:6440:100::/64'],
          ['t2', '100.64.2.0/24', 'fd64:6440:200::/64'],
        ],
      );
      for (const w of ws) {
        assert.ok(w.address6?.startsWith(w.tenant === 't1' ? 'fd64:6440:100::' : 'fd64:6440:200::'), w.name);
        const addrs = await runOk('ip', ['-n', w.ns, '-6', '-o', 'addr', 'show', 'dev', 'tg0']);
        assert.ok(addrs.includes(` ${w.address6}/128 `), `${w.name}: tg0 has no ${w.address6}/128: ${addrs}`);
        const routes = await runOk('ip', ['-n', w.ns, '-6', 'route', 'show', 'default']);
        assert.match(routes, /default dev tg0/, `${w.name}: no IPv6 default route via tg0`);
        const regs: Record<string, unknown>[] = await L.agents.nic(w.host).workloads();
        const reg = regs.find((x) => x.workload === w.name);
        assert.deepEqual([reg?.address, reg?.address6], [w.address, w.address6], `${w.name} on its NIC`);
      }
      const fabricEndpoint = (await L.agents.nic('h1').identity()).fabricEndpoint;
      assert.equal(fabricEndpoint.startsWith('['), fabric === 6, `fabric endpoint ${fabricEndpoint}`);
    });

    test('ping and TCP over IPv4 and IPv6, same host and cross host', async (t) => {
      for (const [from, to, where] of [
        ['t1-a', 't1-b', 'same host'],
        ['t1-a', 't1-c', 'cross host'],
        ['t1-c', 't1-b', 'cross host, other way'],
      ] as const) {
        for (const [family, target] of [
          [4, W(to).address],
          [6, v6(to)],
        ] as const) {
          assert.ok(
            await pingUntilReply(W(from).ns, target, 15_000),
            `${from} -> ${to} IPv${family}: no reply`,
          );
          let p = await ping(W(from).ns, target, { count: 5, intervalS: 0.1, pattern: PING_MARK });
          if (p.received < 5) {
            // One echo lost on a loaded machine is told, not failed: a second run must be whole.
            t.diagnostic(`${where} IPv${family}: ping ${p.received}/5, run again`);
            p = await ping(W(from).ns, target, { count: 5, intervalS: 0.1, pattern: PING_MARK });
          }
          assert.equal(p.received, 5, `${where} IPv${family}: ping ${p.received}/5`);
        }
      }
      // TCP (a payload echoed): IPv6 same host and cross host, IPv4 cross host beside it.
      for (const [from, to, family] of [
        ['t1-a', 't1-b', 6],
        ['t1-a', 't1-c', 6],
        ['t1-c', 't1-a', 4],
      ] as const) {
        const target = family === 6 ? v6(to) : W(to).address;
        const t = await tcpProbe(W(from).ns, W(to).ns, target, TCP_MARK, { port: 40130 + family });
        assert.equal(t.echoed, TCP_MARK, `${from} -> ${to} IPv${family}: TCP not echoed`);
        assert.equal(t.serverReceived, TCP_MARK, `${from} -> ${to} IPv${family}: server got another payload`);
      }
      // Conntrack tracked the IPv6 flows by their 5-tuples (ICMPv6 echo by its id): h1's NIC
      // (egress side of t1-a's flows) lists them, allowed, with both workloads named.
      assert.ok(L);
      const flows = await L.agents.nic('h1').flows({ tenant: 't1', verdict: 'allow', limit: 1000 });
      const six = flows.filter((f) => f.family === 6 && f.src === v6('t1-a'));
      const echo = six.find((f) => f.protocol === 'icmpv6' && f.dst === v6('t1-c') && f.icmpId !== null);
      const tcp = six.find((f) => f.protocol === 'tcp' && f.dst === v6('t1-c') && f.dstPort === 40136);
      assert.ok(echo, `no ICMPv6 echo flow t1-a -> t1-c: ${JSON.stringify(six.slice(0, 5))}`);
      assert.ok(echo.packetsToDst >= 1 && echo.packetsToSrc >= 1, 'the echo flow saw no reply');
      assert.ok(tcp, 'no TCP/IPv6 flow t1-a -> t1-c on port 40136');
      assert.deepEqual([tcp.srcWorkload, tcp.dstWorkload], ['t1-a', 't1-c']);
      assert.ok(tcp.packetsToSrc >= 1, 'the TCP/IPv6 flow saw no reply');
    });

    test('another tenant is unreachable over IPv6 too', async () => {
      const a = W('t1-a');
      const x = W('t2-x');
      const p = await ping(a.ns, v6('t2-x'), { count: 3, intervalS: 0.2, waitS: 1 });
      assert.equal(p.received, 0, 'a t1 workload reached a t2 workload over IPv6');
      const t = await tcpProbe(a.ns, x.ns, v6('t2-x'), marker(8), { port: 40140, timeoutMs: 1500 });
      assert.equal(t.echoed, null, 'TCP over IPv6 crossed tenants');
      assert.equal(t.serverReceived, null);
      // Same host (t1-c and t2-x are both on h2).
      const same = await ping(W('t1-c').ns, v6('t2-x'), { count: 2, intervalS: 0.2, waitS: 1 });
      assert.equal(same.received, 0, 'same-host IPv6 crossed tenants');
    });

    test('a policy rule by IPv6 CIDR denies IPv6 traffic, IPv4 still passes, the flow log records it', async () => {
      assert.ok(L);
      const a = W('t1-a');
      const c = W('t1-c');
      const since = Date.now();
      const deny = allowWithinTenantPolicy('t1') as { rules: unknown[] };
      await L.control.setPolicy('t1', {
        ...deny,
        rules: [
          {
            id: 'no-c-v6',
            action: 'deny',
            direction: 'egress',
            workloads: { labels: {} },
            peers: [{ cidr: `${v6('t1-c')}/128` }],
          },
          ...deny.rules,
        ],
      });
      try {
        const p6 = await ping(a.ns, v6('t1-c'), { count: 3, intervalS: 0.2, waitS: 1 });
        assert.equal(p6.received, 0, 'IPv6 passed a deny by IPv6 CIDR');
        const t6 = await tcpProbe(a.ns, c.ns, v6('t1-c'), marker(8), { port: 40150, timeoutMs: 1500 });
        assert.equal(t6.echoed, null, 'TCP over IPv6 passed a deny by IPv6 CIDR');
        const p4 = await ping(a.ns, c.address, { count: 3, intervalS: 0.2 });
        assert.equal(p4.received, 3, 'IPv4 to the same workload must pass');
        const denied = (
          await L.agents.nic('h1').flows({ tenant: 't1', verdict: 'deny', limit: 1000 })
        ).filter((f) => f.startMs >= since - 1000 && f.rule === 't1/no-c-v6');
        const icmp = denied.filter((f) => f.protocol === 'icmpv6' && f.dst === v6('t1-c'));
        const tcp = denied.filter((f) => f.protocol === 'tcp' && f.dstPort === 40150);
        assert.ok(icmp.length >= 1, `no denied ICMPv6 flow in h1's flow log: ${JSON.stringify(denied)}`);
        assert.ok(tcp.length >= 1, 'no denied TCP/IPv6 flow in the flow log');
        for (const f of [...icmp, ...tcp]) {
          assert.equal(f.family, 6);
          assert.equal(f.src, v6('t1-a'));
          assert.equal(f.srcWorkload, 't1-a');
          assert.equal(f.dstWorkload, 't1-c');
          assert.ok(f.packetsToDst >= 1);
        }
      } finally {
        await L.control.setPolicy('t1', allowWithinTenantPolicy('t1'));
      }
      assert.ok(
        await pingUntilReply(a.ns, v6('t1-c'), 10_000),
        'IPv6 does not pass again after the deny is gone',
      );
    });

    test('captures on the host link and the fabric: only WireGuard, no inner IPv6, ICMPv6 echo or TCP', async () => {
      await hostCapture?.stop();
      await fabricCapture?.stop();
      hostCapture = undefined;
      fabricCapture = undefined;
      // The markers the tests above sent in ICMPv6 echoes and TCP payloads, over both families.
      const needles = [Buffer.from(PING_MARK, 'hex'), Buffer.from(TCP_MARK, 'hex')];
      for (const [file, where] of [
        [hostPcap, 'host link'],
        [fabricPcap, 'fabric'],
      ] as const) {
        assert.ok(statSync(file).size > 5_000, `${where}: capture is nearly empty`);
        for (const n of needles)
          assert.equal(captureContains(file, n), false, `${where}: a plaintext marker is on the wire`);
        const d = await decodeWireGuard(file, NIC_PORT);
        assert.ok(d.udpPackets > 20, `${where}: only ${d.udpPackets} UDP packets`);
        assert.equal(d.wgPackets, d.udpPackets, `${where}: UDP packets that are not WireGuard`);
        assert.ok((d.types.get(4) ?? 0) > 20, `${where}: too few transport messages`);
        // Nothing of the overlay is visible: no tenant address (IPv4 or IPv6), no TCP, no echo.
        assert.equal(
          await frames(
            file,
            'ipv6.addr == fd64::/16 or ip.addr == 100.64.0.0/10 or tcp or icmpv6.type == 128 or icmpv6.type == 129 or icmp.type == 8 or icmp.type == 0',
          ),
          0,
          `${where}: inner traffic visible`,
        );
        assert.equal(
          await frames(file, `udp and not udp.port == ${NIC_PORT}`),
          0,
          `${where}: UDP off port ${NIC_PORT}`,
        );
      }
      // The fabric's outer family is the one asked for.
      const outer6 = await frames(fabricPcap, `ipv6 and udp.port == ${NIC_PORT}`);
      const outer4 = await frames(fabricPcap, `ip and udp.port == ${NIC_PORT}`);
      if (fabric === 6) {
        assert.ok(outer6 > 20, `only ${outer6} IPv6 WireGuard datagrams on the IPv6 fabric`);
        assert.equal(outer4, 0, 'IPv4 WireGuard on the IPv6 fabric');
      } else {
        assert.ok(outer4 > 20, `only ${outer4} IPv4 WireGuard datagrams on the IPv4 fabric`);
        assert.equal(outer6, 0, 'IPv6 WireGuard on the IPv4 fabric');
      }
      // The root namespace has no route into the overlay or the lab's IPv6 fabric.
      const root = await run('ip', ['-6', 'route', 'get', 'fd00:198:18::11']);
      assert.ok(root.code !== 0 || !/dev tgd/.test(root.stdout), 'the root namespace routes into the lab');
    });
  });
}
