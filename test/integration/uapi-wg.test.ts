// The unmodified wg(8) tool against a tenguard UAPI socket in /var/run/wireguard, with the
// reference in-memory backend behind it. wg(8) picks the userspace path because the socket
// file exists and answers (ipc-uapi-unix.h), so no network interface is needed. Keys reach
// wg through FIFOs, never through files on disk.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { lstat, mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { x25519 } from '@noble/curves/ed25519.js';
import { MemoryUapiBackend } from '../../src/uapi/memory.js';
import { DEFAULT_UAPI_LIMITS } from '../../src/uapi/protocol.js';
import { UapiServer, uapiSocketPath } from '../../src/uapi/server.js';
import { isRoot, runOk } from '../../src/util/exec.js';

const IFNAME = `tgu${randomBytes(3).toString('hex')}`;
const REFUSED_PORT = 51998;

interface KeyPair {
  priv: string;
  pub: string;
  pubRaw: Buffer;
}

function keyPair(): KeyPair {
  const sk = randomBytes(32);
  sk[0] &= 248;
  sk[31] = (sk[31] & 127) | 64;
  const pk = Buffer.from(x25519.getPublicKey(sk));
  return { priv: sk.toString('base64'), pub: pk.toString('base64'), pubRaw: pk };
}

const psk = (): string => randomBytes(32).toString('base64');

interface WgResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs wg to completion (10 s at most). */
function wg(args: string[]): Promise<WgResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('wg', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.stdout?.on('data', (d) => {
      stdout += d;
    });
    child.stderr?.on('data', (d) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/**
 * Hands secrets to wg as files that are FIFOs in a private directory: the bytes pass
 * through the kernel, never through a disk. (node's stdio pipes are socket pairs, which wg
 * cannot fopen() as /dev/stdin.) `build` turns the FIFO paths into wg's arguments.
 */
async function wgWithSecrets(secrets: string[], build: (paths: string[]) => string[]): Promise<WgResult> {
  const dir = await mkdtemp(join(tmpdir(), 'tgukeys-'));
  const paths = secrets.map((_, i) => join(dir, `secret${i}`));
  try {
    for (const p of paths) await runOk('mkfifo', ['-m', '0600', p]);
    // Each write blocks (in the thread pool) until wg opens the FIFO to read it.
    const writers = secrets.map((secret, i) => writeFile(paths[i], secret));
    try {
      return await wg(build(paths));
    } finally {
      // A FIFO wg never opened still has a writer waiting: open it once to release it.
      for (const p of paths) {
        try {
          closeSync(openSync(p, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK));
        } catch {
          // nothing waiting
        }
      }
      await Promise.allSettled(writers);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function wgOk(args: string[]): Promise<string> {
  const r = await wg(args);
  assert.equal(r.code, 0, `wg ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

async function wgSecretOk(secrets: string[], build: (paths: string[]) => string[]): Promise<string> {
  const r = await wgWithSecrets(secrets, build);
  assert.equal(r.code, 0, `wg ${build(['<secret>', '<secret>']).join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

interface DumpPeer {
  pub: string;
  psk: string;
  endpoint: string;
  allowedIps: string;
  handshake: string;
  rx: string;
  tx: string;
  keepalive: string;
}

async function dump(): Promise<{ iface: string[]; peers: Map<string, DumpPeer> }> {
  const lines = (await wgOk(['show', IFNAME, 'dump'])).trimEnd().split('\n');
  const iface = lines[0].split('\t');
  const peers = new Map<string, DumpPeer>();
  for (const l of lines.slice(1)) {
    const [pub, pskField, endpoint, allowedIps, handshake, rx, tx, keepalive] = l.split('\t');
    peers.set(pub, { pub, psk: pskField, endpoint, allowedIps, handshake, rx, tx, keepalive });
  }
  return { iface, peers };
}

const backend = new MemoryUapiBackend({ portAvailable: (p) => p !== REFUSED_PORT });
let server: UapiServer | null = null;
const sockPath = uapiSocketPath(IFNAME);

const dev = keyPair();
const peerA = keyPair();
const pskA = psk();

before(async () => {
  assert.ok(isRoot(), 'the UAPI integration test needs root (/var/run/wireguard)');
  server = await UapiServer.start({ ifname: IFNAME, backend });
});

after(async () => {
  await server?.close();
  await unlink(sockPath).catch(() => undefined);
  backend.wipe();
});

test('wg show interfaces lists the device', async () => {
  const names = (await wgOk(['show', 'interfaces'])).trim().split(/\s+/);
  assert.ok(names.includes(IFNAME), `${IFNAME} not in ${JSON.stringify(names)}`);
});

test('wg set: private key, port, a peer with every field', async () => {
  await wgSecretOk([`${dev.priv}\n`, `${pskA}\n`], ([skFile, pskFile]) => [
    'set',
    IFNAME,
    'private-key',
    skFile,
    'listen-port',
    '51999',
    'peer',
    peerA.pub,
    'allowed-ips',
    '100.64.1.0/24,fd00:1::/64',
    'endpoint',
    '127.0.0.1:51820',
    'persistent-keepalive',
    '25',
    'preshared-key',
    pskFile,
  ]);
  const snap = backend.snapshot();
  assert.equal(Buffer.from(snap.privateKey as Uint8Array).toString('base64'), dev.priv);
  assert.equal(snap.listenPort, 51999);
  assert.equal(snap.peers.length, 1);
  assert.equal(Buffer.from(snap.peers[0].presharedKey as Uint8Array).toString('base64'), pskA);
});

test('wg show <if> dump: every field', async () => {
  assert.ok(
    backend.recordTraffic(peerA.pubRaw, {
      rxBytes: 67890n,
      txBytes: 12345n,
      lastHandshake: { sec: 1700000000, nsec: 5 },
    }),
  );
  const { iface, peers } = await dump();
  assert.deepEqual(iface, [dev.priv, dev.pub, '51999', 'off']);
  assert.equal(peers.size, 1);
  assert.deepEqual(peers.get(peerA.pub), {
    pub: peerA.pub,
    psk: pskA,
    endpoint: '127.0.0.1:51820',
    allowedIps: '100.64.1.0/24,fd00:1::/64',
    handshake: '1700000000',
    rx: '67890',
    tx: '12345',
    keepalive: '25',
  });
});

test('wg show <if>: the human view, keys hidden', async () => {
  const out = await wgOk(['show', IFNAME]);
  for (const want of [
    `interface: ${IFNAME}`,
    `  public key: ${dev.pub}`,
    '  private key: (hidden)',
    '  listening port: 51999',
    `peer: ${peerA.pub}`,
    '  preshared key: (hidden)',
    '  endpoint: 127.0.0.1:51820',
    '  allowed ips: 100.64.1.0/24, fd00:1::/64',
    '  transfer: 66.30 KiB received, 12.06 KiB sent',
    '  persistent keepalive: every 25 seconds',
  ]) {
    assert.ok(out.includes(`${want}\n`), `missing ${JSON.stringify(want)} in:\n${out}`);
  }
  assert.match(out, /\n {2}latest handshake: .* ago\n/);
  assert.ok(!out.includes(dev.priv) && !out.includes(pskA));
  assert.equal((await wgOk(['show', IFNAME, 'listen-port'])).trim(), '51999');
  assert.equal((await wgOk(['show', IFNAME, 'public-key'])).trim(), dev.pub);
  assert.equal((await wgOk(['show', IFNAME, 'endpoints'])).trim(), `${peerA.pub}\t127.0.0.1:51820`);
  assert.equal((await wgOk(['show', IFNAME, 'fwmark'])).trim(), 'off');
});

test('wg showconf <if>', async () => {
  assert.equal(
    await wgOk(['showconf', IFNAME]),
    [
      '[Interface]',
      'ListenPort = 51999',
      `PrivateKey = ${dev.priv}`,
      '',
      '[Peer]',
      `PublicKey = ${peerA.pub}`,
      `PresharedKey = ${pskA}`,
      'AllowedIPs = 100.64.1.0/24, fd00:1::/64',
      'Endpoint = 127.0.0.1:51820',
      'PersistentKeepalive = 25',
      '',
    ].join('\n'),
  );
});

const peerB = keyPair();
const peerC = keyPair();
const peerD = keyPair();
const dev2 = keyPair();

test('wg setconf replaces the device and all peers', async () => {
  const conf = [
    '[Interface]',
    `PrivateKey = ${dev2.priv}`,
    'ListenPort = 52000',
    'FwMark = 0x10',
    '[Peer]',
    `PublicKey = ${peerB.pub}`,
    'AllowedIPs = 100.64.2.0/24',
    'Endpoint = [::1]:51821',
    '[Peer]',
    `PublicKey = ${peerC.pub}`,
    'AllowedIPs = 100.64.3.0/24, 100.64.4.0/24',
    '',
  ].join('\n');
  await wgSecretOk([conf], ([file]) => ['setconf', IFNAME, file]);
  const { iface, peers } = await dump();
  assert.deepEqual(iface, [dev2.priv, dev2.pub, '52000', '0x10']);
  assert.deepEqual([...peers.keys()].sort(), [peerB.pub, peerC.pub].sort());
  assert.equal(peers.get(peerB.pub)?.endpoint, '[::1]:51821');
  assert.equal(peers.get(peerB.pub)?.psk, '(none)');
  assert.equal(peers.get(peerB.pub)?.keepalive, 'off');
  assert.equal(peers.get(peerC.pub)?.endpoint, '(none)');
  assert.equal(peers.get(peerC.pub)?.allowedIps, '100.64.3.0/24,100.64.4.0/24');
  assert.equal(peers.get(peerC.pub)?.handshake, '0');
});

test('wg addconf adds a peer, which takes a prefix from another', async () => {
  const conf = ['[Peer]', `PublicKey = ${peerD.pub}`, 'AllowedIPs = 100.64.4.0/24, fd00:4::/64', ''].join(
    '\n',
  );
  await wgSecretOk([conf], ([file]) => ['addconf', IFNAME, file]);
  const { iface, peers } = await dump();
  assert.equal(iface[2], '52000');
  assert.equal(peers.size, 3);
  assert.equal(peers.get(peerC.pub)?.allowedIps, '100.64.3.0/24');
  assert.equal(peers.get(peerD.pub)?.allowedIps, '100.64.4.0/24,fd00:4::/64');
});

test('wg syncconf keeps what the file names, removes the rest', async () => {
  const pskB = psk();
  const conf = [
    '[Interface]',
    `PrivateKey = ${dev2.priv}`,
    'ListenPort = 52000',
    '[Peer]',
    `PublicKey = ${peerB.pub}`,
    `PresharedKey = ${pskB}`,
    'AllowedIPs = 100.64.2.0/25, 100.64.9.0/24',
    'PersistentKeepalive = 5',
    '',
  ].join('\n');
  await wgSecretOk([conf], ([file]) => ['syncconf', IFNAME, file]);
  const { peers } = await dump();
  assert.deepEqual([...peers.keys()], [peerB.pub]);
  const b = peers.get(peerB.pub);
  assert.equal(b?.psk, pskB);
  assert.equal(b?.allowedIps, '100.64.2.0/25,100.64.9.0/24');
  assert.equal(b?.keepalive, '5');
  assert.equal(b?.endpoint, '[::1]:51821'); // not in the file: kept
});

test('wg set peer remove', async () => {
  await wgOk(['set', IFNAME, 'peer', peerB.pub, 'remove']);
  assert.equal((await dump()).peers.size, 0);
  assert.equal((await wgOk(['show', IFNAME, 'peers'])).trim(), '');
});

test('many wg processes at once: every change lands, every show succeeds', async () => {
  const peers = Array.from({ length: 16 }, () => keyPair());
  const results = await Promise.all([
    ...peers.map((p, i) => wg(['set', IFNAME, 'peer', p.pub, 'allowed-ips', `100.64.${100 + i}.0/24`])),
    ...peers.map(() => wg(['show', IFNAME, 'dump'])),
  ]);
  for (const r of results) assert.equal(r.code, 0, r.stderr);
  const { peers: shown } = await dump();
  for (const [i, p] of peers.entries()) assert.equal(shown.get(p.pub)?.allowedIps, `100.64.${100 + i}.0/24`);
  for (const p of peers) await wgOk(['set', IFNAME, 'peer', p.pub, 'remove']);
  assert.equal((await dump()).peers.size, 0);
});

test('a refused change is reported by wg with the errno, and changes nothing', async () => {
  const before = await wgOk(['show', IFNAME, 'dump']);
  const r = await wg(['set', IFNAME, 'listen-port', String(REFUSED_PORT), 'peer', peerC.pub]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /Unable to modify interface: Address already in use/);
  assert.equal(await wgOk(['show', IFNAME, 'dump']), before);
});

test('hostile input on the socket is answered or dropped; the device is unharmed', async () => {
  await wgOk(['set', IFNAME, 'peer', peerA.pub, 'allowed-ips', '100.64.1.0/24']);
  const before = await wgOk(['show', IFNAME, 'dump']);
  const raw = (data: Buffer | string, halfClose: boolean): Promise<string> =>
    new Promise((resolve) => {
      const s = connect(sockPath);
      let got = '';
      const timer = setTimeout(() => s.destroy(), 5000);
      s.on('connect', () => {
        s.write(data);
        if (halfClose) s.end();
      });
      s.on('data', (d) => {
        got += d;
      });
      s.on('error', () => undefined);
      s.on('close', () => {
        clearTimeout(timer);
        resolve(got);
      });
    });
  assert.equal(await raw(randomBytes(4096), false), 'errno=-71\n\n');
  const overLines = DEFAULT_UAPI_LIMITS.maxLines + 10;
  assert.equal(await raw(`set=1\n${'fwmark=1\n'.repeat(overLines)}\n`, false), 'errno=-90\n\n');
  assert.equal(await raw(`set=1\nreplace_peers=true\npublic_key=${'ab'.repeat(32)}\n`, true), '');
  assert.equal(await raw('set=1\nlisten_port=1\nendpoint=1.2.3.4:5\n\n', true), 'errno=-22\n\n');
  assert.equal(
    await raw(`set=1\npublic_key=${'ab'.repeat(32)}\nendpoint=example.com:51820\n\n`, true),
    'errno=-22\n\n',
  );
  assert.equal(await wgOk(['show', IFNAME, 'dump']), before);
});

test('wg set private-key with an all-zero key removes it', async () => {
  await wgSecretOk([`${Buffer.alloc(32).toString('base64')}\n`], ([file]) => [
    'set',
    IFNAME,
    'private-key',
    file,
  ]);
  assert.equal((await wgOk(['show', IFNAME, 'private-key'])).trim(), '(none)');
  assert.equal(backend.snapshot().privateKey, null);
});

test('after close the socket is gone and wg no longer lists the device', async () => {
  await server?.close();
  server = null;
  await assert.rejects(lstat(sockPath), { code: 'ENOENT' });
  const names = (await wgOk(['show', 'interfaces'])).trim().split(/\s+/);
  assert.ok(!names.includes(IFNAME));
});
