// Destination NAT bound to connection tracking (src/policy/nat.ts): the incremental checksum
// rewrite against a full recomputation (TCP, UDP, ICMP, ICMPv6; IPv4 and IPv6), the table's
// second (NAT) slots against a reference model through growth and removal, and the engine's
// checkNat / bindNat / reverse translation / retargetNat.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { parseHostAddress } from '../../src/nic/addresses.js';
import {
  ConntrackTable,
  hashKey,
  KEY_WORDS,
  W_D0,
  W_DWL,
  W_META,
  W_S0,
  W_SPORT,
  W_SWL,
} from '../../src/policy/conntrack.js';
import { addressDelta, NAT_ID_BIT, NatRegistry, natRewrite } from '../../src/policy/nat.js';
import { PARSE_OK, ParsedPacket, parsePacket } from '../../src/policy/packet.js';
import { addressAt, checkedPacket, checksumsOk, type L4 } from '../helpers/checksum.js';
import { ACK, allowPair, SYN, SYNACK, world } from '../helpers/policy-harness.js';

function words(text: string): [number, number, number, number] {
  const b = parseHostAddress(text).bytes;
  const out: [number, number, number, number] = [0, 0, 0, 0];
  for (let i = 0; i < b.length; i += 4)
    out[i / 4] = ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
  return out;
}

function rand4(): string {
  const b = randomBytes(4);
  return `100.${64 + (b[0] & 63)}.${b[1]}.${b[2] | 1}`;
}

function rand6(): string {
  const b = randomBytes(8);
  return `fd64:6440:${b.readUInt16BE(0).toString(16)}::${b.readUInt16BE(2).toString(16)}:${b.readUInt16BE(4).toString(16)}:${b.readUInt16BE(6).toString(16) || '1'}`;
}

/** Rewrites p's source or destination to `to` with the incremental update; returns p. */
function rewrite(p: Buffer, which: 'src' | 'dst', to: string): Buffer {
  const pkt = new ParsedPacket();
  assert.equal(parsePacket(p, 0, p.length, pkt), PARSE_OK);
  const from = words(addressAt(p, which));
  const t = words(to);
  const delta = addressDelta(pkt.family, ...from, ...t);
  const at = pkt.family === 4 ? (which === 'src' ? 12 : 16) : which === 'src' ? 8 : 24;
  natRewrite(p, 0, pkt.l4, pkt.end, pkt.family, pkt.proto, at, delta, ...t);
  return p;
}

test('NAT rewrite: checksums equal a full recomputation, TCP/UDP/ICMP, IPv4 and IPv6', () => {
  let cases = 0;
  for (const v6 of [false, true])
    for (const l4 of ['tcp', 'udp', 'icmp'] as L4[])
      for (let n = 0; n < 300; n++) {
        const a = v6 ? rand6() : rand4();
        const b = v6 ? rand6() : rand4();
        const c = v6 ? rand6() : rand4();
        const payload = randomBytes(n % 37);
        const sport = 1 + ((n * 7919) % 65535);
        const orig = checkedPacket(l4, a, b, sport, 80, payload, { tcpFlags: n & 0x3f });
        assert.ok(checksumsOk(orig));
        // Destination NAT (b -> c): the same bytes as building the packet to c.
        const p = rewrite(Buffer.from(orig), 'dst', c);
        const want = checkedPacket(l4, a, c, sport, 80, payload, { tcpFlags: n & 0x3f });
        assert.ok(checksumsOk(p), `${l4} v${v6 ? 6 : 4} dst rewrite ${a} ${b}->${c}`);
        assert.equal(addressAt(p, 'dst'), parseHostAddress(c).text);
        // The one's complement sum has two zeros: compare checksum values modulo 0 = 0xffff.
        const norm = (x: Buffer) => {
          const y = Buffer.from(x);
          const ip = v6 ? 40 : 20;
          const at = ip + (l4 === 'tcp' ? 16 : l4 === 'udp' ? 6 : 2);
          if (y.readUInt16BE(at) === 0xffff) y.writeUInt16BE(0, at);
          return y;
        };
        assert.deepEqual(norm(p), norm(want));
        // Reverse NAT of the reply (source c -> b) gives the reply as built from b.
        const reply = checkedPacket(l4, c, a, 80, sport, payload, { tcpFlags: n & 0x3f });
        const back = rewrite(reply, 'src', b);
        assert.ok(checksumsOk(back), `${l4} v${v6 ? 6 : 4} src rewrite`);
        assert.deepEqual(
          norm(back),
          norm(checkedPacket(l4, b, a, 80, sport, payload, { tcpFlags: n & 0x3f })),
        );
        cases++;
      }
  assert.equal(cases, 1800);
});

test('NAT rewrite: an IPv4 UDP packet without a checksum keeps none; the header checksum is right', () => {
  const p = checkedPacket('udp', '100.64.1.1', '100.64.1.200', 5000, 53, Buffer.from('abc'), {
    udpNoChecksum: true,
  });
  rewrite(p, 'dst', '100.64.1.7');
  assert.equal(p.readUInt16BE(26), 0);
  assert.ok(checksumsOk(p));
  assert.equal(addressAt(p, 'dst'), '100.64.1.7');
});

test('NAT rewrite: a UDP checksum that comes out 0 is sent as 0xffff', () => {
  // Search a payload whose UDP checksum after the rewrite is 0 (one in 65,536).
  let found = 0;
  for (let n = 0; n < 400_000 && found === 0; n++) {
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(n & 0xffff);
    const p = checkedPacket('udp', '100.64.1.1', '100.64.1.200', 5000 + (n >>> 16), 53, payload);
    const q = rewrite(Buffer.from(p), 'dst', '100.64.1.7');
    const fresh = checkedPacket('udp', '100.64.1.1', '100.64.1.7', 5000 + (n >>> 16), 53, payload);
    if (fresh.readUInt16BE(26) === 0xffff) {
      found++;
      assert.equal(q.readUInt16BE(26), 0xffff);
      assert.ok(checksumsOk(q));
    }
  }
  assert.equal(found, 1);
});

test('conntrack NAT slots: found by the original tuple, replies by the mirror, through growth and removal', () => {
  const timeouts = new Float64Array(16).fill(1e9);
  const t = new ConntrackTable({ maxEntries: 4096, initialEntries: 16, timeouts });
  const seed = 12345;
  const natId = (NAT_ID_BIT | 3) >>> 0;
  const vip = 0x6440_01c8;
  const model = new Map<number, { e: number; ep: number; natHash: number; key: Uint32Array }>();
  const keyOf = (i: number, nat: boolean) => {
    const k = new Uint32Array(KEY_WORDS);
    k[W_META] = 6 | (4 << 8);
    k[W_SWL] = 1 + (i % 7);
    k[W_DWL] = nat ? natId : 100 + (i % 3);
    k[W_S0] = 0x6440_0100 + (i % 7);
    k[W_D0] = nat ? vip : 0x6440_0200 + (i % 3);
    k[W_SPORT] = 1024 + i;
    k[W_SPORT + 1] = 80;
    return k;
  };
  for (let i = 0; i < 1500; i++) {
    const k = keyOf(i, false);
    const e = t.insert(hashKey(k, seed), k, 0);
    t.u32[e * 32 + 14] = 1; // a live state
    const o = keyOf(i, true);
    const natHash = hashKey(o, seed);
    if (i % 3 !== 2) {
      assert.ok(t.bindNat(e, natId, natHash, 0x1234, i % 3));
      model.set(i, { e, ep: i % 3, natHash, key: k });
    }
  }
  assert.equal(t.natBound, model.size);
  const check = () => {
    for (let i = 0; i < 1500; i++) {
      const m = model.get(i);
      const o = keyOf(i, true);
      const found = t.findNat(hashKey(o, seed), o);
      assert.equal(found, m === undefined ? -1 : m.e, `nat lookup ${i}`);
      const k = keyOf(i, false);
      const f0 = t.find(hashKey(k, seed), k, false);
      if (removed.has(i)) assert.equal(f0, -1);
      else {
        assert.equal(f0 & 1, 0, `key lookup ${i}`);
        if (m !== undefined) assert.equal(f0 >> 1, m.e);
      }
      // The mirror (reply) finds the same entry in the reply direction.
      const r = new Uint32Array(k);
      [r[W_SWL], r[W_DWL]] = [k[W_DWL], k[W_SWL]];
      [r[W_S0], r[W_D0]] = [k[W_D0], k[W_S0]];
      [r[W_SPORT], r[W_SPORT + 1]] = [k[W_SPORT + 1], k[W_SPORT]];
      const f = t.find(hashKey(r, seed), r, false);
      if (removed.has(i)) assert.equal(f, -1);
      else assert.equal(f & 1, 1);
      // A NAT key never matches through find(), nor a plain key through findNat().
      assert.equal(t.find(hashKey(o, seed), o, false), -1);
      assert.equal(t.findNat(hashKey(k, seed), k), -1);
    }
  };
  const removed = new Set<number>();
  check();
  // Remove a third of the entries (bound and not), unbind another third, grow further.
  for (let i = 0; i < 1500; i += 3) {
    const k = keyOf(i, false);
    t.remove(t.find(hashKey(k, seed), k, true) >> 1);
    model.delete(i);
    removed.add(i);
  }
  for (let i = 1; i < 1500; i += 3) {
    t.unbindNat(model.get(i)!.e);
    model.delete(i);
  }
  for (let i = 1500; i < 3000; i++) {
    const k = keyOf(i, false);
    const e = t.insert(hashKey(k, seed), k, 0);
    t.u32[e * 32 + 14] = 1;
  }
  for (const [i, m] of model) {
    const o = keyOf(i, true);
    assert.equal(t.findNat(hashKey(o, seed), o), m.e, `after growth ${i}`);
  }
  assert.equal(t.natBound, model.size);
  check();
});

test('conntrack NAT slots: refused when the slots would be too full, nothing changed', () => {
  const t = new ConntrackTable({
    maxEntries: 64,
    initialEntries: 64,
    timeouts: new Float64Array(16).fill(1e9),
  });
  // 64 entries -> 128 slots; 64 keys + at most 38 NAT slots keep them at most 80% full.
  let bound = 0;
  for (let i = 0; i < 64; i++) {
    const k = new Uint32Array(KEY_WORDS);
    k[W_META] = 17 | (4 << 8);
    k[W_SPORT] = i + 1;
    const e = t.insert(hashKey(k, 1), k, 0);
    t.u32[e * 32 + 14] = 1;
    k[W_DWL] = NAT_ID_BIT >>> 0;
    if (t.bindNat(e, NAT_ID_BIT >>> 0, hashKey(k, 1), 0, 0)) bound++;
  }
  assert.ok(bound > 30 && bound < 64, `${bound} bound`);
  assert.equal(t.natBound, bound);
});

test('NatRegistry: stable ids per key, addresses, release and reuse', () => {
  const r = new NatRegistry();
  const a = r.acquire('t1/web');
  assert.ok((a & NAT_ID_BIT) !== 0);
  assert.equal(r.acquire('t1/web'), a);
  r.setAddress(a, parseHostAddress('fd64::c8').bytes);
  assert.ok(r.hasAddress(a, parseHostAddress('fd64::c8').bytes));
  assert.ok(!r.hasAddress(a, parseHostAddress('100.64.1.200').bytes));
  const ids = new Set([a]);
  for (let i = 0; i < 200; i++) ids.add(r.acquire(`t${i}/x`));
  assert.equal(ids.size, 201);
  assert.equal(r.release('t1/web'), a);
  assert.equal(r.idOf('t1/web'), 0);
  assert.equal(r.acquire('t9/new'), a, 'a released id is reused');
});

/** The engine with acme's web-1 -> web-2/api-1 allowed on TCP 80 and UDP 53. */
function natWorld() {
  const w = world();
  w.store.replace({
    version: 1,
    tenant: 'acme',
    rules: [
      ...allowPair('web', { app: 'web' }, {}, 'tcp', [80]),
      ...allowPair('dns', { app: 'web' }, {}, 'udp', [53]),
    ],
  });
  return w;
}

const web1 = { tenant: 'acme', workload: 'web-1' };
const web2 = { tenant: 'acme', workload: 'web-2' };

for (const v6 of [false, true])
  for (const l4 of ['tcp', 'udp'] as const)
    test(`engine NAT (${l4}, IPv${v6 ? 6 : 4}): bound at the first packet, later ones rewritten from the entry, replies translated back`, () => {
      const w = natWorld();
      const e = w.engine;
      const vip = v6 ? 'fd00:1::c8' : '100.64.1.200';
      const client = v6 ? 'fd00:1::1' : '100.64.1.1';
      const endpoint = v6 ? 'fd00:1::2' : '100.64.1.2';
      const dport = l4 === 'tcp' ? 80 : 53;
      const id = e.nat.acquire('acme/web');
      e.nat.setAddress(id, parseHostAddress(vip).bytes);
      const now = w.clock.ms;
      const send = (flags: number, n: number) =>
        checkedPacket(l4, client, vip, 40000, dport, randomBytes(n), { tcpFlags: flags });
      // First packet: no binding; the caller translates it, check() admits it, bindNat binds.
      const first = send(SYN, 0);
      assert.equal(e.checkNat('acme', web1, id, first, 0, first.length, now), null);
      const translated = checkedPacket(l4, client, endpoint, 40000, dport, Buffer.alloc(0), {
        tcpFlags: SYN,
      });
      const r0 = e.check('acme', web1, web2, translated, 0, translated.length, now, 'both');
      assert.equal(r0.reason, 'new');
      assert.ok(e.bindNat(id, 5));
      assert.equal(e.natBound('acme'), 1);
      // The reply: source back to the service address, checksums right.
      const reply = checkedPacket(l4, endpoint, client, dport, 40000, Buffer.from('hello'), {
        tcpFlags: SYNACK,
      });
      const rr = e.check('acme', web2, web1, reply, 0, reply.length, now, 'both');
      assert.equal(rr.reason, 'reply');
      assert.equal(rr.natEndpoint, 5);
      assert.equal(addressAt(reply, 'src'), parseHostAddress(vip).text);
      assert.ok(checksumsOk(reply));
      // Later packets: found by their original tuple, rewritten from the entry.
      for (let n = 0; n < 20; n++) {
        const p = send(ACK, n * 13);
        const r = e.checkNat('acme', web1, id, p, 0, p.length, now);
        assert.ok(r?.allowed, `packet ${n}`);
        assert.equal(r.reason, 'established');
        assert.equal(r.natEndpoint, 5);
        assert.equal(addressAt(p, 'dst'), parseHostAddress(endpoint).text);
        assert.ok(checksumsOk(p), `checksums of packet ${n}`);
      }
      const flow = w.engine.snapshot({}, now).find((f) => f.srcWorkload === 'web-1');
      assert.equal(flow?.dstWorkload, 'web-2');
      assert.equal(flow?.packetsToDst, 21);
      // Another client port is another connection: no binding.
      const other = checkedPacket(l4, client, vip, 40001, dport, Buffer.alloc(0), { tcpFlags: SYN });
      assert.equal(e.checkNat('acme', web1, id, other, 0, other.length, now), null);
      // The endpoint left: the binding goes, the entry stays until it ends.
      e.retargetNat('acme', id, () => -1);
      assert.equal(e.natBound('acme'), 0);
      const after = send(ACK, 1);
      assert.equal(e.checkNat('acme', web1, id, after, 0, after.length, now), null);
    });

test('engine NAT: an ended entry (idle timeout) is no binding; the endpoint index follows retargetNat', () => {
  const w = natWorld();
  const e = w.engine;
  const id = e.nat.acquire('acme/web');
  e.nat.setAddress(id, parseHostAddress('100.64.1.200').bytes);
  const p = checkedPacket('udp', '100.64.1.1', '100.64.1.2', 41000, 53, Buffer.alloc(4));
  assert.equal(e.check('acme', web1, web2, p, 0, p.length, w.clock.ms, 'both').reason, 'new');
  assert.ok(e.bindNat(id, 0));
  e.retargetNat('acme', id, (family, w0) => (family === 4 && w0 === 0x64400102 ? 7 : -1));
  const q = checkedPacket('udp', '100.64.1.1', '100.64.1.200', 41000, 53, Buffer.alloc(4));
  assert.equal(e.checkNat('acme', web1, id, q, 0, q.length, w.clock.ms)?.natEndpoint, 7);
  w.clock.advance(3600);
  const late = checkedPacket('udp', '100.64.1.1', '100.64.1.200', 41000, 53, Buffer.alloc(4));
  assert.equal(e.checkNat('acme', web1, id, late, 0, late.length, w.clock.ms), null);
  assert.equal(addressAt(late, 'dst'), '100.64.1.200', 'not rewritten');
  assert.equal(e.natBound('acme'), 0);
  // A denied connection is never bound.
  const denied = checkedPacket('tcp', '100.64.1.1', '100.64.1.2', 41001, 22, Buffer.alloc(0));
  assert.equal(e.check('acme', web1, web2, denied, 0, denied.length, w.clock.ms, 'both').allowed, false);
  assert.equal(e.bindNat(id, 0), false);
  // A service address of the other family is not bound.
  const six = e.nat.acquire('acme/six');
  e.nat.setAddress(six, parseHostAddress('fd00:1::c8').bytes);
  const p4 = checkedPacket('udp', '100.64.1.1', '100.64.1.2', 41002, 53, Buffer.alloc(4));
  assert.equal(e.check('acme', web1, web2, p4, 0, p4.length, w.clock.ms, 'both').reason, 'new');
  assert.equal(e.bindNat(six, 0), false);
});
