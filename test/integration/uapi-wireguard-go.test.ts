// Differential test: the same UAPI requests go to wireguard-go (in its own network
// namespace, its TUN link left down and without addresses) and to a tenguard UapiServer
// with the reference in-memory backend. Every answer and every resulting state must match.
// Requests that wireguard-go would half-apply before failing (it is not transactional) put
// their bad line where nothing precedes it that changes state.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lstat, unlink } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { x25519 } from '@noble/curves/ed25519.js';
import { uapiExchange } from '../../src/uapi/client.js';
import { MemoryUapiBackend } from '../../src/uapi/memory.js';
import { parseGetResponse, type UapiDeviceSnapshot } from '../../src/uapi/protocol.js';
import { UapiServer, uapiSocketPath } from '../../src/uapi/server.js';
import { TgError } from '../../src/util/errors.js';
import { endChild, isRoot, run, runOk } from '../../src/util/exec.js';

const TAG = randomBytes(3).toString('hex');
const NETNS = `tgn${TAG}`;
const WGGO_IF = `tgw${TAG}`;
const OUR_IF = `tgu${TAG}`;
const wggoSock = uapiSocketPath(WGGO_IF);

let wggo: ChildProcess | null = null;
let server: UapiServer | null = null;
const backend = new MemoryUapiBackend();

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function clampedKey(): Buffer {
  const k = randomBytes(32);
  k[0] &= 248;
  k[31] = (k[31] & 127) | 64;
  return k;
}

const devKey = clampedKey();
const devPub = Buffer.from(x25519.getPublicKey(devKey));
const [A, B, C] = [randomBytes(32), randomBytes(32), randomBytes(32)];
const cKey = clampedKey(); // a private key whose public key is a peer's
const cPub = Buffer.from(x25519.getPublicKey(cKey));

async function waitFor(what: string, cond: () => Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  assert.ok(isRoot(), 'this test needs root (network namespace, TUN, /var/run/wireguard)');
  await runOk('ip', ['netns', 'add', NETNS]);
  wggo = spawn('ip', ['netns', 'exec', NETNS, 'wireguard-go', '-f', WGGO_IF], {
    stdio: ['ignore', 'ignore', 'ignore'],
    env: { ...process.env, LOG_LEVEL: 'error' },
  });
  await waitFor('the wireguard-go UAPI socket', () =>
    lstat(wggoSock).then(
      (s) => s.isSocket(),
      () => false,
    ),
  );
  server = await UapiServer.start({ ifname: OUR_IF, backend });
});

after(async () => {
  await server?.close();
  const child = wggo;
  if (child) await endChild(child, 'SIGTERM');
  await unlink(wggoSock).catch(() => undefined);
  await run('ip', ['netns', 'del', NETNS]);
  backend.wipe();
});

async function both(request: string): Promise<[string, string]> {
  const req = Buffer.from(request, 'latin1');
  const theirs = await uapiExchange(wggoSock, req);
  const ours = await uapiExchange(server!.path, req);
  return [theirs.toString('latin1'), ours.toString('latin1')];
}

/** Peers sorted by key, allowed IPs sorted: wireguard-go prints from a map and a trie. */
function normal(snap: UapiDeviceSnapshot): unknown {
  return {
    privateKey: snap.privateKey ? hex(snap.privateKey) : null,
    listenPort: snap.listenPort ?? 0,
    fwmark: snap.fwmark ?? 0,
    peers: snap.peers
      .map((p) => ({
        pub: hex(p.publicKey),
        psk: p.presharedKey ? hex(p.presharedKey) : null,
        endpoint: p.endpoint ?? null,
        keepalive: p.persistentKeepalive,
        allowedIps: [...p.allowedIps].sort(),
        version: p.protocolVersion,
      }))
      .sort((x, y) => x.pub.localeCompare(y.pub)),
  };
}

async function sameState(step: string): Promise<void> {
  const [theirs, ours] = await both('get=1\n\n');
  assert.deepEqual(
    normal(parseGetResponse(Buffer.from(ours))),
    normal(parseGetResponse(Buffer.from(theirs))),
    step,
  );
}

const set = (...lines: string[]): string => `set=1\n${lines.map((l) => `${l}\n`).join('')}\n`;

const steps: [string, string][] = [
  ['device keys', set(`private_key=${hex(devKey)}`, 'listen_port=51999', 'fwmark=16')],
  [
    'two peers with every field, host bits in a prefix',
    set(
      `public_key=${hex(A)}`,
      `preshared_key=${hex(randomBytes(32))}`,
      'endpoint=127.0.0.1:51820',
      'persistent_keepalive_interval=25',
      'allowed_ip=100.64.1.7/24',
      'allowed_ip=fd00:1::1/64',
      'protocol_version=1',
      `public_key=${hex(B)}`,
      'endpoint=[::1]:51821',
      'allowed_ip=100.64.2.0/24',
    ),
  ],
  ['an allowed IP moves to another peer', set(`public_key=${hex(B)}`, 'allowed_ip=100.64.1.0/24')],
  [
    'replace_allowed_ips',
    set(`public_key=${hex(A)}`, 'replace_allowed_ips=true', 'allowed_ip=100.64.9.0/24'),
  ],
  [
    'update_only: unknown peer skipped, known peer updated',
    set(
      `public_key=${hex(C)}`,
      'update_only=true',
      'allowed_ip=100.64.2.0/24',
      `public_key=${hex(A)}`,
      'update_only=true',
      'persistent_keepalive_interval=0',
    ),
  ],
  ['all-zero preshared key', set(`public_key=${hex(A)}`, `preshared_key=${'0'.repeat(64)}`)],
  ['remove a peer', set(`public_key=${hex(B)}`, 'remove=true')],
  [
    'allowed_ip lines before replace_allowed_ips',
    set(
      `public_key=${hex(A)}`,
      'allowed_ip=10.9.0.0/16',
      'replace_allowed_ips=true',
      'allowed_ip=10.8.0.0/16',
    ),
  ],
  [
    'remove and re-create in one request',
    set(`public_key=${hex(A)}`, 'remove=true', `public_key=${hex(A)}`, 'allowed_ip=10.7.0.0/16'),
  ],
  [
    'one key in two sections',
    set(`public_key=${hex(B)}`, 'allowed_ip=10.6.0.0/16', `public_key=${hex(B)}`, 'endpoint=127.0.0.1:9'),
  ],
  [
    "a section for the device's own key is ignored",
    set(`public_key=${hex(devPub)}`, 'allowed_ip=10.0.0.0/8'),
  ],
  [
    'replace_peers',
    set('replace_peers=true', `public_key=${hex(C)}`, 'allowed_ip=0.0.0.0/0', 'allowed_ip=::/0'),
  ],
  ['a peer whose key the device is about to take', set(`public_key=${hex(cPub)}`)],
  ['the private key of that peer: the peer goes', set(`private_key=${hex(cKey)}`)],
  ['private key removed', set(`private_key=${'0'.repeat(64)}`, 'fwmark=0')],
  ['empty request', set()],
];

test('valid requests: same answers, same state', async () => {
  for (const [step, request] of steps) {
    const [theirs, ours] = await both(request);
    assert.equal(ours, theirs, step);
    await sameState(step);
  }
});

test('invalid requests: same errno, neither changes', async () => {
  await both(set(`private_key=${hex(devKey)}`, `public_key=${hex(A)}`, 'allowed_ip=100.64.1.0/24'));
  const bad: string[] = [
    set('private_key=abcd'),
    set(`private_key=${'g'.repeat(64)}`),
    set('foo=1'),
    set('garbage'),
    set('allowed_ip=10.0.0.0/8'),
    set('listen_port=65536'),
    set('fwmark=4294967296'),
    set('replace_peers=false'),
    set(`public_key=${'a'.repeat(63)}`),
    set(`public_key=${hex(A)}`, 'update_only=true', 'persistent_keepalive_interval=65536'),
    set(`public_key=${hex(A)}`, 'update_only=true', 'protocol_version=2'),
    set(`public_key=${hex(A)}`, 'update_only=true', 'endpoint=example.com:51820'),
    set(`public_key=${hex(A)}`, 'update_only=true', 'endpoint=::1:51820'),
    set(`public_key=${hex(A)}`, 'update_only=true', 'allowed_ip=10.0.0.0/33'),
    set(`public_key=${hex(A)}`, 'update_only=true', 'allowed_ip=10.0.0.0'),
    set(`public_key=${hex(A)}`, 'update_only=true', 'tx_bytes=1'),
    set(`public_key=${hex(A)}`, 'update_only=true', 'listen_port=1'),
    set(`public_key=${hex(A)}`, 'update_only=true', 'remove=yes'),
  ];
  for (const request of bad) {
    const [theirs, ours] = await both(request);
    assert.match(theirs, /^errno=-\d+\n\n$/, request);
    assert.equal(ours, theirs, JSON.stringify(request));
    await sameState(request);
  }
});

test("tenguard refuses to take over a live wireguard-go device's name", async () => {
  await assert.rejects(
    UapiServer.start({ ifname: WGGO_IF, backend: new MemoryUapiBackend() }),
    (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_CONFLICT',
  );
  const [theirs] = await both('get=1\n\n');
  assert.match(theirs, /errno=0\n\n$/);
});
