// The scenarios of WireGuard's own namespace test (the kernel's netns.sh, which wireguard-go
// runs against itself), against `tenguard device` on both ends of a two-namespace testbed,
// driven only with `wg` and `ip` as an operator would: IPv4 and IPv6 inside and outside the
// tunnel, a large tunnel MTU, roaming both ways, endpoint changes over the UAPI, sticky
// source addresses, the cryptokey-routing reverse-path check, allowed-IPs and key edits under
// traffic, and configurations built from several UAPI set operations.
//
// Side a is the initiator (it knows b's endpoint), side b learns a's from the handshake.
// Every scenario starts from the same baseline (wg setconf on both ends), so one failure
// does not decide the next. The testbed carries a prefix of its own and is removed after
// the file, also when a scenario fails.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import {
  createTestbed,
  destroyTestbed,
  iperf,
  keyPair,
  type Side,
  startDevice,
  stopDevice,
  type Testbed,
  uapiSocketPath,
  wgWithSecret,
} from '../../src/bench/testbed.js';
import { MAX_PACKET } from '../../src/device/device.js';
import { run, runInOk } from '../../src/util/exec.js';
import {
  type DumpPeer,
  devicePid,
  devicePrefix,
  processAlive,
  startPair,
  TUNNEL_MTU,
  tenguardStats,
  wgDump,
} from '../helpers/device-harness.js';
import { ping, pingStream, pingUntilReply } from '../helpers/ping.js';

const COMBO = { initiator: 'tenguard', responder: 'tenguard', name: 'tenguard -> tenguard' } as const;

/** The large tunnel MTU: a 9,000-byte fabric less 80 bytes of outer headers. */
const BIG_MTU = 8920;

/** `wg` in a side's namespace; its output. */
function wg(s: Side, args: string[]): Promise<string> {
  return runInOk(s.ns, 'wg', args);
}

function ip(s: Side, args: string[]): Promise<string> {
  return runInOk(s.ns, 'ip', args);
}

/** The address `host` in the /24 (IPv4) or /64 (IPv6) of a side's wire address. */
function wireV4(s: Side, host: number): string {
  return s.wireV4.replace(/\.\d+$/, `.${host}`);
}
function wireV6(s: Side, host: number): string {
  return s.wireV6.replace(/::\d+$/, `::${host}`);
}

/** A peer of a side's device by public key. */
async function peerOf(s: Side, publicKey: string): Promise<DumpPeer> {
  const p = (await wgDump(s.ns, s.tun)).peers.find((x) => x.publicKey === publicKey);
  assert.ok(p, `${s.tun} has no peer ${publicKey.slice(0, 8)}…`);
  return p;
}

async function endpointOf(s: Side, peer: Side): Promise<string | null> {
  return (await peerOf(s, peer.publicKey)).endpoint;
}

/** Pings `count` times and asserts every echo came back. */
async function pingsAll(s: Side, target: string, what: string, opts: { count?: number; size?: number } = {}) {
  const count = opts.count ?? 3;
  const r = await ping(s.ns, target, { count, intervalS: 0.1, waitS: 2, size: opts.size });
  assert.equal(r.transmitted, count, `${what}: ping did not run`);
  assert.equal(r.received, count, `${what}: ${r.received}/${count} replies`);
}

/** The non-zero drop and I/O counters of both devices, for failure messages. */
async function dropCounters(...sides: Side[]): Promise<string> {
  const out: string[] = [];
  for (const s of sides) {
    const stats = await tenguardStats(s);
    const shown = [...stats].filter(([k, v]) => v > 0 && (k.startsWith('dropped.') || k.startsWith('io.')));
    out.push(`${s.tun}: ${shown.map(([k, v]) => `${k}=${v}`).join(' ') || 'none'}`);
  }
  return out.join('; ');
}

/** The `wg setconf` text of a side with one peer (and the peer's endpoint when given). */
function config(s: Side, peer: Side, endpoint: string | null): string {
  const lines = ['[Interface]', `PrivateKey = ${s.privateKey}`, `ListenPort = ${s.port}`, '[Peer]'];
  lines.push(`PublicKey = ${peer.publicKey}`, `AllowedIPs = ${peer.tunV4}/32, ${peer.tunV6}/128`);
  if (endpoint !== null) lines.push(`Endpoint = ${endpoint}`);
  return `${lines.join('\n')}\n`;
}

/** Replaces each end's whole configuration (wg setconf) and restores the tunnel MTU. */
async function baseline(tb: Testbed): Promise<void> {
  const { a, b } = tb;
  for (const [s, peer, ep] of [
    [a, b, `${b.wireV4}:${b.port}`],
    [b, a, null],
  ] as const) {
    await wgWithSecret(s.ns, ['setconf', s.tun, '/dev/stdin'], config(s, peer, ep).trimEnd());
    await ip(s, ['link', 'set', s.tun, 'mtu', String(TUNNEL_MTU)]);
  }
  assert.ok(await pingUntilReply(a.ns, b.tunV4, 10_000), 'baseline: no reply a -> b');
}

/** Sends raw UAPI requests over one connection and returns everything answered until close. */
function uapiConversation(path: string, requests: string, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let got = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`UAPI ${path}: no close within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('connect', () => sock.end(requests));
    sock.on('data', (d: Buffer) => {
      got += d.toString('latin1');
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
  });
}

function hexKey(base64: string): string {
  return Buffer.from(base64, 'base64').toString('hex');
}

describe('device: the scenarios of WireGuard netns.sh against tenguard device', () => {
  let tb: Testbed | undefined;
  const bed = (): Testbed => {
    assert.ok(tb, 'testbed was not created');
    return tb;
  };
  /** Further devices started by a scenario, stopped after it. */
  const extra: Side[] = [];

  before(async () => {
    tb = await createTestbed(devicePrefix('n', 0));
    await startPair(tb, COMBO);
  });
  after(async () => {
    for (const s of extra) await stopDevice(s).catch(() => undefined);
    for (const s of extra) await run('rm', ['-f', uapiSocketPath(s.tun)]);
    if (tb) await destroyTestbed(tb);
  });

  it('IPv4 outside: IPv4 and IPv6 inside, pings (flood) and TCP both ways', async () => {
    const { a, b } = bed();
    await baseline(bed());
    for (const [from, to] of [
      [a, b],
      [b, a],
    ] as const) {
      for (const target of [to.tunV4, to.tunV6]) {
        const r = await runInOk(from.ns, 'ping', ['-n', '-q', '-f', '-c', '100', '-W', '1', target], {
          timeoutMs: 30_000,
        });
        // With -c, a flood ping waits for the last reply only twice the largest round trip
        // seen so far: a reply that late counts as lost, whatever carried it.
        const received = Number(/100 packets transmitted, (\d+) received/.exec(r)?.[1] ?? 0);
        if (received < 99)
          assert.fail(`${from.tun} -> ${target}: ${r.trim()}; drops ${await dropCounters(from, to)}`);
      }
    }
    const tcp4 = await iperf(a, b, b.tunV4, 2);
    const tcp6 = await iperf(b, a, a.tunV6, 2);
    assert.ok(tcp4.mbps > 10, `TCP over IPv4 inside: ${tcp4.mbps.toFixed(1)} Mbit/s`);
    assert.ok(tcp6.mbps > 10, `TCP over IPv6 inside: ${tcp6.mbps.toFixed(1)} Mbit/s`);
    assert.equal(await endpointOf(b, a), `${a.wireV4}:${a.port}`, 'b learnt a over IPv4');
  });

  it('IPv6 outside: IPv4 and IPv6 inside, TCP; the responder learns the IPv6 endpoint', async () => {
    const { a, b } = bed();
    await baseline(bed());
    await wg(a, ['set', a.tun, 'peer', b.publicKey, 'endpoint', `[${b.wireV6}]:${b.port}`]);
    await pingsAll(a, b.tunV4, 'a -> b, IPv4 in IPv6');
    await pingsAll(a, b.tunV6, 'a -> b, IPv6 in IPv6');
    await pingsAll(b, a.tunV4, 'b -> a, IPv4 in IPv6');
    await pingsAll(b, a.tunV6, 'b -> a, IPv6 in IPv6');
    assert.equal(await endpointOf(b, a), `[${a.wireV6}]:${a.port}`);
    const tcp = await iperf(a, b, b.tunV6, 2);
    assert.ok(tcp.mbps > 10, `TCP, IPv6 inside and outside: ${tcp.mbps.toFixed(1)} Mbit/s`);
  });

  // Large-packet support: inner packets of BIG_MTU bytes through every stage of the device.
  // The wire is a 9,000-byte fabric here, so that outer datagrams (IPv6: exactly 9,000 bytes)
  // leave whole; device-mtu.test.ts covers fragmented outer datagrams.
  it(`big MTU: ping -s 8000 and TCP at tunnel MTU ${BIG_MTU}, outer IPv4 and IPv6`, async (t) => {
    const { a, b } = bed();
    assert.ok(MAX_PACKET >= BIG_MTU, `the device carries at most ${MAX_PACKET}-byte packets`);
    await baseline(bed());
    for (const s of [a, b]) await ip(s, ['link', 'set', s.veth, 'mtu', '9000']);
    try {
      for (const s of [a, b]) await ip(s, ['link', 'set', s.tun, 'mtu', String(BIG_MTU)]);
      for (const outer of [`${b.wireV4}:${b.port}`, `[${b.wireV6}]:${b.port}`]) {
        await wg(a, ['set', a.tun, 'peer', b.publicKey, 'endpoint', outer]);
        await pingsAll(a, b.tunV4, `a -> b, 8000-byte IPv4 echo via ${outer}`, { size: 8000 });
        await pingsAll(b, a.tunV6, `b -> a, 8000-byte IPv6 echo via ${outer}`, { size: 8000 });
        await pingsAll(a, b.tunV4, `a -> b, full-MTU IPv4 echo via ${outer}`, { size: BIG_MTU - 28 });
        const tcp = await iperf(a, b, b.tunV4, 2);
        t.diagnostic(`TCP at MTU ${BIG_MTU} via ${outer}: ${tcp.mbps.toFixed(0)} Mbit/s`);
        assert.ok(tcp.mbps > 10, `TCP at MTU ${BIG_MTU} via ${outer}: ${tcp.mbps.toFixed(1)} Mbit/s`);
      }
    } finally {
      for (const s of [a, b]) await ip(s, ['link', 'set', s.veth, 'mtu', '1500']);
    }
  });

  it('roaming: a moves to another port (IPv6 outside), b follows; b moves to another address, a follows', async () => {
    const tb0 = bed();
    const { a, b } = tb0;
    await baseline(tb0);
    await wg(a, ['set', a.tun, 'peer', b.publicKey, 'endpoint', `[${b.wireV6}]:${b.port}`]);
    await pingsAll(a, b.tunV4, 'a -> b before a moves');
    const newPort = a.port + 100;
    await wg(a, ['set', a.tun, 'listen-port', String(newPort)]);
    await pingsAll(a, b.tunV4, 'a -> b from the new port');
    assert.equal(await endpointOf(b, a), `[${a.wireV6}]:${newPort}`, "b follows a's new port");
    await pingsAll(b, a.tunV6, 'b -> a at the new port');

    // b's address changes: its old one is gone, so it must not stick to it either.
    await wg(a, ['set', a.tun, 'listen-port', String(a.port)]);
    await wg(a, ['set', a.tun, 'peer', b.publicKey, 'endpoint', `${b.wireV4}:${b.port}`]);
    await pingsAll(a, b.tunV4, 'a -> b before b moves');
    const moved = wireV4(b, 12);
    // Without this, removing the primary address would remove the new secondary one too.
    await runInOk(b.ns, 'sysctl', ['-qw', `net.ipv4.conf.${b.veth}.promote_secondaries=1`]);
    await ip(b, ['addr', 'add', `${moved}/24`, 'dev', b.veth]);
    await ip(b, ['addr', 'del', `${b.wireV4}/24`, 'dev', b.veth]);
    try {
      await pingsAll(b, a.tunV4, 'b -> a from its new address');
      assert.equal(await endpointOf(a, b), `${moved}:${b.port}`, "a follows b's new address");
      await pingsAll(a, b.tunV4, 'a -> b at its new address');
    } finally {
      await ip(b, ['addr', 'add', `${b.wireV4}/24`, 'dev', b.veth]);
      await ip(b, ['addr', 'del', `${moved}/24`, 'dev', b.veth]);
    }
  });

  it('endpoint changes by UAPI: a switches between IPv6 and IPv4 endpoints, b follows each time', async () => {
    const { a, b } = bed();
    await baseline(bed());
    for (const ep of [`[${b.wireV6}]:${b.port}`, `${b.wireV4}:${b.port}`, `[${b.wireV6}]:${b.port}`]) {
      await wg(a, ['set', a.tun, 'peer', b.publicKey, 'endpoint', ep]);
      assert.equal(await endpointOf(a, b), ep, 'wg show reports the endpoint just set');
      await pingsAll(a, b.tunV6, `a -> b via ${ep}`, { count: 2 });
      const back = ep.startsWith('[') ? `[${a.wireV6}]:${a.port}` : `${a.wireV4}:${a.port}`;
      assert.equal(await endpointOf(b, a), back, `b follows a to ${back}`);
    }
  });

  it('sticky source: b answers from the address a wrote to, IPv4 and IPv6, primary or not', async () => {
    const { a, b } = bed();
    await baseline(bed());
    // b gets a second address of each family; whichever the kernel would pick as the source
    // for a reply, b must answer from the one a's packets came to, or a would roam to the other.
    const v4 = [b.wireV4, wireV4(b, 3)];
    const v6 = [b.wireV6, wireV6(b, 3)];
    await ip(b, ['addr', 'add', `${v4[1]}/24`, 'dev', b.veth]);
    await ip(b, ['-6', 'addr', 'add', `${v6[1]}/64`, 'dev', b.veth, 'nodad']);
    try {
      for (const ep of [
        `${v4[1]}:${b.port}`,
        `${v4[0]}:${b.port}`,
        `[${v6[1]}]:${b.port}`,
        `[${v6[0]}]:${b.port}`,
        `${v4[1]}:${b.port}`,
      ]) {
        await wg(a, ['set', a.tun, 'peer', b.publicKey, 'endpoint', ep]);
        await pingsAll(a, b.tunV4, `a -> b via ${ep}`, { count: 2 });
        assert.equal(await endpointOf(a, b), ep, `b answered from another address than ${ep}`);
      }
    } finally {
      await ip(b, ['addr', 'del', `${v4[1]}/24`, 'dev', b.veth]);
      await ip(b, ['-6', 'addr', 'del', `${v6[1]}/64`, 'dev', b.veth]);
    }
  });

  it('crypto-routing reverse path: a packet whose inner source belongs to another peer is dropped and counted', async () => {
    const { a, b } = bed();
    await baseline(bed());
    const net24 = b.tunV4.replace(/\.\d+$/, '.0/24');
    await wg(a, ['set', a.tun, 'peer', b.publicKey, 'allowed-ips', net24]);
    await pingsAll(b, a.tunV4, 'b -> a with a /24 for b');
    // Another peer takes b's own address (more specific): b's packets now fail the check.
    const other = keyPair();
    await wg(a, ['set', a.tun, 'peer', other.publicKey, 'allowed-ips', `${b.tunV4}/32`]);
    const before = (await tenguardStats(a)).get('dropped.badInnerSource') ?? 0;
    // b moves to another port meanwhile: a still learns it from the authenticated packets.
    const newPort = b.port + 100;
    await wg(b, ['set', b.tun, 'listen-port', String(newPort)]);
    const r = await ping(b.ns, a.tunV4, { count: 3, intervalS: 0.2, waitS: 1 });
    assert.equal(r.transmitted, 3, 'ping did not run');
    assert.equal(r.received, 0, 'a answered packets whose inner source is not b’s');
    const dropped = ((await tenguardStats(a)).get('dropped.badInnerSource') ?? 0) - before;
    assert.ok(dropped >= 3, `dropped.badInnerSource grew by ${dropped}, expected >= 3`);
    assert.equal(await endpointOf(a, b), `${b.wireV4}:${newPort}`, "a learnt b's new port all the same");
    await wg(a, ['set', a.tun, 'peer', other.publicKey, 'remove']);
    await pingsAll(b, a.tunV4, 'b -> a once the other peer is gone');
    await wg(b, ['set', b.tun, 'listen-port', String(b.port)]);
  });

  it('allowed-IPs and key edits under traffic: no crash, no internal error, traffic follows', async (t) => {
    const tb0 = bed();
    const { a, b } = tb0;
    await baseline(tb0);
    const internal0 = [
      (await tenguardStats(a)).get('dropped.internal'),
      (await tenguardStats(b)).get('dropped.internal'),
    ];
    const bg = pingStream(a.ns, b.tunV4, 0.01, 60);
    // Bulk TCP the other way across every edit (b -> a: a's key changes under it).
    const bulk = iperf(b, a, a.tunV4, 4);
    const wide = [b.tunV4.replace(/\.\d+$/, '.0/24'), b.tunV6.replace(/::\d+$/, '::/64')].join(',');
    const exact = `${b.tunV4}/32,${b.tunV6}/128`;
    const psk = keyPair().privateKey;
    try {
      for (let round = 0; round < 8; round++) {
        await wg(a, ['set', a.tun, 'peer', b.publicKey, 'allowed-ips', wide]);
        const thief = keyPair();
        await wg(a, ['set', a.tun, 'peer', thief.publicKey, 'allowed-ips', `${b.tunV4}/32`]);
        await wg(a, ['set', a.tun, 'peer', thief.publicKey, 'remove']);
        await wg(a, ['set', a.tun, 'peer', b.publicKey, 'allowed-ips', exact]);
        await wg(a, ['set', a.tun, 'peer', b.publicKey, 'allowed-ips', `${b.tunV6}/128`]);
        await wg(a, ['set', a.tun, 'peer', b.publicKey, 'allowed-ips', exact]);
        // The same preshared key on both ends in even rounds, none (all zero) in odd ones.
        const pskArg = round % 2 === 0 ? psk : Buffer.alloc(32).toString('base64');
        for (const [s, peer] of [
          [a, b],
          [b, a],
        ] as const)
          await wgWithSecret(
            s.ns,
            ['set', s.tun, 'peer', peer.publicKey, 'preshared-key', '/dev/stdin'],
            pskArg,
          );
        // a's key pair changes and b replaces the peer: sessions restart with a new handshake.
        const next = keyPair();
        await wgWithSecret(
          b.ns,
          [
            'set',
            b.tun,
            'peer',
            next.publicKey,
            'preshared-key',
            '/dev/stdin',
            'allowed-ips',
            `${a.tunV4}/32,${a.tunV6}/128`,
          ],
          pskArg,
        );
        await wgWithSecret(a.ns, ['set', a.tun, 'private-key', '/dev/stdin'], next.privateKey);
        await wg(b, ['set', b.tun, 'peer', a.publicKey, 'remove']);
        a.privateKey = next.privateKey;
        a.publicKey = next.publicKey;
        assert.ok(await pingUntilReply(a.ns, b.tunV4, 10_000), `round ${round}: no reply after the edits`);
      }
    } finally {
      const r = await bg.stop();
      t.diagnostic(
        `background ping ${r.received}/${r.transmitted}, longest gap ${(r.maxGapMs / 1000).toFixed(2)} s`,
      );
      assert.ok(r.received > 0, `background ping: ${r.received}/${r.transmitted}`);
    }
    const tcp = await bulk;
    t.diagnostic(`TCP b -> a across the edits: ${tcp.mbps.toFixed(1)} Mbit/s`);
    assert.ok(tcp.mbps > 1, `TCP across the edits: ${tcp.mbps.toFixed(1)} Mbit/s`);
    for (const s of [a, b]) assert.ok(processAlive(devicePid(s)), `${s.tun}: device process gone`);
    await pingsAll(a, b.tunV6, 'a -> b after the edits');
    await pingsAll(b, a.tunV4, 'b -> a after the edits');
    const internal1 = [
      (await tenguardStats(a)).get('dropped.internal'),
      (await tenguardStats(b)).get('dropped.internal'),
    ];
    assert.deepEqual(internal1, internal0, 'no exception escaped the engine');
  });

  it('split UAPI configurations: several set operations build one configuration; large ones in one request', async (t) => {
    const { a } = bed();
    const c: Side = { ...a, tun: `${bed().prefix}cw`, port: a.port + 1000, proc: undefined };
    extra.push(c);
    await startDevice(c, 'tenguard');
    const sock = uapiSocketPath(c.tun);
    const dev = keyPair();
    const [p1, p2] = [keyPair(), keyPair()];
    // Five set operations and a get over one connection, as a configuration tool may send them.
    const answer = await uapiConversation(
      sock,
      [
        `set=1\nprivate_key=${hexKey(dev.privateKey)}\n\n`,
        `set=1\nlisten_port=${c.port}\n\n`,
        `set=1\npublic_key=${hexKey(p1.publicKey)}\nallowed_ip=100.64.50.0/24\n\n`,
        `set=1\npublic_key=${hexKey(p1.publicKey)}\nupdate_only=true\nallowed_ip=fd00:50::/64\npersistent_keepalive_interval=25\n\n`,
        `set=1\npublic_key=${hexKey(p2.publicKey)}\nendpoint=[${a.wireV6}]:9\nallowed_ip=100.64.51.1/32\n\n`,
        'get=1\n\n',
      ].join(''),
    );
    const parts = answer.split('\n\n');
    assert.deepEqual(parts.slice(0, 5), Array(5).fill('errno=0'), 'every set answered errno=0');
    const got = parts[5];
    assert.match(got, new RegExp(`^private_key=${hexKey(dev.privateKey)}$`, 'm'));
    assert.match(got, new RegExp(`^listen_port=${c.port}$`, 'm'));
    const shown = await wgDump(c.ns, c.tun);
    assert.equal(shown.publicKey, dev.publicKey);
    const q1 = shown.peers.find((p) => p.publicKey === p1.publicKey);
    const q2 = shown.peers.find((p) => p.publicKey === p2.publicKey);
    assert.deepEqual([...(q1?.allowedIps ?? [])].sort(), ['100.64.50.0/24', 'fd00:50::/64']);
    assert.deepEqual(q2?.allowedIps, ['100.64.51.1/32']);
    assert.equal(q2?.endpoint, `[${a.wireV6}]:9`);

    // One peer with 255 x 256 x 2 allowed IPs in one `wg setconf` (netns.sh's own figure):
    // a request of several MB and an answer far larger than one read.
    const big = [
      '[Interface]',
      `PrivateKey = ${keyPair().privateKey}`,
      '[Peer]',
      `PublicKey = ${p1.publicKey}`,
    ];
    for (let x = 1; x <= 255; x++)
      for (let y = 0; y <= 255; y++) big.push(`AllowedIPs = ${x}.${y}.0.0/16, ${x}::${y}/128`);
    let started = performance.now();
    await wgWithSecret(c.ns, ['setconf', c.tun, '/dev/stdin'], big.join('\n'));
    const setMs = performance.now() - started;
    started = performance.now();
    const listed = await runInOk(c.ns, 'wg', ['show', c.tun, 'allowed-ips'], { timeoutMs: 60_000 });
    const fields = listed.trim().split(/\s+/).length;
    t.diagnostic(
      `130,560 allowed IPs: setconf ${setMs.toFixed(0)} ms, show ${(performance.now() - started).toFixed(0)} ms`,
    );
    assert.equal(fields, 255 * 256 * 2 + 1, 'the public key and every allowed IP');

    // 40 peers with 52 allowed IPs each, then 30 peers of which only the last has any.
    const many = ['[Interface]', `PrivateKey = ${keyPair().privateKey}`];
    for (let x = 1; x <= 40; x++) {
      many.push('[Peer]', `PublicKey = ${keyPair().publicKey}`);
      for (let y = 1; y <= 52; y++) many.push(`AllowedIPs = ${x}.${y}.0.0/16`);
    }
    await wgWithSecret(c.ns, ['setconf', c.tun, '/dev/stdin'], many.join('\n'));
    const rows = (await wg(c, ['show', c.tun, 'allowed-ips'])).trim().split('\n');
    assert.equal(rows.length, 40);
    for (const row of rows) assert.equal(row.trim().split(/\s+/).length, 53, 'a peer and its 52 prefixes');
    const sparse: string[] = [];
    for (let i = 0; i < 29; i++) sparse.push('[Peer]', `PublicKey = ${keyPair().publicKey}`);
    sparse.push('[Peer]', `PublicKey = ${keyPair().publicKey}`, 'AllowedIPs = 255.2.3.4/32, abcd::255/128');
    await wgWithSecret(c.ns, ['setconf', c.tun, '/dev/stdin'], sparse.join('\n'));
    const conf = await wg(c, ['showconf', c.tun]);
    assert.equal((conf.match(/^\[Peer\]$/gm) ?? []).length, 30);
    assert.match(conf, /^AllowedIPs = 255\.2\.3\.4\/32, abcd::255\/128$/m);
    const notThere = await run('wg', ['show', `${bed().prefix}nx`]);
    assert.notEqual(notThere.code, 0, 'wg show of a device that does not exist fails');
  });
});
