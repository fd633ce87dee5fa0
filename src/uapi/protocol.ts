// The WireGuard cross-platform userspace API (https://www.wireguard.com/xplatform/), the
// protocol half: a `set=1` request is parsed into a typed, fully validated change set before
// anything is applied; a device snapshot is serialized into a `get=1` answer; errors map to
// errno numbers as wireguard-go answers them. No I/O here (see server.ts).
//
// Secrets: private and preshared keys are decoded straight from the request bytes into
// Buffers (never into JS strings, which cannot be wiped), and a get answer is encoded into
// a Buffer the server zeroes once it is written. Nothing here logs.
//
// Departures from wireguard-go, each deliberate: a set request is validated whole before
// any of it applies (wireguard-go keeps the lines before a bad one); lines within a peer
// section are folded (see parseSetRequest); request size and line count are bounded
// (EMSGSIZE); endpoints need a port of 1..65535 (see src/net/ip.ts); a failed get answers a
// positive errno (see encodeErrnoAnswer).
import { constants as osConstants } from 'node:os';
import { type IpCidr, type IpEndpoint, parseCidr, parseEndpoint } from '../net/ip.js';
import { TgError } from '../util/errors.js';

export type { IpCidr, IpEndpoint } from '../net/ip.js';

export const WG_KEY_LEN = 32;
export const UAPI_PROTOCOL_VERSION = 1;

/**
 * Linux errno values the UAPI answers with. wireguard-go answers EIO, EPROTO, EINVAL,
 * EADDRINUSE and ENOANO ("unknown"); EMSGSIZE is ours, for a request over the size limits.
 */
export const UAPI_ERRNO = {
  EIO: osConstants.errno.EIO ?? 5,
  EINVAL: osConstants.errno.EINVAL ?? 22,
  EPROTO: osConstants.errno.EPROTO ?? 71,
  EMSGSIZE: osConstants.errno.EMSGSIZE ?? 90,
  EADDRINUSE: osConstants.errno.EADDRINUSE ?? 98,
  ENOANO: 55, // not in node's table; wireguard-go's IpcErrorUnknown
} as const;

/**
 * tenguard's extension of the protocol: `get=tenguard-stats` answers the backend's counters
 * (drop reasons and the like) as name=value lines, then errno=0. wg never sends it; a backend
 * without counters treats it as an unknown operation.
 */
export const STATS_OP = 'get=tenguard-stats';

/** A refused UAPI operation. `errno` is the positive errno number (22 for EINVAL). */

export class UapiError extends TgError {
  readonly errno: number;

  constructor(errno: number, message: string, options?: { cause?: unknown }) {
    super('TG_ERR_UAPI', message, options);
    this.name = 'UapiError';
    this.errno = errno;
  }
}

/**
 * The positive errno for any error a backend or the server raised: UapiError carries its
 * own, a Node system error its `code` (EADDRINUSE from a bind), a TgError for invalid input
 * EINVAL, anything else ENOANO as wireguard-go answers an unexpected failure.
 */
export function errnoOf(err: unknown): number {
  if (err instanceof UapiError) return err.errno;
  if (err instanceof TgError) {
    return err.code === 'TG_ERR_INVALID_ARGUMENT' || err.code === 'TG_ERR_CONFIG'
      ? UAPI_ERRNO.EINVAL
      : UAPI_ERRNO.ENOANO;
  }
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') {
    const n = (osConstants.errno as Record<string, number | undefined>)[code];
    if (typeof n === 'number' && n > 0) return n;
  }
  return UAPI_ERRNO.ENOANO;
}

export interface UapiLimits {
  /** Largest set request accepted, "set=1\n" and the terminating empty line included. */
  maxRequestBytes: number;
  /** Most lines in one set request (terminating empty line excluded). */
  maxLines: number;
  /** Longest line, newline excluded. The longest valid line is below 90 bytes. */
  maxLineBytes: number;
}

/**
 * About 10,000 peers with 100 allowed IPs each fit in one request; so does the kernel's own
 * UAPI test (WireGuard's netns.sh), one peer with 130,560 allowed IPs that `wg setconf`
 * sends as one request of about 3.4 MB. wireguard-go has no limits; the socket is root's.
 */
export const DEFAULT_UAPI_LIMITS: Readonly<UapiLimits> = Object.freeze({
  maxRequestBytes: 32 * 1024 * 1024,
  maxLines: 1_048_576,
  maxLineBytes: 256,
});

// ---------------------------------------------------------------------------------------
// The change set a set=1 request becomes.

export interface UapiAllowedIpChange {
  /** Normalised prefix (host bits cleared). */
  cidr: IpCidr;
  /**
   * false: add the prefix to this peer, taking it away from any other peer that has it.
   * true ("allowed_ip=-prefix"): remove the prefix if this peer has it; otherwise nothing.
   */
  remove: boolean;
}

export interface UapiPeerChange {
  publicKey: Buffer;
  /** remove=true: remove the peer if it exists; every other field is then empty. */
  remove: boolean;
  /** update_only=true: when no peer has this key, skip the whole section. */
  updateOnly: boolean;
  /** undefined: unchanged; null: no preshared key (all-zero hex); else 32 bytes. */
  presharedKey?: Buffer | null;
  endpoint?: IpEndpoint;
  /** Seconds, 0..65535; 0 turns persistent keepalive off. */
  persistentKeepalive?: number;
  /** Remove all of this peer's allowed IPs before `allowedIps` is applied. */
  replaceAllowedIps: boolean;
  /** In request order. */
  allowedIps: UapiAllowedIpChange[];
  /** Present when the request named it; only 1 exists. */
  protocolVersion?: 1;
}

export interface UapiChangeSet {
  /** undefined: unchanged; null: remove the private key (all-zero hex); else 32 bytes, clamped. */
  privateKey?: Buffer | null;
  /** 0..65535; 0 lets the device choose a port. */
  listenPort?: number;
  /** 0..2^32-1; 0 removes the mark. */
  fwmark?: number;
  /** Remove every peer before the peer sections are applied. */
  replacePeers: boolean;
  /** Peer sections in request order; one public key may appear in more than one section. */
  peers: UapiPeerChange[];
}

// ---------------------------------------------------------------------------------------
// What a get=1 answer is made from.

export interface UapiPeerSnapshot {
  publicKey: Uint8Array;
  /** Absent, null or all-zero: no preshared key. */
  presharedKey?: Uint8Array | null;
  /** "192.0.2.1:51820" or "[2001:db8::1]:51820"; absent or null: none yet. */
  endpoint?: string | null;
  /** Wall-clock time of the last handshake; zero or absent: never. */
  lastHandshake?: { sec: number; nsec: number };
  txBytes: number | bigint;
  rxBytes: number | bigint;
  /** Seconds, 0 = off. */
  persistentKeepalive: number;
  /** CIDR texts; they are parsed and printed canonically. */
  allowedIps: readonly string[];
  /** Defaults to 1. */
  protocolVersion?: number;
}

export interface UapiDeviceSnapshot {
  /** Absent, null or all-zero: the device has no private key. */
  privateKey?: Uint8Array | null;
  /** 0 or absent: not listening (the line is left out, as wireguard-go does). */
  listenPort?: number;
  /** 0 or absent: no mark (the line is left out). */
  fwmark?: number;
  peers: readonly UapiPeerSnapshot[];
}

/**
 * What the UAPI server needs from a device. The server calls the two methods one at a time
 * (never concurrently, never interleaved), so a get never sees a half-applied set.
 */
export interface UapiBackend {
  /**
   * Current state for get=1. Keys are borrowed: the server reads them right away (after the
   * promise settles, if one is returned), never keeps or modifies them, and hex-encodes them
   * into a buffer it zeroes once written; nothing is logged.
   */
  snapshot(): UapiDeviceSnapshot | Promise<UapiDeviceSnapshot>;
  /**
   * Applies a validated change set atomically: all of it, or nothing and a thrown error
   * (UapiError with its errno, e.g. EADDRINUSE when the listen port cannot be bound; any
   * other error is answered through errnoOf()).
   *
   * Order and meaning, exactly those of wireguard-go and the Linux kernel:
   *  1. privateKey: set (already clamped) or remove (null). A peer whose public key is the
   *     device's new public key is removed.
   *  2. listenPort (rebind), 3. fwmark, 4. replacePeers: remove all peers.
   *  5. each peer section, in order:
   *     - a section whose publicKey is the device's own public key is ignored;
   *     - remove: remove the peer if it exists, then go to the next section;
   *     - no peer with this key: skip the section if updateOnly, else create the peer
   *       (no preshared key, no endpoint, keepalive 0, no allowed IPs);
   *     - presharedKey (null = none), endpoint, persistentKeepalive when present;
   *     - replaceAllowedIps: remove all of the peer's allowed IPs;
   *     - allowedIps in order: add (moving the prefix from whichever peer had it) or remove
   *       (only if this peer has it).
   * The privateKey and presharedKey Buffers are zeroed once apply settles: copy what you keep.
   */
  apply(change: UapiChangeSet): void | Promise<void>;
  /** Optional: counters for the `get=tenguard-stats` extension (non-negative integers). */
  counters?(): Record<string, number>;
}

// ---------------------------------------------------------------------------------------
// Parsing a set=1 request.

const NL = 0x0a;
const EQ = 0x3d;
const KEY_NAME = /^[a-z_]{1,32}$/;
const DECIMAL = /^[0-9]{1,20}$/;

function hexNibble(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10;
  return -1;
}

/** 64 hex digits (either case) into a new 32-byte Buffer; null otherwise. */
export function decodeKeyHex(hex: Uint8Array): Buffer | null {
  if (hex.length !== 2 * WG_KEY_LEN) return null;
  const out = Buffer.alloc(WG_KEY_LEN);
  for (let i = 0; i < WG_KEY_LEN; i++) {
    const hi = hexNibble(hex[2 * i]);
    const lo = hexNibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      out.fill(0);
      return null;
    }
    out[i] = (hi << 4) | lo;
  }
  return out;
}

export function isZeroKey(key: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < key.length; i++) acc |= key[i];
  return acc === 0;
}

/** RFC 7748 clamping, as the kernel and wireguard-go store a private key. */
function clampPrivateKey(key: Buffer): void {
  key[0] &= 248;
  key[31] = (key[31] & 127) | 64;
}

function parseUint(value: string, max: number): number | null {
  if (!DECIMAL.test(value)) return null;
  const n = Number(value);
  return Number.isSafeInteger(n) && n <= max ? n : null;
}

/** Zeroes the secrets of a change set (private key, preshared keys). */
export function wipeChangeSet(change: UapiChangeSet): void {
  change.privateKey?.fill(0);
  for (const peer of change.peers) peer.presharedKey?.fill(0);
}

class SetRequestParser {
  readonly change: UapiChangeSet = { replacePeers: false, peers: [] };
  private peer: UapiPeerChange | null = null;
  private lineNo = 0;
  // The value of the line being parsed: buf[vs, ve).
  private vs = 0;
  private ve = 0;

  constructor(private readonly buf: Buffer) {}

  fail(errno: number, what: string): never {
    wipeChangeSet(this.change);
    throw new UapiError(errno, `set request line ${this.lineNo}: ${what}`);
  }

  line(start: number, end: number): void {
    this.lineNo++;
    const eq = this.buf.indexOf(EQ, start);
    if (eq < 0 || eq >= end) this.fail(UAPI_ERRNO.EPROTO, "line has no '='");
    // Key names are not secret, but only a key-shaped name is ever put into a message.
    const key = eq - start <= 32 ? this.buf.toString('latin1', start, eq) : '';
    this.vs = eq + 1;
    this.ve = end;
    if (key === 'public_key') this.startPeer();
    else if (this.peer === null) this.deviceLine(key);
    else this.peerLine(this.peer, key);
  }

  private key(name: string): Buffer {
    const k = decodeKeyHex(this.buf.subarray(this.vs, this.ve));
    if (k === null) this.fail(UAPI_ERRNO.EINVAL, `${name} is not 64 hex digits`);
    return k;
  }

  /** The value as a string: only for values that are never secret. */
  private text(): string {
    return this.buf.toString('latin1', this.vs, this.ve);
  }

  private trueFlag(key: string): void {
    if (this.text() !== 'true') this.fail(UAPI_ERRNO.EINVAL, `${key} accepts only "true"`);
  }

  private unknown(key: string, where: string): never {
    const shown = KEY_NAME.test(key) ? `"${key}"` : '(not a key name)';
    this.fail(UAPI_ERRNO.EINVAL, `invalid ${where} key ${shown}`);
  }

  private deviceLine(key: string): void {
    const change = this.change;
    switch (key) {
      case 'private_key': {
        const k = this.key('private_key');
        change.privateKey?.fill(0);
        if (isZeroKey(k)) {
          change.privateKey = null;
        } else {
          clampPrivateKey(k);
          change.privateKey = k;
        }
        return;
      }
      case 'listen_port': {
        const port = parseUint(this.text(), 0xffff);
        if (port === null) this.fail(UAPI_ERRNO.EINVAL, 'listen_port is not a number in 0..65535');
        change.listenPort = port;
        return;
      }
      case 'fwmark': {
        const mark = parseUint(this.text(), 0xffffffff);
        if (mark === null) this.fail(UAPI_ERRNO.EINVAL, 'fwmark is not a number in 0..4294967295');
        change.fwmark = mark;
        return;
      }
      case 'replace_peers':
        this.trueFlag(key);
        change.replacePeers = true;
        return;
      default:
        this.unknown(key, 'device');
    }
  }

  private startPeer(): void {
    this.finishPeer();
    const publicKey = this.key('public_key');
    this.peer = { publicKey, remove: false, updateOnly: false, replaceAllowedIps: false, allowedIps: [] };
    this.change.peers.push(this.peer);
  }

  private peerLine(peer: UapiPeerChange, key: string): void {
    switch (key) {
      case 'remove':
        this.trueFlag(key);
        peer.remove = true;
        return;
      case 'update_only':
        this.trueFlag(key);
        peer.updateOnly = true;
        return;
      case 'preshared_key': {
        const k = this.key('preshared_key');
        peer.presharedKey?.fill(0);
        if (isZeroKey(k)) peer.presharedKey = null;
        else peer.presharedKey = k;
        return;
      }
      case 'endpoint': {
        const ep = parseEndpoint(this.text());
        if (ep === null) {
          this.fail(
            UAPI_ERRNO.EINVAL,
            'endpoint is not a numeric IPv4:port or [IPv6]:port with port 1..65535',
          );
        }
        peer.endpoint = ep;
        return;
      }
      case 'persistent_keepalive_interval': {
        const secs = parseUint(this.text(), 0xffff);
        if (secs === null) {
          this.fail(UAPI_ERRNO.EINVAL, 'persistent_keepalive_interval is not a number in 0..65535');
        }
        peer.persistentKeepalive = secs;
        return;
      }
      case 'replace_allowed_ips':
        this.trueFlag(key);
        peer.replaceAllowedIps = true;
        // Prefixes added earlier in this section would be removed again right away.
        peer.allowedIps.length = 0;
        return;
      case 'allowed_ip': {
        let text = this.text();
        const remove = text.startsWith('-');
        if (remove) text = text.slice(1);
        const cidr = parseCidr(text);
        if (cidr === null) this.fail(UAPI_ERRNO.EINVAL, 'allowed_ip is not an IPv4 or IPv6 prefix');
        peer.allowedIps.push({ cidr, remove });
        return;
      }
      case 'protocol_version':
        if (this.text() !== '1') this.fail(UAPI_ERRNO.EINVAL, 'protocol_version must be 1');
        peer.protocolVersion = 1;
        return;
      default:
        this.unknown(key, 'peer');
    }
  }

  /** A removed peer carries nothing else, so that no backend can apply half of it. */
  finishPeer(): void {
    const peer = this.peer;
    if (peer === null || !peer.remove) return;
    peer.presharedKey?.fill(0);
    delete peer.presharedKey;
    delete peer.endpoint;
    delete peer.persistentKeepalive;
    delete peer.protocolVersion;
    peer.updateOnly = false;
    peer.replaceAllowedIps = false;
    peer.allowedIps.length = 0;
  }
}

/**
 * Parses the body of a set request: the lines after "set=1\n", each ending in "\n" (the
 * last one may lack it), up to the terminating empty line, which may be included. Throws
 * UapiError (EPROTO for a line without '=', EINVAL for anything invalid, EMSGSIZE over the
 * limits) and then has kept no secret; the caller still owns and wipes `body`.
 *
 * Departure from wireguard-go, which applies each line as it reads it: lines within one
 * peer section are folded into one change (last value wins; remove and update_only count
 * wherever they stand; allowed_ip lines before a replace_allowed_ips are dropped). wg(8)
 * always sends the canonical order, for which the result is the same; only a hand-made
 * request that adds a prefix and then removes the same peer would differ (wireguard-go
 * would have taken the prefix from its previous owner).
 */
export function parseSetRequest(
  body: Uint8Array,
  limits: Readonly<UapiLimits> = DEFAULT_UAPI_LIMITS,
): UapiChangeSet {
  if (body.length + 8 > limits.maxRequestBytes) {
    throw new UapiError(UAPI_ERRNO.EMSGSIZE, `set request over ${limits.maxRequestBytes} bytes`);
  }
  const buf = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.length);
  const p = new SetRequestParser(buf);
  let pos = 0;
  let lines = 0;
  while (pos < buf.length) {
    let end = buf.indexOf(NL, pos);
    if (end < 0) end = buf.length;
    if (end === pos) {
      if (end + 1 < buf.length) p.fail(UAPI_ERRNO.EPROTO, 'data after the terminating empty line');
      break;
    }
    if (end - pos > limits.maxLineBytes)
      p.fail(UAPI_ERRNO.EMSGSIZE, `line over ${limits.maxLineBytes} bytes`);
    if (++lines > limits.maxLines) p.fail(UAPI_ERRNO.EMSGSIZE, `more than ${limits.maxLines} lines`);
    p.line(pos, end);
    pos = end + 1;
  }
  p.finishPeer();
  return p.change;
}

// ---------------------------------------------------------------------------------------
// Writing answers and requests.

const HEX = Buffer.from('0123456789abcdef', 'latin1');

/**
 * Writes lines into one growing Buffer; key lines are hex-encoded byte by byte, never via
 * strings. A Buffer left behind by growth is zeroed.
 */
class LineWriter {
  private buf: Buffer = Buffer.alloc(4096);
  private len = 0;

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const grown = Buffer.alloc(Math.max(2 * this.buf.length, this.len + n));
    this.buf.copy(grown, 0, 0, this.len);
    this.buf.fill(0);
    this.buf = grown;
  }

  /** `text` is ASCII (every caller builds it from validated values). */
  line(text: string): void {
    this.ensure(text.length + 1);
    this.len += this.buf.write(text, this.len, 'latin1');
    this.buf[this.len++] = NL;
  }

  key(name: string, key: Uint8Array): void {
    if (key.length !== WG_KEY_LEN) throw new UapiError(UAPI_ERRNO.EIO, `${name} is not ${WG_KEY_LEN} bytes`);
    this.ensure(name.length + 2 + 2 * WG_KEY_LEN);
    const out = this.buf;
    let o = this.len + out.write(name, this.len, 'latin1');
    out[o++] = EQ;
    for (let i = 0; i < WG_KEY_LEN; i++) {
      out[o++] = HEX[key[i] >> 4];
      out[o++] = HEX[key[i] & 0x0f];
    }
    out[o++] = NL;
    this.len = o;
  }

  /** Everything written plus the line `tail`, in a Buffer of its own; the caller zeroes it. */
  finish(tail: string): Buffer {
    this.line(tail);
    const all = Buffer.from(this.buf.subarray(0, this.len));
    this.wipe();
    return all;
  }

  wipe(): void {
    this.buf.fill(0);
    this.len = 0;
  }
}

const U64_MAX = (1n << 64n) - 1n;

function counter(name: string, v: number | bigint): string {
  const ok = typeof v === 'bigint' ? v >= 0n && v <= U64_MAX : Number.isSafeInteger(v) && (v as number) >= 0;
  if (!ok) throw new UapiError(UAPI_ERRNO.EIO, `snapshot ${name} is not an unsigned 64-bit integer`);
  return `${name}=${v.toString()}`;
}

function boundedInt(name: string, v: number, max: number): number {
  if (!Number.isSafeInteger(v) || v < 0 || v > max) {
    throw new UapiError(UAPI_ERRNO.EIO, `snapshot ${name} out of range`);
  }
  return v;
}

/**
 * The answer to get=1: device lines, then per peer public_key, preshared_key,
 * protocol_version, endpoint, last_handshake_time_sec/nsec, tx_bytes, rx_bytes,
 * persistent_keepalive_interval, allowed_ip... (wireguard-go's order), then "errno=0" and
 * the empty line. Every value is validated, so that a faulty backend cannot inject lines;
 * an invalid snapshot throws UapiError(EIO). The caller zeroes the returned Buffer.
 */
export function serializeGetResponse(snap: UapiDeviceSnapshot): Buffer {
  const w = new LineWriter();
  try {
    if (snap.privateKey && !isZeroKey(snap.privateKey)) w.key('private_key', snap.privateKey);
    if (snap.listenPort) w.line(`listen_port=${boundedInt('listen_port', snap.listenPort, 0xffff)}`);
    if (snap.fwmark) w.line(`fwmark=${boundedInt('fwmark', snap.fwmark, 0xffffffff)}`);
    for (const peer of snap.peers) {
      w.key('public_key', peer.publicKey);
      // Always present, all-zero for none, as wireguard-go answers.
      w.key('preshared_key', peer.presharedKey ?? ZERO_KEY);
      const version = peer.protocolVersion ?? UAPI_PROTOCOL_VERSION;
      if (version !== UAPI_PROTOCOL_VERSION)
        throw new UapiError(UAPI_ERRNO.EIO, 'snapshot protocol_version is not 1');
      w.line(`protocol_version=${version}`);
      if (peer.endpoint) {
        const ep = parseEndpoint(peer.endpoint);
        if (ep === null) throw new UapiError(UAPI_ERRNO.EIO, 'snapshot endpoint is not a numeric endpoint');
        w.line(`endpoint=${ep.text}`);
      }
      const hs = peer.lastHandshake ?? { sec: 0, nsec: 0 };
      w.line(
        `last_handshake_time_sec=${boundedInt('last_handshake_time_sec', hs.sec, Number.MAX_SAFE_INTEGER)}`,
      );
      w.line(`last_handshake_time_nsec=${boundedInt('last_handshake_time_nsec', hs.nsec, 999_999_999)}`);
      w.line(counter('tx_bytes', peer.txBytes));
      w.line(counter('rx_bytes', peer.rxBytes));
      w.line(
        `persistent_keepalive_interval=${boundedInt('persistent_keepalive_interval', peer.persistentKeepalive, 0xffff)}`,
      );
      for (const text of peer.allowedIps) {
        const cidr = parseCidr(text);
        if (cidr === null) throw new UapiError(UAPI_ERRNO.EIO, 'snapshot allowed IP is not a prefix');
        w.line(`allowed_ip=${cidr.text}`);
      }
    }
  } catch (err) {
    w.wipe();
    throw err;
  }
  return w.finish('errno=0\n');
}

const ZERO_KEY = new Uint8Array(WG_KEY_LEN);

/**
 * "errno=<n>\n\n" for a failed request. A set answer carries the negated errno, as
 * wireguard-go sends it and wg(8) reads it; a get answer carries it positive, because
 * wg(8)'s get parser accepts only digits there (wireguard-go's "-22" makes wg report EPROTO).
 */
export function encodeErrnoAnswer(op: 'get' | 'set', errno: number): Buffer {
  const n = errno === 0 ? 0 : op === 'set' ? -Math.abs(errno) : Math.abs(errno);
  return Buffer.from(`errno=${n}\n\n`, 'latin1');
}

/**
 * A complete set request ("set=1\n" ... "\n") for a change set, in the canonical order wg(8)
 * uses; parseSetRequest() of its body gives the change set back. The caller zeroes it.
 */
export function serializeSetRequest(change: UapiChangeSet): Buffer {
  const w = new LineWriter();
  try {
    writeSetRequest(w, change);
  } catch (err) {
    w.wipe();
    throw err;
  }
  return w.finish('');
}

function writeSetRequest(w: LineWriter, change: UapiChangeSet): void {
  w.line('set=1');
  if (change.privateKey !== undefined) w.key('private_key', change.privateKey ?? ZERO_KEY);
  if (change.listenPort !== undefined)
    w.line(`listen_port=${boundedInt('listen_port', change.listenPort, 0xffff)}`);
  if (change.fwmark !== undefined) w.line(`fwmark=${boundedInt('fwmark', change.fwmark, 0xffffffff)}`);
  if (change.replacePeers) w.line('replace_peers=true');
  for (const peer of change.peers) {
    w.key('public_key', peer.publicKey);
    if (peer.remove) {
      w.line('remove=true');
      continue;
    }
    if (peer.updateOnly) w.line('update_only=true');
    if (peer.presharedKey !== undefined) w.key('preshared_key', peer.presharedKey ?? ZERO_KEY);
    if (peer.endpoint) w.line(`endpoint=${peer.endpoint.text}`);
    if (peer.persistentKeepalive !== undefined) {
      w.line(`persistent_keepalive_interval=${boundedInt('keepalive', peer.persistentKeepalive, 0xffff)}`);
    }
    if (peer.replaceAllowedIps) w.line('replace_allowed_ips=true');
    for (const a of peer.allowedIps) w.line(`allowed_ip=${a.remove ? '-' : ''}${a.cidr.text}`);
    if (peer.protocolVersion !== undefined) w.line(`protocol_version=${peer.protocolVersion}`);
  }
}

/**
 * Reads a get=1 answer (as wg(8) does): known keys are validated, unknown keys ignored,
 * an all-zero preshared key read as none. Throws UapiError with the answer's errno when it
 * is not 0, EPROTO when the answer is malformed or has no errno line.
 */
export function parseGetResponse(answer: Uint8Array): UapiDeviceSnapshot {
  const r = new GetAnswerReader();
  let pos = 0;
  for (;;) {
    const end = answer.indexOf(NL, pos);
    if (end < 0) r.bad('no terminating empty line');
    if (end === pos) break;
    r.line(answer.subarray(pos, end));
    pos = end + 1;
  }
  return r.finish();
}

class GetAnswerReader {
  private readonly snap: {
    privateKey?: Buffer;
    listenPort?: number;
    fwmark?: number;
    peers: (UapiPeerSnapshot & { allowedIps: string[] })[];
  } = { peers: [] };
  private errno: number | null = null;

  bad(what: string, errno: number = UAPI_ERRNO.EPROTO): never {
    this.snap.privateKey?.fill(0);
    for (const p of this.snap.peers) (p.presharedKey as Buffer | null | undefined)?.fill(0);
    throw new UapiError(errno, `get answer: ${what}`);
  }

  line(line: Uint8Array): void {
    const eq = line.indexOf(EQ);
    if (eq < 0) this.bad("line has no '='");
    const key = Buffer.from(line.buffer, line.byteOffset, eq).toString('latin1');
    const raw = line.subarray(eq + 1);
    const text = Buffer.from(raw.buffer, raw.byteOffset, raw.length).toString('latin1');
    const num = (max: number): number => parseUint(text, max) ?? this.bad(`${key} is not a number`);
    const peer = this.snap.peers.at(-1);
    if (key === 'errno') {
      if (!/^-?[0-9]{1,10}$/.test(text)) this.bad('errno is not a number');
      this.errno = Math.abs(Number(text));
      return;
    }
    if (key === 'public_key') {
      const publicKey = decodeKeyHex(raw) ?? this.bad('public_key is not a key');
      this.snap.peers.push({ publicKey, txBytes: 0, rxBytes: 0, persistentKeepalive: 0, allowedIps: [] });
      return;
    }
    if (peer === undefined) {
      switch (key) {
        case 'private_key':
          this.snap.privateKey?.fill(0);
          this.snap.privateKey = decodeKeyHex(raw) ?? this.bad('private_key is not a key');
          return;
        case 'listen_port':
          this.snap.listenPort = num(0xffff);
          return;
        case 'fwmark':
          this.snap.fwmark = num(0xffffffff);
          return;
      }
      return; // unknown device keys are ignored, as wg(8) does
    }
    switch (key) {
      case 'preshared_key': {
        const k = decodeKeyHex(raw) ?? this.bad('preshared_key is not a key');
        peer.presharedKey = isZeroKey(k) ? null : k;
        return;
      }
      case 'protocol_version':
        peer.protocolVersion = num(0xffffffff);
        return;
      case 'endpoint':
        peer.endpoint = parseEndpoint(text)?.text ?? this.bad('endpoint is not numeric');
        return;
      case 'last_handshake_time_sec':
        peer.lastHandshake = { sec: num(Number.MAX_SAFE_INTEGER), nsec: peer.lastHandshake?.nsec ?? 0 };
        return;
      case 'last_handshake_time_nsec':
        peer.lastHandshake = { sec: peer.lastHandshake?.sec ?? 0, nsec: num(999_999_999) };
        return;
      case 'tx_bytes':
        peer.txBytes = u64(text) ?? this.bad('tx_bytes is not a number');
        return;
      case 'rx_bytes':
        peer.rxBytes = u64(text) ?? this.bad('rx_bytes is not a number');
        return;
      case 'persistent_keepalive_interval':
        peer.persistentKeepalive = num(0xffff);
        return;
      case 'allowed_ip':
        peer.allowedIps.push(parseCidr(text)?.text ?? this.bad('allowed_ip is not a prefix'));
        return;
    }
    // unknown peer keys are ignored, as wg(8) does
  }

  finish(): UapiDeviceSnapshot {
    if (this.errno === null) this.bad('no errno line');
    if (this.errno !== 0) this.bad(`device answered errno ${this.errno}`, this.errno);
    return this.snap;
  }
}

function u64(text: string): bigint | null {
  if (!DECIMAL.test(text)) return null;
  const v = BigInt(text);
  return v <= U64_MAX ? v : null;
}
