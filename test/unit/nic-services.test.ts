// Services and the tenant DNS server in the forwarder (no I/O): Maglev spread and minimal
// disruption; destination NAT to an endpoint with correct checksums, pinned per connection,
// reverse NAT of replies; drops counted; DNS answers built on the client's session.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import dnsPacket from 'dns-packet';
import { parseHostAddress } from '../../src/nic/addresses.js';
import { reverseName, reverseNameAddress } from '../../src/nic/dns.js';
import { Forwarder } from '../../src/nic/forwarding.js';
import { buildMaglevTable, MAGLEV_TABLE_SIZE } from '../../src/nic/maglev.js';
import { TenantNetworks } from '../../src/nic/network.js';
import type { ServiceSpec } from '../../src/nic/services.js';
import { WorkloadDirectory } from '../../src/policy/directory.js';
import { PolicyEngine } from '../../src/policy/engine.js';
import { PolicyStore } from '../../src/policy/store.js';
import type { TunBatch } from '../../src/protocol/batch.js';
import { addressAt, checkedPacket, checksumsOk as checksumsOk46, sum16 } from '../helpers/checksum.js';
import { allowPair } from '../helpers/policy-harness.js';

const A = (s: string) => parseHostAddress(s);

/** An IPv4 TCP or UDP packet with correct checksums. */
function packet4(
  proto: 6 | 17,
  src: string,
  dst: string,
  sport: number,
  dport: number,
  payload: Buffer,
  flags = 0x02,
) {
  const l4len = (proto === 6 ? 20 : 8) + payload.length;
  const p = Buffer.alloc(20 + l4len);
  p[0] = 0x45;
  p.writeUInt16BE(p.length, 2);
  p[8] = 64;
  p[9] = proto;
  Buffer.from(A(src).bytes).copy(p, 12);
  Buffer.from(A(dst).bytes).copy(p, 16);
  p.writeUInt16BE(~sum16(p, 0, 20) & 0xffff, 10);
  p.writeUInt16BE(sport, 20);
  p.writeUInt16BE(dport, 22);
  if (proto === 6) {
    p[32] = 0x50;
    p[33] = flags;
    p.writeUInt16BE(65535, 34);
  } else p.writeUInt16BE(l4len, 24);
  payload.copy(p, 20 + (proto === 6 ? 20 : 8));
  const at = proto === 6 ? 36 : 26;
  p.writeUInt16BE(~sum16(p, 20, p.length, sum16(p, 12, 20) + proto + l4len) & 0xffff || 0xffff, at);
  return p;
}

/** Whether the IPv4 header and TCP/UDP checksums of p are right. */
function checksumsOk(p: Buffer): boolean {
  if (sum16(p, 0, 20) !== 0xffff) return false;
  return sum16(p, 20, p.length, sum16(p, 12, 20) + p[9] + (p.length - 20)) === 0xffff;
}

function tun(items: [number, Buffer][]): TunBatch {
  const buf = Buffer.alloc(items.length * 1600 + 64);
  const offsets = new Uint32Array(items.length);
  const lengths = new Uint32Array(items.length);
  const peerIds = new Uint32Array(items.length);
  items.forEach(([peer, p], i) => {
    offsets[i] = i * 1600 + 33;
    lengths[i] = p.length;
    peerIds[i] = peer;
    p.copy(buf, offsets[i]);
  });
  return { buf, offsets, lengths, peerIds, count: items.length };
}

function outPacket(r: { batch: { buf: Buffer; offsets: Uint32Array; lengths: Uint32Array } }, i = 0): Buffer {
  return Buffer.from(r.batch.buf.subarray(r.batch.offsets[i], r.batch.offsets[i] + r.batch.lengths[i]));
}

const VIP = '100.64.1.200';
const DNS = '100.64.1.254';

/** t1: client (peer 1), web-a (2), web-b (3) local; web-c behind remote NIC 10. */
function setup(): { f: Forwarder; spec: ServiceSpec } {
  const f = new Forwarder(8);
  f.addTenant('t1');
  f.addTenant('t2');
  f.addLocalWorkload('t1', 'client', 1, A('100.64.1.1'));
  f.addLocalWorkload('t1', 'web-a', 2, A('100.64.1.2'));
  f.addLocalWorkload('t1', 'web-b', 3, A('100.64.1.3'));
  f.setRemoteNic('t1', 10, [{ workload: 'web-c', address: A('100.64.1.4') }]);
  f.addLocalWorkload('t2', 'x', 4, A('100.64.1.9'));
  const spec: ServiceSpec = {
    name: 'web',
    address: A(VIP),
    ports: [{ port: 80, protocol: 'tcp' }],
    endpoints: ['web-a', 'web-b', 'web-c'].map((w, i) => ({ workload: w, address: A(`100.64.1.${i + 2}`) })),
  };
  f.setTenantNetwork('t1', { dns: A(DNS), services: [spec] });
  return { f, spec };
}

test('Maglev: even spread, few slots move when an endpoint leaves or comes', () => {
  const t3 = buildMaglevTable(['a', 'b', 'c']);
  const counts = [0, 0, 0];
  for (const x of t3) counts[x]++;
  for (const c of counts)
    assert.ok(Math.abs(c - MAGLEV_TABLE_SIZE / 3) < MAGLEV_TABLE_SIZE * 0.02, `${counts}`);
  // b leaves: slots of a and c stay theirs.
  const t2 = buildMaglevTable(['a', 'c']);
  let kept = 0;
  let owned = 0;
  for (let i = 0; i < t3.length; i++) {
    if (t3[i] === 1) continue;
    owned++;
    if ((t3[i] === 0 ? 0 : 1) === t2[i]) kept++;
  }
  assert.ok(kept / owned > 0.95, `only ${kept}/${owned} slots stayed`);
  // d comes: about a quarter of the slots move.
  const t4 = buildMaglevTable(['a', 'b', 'c', 'd']);
  let moved = 0;
  for (let i = 0; i < t3.length; i++) if (t4[i] !== t3[i]) moved++;
  assert.ok(moved / t3.length < 0.3, `${moved} of ${t3.length} slots moved`);
  assert.equal(buildMaglevTable([]).length, 0);
});

test('service: destination NAT to an endpoint, checksums right, pinned, replies get the service address', () => {
  const { f } = setup();
  const syn = packet4(6, '100.64.1.1', VIP, 40000, 80, Buffer.alloc(0));
  const r = f.forward(tun([[1, syn]]));
  assert.equal(r.batch.count, 1);
  const out = outPacket(r);
  const backend = `${out[16]}.${out[17]}.${out[18]}.${out[19]}`;
  assert.ok(['100.64.1.2', '100.64.1.3', '100.64.1.4'].includes(backend), backend);
  assert.equal(r.peerIds[0], { '100.64.1.2': 2, '100.64.1.3': 3, '100.64.1.4': 10 }[backend]);
  assert.ok(checksumsOk(out), 'checksums after translation');
  // The same connection again goes to the same endpoint.
  for (let i = 0; i < 5; i++) {
    const again = outPacket(
      f.forward(tun([[1, packet4(6, '100.64.1.1', VIP, 40000, 80, Buffer.from('x'), 0x10)]])),
    );
    assert.equal(`${again[16]}.${again[17]}.${again[18]}.${again[19]}`, backend);
  }
  // The reply from the endpoint reaches the client with the service address as source.
  const from = backend === '100.64.1.4' ? 10 : backend === '100.64.1.2' ? 2 : 3;
  const reply = packet4(6, backend, '100.64.1.1', 80, 40000, Buffer.from('hello'), 0x12);
  const rr = f.forward(tun([[from, reply]]));
  assert.equal(rr.batch.count, 1);
  assert.equal(rr.peerIds[0], 1);
  const back = outPacket(rr);
  assert.equal(`${back[12]}.${back[13]}.${back[14]}.${back[15]}`, VIP);
  assert.ok(checksumsOk(back), 'checksums after reverse translation');
  // Many client ports spread over all three endpoints.
  const seen = new Set<number>();
  for (let p = 1; p <= 60; p++)
    seen.add(f.forward(tun([[1, packet4(6, '100.64.1.1', VIP, 41000 + p, 80, Buffer.alloc(0))]])).peerIds[0]);
  assert.deepEqual(
    [...seen].sort((a, b) => a - b),
    [2, 3, 10],
  );
});

test('service: ports not served, no endpoints, remote clients and other tenants are counted drops', () => {
  const { f, spec } = setup();
  assert.equal(
    f.forward(tun([[1, packet4(6, '100.64.1.1', VIP, 40001, 81, Buffer.alloc(0))]])).batch.count,
    0,
  );
  assert.equal(
    f.forward(tun([[1, packet4(17, '100.64.1.1', VIP, 40001, 80, Buffer.alloc(4))]])).batch.count,
    0,
  );
  assert.equal(f.counters.dropped.service, 2);
  // From a remote NIC: services serve local clients only.
  assert.equal(
    f.forward(tun([[10, packet4(6, '100.64.1.4', VIP, 40001, 80, Buffer.alloc(0))]])).batch.count,
    0,
  );
  // Another tenant's workload does not see t1's service address.
  assert.equal(
    f.forward(tun([[4, packet4(6, '100.64.1.9', VIP, 40001, 80, Buffer.alloc(0))]])).batch.count,
    0,
  );
  f.setTenantNetwork('t1', { dns: null, services: [{ ...spec, endpoints: [] }] });
  assert.equal(
    f.forward(tun([[1, packet4(6, '100.64.1.1', VIP, 40002, 80, Buffer.alloc(0))]])).batch.count,
    0,
  );
  assert.equal(f.tenantNetwork('t1')!.services!.counters.dropped.noEndpoint, 1);
  // A service address may not be a workload's.
  assert.throws(
    () => f.setTenantNetwork('t1', { dns: null, services: [{ ...spec, address: A('100.64.1.2') }] }),
    /workload 'web-a'/,
  );
});

test('service: a pinned connection whose endpoint left is picked again; others stay', () => {
  const { f, spec } = setup();
  const pick = (port: number) =>
    f.forward(tun([[1, packet4(6, '100.64.1.1', VIP, port, 80, Buffer.alloc(0), 0x10)]])).peerIds[0];
  const first = new Map<number, number>();
  for (let p = 1; p <= 40; p++) first.set(p, pick(42000 + p));
  f.setTenantNetwork('t1', {
    dns: A(DNS),
    services: [{ ...spec, endpoints: spec.endpoints.filter((e) => e.workload !== 'web-b') }],
  });
  for (const [p, peer] of first) {
    const now = pick(42000 + p);
    if (peer === 3) assert.notEqual(now, 3);
    else assert.equal(now, peer, 'a connection to a remaining endpoint moved');
  }
});

test('DNS: answers on the client session; own names, NXDOMAIN for others, PTR, malformed counted', () => {
  const { f } = setup();
  const ask = (q: Buffer): dnsPacket.DecodedPacket | null => {
    const p = packet4(17, '100.64.1.1', DNS, 5353, 53, q);
    const r = f.forward(tun([[1, p]]));
    assert.equal(r.batch.count, 0);
    if (r.extra.batch.count === 0) return null;
    assert.equal(r.extra.peerIds[0], 1);
    const a = outPacket(r.extra);
    assert.ok(checksumsOk(a), 'answer checksums');
    assert.equal(`${a[12]}.${a[13]}.${a[14]}.${a[15]}`, DNS);
    assert.equal(a.readUInt16BE(20), 53);
    assert.equal(a.readUInt16BE(22), 5353);
    return dnsPacket.decode(a.subarray(28));
  };
  const q = (type: 'A' | 'PTR' | 'AAAA', name: string) =>
    dnsPacket.encode({
      type: 'query',
      id: 42,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type, name }],
    });
  const a = ask(q('A', 'web-a.t1.tg'))!;
  assert.equal(a.flags! & 15, 0);
  assert.deepEqual(
    a.answers?.map((x) => (x as { data: string }).data),
    ['100.64.1.2'],
  );
  assert.deepEqual((ask(q('A', 'web.t1.tg'))!.answers![0] as { data: string }).data, VIP);
  assert.deepEqual((ask(q('A', 'web-c.t1.tg'))!.answers![0] as { data: string }).data, '100.64.1.4');
  assert.equal(ask(q('AAAA', 'web-a.t1.tg'))!.answers?.length, 0);
  assert.equal(ask(q('A', 'x.t2.tg'))!.flags! & 15, 3);
  assert.equal(ask(q('A', 'web-a.t2.tg'))!.flags! & 15, 3);
  assert.equal(ask(q('A', 'a.b.t1.tg'))!.flags! & 15, 3);
  assert.equal(ask(q('A', 'example.com'))!.flags! & 15, 5);
  assert.equal(
    (ask(q('PTR', reverseName(A('100.64.1.3').bytes)))!.answers![0] as { data: string }).data,
    'web-b.t1.tg',
  );
  assert.equal((ask(q('PTR', reverseName(A(VIP).bytes)))!.answers![0] as { data: string }).data, 'web.t1.tg');
  assert.equal(ask(q('PTR', reverseName(A('100.64.1.9').bytes)))!.flags! & 15, 3);
  assert.equal(ask(Buffer.from('deadbeef', 'hex')), null);
  assert.equal(
    ask(dnsPacket.encode({ type: 'response', id: 1, questions: [{ type: 'A', name: 'x.t1.tg' }] })),
    null,
  );
  const c = f.tenantNetwork('t1')!.dns!.counters;
  assert.equal(c.malformed, 2);
  assert.equal(f.counters.dropped.dns, 2);
  // t2 has no DNS server: its workloads cannot reach t1's.
  const r = f.forward(tun([[4, packet4(17, '100.64.1.9', DNS, 5353, 53, q('A', 'web-a.t1.tg'))]]));
  assert.equal(r.batch.count + r.extra.batch.count, 0);
});

test('reverse names round-trip for IPv4 and IPv6', () => {
  for (const a of ['100.64.1.2', 'fd00:1::2:3']) {
    const b = A(a).bytes;
    assert.deepEqual(reverseNameAddress(reverseName(b)), b);
  }
  assert.equal(reverseNameAddress('1.2.3.in-addr.arpa'), null);
  assert.equal(reverseNameAddress('256.2.3.4.in-addr.arpa'), null);
});

// ---------------------------------------------------------------------------------------
// With the policy engine in the path (as the NIC agent runs it): a connection's first packet is
// translated by the services (pick, pin), later ones by their conntrack entry (nat.ts).

/** setup() with an engine allowing client -> web on TCP 80 and UDP 53, and IPv6 beside IPv4. */
function setupWithEngine(): {
  f: Forwarder;
  engine: PolicyEngine;
  spec4: ServiceSpec;
  spec6: ServiceSpec;
  translateCalls: () => number;
} {
  const directory = new WorkloadDirectory();
  directory.upsert('t1', 'client', { app: 'client' });
  for (const w of ['web-a', 'web-b', 'web-c']) directory.upsert('t1', w, { app: 'web' });
  const store = new PolicyStore(directory);
  store.replace({
    version: 1,
    tenant: 't1',
    rules: [
      ...allowPair('web', { app: 'client' }, { app: 'web' }, 'tcp', [80]),
      ...allowPair('dns', { app: 'client' }, { app: 'web' }, 'udp', [53]),
    ],
  });
  const engine = new PolicyEngine({ directory, store });
  const f = new Forwarder(8);
  f.attachEngine(engine);
  f.addTenant('t1');
  f.addLocalWorkload('t1', 'client', 1, A('100.64.1.1'), A('fd00:1::1'));
  f.addLocalWorkload('t1', 'web-a', 2, A('100.64.1.2'), A('fd00:1::2'));
  f.addLocalWorkload('t1', 'web-b', 3, A('100.64.1.3'), A('fd00:1::3'));
  f.setRemoteNic('t1', 10, [{ workload: 'web-c', address: A('100.64.1.4'), address6: A('fd00:1::4') }]);
  const ports = [
    { port: 80, protocol: 'tcp' as const },
    { port: 53, protocol: 'udp' as const },
  ];
  const spec4: ServiceSpec = {
    name: 'web',
    address: A(VIP),
    ports,
    endpoints: ['web-a', 'web-b', 'web-c'].map((w, i) => ({ workload: w, address: A(`100.64.1.${i + 2}`) })),
  };
  const spec6: ServiceSpec = {
    name: 'web6',
    address: A(VIP6),
    ports,
    endpoints: ['web-a', 'web-b', 'web-c'].map((w, i) => ({ workload: w, address: A(`fd00:1::${i + 2}`) })),
  };
  f.setTenantNetwork('t1', { dns: null, services: [spec4, spec6] });
  const s = f.tenantNetwork('t1')!.services!;
  const translate = s.translate.bind(s);
  let calls = 0;
  s.translate = (...args: Parameters<typeof translate>) => {
    calls++;
    return translate(...args);
  };
  return { f, engine, spec4, spec6, translateCalls: () => calls };
}

const VIP6 = 'fd00:1::c8';
const PEER_OF: Record<string, number> = {
  '100.64.1.2': 2,
  '100.64.1.3': 3,
  '100.64.1.4': 10,
  'fd00:1::2': 2,
  'fd00:1::3': 3,
  'fd00:1::4': 10,
};

for (const v6 of [false, true])
  for (const l4 of ['tcp', 'udp'] as const)
    test(`service with the engine (${l4}, IPv${v6 ? 6 : 4}): translated through the conntrack entry after the first packet, checksums right both ways`, () => {
      const { f, engine, translateCalls } = setupWithEngine();
      const client = v6 ? 'fd00:1::1' : '100.64.1.1';
      const vip = v6 ? VIP6 : VIP;
      const dport = l4 === 'tcp' ? 80 : 53;
      const services = f.tenantNetwork('t1')!.services!;
      const first = f.forward(tun([[1, checkedPacket(l4, client, vip, 40000, dport, Buffer.alloc(0))]]));
      assert.equal(first.batch.count, 1);
      const out = outPacket(first);
      const backend = addressAt(out, 'dst');
      assert.equal(first.peerIds[0], PEER_OF[backend], backend);
      assert.ok(checksumsOk46(out), 'checksums of the first packet');
      assert.equal(translateCalls(), 1);
      assert.equal(engine.natBound('t1'), 1);
      // The reply reaches the client from the service address, checksums right.
      const answer = (flags: number) => {
        const reply = checkedPacket(l4, backend, client, dport, 40000, Buffer.from('hello'), {
          tcpFlags: flags,
        });
        const rr = f.forward(tun([[PEER_OF[backend], reply]]));
        assert.equal(rr.batch.count, 1);
        assert.equal(rr.peerIds[0], 1);
        const back = outPacket(rr);
        assert.equal(addressAt(back, 'src'), A(vip).text);
        assert.ok(checksumsOk46(back), 'checksums of the reply');
      };
      answer(0x12);
      for (let i = 1; i <= 8; i++) {
        const p = checkedPacket(l4, client, vip, 40000, dport, Buffer.from('x'.repeat(i * 7)), {
          tcpFlags: 0x10,
        });
        const r = f.forward(tun([[1, p]]));
        assert.equal(r.batch.count, 1);
        const o = outPacket(r);
        assert.equal(addressAt(o, 'dst'), backend);
        assert.equal(r.peerIds[0], PEER_OF[backend]);
        assert.ok(checksumsOk46(o), `checksums of packet ${i}`);
      }
      assert.equal(translateCalls(), 1, 'later packets took the conntrack entry, not translate()');
      assert.equal(services.counters.translated, 9);
      assert.equal(services.counters.connections, 1);
      answer(0x10);
      assert.equal(services.counters.reversed, 2);
      // Ports not served stay counted drops; nothing is bound for them.
      assert.equal(
        f.forward(tun([[1, checkedPacket(l4, client, vip, 40001, 81, Buffer.alloc(0))]])).batch.count,
        0,
      );
      assert.equal(services.counters.dropped.notServed, 1);
      assert.equal(engine.natBound('t1'), 1);
    });

test('service with the engine: pinned connections stay when an endpoint leaves, the others are picked again; a service that goes unbinds', () => {
  const { f, engine, spec4, spec6, translateCalls } = setupWithEngine();
  const pick = (port: number) =>
    f.forward(
      tun([[1, checkedPacket('tcp', '100.64.1.1', VIP, port, 80, Buffer.alloc(0), { tcpFlags: 0x10 })]]),
    ).peerIds[0];
  const first = new Map<number, number>();
  for (let p = 1; p <= 40; p++) first.set(p, pick(42000 + p));
  assert.deepEqual(
    [...new Set(first.values())].sort((a, b) => a - b),
    [2, 3, 10],
  );
  assert.equal(engine.natBound('t1'), 40);
  const onB = [...first.values()].filter((p) => p === 3).length;
  f.setTenantNetwork('t1', {
    dns: null,
    services: [{ ...spec4, endpoints: spec4.endpoints.filter((e) => e.workload !== 'web-b') }, spec6],
  });
  assert.equal(engine.natBound('t1'), 40 - onB, 'the bindings to web-b went');
  const before = translateCalls();
  for (const [p, peer] of first) {
    const now = pick(42000 + p);
    if (peer === 3) assert.notEqual(now, 3);
    else assert.equal(now, peer, 'a connection to a remaining endpoint moved');
  }
  assert.equal(translateCalls() - before, onB, 'only the connections of web-b were translated afresh');
  // web-b comes back: pinned connections stay where they are now.
  f.setTenantNetwork('t1', { dns: null, services: [spec4, spec6] });
  for (const [p, peer] of first) if (peer !== 3) assert.equal(pick(42000 + p), peer);
  // The IPv4 service goes: its bindings go with it, its address routes nowhere.
  f.setTenantNetwork('t1', { dns: null, services: [spec6] });
  assert.equal(engine.natBound('t1'), 0);
  const gone = f.forward(
    tun([[1, checkedPacket('tcp', '100.64.1.1', VIP, 42001, 80, Buffer.alloc(0), { tcpFlags: 0x10 })]]),
  );
  assert.equal(gone.batch.count, 0);
  assert.equal(f.counters.dropped.noRoute, 1);
});

test('a dual-stack service: its IPv6 address is served by the IPv6 addresses of its endpoints, DNS answers A and AAAA', () => {
  const f = new Forwarder(8);
  f.addTenant('t1');
  f.addLocalWorkload('t1', 'client', 1, A('100.64.1.1'), A('fd00:1::1'));
  f.addLocalWorkload('t1', 'web-a', 2, A('100.64.1.2'), A('fd00:1::2'));
  f.setRemoteNic('t1', 10, [{ workload: 'web-c', address: A('100.64.1.4'), address6: A('fd00:1::4') }]);
  const nets = new TenantNetworks();
  const service = {
    name: 'web',
    address: VIP,
    address6: VIP6,
    selector: { app: 'web' },
    ports: [{ port: 80, protocol: 'tcp' as const }],
  };
  assert.throws(
    () => nets.set('t1', { dns: DNS, services: [{ ...service, address6: '100.64.1.201' }] }),
    /address6 must be an IPv6 address/,
  );
  assert.throws(
    () =>
      nets.set('t1', {
        dns: DNS,
        services: [
          { ...service, address6: VIP6 },
          { ...service, name: 'x', address: '100.64.1.201' },
        ],
      }),
    /repeats a name or an address/,
  );
  nets.set('t1', { dns: DNS, services: [service] });
  const workloads = [
    { workload: 'client', address: A('100.64.1.1'), address6: A('fd00:1::1'), labels: { app: 'client' } },
    { workload: 'web-a', address: A('100.64.1.2'), address6: A('fd00:1::2'), labels: { app: 'web' } },
    { workload: 'web-c', address: A('100.64.1.4'), address6: A('fd00:1::4'), labels: { app: 'web' } },
  ];
  nets.apply(f, 't1', workloads);
  const seen = new Set<string>();
  for (let p = 1; p <= 30; p++) {
    const r = f.forward(tun([[1, checkedPacket('tcp', 'fd00:1::1', VIP6, 43000 + p, 80, Buffer.alloc(0))]]));
    assert.equal(r.batch.count, 1);
    const o = outPacket(r);
    assert.ok(checksumsOk46(o));
    seen.add(addressAt(o, 'dst'));
    // The reply comes back from the IPv6 service address.
    const back = f.forward(
      tun([
        [
          r.peerIds[0],
          checkedPacket('tcp', addressAt(o, 'dst'), 'fd00:1::1', 80, 43000 + p, Buffer.alloc(0), {
            tcpFlags: 0x12,
          }),
        ],
      ]),
    );
    assert.equal(addressAt(outPacket(back), 'src'), A(VIP6).text);
    assert.ok(checksumsOk46(outPacket(back)));
  }
  assert.deepEqual([...seen].sort(), ['fd00:1::2', 'fd00:1::4']);
  const state = nets.describe('t1', f);
  assert.equal(state.services[0].address6, A(VIP6).text);
  // DNS: A and AAAA of the service and of a dual-stack workload, PTR of the IPv6 service address.
  const ask = (type: 'A' | 'AAAA' | 'PTR', name: string) => {
    const q = dnsPacket.encode({
      type: 'query',
      id: 7,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type, name }],
    });
    const r = f.forward(tun([[1, packet4(17, '100.64.1.1', DNS, 5353, 53, q)]]));
    const a = outPacket(r.extra);
    return dnsPacket.decode(a.subarray(28)).answers?.map((x) => (x as { data: string }).data);
  };
  assert.deepEqual(ask('A', 'web.t1.tg'), [VIP]);
  assert.deepEqual(ask('AAAA', 'web.t1.tg'), [A(VIP6).text]);
  assert.deepEqual(ask('AAAA', 'web-a.t1.tg'), ['fd00:1::2']);
  assert.deepEqual(ask('PTR', reverseName(A(VIP6).bytes)), ['web.t1.tg']);
});
