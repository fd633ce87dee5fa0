// Connection tracking: the TCP state machine (table-driven, then whole connections through
// the engine), UDP and ICMP pseudo-states, replies without reverse rules, timeouts under a
// fake clock, a full table and eviction, policy changes mid-connection, bad packets, and
// the hash table itself against a reference model.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ConntrackTable,
  hashKey,
  KEY_WORDS,
  W_D0,
  W_DPORT,
  W_META,
  W_S0,
  W_SPORT,
  W_STATE,
} from '../../src/policy/conntrack.js';
import { craftPacket } from '../../src/policy/craft.js';
import {
  PARSE_FRAGMENT,
  PARSE_MALFORMED,
  PARSE_OK,
  ParsedPacket,
  parsePacket,
  TCP_ACK,
  TCP_FIN,
  TCP_RST,
  TCP_SYN,
} from '../../src/policy/packet.js';
import {
  ST_CLOSE_WAIT,
  ST_CLOSED,
  ST_ESTABLISHED,
  ST_FIN_WAIT,
  ST_LAST_ACK,
  ST_SYN_RECV,
  ST_SYN_SENT,
  ST_TIME_WAIT,
  STATE_NAMES,
  timeoutsSchema,
  timeoutTable,
} from '../../src/policy/states.js';
import {
  EV_ACK,
  EV_FIN,
  EV_NONE,
  EV_RST,
  EV_SYN,
  EV_SYNACK,
  TCP_INVALID,
  TCP_REOPEN,
  tcpEvent,
  tcpFirst,
  tcpNext,
} from '../../src/policy/tcp.js';
import {
  ACK,
  allowPair,
  FINACK,
  type Pkt,
  packet,
  RST,
  RSTACK,
  SYN,
  SYNACK,
  send,
  verdict,
  type World,
  world,
} from '../helpers/policy-harness.js';

// ---------------------------------------------------------------------------------------
// The state machine as a table.

test('events from TCP flags', () => {
  const rows: [number, number][] = [
    [TCP_SYN, EV_SYN],
    [TCP_SYN | TCP_ACK, EV_SYNACK],
    [TCP_FIN, EV_FIN],
    [TCP_FIN | TCP_ACK, EV_FIN],
    [TCP_ACK, EV_ACK],
    [TCP_ACK | 0x08, EV_ACK], // PSH
    [TCP_RST, EV_RST],
    [TCP_RST | TCP_ACK, EV_RST],
    [TCP_SYN | TCP_FIN, EV_NONE],
    [0, EV_NONE],
  ];
  for (const [flags, ev] of rows) assert.equal(tcpEvent(flags), ev, `flags ${flags}`);
});

// [state, closer is the reply side, event, packet from reply side, next]
const O = 0;
const R = 1;
const TRANSITIONS: [number, number, number, number, number][] = [
  [ST_SYN_SENT, 0, EV_SYN, O, ST_SYN_SENT], // retransmitted SYN
  [ST_SYN_SENT, 0, EV_SYNACK, R, ST_SYN_RECV],
  [ST_SYN_SENT, 0, EV_SYN, R, ST_SYN_RECV], // simultaneous open
  [ST_SYN_SENT, 0, EV_SYNACK, O, TCP_INVALID],
  [ST_SYN_SENT, 0, EV_ACK, O, TCP_INVALID],
  [ST_SYN_SENT, 0, EV_RST, R, ST_CLOSED], // refused
  [ST_SYN_RECV, 0, EV_ACK, O, ST_ESTABLISHED],
  [ST_SYN_RECV, 0, EV_SYNACK, R, ST_SYN_RECV], // retransmitted SYN/ACK
  [ST_SYN_RECV, 0, EV_FIN, O, ST_FIN_WAIT],
  [ST_ESTABLISHED, 0, EV_ACK, O, ST_ESTABLISHED],
  [ST_ESTABLISHED, 0, EV_ACK, R, ST_ESTABLISHED],
  [ST_ESTABLISHED, 0, EV_SYN, O, TCP_INVALID],
  [ST_ESTABLISHED, 0, EV_SYN, R, TCP_INVALID],
  [ST_ESTABLISHED, 0, EV_FIN, O, ST_FIN_WAIT],
  [ST_ESTABLISHED, 0, EV_FIN, R, ST_FIN_WAIT],
  [ST_ESTABLISHED, 0, EV_RST, O, ST_CLOSED],
  [ST_ESTABLISHED, 0, EV_NONE, O, TCP_INVALID],
  // FIN_WAIT: the original side closed first.
  [ST_FIN_WAIT, 0, EV_ACK, R, ST_CLOSE_WAIT],
  [ST_FIN_WAIT, 0, EV_FIN, R, ST_LAST_ACK],
  [ST_FIN_WAIT, 0, EV_FIN, O, ST_FIN_WAIT], // retransmitted FIN
  [ST_FIN_WAIT, 0, EV_ACK, O, ST_FIN_WAIT],
  // ... the reply side closed first: sides swap.
  [ST_FIN_WAIT, 1, EV_ACK, O, ST_CLOSE_WAIT],
  [ST_FIN_WAIT, 1, EV_FIN, O, ST_LAST_ACK],
  [ST_FIN_WAIT, 1, EV_ACK, R, ST_FIN_WAIT],
  [ST_CLOSE_WAIT, 0, EV_ACK, R, ST_CLOSE_WAIT], // half-closed: the other side still sends
  [ST_CLOSE_WAIT, 0, EV_FIN, R, ST_LAST_ACK],
  [ST_CLOSE_WAIT, 0, EV_FIN, O, ST_CLOSE_WAIT],
  [ST_LAST_ACK, 0, EV_ACK, O, ST_TIME_WAIT], // first closer acks the last FIN
  [ST_LAST_ACK, 0, EV_ACK, R, ST_LAST_ACK],
  [ST_LAST_ACK, 1, EV_ACK, R, ST_TIME_WAIT],
  [ST_LAST_ACK, 0, EV_RST, R, ST_CLOSED],
  [ST_TIME_WAIT, 0, EV_ACK, O, ST_TIME_WAIT],
  [ST_TIME_WAIT, 0, EV_SYN, O, TCP_REOPEN],
  [ST_TIME_WAIT, 0, EV_SYN, R, TCP_INVALID],
  [ST_CLOSED, 0, EV_SYN, O, TCP_REOPEN],
  [ST_CLOSED, 0, EV_ACK, R, ST_CLOSED],
  [ST_CLOSED, 0, EV_SYNACK, R, TCP_INVALID],
];

for (const [state, closer, ev, side, next] of TRANSITIONS)
  test(`tcp: ${STATE_NAMES[state]} + event ${ev} from ${side === O ? 'original' : 'reply'} side (closer ${closer}) -> ${next < 0 ? next : STATE_NAMES[next]}`, () => {
    assert.equal(tcpNext(state, closer, ev, side), next);
  });

test('tcp: first packet of a connection', () => {
  assert.equal(tcpFirst(EV_SYN, false), ST_SYN_SENT);
  assert.equal(tcpFirst(EV_ACK, false), TCP_INVALID);
  assert.equal(tcpFirst(EV_ACK, true), ST_ESTABLISHED);
  assert.equal(tcpFirst(EV_FIN, true), ST_FIN_WAIT);
  assert.equal(tcpFirst(EV_SYNACK, true), TCP_INVALID);
  assert.equal(tcpFirst(EV_RST, true), TCP_INVALID);
  assert.equal(tcpFirst(EV_NONE, true), TCP_INVALID);
});

// ---------------------------------------------------------------------------------------
// Whole connections through the engine.

const POLICY = {
  version: 1,
  tenant: 'acme',
  rules: [
    ...allowPair('web-db', { app: 'web' }, { app: 'db' }, 'tcp', [5432]),
    ...allowPair('web-dns', { app: 'web' }, { app: 'db' }, 'udp', [53]),
    ...allowPair('ping', {}, {}, 'icmp'),
    {
      id: 'api-svc',
      direction: 'egress',
      workloads: { labels: { app: 'api' } },
      peers: [{ tenant: 'blue', labels: { app: 'svc' } }],
      protocol: 'udp',
      ports: [4000],
    },
  ],
};
const BLUE = {
  version: 1,
  tenant: 'blue',
  rules: [
    {
      id: 'svc-from-api',
      direction: 'ingress',
      workloads: { labels: { app: 'svc' } },
      peers: [{ tenant: 'acme', labels: { app: 'api' } }],
      protocol: 'udp',
      ports: [4000],
    },
  ],
};

function ready(opts = {}): World {
  const w = world(opts);
  w.store.replace(POLICY);
  w.store.replace(BLUE);
  return w;
}

const c2s = (flags: number, extra: Partial<Pkt> = {}): Pkt => ({
  from: 'web-1',
  to: 'db-1',
  proto: 'tcp',
  sport: 40000,
  dport: 5432,
  flags,
  ...extra,
});
const s2c = (flags: number, extra: Partial<Pkt> = {}): Pkt => ({
  from: 'db-1',
  to: 'web-1',
  proto: 'tcp',
  sport: 5432,
  dport: 40000,
  flags,
  ...extra,
});

function stateOf(w: World, entry: number): string {
  return w.engine.describe('acme', entry)?.state ?? '(none)';
}

test('tcp: handshake, data, orderly close, TIME_WAIT expiry, one record', () => {
  const w = ready();
  const steps: [Pkt, string, string][] = [
    [c2s(SYN), 'new', 'SYN_SENT'],
    [s2c(SYNACK), 'reply', 'SYN_RECV'],
    [c2s(ACK), 'established', 'ESTABLISHED'],
    [c2s(ACK, { length: 1000 }), 'established', 'ESTABLISHED'],
    [s2c(ACK, { length: 1400 }), 'reply', 'ESTABLISHED'],
    [c2s(FINACK), 'established', 'FIN_WAIT'],
    [s2c(ACK), 'reply', 'CLOSE_WAIT'],
    [s2c(ACK, { length: 500 }), 'reply', 'CLOSE_WAIT'],
    [s2c(FINACK), 'reply', 'LAST_ACK'],
    [c2s(ACK), 'established', 'TIME_WAIT'],
  ];
  let entry = -1;
  for (const [p, reason, state] of steps) {
    w.clock.advance(1);
    const r = send(w, p);
    assert.deepEqual(verdict(r), { allowed: true, reason, rule: 'acme/web-db-in' }, `${reason} -> ${state}`);
    if (entry < 0) entry = r.entry;
    assert.equal(r.entry, entry);
    assert.equal(stateOf(w, entry), state);
  }
  // TIME_WAIT lasts tcpTimeWait (120 s) after the last packet. Meanwhile the connection is
  // over a minute old: one interim record (interimSeconds 60).
  w.clock.advance(119);
  w.engine.tick(w.clock.ms);
  const interim = w.log.query();
  assert.deepEqual(
    interim.map((r) => [r.kind, r.state, r.packetsToDst, r.reason]),
    [['interim', 'TIME_WAIT', 5, '']],
  );
  w.engine.tick(w.clock.ms);
  assert.equal(w.log.query().length, 1);
  w.clock.advance(2);
  w.engine.tick(w.clock.ms);
  const [rec] = w.log.query();
  assert.equal(rec.kind, 'end');
  assert.equal(rec.reason, 'closed');
  assert.equal(rec.state, 'TIME_WAIT');
  assert.equal(rec.verdict, 'allow');
  assert.equal(rec.rule, 'acme/web-db-in');
  assert.equal(rec.egressRule, 'acme/web-db-out');
  assert.equal(rec.ingressRule, 'acme/web-db-in');
  assert.deepEqual(
    [rec.packetsToDst, rec.bytesToDst, rec.packetsToSrc, rec.bytesToSrc],
    [5, 40 + 40 + 1000 + 40 + 40, 5, 40 + 1400 + 40 + 500 + 40],
  );
  assert.equal(rec.endMs - rec.startMs, 9000);
  assert.equal(w.engine.zone('acme')?.allowed.size, 0);
});

test('tcp: the server closes first', () => {
  const w = ready();
  for (const p of [c2s(SYN), s2c(SYNACK), c2s(ACK)]) send(w, p);
  const e = send(w, s2c(FINACK)).entry;
  assert.equal(stateOf(w, e), 'FIN_WAIT');
  send(w, c2s(ACK));
  assert.equal(stateOf(w, e), 'CLOSE_WAIT');
  send(w, c2s(FINACK));
  assert.equal(stateOf(w, e), 'LAST_ACK');
  send(w, s2c(ACK));
  assert.equal(stateOf(w, e), 'TIME_WAIT');
});

test('tcp: RST closes; the entry lingers tcpClose seconds, then the record says closed', () => {
  const w = ready();
  for (const p of [c2s(SYN), s2c(SYNACK), c2s(ACK)]) send(w, p);
  const r = send(w, s2c(RSTACK));
  assert.equal(r.reason, 'reply');
  assert.equal(stateOf(w, r.entry), 'CLOSED');
  assert.equal(send(w, c2s(RST)).allowed, true);
  w.clock.advance(11);
  w.engine.tick(w.clock.ms);
  const [rec] = w.log.query();
  assert.equal(rec.reason, 'closed');
  assert.equal(rec.state, 'CLOSED');
});

test('tcp: RST to a SYN (connection refused)', () => {
  const w = ready();
  const e = send(w, c2s(SYN)).entry;
  assert.equal(send(w, s2c(RSTACK)).reason, 'reply');
  assert.equal(stateOf(w, e), 'CLOSED');
});

test('tcp: a new SYN after TIME_WAIT starts a new flow and closes the old record', () => {
  const w = ready();
  for (const p of [c2s(SYN), s2c(SYNACK), c2s(ACK), c2s(FINACK), s2c(FINACK), c2s(ACK)]) send(w, p);
  w.clock.advance(5);
  const r = send(w, c2s(SYN));
  assert.equal(r.reason, 'new');
  assert.equal(stateOf(w, r.entry), 'SYN_SENT');
  const [rec] = w.log.query();
  assert.equal(rec.reason, 'closed');
  assert.equal(rec.state, 'TIME_WAIT');
});

test('tcp: invalid packets are dropped and counted, the entry unchanged', () => {
  const w = ready();
  assert.deepEqual(verdict(send(w, s2c(SYNACK, { sport: 5432, dport: 41000 }))), {
    allowed: false,
    reason: 'invalid',
    rule: '',
  });
  const e = send(w, c2s(SYN)).entry;
  const bad = verdict(send(w, c2s(ACK)));
  assert.deepEqual(bad, { allowed: false, reason: 'invalid', rule: 'acme/web-db-in' });
  assert.equal(stateOf(w, e), 'SYN_SENT');
  send(w, s2c(SYNACK));
  send(w, c2s(ACK));
  assert.equal(send(w, s2c(SYN)).reason, 'invalid');
  assert.equal(send(w, c2s(TCP_SYN | TCP_FIN)).reason, 'invalid');
  assert.equal(stateOf(w, e), 'ESTABLISHED');
  assert.equal(w.engine.zone('acme')?.counters.invalid, 4);
  // An RST for no connection opens nothing.
  assert.equal(send(w, c2s(RST, { sport: 42000 })).reason, 'invalid');
});

test('tcp: a connection under way is picked up (loose), judged by policy in its direction', () => {
  const w = ready();
  const r = send(w, c2s(ACK, { sport: 43000 }));
  assert.equal(r.reason, 'new');
  assert.equal(stateOf(w, r.entry), 'ESTABLISHED');
  assert.equal(send(w, s2c(ACK, { dport: 43000 })).reason, 'reply');
  // The same mid-stream packet seen first from the server side is a db -> web connection: denied.
  assert.deepEqual(verdict(send(w, s2c(ACK, { dport: 44000 }))), {
    allowed: false,
    reason: 'policy',
    rule: 'acme/default-deny',
  });
  const strict = ready({ tcpLoose: false });
  assert.equal(send(strict, c2s(ACK, { sport: 43000 })).reason, 'invalid');
});

test('replies of allowed flows pass without reverse rules; new flows the other way do not', () => {
  const w = ready();
  const dns = { from: 'web-1', to: 'db-1', proto: 'udp' as const, sport: 5353, dport: 53 };
  assert.equal(send(w, dns).reason, 'new');
  assert.deepEqual(verdict(send(w, { from: 'db-1', to: 'web-1', proto: 'udp', sport: 53, dport: 5353 })), {
    allowed: true,
    reason: 'reply',
    rule: 'acme/web-dns-in',
  });
  assert.equal(send(w, { from: 'db-1', to: 'web-1', proto: 'udp', sport: 53, dport: 5354 }).allowed, false);
  assert.equal(send(w, { from: 'db-1', to: 'web-1', proto: 'udp', sport: 54, dport: 5353 }).allowed, false);
});

test('cross-tenant: the reply of a granted flow passes, nothing opens the other way', () => {
  const w = ready();
  const out = { from: 'api-1', to: 'svc-1', proto: 'udp' as const, sport: 7000, dport: 4000 };
  assert.deepEqual(verdict(send(w, out)), { allowed: true, reason: 'new', rule: 'blue/svc-from-api' });
  const back = { from: 'svc-1', to: 'api-1', proto: 'udp' as const, sport: 4000, dport: 7000 };
  assert.deepEqual(verdict(send(w, back)), { allowed: true, reason: 'reply', rule: 'blue/svc-from-api' });
  assert.equal(send(w, { ...back, sport: 4001 }).allowed, false);
  // The reply also passes when the check is made in blue's name (the zone is the initiator's).
  const buf = packet(back);
  const r = w.engine.check(
    'blue',
    'svc-1',
    { tenant: 'acme', workload: 'api-1' },
    buf,
    0,
    buf.length,
    w.clock.ms,
    'both',
  );
  assert.equal(r.reason, 'reply');
});

test('udp: unanswered flows expire after udpNew, answered ones after udpEstablished (fake clock)', () => {
  const w = ready();
  const q = { from: 'web-1', to: 'db-1', proto: 'udp' as const, sport: 6000, dport: 53 };
  const a = { from: 'db-1', to: 'web-1', proto: 'udp' as const, sport: 53, dport: 6000 };
  const e = send(w, q).entry;
  assert.equal(stateOf(w, e), 'UDP_NEW');
  w.clock.advance(29);
  assert.equal(send(w, q).reason, 'established');
  w.clock.advance(31);
  // 31 s idle > 30 s: the old flow is over, this packet starts a new one.
  assert.equal(send(w, q).reason, 'new');
  assert.equal(w.log.query()[0].reason, 'expired');
  assert.equal(send(w, a).reason, 'reply');
  assert.equal(stateOf(w, e), 'UDP_ESTABLISHED');
  w.clock.advance(119);
  assert.equal(send(w, a).reason, 'reply');
  w.clock.advance(121);
  w.engine.tick(w.clock.ms);
  assert.equal(w.log.query()[0].state, 'UDP_ESTABLISHED');
  assert.equal(w.log.query()[0].reason, 'expired');
  assert.equal(w.engine.zone('acme')?.allowed.size, 0);
  // Late reply of an expired flow: a new db -> web flow, which the policy denies.
  assert.equal(send(w, a).allowed, false);
});

test('timeouts are configuration: validated, unknown keys refused', () => {
  const w = ready({ timeouts: { udpNew: 5 } });
  send(w, { from: 'web-1', to: 'db-1', proto: 'udp', sport: 6000, dport: 53 });
  w.clock.advance(6);
  w.engine.tick(w.clock.ms);
  assert.equal(w.log.query()[0]?.reason, 'expired');
  assert.throws(() => ready({ timeouts: { udpNew: -1 } }));
  assert.throws(() => ready({ timeouts: { tcpForever: 1 } as object }));
  assert.throws(() => ready({ maxFlowsPerZone: 0 }));
  const t = timeoutTable(timeoutsSchema.parse({}));
  assert.equal(t[ST_ESTABLISHED], 432_000_000);
  assert.equal(t[ST_TIME_WAIT], 120_000);
});

test('icmp: echo replies match their request by id; a request the other way is its own flow', () => {
  const w = ready();
  const req = { from: 'web-1', to: 'db-1', proto: 'icmp' as const, icmpType: 8, icmpId: 77 };
  const rep = { from: 'db-1', to: 'web-1', proto: 'icmp' as const, icmpType: 0, icmpId: 77 };
  const e = send(w, req).entry;
  assert.equal(stateOf(w, e), 'ICMP_NEW');
  assert.deepEqual(verdict(send(w, rep)), { allowed: true, reason: 'reply', rule: 'acme/ping-in' });
  assert.equal(stateOf(w, e), 'ICMP_REPLIED');
  assert.equal(send(w, { ...rep, icmpId: 78 }).reason, 'invalid');
  const back = send(w, { from: 'db-1', to: 'web-1', proto: 'icmp', icmpType: 8, icmpId: 77 });
  assert.equal(back.reason, 'new');
  assert.notEqual(back.entry, e);
  // ICMPv6 echo (types 128/129).
  const r6 = send(w, { ...req, icmpType: 128, v6: true });
  assert.equal(r6.reason, 'new');
  assert.equal(send(w, { ...rep, icmpType: 129, v6: true }).reason, 'reply');
  const recs = w.engine.snapshot({ tenant: 'acme' }, w.clock.ms);
  assert.ok(recs.some((r) => r.protocol === 'icmpv6' && r.icmpId === 77 && r.packetsToSrc === 1));
});

test('icmp errors about a tracked flow pass as related; about nothing, they are invalid', () => {
  const w = ready();
  const q = { from: 'web-1', to: 'db-1', proto: 'udp' as const, sport: 6100, dport: 53 };
  send(w, q);
  const inner = packet(q);
  const unreachable = { from: 'db-1', to: 'web-1', proto: 'icmp' as const, icmpType: 3, icmpCode: 3, inner };
  assert.deepEqual(verdict(send(w, unreachable)), {
    allowed: true,
    reason: 'related',
    rule: 'acme/web-dns-in',
  });
  const stray = { ...unreachable, inner: packet({ ...q, sport: 6101 }) };
  assert.equal(send(w, stray).reason, 'invalid');
  assert.equal(w.engine.zone('acme')?.counters.related, 1);
  // ICMPv6 packet too big about an IPv6 TCP connection.
  const c6 = c2s(SYN, { v6: true, sport: 45000 });
  send(w, c6);
  const ptb = { from: 'db-1', to: 'web-1', proto: 'icmp' as const, icmpType: 2, inner: packet(c6), v6: true };
  assert.equal(send(w, ptb).reason, 'related');
});

test('table full: the entry closest to its timeout goes first (unanswered before answered), counted', () => {
  const w = ready({ maxFlowsPerZone: 4, initialFlowsPerZone: 2 });
  const q = (sport: number) => ({ from: 'web-1', to: 'db-1', proto: 'udp' as const, sport, dport: 53 });
  const a = (dport: number) => ({ from: 'db-1', to: 'web-1', proto: 'udp' as const, sport: 53, dport });
  for (const port of [1, 2, 3, 4]) {
    send(w, q(port));
    w.clock.advance(1);
  }
  for (const port of [1, 2, 4]) send(w, a(port));
  const zone = w.engine.zone('acme');
  assert.ok(zone);
  assert.equal(zone.allowed.size, 4);
  w.clock.advance(1);
  assert.equal(send(w, q(5)).reason, 'new');
  assert.equal(zone.allowed.size, 4);
  assert.equal(zone.counters.evicted, 1);
  let [rec] = w.log.query();
  assert.deepEqual([rec.reason, rec.srcPort, rec.state], ['evicted', 3, 'UDP_NEW']);
  // Reply to 5: all answered now; the one idle longest goes (1: answered at the same time as 2 and 4, but
  // created first... all answered at t=4; 5 answered at t=5): ties go to the first in the eviction scan.
  send(w, a(5));
  w.clock.advance(1);
  send(w, q(2));
  send(w, q(4));
  send(w, q(5));
  w.clock.advance(1);
  send(w, q(6));
  [rec] = w.log.query();
  assert.deepEqual([rec.reason, rec.srcPort], ['evicted', 1]);
  assert.equal(zone.counters.evicted, 2);
});

test('denied flows: one record per flow with its packet count, in a bounded table of their own', () => {
  const w = ready({ maxDeniedPerZone: 2 });
  const bad = (sport: number) => ({
    from: 'db-1',
    to: 'web-1',
    proto: 'tcp' as const,
    sport,
    dport: 22,
    flags: SYN,
  });
  for (let i = 0; i < 5; i++) assert.equal(send(w, bad(1000)).rule, 'acme/default-deny');
  send(w, bad(1001));
  const zone = w.engine.zone('acme');
  assert.equal(zone?.denied.size, 2);
  assert.equal(zone?.allowed.size, 0);
  assert.equal(zone?.counters.flowsDenied, 2);
  assert.equal(zone?.counters.packetsDenied, 6);
  send(w, bad(1002));
  assert.equal(zone?.counters.deniedEvicted, 1);
  w.clock.advance(31);
  w.engine.tick(w.clock.ms);
  const recs = w.log.query({ verdict: 'deny' });
  assert.equal(recs.length, 3);
  const first = recs.find((r) => r.srcPort === 1000);
  assert.equal(first?.packetsToDst, 5);
  assert.equal(first?.state, 'DENIED');
  assert.equal(first?.rule, 'acme/default-deny');
});

test('policy change mid-connection: re-evaluated on the next packet, revoked when denied now', () => {
  const w = ready();
  for (const p of [c2s(SYN), s2c(SYNACK), c2s(ACK)]) send(w, p);
  // A new policy that still allows it under another rule: the connection goes on, with the new rule.
  w.store.replace({
    ...POLICY,
    rules: [
      ...allowPair('web-db-v2', { app: 'web' }, { app: 'db' }, 'tcp', ['5000-6000']),
      ...POLICY.rules.slice(2),
    ],
  });
  assert.deepEqual(verdict(send(w, c2s(ACK))), {
    allowed: true,
    reason: 'established',
    rule: 'acme/web-db-v2-in',
  });
  // A policy without it: the next packet, either way, is refused and the flow ends.
  w.store.replace({ ...POLICY, rules: POLICY.rules.slice(2) });
  assert.deepEqual(verdict(send(w, s2c(ACK))), {
    allowed: false,
    reason: 'revoked',
    rule: 'acme/web-db-v2-in',
  });
  const [rec] = w.log.query();
  assert.equal(rec.reason, 'revoked');
  assert.equal(rec.verdict, 'allow');
  assert.equal(w.engine.zone('acme')?.counters.revoked, 1);
  assert.deepEqual(verdict(send(w, c2s(ACK))), {
    allowed: false,
    reason: 'policy',
    rule: 'acme/default-deny',
  });
});

test('a label change of a workload re-evaluates its connections', () => {
  const w = ready();
  for (const p of [c2s(SYN), s2c(SYNACK), c2s(ACK)]) send(w, p);
  w.directory.upsert('acme', 'web-1', { app: 'batch' });
  assert.equal(send(w, c2s(ACK)).reason, 'revoked');
  w.directory.upsert('acme', 'web-1', { app: 'web' });
  assert.equal(send(w, c2s(SYN, { sport: 40001 })).reason, 'new');
  // A removed workload's connections end; its records still name it.
  w.directory.remove('acme', 'db-1');
  const buf = packet(c2s(ACK, { sport: 40001 }));
  const r = w.engine.check(
    'acme',
    'web-1',
    { tenant: 'acme', workload: 'db-1' },
    buf,
    0,
    buf.length,
    w.clock.ms,
    'both',
  );
  assert.equal(r.reason, 'unknown-workload');
  w.engine.flush();
  assert.ok(w.log.query().some((x) => x.dstWorkload === 'db-1'));
});

/** The first 30 bytes of a TCP packet, with the IPv4 total length saying 30. */
function shortTcp(p: Buffer): Buffer {
  const b = Buffer.from(p.subarray(0, 30));
  b.writeUInt16BE(30, 2);
  return b;
}

test('bad packets: malformed and fragments are dropped and counted, never thrown', () => {
  const w = ready();
  const good = packet(c2s(SYN));
  const cases: [string, Buffer, number, number, string][] = [
    ['empty', Buffer.alloc(0), 0, 0, 'malformed'],
    ['version 5', Buffer.from([0x50, ...new Array(39).fill(0)]), 0, 40, 'malformed'],
    ['short IPv4', good.subarray(0, 19), 0, 19, 'malformed'],
    ['IHL too small', Buffer.from(good).fill(0x44, 0, 1), 0, 40, 'malformed'],
    ['total length beyond the packet', good, 0, 30, 'malformed'],
    ['TCP header cut short', shortTcp(good), 0, 30, 'malformed'],
    ['length past the buffer', good, 10, 40, 'malformed'],
    ['negative offset', good, -1, 40, 'malformed'],
    [
      'later fragment',
      craftPacket({
        src: '100.64.1.1',
        dst: '100.64.1.4',
        proto: 'udp',
        sport: 1,
        dport: 53,
        fragmentOffset: 185,
      }),
      0,
      28,
      'fragment',
    ],
  ];
  for (const [name, buf, off, len, reason] of cases) {
    const r = w.engine.check('acme', 'web-1', 'db-1', buf, off, len, w.clock.ms, 'both');
    assert.deepEqual([r.allowed, r.reason], [false, reason], name);
  }
  assert.equal(w.engine.drops.malformed, 8);
  assert.equal(w.engine.drops.fragment, 1);
});

test('parser: IPv6 extension headers, fragments, ICMP in the wrong family', () => {
  const out = new ParsedPacket();
  const tcp6 = packet(c2s(SYN, { v6: true }));
  // Insert hop-by-hop (0) and destination options (60) headers, 8 bytes each.
  const ext = Buffer.alloc(tcp6.length + 16);
  tcp6.copy(ext, 0, 0, 40);
  ext[6] = 0;
  ext.writeUInt16BE(tcp6.length - 40 + 16, 4);
  ext[40] = 60;
  ext[48] = 6;
  tcp6.copy(ext, 56, 40);
  assert.equal(parsePacket(ext, 0, ext.length, out), PARSE_OK);
  assert.deepEqual([out.proto, out.dport, out.tcpFlags, out.family], [6, 5432, TCP_SYN, 6]);
  // A first fragment carries the header; a later one does not.
  const frag = Buffer.alloc(tcp6.length + 8);
  tcp6.copy(frag, 0, 0, 40);
  frag.writeUInt16BE(tcp6.length - 40 + 8, 4);
  frag[6] = 44;
  frag[40] = 6; // next header after the fragment header: TCP
  frag[43] = 1; // offset 0, more fragments
  tcp6.copy(frag, 48, 40);
  assert.equal(parsePacket(frag, 0, frag.length, out), PARSE_OK);
  assert.equal(out.dport, 5432);
  frag.writeUInt16BE((100 << 3) | 1, 42); // offset 800 bytes
  assert.equal(parsePacket(frag, 0, frag.length, out), PARSE_FRAGMENT);
  // Ten extension headers: too many.
  const many = Buffer.alloc(40 + 80 + 20);
  tcp6.copy(many, 0, 0, 40);
  many.writeUInt16BE(100, 4);
  many[6] = 60;
  for (let i = 0; i < 10; i++) many[40 + 8 * i] = i === 9 ? 6 : 60;
  assert.equal(parsePacket(many, 0, many.length, out), PARSE_MALFORMED);
  // ICMPv4 protocol number inside IPv6.
  const wrong = Buffer.from(tcp6);
  wrong[6] = 1;
  assert.equal(parsePacket(wrong, 0, wrong.length, out), PARSE_MALFORMED);
  // At an offset inside a bigger buffer, with the key words filled in place.
  const big = Buffer.alloc(2000);
  const p = packet(c2s(SYN));
  p.copy(big, 777);
  assert.equal(parsePacket(big, 777, p.length, out), PARSE_OK);
  assert.deepEqual(
    [out.words[W_META], out.words[W_S0], out.words[W_D0], out.words[W_SPORT], out.words[W_DPORT]],
    [6 | (4 << 8), 0x64400101, 0x64400104, 40000, 5432],
  );
});

// ---------------------------------------------------------------------------------------
// The hash table against a Map.

test('conntrack table: insert, find both ways, remove with backward shift, growth (vs a Map)', () => {
  const t = new ConntrackTable({
    maxEntries: 5000,
    initialEntries: 16,
    timeouts: new Float64Array(16).fill(1000),
  });
  const model = new Map<string, number>();
  const live = new Set<number>();
  const key = new Uint32Array(KEY_WORDS);
  const mirror = new Uint32Array(KEY_WORDS);
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const setKey = (k: number) => {
    key.fill(0);
    key[W_META] = 17 | (4 << 8);
    key[W_S0] = 0x64400000 + (k % 97);
    key[W_D0] = 0x64400100 + (k % 13);
    key[W_SPORT] = k;
    key[W_DPORT] = 53;
    mirror.set(key);
    mirror[W_S0] = key[W_D0];
    mirror[W_D0] = key[W_S0];
    mirror[W_SPORT] = key[W_DPORT];
    mirror[W_DPORT] = key[W_SPORT];
  };
  for (let step = 0; step < 40_000; step++) {
    const k = 1 + rnd(6000);
    setKey(k);
    // A poor hash (few distinct values) makes long probe chains on purpose.
    const h = hashKey(key, 7) & 0x3f;
    const f = t.find(h, key, false);
    const have = model.get(String(k));
    if (have === undefined) {
      assert.equal(f, -1);
      if (t.size < 5000 && rnd(3) !== 0) {
        const e = t.insert(h, key, 0);
        assert.ok(e >= 0 && e < t.capacity && !live.has(e), `entry ${e} handed out twice`);
        t.u32[e * 32 + W_STATE] = 9;
        model.set(String(k), e);
        live.add(e);
      }
    } else {
      assert.equal(f, have * 2);
      assert.equal(t.find(h, mirror, false), have * 2 + 1);
      assert.equal(t.find(h, mirror, true), -1);
      if (rnd(2) === 0) {
        t.remove(have);
        model.delete(String(k));
        live.delete(have);
      }
    }
    assert.equal(t.size, model.size);
  }
  assert.ok(t.capacity > 16);
});

test('conntrack table: full means -1 until something is removed; victim is the first to expire', () => {
  const timeouts = new Float64Array(16);
  timeouts[9] = 30_000;
  timeouts[10] = 120_000;
  const t = new ConntrackTable({ maxEntries: 3, timeouts });
  const key = new Uint32Array(KEY_WORDS);
  const put = (port: number, state: number, now: number) => {
    key[W_SPORT] = port;
    const e = t.insert(port, key, now);
    if (e >= 0) t.u32[e * 32 + W_STATE] = state;
    return e;
  };
  const a = put(1, 10, 0); // answered at 0: expires at 120 s
  const b = put(2, 9, 50_000); // unanswered at 50 s: expires at 80 s
  put(3, 10, 10_000); // expires at 130 s
  assert.equal(put(4, 9, 60_000), -1);
  assert.equal(t.victim(), b);
  t.remove(b);
  assert.equal(t.victim(), a);
  assert.ok(put(4, 9, 60_000) >= 0);
  assert.throws(() => new ConntrackTable({ maxEntries: 0, timeouts }), RangeError);
});

test('conntrack table: a new entry goes to its home when free; the free stack never hands out one twice, also across growth', () => {
  const t = new ConntrackTable({
    maxEntries: 8192,
    initialEntries: 1024,
    timeouts: new Float64Array(16).fill(1000),
  });
  const key = new Uint32Array(KEY_WORDS);
  key[W_META] = 6 | (4 << 8);
  key[W_S0] = 0x64400001;
  key[W_D0] = 0x64400002;
  const byPort = new Map<number, number>();
  const hashes = new Map<number, number>();
  let atHome = 0;
  const put = (port: number) => {
    key[W_SPORT] = port;
    key[W_DPORT] = 443;
    const h = hashKey(key, 99);
    const home = t.home(h);
    assert.ok(home >= 0 && home < t.capacity);
    const e = t.insert(h, key, 0);
    assert.ok(e >= 0 && ![...byPort.values()].includes(e), `entry ${e} handed out twice`);
    t.u32[e * 32 + W_STATE] = 9;
    if (e === home) atHome++;
    byPort.set(port, e);
    hashes.set(port, h);
    assert.equal(t.find(h, key, false), e * 2);
  };
  // A quarter full: most entries are at home (a free home is taken whenever there is one).
  for (let p = 1; p <= 256; p++) put(p);
  assert.ok(atHome >= 200, `${atHome} of 256 at home`);
  // Churn, growth to 8 x, more churn: every connection is found where it was put.
  let seed = 7;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  for (let step = 0; step < 20_000; step++) {
    const port = 1 + rnd(7000);
    const e = byPort.get(port);
    if (e === undefined) {
      if (t.size < t.maxEntries) put(port);
    } else if (rnd(3) === 0) {
      t.remove(e);
      byPort.delete(port);
    }
  }
  assert.equal(t.capacity, 8192);
  assert.equal(t.size, byPort.size);
  for (const [port, e] of byPort) {
    key[W_SPORT] = port;
    key[W_DPORT] = 443;
    assert.equal(t.find(hashes.get(port) as number, key, false), e * 2, `port ${port}`);
  }
  // Full: every entry is handed out once; nothing is left on the stack.
  for (let p = 10_000; t.size < t.maxEntries; p++) put(p);
  assert.equal(new Set(byPort.values()).size, 8192);
  key[W_SPORT] = 65_000;
  assert.equal(t.insert(hashKey(key, 99), key, 0), -1);
});
