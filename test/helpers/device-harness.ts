// Shared pieces of the device integration tests (test/integration/device-*.test.ts): which
// implementation pairs to cover (TG_DEVICE_IMPLS), a tunnel between an initiator and a
// responder in a two-namespace testbed, probes (ping, `wg show dump`, RSS, the kernel's UDP
// counters, tenguard's stats extension), capture of real packets with tcpdump, and, when this
// file is run as a program inside a namespace, the hostile-traffic generator:
//
//   ip netns exec <ns> node device-harness.js flood   < FloodSpec as JSON on stdin
//
// which prints one FloodResult as JSON on stdout. It is a separate process because a socket
// belongs to the namespace of the process that opens it.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes, randomFillSync, randomInt } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  configureAddresses,
  configureWg,
  type Implementation,
  type Side,
  startDevice,
  stopDevice,
  type Testbed,
  uapiSocketPath,
} from '../../src/bench/testbed.js';
import {
  MESSAGE_COOKIE_REPLY_SIZE,
  MESSAGE_COOKIE_REPLY_TYPE,
  MESSAGE_INITIATION_SIZE,
  MESSAGE_INITIATION_TYPE,
  MESSAGE_RESPONSE_TYPE,
  MESSAGE_TRANSPORT_TYPE,
} from '../../src/protocol/constants.js';
import { cookieKeyFor, mac1KeyFor } from '../../src/protocol/cookie.js';
import { keyFromBase64, mac, xaeadOpen } from '../../src/protocol/crypto.js';
import {
  COOKIE_REPLY_OFFSET_COOKIE,
  COOKIE_REPLY_OFFSET_NONCE,
  COOKIE_REPLY_OFFSET_RECEIVER,
  INITIATION_OFFSET_EPHEMERAL,
  INITIATION_OFFSET_MAC1,
  INITIATION_OFFSET_MAC2,
  INITIATION_OFFSET_SENDER,
  TRANSPORT_OFFSET_RECEIVER,
} from '../../src/protocol/messages.js';
import { uapiStats } from '../../src/uapi/client.js';
import { TgError } from '../../src/util/errors.js';
import { run, runIn } from '../../src/util/exec.js';
import { PCAP_HEADER_SIZE, readPcap } from '../../src/util/pcap.js';

const HARNESS = fileURLToPath(import.meta.url);
const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));

/** Tunnel MTU: a 1500-byte wire minus the 80 bytes of IPv6 + UDP + WireGuard overhead. */
export const TUNNEL_MTU = 1420;

// --- Which pairs to cover -----------------------------------------------------------------

/** One tested pair: the initiator sends first and knows the responder's endpoint; the
 * responder has no endpoint for the initiator and must learn it from the handshake. */
export interface Combination {
  initiator: Implementation;
  responder: Implementation;
  /** 'tenguard -> wireguard-go' */
  name: string;
}

const IMPLEMENTATIONS: readonly Implementation[] = ['wireguard-go', 'tenguard'];

function combination(initiator: Implementation, responder: Implementation): Combination {
  return { initiator, responder, name: `${initiator} -> ${responder}` };
}

const ALL_COMBINATIONS: readonly Combination[] = [
  combination('wireguard-go', 'wireguard-go'),
  combination('tenguard', 'wireguard-go'),
  combination('wireguard-go', 'tenguard'),
  combination('tenguard', 'tenguard'),
];

/** Whether `node bin/tenguard.js device --help` exits 0, and what it said otherwise. */
export async function tenguardDeviceAvailable(): Promise<{ ok: boolean; why: string }> {
  const r = await run(process.execPath, [BIN, 'device', '--help'], { timeoutMs: 20_000 });
  if (r.code === 0) return { ok: true, why: "'tenguard device --help' exits 0" };
  const said = (r.stderr.trim().split('\n')[0] ?? '').slice(0, 160);
  return { ok: false, why: `'tenguard device --help' exited ${r.code}${said ? `: ${said}` : ''}` };
}

/**
 * The pairs to test. TG_DEVICE_IMPLS is a comma-separated list of `initiator:responder`
 * (each `wireguard-go` or `tenguard`), or `all`. Unset or empty: every pair whose
 * implementations exist (wireguard-go:wireguard-go always; the tenguard pairs once
 * `tenguard device --help` exits 0). A pair asked for explicitly is always run, so a missing
 * implementation then fails the test instead of being left out.
 */
export async function selectCombinations(): Promise<{ combinations: Combination[]; note: string }> {
  const spec = (process.env.TG_DEVICE_IMPLS ?? '').trim();
  if (spec === '') {
    const tg = await tenguardDeviceAvailable();
    const combinations = ALL_COMBINATIONS.filter(
      (c) => tg.ok || (c.initiator !== 'tenguard' && c.responder !== 'tenguard'),
    );
    const names = combinations.map((c) => c.name).join(', ');
    const why = tg.ok ? tg.why : `tenguard pairs left out: ${tg.why}`;
    return { combinations, note: `covering ${names} (TG_DEVICE_IMPLS unset; ${why})` };
  }
  if (spec === 'all') {
    return {
      combinations: [...ALL_COMBINATIONS],
      note: `covering ${ALL_COMBINATIONS.map((c) => c.name).join(', ')} (TG_DEVICE_IMPLS=all)`,
    };
  }
  const combinations: Combination[] = [];
  for (const item of spec.split(',')) {
    const [i, r, extra] = item.trim().split(':');
    const known = (x: string | undefined): x is Implementation =>
      x !== undefined && (IMPLEMENTATIONS as readonly string[]).includes(x);
    if (extra !== undefined || !known(i) || !known(r))
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        `TG_DEVICE_IMPLS: '${item}' is not 'initiator:responder' with each one of ${IMPLEMENTATIONS.join(', ')} (or 'all')`,
      );
    if (!combinations.some((c) => c.initiator === i && c.responder === r))
      combinations.push(combination(i, r));
  }
  return {
    combinations,
    note: `covering ${combinations.map((c) => c.name).join(', ')} (TG_DEVICE_IMPLS=${spec})`,
  };
}

/** The implementations that occur in `combinations`, each once. */
export function implementationsOf(combinations: readonly Combination[]): Implementation[] {
  return IMPLEMENTATIONS.filter((impl) =>
    combinations.some((c) => c.initiator === impl || c.responder === impl),
  );
}

/**
 * A testbed prefix: 'tgd', a one-letter tag for the test file, a digit for the pair and three
 * random hex digits (8 characters, the most createTestbed takes; '<prefix>aw' is 10).
 */
export function devicePrefix(tag: string, index: number): string {
  if (!/^[a-z]$/.test(tag) || !Number.isInteger(index) || index < 0 || index > 9)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `bad prefix tag '${tag}' / index ${index}`);
  return `tgd${tag}${index}${randomBytes(2).toString('hex').slice(0, 3)}`;
}

// --- The tunnel ---------------------------------------------------------------------------

export interface PairOptions {
  v6Outer?: boolean;
  /** Preshared key on the initiator's and on the responder's side (base64). */
  psk?: { initiator: string; responder: string };
  mtu?: number;
}

/** Side a of a testbed is the initiator, side b the responder. */
export function roles(tb: Testbed): { initiator: Side; responder: Side } {
  return { initiator: tb.a, responder: tb.b };
}

/**
 * Starts both devices of the pair and configures them with `wg` and `ip`: the initiator
 * (side a) with the responder's endpoint, the responder (side b) without one.
 */
export async function startPair(tb: Testbed, combo: Combination, opts: PairOptions = {}): Promise<void> {
  const { initiator, responder } = roles(tb);
  const mtu = opts.mtu ?? TUNNEL_MTU;
  await startDevice(initiator, combo.initiator);
  await startDevice(responder, combo.responder);
  await configureWg(initiator, responder, { v6Outer: opts.v6Outer, psk: opts.psk?.initiator });
  await configureWg(responder, initiator, { psk: opts.psk?.responder, endpoint: false });
  await configureAddresses(initiator.ns, initiator, mtu);
  await configureAddresses(responder.ns, responder, mtu);
}

export async function stopPair(tb: Testbed): Promise<void> {
  await stopDevice(tb.a);
  await stopDevice(tb.b);
}

/** A fresh random preshared key, base64. */
export function presharedKey(): string {
  return randomBytes(32).toString('base64');
}

// --- Probes -------------------------------------------------------------------------------

/** The largest pause between consecutive replies, in seconds. */
export function largestGap(replyTimes: readonly number[]): number {
  let gap = 0;
  for (let i = 1; i < replyTimes.length; i++) gap = Math.max(gap, replyTimes[i] - replyTimes[i - 1]);
  return gap;
}

export interface DumpPeer {
  publicKey: string;
  /** A short digest of the preshared key (the key itself is not kept), null when none. */
  pskDigest: string | null;
  endpoint: string | null;
  allowedIps: string[];
  /** Unix seconds of the latest completed handshake, 0 when none. */
  latestHandshake: number;
  rxBytes: number;
  txBytes: number;
}

export interface Dump {
  publicKey: string;
  listenPort: number;
  peers: DumpPeer[];
}

/** A short digest that identifies a key without revealing it. */
export function keyDigest(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 12);
}

/**
 * `wg show <tun> dump`, parsed. The real wg tool reads the device over its UAPI socket, so
 * this checks the device's `get=1` too. The private key in the first line is dropped.
 */
export async function wgDump(ns: string, tun: string): Promise<Dump> {
  const r = await runIn(ns, 'wg', ['show', tun, 'dump']);
  if (r.code !== 0)
    throw new TgError('TG_ERR_COMMAND_FAILED', `wg show ${tun} dump exited ${r.code}: ${r.stderr.trim()}`);
  const lines = r.stdout.trim().split('\n');
  const head = (lines[0] ?? '').split('\t');
  if (head.length !== 4)
    throw new TgError('TG_ERR_COMMAND_FAILED', `wg show ${tun} dump: unexpected interface line`);
  const none = (x: string): string | null => (x === '(none)' || x === 'off' ? null : x);
  const peers = lines.slice(1).map((line): DumpPeer => {
    const f = line.split('\t');
    if (f.length !== 8)
      throw new TgError('TG_ERR_COMMAND_FAILED', `wg show ${tun} dump: unexpected peer line`);
    const psk = none(f[1]);
    return {
      publicKey: f[0],
      pskDigest: psk === null ? null : keyDigest(psk),
      endpoint: none(f[2]),
      allowedIps: f[3] === '(none)' ? [] : f[3].split(','),
      latestHandshake: Number(f[4]),
      rxBytes: Number(f[5]),
      txBytes: Number(f[6]),
    };
  });
  return { publicKey: head[1], listenPort: Number(head[2]), peers };
}

/** The one peer of a side's device (the tests configure exactly one). */
export async function onlyPeer(s: Side): Promise<DumpPeer> {
  const d = await wgDump(s.ns, s.tun);
  if (d.peers.length !== 1)
    throw new TgError('TG_ERR_COMMAND_FAILED', `${s.tun}: expected one peer, wg shows ${d.peers.length}`);
  return d.peers[0];
}

/** The device process's pid (`ip netns exec` execs the device, so it is the child's own). */
export function devicePid(s: Side): number {
  const pid = s.proc?.pid;
  if (pid === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no device running for ${s.tun}`);
  return pid;
}

/** VmRSS of a process in KiB; null once the process is gone. */
export function rssKiB(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Whether the process exists and has not exited (a zombie waiting to be reaped has). */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/**
 * UDP datagrams the kernel handed to sockets of namespace `ns` (InDatagrams counts at
 * recvmsg, so: datagrams some socket actually read), IPv4 and IPv6 together, and those it
 * dropped for want of buffer room.
 */
export async function udpCounters(ns: string): Promise<{ inDatagrams: number; rcvbufErrors: number }> {
  const v4 = await runIn(ns, 'cat', ['/proc/net/snmp']);
  const v6 = await runIn(ns, 'cat', ['/proc/net/snmp6']);
  const udp = v4.stdout.split('\n').filter((l) => l.startsWith('Udp: '));
  if (udp.length < 2) throw new TgError('TG_ERR_COMMAND_FAILED', `no Udp counters in ${ns}`);
  const names = udp[0].split(/\s+/);
  const values = udp[1].split(/\s+/).map(Number);
  const v4Of = (name: string): number => values[names.indexOf(name)] ?? 0;
  const v6Of = (name: string): number => {
    const m = new RegExp(`^Udp6${name}\\s+(\\d+)`, 'm').exec(v6.stdout);
    return m ? Number(m[1]) : 0;
  };
  return {
    inDatagrams: v4Of('InDatagrams') + v6Of('InDatagrams'),
    rcvbufErrors: v4Of('RcvbufErrors') + v6Of('RcvbufErrors'),
  };
}

/** The device's `tenguard-stats` counters (uapiStats: rejects an answer off the contract). */
export function tenguardStats(s: Side): Promise<Map<string, number>> {
  return uapiStats(uapiSocketPath(s.tun));
}

/** The sum of the `dropped.*` counters. */
export function droppedTotal(stats: ReadonlyMap<string, number>): number {
  let n = 0;
  for (const [k, v] of stats) if (k.startsWith('dropped.')) n += v;
  return n;
}

/** The pid that holds the listening UAPI socket of interface `tun`, among the processes of `ns`. */
export async function uapiSocketOwner(ns: string, tun: string): Promise<number | null> {
  const path = uapiSocketPath(tun);
  const pids = (await run('ip', ['netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean).map(Number);
  for (const pid of pids) {
    let unix: string;
    try {
      unix = readFileSync(`/proc/${pid}/net/unix`, 'utf8');
    } catch {
      continue;
    }
    // Num RefCount Protocol Flags Type St Inode Path
    const inodes = new Set(
      unix
        .split('\n')
        .map((l) => l.trim().split(/\s+/))
        .filter((f) => f[7] === path)
        .map((f) => f[6]),
    );
    if (inodes.size === 0) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target = '';
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m && inodes.has(m[1])) return pid;
    }
  }
  return null;
}

/** Polls `cond` every 50 ms until it holds or `timeoutMs` passes; whether it held. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits for a child we own to exit; its exit code, or null on timeout. */
export function waitExit(child: ChildProcess, timeoutMs: number): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(null), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(t);
      resolve(code);
    });
  });
}

// --- Capture ------------------------------------------------------------------------------

const LINKTYPE_ETHERNET = 1;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const IPPROTO_UDP = 17;

/** The UDP payloads in a pcap file of Ethernet frames (unfragmented IPv4/IPv6 only). */
export function udpPayloadsOfPcap(pcap: Buffer): Buffer[] {
  if (pcap.length < PCAP_HEADER_SIZE) return [];
  const { linktype, records } = readPcap(pcap);
  if (linktype !== LINKTYPE_ETHERNET)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `pcap link type ${linktype} is not Ethernet`);
  const out: Buffer[] = [];
  for (const { data: frame } of records) {
    if (frame.length < 14) continue;
    const ethertype = frame.readUInt16BE(12);
    let udp: number;
    if (ethertype === ETHERTYPE_IPV4) {
      const ihl = (frame[14] & 0x0f) * 4;
      const fragmented = (frame.readUInt16BE(14 + 6) & 0x3fff) !== 0;
      if (frame[14 + 9] !== IPPROTO_UDP || fragmented) continue;
      udp = 14 + ihl;
    } else if (ethertype === ETHERTYPE_IPV6) {
      if (frame[14 + 6] !== IPPROTO_UDP) continue;
      udp = 14 + 40;
    } else continue;
    if (frame.length < udp + 8) continue;
    const len = frame.readUInt16BE(udp + 4) - 8;
    if (len < 0 || frame.length < udp + 8 + len) continue;
    out.push(Buffer.from(frame.subarray(udp + 8, udp + 8 + len)));
  }
  return out;
}

/**
 * Captures, on `iface` in `ns`, up to `count` WireGuard transport messages (type 4) sent to
 * UDP port `port`, while `during()` makes traffic; bounded by `timeoutMs`. Returns their UDP
 * payloads. tcpdump writes a pcap stream to its stdout (-w -), read here in memory.
 */
export async function captureTransport(
  ns: string,
  iface: string,
  port: number,
  count: number,
  timeoutMs: number,
  during: () => Promise<unknown>,
): Promise<Buffer[]> {
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      ns,
      'tcpdump',
      '-i',
      iface,
      '-n',
      '-U',
      '--immediate-mode',
      '-s',
      '2048',
      '-c',
      String(count),
      '-w',
      '-',
      `udp dst port ${port} and udp[8] = ${MESSAGE_TRANSPORT_TYPE}`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const chunks: Buffer[] = [];
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => chunks.push(d));
  const listening = new Promise<boolean>((resolve) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes('listening on')) resolve(true);
    });
    child.once('exit', () => resolve(false));
  });
  const closed = new Promise<void>((r) => child.once('close', () => r()));
  const timer = setTimeout(() => child.kill('SIGINT'), timeoutMs);
  try {
    if (!(await listening))
      throw new TgError('TG_ERR_COMMAND_FAILED', `tcpdump did not start: ${stderr.trim()}`);
    await during();
    // tcpdump ends by itself after `count` packets; otherwise the timer (or this) stops it.
    if (!(await waitFor(() => child.exitCode !== null, 2000))) child.kill('SIGINT');
    await closed;
  } finally {
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  return udpPayloadsOfPcap(Buffer.concat(chunks));
}

/** The receiver index of a transport message. */
export function receiverIndexOf(transport: Buffer): number {
  return transport.readUInt32LE(TRANSPORT_OFFSET_RECEIVER);
}

// --- Hostile traffic ----------------------------------------------------------------------

export type FloodKind =
  | 'random'
  | 'truncated-initiation'
  | 'oversized'
  | 'wrong-mac1'
  | 'replay'
  | 'tampered'
  | 'valid-mac1';

export interface FloodSpec {
  kind: FloodKind;
  /** Target address (IPv4 or IPv6 literal) and UDP port. */
  address: string;
  port: number;
  /** Datagrams the socket must accept for sending (the kernel may still drop some). */
  count: number;
  /** The target's public key (base64): needed by every kind that computes a MAC1. */
  responderPublicKey?: string;
  /** Real transport messages (hex), for 'replay' and 'tampered'. */
  packets?: string[];
  /** A receiver index the target knows, written into some 'oversized' messages. */
  receiverIndex?: number;
  /** Send at most this many datagrams per second (default: as fast as the socket takes them). */
  pps?: number;
  /** Give up after this long even if `count` was not reached (default 30 s). */
  maxMs?: number;
  /** Keep receiving answers this long after the last send (default 300 ms). */
  lingerMs?: number;
  /** Source address to send from (default: any); the namespace must own it. */
  source?: string;
  /** Source port (default: any). */
  sourcePort?: number;
}

export interface FloodResult {
  kind: FloodKind;
  sent: number;
  elapsedMs: number;
  /** 'native' (sendmmsg batches) or 'dgram' (node:dgram, when the addon is not usable). */
  socket: 'native' | 'dgram';
  /** Datagrams that came back, and how many of them were cookie replies (type 3, 64 bytes). */
  answers: number;
  cookieReplies: number;
  /** Cookie replies opened with the responder's cookie key and the MAC1 of our initiation. */
  cookiesChecked: number;
  cookiesValid: number;
}

/** Runs the flood generator inside `ns` (see the file header) and returns its result. */
export async function flood(ns: string, spec: FloodSpec): Promise<FloodResult> {
  const limit = (spec.maxMs ?? 30_000) + (spec.lingerMs ?? 300) + 15_000;
  const r = await runIn(ns, process.execPath, [HARNESS, 'flood'], {
    input: JSON.stringify(spec),
    timeoutMs: limit,
  });
  if (r.code !== 0)
    throw new TgError(
      'TG_ERR_COMMAND_FAILED',
      `flood ${spec.kind} exited ${r.code}: ${r.stderr.trim().slice(-800)}`,
    );
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as FloodResult;
}

/** Largest datagram a UDP socket sends over IPv4 (65535 - 20 - 8). */
const MAX_UDP_PAYLOAD_V4 = 65_507;
const RANDOM_POOL_SIZE = 1 << 17;
const BATCH = 64;
const SLOT = 65_536;

/** Fills one datagram of the given kind into out[off ...] and returns its length. */
type Maker = (i: number, out: Buffer, off: number) => number;

function makerFor(spec: FloodSpec): { make: Maker; mac1s: Buffer | null } {
  const pool = randomBytes(RANDOM_POOL_SIZE);
  const responder = spec.responderPublicKey === undefined ? null : keyFromBase64(spec.responderPublicKey);
  const mac1Key = responder === null ? null : mac1KeyFor(responder);
  const needKey = (): Buffer => {
    if (mac1Key === null)
      throw new TgError('TG_ERR_INVALID_ARGUMENT', `${spec.kind} needs responderPublicKey`);
    return mac1Key;
  };
  const packets = (spec.packets ?? []).map((h) => Buffer.from(h, 'hex'));
  const needPackets = (): Buffer[] => {
    if (packets.length === 0) throw new TgError('TG_ERR_INVALID_ARGUMENT', `${spec.kind} needs packets`);
    return packets;
  };
  /** An initiation with random fields (sender index i) and a MAC1 under `key`; MAC2 zero. */
  const initiation = (i: number, key: Buffer, out: Buffer, off: number): Buffer => {
    const m = out.subarray(off, off + MESSAGE_INITIATION_SIZE);
    randomFillSync(m, INITIATION_OFFSET_EPHEMERAL, INITIATION_OFFSET_MAC1 - INITIATION_OFFSET_EPHEMERAL);
    m.writeUInt32LE(MESSAGE_INITIATION_TYPE, 0);
    m.writeUInt32LE(i >>> 0, INITIATION_OFFSET_SENDER);
    const m1 = mac(key, m.subarray(0, INITIATION_OFFSET_MAC1));
    m.set(m1, INITIATION_OFFSET_MAC1);
    m.fill(0, INITIATION_OFFSET_MAC2, MESSAGE_INITIATION_SIZE);
    return Buffer.from(m1);
  };
  switch (spec.kind) {
    case 'random':
      return {
        mac1s: null,
        make: (_i, out, off) => {
          const len = randomInt(0, 1473);
          randomFillSync(out, off, len);
          return len;
        },
      };
    case 'truncated-initiation': {
      const key = needKey();
      return {
        mac1s: null,
        make: (i, out, off) => {
          initiation(i, key, out, off);
          return randomInt(1, MESSAGE_INITIATION_SIZE);
        },
      };
    }
    case 'wrong-mac1': {
      // Half carry a MAC1 keyed for another public key, half random bytes as MAC1.
      const other = mac1KeyFor(randomBytes(32));
      return {
        mac1s: null,
        make: (i, out, off) => {
          if (i % 2 === 0) initiation(i, other, out, off);
          else {
            initiation(i, needKey(), out, off);
            randomFillSync(out, off + INITIATION_OFFSET_MAC1, 16);
          }
          return MESSAGE_INITIATION_SIZE;
        },
      };
    }
    case 'oversized': {
      // Lengths 1500..65507; the header claims each message type in turn (a transport message
      // with a receiver index the target knows), the rest is random.
      const types = [
        MESSAGE_INITIATION_TYPE,
        MESSAGE_RESPONSE_TYPE,
        MESSAGE_COOKIE_REPLY_TYPE,
        MESSAGE_TRANSPORT_TYPE,
      ];
      return {
        mac1s: null,
        make: (i, out, off) => {
          const len = randomInt(1500, MAX_UDP_PAYLOAD_V4 + 1);
          const from = randomInt(0, RANDOM_POOL_SIZE - len);
          pool.copy(out, off, from, from + len);
          const type = types[i % types.length];
          out.writeUInt32LE(type, off);
          if (type === MESSAGE_TRANSPORT_TYPE && spec.receiverIndex !== undefined)
            out.writeUInt32LE(spec.receiverIndex >>> 0, off + TRANSPORT_OFFSET_RECEIVER);
          return len;
        },
      };
    }
    case 'replay': {
      const ps = needPackets();
      return {
        mac1s: null,
        make: (i, out, off) => {
          const p = ps[i % ps.length];
          p.copy(out, off);
          return p.length;
        },
      };
    }
    case 'tampered': {
      // One to three bits flipped in the counter, ciphertext or tag (never in type or
      // receiver index, so every message reaches authentication).
      const ps = needPackets();
      return {
        mac1s: null,
        make: (i, out, off) => {
          const p = ps[i % ps.length];
          p.copy(out, off);
          const flips = randomInt(1, 4);
          for (let f = 0; f < flips; f++) out[off + randomInt(8, p.length)] ^= 1 << randomInt(0, 8);
          return p.length;
        },
      };
    }
    case 'valid-mac1': {
      const key = needKey();
      const mac1s = Buffer.alloc(spec.count * 16);
      return {
        mac1s,
        make: (i, out, off) => {
          const m1 = initiation(i, key, out, off);
          if (i < spec.count) m1.copy(mac1s, i * 16);
          return MESSAGE_INITIATION_SIZE;
        },
      };
    }
  }
}

interface Sender {
  /** Sends datagrams slab[offsets[k] .. +lengths[k]) for k < n; how many were taken. */
  send(slab: Buffer, offsets: Uint32Array, lengths: Uint32Array, n: number): Promise<number>;
  onAnswer(cb: (msg: Buffer) => void): void;
  close(): void;
  readonly kind: 'native' | 'dgram';
}

async function openSender(
  address: string,
  port: number,
  source?: string,
  sourcePort?: number,
): Promise<Sender> {
  const v6 = address.includes(':');
  try {
    const native = await import('../../src/native/index.js');
    const { ENDPOINT_SIZE, encodeAddressPort } = await import('../../src/net/endpoint.js');
    // One datagram per message, as a flood from the network arrives: a segmented (GSO) run
    // would reach a responder with UDP receive offload as one message, and the kernel's
    // InDatagrams, by which the tests see how much of the flood the responder read, counts
    // messages.
    const sock = native.NativeUdpSocket.open({
      address: source ?? (v6 ? '::' : '0.0.0.0'),
      port: sourcePort,
      segmentation: false,
    });
    const eps = Buffer.alloc(BATCH * ENDPOINT_SIZE);
    for (let k = 0; k < BATCH; k++) encodeAddressPort(address, port, eps, k * ENDPOINT_SIZE);
    const rx = new native.PacketBatch(BATCH, 2048, 0);
    let cb: (msg: Buffer) => void = () => undefined;
    sock.start((err) => {
      if (err) return;
      for (;;) {
        const n = sock.recvBatch(rx.slab, rx.slotSize, 0, rx.capacity, rx.lengths, rx.endpoints);
        for (let k = 0; k < n; k++) cb(rx.packet(k));
        if (n < rx.capacity) break;
      }
    });
    return {
      kind: 'native',
      send: async (slab, offsets, lengths, n) => sock.sendBatch(slab, offsets, lengths, eps, n),
      onAnswer: (f) => {
        cb = f;
      },
      close: () => sock.close(),
    };
  } catch {
    const dgram = await import('node:dgram');
    const sock = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', sendBufferSize: 4 << 20 });
    await new Promise<void>((r) => sock.bind({ port: sourcePort ?? 0, address: source }, r));
    return {
      kind: 'dgram',
      send: async (slab, offsets, lengths, n) => {
        const sends: Promise<boolean>[] = [];
        for (let k = 0; k < n; k++) {
          const msg = Buffer.from(slab.subarray(offsets[k], offsets[k] + lengths[k]));
          sends.push(new Promise((r) => sock.send(msg, port, address, (err) => r(!err))));
        }
        return (await Promise.all(sends)).filter(Boolean).length;
      },
      onAnswer: (f) => {
        sock.on('message', (m) => f(m));
      },
      close: () => sock.close(),
    };
  }
}

async function floodMain(spec: FloodSpec): Promise<FloodResult> {
  const { make, mac1s } = makerFor(spec);
  const sender = await openSender(spec.address, spec.port, spec.source, spec.sourcePort);
  const cookieKey =
    spec.responderPublicKey === undefined ? null : cookieKeyFor(keyFromBase64(spec.responderPublicKey));
  const result: FloodResult = {
    kind: spec.kind,
    sent: 0,
    elapsedMs: 0,
    socket: sender.kind,
    answers: 0,
    cookieReplies: 0,
    cookiesChecked: 0,
    cookiesValid: 0,
  };
  sender.onAnswer((msg) => {
    result.answers++;
    if (msg.length !== MESSAGE_COOKIE_REPLY_SIZE || msg.readUInt32LE(0) !== MESSAGE_COOKIE_REPLY_TYPE) return;
    result.cookieReplies++;
    const receiver = msg.readUInt32LE(COOKIE_REPLY_OFFSET_RECEIVER);
    if (mac1s === null || cookieKey === null || receiver >= spec.count || result.cookiesChecked >= 200)
      return;
    result.cookiesChecked++;
    const nonce = msg.subarray(COOKIE_REPLY_OFFSET_NONCE, COOKIE_REPLY_OFFSET_COOKIE);
    const sealed = msg.subarray(COOKIE_REPLY_OFFSET_COOKIE);
    const aad = mac1s.subarray(receiver * 16, receiver * 16 + 16);
    if (xaeadOpen(cookieKey, nonce, sealed, aad) !== null) result.cookiesValid++;
  });
  const slab = Buffer.alloc(BATCH * SLOT);
  const offsets = new Uint32Array(BATCH);
  const lengths = new Uint32Array(BATCH);
  for (let k = 0; k < BATCH; k++) offsets[k] = k * SLOT;
  const start = performance.now();
  const maxMs = spec.maxMs ?? 30_000;
  let i = 0;
  while (result.sent < spec.count && performance.now() - start < maxMs) {
    const n = Math.min(BATCH, spec.count - result.sent);
    for (let k = 0; k < n; k++) lengths[k] = make(i++, slab, offsets[k]);
    const took = await sender.send(slab, offsets, lengths, n);
    result.sent += took;
    // Let answers in; back off briefly when the socket's send queue is full or ahead of pps.
    const ahead = spec.pps === undefined ? 0 : (result.sent / spec.pps) * 1000 - (performance.now() - start);
    await new Promise((r) => (took < n || ahead >= 1 ? setTimeout(r, Math.max(1, ahead)) : setImmediate(r)));
  }
  result.elapsedMs = Math.round(performance.now() - start);
  await new Promise((r) => setTimeout(r, spec.lingerMs ?? 300));
  sender.close();
  return result;
}

function isMain(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(HARNESS);
  } catch {
    return false;
  }
}

if (isMain() && process.argv[2] === 'flood') {
  const chunks: Buffer[] = [];
  process.stdin.on('data', (d: Buffer) => chunks.push(d));
  process.stdin.on('end', () => {
    floodMain(JSON.parse(Buffer.concat(chunks).toString('utf8')) as FloodSpec).then(
      (r) => process.stdout.write(`${JSON.stringify(r)}\n`),
      (err: unknown) => {
        process.stderr.write(`flood: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exitCode = 1;
      },
    );
  });
}
