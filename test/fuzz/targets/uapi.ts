// The WireGuard UAPI: the set=1 parser, the reference backend applying what it accepted, and
// the get=1 answer written and read back (serialize, parse, serialize must give the same
// bytes). `uapi` runs in-process; `uapi-socket` sends the same inputs, framing included, to a
// real UapiServer on a Unix socket and reads the answer (several requests per connection, an
// unknown operation closes it).
// Findings: an exception other than UapiError; a get answer that does not read back to itself;
// a socket answer that is not `errno=N` terminated by an empty line, or none at all.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryUapiBackend } from '../../../src/uapi/memory.js';
import {
  parseGetResponse,
  parseSetRequest,
  serializeGetResponse,
  UapiError,
} from '../../../src/uapi/protocol.js';
import { UapiServer } from '../../../src/uapi/server.js';
import { FuzzFinding, type FuzzTarget } from '../target.js';

const DICTIONARY = [
  'set=1\n',
  'get=1\n\n',
  'get=tenguard-stats\n\n',
  'private_key=',
  'listen_port=',
  'fwmark=',
  'replace_peers=true\n',
  'public_key=',
  'preshared_key=',
  'endpoint=',
  'persistent_keepalive_interval=',
  'replace_allowed_ips=true\n',
  'allowed_ip=',
  'allowed_ip=-',
  'remove=true\n',
  'update_only=true\n',
  'protocol_version=1\n',
  '0000000000000000000000000000000000000000000000000000000000000000',
  'e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a',
  '[::1]:51820',
  '127.0.0.1:65535',
  '10.0.0.0/8',
  '::/0',
  '\n',
  '\n\n',
  '=',
];

function roundTrip(backend: MemoryUapiBackend): void {
  const once = serializeGetResponse(backend.snapshot());
  const again = serializeGetResponse(parseGetResponse(once));
  if (!once.equals(again)) throw new FuzzFinding('a get answer does not read back to itself');
}

export class UapiTarget implements FuzzTarget {
  readonly name: string = 'uapi';
  readonly description: string = 'UAPI set=1 parser, reference backend, get=1 answer round trip';
  readonly maxLength = 8192;
  readonly dictionary = DICTIONARY;
  readonly resetEvery: number = 5000;
  protected backend = new MemoryUapiBackend();

  setup(): void {}

  reset(): void {
    this.backend = new MemoryUapiBackend();
  }

  run(input: Buffer): string | Promise<string> {
    if (input.subarray(0, 6).toString('latin1') !== 'set=1\n') {
      roundTrip(this.backend);
      return input.subarray(0, 6).toString('latin1') === 'get=1\n' ? 'get' : 'other-op';
    }
    let sig = 'applied';
    try {
      const change = parseSetRequest(input.subarray(6));
      this.backend.apply(change);
    } catch (err) {
      if (!(err instanceof UapiError)) throw err;
      sig = `errno=${err.errno}:${err.message.replace(/[0-9a-f]{8,}|"[^"]*"|'[^']*'|\d+/g, '#').slice(0, 60)}`;
    }
    roundTrip(this.backend);
    return sig;
  }

  teardown(): void {}
}

/** Reads answers (each ending in an empty line) off one connection, in order. */
class Conversation {
  private text = '';
  private waiter: ((s: string | null) => void) | null = null;
  closed = false;

  constructor(readonly sock: Socket) {
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      this.text += d;
      this.deliver();
    });
    const end = (): void => {
      this.closed = true;
      this.deliver();
    };
    sock.on('close', end);
    sock.on('error', end);
  }

  private deliver(): void {
    if (this.waiter === null) return;
    const at = this.text.indexOf('\n\n');
    if (at >= 0) {
      const answer = this.text.slice(0, at + 2);
      this.text = this.text.slice(at + 2);
      const w = this.waiter;
      this.waiter = null;
      w(answer);
    } else if (this.closed) {
      const w = this.waiter;
      this.waiter = null;
      w(null);
    }
  }

  next(timeoutMs: number): Promise<string | null> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new FuzzFinding(`no answer and no close within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = (s) => {
        clearTimeout(timer);
        resolve(s);
      };
      this.deliver();
    });
  }
}

export class UapiSocketTarget extends UapiTarget {
  override readonly name = 'uapi-socket';
  override readonly description = 'UAPI through a real UapiServer on a Unix socket (framing included)';
  override readonly resetEvery = 20_000;
  private dir = '';
  private server: UapiServer | null = null;
  private conv: Conversation | null = null;
  readonly corpusName = 'uapi';

  override async setup(): Promise<void> {
    this.dir = mkdtempSync(join(tmpdir(), 'tgfz-uapi-'));
    await this.start();
  }

  private async start(): Promise<void> {
    this.backend = new MemoryUapiBackend();
    this.server = await UapiServer.start({ ifname: 'tgfz0', backend: this.backend, socketDir: this.dir });
  }

  override async reset(): Promise<void> {
    this.conv?.sock.destroy();
    this.conv = null;
    await this.server?.close();
    await this.start();
  }

  private async connection(): Promise<Conversation> {
    if (this.conv !== null && !this.conv.closed) return this.conv;
    const path = this.server!.path;
    const sock = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path, () => resolve(s));
      s.once('error', reject);
    });
    this.conv = new Conversation(sock);
    return this.conv;
  }

  override async run(input: Buffer): Promise<string> {
    // One connection per input: a later request's answer never mixes with the next input's.
    this.conv?.sock.destroy();
    this.conv = null;
    const conv = await this.connection();
    // A request without its terminating empty line would wait for more: end it here.
    const request =
      input.subarray(input.length - 2).toString('latin1') === '\n\n'
        ? input
        : Buffer.concat([input, Buffer.from('\n\n')]);
    conv.sock.write(request);
    const first = await conv.next(2000);
    if (first === null) return 'closed';
    if (first.startsWith('errno=')) return first.trim();
    if (!/^[a-z_]+=/.test(first) || !/errno=\d+\n\n$/.test(first))
      throw new FuzzFinding(`malformed answer: ${JSON.stringify(first.slice(0, 120))}`);
    return first.includes('errno=0') ? 'get-ok' : 'get-err';
  }

  override async teardown(): Promise<void> {
    this.conv?.sock.destroy();
    await this.server?.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
