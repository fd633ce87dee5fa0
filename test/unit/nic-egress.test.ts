// Egress at the NIC without namespaces: the source NAT table (translation both ways with valid
// checksums, untracked replies, port exhaustion, idle expiry), the FQDN name cache (TTL, the
// minimum TTL, expired names kept for flow records, the bound), FQDN names and patterns, the
// DNS server's forwarding decision and the checks of upstream answers, and the policy engine
// deciding egress by the names the cache holds.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import dnsPacket from 'dns-packet';
import { parseHostAddress } from '../../src/nic/addresses.js';
import { FORWARD_UPSTREAM, type NameBook, TenantDns } from '../../src/nic/dns.js';
import { Egress } from '../../src/nic/egress.js';
import { addressKey, addressKeyOf, KEEP_EXPIRED_MS, NameCache } from '../../src/nic/egress-names.js';
import { Forwarder } from '../../src/nic/forwarding.js';
import { SNAT_CLOSING_MS, SNAT_PORT_MAX, SNAT_PORT_MIN, SNAT_UDP_MS, SnatTable } from '../../src/nic/snat.js';
import { MAX_UPSTREAM_ANSWER, UPSTREAM_TIMEOUT_MS, UpstreamDns } from '../../src/nic/upstream-dns.js';
import { craftPacket } from '../../src/policy/craft.js';
import { canonicalName, fqdnMatches, parseFqdn } from '../../src/policy/fqdn.js';
import { policyDocumentSchema } from '../../src/policy/model.js';
import { normalizeRules } from '../../src/policy/normalize.js';
import type { TunBatch } from '../../src/protocol/batch.js';
import { SYN, send, verdict, world } from '../helpers/policy-harness.js';

const UPLINK = Uint8Array.of(198, 18, 252, 11);
const OWNER = Object.freeze({
  tenant: 'acme',
  peerId: 7,
  ref: Object.freeze({ tenant: 'acme', workload: 'web-1' }),
});

/** The ones'-complement sum over buf[from, to) plus `acc`, folded. */
function sum(buf: Buffer, from: number, to: number, acc = 0): number {
  let s = acc;
  for (let i = from; i < to; i += 2) s += (buf[i] << 8) | (i + 1 < to ? buf[i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** Sets a valid L4 checksum on an IPv4 TCP/UDP/ICMP packet (craftPacket leaves them zero). */
function fillChecksum(p: Buffer): Buffer {
  const proto = p[9];
  const l4 = 20;
  const at = proto === 6 ? l4 + 16 : proto === 17 ? l4 + 6 : l4 + 2;
  p.writeUInt16BE(0, at);
  const pseudo = proto === 1 ? 0 : sum(p, 12, 20, proto + (p.length - l4));
  let c = ~sum(p, l4, p.length, pseudo) & 0xffff;
  if (proto === 17 && c === 0) c = 0xffff;
  p.writeUInt16BE(c, at);
  return p;
}

/** Whether the IPv4 header and L4 checksums of p verify. */
function checksumsValid(p: Buffer): boolean {
  const proto = p[9];
  if (sum(p, 0, 20) !== 0xffff) return false;
  const pseudo = proto === 1 ? 0 : sum(p, 12, 20, proto + (p.length - 20));
  return sum(p, 20, p.length, pseudo) === 0xffff;
}

function tcp(src: string, dst: string, sport: number, dport: number, flags = SYN): Buffer {
  return fillChecksum(craftPacket({ src, dst, proto: 'tcp', sport, dport, flags, length: 60 }));
}

test('SNAT: a TCP flow is translated to the uplink address and back, checksums stay valid', () => {
  const t = new SnatTable(UPLINK);
  const out = tcp('100.64.1.1', '198.18.251.10', 40000, 80);
  const e = t.outbound(OWNER, out, 0, out.length, 1000);
  assert.ok(e);
  assert.deepEqual([...out.subarray(12, 16)], [...UPLINK]);
  const natPort = out.readUInt16BE(20);
  assert.ok(natPort >= SNAT_PORT_MIN && natPort <= SNAT_PORT_MAX);
  assert.equal(out.readUInt16BE(22), 80);
  assert.ok(checksumsValid(out), 'outbound checksums');
  // The same flow keeps its port.
  const again = tcp('100.64.1.1', '198.18.251.10', 40000, 80, 0x10);
  t.outbound(OWNER, again, 0, again.length, 1100);
  assert.equal(again.readUInt16BE(20), natPort);
  assert.equal(t.size, 1);
  const reply = tcp('198.18.251.10', '198.18.252.11', 80, natPort, 0x12);
  const back = t.inbound(reply, 0, reply.length, 1200);
  assert.equal(back, e);
  assert.equal(reply.subarray(16, 20).join('.'), '100.64.1.1');
  assert.equal(reply.readUInt16BE(22), 40000);
  assert.ok(checksumsValid(reply), 'inbound checksums');
  assert.deepEqual([t.counters.translated, t.counters.reversed], [2, 1]);
});

test('SNAT: UDP and ICMP echo are translated; replies from another end or port are untracked drops', () => {
  const t = new SnatTable(UPLINK);
  const u = fillChecksum(
    craftPacket({
      src: '100.64.1.1',
      dst: '198.18.251.53',
      proto: 'udp',
      sport: 5353,
      dport: 53,
      length: 40,
    }),
  );
  assert.ok(t.outbound(OWNER, u, 0, u.length, 0));
  assert.ok(checksumsValid(u));
  const port = u.readUInt16BE(20);
  const wrongEnd = fillChecksum(
    craftPacket({
      src: '198.18.251.54',
      dst: '198.18.252.11',
      proto: 'udp',
      sport: 53,
      dport: port,
      length: 40,
    }),
  );
  assert.equal(t.inbound(wrongEnd, 0, wrongEnd.length, 1), null);
  const wrongPort = fillChecksum(
    craftPacket({
      src: '198.18.251.53',
      dst: '198.18.252.11',
      proto: 'udp',
      sport: 54,
      dport: port,
      length: 40,
    }),
  );
  assert.equal(t.inbound(wrongPort, 0, wrongPort.length, 1), null);
  const noEntry = fillChecksum(
    craftPacket({
      src: '198.18.251.53',
      dst: '198.18.252.11',
      proto: 'udp',
      sport: 53,
      dport: port + 1,
      length: 40,
    }),
  );
  assert.equal(t.inbound(noEntry, 0, noEntry.length, 1), null);
  assert.equal(t.counters.dropped.untracked, 3);
  const ping = fillChecksum(
    craftPacket({
      src: '100.64.1.1',
      dst: '198.18.251.10',
      proto: 'icmp',
      icmpType: 8,
      icmpId: 77,
      length: 36,
    }),
  );
  assert.ok(t.outbound(OWNER, ping, 0, ping.length, 2));
  assert.ok(checksumsValid(ping));
  const id = ping.readUInt16BE(24);
  const pong = fillChecksum(
    craftPacket({
      src: '198.18.251.10',
      dst: '198.18.252.11',
      proto: 'icmp',
      icmpType: 0,
      icmpId: id,
      length: 36,
    }),
  );
  assert.ok(t.inbound(pong, 0, pong.length, 3));
  assert.equal(pong.readUInt16BE(24), 77);
  assert.ok(checksumsValid(pong));
  // Not translatable: ICMP other than echo, a protocol without ports.
  const unreach = craftPacket({
    src: '100.64.1.1',
    dst: '198.18.251.10',
    proto: 'icmp',
    icmpType: 3,
    length: 36,
  });
  assert.equal(t.outbound(OWNER, unreach, 0, unreach.length, 4), null);
  const gre = craftPacket({ src: '100.64.1.1', dst: '198.18.251.10', proto: 47, length: 40 });
  assert.equal(t.outbound(OWNER, gre, 0, gre.length, 4), null);
  assert.equal(t.counters.dropped.unsupported, 2);
});

test('SNAT: ports run out (counted), idle entries expire, closing TCP expires sooner', () => {
  const t = new SnatTable(UPLINK, 30000, 30001);
  for (const sport of [1, 2]) {
    const p = tcp('100.64.1.1', '198.18.251.10', sport, 80);
    assert.ok(t.outbound(OWNER, p, 0, p.length, 0));
  }
  const third = tcp('100.64.1.1', '198.18.251.10', 3, 80);
  assert.equal(t.outbound(OWNER, third, 0, third.length, 0), null);
  assert.equal(t.counters.dropped.full, 1);
  const fin = tcp('100.64.1.1', '198.18.251.10', 1, 80, 0x11);
  t.outbound(OWNER, fin, 0, fin.length, 0);
  t.expire(SNAT_CLOSING_MS);
  assert.equal(t.size, 1, 'the closed connection expired, the open one stays');
  const u = fillChecksum(
    craftPacket({ src: '100.64.1.1', dst: '198.18.251.53', proto: 'udp', sport: 9, dport: 53, length: 40 }),
  );
  assert.ok(t.outbound(OWNER, u, 0, u.length, 0));
  t.expire(SNAT_UDP_MS);
  assert.equal(t.list().filter((e) => e.protocol === 17).length, 0);
  t.removeSession(OWNER.peerId);
  assert.equal(t.size, 0);
});

test('name cache: answers live for their TTL (at least the minimum), expired ones name records a while', () => {
  const c = new NameCache(3, 5);
  const a = addressKeyOf(Uint8Array.of(198, 18, 251, 10));
  assert.equal(a, addressKey(4, (198 << 24) | (18 << 16) | (251 << 8) | 10, 0, 0, 0));
  c.learn('allowed.example', a, 60, 0);
  assert.deepEqual(c.live(a, 59_999), ['allowed.example']);
  assert.equal(c.live(a, 60_000), null);
  assert.deepEqual(c.known(a, 60_000), ['allowed.example']);
  assert.equal(c.known(a, 60_000 + KEEP_EXPIRED_MS), null);
  c.learn('zero.example', a, 0, 0);
  assert.deepEqual(c.live(a, 4_999)?.sort(), ['allowed.example', 'zero.example']);
  assert.deepEqual(c.live(a, 5_000), ['allowed.example'], 'a TTL of 0 lives the minimum TTL');
  // The bound: the oldest address goes.
  for (const i of [1, 2, 3]) c.learn(`n${i}.example`, addressKey(4, i, 0, 0, 0), 60, i);
  assert.equal(c.size, 3);
  assert.equal(c.live(a, 10), null);
  assert.equal(c.counters.evicted, 1);
  c.sweep(61_000 + KEEP_EXPIRED_MS);
  assert.equal(c.size, 0);
});

test('FQDN names and patterns', () => {
  const cases: [string, string, boolean][] = [
    ['allowed.example', 'allowed.example', true],
    ['allowed.example', 'other.example', false],
    ['allowed.example', 'a.allowed.example', false],
    ['*.example', 'allowed.example', true],
    ['*.example', 'example', false],
    ['*.example', 'a.b.example', false],
    ['*.cdn.example.com', 'x-1.cdn.example.com', true],
    ['Allowed.Example.', 'allowed.example', true],
  ];
  for (const [rule, name, want] of cases) {
    const m = parseFqdn(rule);
    assert.ok(typeof m !== 'string', `${rule}: ${m}`);
    assert.equal(fqdnMatches(m, canonicalName(name)!), want, `${rule} vs ${name}`);
  }
  for (const bad of ['*', '*.', 'a.*.example', 'a..example', '-a.example', 'a b.example', 'x'.repeat(64)])
    assert.equal(typeof parseFqdn(bad), 'string', `'${bad}' must be refused`);
  const doc = policyDocumentSchema.parse({
    version: 1,
    tenant: 'acme',
    rules: [{ id: 'in', direction: 'ingress', workloads: { labels: {} }, peers: [{ fqdn: 'a.example' }] }],
  });
  assert.deepEqual(
    normalizeRules(doc).issues.map((i) => i.code),
    ['bad-fqdn'],
    'FQDN peers are for egress rules only',
  );
  assert.equal(
    policyDocumentSchema.safeParse({
      version: 1,
      tenant: 'acme',
      rules: [
        {
          id: 'x',
          direction: 'egress',
          workloads: { labels: {} },
          peers: [{ fqdn: 'a.example', cidr: '1.2.3.4/32' }],
        },
      ],
    }).success,
    false,
  );
});

/** RCODE of a decoded message (dns-packet sets it; its typings leave it out). */
function rcode(buf: Buffer): string {
  return (dnsPacket.decode(buf) as unknown as { rcode: string }).rcode;
}

const BOOK: NameBook = { addressesOf: () => undefined, nameAt: () => undefined };

test('the tenant DNS server forwards only names the caller allows, refuses the others; tg. stays its own', () => {
  const dns = new TenantDns('acme', parseHostAddress('100.64.1.2', 'dns'), BOOK);
  const ask = (name: string) => dnsPacket.encode({ type: 'query', id: 42, questions: [{ type: 'A', name }] });
  const allowOnly = (n: string) => n === 'allowed.example';
  assert.equal(dns.respond(ask('Allowed.Example.'), allowOnly), FORWARD_UPSTREAM);
  assert.deepEqual(dns.forwarded, { id: 42, name: 'allowed.example', type: 'A' });
  assert.equal(rcode(dns.respond(ask('other.example'), allowOnly)!), 'REFUSED');
  assert.equal(rcode(dns.respond(ask('allowed.example'), null)!), 'REFUSED', 'no egress: refused');
  let asked = 0;
  assert.equal(rcode(dns.respond(ask('nobody.acme.tg'), () => ++asked > 0)!), 'NXDOMAIN');
  assert.equal(asked, 0, 'names under tg. are never forwarded');
  assert.deepEqual([dns.counters.forwarded, dns.counters.refused], [1, 2]);
});

function pending(u: UpstreamDns, name = 'allowed.example', now = 0): number {
  const msg = u.forward(
    { tenant: 'acme', peerId: 7, header: Buffer.alloc(28), version: 4, id: 42, name, type: 'A' },
    now,
  );
  assert.ok(msg);
  const q = dnsPacket.decode(msg);
  assert.equal(q.questions?.[0].name, name);
  return q.id as number;
}

function answer(
  id: number,
  name: string,
  answers: dnsPacket.Answer[],
  extra: Partial<dnsPacket.Packet> = {},
): Buffer {
  return dnsPacket.encode({ type: 'response', id, questions: [{ type: 'A', name }], answers, ...extra });
}

test('upstream answers: matched to their query, addresses through CNAMEs, the asker gets its own id', () => {
  const u = new UpstreamDns();
  const id = pending(u);
  const a = u.answer(
    answer(id, 'allowed.example', [
      { type: 'CNAME', name: 'allowed.example', ttl: 30, data: 'web.cdn.example' },
      { type: 'A', name: 'web.cdn.example', ttl: 20, data: '198.18.251.10' },
      { type: 'A', name: 'unrelated.example', ttl: 20, data: '198.18.251.99' },
    ]),
    10,
  );
  assert.ok(a);
  assert.deepEqual(a.addresses, [{ bytes: Uint8Array.of(198, 18, 251, 10), ttl: 20 }]);
  const reply = dnsPacket.decode(a.reply);
  assert.equal(reply.id, 42);
  assert.deepEqual(
    (reply.answers ?? []).map((r) => r.type),
    ['CNAME', 'A'],
    'records of other names are left out',
  );
  assert.equal(u.size, 0);
  assert.equal(u.answer(answer(id, 'allowed.example', []), 11), null, 'a second answer to the same id');
  assert.equal(u.counters.malformed, 1);
});

test('upstream answers that are malformed, mismatched, huge or late are counted drops', () => {
  const u = new UpstreamDns();
  assert.equal(u.answer(Buffer.from('not a DNS message'), 0), null);
  const id = pending(u);
  assert.equal(u.answer(answer(id + 1, 'allowed.example', []), 0), null, 'unknown id');
  assert.equal(u.answer(answer(id, 'other.example', []), 0), null, 'another question');
  assert.equal(u.counters.malformed, 3);
  const many: dnsPacket.Answer[] = [];
  for (let i = 0; i < 100; i++)
    many.push({ type: 'A', name: 'allowed.example', ttl: 60, data: `198.18.253.${i}` });
  assert.equal(u.answer(answer(id, 'allowed.example', many), 0), null);
  assert.equal(u.answer(Buffer.alloc(MAX_UPSTREAM_ANSWER + 1), 0), null);
  assert.equal(u.counters.oversized, 2);
  const late = pending(u, 'allowed.example', 0);
  assert.equal(u.answer(answer(late, 'allowed.example', []), UPSTREAM_TIMEOUT_MS), null, 'too late');
  pending(u, 'x.example', 0);
  u.expire(UPSTREAM_TIMEOUT_MS);
  assert.equal(u.size, 0);
  assert.ok(u.counters.timeouts >= 1);
});

test('the firewall decides egress by the names the cache holds, and names the flow records', () => {
  const w = world();
  const egress = new Egress({ uplinkAddress: UPLINK });
  w.engine.setOutsideNames({ live: egress.live, known: egress.known });
  w.store.replace({
    version: 1,
    tenant: 'acme',
    rules: [
      {
        id: 'web-out',
        direction: 'egress',
        workloads: { labels: { app: 'web' } },
        peers: [{ fqdn: 'allowed.example' }],
        protocol: 'tcp',
        ports: [80],
      },
      {
        id: 'cdn-out',
        direction: 'egress',
        workloads: { labels: { app: 'web' } },
        peers: [{ fqdn: '*.cdn.example' }],
        protocol: 'tcp',
        ports: [443],
      },
    ],
  });
  const out = (dst: string, dport: number, sport = 40000) =>
    verdict(send(w, { from: 'web-1', to: 'outside', proto: 'tcp', flags: SYN, dst, sport, dport }, 'egress'));
  assert.equal(out('198.18.251.10', 80).allowed, false, 'no answer yet: denied');
  const cache = egress.cacheOf('acme');
  cache.learn('allowed.example', addressKeyOf(Uint8Array.of(198, 18, 251, 10)), 60, Date.now());
  cache.learn('img.cdn.example', addressKeyOf(Uint8Array.of(198, 18, 251, 30)), 60, Date.now());
  assert.deepEqual(out('198.18.251.10', 80, 40001), { allowed: true, reason: 'new', rule: 'acme/web-out' });
  assert.equal(out('198.18.251.10', 443, 40002).allowed, false, 'the rule names port 80 only');
  assert.deepEqual(out('198.18.251.30', 443, 40003), { allowed: true, reason: 'new', rule: 'acme/cdn-out' });
  assert.equal(out('198.18.251.20', 80, 40004).allowed, false, 'an address no allowed name has');
  // DNS forwarding decisions come from the same rules.
  const ref = { tenant: 'acme', workload: 'web-1' };
  assert.equal(w.engine.fqdnAllowed('acme', ref, 'allowed.example').allowed, true);
  assert.equal(w.engine.fqdnAllowed('acme', ref, 'x.cdn.example').allowed, true);
  assert.equal(w.engine.fqdnAllowed('acme', ref, 'other.example').allowed, false);
  assert.equal(
    w.engine.fqdnAllowed('acme', { tenant: 'acme', workload: 'db-1' }, 'allowed.example').allowed,
    false,
  );
  // Records: the allowed one names what it was allowed by; the denied one the name known.
  const now = w.clock.ms;
  const active = w.engine.snapshot({ tenant: 'acme' }, now);
  const named = active.filter((r) => r.dst === '198.18.251.10');
  assert.ok(named.some((r) => r.verdict === 'allow' && r.outsideName === 'allowed.example'));
  assert.ok(
    named.some((r) => r.verdict === 'deny' && r.dstPort === 443 && r.outsideName === 'allowed.example'),
  );
  assert.ok(active.some((r) => r.dst === '198.18.251.20' && r.outsideName === undefined));
});

/** One packet as engine.inbound() hands it over: at an odd offset, tagged with its session. */
function inbound(peer: number, p: Buffer): TunBatch {
  const buf = Buffer.alloc(2048);
  p.copy(buf, 33);
  return {
    buf,
    offsets: Uint32Array.of(33),
    lengths: Uint32Array.of(p.length),
    peerIds: Uint32Array.of(peer),
    count: 1,
  };
}

function udpQuery(src: string, dns: string, name: string): Buffer {
  const q = dnsPacket.encode({ type: 'query', id: 77, questions: [{ type: 'A', name }] });
  const p = craftPacket({ src, dst: dns, proto: 'udp', sport: 33333, dport: 53, length: 28 + q.length });
  p.writeUInt16BE(8 + q.length, 24);
  q.copy(p, 28);
  return p;
}

test('the forwarder: outside traffic is denied until the name resolves, then source-NATed both ways', () => {
  const w = world();
  w.store.replace({
    version: 1,
    tenant: 'acme',
    rules: [
      {
        id: 'web-out',
        direction: 'egress',
        workloads: { labels: { app: 'web' } },
        peers: [{ fqdn: 'allowed.example' }],
        protocol: 'tcp',
        ports: [80],
      },
    ],
  });
  const f = new Forwarder(4);
  f.attachEngine(w.engine);
  const egress = new Egress({ uplinkAddress: UPLINK });
  f.setEgress(egress);
  f.addTenant('acme');
  f.addLocalWorkload('acme', 'web-1', 1, parseHostAddress('100.64.1.1'));
  f.setTenantNetwork('acme', { dns: parseHostAddress('100.64.1.250'), services: [] });
  const now = Date.now();
  // Before any answer: denied and counted; nothing for the uplink.
  let r = f.forward(inbound(1, tcp('100.64.1.1', '198.18.251.10', 40000, 80)), now);
  assert.equal(r.uplink.count, 0);
  assert.equal(f.counters.dropped.outside, 1);
  assert.equal(egress.counters.denied, 1);
  // A name the policy does not name is refused at once; the allowed one goes upstream.
  r = f.forward(inbound(1, udpQuery('100.64.1.1', '100.64.1.250', 'other.example')), now);
  assert.equal(r.upstream.length, 0);
  assert.equal(r.extra.batch.count, 1, 'the REFUSED answer goes back on the session');
  r = f.forward(inbound(1, udpQuery('100.64.1.1', '100.64.1.250', 'allowed.example')), now);
  assert.equal(r.upstream.length, 1);
  const up = dnsPacket.decode(r.upstream[0]);
  const reply = f.upstreamAnswer(
    answer(up.id as number, 'allowed.example', [
      { type: 'A', name: 'allowed.example', ttl: 60, data: '198.18.251.10' },
    ]),
    now,
  );
  assert.ok(reply);
  assert.equal(reply.peerIds[0], 1);
  const pkt = reply.batch.buf.subarray(
    reply.batch.offsets[0],
    reply.batch.offsets[0] + reply.batch.lengths[0],
  );
  assert.equal(pkt.subarray(12, 16).join('.'), '100.64.1.250', 'the answer comes from the tenant DNS server');
  assert.equal(dnsPacket.decode(pkt.subarray(28)).id, 77, "the workload's own message id");
  assert.equal(egress.cacheOf('acme').size, 1);
  // Now the flow passes (the SYN retried on the same ports too), translated to the uplink address.
  r = f.forward(inbound(1, tcp('100.64.1.1', '198.18.251.10', 40000, 80)), now);
  assert.equal(r.uplink.count, 1);
  const out = r.uplink.buf.subarray(r.uplink.offsets[0], r.uplink.offsets[0] + r.uplink.lengths[0]);
  assert.equal(out.subarray(12, 16).join('.'), '198.18.252.11');
  assert.ok(checksumsValid(out));
  const natPort = out.readUInt16BE(20);
  // The reply from the uplink goes back to the workload's session, de-NATed.
  const back = tcp('198.18.251.10', '198.18.252.11', 80, natPort, 0x12);
  const rb = f.fromUplink(
    { buf: back, offsets: Uint32Array.of(0), lengths: Uint32Array.of(back.length), count: 1 },
    now,
  );
  assert.equal(rb.batch.count, 1);
  assert.equal(rb.peerIds[0], 1);
  const inb = rb.batch.buf.subarray(rb.batch.offsets[0], rb.batch.offsets[0] + rb.batch.lengths[0]);
  assert.equal(inb.subarray(16, 20).join('.'), '100.64.1.1');
  assert.equal(inb.readUInt16BE(22), 40000);
  // An unsolicited packet to the uplink address is dropped.
  const stray = tcp('198.18.251.10', '198.18.252.11', 80, natPort + 1, SYN);
  assert.equal(
    f.fromUplink(
      { buf: stray, offsets: Uint32Array.of(0), lengths: Uint32Array.of(stray.length), count: 1 },
      now,
    ).batch.count,
    0,
  );
  // The overlay range never leaves: an unknown tenant-pool address is no route.
  f.forward(inbound(1, tcp('100.64.1.1', '100.64.9.9', 40002, 80)), now);
  assert.equal(f.counters.dropped.noRoute, 1);
  // The workload leaves: its translations go with it.
  f.removeLocalWorkload('acme', 'web-1');
  assert.equal(egress.snat.size, 0);
});
