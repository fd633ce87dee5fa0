// The management APIs as a client reaches them: the NIC agent's, the vSwitch daemon's and the
// orchestrator's real servers, in this process, each on its own Unix socket, with their real
// routes, schemas and handlers (fake UDP sockets for the NIC, a fake platform for the vSwitch,
// an in-memory SQLite store for the orchestrator). Every input is one raw HTTP/1.1 request
// written to a new connection: the request line (method, path, query) and the JSON body both
// come from the input, so the URL parser, the router, the query handling and each route's
// schema and handler are fuzzed together.
//
// Input: "<METHOD> <path and query>\n<body>"; an empty body sends no body.
// Findings: a 500 TG_ERR_INTERNAL (an exception the handler did not expect), an answer that is
// not JSON with {code, message} for a 4xx, no answer to a well-formed request, an answer slower
// than the runner's limit.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeNetwork } from '../../../src/native/fake.js';
import { NicService } from '../../../src/nic/service.js';
import { ORCHESTRATOR_MAX_BODY_BYTES, orchestratorRoutes } from '../../../src/orchestrator/api.js';
import { Orchestrator } from '../../../src/orchestrator/orchestrator.js';
import { SqliteStore } from '../../../src/orchestrator/sqlite-store.js';
import { JsTransportAead } from '../../../src/protocol/aead.js';
import type { UapiChangeSet } from '../../../src/uapi/protocol.js';
import { JsonApiServer } from '../../../src/util/http-json.js';
import { logger } from '../../../src/util/log.js';
import { VSWITCH_MAX_BODY_BYTES, vswitchRoutes } from '../../../src/vswitch/api.js';
import { VSwitchDaemon } from '../../../src/vswitch/daemon.js';
import type { DeviceExit, DeviceHandle, Plumbing, VSwitchPlatform } from '../../../src/vswitch/platform.js';
import { mutateJson, type Rng } from '../mutate.js';
import { FuzzFinding, type FuzzTarget } from '../target.js';

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'];
const PARAMS = [
  'w1',
  'acme',
  'h1',
  'nobody',
  '%2e%2e',
  '%00',
  '%zz',
  'a%2Fb',
  '..',
  'x'.repeat(80),
  '%F0%9F%98%80',
  '__proto__',
  'constructor',
];
const QUERIES = [
  '',
  '?tenant=acme',
  '?since=abc',
  '?since=0&limit=10',
  '?limit=-1',
  '?limit=1e999',
  '?tenant=acme&tenant=blue',
  '?verdict=deny',
  '?a=%zz',
  '?__proto__=1',
];

export interface RawAnswer {
  status: number;
  body: string;
}

/** One request on a new connection ("Connection: close"), answer read until the server closes. */
export function rawRequest(
  socket: string,
  requestLine: string,
  body: Buffer | null,
  timeoutMs: number,
): Promise<RawAnswer | null> {
  return new Promise((resolve, reject) => {
    const sock = connect(socket);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new FuzzFinding(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('latin1');
      if (text.length === 0) return resolve(null);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      if (m === null)
        return reject(new FuzzFinding(`not an HTTP answer: ${JSON.stringify(text.slice(0, 80))}`));
      const at = text.indexOf('\r\n\r\n');
      let payload = at < 0 ? '' : text.slice(at + 4);
      if (/\r\ntransfer-encoding: chunked\r\n/i.test(text.slice(0, at))) payload = dechunk(payload);
      resolve({ status: Number(m[1]), body: payload });
    });
    const head =
      `${requestLine} HTTP/1.1\r\nHost: tenguard\r\nConnection: close\r\n` +
      (body === null ? '\r\n' : `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`);
    sock.write(Buffer.concat([Buffer.from(head, 'latin1'), body ?? Buffer.alloc(0)]));
  });
}

function dechunk(s: string): string {
  let out = '';
  let at = 0;
  for (;;) {
    const nl = s.indexOf('\r\n', at);
    if (nl < 0) return out;
    const n = Number.parseInt(s.slice(at, nl), 16);
    if (!(n > 0)) return out;
    out += s.slice(nl + 2, nl + 2 + n);
    at = nl + 2 + n + 2;
  }
}

/** A request line a server must answer (anything else may be refused by node's parser with a close). */
function wellFormed(line: string): boolean {
  return /^[A-Z]+ \/[\x21-\x7e]*$/.test(line);
}

abstract class ApiTarget implements FuzzTarget {
  abstract readonly name: string;
  abstract readonly description: string;
  readonly maxLength = 24 * 1024;
  readonly resetEvery = 5000;
  protected dir = '';
  protected socket = '';
  /** Route templates ('/v1/workloads/:workload') the request-line mutation draws on. */
  protected abstract readonly paths: readonly string[];
  readonly dictionary = [
    '"workload":',
    '"tenant":',
    '"address":',
    '"host":',
    '"name":',
    '"pool":',
    '"labels":{',
    '"psk":',
    '"vswitchPublicKey":',
    '"nicPublicKey":',
    '"nicEndpoint":',
    '"netns":',
    '"routes":[',
    '"rules":[',
    '"to":',
    'null',
    '1e400',
    '"\\u0000"',
    '%00',
    '?',
    '&',
    '/',
  ];

  protected abstract start(): Promise<void>;
  protected abstract stop(): Promise<void>;

  async setup(): Promise<void> {
    this.dir = mkdtempSync(join(tmpdir(), `tgfz-${this.name}-`));
    this.socket = join(this.dir, 'api.sock');
    await this.start();
  }

  async reset(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async teardown(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  mutate(input: Buffer, rng: Rng): Buffer | null {
    const nl = input.indexOf(0x0a);
    const line = nl < 0 ? input.toString('latin1') : input.subarray(0, nl).toString('latin1');
    const body = nl < 0 ? Buffer.alloc(0) : input.subarray(nl + 1);
    if (rng.chance(30)) {
      const path = rng
        .pick(this.paths)
        .replace(/:[A-Za-z]+/g, () => rng.pick(PARAMS))
        .concat(rng.pick(QUERIES));
      return Buffer.concat([Buffer.from(`${rng.pick(METHODS)} ${path}\n`, 'latin1'), body]);
    }
    const m = body.length > 0 ? mutateJson(body, rng) : null;
    if (m === null) return null;
    return Buffer.concat([Buffer.from(`${line}\n`, 'latin1'), m]);
  }

  async run(input: Buffer): Promise<string> {
    const nl = input.indexOf(0x0a);
    const line = (nl < 0 ? input : input.subarray(0, nl)).toString('latin1').replace(/[\r\n]/g, ' ');
    const body = nl < 0 || nl === input.length - 1 ? null : input.subarray(nl + 1);
    const a = await rawRequest(this.socket, line, body, 5000);
    const route = this.routeOf(line.split(' ')[1] ?? '');
    if (a === null) {
      if (wellFormed(line))
        throw new FuzzFinding(
          `no answer to a well-formed request line ${JSON.stringify(line.slice(0, 100))}`,
        );
      return 'closed';
    }
    let code = '';
    if (a.status >= 400 && a.body.length > 0 && a.body.startsWith('{')) {
      let parsed: { code?: unknown; message?: unknown };
      try {
        parsed = JSON.parse(a.body) as typeof parsed;
      } catch {
        throw new FuzzFinding(`a ${a.status} answer whose body is not JSON`);
      }
      if (typeof parsed.code !== 'string' || typeof parsed.message !== 'string')
        throw new FuzzFinding(`a ${a.status} answer without code and message`);
      code = parsed.code;
      if (code === 'TG_ERR_INTERNAL')
        throw new FuzzFinding(`500 TG_ERR_INTERNAL for ${JSON.stringify(line.slice(0, 100))}`);
    }
    const method = line.split(' ')[0] ?? '';
    return `${METHODS.includes(method) ? method : 'other'} ${route} ${a.status} ${code}`;
  }

  /** The route template a request path falls on, so that outcomes stay few. */
  private routeOf(target: string): string {
    const segs = target.split('?')[0].split('/');
    for (const p of this.paths) {
      const want = p.split('/');
      if (want.length === segs.length && want.every((w, i) => w.startsWith(':') || w === segs[i])) return p;
    }
    return 'unrouted';
  }
}

class FakeDevice implements DeviceHandle {
  readonly exited: Promise<DeviceExit>;
  private end!: (e: DeviceExit) => void;

  constructor(
    readonly ifname: string,
    readonly pid: number,
  ) {
    this.exited = new Promise((r) => {
      this.end = r;
    });
  }

  async uapiSet(change: UapiChangeSet): Promise<void> {
    change.privateKey?.fill(0);
  }

  async stop(): Promise<void> {
    this.end({ code: 0, signal: null });
  }
}

class FakePlatform implements VSwitchPlatform {
  private readonly plumbed = new Set<string>();
  private pid = 1000;

  async launch(ifname: string): Promise<DeviceHandle> {
    return new FakeDevice(ifname, this.pid++);
  }

  netnsExists(netns: string): boolean {
    return netns.startsWith('tgfz-');
  }

  async linkExists(netns: string, name: string): Promise<boolean> {
    return name === 'tg0' && this.plumbed.has(netns);
  }

  async plumb(p: Plumbing): Promise<void> {
    this.plumbed.add(p.netns);
  }

  async unplumb(netns: string): Promise<void> {
    this.plumbed.delete(netns);
  }
}

export class NicApiTarget extends ApiTarget {
  readonly name = 'api-nic';
  readonly description = "the NIC agent's API: routes, schemas, handlers through its real server";
  protected readonly paths = [
    '/v1/health',
    '/metrics',
    '/v1/identity',
    '/v1/keys',
    '/v1/workloads',
    '/v1/workloads/:workload',
    '/v1/workloads/:workload/psk',
    '/v1/tenants',
    '/v1/tenants/:tenant/key',
    '/v1/tenants/:tenant/peers',
    '/v1/tenants/:tenant/grants',
    '/v1/policy/:tenant',
    '/v1/flows',
  ];
  private net = new FakeNetwork();
  private svc: NicService | null = null;

  protected async start(): Promise<void> {
    this.net = new FakeNetwork();
    this.svc = await NicService.start({
      apiSocket: this.socket,
      hostAddress: '198.19.1.2',
      fabricAddress: '198.18.0.11',
      openSocket: (address, port) => this.net.createSocket({ address, port }),
      aead: new JsTransportAead(),
      log: logger('fuzz-nic'),
    });
  }

  protected async stop(): Promise<void> {
    await this.svc?.close();
    this.svc = null;
  }
}

export class VSwitchApiTarget extends ApiTarget {
  readonly name = 'api-vswitch';
  readonly description = "the vSwitch daemon's API on a fake platform, through its real server";
  protected readonly paths = [
    '/v1/health',
    '/v1/instances',
    '/v1/instances/:workload',
    '/v1/instances/:workload/nic',
    '/v1/instances/:workload/psk',
    '/v1/instances/:workload/restart',
  ];
  private server: JsonApiServer | null = null;
  private daemon: VSwitchDaemon | null = null;

  protected async start(): Promise<void> {
    const log = logger('fuzz-vswitch');
    this.daemon = new VSwitchDaemon({ platform: new FakePlatform(), log, ifnamePrefix: 'tgfz-v' });
    this.server = await JsonApiServer.listen({
      socketPath: this.socket,
      routes: vswitchRoutes(this.daemon, Date.now()),
      log,
      maxBodyBytes: VSWITCH_MAX_BODY_BYTES,
    });
  }

  protected async stop(): Promise<void> {
    await this.server?.close();
    await this.daemon?.close();
    this.server = null;
    this.daemon = null;
  }
}

export class OrchestratorApiTarget extends ApiTarget {
  readonly name = 'api-orchestrator';
  readonly description = "the orchestrator's REST API on an in-memory store (agents unreachable)";
  protected readonly paths = [
    '/v1/health',
    '/openapi.json',
    '/v1/tenants',
    '/v1/tenants/:tenant',
    '/v1/tenants/:tenant/policy',
    '/v1/hosts',
    '/v1/hosts/:host',
    '/v1/hosts/:host/keys',
    '/v1/workloads',
    '/v1/workloads/:workload',
    '/v1/workloads/:workload/migrate',
    '/v1/flows',
    '/v1/flows/query',
    '/v1/reconcile',
  ];
  private server: JsonApiServer | null = null;
  private orch: Orchestrator | null = null;

  protected async start(): Promise<void> {
    const log = logger('fuzz-orch');
    this.orch = new Orchestrator(SqliteStore.memory(), log);
    this.server = await JsonApiServer.listen({
      socketPath: this.socket,
      routes: orchestratorRoutes(this.orch),
      log,
      maxBodyBytes: ORCHESTRATOR_MAX_BODY_BYTES,
    });
  }

  protected async stop(): Promise<void> {
    await this.server?.close();
    await this.orch?.close();
    this.server = null;
    this.orch = null;
  }
}
