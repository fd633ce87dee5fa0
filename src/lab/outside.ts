// The lab's outside world (plan.ts, OutsidePlan): a namespace reachable only through the NICs'
// uplinks, with a web server and a DNS server (outside-server.ts). Built as one step after the
// hosts; its two server processes run inside the outside namespace, so teardown ends them
// with the namespace.
//
// Per NIC: a veth pair NIC namespace <-> outside bridge (the uplink), and a TUN device in the
// NIC namespace that the NIC agent opens (egress): its source-NAT address is routed to that
// TUN (assigned to no interface), the NIC namespace forwards between the TUN and the uplink
// (IPv4 forwarding on, but off for packets arriving on the host link and the fabric port, so
// nothing from the host or the fabric is routed out), and the outside namespace routes the
// source-NAT address back via the NIC's uplink address.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { childReady, runInOk } from '../util/exec.js';
import { ipBatch } from './netns.js';
import type { LabPlan } from './plan.js';

const SERVER = fileURLToPath(new URL('./outside-server.js', import.meta.url));

/** Creates the outside namespace, the uplinks and the NICs' uplink TUN devices and routes. */
export async function buildOutside(plan: LabPlan): Promise<void> {
  const o = plan.outside;
  if (o === undefined) return;
  await ipBatch([
    `netns add ${o.ns}`,
    ...o.uplinks.map((u) => {
      const h = plan.hosts.find((x) => x.name === u.host)!;
      return `link add ${u.nicIf} netns ${h.nicNs} type veth peer name ${u.outsideIf} netns ${o.ns}`;
    }),
  ]);
  await ipBatch(
    [
      'link set lo up',
      `link add ${o.bridge} type bridge stp_state 0`,
      `link set ${o.bridge} mtu ${plan.mtu} up`,
      `addr add ${o.bridgeV4}/24 dev ${o.bridge}`,
      // The services' addresses live on loopback: reached through the bridge, routed nowhere else.
      ...[o.webA, o.webB, o.dns].map((a) => `addr add ${a}/32 dev lo`),
      ...o.uplinks.flatMap((u) => [
        `link set ${u.outsideIf} mtu ${plan.mtu} master ${o.bridge} up`,
        `route add ${u.snatV4}/32 via ${u.nicV4}`,
      ]),
    ],
    { ns: o.ns },
  );
  await Promise.all(
    o.uplinks.map(async (u) => {
      const h = plan.hosts.find((x) => x.name === u.host)!;
      await ipBatch(
        [
          `link set ${u.nicIf} mtu ${plan.mtu} up`,
          `addr add ${u.nicV4}/24 dev ${u.nicIf}`,
          `tuntap add dev ${u.tun} mode tun`,
          `link set ${u.tun} mtu ${plan.mtu} up`,
          `route add ${u.snatV4}/32 dev ${u.tun}`,
          `route add ${o.servicesSubnetV4} via ${o.bridgeV4}`,
        ],
        { ns: h.nicNs },
      );
      await runInOk(h.nicNs, 'sysctl', [
        '-q',
        '-w',
        'net.ipv4.ip_forward=1',
        `net.ipv4.conf.${h.pcie.nicIf}.forwarding=0`,
        `net.ipv4.conf.${h.fabric.nicIf}.forwarding=0`,
      ]);
    }),
  );
}

/** Starts the outside web and DNS servers; resolves once both listen. */
export async function startOutsideServers(plan: LabPlan): Promise<void> {
  const o = plan.outside;
  if (o === undefined) return;
  const names = new Map(o.zone.map((z) => [z.address, z.name]));
  const roles: [string, string[]][] = [
    [
      'web',
      [o.webA, o.webB].flatMap((a) => ['--listen', `${a}=${a === o.webA ? 'A' : 'B'}:${names.get(a) ?? a}`]),
    ],
    ['dns', ['--listen', o.dns, ...o.zone.flatMap((z) => ['--zone', `${z.name}=${z.address}/${z.ttl}`])]],
  ];
  await Promise.all(
    roles.map(async ([role, args]) => {
      const child = spawn(
        'ip',
        ['netns', 'exec', o.ns, process.execPath, SERVER, role, '--prefix', plan.prefix, ...args],
        { detached: true, stdio: ['ignore', 'pipe', 'ignore'] },
      );
      await childReady(child, `the outside ${role} server`);
      // The server lives with the namespace from here (teardown ends it), not with this process.
      child.stdout?.destroy();
      child.unref();
    }),
  );
}
