// A small UAPI client: one request per connection, as wg(8) does. It talks to any device
// that serves the WireGuard UAPI (tenguard's UapiServer, wireguard-go).
import { connect } from 'node:net';
import {
  parseGetResponse,
  STATS_OP,
  serializeSetRequest,
  UAPI_ERRNO,
  type UapiChangeSet,
  type UapiDeviceSnapshot,
  UapiError,
} from './protocol.js';

const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

/**
 * Sends one request and returns the answer up to and including its terminating empty line.
 * Rejects with UapiError(EIO) when the connection fails, closes early or times out. The
 * caller zeroes the returned Buffer if it may hold keys.
 */
export function uapiExchange(path: string, request: Uint8Array, timeoutMs = 5000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const sock = connect(path);
    const settle = (err: Error | null, answer?: Buffer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      for (const c of chunks) c.fill(0);
      if (err) reject(err);
      else resolve(answer as Buffer);
    };
    const timer = setTimeout(
      () => settle(new UapiError(UAPI_ERRNO.EIO, `no answer from ${path} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    sock.on('connect', () => sock.write(request));
    sock.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      const all = Buffer.concat(chunks, size);
      const end = all.indexOf('\n\n');
      if (end >= 0) {
        const answer = Buffer.from(all.subarray(0, end + 2));
        all.fill(0);
        settle(null, answer);
      } else {
        all.fill(0);
        if (size > MAX_ANSWER_BYTES)
          settle(new UapiError(UAPI_ERRNO.EMSGSIZE, `answer from ${path} too large`));
      }
    });
    sock.on('error', (err) =>
      settle(new UapiError(UAPI_ERRNO.EIO, `UAPI ${path}: ${err.message}`, { cause: err })),
    );
    sock.on('close', () => settle(new UapiError(UAPI_ERRNO.EIO, `UAPI ${path} closed before answering`)));
  });
}

/** get=1: the device's state. Keys in the result are fresh Buffers the caller should zero. */
export async function uapiGet(path: string, timeoutMs?: number): Promise<UapiDeviceSnapshot> {
  const answer = await uapiExchange(path, Buffer.from('get=1\n\n', 'latin1'), timeoutMs);
  try {
    return parseGetResponse(answer);
  } finally {
    answer.fill(0);
  }
}

/** set=1 with the given change set; rejects with UapiError(errno) when the device refuses it. */
export async function uapiSet(path: string, change: UapiChangeSet, timeoutMs?: number): Promise<void> {
  const request = serializeSetRequest(change);
  let answer: Buffer;
  try {
    answer = await uapiExchange(path, request, timeoutMs);
  } finally {
    request.fill(0);
  }
  const m = /^errno=(-?[0-9]{1,10})\n\n$/.exec(answer.toString('latin1'));
  if (m === null) throw new UapiError(UAPI_ERRNO.EPROTO, `unexpected answer to set from ${path}`);
  const errno = Math.abs(Number(m[1]));
  if (errno !== 0) throw new UapiError(errno, `device ${path} refused the change (errno ${errno})`);
}

/**
 * tenguard's extension (STATS_OP): the device's counters, `name=value` lines of non-negative
 * integers (e.g. `dropped.malformed=123`), then errno=0. Rejects with UapiError when the
 * answer does not follow that contract or carries another errno (a device without the
 * extension, such as wireguard-go, refuses the operation).
 */
export async function uapiStats(path: string, timeoutMs?: number): Promise<Map<string, number>> {
  const answer = await uapiExchange(path, Buffer.from(`${STATS_OP}\n\n`, 'latin1'), timeoutMs);
  const stats = new Map<string, number>();
  let errno: number | null = null;
  for (const line of answer.toString('latin1').split('\n')) {
    if (line === '') continue;
    const e = /^errno=(-?[0-9]{1,10})$/.exec(line);
    if (e !== null) {
      errno = Math.abs(Number(e[1]));
      continue;
    }
    const m = /^([A-Za-z0-9_.-]+)=(\d+)$/.exec(line);
    if (m === null)
      throw new UapiError(UAPI_ERRNO.EPROTO, `tenguard-stats: malformed line '${line.slice(0, 80)}'`);
    stats.set(m[1], Number(m[2]));
  }
  if (errno !== 0)
    throw new UapiError(errno ?? UAPI_ERRNO.EPROTO, `tenguard-stats answered errno=${errno ?? '(none)'}`);
  return stats;
}
