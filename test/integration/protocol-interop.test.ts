// Interoperability of the protocol engine with wireguard-go, both roles: in one network namespace,
// three wireguard-go instances (kernel TUN, addresses 100.64.20{0,1,2}.2) and a child process
// running the engine over UDP on the namespace's loopback (protocol-interop-peer.ts). The engine
// initiates to wireguard-go #1 and its pings are answered by the namespace's kernel;
// wireguard-go #2 (with a preshared key) initiates to the engine's second identity, found by
// MAC1, when the namespace pings 100.64.201.1; with the engine under load, wireguard-go #3 gets a
// cookie reply, and its retry with MAC2 is accepted (a ping to 100.64.202.1 then passes);
// wireguard-go #4, flooded into its own under-load state, sends the engine a cookie reply that
// the engine consumes, and the engine's retry with MAC2 is accepted.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lstat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { generatePrivateKey, keyToBase64, keyToHex, publicKeyOf } from '../../src/protocol/crypto.js';
import { endChild, isRoot, run, runInOk, runOk } from '../../src/util/exec.js';

const PEER_SCRIPT = fileURLToPath(new URL('./protocol-interop-peer.js', import.meta.url));
const TAG = randomBytes(3).toString('hex');
const NETNS = `tgpi${TAG}`;
const IF1 = `tgpa${TAG}`;
const IF2 = `tgpb${TAG}`;
const IF3 = `tgpc${TAG}`;
const IF4 = `tgpd${TAG}`;
const WG_PORT1 = 51820;
const WG_PORT2 = 51822;
const WG_PORT3 = 51823;
const WG_PORT4 = 51824;
const JS_PORT = 51821;

const wgKey1 = generatePrivateKey();
const wgKey2 = generatePrivateKey();
const jsKey1 = generatePrivateKey();
const jsKey2 = generatePrivateKey();
const wgKey3 = generatePrivateKey();
const jsKey3 = generatePrivateKey();
const wgKey4 = generatePrivateKey();
const jsKey4 = generatePrivateKey();
const psk2 = generatePrivateKey();

const children: ChildProcess[] = [];

function startWireguardGo(ifname: string, env: Record<string, string> = {}): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', NETNS, 'wireguard-go', '-f', ifname], {
    stdio: ['ignore', 'ignore', 'ignore'],
    env: { ...process.env, LOG_LEVEL: 'error', WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1', ...env },
  });
  children.push(child);
  return child;
}

async function waitFor(what: string, cond: () => Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Configures a wireguard-go device over its UAPI socket (keys never touch the disk). */
async function uapiSet(ifname: string, lines: string[]): Promise<void> {
  const path = `/var/run/wireguard/${ifname}.sock`;
  await waitFor(`${path}`, () =>
    lstat(path).then(
      (st) => st.isSocket(),
      () => false,
    ),
  );
  const answer = await new Promise<string>((resolve, reject) => {
    const sock = connect(path);
    let data = '';
    sock.setEncoding('utf8');
    sock.on('data', (chunk) => {
      data += chunk;
      if (data.endsWith('\n\n')) {
        sock.end();
        resolve(data);
      }
    });
    sock.on('error', reject);
    sock.write(`set=1\n${lines.join('\n')}\n\n`);
  });
  assert.equal(answer, 'errno=0\n\n', `UAPI set on ${ifname}`);
}

before(async () => {
  assert.ok(isRoot(), 'this test needs root (network namespace, TUN)');
  await runOk('ip', ['netns', 'add', NETNS]);
  await runInOk(NETNS, 'ip', ['link', 'set', 'lo', 'up']);
  for (const ifname of [IF1, IF2, IF3]) startWireguardGo(ifname);
  // One OS thread: its handshake queue then fills faster than it drains during the flood.
  startWireguardGo(IF4, { GOMAXPROCS: '1' });
  await uapiSet(IF1, [
    `private_key=${keyToHex(wgKey1)}`,
    `listen_port=${WG_PORT1}`,
    `public_key=${keyToHex(publicKeyOf(jsKey1))}`,
    'allowed_ip=100.64.200.1/32',
  ]);
  await uapiSet(IF2, [
    `private_key=${keyToHex(wgKey2)}`,
    `listen_port=${WG_PORT2}`,
    `public_key=${keyToHex(publicKeyOf(jsKey2))}`,
    `preshared_key=${keyToHex(psk2)}`,
    `endpoint=127.0.0.1:${JS_PORT}`,
    'allowed_ip=100.64.201.1/32',
  ]);
  await uapiSet(IF3, [
    `private_key=${keyToHex(wgKey3)}`,
    `listen_port=${WG_PORT3}`,
    `public_key=${keyToHex(publicKeyOf(jsKey3))}`,
    `endpoint=127.0.0.1:${JS_PORT}`,
    'allowed_ip=100.64.202.1/32',
  ]);
  await uapiSet(IF4, [
    `private_key=${keyToHex(wgKey4)}`,
    `listen_port=${WG_PORT4}`,
    `public_key=${keyToHex(publicKeyOf(jsKey4))}`,
    'allowed_ip=100.64.203.1/32',
  ]);
  for (const [ifname, address] of [
    [IF1, '100.64.200.2/24'],
    [IF2, '100.64.201.2/24'],
    [IF3, '100.64.202.2/24'],
    [IF4, '100.64.203.2/24'],
  ]) {
    await runInOk(NETNS, 'ip', ['addr', 'add', address, 'dev', ifname]);
    await runInOk(NETNS, 'ip', ['link', 'set', ifname, 'up']);
  }
});

after(async () => {
  for (const child of children) {
    await endChild(child, 'SIGTERM');
  }
  for (const ifname of [IF1, IF2, IF3, IF4])
    await unlink(`/var/run/wireguard/${ifname}.sock`).catch(() => undefined);
  await run('ip', ['netns', 'del', NETNS]);
  psk2.fill(0);
});

test('the engine interoperates with wireguard-go: initiator, responder with PSK, cookies under load', async () => {
  const config = {
    jsKey1: keyToBase64(jsKey1),
    jsKey2: keyToBase64(jsKey2),
    jsKey3: keyToBase64(jsKey3),
    wgPub1: keyToBase64(publicKeyOf(wgKey1)),
    wgPub2: keyToBase64(publicKeyOf(wgKey2)),
    wgPub3: keyToBase64(publicKeyOf(wgKey3)),
    jsKey4: keyToBase64(jsKey4),
    wgPub4: keyToBase64(publicKeyOf(wgKey4)),
    wgPort4: WG_PORT4,
    psk2: keyToBase64(psk2),
    jsPort: JS_PORT,
    wgPort1: WG_PORT1,
  };
  const child = spawn('ip', ['netns', 'exec', NETNS, process.execPath, PEER_SCRIPT, JSON.stringify(config)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  children.push(child);
  const events: { event: string; seq?: number; counters?: Record<string, unknown> }[] = [];
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  lines.on('line', (line) => events.push(JSON.parse(line)));
  const count = (name: string) => events.filter((e) => e.event === name).length;
  await waitFor('the engine to be ready', async () => count('ready') > 0);

  // The namespace pings the engine's second identity through wireguard-go #2, which initiates.
  const ping2 = await run('ip', [
    'netns',
    'exec',
    NETNS,
    'ping',
    '-c',
    '3',
    '-i',
    '0.3',
    '-W',
    '2',
    '100.64.201.1',
  ]);
  assert.equal(
    ping2.code,
    0,
    `ping through wireguard-go #2 to the engine failed: ${ping2.stdout}${ping2.stderr}`,
  );
  await waitFor('echo replies through wireguard-go #1', async () => count('reply1') >= 4);

  // Under load, wireguard-go #3's first initiation gets a cookie reply; its retry carries MAC2.
  child.stdin?.write('load\n');
  await waitFor('the engine to be under load', async () => count('loaded') > 0);
  const ping3 = await run('ip', ['netns', 'exec', NETNS, 'ping', '-c', '1', '-w', '15', '100.64.202.1'], {
    timeoutMs: 20_000,
  });
  assert.equal(
    ping3.code,
    0,
    `ping through wireguard-go #3 under load failed: ${ping3.stdout}${ping3.stderr}`,
  );

  // wireguard-go under load answers the engine's initiation with a cookie reply.
  child.stdin?.write('flood\n');
  await waitFor('an echo reply through wireguard-go #4', async () => count('reply4') > 0, 15_000);

  child.stdin?.write('quit\n');
  await new Promise((r) => child.once('exit', r));
  assert.ok(count('request2') >= 3, `echo requests from wireguard-go #2: ${count('request2')}`);
  assert.ok(count('request3') >= 1, `echo requests from wireguard-go #3: ${count('request3')}`);
  const counters = events.find((e) => e.event === 'counters')?.counters as {
    dropped: Record<string, number>;
    cookieRepliesSent: number;
    cookieRepliesConsumed: number;
  };
  assert.ok(counters.cookieRepliesConsumed >= 1, "wireguard-go's cookie reply was consumed");
  assert.ok(counters.cookieRepliesSent >= 1, 'a cookie reply was sent under load');
  // Expected drops: initiations answered with our cookie replies, and wireguard-go's cookie
  // replies to the flood (addressed to its random sender indices).
  const expected = new Set(['cookieRequired', 'unknownIndex']);
  for (const [k, v] of Object.entries(counters.dropped))
    if (!expected.has(k)) assert.equal(v, 0, `dropped.${k}`);
  assert.ok(counters.dropped.unknownIndex <= 600);
  assert.equal(counters.dropped.cookieRequired, counters.cookieRepliesSent);

  const show1 = await runInOk(NETNS, 'wg', ['show', IF1, 'latest-handshakes']);
  const show2 = await runInOk(NETNS, 'wg', ['show', IF2, 'transfer']);
  assert.match(show1, /\t[1-9][0-9]*\n?$/m, 'wireguard-go #1 recorded a handshake');
  const [, rx, tx] = show2.trim().split('\t');
  assert.ok(Number(rx) > 0 && Number(tx) > 0, `wireguard-go #2 transfer ${show2}`);
});
