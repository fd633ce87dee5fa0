// `tenguard bench conntrack`: per-packet cost of policy + connection tracking, and the rate
// of new connections, with 10, 10,000 and 100,000 tracked flows, for tenguard's engine and
// for Linux nftables conntrack doing the same filtering, in one run.
//
// What is measured
//
//   ours      PolicyEngine.check() called in this process on 1400-byte IPv4/UDP packets of
//             established flows (first packet and a reply already seen), direction "both"
//             (a hairpin: both the egress and the ingress side decided, the heavier case), on
//             a 10-rule tenant policy, with workload references as the NIC passes them. Each
//             batch writes the headers of BATCH packets into a reused slab (untimed, as a NIC
//             would have just decrypted them) and times the check() calls over them.
//             ns_per_packet is the median over all batches of the time per packet (a median
//             of batches, so that preemption on the shared machine does not count);
//             mbps = 1e9 / ns_per_packet * 1400 * 8 / 1e6 (what one core could pass if
//             policy + conntrack were the only work).
//             New flows: first packets of flows not seen before, while the N flows are
//             tracked; each is decided by the compiled policy and entered into the table
//             (timed), then removed again untimed so the table stays at N.
//             The three sizes are measured in short slices taken in turn (ROUNDS times), so
//             that they see the same load.
//   ours IPv6 The same on IPv6/UDP packets (`flows_ipv6`): the same flows at the tenants'
//             derived IPv6 addresses (fd64:6440:fc00::/64, orchestrator/pool.ts), measured in
//             the same rounds as the IPv4 row, so the two compare within one run.
//   nftables  One namespace tgct... per size, each with a TUN device, forwarding on, and an
//             nftables ruleset with conntrack (`ct state established,related accept`, then the
//             same rules as the tenant policy, policy drop). This process writes the same
//             packets into the TUN; the kernel forwards them through conntrack and the
//             ruleset back out of the TUN, where they are read back. Each batch of tracked
//             packets is paired with a batch of packets the raw chain marks `notrack` (a
//             destination accepted without conntrack), which take the same path minus
//             conntrack, in alternating order. nftables' ns_per_packet is the median over all
//             pairs of (tracked - untracked) time per packet: the kernel's cost of conntrack +
//             the ruleset, without the syscalls and forwarding both kinds pay. New flows
//             likewise: first packets of new tuples, each creating a conntrack entry, paired
//             with untracked packets (at most NFT_NEW_FLOWS per size: each stays in the
//             kernel's table until the namespace is deleted).
//
// Traffic pattern: 1400-byte packets are bulk-transfer packets, which a TCP sender emits in
// bursts: tg0 takes the kernel's 64 KiB TCP super-packets and the device cuts each into 46
// segments in a row (MTU 1420), which reach the NIC back to back in one batch; so packets
// come in trains of TRAIN = 46 packets per flow, flows in a random order over all N flows,
// the same for both sides. `details.uniform` has the same measurement with trains of 1
// (every packet from another random flow: the worst case for CPU caches), both sides too.
// The first packet of a train finds the flow's entry outside the CPU caches when N is large
// (about two cache and TLB misses, some 200 ns on this kind of machine); the train spreads
// that over its packets. With trains of 1 nothing does, and no per-packet design can hide it.
//
// Comparable, and where not: both figures are the marginal cost of stateful filtering per
// packet on one core, over the same packets, flows, rules and traffic pattern. Differences:
// the kernel's figure is a difference of two noisy syscall-bound times (its spread is in
// details.nftables.per_size: ns_diff_p10..p90); the kernel path includes skb handling ours
// does not have, ours includes JavaScript call overhead the kernel does not have; the kernel
// tracks flows by address only (ours also by workload identity); the kernel's conntrack table
// is shared by all namespaces of the machine and sized by its global settings
// (details.nftables.kernel). The machine is shared, so only ratios within one run mean much.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { PacketBatch } from '../native/batch.js';
import { NativeTunDevice } from '../native/tun.js';
import { parseHostAddress } from '../nic/addresses.js';
import { TenantServices } from '../nic/services.js';
import { WorkloadDirectory } from '../policy/directory.js';
import { PolicyEngine } from '../policy/engine.js';
import { PolicyStore } from '../policy/store.js';
import { TgError } from '../util/errors.js';
import { requireRoot, run as runCmd, runInOk, runOk } from '../util/exec.js';

export const SIZES = [10, 10_000, 100_000] as const;
const PACKET = 1400;
const BATCH = 256;
const TRAIN = 46;
const HEADER = 28; // IPv4 + UDP
const HEADER6 = 48; // IPv6 + UDP
/** The benchmark tenant's IPv6 prefix (pool 100.64.252.0/24 -> fd64:6440:fc00::/64): the first 12 bytes. */
const PREFIX6 = Buffer.from([0xfd, 0x64, 0x64, 0x40, 0xfc, 0, 0, 0, 0, 0, 0, 0]);
const CLIENTS = 16;
const SERVERS = 4;
const TENANT = 'bench';
const NET = {
  self: '100.64.252.1/24',
  clientBase: 10,
  serverBase: 40,
  untracked: 99,
  db: 50,
  serviceAddress: 200,
};
const NET_PREFIX = (100 << 24) | (64 << 16) | (252 << 8);
/** New flows measured per size on the kernel side: each leaves a conntrack entry behind. */
const NFT_NEW_FLOWS = 40_000;

export interface Point {
  mbps: number | null;
  ns_per_packet: number | null;
  new_flows_per_s: number | null;
}

export interface ConntrackBenchResult {
  flows: Record<string, Point>;
  /** Ours on IPv6 packets of the same flows. */
  flows_ipv6: Record<string, Point>;
  nftables: Record<string, Point>;
  details: Record<string, unknown>;
}

function addr(last: number): number {
  return (NET_PREFIX | last) >>> 0;
}

function ipv4Checksum(buf: Buffer, at: number): number {
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += (buf[at + i] << 8) | buf[at + i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** IPv4/UDP header of a `total`-byte packet at buf[at ...] (UDP checksum 0: none). */
function writeHeader(buf: Buffer, at: number, src: number, dst: number, sport: number, dport: number): void {
  buf.fill(0, at, at + HEADER);
  buf[at] = 0x45;
  buf.writeUInt16BE(PACKET, at + 2);
  buf[at + 8] = 64;
  buf[at + 9] = 17;
  buf.writeUInt32BE(src, at + 12);
  buf.writeUInt32BE(dst, at + 16);
  buf.writeUInt16BE(ipv4Checksum(buf, at), at + 10);
  buf.writeUInt16BE(sport, at + 20);
  buf.writeUInt16BE(dport, at + 22);
  buf.writeUInt16BE(PACKET - 20, at + 24);
}

/** IPv6/UDP header of a PACKET-byte packet at buf[at ...]: the IPv4 addresses under PREFIX6. */
function writeHeader6(buf: Buffer, at: number, src: number, dst: number, sport: number, dport: number): void {
  buf.fill(0, at, at + HEADER6);
  buf[at] = 0x60;
  buf.writeUInt16BE(PACKET - 40, at + 4);
  buf[at + 6] = 17;
  buf[at + 7] = 64;
  PREFIX6.copy(buf, at + 8);
  buf.writeUInt32BE(src, at + 20);
  PREFIX6.copy(buf, at + 24);
  buf.writeUInt32BE(dst, at + 36);
  buf.writeUInt16BE(sport, at + 40);
  buf.writeUInt16BE(dport, at + 42);
  buf.writeUInt16BE(PACKET - 40, at + 44);
}

/** Flow i of the tracked set: client, server and ports (distinct for i < 16 * 4 * 60000 * 500). */
function flowOf(i: number): { c: number; s: number; sport: number; dport: number } {
  const j = Math.floor(i / (CLIENTS * SERVERS));
  return {
    c: i % CLIENTS,
    s: Math.floor(i / CLIENTS) % SERVERS,
    sport: 1024 + (j % 60000),
    dport: 9000 + Math.floor(j / 60000),
  };
}

/** New flow m: never one of the tracked ones (destination ports from 9500). */
function newFlowOf(m: number): { c: number; s: number; sport: number; dport: number } {
  const j = Math.floor(m / (CLIENTS * SERVERS));
  return {
    c: m % CLIENTS,
    s: Math.floor(m / CLIENTS) % SERVERS,
    sport: 1024 + (j % 60000),
    dport: 9500 + (Math.floor(j / 60000) % 400),
  };
}

/** Headers of flows [0, n), HEADER (IPv4) or HEADER6 (IPv6) bytes each. */
function flowHeaders(
  n: number,
  of: (i: number) => ReturnType<typeof flowOf>,
  reply = false,
  family: 4 | 6 = 4,
): Buffer {
  const size = family === 4 ? HEADER : HEADER6;
  const write = family === 4 ? writeHeader : writeHeader6;
  const buf = Buffer.alloc(n * size);
  for (let i = 0; i < n; i++) {
    const f = of(i);
    const cl = addr(NET.clientBase + f.c);
    const sv = addr(NET.serverBase + f.s);
    if (reply) write(buf, i * size, sv, cl, f.dport, f.sport);
    else write(buf, i * size, cl, sv, f.sport, f.dport);
  }
  return buf;
}

/** The flow of every packet: trains of `train` packets per flow, flows in random order. */
function schedule(n: number, train: number, length: number): Int32Array {
  const perm = new Int32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  const out = new Int32Array(length);
  let k = 0;
  while (k < length) {
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      const t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
    for (let i = 0; i < n && k < length; i++)
      for (let t = 0; t < train && k < length; t++) out[k++] = perm[i];
  }
  return out;
}

function quantile(v: number[], q: number): number {
  const s = Float64Array.from(v).sort();
  return s.length === 0 ? Number.NaN : s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

function median(v: number[]): number {
  return quantile(v, 0.5);
}

function point(nsPerPacket: number | null, nsPerNewFlow: number | null): Point {
  const ok = (x: number | null): x is number => x !== null && Number.isFinite(x) && x > 0;
  return {
    mbps: ok(nsPerPacket) ? round(((1e9 / nsPerPacket) * PACKET * 8) / 1e6) : null,
    ns_per_packet: ok(nsPerPacket) ? round(nsPerPacket) : null,
    new_flows_per_s: ok(nsPerNewFlow) ? Math.round(1e9 / nsPerNewFlow) : null,
  };
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}

// ---------------------------------------------------------------------------------------
// The policy both sides enforce.

const POLICY = {
  version: 1,
  tenant: TENANT,
  rules: [
    {
      id: 'no-ssh',
      action: 'deny',
      direction: 'egress',
      workloads: { labels: { role: 'client' } },
      peers: [{ labels: {} }, { cidr: '0.0.0.0/0' }],
      protocol: 'tcp',
      ports: [22],
    },
    {
      id: 'client-udp',
      direction: 'egress',
      workloads: { labels: { role: 'client' } },
      peers: [{ labels: { role: 'server' } }],
      protocol: 'udp',
      ports: ['9000-9999'],
    },
    {
      id: 'server-udp',
      direction: 'ingress',
      workloads: { labels: { role: 'server' } },
      peers: [{ labels: { role: 'client' } }],
      protocol: 'udp',
      ports: ['9000-9999'],
    },
    {
      id: 'client-https',
      direction: 'egress',
      workloads: { labels: { role: 'client' } },
      peers: [{ labels: { role: 'server' } }],
      protocol: 'tcp',
      ports: [443],
    },
    {
      id: 'server-https',
      direction: 'ingress',
      workloads: { labels: { role: 'server' } },
      peers: [{ labels: { role: 'client' } }, { cidr: '203.0.113.0/24' }],
      protocol: 'tcp',
      ports: [443],
    },
    {
      id: 'client-dns',
      direction: 'egress',
      workloads: { labels: { role: 'client' } },
      peers: [{ cidr: '198.51.100.0/24' }],
      protocol: 'udp',
      ports: [53],
    },
    {
      id: 'server-db',
      direction: 'egress',
      workloads: { labels: { role: 'server' } },
      peers: [{ labels: { role: 'db' } }],
      protocol: 'tcp',
      ports: [5432],
    },
    {
      id: 'db-from-server',
      direction: 'ingress',
      workloads: { labels: { role: 'db' } },
      peers: [{ labels: { role: 'server' } }],
      protocol: 'tcp',
      ports: [5432],
    },
    {
      id: 'icmp-out',
      direction: 'egress',
      workloads: { labels: {} },
      peers: [{ labels: {} }],
      protocol: 'icmp',
    },
    {
      id: 'icmp-in',
      direction: 'ingress',
      workloads: { labels: {} },
      peers: [{ labels: {} }],
      protocol: 'icmp',
    },
  ],
  tests: [
    {
      src: { labels: { role: 'client' } },
      dst: { labels: { role: 'server' } },
      protocol: 'udp',
      port: 9100,
      expect: 'allow',
    },
    {
      src: { labels: { role: 'server' } },
      dst: { labels: { role: 'client' } },
      protocol: 'udp',
      port: 9100,
      expect: 'deny',
    },
    {
      src: { labels: { role: 'client' } },
      dst: { labels: { role: 'server' } },
      protocol: 'tcp',
      port: 22,
      expect: 'deny',
    },
  ],
};

function nftRuleset(): string {
  const range = (base: number, n: number) => `100.64.252.${base}-100.64.252.${base + n - 1}`;
  const clients = `{ ${range(NET.clientBase, CLIENTS)} }`;
  const servers = `{ ${range(NET.serverBase, SERVERS)} }`;
  const db = `100.64.252.${NET.db}`;
  return `table inet tgct {
  chain raw_pre {
    type filter hook prerouting priority raw; policy accept;
    ip daddr 100.64.252.${NET.untracked} notrack
  }
  chain filter_fwd {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state untracked accept
    ct state invalid drop
    ip saddr ${clients} tcp dport 22 drop
    ip saddr ${clients} ip daddr ${servers} udp dport 9000-9999 accept
    ip saddr ${clients} ip daddr ${servers} tcp dport 443 accept
    ip saddr 203.0.113.0/24 ip daddr ${servers} tcp dport 443 accept
    ip saddr ${clients} ip daddr 198.51.100.0/24 udp dport 53 accept
    ip saddr ${servers} ip daddr ${db} tcp dport 5432 accept
    ip saddr 100.64.252.0/24 ip daddr 100.64.252.0/24 meta l4proto icmp accept
  }
}
`;
}

// ---------------------------------------------------------------------------------------
// Ours.

interface WorkloadRef {
  tenant: string;
  workload: string;
  local: boolean;
}

class OursCase {
  readonly engine: PolicyEngine;
  readonly headers: Buffer;
  /** Header bytes per flow in `headers`. */
  private readonly hsize: number;
  private readonly slab = Buffer.alloc(BATCH * PACKET);
  private readonly srcs: WorkloadRef[] = new Array(BATCH);
  private readonly dsts: WorkloadRef[] = new Array(BATCH);
  private readonly entries = new Int32Array(BATCH);
  private nextNew = 0;

  constructor(
    readonly n: number,
    private readonly clients: WorkloadRef[],
    private readonly servers: WorkloadRef[],
    directory: WorkloadDirectory,
    store: PolicyStore,
    readonly family: 4 | 6 = 4,
  ) {
    this.engine = new PolicyEngine({
      directory,
      store,
      options: { maxFlowsPerZone: n + 2 * BATCH, initialFlowsPerZone: n + 2 * BATCH },
    });
    const h = family === 4 ? HEADER : HEADER6;
    this.hsize = h;
    this.headers = flowHeaders(n, flowOf, false, family);
    const replies = flowHeaders(n, flowOf, true, family);
    const now = Date.now();
    const one = Buffer.alloc(PACKET);
    for (let i = 0; i < n; i++) {
      const f = flowOf(i);
      this.headers.copy(one, 0, i * h, (i + 1) * h);
      let r = this.engine.check(TENANT, clients[f.c], servers[f.s], one, 0, PACKET, now, 'both');
      if (r.reason !== 'new') throw new TgError('TG_ERR_INTERNAL', `setup flow ${i}: ${r.reason} ${r.rule}`);
      replies.copy(one, 0, i * h, (i + 1) * h);
      r = this.engine.check(TENANT, servers[f.s], clients[f.c], one, 0, PACKET, now, 'both');
      if (r.reason !== 'reply') throw new TgError('TG_ERR_INTERNAL', `setup reply ${i}: ${r.reason}`);
    }
  }

  /** Runs batches following `seq` from `pos.at` for `seconds`; pushes ns per packet of each batch. */
  packets(seconds: number, seq: Int32Array, pos: { at: number }, out: number[]): void {
    const { slab, srcs, dsts, engine, headers, hsize } = this;
    const end = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
    do {
      for (let k = 0; k < BATCH; k++) {
        const i = seq[pos.at];
        pos.at = pos.at + 1 === seq.length ? 0 : pos.at + 1;
        headers.copy(slab, k * PACKET, i * hsize, (i + 1) * hsize);
        srcs[k] = this.clients[i % CLIENTS];
        dsts[k] = this.servers[Math.floor(i / CLIENTS) % SERVERS];
      }
      const now = Date.now();
      let allowed = 0;
      const t0 = process.hrtime.bigint();
      for (let k = 0; k < BATCH; k++)
        if (engine.check(TENANT, srcs[k], dsts[k], slab, k * PACKET, PACKET, now, 'both').allowed) allowed++;
      out.push(Number(process.hrtime.bigint() - t0) / BATCH);
      if (allowed !== BATCH)
        throw new TgError('TG_ERR_INTERNAL', `${BATCH - allowed} tracked packets denied`);
    } while (process.hrtime.bigint() < end);
  }

  /** Batches of new flows for `seconds`, pushing ns per new flow of each; they are removed again untimed. */
  newFlows(seconds: number, out: number[]): void {
    const { slab, srcs, dsts, engine, entries } = this;
    const zone = engine.zone(TENANT);
    if (zone === undefined) throw new TgError('TG_ERR_INTERNAL', 'no zone');
    const end = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
    do {
      for (let k = 0; k < BATCH; k++) {
        const f = newFlowOf(this.nextNew++);
        (this.family === 4 ? writeHeader : writeHeader6)(
          slab,
          k * PACKET,
          addr(NET.clientBase + f.c),
          addr(NET.serverBase + f.s),
          f.sport,
          f.dport,
        );
        srcs[k] = this.clients[f.c];
        dsts[k] = this.servers[f.s];
      }
      const now = Date.now();
      const t0 = process.hrtime.bigint();
      for (let k = 0; k < BATCH; k++)
        entries[k] = engine.check(TENANT, srcs[k], dsts[k], slab, k * PACKET, PACKET, now, 'both').entry;
      out.push(Number(process.hrtime.bigint() - t0) / BATCH);
      for (let k = 0; k < BATCH; k++) {
        if (entries[k] < 0) throw new TgError('TG_ERR_INTERNAL', 'a new flow was not admitted');
        zone.allowed.remove(entries[k]);
      }
    } while (process.hrtime.bigint() < end);
    if (zone.allowed.size !== this.n) throw new TgError('TG_ERR_INTERNAL', 'tracked flows changed');
  }
}

/**
 * The same flows sent to a service address (a UDP service on port 9000 whose endpoints are the
 * four servers), decided as the NIC's forwarder decides them: PolicyEngine.checkNat() finds the
 * connection by its original tuple, decides it as check() would and rewrites the destination to
 * the endpoint its entry holds (nat.ts), and the endpoint's workload is taken by the index it
 * returns (the forwarder keeps each service's endpoint destinations resolved the same way). A
 * connection without a binding takes the forwarder's other path, timed too: the service
 * translation (TenantServices.translate: pick, pin, rewrite), check(), bindNat(); every flow
 * gets its binding at setup (its first packet), so measured batches count such packets only
 * when an entry ended (details.service.slow_path_packets).
 */
class ServiceCase {
  readonly engine: PolicyEngine;
  readonly headers: Buffer;
  readonly services = new TenantServices();
  private readonly slab = Buffer.alloc(BATCH * PACKET);
  private readonly srcs: WorkloadRef[] = new Array(BATCH);
  private readonly byAddress = new Map<number, WorkloadRef>();
  /** The workload of each endpoint index translate() returns (the forwarder keeps the same per service). */
  private readonly endpointRefs: WorkloadRef[];
  /** The service address's NAT id in the engine. */
  private readonly natId: number;
  /** Packets of measured batches that took the path without a binding. */
  slowPath = 0;

  constructor(
    readonly n: number,
    private readonly clients: WorkloadRef[],
    servers: WorkloadRef[],
    directory: WorkloadDirectory,
    store: PolicyStore,
  ) {
    this.engine = new PolicyEngine({
      directory,
      store,
      options: { maxFlowsPerZone: n + 2 * BATCH, initialFlowsPerZone: n + 2 * BATCH },
    });
    servers.forEach((s, i) => {
      this.byAddress.set(addr(NET.serverBase + i), s);
    });
    this.services.set([
      {
        name: 'svc',
        address: parseHostAddress(SERVICE_ADDRESS),
        ports: [{ port: 9000, protocol: 'udp' }],
        endpoints: servers.map((s, i) => ({
          workload: s.workload,
          address: parseHostAddress(formatAddr(addr(NET.serverBase + i))),
        })),
      },
    ]);
    const entry = this.services.serviceAt(parseHostAddress(SERVICE_ADDRESS).bytes)!;
    this.endpointRefs = entry.endpoints.map((e) => servers.find((x) => x.workload === e.workload)!);
    this.natId = this.engine.nat.acquire(`${TENANT}/svc`);
    this.engine.nat.setAddress(this.natId, parseHostAddress(SERVICE_ADDRESS).bytes);
    const vip = addr(NET.serviceAddress);
    this.headers = flowHeaders(n, serviceFlowOf);
    for (let i = 0; i < n; i++) this.headers.writeUInt32BE(vip, i * HEADER + 16);
    for (let i = 0; i < n; i++) writeChecksum(this.headers, i * HEADER);
    const svc = this.services.serviceAt(parseHostAddress(SERVICE_ADDRESS).bytes)!;
    const now = Date.now();
    const one = Buffer.alloc(PACKET);
    for (let i = 0; i < n; i++) {
      const f = serviceFlowOf(i);
      this.headers.copy(one, 0, i * HEADER, (i + 1) * HEADER);
      const ep = this.services.translate(one, 0, PACKET, 4, svc, now);
      if (ep < 0) throw new TgError('TG_ERR_INTERNAL', `setup flow ${i}: not translated`);
      const server = this.byAddress.get(one.readUInt32BE(16))!;
      if (server !== this.endpointRefs[ep])
        throw new TgError('TG_ERR_INTERNAL', `setup flow ${i}: endpoint index`);
      let r = this.engine.check(TENANT, clients[f.c], server, one, 0, PACKET, now, 'both');
      if (r.reason !== 'new') throw new TgError('TG_ERR_INTERNAL', `setup flow ${i}: ${r.reason} ${r.rule}`);
      if (!this.engine.bindNat(this.natId, ep))
        throw new TgError('TG_ERR_INTERNAL', `setup flow ${i}: not bound`);
      writeHeader(one, 0, one.readUInt32BE(16), addr(NET.clientBase + f.c), f.dport, f.sport);
      r = this.engine.check(TENANT, server, clients[f.c], one, 0, PACKET, now, 'both');
      if (r.reason !== 'reply') throw new TgError('TG_ERR_INTERNAL', `setup reply ${i}: ${r.reason}`);
      if (one.readUInt32BE(12) !== vip)
        throw new TgError('TG_ERR_INTERNAL', `setup reply ${i}: not reversed`);
    }
  }

  /** As OursCase.packets, with the service translation in the timed part. */
  packets(seconds: number, seq: Int32Array, pos: { at: number }, out: number[]): void {
    const { slab, srcs, engine, headers, services, endpointRefs, natId } = this;
    const svc = services.serviceAt(parseHostAddress(SERVICE_ADDRESS).bytes)!;
    const end = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
    do {
      for (let k = 0; k < BATCH; k++) {
        const i = seq[pos.at];
        pos.at = pos.at + 1 === seq.length ? 0 : pos.at + 1;
        headers.copy(slab, k * PACKET, i * HEADER, (i + 1) * HEADER);
        srcs[k] = this.clients[i % CLIENTS];
      }
      const now = Date.now();
      let allowed = 0;
      const t0 = process.hrtime.bigint();
      for (let k = 0; k < BATCH; k++) {
        const at = k * PACKET;
        const r = engine.checkNat(TENANT, srcs[k], natId, slab, at, PACKET, now);
        if (r !== null) {
          if (r.allowed && endpointRefs[r.natEndpoint] !== undefined) allowed++;
          continue;
        }
        this.slowPath++;
        const ep = services.translate(slab, at, PACKET, 4, svc, now);
        if (
          ep >= 0 &&
          engine.check(TENANT, srcs[k], endpointRefs[ep], slab, at, PACKET, now, 'both').allowed
        ) {
          engine.bindNat(natId, ep);
          allowed++;
        }
      }
      out.push(Number(process.hrtime.bigint() - t0) / BATCH);
      if (allowed !== BATCH)
        throw new TgError('TG_ERR_INTERNAL', `${BATCH - allowed} tracked service packets denied`);
    } while (process.hrtime.bigint() < end);
  }
}

/** Flow i to the service: distinct client address and port per flow (the endpoint is the service's pick). */
function serviceFlowOf(i: number): { c: number; s: number; sport: number; dport: number } {
  return { c: i % CLIENTS, s: 0, sport: 1024 + (Math.floor(i / CLIENTS) % 60000), dport: 9000 };
}

/** The service address of ServiceCase. */
const SERVICE_ADDRESS = '100.64.252.200';
/** The size the service row is measured at. */
export const SERVICE_FLOWS = 10_000;

function formatAddr(a: number): string {
  return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
}

function writeChecksum(buf: Buffer, at: number): void {
  buf.writeUInt16BE(0, at + 10);
  buf.writeUInt16BE(ipv4Checksum(buf, at), at + 10);
}

function benchOurs(rounds: number, seconds: number, log: (s: string) => void) {
  const directory = new WorkloadDirectory();
  const clients: WorkloadRef[] = [];
  const servers: WorkloadRef[] = [];
  for (let c = 0; c < CLIENTS; c++) {
    directory.upsert(TENANT, `client-${c}`, { role: 'client', team: `t${c % 4}` });
    clients.push(Object.freeze({ tenant: TENANT, workload: `client-${c}`, local: true }));
  }
  for (let s = 0; s < SERVERS; s++) {
    directory.upsert(TENANT, `server-${s}`, { role: 'server' });
    servers.push(Object.freeze({ tenant: TENANT, workload: `server-${s}`, local: true }));
  }
  directory.upsert(TENANT, 'db-0', { role: 'db' });
  const store = new PolicyStore(directory);
  store.replace(POLICY);
  log('ours: setting up 10, 10,000 and 100,000 tracked flows, IPv4 and IPv6');
  const cases = SIZES.map((n) => new OursCase(n, clients, servers, directory, store));
  const cases6 = SIZES.map((n) => new OursCase(n, clients, servers, directory, store, 6));
  log(`ours: ${SERVICE_FLOWS} flows through a service`);
  const svcCase = new ServiceCase(SERVICE_FLOWS, clients, servers, directory, store);
  const svcAt = SIZES.indexOf(SERVICE_FLOWS as (typeof SIZES)[number]);
  const seqService = schedule(SERVICE_FLOWS, TRAIN, 1 << 21);
  const posService = { at: 0 };
  const viaService: number[] = [];
  const seqTrain = cases.map((c) => schedule(c.n, TRAIN, 1 << 21));
  const seqUniform = cases.map((c) => schedule(c.n, 1, 1 << 21));
  const pos = cases.map(() => ({ at: 0 }));
  const posU = cases.map(() => ({ at: 0 }));
  const pos6 = cases.map(() => ({ at: 0 }));
  const train = cases.map((): number[] => []);
  const uniform = cases.map((): number[] => []);
  const fresh = cases.map((): number[] => []);
  const train6 = cases.map((): number[] => []);
  const fresh6 = cases.map((): number[] => []);
  log(`ours: ${rounds} rounds, sizes and families interleaved`);
  for (let r = 0; r < rounds; r++)
    cases.forEach((c, i) => {
      c.packets(seconds, seqTrain[i], pos[i], train[i]);
      cases6[i].packets(seconds, seqTrain[i], pos6[i], train6[i]);
      c.packets(seconds / 2, seqUniform[i], posU[i], uniform[i]);
      c.newFlows(seconds / 2, fresh[i]);
      cases6[i].newFlows(seconds / 2, fresh6[i]);
      if (i === svcAt) svcCase.packets(seconds, seqService, posService, viaService);
    });
  const plain = median(train[svcAt]);
  const via = median(viaService);
  return {
    service: {
      note: 'the same flows sent to a service address: checkNat() (conntrack lookup by the original tuple, stored rewrite) per packet',
      flows: SERVICE_FLOWS,
      ns_per_packet: round(via),
      ns_per_packet_without: round(plain),
      ratio: Math.round((via / plain) * 1000) / 1000,
      requirement_within_15pct: via / plain <= 1.15,
      batches: viaService.length,
      slow_path_packets: svcCase.slowPath,
    },
    points: Object.fromEntries(SIZES.map((n, i) => [String(n), point(median(train[i]), median(fresh[i]))])),
    points6: Object.fromEntries(
      SIZES.map((n, i) => [String(n), point(median(train6[i]), median(fresh6[i]))]),
    ),
    uniform: Object.fromEntries(SIZES.map((n, i) => [String(n), point(median(uniform[i]), null)])),
    samples: Object.fromEntries(
      SIZES.map((n, i) => [
        String(n),
        {
          batches: train[i].length,
          ns_per_packet_p10: round(quantile(train[i], 0.1)),
          ns_per_packet_p90: round(quantile(train[i], 0.9)),
          ns_per_packet_uniform_p10: round(quantile(uniform[i], 0.1)),
        },
      ]),
    ),
  };
}

// ---------------------------------------------------------------------------------------
// Linux nftables.

function readSysctl(path: string): number | null {
  try {
    return Number(readFileSync(path, 'utf8').trim());
  } catch {
    return null;
  }
}

class NftCase {
  private readonly tx = new PacketBatch(BATCH, PACKET, 0);
  private readonly rx = new PacketBatch(BATCH, 2048, 0);
  private readonly untracked: Buffer;
  lost = 0;
  private nextNew = 0;

  get newSent(): number {
    return this.nextNew;
  }

  constructor(
    private readonly tun: NativeTunDevice,
    readonly n: number,
  ) {
    this.tx.lengths.fill(PACKET);
    this.untracked = Buffer.alloc(BATCH * HEADER);
    for (let k = 0; k < BATCH; k++)
      writeHeader(
        this.untracked,
        k * HEADER,
        addr(NET.clientBase + (k % CLIENTS)),
        addr(NET.untracked),
        2000 + k,
        9000,
      );
  }

  /** Writes the batch in tx, reads it back; ns per packet. */
  private roundTrip(): number {
    const t0 = process.hrtime.bigint();
    const written = this.tun.writeBatch(this.tx.slab, this.tx.offsets, this.tx.lengths, BATCH);
    let got = 0;
    for (let empty = 0; got < written && empty < 1000; ) {
      const k = this.tun.readBatch(this.rx.slab, this.rx.slotSize, 0, BATCH, this.rx.lengths);
      got += k;
      empty = k === 0 ? empty + 1 : 0;
    }
    const ns = Number(process.hrtime.bigint() - t0);
    this.lost += BATCH - got;
    return ns / BATCH;
  }

  private fill(headers: Buffer, seq: Int32Array | null, pos: { at: number }): void {
    for (let k = 0; k < BATCH; k++) {
      let i = k;
      if (seq !== null) {
        i = seq[pos.at];
        pos.at = pos.at + 1 === seq.length ? 0 : pos.at + 1;
      }
      headers.copy(this.tx.slab, k * PACKET, i * HEADER, (i + 1) * HEADER);
    }
  }

  /** Sends every flow's first packet, then its reply: n established entries. */
  establish(): void {
    const fwd = flowHeaders(this.n, flowOf);
    const rev = flowHeaders(this.n, flowOf, true);
    for (const h of [fwd, rev])
      for (let i = 0; i < this.n; i += BATCH) {
        const count = Math.min(BATCH, this.n - i);
        for (let k = 0; k < count; k++)
          h.copy(this.tx.slab, k * PACKET, (i + k) * HEADER, (i + k + 1) * HEADER);
        this.tun.writeBatch(this.tx.slab, this.tx.offsets, this.tx.lengths, count);
        for (let got = 0, empty = 0; got < count && empty < 1000; ) {
          const k = this.tun.readBatch(this.rx.slab, this.rx.slotSize, 0, BATCH, this.rx.lengths);
          got += k;
          empty = k === 0 ? empty + 1 : 0;
        }
      }
  }

  /**
   * Alternates a batch following `seq` (tracked) with a batch of untracked packets for
   * `seconds`, in alternating order; pushes ns per packet of each and their difference.
   */
  packets(seconds: number, seq: Int32Array, pos: { at: number }, headers: Buffer, out: Paired): void {
    const none = { at: 0 };
    const end = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
    let flip = false;
    do {
      let tracked: number;
      let untracked: number;
      flip = !flip;
      if (flip) {
        this.fill(headers, seq, pos);
        tracked = this.roundTrip();
        this.fill(this.untracked, null, none);
        untracked = this.roundTrip();
      } else {
        this.fill(this.untracked, null, none);
        untracked = this.roundTrip();
        this.fill(headers, seq, pos);
        tracked = this.roundTrip();
      }
      out.tracked.push(tracked);
      out.untracked.push(untracked);
      out.diff.push(tracked - untracked);
    } while (process.hrtime.bigint() < end);
  }

  /** Like packets(), with the first packets of new flows as the tracked batch; at most `limit` new flows. */
  newFlows(seconds: number, limit: number, out: Paired): void {
    const none = { at: 0 };
    const fresh = Buffer.alloc(BATCH * HEADER);
    const end = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
    let sent = 0;
    let flip = false;
    do {
      sent += BATCH;
      for (let k = 0; k < BATCH; k++) {
        const f = newFlowOf(this.nextNew++);
        writeHeader(
          fresh,
          k * HEADER,
          addr(NET.clientBase + f.c),
          addr(NET.serverBase + f.s),
          f.sport,
          f.dport,
        );
      }
      let tracked: number;
      let untracked: number;
      flip = !flip;
      if (flip) {
        this.fill(fresh, null, none);
        tracked = this.roundTrip();
        this.fill(this.untracked, null, none);
        untracked = this.roundTrip();
      } else {
        this.fill(this.untracked, null, none);
        untracked = this.roundTrip();
        this.fill(fresh, null, none);
        tracked = this.roundTrip();
      }
      out.tracked.push(tracked);
      out.untracked.push(untracked);
      out.diff.push(tracked - untracked);
    } while (process.hrtime.bigint() < end && sent + BATCH <= limit);
  }
}

interface Paired {
  tracked: number[];
  untracked: number[];
  diff: number[];
}

function paired(): Paired {
  return { tracked: [], untracked: [], diff: [] };
}

async function setupNamespace(ns: string, dev: string): Promise<void> {
  await runOk('ip', ['netns', 'add', ns]);
  await runInOk(ns, 'ip', ['link', 'set', 'lo', 'up']);
  await runOk('ip', ['link', 'set', 'dev', dev, 'netns', ns]);
  for (const key of [
    `net.ipv6.conf.${dev}.disable_ipv6=1`,
    'net.ipv4.ip_forward=1',
    'net.ipv4.conf.all.send_redirects=0',
    `net.ipv4.conf.${dev}.send_redirects=0`,
    'net.ipv4.conf.all.rp_filter=0',
    `net.ipv4.conf.${dev}.rp_filter=0`,
  ])
    await runInOk(ns, 'sysctl', ['-qw', key]);
  await runInOk(ns, 'ip', ['addr', 'add', NET.self, 'dev', dev]);
  await runInOk(ns, 'ip', ['link', 'set', 'dev', dev, 'txqueuelen', String(4 * BATCH), 'up']);
  await runInOk(ns, 'nft', ['-f', '-'], { input: nftRuleset() });
}

interface NftSetup {
  n: number;
  ns: string;
  tun: NativeTunDevice;
  c: NftCase;
  entries: number;
  headers: Buffer;
  seqTrain: Int32Array;
  seqUniform: Int32Array;
  train: Paired;
  uniform: Paired;
  fresh: Paired;
}

async function benchNft(rounds: number, seconds: number, log: (s: string) => void) {
  const max = readSysctl('/proc/sys/net/netfilter/nf_conntrack_max');
  const buckets = readSysctl('/proc/sys/net/netfilter/nf_conntrack_buckets');
  const need = SIZES.reduce((a, n) => a + n + NFT_NEW_FLOWS, 0) + 20_000;
  if (max !== null && max < need)
    throw new TgError(
      'TG_ERR_CONFIG',
      `nf_conntrack_max is ${max}; this benchmark needs room for ${need} entries in its own namespaces`,
    );
  const setups: NftSetup[] = [];
  const names: string[] = [];
  // Ctrl-C must not leave the namespaces behind.
  const onSignal = () => {
    try {
      for (const ns of names) execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } finally {
      process.exit(130);
    }
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    for (const n of SIZES) {
      const ns = `tgct${randomBytes(3).toString('hex')}`;
      const dev = `${ns}t`;
      const tun = NativeTunDevice.open(dev);
      names.push(ns);
      const c = new NftCase(tun, n);
      setups.push({
        n,
        ns,
        tun,
        c,
        entries: 0,
        headers: flowHeaders(n, flowOf),
        seqTrain: schedule(n, TRAIN, 1 << 20),
        seqUniform: schedule(n, 1, 1 << 20),
        train: paired(),
        uniform: paired(),
        fresh: paired(),
      });
      await setupNamespace(ns, dev);
      log(`nftables: ${n} flows in ${ns}`);
      c.establish();
      const s = setups[setups.length - 1];
      s.entries = Number((await runInOk(ns, 'cat', ['/proc/sys/net/netfilter/nf_conntrack_count'])).trim());
      if (s.entries < n)
        throw new TgError('TG_ERR_INTERNAL', `only ${s.entries} of ${n} conntrack entries were created`);
    }
    log(`nftables: ${rounds} rounds, sizes interleaved`);
    const pos = setups.map(() => ({ at: 0 }));
    const posU = setups.map(() => ({ at: 0 }));
    for (let r = 0; r < rounds; r++)
      setups.forEach((s, i) => {
        s.c.packets(seconds, s.seqTrain, pos[i], s.headers, s.train);
        s.c.packets(seconds / 2, s.seqUniform, posU[i], s.headers, s.uniform);
        s.c.newFlows(seconds / 2, NFT_NEW_FLOWS / rounds, s.fresh);
      });
    const points: Record<string, Point> = {};
    const uniform: Record<string, Point> = {};
    const raw: Record<string, unknown> = {};
    for (const s of setups) {
      points[String(s.n)] = point(median(s.train.diff), median(s.fresh.diff));
      uniform[String(s.n)] = point(median(s.uniform.diff), null);
      raw[String(s.n)] = {
        conntrack_entries_after_setup: s.entries,
        batches: s.train.diff.length,
        ns_tracked: round(median(s.train.tracked)),
        ns_untracked: round(median(s.train.untracked)),
        ns_diff_p10: round(quantile(s.train.diff, 0.1)),
        ns_diff_p90: round(quantile(s.train.diff, 0.9)),
        ns_tracked_uniform: round(median(s.uniform.tracked)),
        ns_new_flow_tracked: round(median(s.fresh.tracked)),
        ns_new_flow_untracked: round(median(s.fresh.untracked)),
        new_flows_sent: s.c.newSent,
        lost: s.c.lost + s.tun.stats().txDropped + s.tun.stats().txRejected,
      };
    }
    return { points, uniform, raw, kernel: { nf_conntrack_max: max, nf_conntrack_buckets: buckets } };
  } finally {
    for (const s of setups) s.tun.close();
    for (const ns of names) await runCmd('ip', ['netns', 'del', ns]);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

// ---------------------------------------------------------------------------------------

export async function benchConntrack(opts: {
  rounds: number;
  seconds: number;
  nftables: boolean;
  log?: (s: string) => void;
}): Promise<ConntrackBenchResult> {
  const log = opts.log ?? (() => undefined);
  if (opts.nftables) requireRoot('bench conntrack (the nftables side)');
  const ours = benchOurs(opts.rounds, opts.seconds, log);
  const nft = opts.nftables ? await benchNft(opts.rounds, opts.seconds, log) : null;
  const at = (p: Record<string, Point>, n: number) => p[String(n)].ns_per_packet ?? Number.NaN;
  const ratio = (p: Record<string, Point>) => Math.round((at(p, 10) / at(p, 100_000)) * 1000) / 1000;
  const empty = Object.fromEntries(SIZES.map((n) => [String(n), point(null, null)]));
  return {
    flows: ours.points,
    flows_ipv6: ours.points6,
    nftables: nft?.points ?? empty,
    details: {
      packet_bytes: PACKET,
      batch: BATCH,
      train_packets_per_flow: TRAIN,
      direction: 'both',
      rules: POLICY.rules.length,
      rounds: opts.rounds,
      seconds_per_round: opts.seconds,
      throughput_100k_over_10: {
        ours: ratio(ours.points),
        nftables: nft === null ? null : ratio(nft.points),
      },
      requirement_100k_within_10pct: ratio(ours.points) >= 0.9,
      uniform: {
        note: 'trains of 1 packet: every packet from another random flow',
        ours: ours.uniform,
        nftables: nft?.uniform ?? null,
        throughput_100k_over_10: {
          ours: ratio(ours.uniform),
          nftables: nft === null ? null : ratio(nft.uniform),
        },
      },
      service: ours.service,
      ours_samples: ours.samples,
      nftables: nft === null ? null : { per_size: nft.raw, kernel: nft.kernel },
    },
  };
}

const HELP = `usage: tenguard bench conntrack [--rounds N] [--seconds S] [--no-nftables] [--json]

Per-packet cost of policy + connection tracking and the new-flow rate with 10, 10,000 and
100,000 tracked flows: tenguard's PolicyEngine.check() against Linux nftables conntrack doing
the same filtering in a tgct... namespace (root), in one run. See src/bench/conntrack.ts for
exactly what is measured.

  --rounds N      rounds per size, sizes interleaved (default 30)
  --seconds S     time per round and size (default 0.05)
  --no-nftables   only our engine (no root needed)
  --json          print one JSON object instead of a table
`;

function table(r: ConntrackBenchResult): string {
  const lines = ['flows     side       mbps   ns/packet  new flows/s'];
  for (const n of SIZES)
    for (const [side, p] of [
      ['tenguard', r.flows[String(n)]],
      ['tg IPv6', r.flows_ipv6[String(n)]],
      ['nftables', r.nftables[String(n)]],
    ] as const)
      lines.push(
        `${String(n).padEnd(9)} ${side.padEnd(8)} ${String(p.mbps ?? '-').padStart(7)} ${String(p.ns_per_packet ?? '-').padStart(11)} ${String(p.new_flows_per_s ?? '-').padStart(12)}`,
      );
  const svc = r.details.service as { flows: number; ns_per_packet: number; ratio: number } | undefined;
  if (svc !== undefined)
    lines.push(
      `${`${svc.flows}+svc`.padEnd(9)} ${'tenguard'.padEnd(8)} ${String(point(svc.ns_per_packet, null).mbps ?? '-').padStart(7)} ${String(svc.ns_per_packet).padStart(11)} ${'-'.padStart(12)}`,
    );
  lines.push('', `throughput at 100k / at 10 flows: ${JSON.stringify(r.details.throughput_100k_over_10)}`);
  if (svc !== undefined) lines.push(`per packet with a service / without, ${svc.flows} flows: ${svc.ratio}`);
  return lines.join('\n');
}

export async function run(args: string[]): Promise<number> {
  let values: { rounds?: string; seconds?: string; 'no-nftables'?: boolean; json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        rounds: { type: 'string' },
        seconds: { type: 'string' },
        'no-nftables': { type: 'boolean' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new TgError('TG_ERR_USAGE', `${(err as Error).message}\n\n${HELP}`, { cause: err });
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const num = (text: string | undefined, dflt: number, min: number, max: number, name: string) => {
    const v = text === undefined ? dflt : Number(text);
    if (!Number.isFinite(v) || v < min || v > max)
      throw new TgError('TG_ERR_USAGE', `--${name} must be a number in [${min}, ${max}]`);
    return v;
  };
  const rounds = Math.floor(num(values.rounds, 30, 1, 200, 'rounds'));
  const seconds = num(values.seconds, 0.05, 0.01, 10, 'seconds');
  const log = (s: string) => process.stderr.write(`bench conntrack: ${s}\n`);
  const result = await benchConntrack({ rounds, seconds, nftables: !values['no-nftables'], log });
  // --json prints exactly {"flows": ..., "flows_ipv6": ..., "nftables": ...}; the details go to stderr.
  if (values.json) {
    log(`details ${JSON.stringify(result.details)}`);
    process.stdout.write(
      `${JSON.stringify({ flows: result.flows, flows_ipv6: result.flows_ipv6, nftables: result.nftables })}\n`,
    );
  } else process.stdout.write(`${table(result)}\n`);
  return 0;
}
