// The WireGuard UAPI socket, /var/run/wireguard/<ifname>.sock, through which the unmodified
// wg(8) shows and configures a tenguard device. Transport only: requests are framed, size-
// bounded and handed to protocol.ts (parse, serialize) and to a UapiBackend (the device).
//
// - The directory is created 0755; the socket is bound under umask 077 and chmod'ed 0600
//   after listen, so only root (the owner) can connect.
// - A socket file left by a dead process (connect refused) is removed; a live one, or a
//   file that is not a socket, makes start() fail with TG_ERR_CONFLICT.
// - Any number of connections (up to maxConnections), each carrying any number of requests,
//   answered in order. Requests from all connections reach the backend one at a time.
// - A set request is parsed and validated whole before anything is applied; a bad one is
//   answered errno=<n> and changes nothing. A request over the limits, an unknown operation
//   or a get with trailing bytes is answered and the connection closed (the stream cannot
//   be resynchronised). A connection closed mid-request is dropped, nothing applied.
// - Request bytes are zeroed once parsed or dropped; get answers once written.
//
// Departures from wireguard-go: it applies a set request line by line and keeps what came
// before a bad line; it has no size limits; it closes on an unknown operation without an
// answer (we answer errno=-EPROTO first); it answers a failed get with a negative errno,
// which wg(8) cannot read (we send it positive, see encodeErrnoAnswer).
import { type FSWatcher, constants as fsConstants, watch } from 'node:fs';
import { chmod, lstat, mkdir, readdir, unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { basename, join } from 'node:path';
import { TgError } from '../util/errors.js';
import { logger } from '../util/log.js';
import {
  DEFAULT_UAPI_LIMITS,
  encodeErrnoAnswer,
  errnoOf,
  parseSetRequest,
  STATS_OP,
  serializeGetResponse,
  UAPI_ERRNO,
  type UapiBackend,
  type UapiLimits,
  wipeChangeSet,
} from './protocol.js';

export const UAPI_SOCKET_DIR = '/var/run/wireguard';

const log = logger('uapi');

/** Linux interface names: 1..15 bytes, no '/', ':' or whitespace, not "." or "..". */
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

export function validateIfname(ifname: string): void {
  if (!IFNAME.test(ifname) || ifname === '.' || ifname === '..') {
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `invalid interface name "${ifname}" (1..15 of [A-Za-z0-9_.-])`,
    );
  }
}

export function uapiSocketPath(ifname: string, dir: string = UAPI_SOCKET_DIR): string {
  validateIfname(ifname);
  return join(dir, `${ifname}.sock`);
}

export interface UapiServerOptions {
  ifname: string;
  backend: UapiBackend;
  /** Defaults to /var/run/wireguard, where wg(8) looks. */
  socketDir?: string;
  limits?: Partial<UapiLimits>;
  /** Connections beyond this are closed at once. Default 64. */
  maxConnections?: number;
  /** A connection silent this long is closed. Default 30 s. */
  idleTimeoutMs?: number;
  /**
   * Called once when the socket file is deleted or replaced by someone else; the xplatform
   * document asks a userspace device to shut down then. Without it nothing is watched.
   */
  onSocketRemoved?: () => void;
}

export interface UapiServerStats {
  connections: number;
  gets: number;
  sets: number;
  /** Requests answered with a non-zero errno, connections dropped for bad framing included. */
  refused: number;
}

const NL = 0x0a;
const MAX_OP_LINE = 24;
/** Slack above maxRequestBytes for the read that crosses it (node reads up to 64 KiB). */
const CHUNK_SLACK = 64 * 1024;
const CONNECT_PROBE_MS = 1000;

type Framed =
  | { kind: 'get'; consumed: number }
  | { kind: 'stats'; consumed: number }
  | { kind: 'set'; bodyStart: number; bodyEnd: number; consumed: number }
  | { kind: 'fatal'; op: 'get' | 'set'; errno: number; why: string };

export class UapiServer {
  /** The socket's path; follows the file when it is renamed or re-linked in its directory. */
  path: string;
  readonly stats: UapiServerStats = { connections: 0, gets: 0, sets: 0, refused: 0 };
  private readonly connections = new Set<UapiConnection>();
  private queue: Promise<unknown> = Promise.resolve();
  private watcher: FSWatcher | null = null;
  private closing = false;
  private inode = -1;

  private constructor(
    private readonly server: Server,
    readonly backend: UapiBackend,
    readonly limits: Readonly<UapiLimits>,
    readonly ifname: string,
    path: string,
  ) {
    this.path = path;
  }

  /** Binds the socket; fails with TG_ERR_CONFLICT when a live device owns the name. */
  static async start(opts: UapiServerOptions): Promise<UapiServer> {
    const dir = opts.socketDir ?? UAPI_SOCKET_DIR;
    const path = uapiSocketPath(opts.ifname, dir);
    const limits: UapiLimits = { ...DEFAULT_UAPI_LIMITS, ...opts.limits };
    await mkdir(dir, { recursive: true, mode: 0o755 });
    await removeStaleSocket(path);

    // Half-open: a client may shut down its sending side and still read its answers.
    const server = createServer({ allowHalfOpen: true });
    server.maxConnections = opts.maxConnections ?? 64;
    const self = new UapiServer(server, opts.backend, limits, opts.ifname, path);
    const idleMs = opts.idleTimeoutMs ?? 30_000;
    server.on('connection', (socket) => self.accept(socket, idleMs));

    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(
          err.code === 'EADDRINUSE'
            ? new TgError('TG_ERR_CONFLICT', `UAPI socket ${path} was taken while starting`, { cause: err })
            : new TgError('TG_ERR_INTERNAL', `cannot listen on ${path}: ${err.message}`, { cause: err }),
        );
      };
      server.once('error', onError);
      server.once('listening', () => {
        server.off('error', onError);
        resolve();
      });
      // A pipe is bound synchronously inside listen(), so the tightened umask covers it.
      const oldUmask = setUmask(0o077);
      try {
        server.listen(path);
      } finally {
        if (oldUmask !== null) setUmask(oldUmask);
      }
    });
    server.on('error', (err) => log.error({ err: err.message, ifname: opts.ifname }, 'UAPI listener error'));
    try {
      await chmod(path, 0o600);
      self.inode = (await lstat(path)).ino;
    } catch (err) {
      await self.close();
      throw new TgError('TG_ERR_INTERNAL', `cannot secure UAPI socket ${path}`, { cause: err });
    }
    if (opts.onSocketRemoved) self.watchSocket(dir, opts.onSocketRemoved);
    log.info({ ifname: opts.ifname, path }, 'UAPI socket listening');
    return self;
  }

  /** Stops listening, drops every connection, waits for the request in progress, removes the socket. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.watcher?.close();
    this.watcher = null;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of this.connections) c.destroy();
    await closed;
    await this.queue.catch(() => undefined);
    try {
      if ((await lstat(this.path)).ino === this.inode) await unlink(this.path);
    } catch {
      // Already gone (the listener unlinks its path on close) or replaced: not ours to remove.
    }
    log.info({ ifname: this.ifname }, 'UAPI socket closed');
  }

  /** Runs backend calls one at a time, across all connections. */
  serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  get isClosing(): boolean {
    return this.closing;
  }

  forget(c: UapiConnection): void {
    this.connections.delete(c);
  }

  private accept(socket: Socket, idleMs: number): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    this.stats.connections++;
    this.connections.add(new UapiConnection(this, socket, idleMs));
  }

  /**
   * Fires onRemoved when the socket file is gone. A file renamed (or linked under another name
   * and the old one unlinked) in the same directory is the same socket: the server follows it
   * (a vSwitch hands a started device out under the name of the interface it renamed).
   */
  private watchSocket(dir: string, onRemoved: () => void): void {
    let name = basename(this.path);
    let fired = false;
    const moved = async (): Promise<string | null> => {
      for (const f of await readdir(dir).catch(() => [] as string[])) {
        if (!f.endsWith('.sock')) continue;
        const st = await lstat(join(dir, f)).catch(() => null);
        if (st !== null && st.ino === this.inode && st.isSocket()) return f;
      }
      return null;
    };
    const check = (): void => {
      if (fired || this.closing) return;
      lstat(this.path)
        .then(
          (st) => st.ino === this.inode,
          () => false,
        )
        .then(async (ours) => {
          if (ours || fired || this.closing) return;
          const now = await moved();
          if (now === null) return fire();
          name = now;
          this.path = join(dir, now);
          log.info({ ifname: this.ifname, path: this.path }, 'UAPI socket renamed');
        });
    };
    const fire = (): void => {
      if (fired || this.closing) return;
      fired = true;
      log.warn({ ifname: this.ifname }, 'UAPI socket file removed');
      onRemoved();
    };
    this.watcher = watch(dir, (_event, filename) => {
      if (filename === null || filename === name) check();
    });
    this.watcher.on('error', () => check());
  }
}

/** One client connection: frames requests out of the byte stream and answers them in order. */
class UapiConnection {
  private buf: Buffer = Buffer.alloc(0);
  private len = 0;
  private busy = false;
  private dead = false;
  // Framing state of the request at the start of buf.
  private op: 'get' | 'set' | 'stats' | null = null;
  private opEnd = 0;
  private scanPos = 0;
  private lineStart = 0;
  private lines = 0;

  constructor(
    private readonly srv: UapiServer,
    private readonly socket: Socket,
    idleMs: number,
  ) {
    socket.setTimeout(idleMs, () => this.destroy());
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => this.destroy());
    socket.on('close', () => this.destroy());
    socket.on('end', () => {
      // The client is done sending; any partial request is dropped, answers still go out.
      if (!this.busy) this.finish();
    });
  }

  destroy(): void {
    if (this.dead) return;
    this.dead = true;
    this.buf.fill(0);
    this.len = 0;
    this.socket.destroy();
    this.srv.forget(this);
  }

  private finish(): void {
    if (this.dead) return;
    this.dead = true;
    this.buf.fill(0);
    this.len = 0;
    this.socket.end();
    this.srv.forget(this);
  }

  private onData(chunk: Buffer): void {
    if (this.dead) {
      chunk.fill(0);
      return;
    }
    this.append(chunk);
    chunk.fill(0);
    this.pump();
  }

  private append(chunk: Buffer): void {
    const need = this.len + chunk.length;
    if (need > this.buf.length) {
      // Doubling, capped near the request limit: appending a large request costs O(size).
      const cap = this.srv.limits.maxRequestBytes + CHUNK_SLACK;
      const grown = Buffer.alloc(Math.max(need, Math.min(2 * this.buf.length, cap), 256));
      this.buf.copy(grown, 0, 0, this.len);
      this.buf.fill(0);
      this.buf = grown;
    }
    chunk.copy(this.buf, this.len);
    this.len = need;
  }

  /** Drops the first n bytes of the buffer (zeroing them) and resets the framing state. */
  private consume(n: number): void {
    this.buf.copy(this.buf, 0, n, this.len);
    this.buf.fill(0, this.len - n, this.len);
    this.len -= n;
    if (this.len === 0 && this.buf.length > CHUNK_SLACK) this.buf = Buffer.alloc(0); // zeroed above
    this.op = null;
    this.opEnd = this.scanPos = this.lineStart = this.lines = 0;
  }

  private pump(): void {
    while (!this.busy && !this.dead) {
      const framed = this.frame();
      if (framed === null) return;
      if (framed.kind === 'fatal') {
        this.srv.stats.refused++;
        log.warn({ ifname: this.srv.ifname, errno: framed.errno }, `UAPI connection dropped: ${framed.why}`);
        this.socket.write(encodeErrnoAnswer(framed.op, framed.errno));
        this.finish();
        return;
      }
      this.busy = true;
      this.socket.pause();
      const done =
        framed.kind === 'get'
          ? this.handleGet()
          : framed.kind === 'stats'
            ? this.handleStats()
            : this.handleSet(framed.bodyStart, framed.bodyEnd);
      done.then(
        (answer) => this.answered(answer, framed.consumed),
        (err) => {
          log.error({ ifname: this.srv.ifname, err: String(err) }, 'UAPI request failed unexpectedly');
          this.destroy();
        },
      );
    }
  }

  private answered(answer: Buffer, consumed: number): void {
    this.busy = false;
    if (this.dead) {
      answer.fill(0);
      return;
    }
    this.consume(consumed);
    this.socket.write(answer, () => answer.fill(0));
    if (this.socket.readableEnded) {
      this.finish();
      return;
    }
    this.socket.resume();
    this.pump();
  }

  private async handleGet(): Promise<Buffer> {
    this.srv.stats.gets++;
    if (this.srv.isClosing) return this.refuse('get', UAPI_ERRNO.EIO, 'device is closing');
    return this.srv.serialize(async () => {
      try {
        const answer = serializeGetResponse(await this.srv.backend.snapshot());
        log.debug({ ifname: this.srv.ifname }, 'UAPI get');
        return answer;
      } catch (err) {
        return this.refuse('get', errnoOf(err), err instanceof Error ? err.message : String(err));
      }
    });
  }

  /** The tenguard extension: counters as name=value lines, then errno=0. */
  private async handleStats(): Promise<Buffer> {
    this.srv.stats.gets++;
    return this.srv.serialize(async () => {
      const counters = this.srv.backend.counters?.() ?? {};
      let text = '';
      for (const [name, value] of Object.entries(counters)) {
        if (/^[a-zA-Z0-9_.]{1,64}$/.test(name) && Number.isSafeInteger(value) && value >= 0)
          text += `${name}=${value}\n`;
      }
      return Buffer.from(`${text}errno=0\n\n`, 'latin1');
    });
  }

  private async handleSet(bodyStart: number, bodyEnd: number): Promise<Buffer> {
    this.srv.stats.sets++;
    let change: ReturnType<typeof parseSetRequest>;
    try {
      change = parseSetRequest(this.buf.subarray(bodyStart, bodyEnd), this.srv.limits);
    } catch (err) {
      return this.refuse('set', errnoOf(err), err instanceof Error ? err.message : String(err));
    } finally {
      this.buf.fill(0, bodyStart, bodyEnd);
    }
    if (this.srv.isClosing) {
      wipeChangeSet(change);
      return this.refuse('set', UAPI_ERRNO.EIO, 'device is closing');
    }
    return this.srv.serialize(async () => {
      try {
        await this.srv.backend.apply(change);
        log.debug({ ifname: this.srv.ifname, peers: change.peers.length }, 'UAPI set applied');
        return encodeErrnoAnswer('set', 0);
      } catch (err) {
        return this.refuse('set', errnoOf(err), err instanceof Error ? err.message : String(err));
      } finally {
        wipeChangeSet(change);
      }
    });
  }

  private refuse(op: 'get' | 'set', errno: number, why: string): Buffer {
    this.srv.stats.refused++;
    log.warn({ ifname: this.srv.ifname, op, errno }, `UAPI ${op} refused: ${why}`);
    return encodeErrnoAnswer(op, errno);
  }

  /** The next complete request at the start of the buffer, null when more bytes are needed. */
  private frame(): Framed | null {
    const buf = this.buf;
    const len = this.len;
    const limits = this.srv.limits;
    if (this.op === null) {
      const nl = buf.subarray(0, Math.min(len, MAX_OP_LINE + 1)).indexOf(NL);
      if (nl < 0) {
        return len > MAX_OP_LINE
          ? { kind: 'fatal', op: 'set', errno: UAPI_ERRNO.EPROTO, why: 'no operation line' }
          : null;
      }
      const opLine = buf.toString('latin1', 0, nl);
      if (opLine === 'get=1') this.op = 'get';
      else if (opLine === 'set=1') this.op = 'set';
      else if (opLine === STATS_OP && this.srv.backend.counters !== undefined) this.op = 'stats';
      else return { kind: 'fatal', op: 'set', errno: UAPI_ERRNO.EPROTO, why: 'unknown operation' };
      this.opEnd = this.scanPos = this.lineStart = nl + 1;
      this.lines = 0;
    }
    if (this.op === 'get' || this.op === 'stats') {
      if (len <= this.opEnd) return null;
      if (buf[this.opEnd] !== NL) {
        return {
          kind: 'fatal',
          op: 'get',
          errno: UAPI_ERRNO.EINVAL,
          why: 'trailing bytes after the get line',
        };
      }
      return { kind: this.op, consumed: this.opEnd + 1 };
    }
    for (;;) {
      const nl = this.scanPos < len ? buf.subarray(this.scanPos, len).indexOf(NL) : -1;
      if (nl < 0) break;
      const at = this.scanPos + nl;
      if (at + 1 > limits.maxRequestBytes) break;
      if (at === this.lineStart) {
        return { kind: 'set', bodyStart: this.opEnd, bodyEnd: at, consumed: at + 1 };
      }
      if (at - this.lineStart > limits.maxLineBytes)
        return this.tooBig(`line over ${limits.maxLineBytes} bytes`);
      if (++this.lines > limits.maxLines) return this.tooBig(`more than ${limits.maxLines} lines`);
      this.lineStart = this.scanPos = at + 1;
    }
    this.scanPos = len;
    if (len > limits.maxRequestBytes) return this.tooBig(`request over ${limits.maxRequestBytes} bytes`);
    if (len - this.lineStart > limits.maxLineBytes)
      return this.tooBig(`line over ${limits.maxLineBytes} bytes`);
    return null;
  }

  private tooBig(why: string): Framed {
    return { kind: 'fatal', op: 'set', errno: UAPI_ERRNO.EMSGSIZE, why };
  }
}

function setUmask(mask: number): number | null {
  try {
    return process.umask(mask);
  } catch {
    return null; // worker threads cannot change the umask; chmod after listen still applies
  }
}

/**
 * Removes the socket files in `dir` whose names start with `prefix` and that nobody answers
 * on: those of devices that died without cleaning up (a daemon killed with its devices). A
 * live socket or a file that is not a socket is left alone. Returns the names removed.
 */
export async function removeStaleSockets(prefix: string, dir: string = UAPI_SOCKET_DIR): Promise<string[]> {
  if (prefix.length === 0 || prefix.includes('/'))
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `invalid socket name prefix "${prefix}"`);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new TgError('TG_ERR_INTERNAL', `cannot list ${dir}`, { cause: err });
  }
  const removed: string[] = [];
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith('.sock')) continue;
    const path = join(dir, name);
    try {
      await removeStaleSocket(path);
    } catch (err) {
      if (err instanceof TgError && err.code === 'TG_ERR_CONFLICT') continue;
      throw err;
    }
    if (
      !(await lstat(path).then(
        () => true,
        () => false,
      ))
    )
      removed.push(name);
  }
  return removed;
}

/**
 * Makes `path` free for a new socket: nothing there, or a socket nobody answers on (removed).
 * A live socket or any other kind of file is a conflict.
 */
async function removeStaleSocket(path: string): Promise<void> {
  let st: Awaited<ReturnType<typeof lstat>>;
  try {
    st = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new TgError('TG_ERR_INTERNAL', `cannot inspect ${path}`, { cause: err });
  }
  if ((st.mode & fsConstants.S_IFMT) !== fsConstants.S_IFSOCK) {
    throw new TgError('TG_ERR_CONFLICT', `${path} exists and is not a socket; not touching it`);
  }
  const live = await new Promise<boolean | 'gone'>((resolve) => {
    const probe = connect(path);
    const timer = setTimeout(() => {
      probe.destroy();
      resolve(true); // accepted nothing yet but did not refuse: someone is there
    }, CONNECT_PROBE_MS);
    probe.once('connect', () => {
      clearTimeout(timer);
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code === 'ECONNREFUSED' ? false : err.code === 'ENOENT' ? 'gone' : true);
    });
  });
  if (live === 'gone') return;
  if (live) throw new TgError('TG_ERR_CONFLICT', `a live device already answers on ${path}`);
  log.info({ path }, 'removing stale UAPI socket');
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new TgError('TG_ERR_INTERNAL', `cannot remove stale socket ${path}`, { cause: err });
    }
  }
}
