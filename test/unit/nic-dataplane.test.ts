// The NIC service on in-memory sockets: two NICs, and vSwitches emulated by protocol engines
// on the same fake network. Packets go vSwitch -> NIC -> (NIC ->) vSwitch through real
// WireGuard sessions, tenants are kept apart by session, forged sources are dropped, removal
// ends a session at once, and nothing a NIC sends carries plaintext. Both tenants run an
// allow-within-tenant policy (the default is deny: nic-policy.test.ts).
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { allowWithinTenant, FakeNicNet, link, settle } from '../helpers/nic-fakenet.js';
import { ipv4Packet } from '../helpers/protocol-harness.js';

const fake = new FakeNicNet();
const nicSent = fake.nicSent;
after(() => fake.close());
const nic = (name: string, host: string, fabric: string) => fake.nic(name, host, fabric);
const place = fake.place.bind(fake);

test('two NICs on a fake network: tenants apart by session, forged sources dropped, removal immediate, no plaintext', async () => {
  const A = await nic('a', '198.19.1.2', '198.18.0.11');
  const B = await nic('b', '198.19.2.2', '198.18.0.12');
  // t1: w1, w2 on A, r1 on B. t2 uses the SAME addresses: x1 (= w1's) on A, y1 (= r1's) on B.
  const w1 = await place(A, '198.19.1.1', 't1', 'w1', '100.64.1.11');
  const w2 = await place(A, '198.19.1.1', 't1', 'w2', '100.64.1.12');
  const x1 = await place(A, '198.19.1.1', 't2', 'x1', '100.64.1.11');
  const r1 = await place(B, '198.19.2.1', 't1', 'r1', '100.64.1.21');
  const y1 = await place(B, '198.19.2.1', 't2', 'y1', '100.64.1.21');
  await settle(200);
  await link(
    A,
    B,
    't1',
    [
      ['w1', '100.64.1.11'],
      ['w2', '100.64.1.12'],
    ],
    [['r1', '100.64.1.21']],
  );
  await link(A, B, 't2', [['x1', '100.64.1.11']], [['y1', '100.64.1.21']]);
  for (const n of [A, B]) for (const t of ['t1', 't2']) await n.api.setPolicy(t, allowWithinTenant(t));

  const marker = Buffer.from('tenguard-plaintext-marker-0123456789');
  const packet = (src: string, dst: string): Buffer => {
    const p = ipv4Packet(src, dst, 200);
    marker.copy(p, 40);
    return p;
  };
  // Same host, same tenant (the first packet waits for the on-host handshake).
  w1.send(packet('100.64.1.11', '100.64.1.12'));
  await settle(80);
  assert.equal(w2.received.length, 1, 'same-host packet not delivered');
  assert.ok(w2.received[0].includes(marker));
  // Cross host, same tenant: t1's r1 gets it, t2's y1 (same address) does not.
  w1.send(packet('100.64.1.11', '100.64.1.21'));
  await settle(120);
  w1.send(packet('100.64.1.11', '100.64.1.21'));
  await settle(80);
  assert.equal(r1.received.length, 2, 'cross-host packets not delivered');
  assert.equal(y1.received.length, 0, "t1's packet reached t2");
  // And back.
  r1.send(packet('100.64.1.21', '100.64.1.11'));
  await settle(80);
  assert.equal(w1.received.length, 1);
  assert.equal(x1.received.length, 0, "t1's reply reached t2's workload with the same address");
  // t2 reaches only its own: y1 at the shared address.
  x1.send(packet('100.64.1.11', '100.64.1.21'));
  await settle(120);
  assert.equal(y1.received.length, 1);
  assert.equal(r1.received.length, 2);
  // t2 has no 100.64.1.12: dropped at the NIC, counted.
  x1.send(packet('100.64.1.11', '100.64.1.12'));
  await settle();
  assert.equal(w2.received.length, 1);
  assert.equal(A.svc.agent.forwarder.counters.dropped.noRoute, 1);
  // A forged source (w2's address from w1) is dropped by cryptokey routing.
  const forgedBefore = A.svc.agent.engine.counters.dropped.badInnerSource;
  w1.send(packet('100.64.1.12', '100.64.1.21'));
  await settle();
  assert.equal(A.svc.agent.engine.counters.dropped.badInnerSource, forgedBefore + 1);
  assert.equal(r1.received.length, 2);

  // Removal: w2's keys go at once; its old session is refused.
  const psk = A.svc.agent.keys.get('workload-psk', { workload: 'w2' });
  assert.ok(psk);
  const pskBytes = psk.secret;
  await A.api.removeWorkload('w2');
  assert.ok(
    pskBytes.every((b) => b === 0),
    "w2's PSK was not wiped",
  );
  const unknownBefore = A.svc.agent.engine.counters.dropped.unknownIndex;
  w2.send(packet('100.64.1.12', '100.64.1.11'));
  await settle();
  assert.equal(A.svc.agent.engine.counters.dropped.unknownIndex, unknownBefore + 1);
  assert.equal(w1.received.length, 1);

  // Nothing either NIC sent carries the plaintext.
  assert.ok(nicSent.length > 10);
  assert.equal(nicSent.filter((d) => d.includes(marker)).length, 0, 'a NIC sent plaintext');

  // t2's last workload on A leaves: t2's off-host key is wiped and B's t2 traffic to A stops.
  const t2Key = A.svc.agent.keys.get('tenant-off-host', { tenant: 't2' });
  assert.ok(t2Key);
  const t2Bytes = t2Key.secret;
  await A.api.removeWorkload('x1');
  assert.ok(
    t2Bytes.every((b) => b === 0),
    "t2's off-host key was not wiped",
  );
  assert.equal((await A.api.keys()).filter((k) => k.tenant === 't2').length, 0);
  y1.send(packet('100.64.1.21', '100.64.1.11'));
  await settle(80);
  assert.equal(x1.received.length, 0);

  // Closing the NIC wipes everything it holds.
  const t1Key = A.svc.agent.keys.get('tenant-off-host', { tenant: 't1' });
  assert.ok(t1Key);
  await A.svc.close();
  assert.equal(A.svc.agent.keys.size, 0);
  assert.ok(t1Key.secret.every((b) => b === 0));
});
