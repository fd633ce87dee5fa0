// Traffic for the service and DNS tests, run inside workload namespaces. Run as a program,
// this file is the probe:
//
//   ip netns exec <ns> node svc.js name-server <port> <name>          answers each TCP connection with <name>
//   ip netns exec <ns> node svc.js connect-many <dst> <port> <count> <timeoutMs> [<gapMs>]
//   ip netns exec <ns> node svc.js resolve <server> <queries JSON>     [{ "type": "A"|"AAAA"|"PTR", "name" }]
//   ip netns exec <ns> node svc.js udp-raw <dst> <port> <hex>          one datagram, the reply (hex) or null
//   ip netns exec <ns> node svc.js resolv-conf                         /etc/resolv.conf as the namespace sees it
//
// Servers print {"ready":true} and run until ended; the others print one JSON line when done.
import { type ChildProcess, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { childJsonResult, childReady, endChild } from '../../src/util/exec.js';

const SELF = fileURLToPath(import.meta.url);

function probe(ns: string, args: string[]): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, process.execPath, SELF, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** A TCP server in `ns` on every address, port `port`, that answers each connection with `name`. */
export async function startNameServer(ns: string, port: number, name: string): Promise<ChildProcess> {
  const p = probe(ns, ['name-server', String(port), name]);
  await childReady(p, `name server ${name}`);
  return p;
}

export async function stopServer(p: ChildProcess | undefined): Promise<void> {
  if (p !== undefined) await endChild(p);
}

export interface ConnectResult {
  /** Connections answered, per answering name. */
  counts: Record<string, number>;
  failed: number;
  errors: string[];
}

/** `count` TCP connections one after another from `ns` to dst:port; who answered each. */
export async function connectMany(
  ns: string,
  dst: string,
  port: number,
  count: number,
  opts: { timeoutMs?: number; gapMs?: number } = {},
): Promise<ConnectResult> {
  const r = await childJsonResult(
    probe(ns, [
      'connect-many',
      dst,
      String(port),
      String(count),
      String(opts.timeoutMs ?? 2000),
      String(opts.gapMs ?? 0),
    ]),
    count * ((opts.timeoutMs ?? 2000) + (opts.gapMs ?? 0)) + 30_000,
    'connect-many',
  );
  return r as unknown as ConnectResult;
}

export interface ResolveAnswer {
  type: string;
  name: string;
  answers: string[] | null;
  /** The resolver's error code (ENOTFOUND for NXDOMAIN, EREFUSED ...). */
  error: string | null;
}

/** DNS queries from `ns` to `server` with Node's resolver (c-ares). */
export async function resolveIn(
  ns: string,
  server: string,
  queries: readonly { type: 'A' | 'AAAA' | 'PTR'; name: string }[],
): Promise<ResolveAnswer[]> {
  const r = await childJsonResult(probe(ns, ['resolve', server, JSON.stringify(queries)]), 30_000, 'resolve');
  return r.results as ResolveAnswer[];
}

/** One UDP datagram from `ns`; the reply within 1 s (hex) or null. */
export async function udpRaw(ns: string, dst: string, port: number, hex: string): Promise<string | null> {
  const r = await childJsonResult(probe(ns, ['udp-raw', dst, String(port), hex]), 20_000, 'udp-raw');
  return (r.reply as string | null) ?? null;
}

export async function resolvConfIn(ns: string): Promise<string> {
  const r = await childJsonResult(probe(ns, ['resolv-conf']), 20_000, 'resolv-conf');
  return String(r.text);
}

// --- The probe program ---------------------------------------------------------------------

function print(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v)}\n`);
}

function oneConnection(dst: string, port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: dst, port });
    let data = '';
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error('timeout'));
    }, timeoutMs);
    s.on('data', (d) => {
      data += d.toString();
    });
    s.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    s.on('end', () => {
      clearTimeout(t);
      s.end();
      resolve(data.trim());
    });
  });
}

async function main(argv: string[]): Promise<void> {
  const [mode, ...a] = argv;
  switch (mode) {
    case 'name-server': {
      const name = a[1];
      const server = createServer((s) => {
        s.on('error', () => undefined);
        s.end(`${name}\n`);
      });
      // No host: every IPv6 and IPv4 address of the namespace (IPv4 only where IPv6 is off).
      server.listen(Number(a[0]), () => print({ ready: true }));
      process.on('SIGTERM', () => {
        server.close();
        process.exit(0);
      });
      return;
    }
    case 'connect-many': {
      const [dst, port, count, timeoutMs, gapMs] = [
        a[0],
        Number(a[1]),
        Number(a[2]),
        Number(a[3]),
        Number(a[4]),
      ];
      const counts: Record<string, number> = {};
      const errors: string[] = [];
      let failed = 0;
      for (let i = 0; i < count; i++) {
        try {
          const name = await oneConnection(dst, port, timeoutMs);
          counts[name] = (counts[name] ?? 0) + 1;
        } catch (e) {
          failed++;
          if (errors.length < 5) errors.push((e as Error).message);
        }
        if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
      }
      print({ counts, failed, errors });
      return;
    }
    case 'resolve': {
      const r = new Resolver({ timeout: 1500, tries: 2 });
      r.setServers([a[0]]);
      const results: unknown[] = [];
      for (const q of JSON.parse(a[1]) as { type: string; name: string }[]) {
        try {
          const answers =
            q.type === 'PTR'
              ? await r.reverse(q.name)
              : q.type === 'AAAA'
                ? await r.resolve6(q.name)
                : await r.resolve4(q.name);
          results.push({ ...q, answers, error: null });
        } catch (e) {
          results.push({ ...q, answers: null, error: (e as NodeJS.ErrnoException).code ?? String(e) });
        }
      }
      print({ results });
      return;
    }
    case 'udp-raw': {
      const s = createSocket(a[0].includes(':') ? 'udp6' : 'udp4');
      const t = setTimeout(() => {
        print({ reply: null });
        s.close();
      }, 1000);
      s.on('message', (m) => {
        clearTimeout(t);
        print({ reply: m.toString('hex') });
        s.close();
      });
      s.send(Buffer.from(a[2], 'hex'), Number(a[1]), a[0]);
      return;
    }
    case 'resolv-conf':
      print({ text: readFileSync('/etc/resolv.conf', 'utf8') });
      return;
  }
  throw new Error(`unknown mode ${mode}`);
}

if (process.argv[1] === SELF) {
  main(process.argv.slice(2)).catch((e) => {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  });
}
