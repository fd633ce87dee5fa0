// Shared pieces of the NIC integration tests (test/integration/nic-*.test.ts): a lab with NIC
// agents and vSwitch daemons driven by the orchestrator (src/lab/control.ts), traffic probes
// run inside workload namespaces (UDP and TCP with a payload; ping is ping.ts), packet
// captures with tcpdump searched for plaintext
// and decoded by tshark, and a scan for leaked private keys. Run as a program inside a
// namespace, this file is the probe:
//
//   ip netns exec <ns> node nic.js udp-recv <bind> <port> <ms>
//   ip netns exec <ns> node nic.js udp-send <dst> <port> <hex> <count> [<src>]
//   ip netns exec <ns> node nic.js tcp-echo <bind> <port> <ms>
//   ip netns exec <ns> node nic.js tcp-send <dst> <port> <hex> <ms>
//
// each of which prints one JSON line on stdout when done ("ready" first, for the servers).
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { readFileSync, realpathSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { LabAgents, type LabAgentsOptions } from '../../src/lab/agents.js';
import { type LabControlOptions, LabControlPlane } from '../../src/lab/control.js';
import { buildLab, destroyLab, type LabState } from '../../src/lab/index.js';
import { publicKeyOf } from '../../src/protocol/crypto.js';
import { TgError } from '../../src/util/errors.js';
import { childJsonResult, childReady, endChild, runOk } from '../../src/util/exec.js';

const SUPPORT = fileURLToPath(import.meta.url);

/** A fresh lab prefix for NIC tests: `tgn` and four random letters or digits. */
export function nicPrefix(): string {
  const chars = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return `tgn${[...randomBytes(4)].map((b) => chars[b % chars.length]).join('')}`;
}

export interface NicLab {
  lab: LabState;
  agents: LabAgents;
  control: LabControlPlane;
}

/**
 * Builds a lab, starts its agents and the orchestrator over them (every answer of the
 * agents' APIs recorded in agents.responses); on failure removes what it made.
 */
export async function startNicLab(
  prefix: string,
  size: { hosts: number; tenants: number; workloads: number; mtu?: number; nics?: number },
  opts: LabAgentsOptions & LabControlOptions = {},
): Promise<NicLab> {
  const lab = await buildLab({ prefix, ...size });
  let agents: LabAgents | undefined;
  try {
    // TG_NIC_ECHO=1 shows the agents' logs on stderr (debugging a failing test).
    agents = await LabAgents.start(lab, { echoLogs: process.env.TG_NIC_ECHO === '1', ...opts });
    const control = await LabControlPlane.start(lab, agents, { recorder: agents.record, ...opts });
    return { lab, agents, control };
  } catch (err) {
    await agents?.stop().catch(() => undefined);
    await destroyLab(prefix);
    throw err;
  }
}

export async function stopNicLab(l: NicLab | undefined, prefix: string): Promise<void> {
  await l?.control.close().catch(() => undefined);
  await l?.agents.stop().catch(() => undefined);
  await destroyLab(prefix);
}

// --- Probes ---------------------------------------------------------------------------------

function probeProcess(ns: string, args: string[]): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, process.execPath, SUPPORT, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/**
 * Sends `count` UDP datagrams carrying `payload` (hex) from one namespace to an address in
 * another (optionally from a given source address) and returns what the receiver got.
 */
export async function udpProbe(
  fromNs: string,
  toNs: string,
  target: string,
  payload: string,
  opts: { count?: number; source?: string; port?: number; listenMs?: number } = {},
): Promise<{ received: string[] }> {
  const port = String(opts.port ?? 40123);
  const server = probeProcess(toNs, ['udp-recv', target, port, String(opts.listenMs ?? 2500)]);
  const result = childJsonResult(server, 20_000, 'probe');
  await childReady(server, 'probe server');
  const sender = probeProcess(fromNs, [
    'udp-send',
    target,
    port,
    payload,
    String(opts.count ?? 5),
    ...(opts.source ? [opts.source] : []),
  ]);
  await childJsonResult(sender, 20_000, 'probe');
  return (await result) as { received: string[] };
}

/**
 * Like udpProbe, with several receivers listening at once (each in its own namespace, on the
 * address given): what each one got.
 */
export async function udpProbeMany(
  fromNs: string,
  receivers: readonly { ns: string; address: string }[],
  target: string,
  payload: string,
  opts: { count?: number; source?: string; port?: number; listenMs?: number } = {},
): Promise<string[][]> {
  const port = String(opts.port ?? 40125);
  const servers = receivers.map((r) =>
    probeProcess(r.ns, ['udp-recv', r.address, port, String(opts.listenMs ?? 2500)]),
  );
  const results = servers.map((s) => childJsonResult(s, 20_000, 'probe'));
  await Promise.all(servers.map((s) => childReady(s, 'probe server')));
  const sender = probeProcess(fromNs, [
    'udp-send',
    target,
    port,
    payload,
    String(opts.count ?? 5),
    ...(opts.source ? [opts.source] : []),
  ]);
  await childJsonResult(sender, 20_000, 'probe');
  return (await Promise.all(results)).map((r) => r.received as string[]);
}

/** A TCP connection from one namespace to an echo server in another, carrying `payload` (hex). */
export async function tcpProbe(
  fromNs: string,
  toNs: string,
  target: string,
  payload: string,
  opts: { port?: number; timeoutMs?: number } = {},
): Promise<{ echoed: string | null; serverReceived: string | null }> {
  const port = String(opts.port ?? 40124);
  const ms = opts.timeoutMs ?? 3000;
  const server = probeProcess(toNs, ['tcp-echo', target, port, String(ms + 1000)]);
  const result = childJsonResult(server, 30_000, 'probe');
  await childReady(server, 'probe server');
  const client = await childJsonResult(
    probeProcess(fromNs, ['tcp-send', target, port, payload, String(ms)]),
    30_000,
    'probe',
  );
  const s = await result;
  return {
    echoed: (client.echoed as string | null) ?? null,
    serverReceived: (s.received as string | null) ?? null,
  };
}

// --- Captures -------------------------------------------------------------------------------

export interface Capture {
  file: string;
  stop(): Promise<void>;
}

/** tcpdump of every packet on an interface of a namespace, into `file`, until stop(). */
export async function startCapture(ns: string, iface: string, file: string): Promise<Capture> {
  rmSync(file, { force: true });
  // --immediate-mode: packets are handed over as they come; without it the ones still in the
  // capture ring's current block when a short capture is stopped are lost.
  const child = spawn(
    'ip',
    ['netns', 'exec', ns, 'tcpdump', '-i', iface, '-n', '-U', '--immediate-mode', '-s', '0', '-w', file],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let err = '';
  await new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('listening on')) resolve();
    });
    child.once('close', () =>
      reject(new TgError('TG_ERR_COMMAND_FAILED', `tcpdump on ${iface}: ${err.trim()}`)),
    );
  });
  return {
    file,
    async stop(): Promise<void> {
      await endChild(child, 'SIGINT');
    },
  };
}

/** Whether the capture file holds `needle` anywhere (headers, payloads, anything). */
export function captureContains(file: string, needle: Buffer): boolean {
  return readFileSync(file).includes(needle);
}

export interface WgDecode {
  udpPackets: number;
  /** UDP packets tshark decoded as WireGuard. */
  wgPackets: number;
  /** wg.type values seen, with counts. */
  types: Map<number, number>;
  /** Transport data messages whose wg.receiver and wg.counter fields decoded. */
  transportWithReceiver: number;
}

/** Decodes a capture with tshark, UDP port `port` as WireGuard. */
export async function decodeWireGuard(file: string, port: number): Promise<WgDecode> {
  const out = await runOk(
    'tshark',
    [
      '-r',
      file,
      '-d',
      `udp.port==${port},wg`,
      '-Y',
      'udp and not icmp and not icmpv6',
      '-T',
      'fields',
      '-e',
      'udp.length',
      '-e',
      'wg.type',
      '-e',
      'wg.receiver',
      '-e',
      'wg.counter',
    ],
    { timeoutMs: 60_000 },
  );
  const d: WgDecode = { udpPackets: 0, wgPackets: 0, types: new Map(), transportWithReceiver: 0 };
  for (const line of out.split('\n')) {
    if (line.trim() === '') continue;
    const [, type, receiver, counter] = line.split('\t');
    d.udpPackets++;
    if (type === undefined || type === '') continue;
    d.wgPackets++;
    const t = Number(type);
    d.types.set(t, (d.types.get(t) ?? 0) + 1);
    if (t === 4 && receiver !== undefined && receiver !== '' && counter !== undefined && counter !== '')
      d.transportWithReceiver++;
  }
  return d;
}

// --- Secret scan ----------------------------------------------------------------------------

const BASE64_KEY = /[A-Za-z0-9+/]{43}=/g;
const HEX_KEY = /[0-9a-fA-F]{64}/g;

/**
 * Every 32-byte value written as base64 or hex in `text` whose X25519 public key is one of
 * `publicKeys`: that is, any private key of those public keys, in either encoding. The
 * private keys themselves are not needed to look for them.
 */
export function findPrivateKeys(text: string, publicKeys: readonly Buffer[]): string[] {
  const wanted = new Set(publicKeys.map((k) => k.toString('hex')));
  const hits: string[] = [];
  const verdict = new Map<string, boolean>();
  const check = (candidate: Buffer, where: string): void => {
    if (candidate.length !== 32) return;
    const hex = candidate.toString('hex');
    let hit = verdict.get(hex);
    if (hit === undefined) {
      hit = wanted.has(publicKeyOf(candidate).toString('hex'));
      verdict.set(hex, hit);
    }
    if (hit) hits.push(where);
  };
  for (const m of text.matchAll(BASE64_KEY)) check(Buffer.from(m[0], 'base64'), `base64 at ${m.index}`);
  for (const m of text.matchAll(HEX_KEY)) check(Buffer.from(m[0], 'hex'), `hex at ${m.index}`);
  return hits;
}

// --- The probe program ----------------------------------------------------------------------

async function probeMain(mode: string, args: string[]): Promise<Record<string, unknown>> {
  switch (mode) {
    case 'udp-recv': {
      const [bind, port, ms] = args;
      const sock = createSocket(bind.includes(':') ? 'udp6' : 'udp4');
      const received: string[] = [];
      sock.on('message', (m) => received.push(m.toString('hex')));
      await new Promise<void>((r) => sock.bind(Number(port), bind, () => r()));
      process.stdout.write('ready\n');
      await new Promise((r) => setTimeout(r, Number(ms)));
      sock.close();
      return { received };
    }
    case 'udp-send': {
      const [dst, port, hex, count, src] = args;
      const sock = createSocket(dst.includes(':') ? 'udp6' : 'udp4');
      await new Promise<void>((r) => sock.bind(0, src, () => r()));
      let sent = 0;
      for (let i = 0; i < Number(count); i++) {
        await new Promise<void>((r) =>
          sock.send(Buffer.from(hex, 'hex'), Number(port), dst, (err) => {
            if (!err) sent++;
            r();
          }),
        );
        await new Promise((r) => setTimeout(r, 100));
      }
      sock.close();
      return { sent };
    }
    case 'tcp-echo': {
      const [bind, port, ms] = args;
      let received: string | null = null;
      const server = createServer((s) => {
        const chunks: Buffer[] = [];
        s.on('data', (d: Buffer) => {
          chunks.push(d);
          s.write(d);
        });
        s.on('end', () => {
          received = Buffer.concat(chunks).toString('hex');
          s.end();
        });
        s.on('error', () => undefined);
      });
      await new Promise<void>((r) => server.listen(Number(port), bind, () => r()));
      process.stdout.write('ready\n');
      await new Promise((r) => setTimeout(r, Number(ms)));
      server.close();
      return { received };
    }
    case 'tcp-send': {
      const [dst, port, hex, ms] = args;
      const payload = Buffer.from(hex, 'hex');
      const echoed = await new Promise<string | null>((resolve) => {
        const s = connect({ host: dst, port: Number(port) });
        const chunks: Buffer[] = [];
        const t = setTimeout(() => {
          s.destroy();
          resolve(null);
        }, Number(ms));
        s.on('connect', () => s.write(payload));
        s.on('data', (d: Buffer) => {
          chunks.push(d);
          if (Buffer.concat(chunks).length >= payload.length) {
            clearTimeout(t);
            s.end();
            resolve(Buffer.concat(chunks).toString('hex'));
          }
        });
        s.on('error', () => {
          clearTimeout(t);
          resolve(null);
        });
      });
      return { echoed };
    }
    default:
      throw new Error(`unknown probe mode '${mode}'`);
  }
}

function isMain(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(SUPPORT);
  } catch {
    return false;
  }
}

if (isMain()) {
  probeMain(process.argv[2] ?? '', process.argv.slice(3)).then(
    (r) => process.stdout.write(`${JSON.stringify(r)}\n`),
    (err: unknown) => {
      process.stderr.write(`probe: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}

/** A random marker: `bytes` random bytes, as hex. */
export function marker(bytes = 16): string {
  return randomBytes(bytes).toString('hex');
}
