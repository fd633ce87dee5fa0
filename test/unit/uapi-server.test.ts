import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { link, lstat, mkdtemp, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { uapiGet, uapiSet } from '../../src/uapi/client.js';
import { MemoryUapiBackend } from '../../src/uapi/memory.js';
import {
  parseGetResponse,
  parseSetRequest,
  UAPI_ERRNO,
  type UapiBackend,
  type UapiChangeSet,
  type UapiDeviceSnapshot,
  UapiError,
} from '../../src/uapi/protocol.js';
import { UapiServer, uapiSocketPath } from '../../src/uapi/server.js';
import { TgError } from '../../src/util/errors.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const key = (): Buffer => randomBytes(32);

let dir = '';
let n = 0;
const servers: UapiServer[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tguapi-'));
});

after(async () => {
  for (const s of servers) await s.close();
  await rm(dir, { recursive: true, force: true });
});

async function start(backend: UapiBackend = new MemoryUapiBackend(), extra = {}): Promise<UapiServer> {
  const srv = await UapiServer.start({ ifname: `tgut${n++}`, backend, socketDir: dir, ...extra });
  servers.push(srv);
  return srv;
}

interface Talk {
  answers: string[];
  closedByServer: boolean;
}

/** Writes `data` (in the given pieces), collects answers until `want` arrived or the server closed. */
function talk(
  path: string,
  pieces: (string | Buffer)[],
  want: number,
  opts: { endAfter?: boolean } = {},
): Promise<Talk> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let text = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no ${want} answers within 5 s; got ${JSON.stringify(text)}`));
    }, 5000);
    const done = (closedByServer: boolean): void => {
      clearTimeout(timer);
      const answers = text.split(/(?<=\n\n)/).filter((a) => a.length > 0);
      sock.destroy();
      resolve({ answers, closedByServer });
    };
    sock.on('connect', () => {
      for (const p of pieces) sock.write(p);
      if (opts.endAfter) sock.end();
    });
    sock.on('data', (d) => {
      text += d.toString('latin1');
      if ((text.match(/\n\n/g) ?? []).length >= want && !opts.endAfter) done(false);
    });
    sock.on('end', () => done(true));
    sock.on('error', () => done(true));
  });
}

const setReq = (...lines: string[]): string => `set=1\n${lines.map((l) => `${l}\n`).join('')}\n`;

test('socket is created 0600 in the directory, and removed on close', async () => {
  const srv = await UapiServer.start({
    ifname: 'tgutmode',
    backend: new MemoryUapiBackend(),
    socketDir: dir,
  });
  const st = await lstat(srv.path);
  assert.ok(st.isSocket());
  assert.equal(st.mode & 0o777, 0o600);
  assert.equal(srv.path, uapiSocketPath('tgutmode', dir));
  await srv.close();
  await assert.rejects(lstat(srv.path), { code: 'ENOENT' });
});

test('interface names are validated', async () => {
  for (const bad of ['', 'a/b', 'x'.repeat(16), '..', 'a b', 'a:b']) {
    await assert.rejects(
      UapiServer.start({ ifname: bad, backend: new MemoryUapiBackend(), socketDir: dir }),
      (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_INVALID_ARGUMENT',
      JSON.stringify(bad),
    );
  }
});

test('get on an empty device, then set and get through one connection (pipelined)', async () => {
  const srv = await start();
  const pk = key();
  const r = await talk(
    srv.path,
    [
      'get=1\n\n' +
        setReq('listen_port=51999', `public_key=${hex(pk)}`, 'allowed_ip=100.64.0.0/16') +
        'get=1\n\n',
    ],
    3,
  );
  assert.equal(r.answers[0], 'errno=0\n\n');
  assert.equal(r.answers[1], 'errno=0\n\n');
  const snap = parseGetResponse(Buffer.from(r.answers[2]));
  assert.equal(snap.listenPort, 51999);
  assert.deepEqual(snap.peers[0].allowedIps, ['100.64.0.0/16']);
});

test('a request split into single bytes is framed correctly', async () => {
  const srv = await start();
  const req = setReq(`public_key=${hex(key())}`, 'endpoint=[::1]:7') + 'get=1\n\n';
  const r = await talk(
    srv.path,
    [...Buffer.from(req)].map((b) => Buffer.from([b])),
    2,
  );
  assert.equal(r.answers[0], 'errno=0\n\n');
  assert.equal(parseGetResponse(Buffer.from(r.answers[1])).peers[0].endpoint, '[::1]:7');
});

test('a malformed set answers errno, changes nothing, and the connection stays usable', async () => {
  const backend = new MemoryUapiBackend();
  const srv = await start(backend);
  const pk = key();
  await uapiSet(srv.path, parseSetRequest(Buffer.from(`listen_port=1000\npublic_key=${hex(pk)}\n`)));
  const before = await uapiGet(srv.path);
  const r = await talk(
    srv.path,
    [
      // Valid lines first, a bad one late: nothing of it may be applied.
      setReq(
        `private_key=${hex(key())}`,
        'listen_port=2000',
        'replace_peers=true',
        `public_key=${hex(key())}`,
        'allowed_ip=10.0.0.0/8',
        'persistent_keepalive_interval=65536',
      ),
      setReq('listen_port=3000', 'protocol_version=1'),
      setReq('bogus_key=1'),
      'get=1\n\n',
    ],
    4,
  );
  assert.deepEqual(r.answers.slice(0, 3), ['errno=-22\n\n', 'errno=-22\n\n', 'errno=-22\n\n']);
  assert.deepEqual(parseGetResponse(Buffer.from(r.answers[3])), before);
  assert.equal(backend.applied, 1);
  assert.equal(srv.stats.refused, 3);
});

test('a backend refusal is answered with its errno and changes nothing', async () => {
  const backend = new MemoryUapiBackend({ portAvailable: (p) => p !== 51998 });
  const srv = await start(backend);
  const r = await talk(srv.path, [setReq(`public_key=${hex(key())}`, 'listen_port=51998')], 1);
  assert.equal(r.answers[0], 'errno=-22\n\n'); // listen_port after public_key is a peer key: invalid
  const r2 = await talk(srv.path, [setReq(`private_key=${hex(key())}`, 'listen_port=51998')], 1);
  assert.equal(r2.answers[0], 'errno=-98\n\n');
  assert.deepEqual((await uapiGet(srv.path)).privateKey, undefined);
});

test('a backend that throws something unexpected gives ENOANO, and get failures a positive errno', async () => {
  const broken: UapiBackend = {
    snapshot(): UapiDeviceSnapshot {
      throw new Error('device gone');
    },
    async apply(): Promise<void> {
      throw new Error('device gone');
    },
  };
  const srv = await start(broken);
  const r = await talk(srv.path, [setReq('fwmark=1'), 'get=1\n\n'], 2);
  assert.deepEqual(r.answers, ['errno=-55\n\n', 'errno=55\n\n']);
});

test('change sets reach the backend one at a time, and their keys are wiped afterwards', async () => {
  let running = 0;
  let maxRunning = 0;
  const seen: UapiChangeSet[] = [];
  const inner = new MemoryUapiBackend();
  const slow: UapiBackend = {
    snapshot: () => inner.snapshot(),
    async apply(change) {
      running++;
      maxRunning = Math.max(maxRunning, running);
      await new Promise((r) => setTimeout(r, 2));
      inner.apply(change);
      seen.push(change);
      running--;
    },
  };
  const srv = await start(slow);
  const clients = 40;
  const keys = Array.from({ length: clients }, () => key());
  const results = await Promise.all(
    keys.map((pk, i) =>
      talk(
        srv.path,
        [
          setReq(`public_key=${hex(pk)}`, `preshared_key=${hex(key())}`, `allowed_ip=100.64.${i}.0/24`),
          'get=1\n\n',
        ],
        2,
      ),
    ),
  );
  for (const r of results) assert.equal(r.answers[0], 'errno=0\n\n');
  assert.equal(maxRunning, 1);
  const snap = await uapiGet(srv.path);
  assert.equal(snap.peers.length, clients);
  assert.equal(seen.length, clients);
  for (const c of seen) assert.ok((c.peers[0].presharedKey as Buffer).equals(Buffer.alloc(32)));
});

test('an oversized request is refused with EMSGSIZE and the connection closed; the server lives on', async () => {
  const srv = await start(new MemoryUapiBackend(), { limits: { maxRequestBytes: 4096 } });
  const big = `set=1\n${'fwmark=1\n'.repeat(1000)}\n`;
  const r = await talk(srv.path, [big], 1);
  assert.equal(r.answers[0], 'errno=-90\n\n');
  const r2 = await talk(srv.path, [`set=1\nfwmark=1${'1'.repeat(300)}`], 1); // one endless line
  assert.equal(r2.answers[0], 'errno=-90\n\n');
  const lines = await start(new MemoryUapiBackend(), { limits: { maxLines: 10 } });
  const r3 = await talk(lines.path, [setReq(...Array.from({ length: 11 }, () => 'fwmark=1'))], 1);
  assert.equal(r3.answers[0], 'errno=-90\n\n');
  assert.equal((await uapiGet(srv.path)).fwmark, undefined);
});

test('hostile input: unknown operations, garbage, get with trailing bytes', async () => {
  const srv = await start();
  for (const junk of ['hello\n', '\n\n', 'set=2\n\n', 'SET=1\n\n', 'set=1\r\n\r\n', `${'x'.repeat(100)}`]) {
    const r = await talk(srv.path, [junk], 1);
    assert.equal(r.answers[0], 'errno=-71\n\n', JSON.stringify(junk));
  }
  const g = await talk(srv.path, ['get=1\nget=1\n\n'], 1);
  assert.equal(g.answers[0], 'errno=22\n\n');
  const bin = await talk(srv.path, [randomBytes(8192)], 1);
  assert.ok(bin.closedByServer || bin.answers.length === 1);
  assert.deepEqual(await uapiGet(srv.path), { peers: [] });
});

test('a half request then close applies nothing; a half-closed client still gets its answer', async () => {
  const backend = new MemoryUapiBackend();
  const srv = await start(backend);
  const r = await talk(srv.path, [`set=1\nlisten_port=5\npublic_key=${hex(key())}\n`], 1, { endAfter: true });
  assert.deepEqual(r.answers, []);
  assert.equal(backend.applied, 0);
  const r2 = await talk(srv.path, [setReq('listen_port=6'), 'get=1\n\n'], 2, { endAfter: true });
  assert.equal(r2.answers.length, 2);
  assert.equal(parseGetResponse(Buffer.from(r2.answers[1])).listenPort, 6);
  // A connection that says nothing (wg's liveness probe) is harmless.
  await new Promise<void>((resolve) =>
    connect(srv.path).on('connect', function (this: ReturnType<typeof connect>) {
      this.end();
      resolve();
    }),
  );
  assert.equal((await uapiGet(srv.path)).listenPort, 6);
});

test('a stale socket file is removed; a live one or a non-socket file is a conflict', async () => {
  // Stale: a second name for a socket whose listener is gone.
  const tmpPath = join(dir, 'tgutstale-tmp.sock');
  const l = createServer();
  await new Promise<void>((r) => l.listen(tmpPath, r));
  const stalePath = uapiSocketPath('tgutstale', dir);
  await link(tmpPath, stalePath);
  await new Promise<void>((r) => l.close(() => r()));
  assert.ok((await lstat(stalePath)).isSocket());
  await assert.rejects(
    new Promise((resolve, reject) => connect(stalePath).on('connect', resolve).on('error', reject)),
    { code: 'ECONNREFUSED' },
  );
  const revived = await UapiServer.start({
    ifname: 'tgutstale',
    backend: new MemoryUapiBackend(),
    socketDir: dir,
  });
  servers.push(revived);
  assert.deepEqual(await uapiGet(revived.path), { peers: [] });

  // Live: the same name again.
  await assert.rejects(
    UapiServer.start({ ifname: 'tgutstale', backend: new MemoryUapiBackend(), socketDir: dir }),
    (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_CONFLICT',
  );
  assert.deepEqual(await uapiGet(revived.path), { peers: [] });

  // Not a socket: left alone.
  const filePath = uapiSocketPath('tgutfile', dir);
  await writeFile(filePath, 'keep me');
  await assert.rejects(
    UapiServer.start({ ifname: 'tgutfile', backend: new MemoryUapiBackend(), socketDir: dir }),
    (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_CONFLICT',
  );
  assert.equal(await readFile(filePath, 'utf8'), 'keep me');
  await unlink(filePath);
});

test('deleting the socket file is reported through onSocketRemoved', async () => {
  let removed = 0;
  const srv = await start(new MemoryUapiBackend(), { onSocketRemoved: () => removed++ });
  await unlink(srv.path);
  const deadline = Date.now() + 3000;
  while (removed === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(removed, 1);
});

test('a socket file renamed in its directory is followed, not taken for a removal', async () => {
  let removed = 0;
  const srv = await start(new MemoryUapiBackend(), { onSocketRemoved: () => removed++ });
  const renamed = join(dir, 'tgutrenamed.sock');
  await rename(srv.path, renamed);
  const deadline = Date.now() + 3000;
  while (srv.path !== renamed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(srv.path, renamed);
  assert.equal(removed, 0);
  assert.ok(await uapiGet(renamed), 'answers under the new name');
  await unlink(renamed);
  while (removed === 0 && Date.now() < deadline + 3000) await new Promise((r) => setTimeout(r, 20));
  assert.equal(removed, 1, 'removing it under the new name is a removal');
});

test('close() waits for the change in progress to be applied, then removes the socket', async () => {
  const inner = new MemoryUapiBackend();
  let release = (): void => {};
  const gate = new Promise<void>((r) => {
    release = r;
  });
  const slow: UapiBackend = {
    snapshot: () => inner.snapshot(),
    async apply(change) {
      await gate;
      inner.apply(change);
    },
  };
  const srv = await UapiServer.start({ ifname: 'tgutclose', backend: slow, socketDir: dir });
  const pending = talk(srv.path, [setReq('fwmark=5')], 1).catch(() => null);
  await new Promise((r) => setTimeout(r, 50));
  const closing = srv.close();
  release();
  await closing;
  await pending;
  assert.equal(inner.snapshot().fwmark, 5);
  await assert.rejects(lstat(srv.path), { code: 'ENOENT' });
});

test('idle connections are closed; connections beyond the limit are refused', async () => {
  const srv = await start(new MemoryUapiBackend(), { idleTimeoutMs: 100, maxConnections: 2 });
  const open = (): Promise<{ closed: Promise<number> }> =>
    new Promise((resolve) => {
      const t0 = Date.now();
      const s = connect(srv.path);
      const closed = new Promise<number>((r) => s.on('close', () => r(Date.now() - t0)));
      s.on('error', () => undefined);
      s.on('connect', () => resolve({ closed }));
    });
  const [a, b] = [await open(), await open()];
  const c = await open();
  assert.ok((await c.closed) < 100, 'the third connection is closed at once');
  assert.ok(
    (await a.closed) >= 90 && (await b.closed) >= 90,
    'idle connections are closed after the timeout',
  );
  assert.deepEqual(await uapiGet(srv.path), { peers: [] });
});

test('the client reports a refusal as UapiError with the errno', async () => {
  const srv = await start(new MemoryUapiBackend({ portAvailable: () => false }));
  await assert.rejects(
    uapiSet(srv.path, { listenPort: 7, replacePeers: false, peers: [] }),
    (e: unknown) => e instanceof UapiError && e.errno === UAPI_ERRNO.EADDRINUSE,
  );
});
