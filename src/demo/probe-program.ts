// The demo's TCP probe, run as a program inside a workload namespace:
//
//   ip netns exec <ns> node probe-program.js tcp-echo <bind> <port> <ms>
//   ip netns exec <ns> node probe-program.js tcp-send <dst> <port> <hex> <repeat> <ms>
//   ip netns exec <ns> node probe-program.js resolve <name>
//   ip netns exec <ns> node probe-program.js http-get <url> <ms>
//
// tcp-echo prints "ready" once listening, echoes what one client sends and, after <ms>, one
// JSON line {received: <bytes>, sha: <hex>}. tcp-send sends <hex> repeated <repeat> times,
// reads the echo back and prints {sent, echoed, sha, ms} (echoed 0 when nothing came back
// within <ms>); <dst> may be a name, resolved by the namespace's resolver. resolve prints
// {address} (IPv4, by the system resolver, i.e. the namespace's resolv.conf) or {error} with the
// resolver's code. http-get prints {status, body, ms} (the body up to 4 KiB) or {error, ms}.
// Only the program entry point runs anything; importing this file does not.
import { createHash } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { realpathSync } from 'node:fs';
import { get } from 'node:http';
import { connect, createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

export const PROBE_PROGRAM = fileURLToPath(import.meta.url);

/** The largest transfer the probe makes (repeat * payload). */
export const MAX_TRANSFER_BYTES = 8 * 1024 * 1024;

async function tcpEcho(bind: string, port: number, ms: number): Promise<Record<string, unknown>> {
  const hash = createHash('sha256');
  let received = 0;
  const server = createServer((s) => {
    s.on('data', (d: Buffer) => {
      received += d.length;
      hash.update(d);
      s.write(d);
    });
    s.on('end', () => s.end());
    s.on('error', () => undefined);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, bind, () => resolve());
  });
  process.stdout.write('ready\n');
  await new Promise((r) => setTimeout(r, ms));
  server.close();
  return { received, sha: hash.digest('hex') };
}

async function tcpSend(
  dst: string,
  port: number,
  payload: Buffer,
  repeat: number,
  ms: number,
): Promise<Record<string, unknown>> {
  const total = payload.length * repeat;
  const sent = createHash('sha256');
  for (let i = 0; i < repeat; i++) sent.update(payload);
  const sentSha = sent.digest('hex');
  const t0 = performance.now();
  const echoed = await new Promise<{ bytes: number; sha: string }>((resolve) => {
    const hash = createHash('sha256');
    let bytes = 0;
    const s = connect({ host: dst, port });
    const done = (): void => {
      clearTimeout(timer);
      s.destroy();
      resolve({ bytes, sha: hash.digest('hex') });
    };
    const timer = setTimeout(done, ms);
    s.on('connect', () => {
      for (let i = 0; i < repeat; i++) s.write(payload);
    });
    s.on('data', (d: Buffer) => {
      bytes += d.length;
      hash.update(d);
      if (bytes >= total) done();
    });
    s.on('error', done);
  });
  return {
    sent: total,
    echoed: echoed.bytes,
    intact: echoed.bytes === total && echoed.sha === sentSha,
    ms: Math.round(performance.now() - t0),
  };
}

async function main(argv: string[]): Promise<Record<string, unknown>> {
  const [mode, ...a] = argv;
  const num = (s: string | undefined, what: string, max: number): number => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0 || n > max) throw new Error(`bad ${what} ${JSON.stringify(s)}`);
    return n;
  };
  if (mode === 'tcp-echo') return tcpEcho(a[0] ?? '', num(a[1], 'port', 65535), num(a[2], 'ms', 120_000));
  if (mode === 'tcp-send') {
    const payload = Buffer.from(a[2] ?? '', 'hex');
    const repeat = num(a[3], 'repeat', 1_000_000);
    if (payload.length === 0 || payload.length * repeat > MAX_TRANSFER_BYTES)
      throw new Error(`payload of ${payload.length * repeat} bytes is out of range`);
    return tcpSend(a[0] ?? '', num(a[1], 'port', 65535), payload, repeat, num(a[4], 'ms', 120_000));
  }
  if (mode === 'http-get') return httpGet(a[0] ?? '', Number(a[1] ?? 2000));
  if (mode === 'resolve') {
    try {
      return { address: (await lookup(a[0] ?? '', { family: 4 })).address };
    } catch (err) {
      return { error: (err as NodeJS.ErrnoException).code ?? String(err) };
    }
  }
  throw new Error(`unknown probe mode '${mode}'`);
}

/** One GET; the body up to 4 KiB. */
function httpGet(url: string, ms: number): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  const took = () => Math.round(performance.now() - t0);
  return new Promise((resolve) => {
    const req = get(url, { timeout: ms }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        if (body.length < 4096) body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: body.slice(0, 4096), ms: took() }));
      res.on('error', (err) => resolve({ error: err.message, ms: took() }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message, ms: took() }));
  });
}

function isMain(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(PROBE_PROGRAM);
  } catch {
    return false;
  }
}

if (isMain()) {
  main(process.argv.slice(2)).then(
    (r) => process.stdout.write(`${JSON.stringify(r)}\n`),
    (err: unknown) => {
      process.stderr.write(`probe: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
