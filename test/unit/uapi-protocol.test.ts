import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
  DEFAULT_UAPI_LIMITS,
  encodeErrnoAnswer,
  errnoOf,
  parseGetResponse,
  parseSetRequest,
  serializeGetResponse,
  serializeSetRequest,
  UAPI_ERRNO,
  type UapiChangeSet,
  type UapiDeviceSnapshot,
  UapiError,
  wipeChangeSet,
} from '../../src/uapi/protocol.js';
import { TgError } from '../../src/util/errors.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const key = (): Buffer => randomBytes(32);
const body = (...lines: string[]): Buffer => Buffer.from(lines.map((l) => `${l}\n`).join(''), 'latin1');
const parse = (...lines: string[]): UapiChangeSet => parseSetRequest(body(...lines));

function refused(lines: string[], errno: number): void {
  assert.throws(
    () => parseSetRequest(body(...lines)),
    (err: unknown) => err instanceof UapiError && err.errno === errno && err.code === 'TG_ERR_UAPI',
    `${JSON.stringify(lines)} should be refused with errno ${errno}`,
  );
}

test('empty set request is an empty change set', () => {
  assert.deepEqual(parseSetRequest(Buffer.alloc(0)), { replacePeers: false, peers: [] });
  assert.deepEqual(parseSetRequest(Buffer.from('\n')), { replacePeers: false, peers: [] });
});

test('device keys: private_key (clamped, either case), listen_port, fwmark, replace_peers', () => {
  const sk = Buffer.alloc(32, 0xff);
  const c = parse(
    `private_key=${hex(sk).toUpperCase()}`,
    'listen_port=51999',
    'fwmark=4294967295',
    'replace_peers=true',
  );
  const clamped = Buffer.alloc(32, 0xff);
  clamped[0] = 0xf8;
  clamped[31] = 0x7f;
  assert.deepEqual(c.privateKey, clamped);
  assert.equal(c.listenPort, 51999);
  assert.equal(c.fwmark, 4294967295);
  assert.equal(c.replacePeers, true);
  assert.deepEqual(c.peers, []);
});

test('all-zero private_key removes the key; listen_port 0 and fwmark 0 are values', () => {
  const c = parse(`private_key=${'0'.repeat(64)}`, 'listen_port=0', 'fwmark=0');
  assert.equal(c.privateKey, null);
  assert.equal(c.listenPort, 0);
  assert.equal(c.fwmark, 0);
});

test('peer keys: every one parsed and typed', () => {
  const pk = key();
  const psk = key();
  const c = parse(
    `public_key=${hex(pk)}`,
    'update_only=true',
    `preshared_key=${hex(psk)}`,
    'endpoint=[2001:db8::1]:51820',
    'persistent_keepalive_interval=25',
    'replace_allowed_ips=true',
    'allowed_ip=100.64.1.7/24',
    'allowed_ip=fd00:1::/64',
    'allowed_ip=-10.0.0.0/8',
    'protocol_version=1',
  );
  assert.equal(c.peers.length, 1);
  const p = c.peers[0];
  assert.deepEqual(p.publicKey, pk);
  assert.equal(p.remove, false);
  assert.equal(p.updateOnly, true);
  assert.deepEqual(p.presharedKey, psk);
  assert.equal(p.endpoint?.text, '[2001:db8::1]:51820');
  assert.equal(p.endpoint?.port, 51820);
  assert.equal(p.persistentKeepalive, 25);
  assert.equal(p.replaceAllowedIps, true);
  assert.deepEqual(
    p.allowedIps.map((a) => [a.cidr.text, a.remove]),
    [
      ['100.64.1.0/24', false],
      ['fd00:1::/64', false],
      ['10.0.0.0/8', true],
    ],
  );
  assert.equal(p.protocolVersion, 1);
});

test('peer sections keep request order; a key may come back in a later section', () => {
  const a = key();
  const b = key();
  const c = parse(`public_key=${hex(a)}`, `public_key=${hex(b)}`, 'remove=true', `public_key=${hex(a)}`);
  assert.deepEqual(
    c.peers.map((p) => [hex(p.publicKey), p.remove]),
    [
      [hex(a), false],
      [hex(b), true],
      [hex(a), false],
    ],
  );
});

test('remove=true empties the section wherever it stands', () => {
  const c = parse(
    `public_key=${hex(key())}`,
    'allowed_ip=10.0.0.0/8',
    `preshared_key=${hex(key())}`,
    'remove=true',
  );
  const p = c.peers[0];
  assert.equal(p.remove, true);
  assert.deepEqual(p.allowedIps, []);
  assert.equal(p.presharedKey, undefined);
  assert.equal(p.replaceAllowedIps, false);
});

test('all-zero preshared_key means no preshared key; the last value of a key wins', () => {
  const c = parse(
    `public_key=${hex(key())}`,
    `preshared_key=${hex(key())}`,
    `preshared_key=${'0'.repeat(64)}`,
    'endpoint=1.2.3.4:5',
    'endpoint=5.6.7.8:9',
    'persistent_keepalive_interval=1',
    'persistent_keepalive_interval=0',
  );
  assert.equal(c.peers[0].presharedKey, null);
  assert.equal(c.peers[0].endpoint?.text, '5.6.7.8:9');
  assert.equal(c.peers[0].persistentKeepalive, 0);
});

test('replace_allowed_ips drops the allowed_ip lines before it in its section', () => {
  const c = parse(
    `public_key=${hex(key())}`,
    'allowed_ip=10.0.0.0/8',
    'replace_allowed_ips=true',
    'allowed_ip=10.1.0.0/16',
  );
  assert.deepEqual(
    c.peers[0].allowedIps.map((a) => a.cidr.text),
    ['10.1.0.0/16'],
  );
});

test('validation: every bad line is refused with the errno wireguard-go answers', () => {
  const pk = `public_key=${hex(key())}`;
  const E = UAPI_ERRNO.EINVAL;
  const cases: [string[], number][] = [
    [['private_key=abcd'], E], // bad hex length
    [[`private_key=${'a'.repeat(63)}`], E],
    [[`private_key=${'a'.repeat(65)}`], E],
    [[`private_key=${'g'.repeat(64)}`], E],
    [[`public_key=${'a'.repeat(62)}`], E],
    [[pk, `preshared_key=${'a'.repeat(66)}`], E],
    [['no_equals_sign'], UAPI_ERRNO.EPROTO],
    [['foo=1'], E], // unknown device key
    [['=1'], E],
    [[pk, 'foo=1'], E], // unknown peer key
    [[pk, 'tx_bytes=1'], E], // get-only key
    [[pk, 'last_handshake_time_sec=1'], E],
    [['allowed_ip=10.0.0.0/8'], E], // peer key before public_key
    [['endpoint=1.2.3.4:5'], E],
    [['remove=true'], E],
    [[pk, 'listen_port=1'], E], // device key after public_key
    [[pk, 'private_key=' + '0'.repeat(64)], E],
    [['listen_port=65536'], E],
    [['listen_port=-1'], E],
    [['listen_port='], E],
    [['listen_port=0x10'], E],
    [['listen_port= 1'], E],
    [['fwmark=4294967296'], E],
    [['replace_peers=false'], E],
    [['replace_peers=TRUE'], E],
    [[pk, 'remove=1'], E],
    [[pk, 'update_only=yes'], E],
    [[pk, 'replace_allowed_ips=false'], E],
    [[pk, 'endpoint=example.com:51820'], E], // hostnames not allowed
    [[pk, 'endpoint=::1:51820'], E],
    [[pk, 'endpoint=1.2.3.4:0'], E],
    [[pk, 'endpoint=1.2.3.4:65536'], E],
    [[pk, 'endpoint=1.2.3.4'], E],
    [[pk, 'allowed_ip=10.0.0.0/33'], E], // bad CIDR
    [[pk, 'allowed_ip=10.0.0.0'], E],
    [[pk, 'allowed_ip=::/129'], E],
    [[pk, 'allowed_ip=10.0.0.256/8'], E],
    [[pk, 'allowed_ip=--10.0.0.0/8'], E],
    [[pk, 'persistent_keepalive_interval=65536'], E], // keepalive out of range
    [[pk, 'persistent_keepalive_interval=-1'], E],
    [[pk, 'protocol_version=2'], E],
    [[pk, 'protocol_version=0'], E],
  ];
  for (const [lines, errno] of cases) refused(lines, errno);
});

test('a bad line late in a request refuses the whole request', () => {
  const lines = [
    `private_key=${hex(key())}`,
    'listen_port=1',
    `public_key=${hex(key())}`,
    'allowed_ip=10.0.0.0/8',
  ];
  assert.doesNotThrow(() => parseSetRequest(body(...lines)));
  refused([...lines, 'allowed_ip=10.0.0.0/99'], UAPI_ERRNO.EINVAL);
});

test('data after the terminating empty line is a protocol error', () => {
  assert.throws(
    () => parseSetRequest(Buffer.from('listen_port=1\n\nlisten_port=2\n')),
    (e: unknown) => e instanceof UapiError && e.errno === UAPI_ERRNO.EPROTO,
  );
});

test('limits: a line, the line count and the request size are bounded (EMSGSIZE)', () => {
  const limits = { ...DEFAULT_UAPI_LIMITS, maxLines: 3, maxLineBytes: 40, maxRequestBytes: 200 };
  const isTooBig = (e: unknown): boolean => e instanceof UapiError && e.errno === UAPI_ERRNO.EMSGSIZE;
  assert.throws(() => parseSetRequest(body(`fwmark=${'1'.repeat(40)}`), limits), isTooBig);
  assert.throws(
    () => parseSetRequest(body('fwmark=1', 'fwmark=2', 'fwmark=3', 'fwmark=4'), limits),
    isTooBig,
  );
  assert.throws(() => parseSetRequest(Buffer.alloc(300, 0x41), limits), isTooBig);
  assert.equal(parseSetRequest(body('fwmark=1', 'fwmark=2', 'fwmark=3'), limits).fwmark, 3);
  // The defaults let a 1000-peer request through.
  const many: string[] = [];
  for (let i = 0; i < 1000; i++)
    many.push(`public_key=${hex(key())}`, `allowed_ip=100.64.${i >> 8}.${i & 255}/32`);
  assert.equal(parseSetRequest(body(...many)).peers.length, 1000);
});

test('wipeChangeSet zeroes the private key and the preshared keys', () => {
  const c = parse(`private_key=${hex(key())}`, `public_key=${hex(key())}`, `preshared_key=${hex(key())}`);
  const sk = c.privateKey as Buffer;
  const psk = c.peers[0].presharedKey as Buffer;
  wipeChangeSet(c);
  assert.ok(sk.equals(Buffer.alloc(32)));
  assert.ok(psk.equals(Buffer.alloc(32)));
});

test('get answer: wireguard-go field order, errno=0 and the empty line', () => {
  const sk = Buffer.alloc(32, 0x11);
  const pk = Buffer.alloc(32, 0x22);
  const psk = Buffer.alloc(32, 0x33);
  const snap: UapiDeviceSnapshot = {
    privateKey: sk,
    listenPort: 51820,
    fwmark: 7,
    peers: [
      {
        publicKey: pk,
        presharedKey: psk,
        endpoint: '[2001:DB8::1]:51820',
        lastHandshake: { sec: 1700000000, nsec: 123 },
        txBytes: 18446744073709551615n,
        rxBytes: 5,
        persistentKeepalive: 25,
        allowedIps: ['100.64.1.7/24', 'fd00:1::/64'],
      },
      { publicKey: Buffer.alloc(32, 0x44), txBytes: 0, rxBytes: 0, persistentKeepalive: 0, allowedIps: [] },
    ],
  };
  const out = serializeGetResponse(snap).toString('latin1');
  assert.equal(
    out,
    [
      `private_key=${'11'.repeat(32)}`,
      'listen_port=51820',
      'fwmark=7',
      `public_key=${'22'.repeat(32)}`,
      `preshared_key=${'33'.repeat(32)}`,
      'protocol_version=1',
      'endpoint=[2001:db8::1]:51820',
      'last_handshake_time_sec=1700000000',
      'last_handshake_time_nsec=123',
      'tx_bytes=18446744073709551615',
      'rx_bytes=5',
      'persistent_keepalive_interval=25',
      'allowed_ip=100.64.1.0/24',
      'allowed_ip=fd00:1::/64',
      `public_key=${'44'.repeat(32)}`,
      `preshared_key=${'00'.repeat(32)}`,
      'protocol_version=1',
      'last_handshake_time_sec=0',
      'last_handshake_time_nsec=0',
      'tx_bytes=0',
      'rx_bytes=0',
      'persistent_keepalive_interval=0',
      'errno=0',
      '',
      '',
    ].join('\n'),
  );
  // No private key, port or mark: those lines are left out.
  assert.equal(serializeGetResponse({ privateKey: Buffer.alloc(32), peers: [] }).toString(), 'errno=0\n\n');
});

test('get answer round trip through parseGetResponse', () => {
  const snap: UapiDeviceSnapshot = {
    privateKey: key(),
    listenPort: 1,
    fwmark: 4294967295,
    peers: [
      {
        publicKey: key(),
        presharedKey: key(),
        endpoint: '192.0.2.1:65535',
        lastHandshake: { sec: 5, nsec: 999999999 },
        txBytes: 10n,
        rxBytes: 20n,
        persistentKeepalive: 65535,
        allowedIps: ['0.0.0.0/0', '::/0'],
        protocolVersion: 1,
      },
      {
        publicKey: key(),
        presharedKey: null,
        endpoint: '[fe80::1%tgeth0]:1',
        lastHandshake: { sec: 0, nsec: 0 },
        txBytes: 0n,
        rxBytes: 0n,
        persistentKeepalive: 0,
        allowedIps: [],
        protocolVersion: 1,
      },
    ],
  };
  assert.deepEqual(parseGetResponse(serializeGetResponse(snap)), snap);
});

test('set request round trip: parse(serialize(change)) gives the change back', () => {
  const change = parse(
    `private_key=${hex(key())}`,
    'listen_port=0',
    'fwmark=9',
    'replace_peers=true',
    `public_key=${hex(key())}`,
    'update_only=true',
    `preshared_key=${'0'.repeat(64)}`,
    'endpoint=[::1]:5',
    'persistent_keepalive_interval=0',
    'replace_allowed_ips=true',
    'allowed_ip=10.0.0.0/8',
    'allowed_ip=-fd00::/8',
    'protocol_version=1',
    `public_key=${hex(key())}`,
    'remove=true',
    `public_key=${hex(key())}`,
    `preshared_key=${hex(key())}`,
  );
  const wire = serializeSetRequest(change);
  const text = wire.toString('latin1');
  assert.ok(text.startsWith('set=1\n') && text.endsWith('\n\n'));
  assert.deepEqual(parseSetRequest(wire.subarray(6)), change);
  const empty: UapiChangeSet = { replacePeers: false, peers: [] };
  assert.equal(serializeSetRequest(empty).toString(), 'set=1\n\n');
});

test('the serializer validates a snapshot so that a faulty backend cannot inject lines', () => {
  const peer = {
    publicKey: key(),
    txBytes: 0,
    rxBytes: 0,
    persistentKeepalive: 0,
    allowedIps: [] as string[],
  };
  const bad: UapiDeviceSnapshot[] = [
    { peers: [{ ...peer, endpoint: `1.2.3.4:5\nprivate_key=${'1'.repeat(64)}` }] },
    { peers: [{ ...peer, endpoint: 'example.com:1' }] },
    { peers: [{ ...peer, allowedIps: ['10.0.0.0/8\nlisten_port=1'] }] },
    { peers: [{ ...peer, txBytes: -1 }] },
    { peers: [{ ...peer, rxBytes: 1n << 64n }] },
    { peers: [{ ...peer, txBytes: 1.5 }] },
    { peers: [{ ...peer, persistentKeepalive: 65536 }] },
    { peers: [{ ...peer, lastHandshake: { sec: 1, nsec: 1e9 } }] },
    { peers: [{ ...peer, protocolVersion: 2 }] },
    { peers: [{ ...peer, publicKey: Buffer.alloc(31) }] },
    { listenPort: 70000, peers: [] },
    { fwmark: -3, peers: [] },
  ];
  for (const snap of bad) {
    assert.throws(
      () => serializeGetResponse(snap),
      (e: unknown) => e instanceof UapiError && e.errno === UAPI_ERRNO.EIO,
    );
  }
});

test('errno answers: negated for set (as wg reads it), positive for get', () => {
  assert.equal(encodeErrnoAnswer('set', 0).toString(), 'errno=0\n\n');
  assert.equal(encodeErrnoAnswer('set', UAPI_ERRNO.EINVAL).toString(), 'errno=-22\n\n');
  assert.equal(encodeErrnoAnswer('get', UAPI_ERRNO.EIO).toString(), 'errno=5\n\n');
});

test('errnoOf maps backend errors', () => {
  assert.equal(errnoOf(new UapiError(UAPI_ERRNO.EADDRINUSE, 'x')), 98);
  assert.equal(errnoOf(Object.assign(new Error('bind'), { code: 'EADDRINUSE' })), 98);
  assert.equal(errnoOf(new TgError('TG_ERR_INVALID_ARGUMENT', 'x')), 22);
  assert.equal(errnoOf(new TgError('TG_ERR_INTERNAL', 'x')), 55);
  assert.equal(errnoOf(new Error('anything')), 55);
  assert.equal(errnoOf('thrown string'), 55);
});

test('parseGetResponse: errno, malformed answers', () => {
  assert.deepEqual(parseGetResponse(Buffer.from('errno=0\n\n')), { peers: [] });
  assert.throws(
    () => parseGetResponse(Buffer.from('errno=-22\n\n')),
    (e: unknown) => e instanceof UapiError && e.errno === 22,
  );
  for (const bad of ['errno=0\n', 'listen_port=1\n\n', 'junk\nerrno=0\n\n', 'listen_port=x\nerrno=0\n\n']) {
    assert.throws(
      () => parseGetResponse(Buffer.from(bad)),
      (e: unknown) => e instanceof UapiError && e.errno === UAPI_ERRNO.EPROTO,
      JSON.stringify(bad),
    );
  }
});
