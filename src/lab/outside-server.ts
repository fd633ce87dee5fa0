// The lab's outside services, run inside the outside namespace (outside.ts starts them with
// the lab; teardown ends them with the namespace's other processes):
//
//   outside-server.js web  --prefix P --listen ADDR=NAME...   HTTP on port 80 of each ADDR;
//       GET answers 200 with "tenguard outside web NAME at ADDR (lab P)\n".
//   outside-server.js dns  --prefix P --listen ADDR --zone NAME=ADDR/TTL...
//       authoritative DNS on UDP port 53 of ADDR (dns-packet): A records of the zone with their
//       TTL, NXDOMAIN for other names; two names misbehave on purpose, for the NIC's checks of
//       upstream answers: `malformed.<zone suffix>` gets bytes that are no DNS message, and
//       `huge.<zone suffix>` gets 200 A records (more than an upstream answer may carry).
//
// Each prints "ready" on stdout once it listens and names itself P-outside-web / P-outside-dns.
import { createSocket } from 'node:dgram';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import dnsPacket from 'dns-packet';

const HUGE_RECORDS = 200;

function fail(message: string): never {
  process.stderr.write(`outside-server: ${message}\n`);
  process.exit(2);
}

async function web(prefix: string, listen: string[]): Promise<void> {
  await Promise.all(
    listen.map(
      (spec) =>
        new Promise<void>((resolve, reject) => {
          const [addr, name] = spec.split('=');
          if (addr === undefined || name === undefined) fail(`bad --listen '${spec}'`);
          const body = `tenguard outside web ${name} at ${addr} (lab ${prefix})\n`;
          const server = createServer((req, res) => {
            if (req.method !== 'GET' && req.method !== 'HEAD') {
              res.writeHead(405).end();
              return;
            }
            res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
            res.end(req.method === 'GET' ? body : undefined);
          });
          server.once('error', reject);
          server.listen(80, addr, () => resolve());
        }),
    ),
  );
}

async function dns(listen: string, zoneSpecs: string[]): Promise<void> {
  const zone = new Map<string, { address: string; ttl: number }>();
  for (const z of zoneSpecs) {
    const m = /^([a-z0-9.-]+)=([0-9.]+)\/([0-9]+)$/.exec(z);
    if (m === null) fail(`bad --zone '${z}'`);
    zone.set(m[1], { address: m[2], ttl: Number(m[3]) });
  }
  const suffix = [...zone.keys()][0]?.split('.').slice(1).join('.') ?? 'example';
  const sock = createSocket('udp4');
  sock.on('message', (msg, rinfo) => {
    let q: dnsPacket.DecodedPacket;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const question = q.questions?.[0];
    if (q.type !== 'query' || question === undefined) return;
    const name = question.name.toLowerCase().replace(/\.$/, '');
    const reply = (answers: dnsPacket.Answer[], rcode: number): Buffer =>
      dnsPacket.encode({
        type: 'response',
        id: q.id,
        flags: dnsPacket.AUTHORITATIVE_ANSWER | rcode,
        questions: [question],
        answers,
      });
    let out: Buffer;
    if (name === `malformed.${suffix}`) out = Buffer.from('this is not a DNS message at all');
    else if (name === `huge.${suffix}`) {
      const answers: dnsPacket.Answer[] = [];
      for (let i = 0; i < HUGE_RECORDS; i++)
        answers.push({ type: 'A', name: question.name, ttl: 60, class: 'IN', data: `198.18.253.${i % 250}` });
      out = reply(answers, 0);
    } else {
      const z = zone.get(name);
      if (z === undefined) out = reply([], 3);
      else
        out = reply(
          question.type === 'A'
            ? [{ type: 'A', name: question.name, ttl: z.ttl, class: 'IN', data: z.address }]
            : [],
          0,
        );
    }
    sock.send(out, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(53, listen, () => resolve());
  });
}

async function main(): Promise<void> {
  const [role, ...rest] = process.argv.slice(2);
  const { values } = parseArgs({
    args: rest,
    options: {
      prefix: { type: 'string' },
      listen: { type: 'string', multiple: true },
      zone: { type: 'string', multiple: true },
    },
  });
  const prefix = values.prefix ?? fail('--prefix is required');
  const listen = values.listen ?? fail('--listen is required');
  process.title = `${prefix}-outside-${role}`;
  if (role === 'web') await web(prefix, listen);
  else if (role === 'dns') await dns(listen[0], values.zone ?? []);
  else fail(`unknown role '${role}' (web or dns)`);
  process.stdout.write('ready\n');
  for (const s of ['SIGTERM', 'SIGINT'] as const) process.once(s, () => process.exit(0));
}

main().catch((err: Error) => fail(err.message));
