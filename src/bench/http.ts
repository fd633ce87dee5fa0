// `tenguard bench http`: request latency of the management APIs' HTTP stack over a Unix
// socket, for the project's own server (src/util/http-json.ts: node:http, a small router, zod
// body schemas) and for fastify with the zod type provider serving the same two routes, in
// one run. This is the measurement the choice of HTTP stack rests on (src/util/README.md).
//
// What is measured: a client in this process (apiRequest, the one every typed client uses: a
// fresh connection per request) sends requests one after another and times each from the
// call to the parsed answer. Two routes, as the APIs have them:
//   GET  /v1/health     a small JSON answer, no body
//   POST /v1/workloads  a JSON body validated by the NIC's registerWorkloadSchema -> 201
// Both servers run in this process on their own Unix sockets in a temporary directory, so
// the client's cost is in both figures alike. The stacks are measured in turns (ROUNDS
// slices each, alternating), so that they see the same load. Figures: p50 and p99 per route
// and stack, and fastify's p50 and p99 as a ratio to ours. The machine is shared: only the
// ratios of one run mean much.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { registerWorkloadSchema } from '../nic/schemas.js';
import { TgError } from '../util/errors.js';
import { answer, apiRequest, bodyRoute, JsonApiServer, type Route } from '../util/http-json.js';
import { logger } from '../util/log.js';

const HELP = `usage: tenguard bench http [--requests N] [--rounds R] [--json]

Latency of one request over a Unix socket (GET /v1/health, POST /v1/workloads with a
zod-validated body), the project's HTTP stack vs fastify + fastify-type-provider-zod, in one
run: R rounds of N requests per route and stack, taken in turns.

  --requests N   requests per route, stack and round (default 500)
  --rounds R     rounds (default 4)
  --json         one JSON object on stdout
`;

const HEALTH = { status: 'ok', workloads: 3, tenants: 2 };
const BODY = {
  tenant: 'acme',
  workload: 'web-1',
  address: '100.64.1.10',
  vswitchPublicKey: 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=',
  labels: { app: 'web' },
};

interface Stack {
  name: string;
  socket: string;
  close(): Promise<void>;
}

async function ours(socket: string): Promise<Stack> {
  const routes: Route[] = [
    { method: 'GET', path: '/v1/health', operationId: 'health', summary: 'health', handler: () => HEALTH },
    bodyRoute({
      method: 'POST',
      path: '/v1/workloads',
      operationId: 'register',
      summary: 'register',
      body: registerWorkloadSchema,
      handler: (_req, body) => answer(201, { workload: body.workload }),
    }),
  ];
  const s = await JsonApiServer.listen({ socketPath: socket, routes, log: logger('bench.http') });
  return { name: 'tenguard', socket, close: () => s.close() };
}

/** fastify, loaded on demand: a devDependency, present where the bench is run from a checkout. */
async function fastify(socket: string): Promise<Stack> {
  const [F, Z] = await Promise.all([import('fastify'), import('fastify-type-provider-zod')]).catch(
    (err: unknown) => {
      throw new TgError(
        'TG_ERR_NOT_FOUND',
        'fastify and fastify-type-provider-zod are not installed (npm install in a checkout)',
        { cause: err },
      );
    },
  );
  const app = F.fastify({ logger: false, bodyLimit: 64 * 1024 });
  app.setValidatorCompiler(Z.validatorCompiler);
  app.setSerializerCompiler(Z.serializerCompiler);
  const typed = app.withTypeProvider<import('fastify-type-provider-zod').ZodTypeProvider>();
  typed.get('/v1/health', async () => HEALTH);
  typed.post('/v1/workloads', { schema: { body: registerWorkloadSchema } }, async (req, reply) => {
    reply.code(201);
    return { workload: req.body.workload };
  });
  await app.listen({ path: socket });
  return { name: 'fastify', socket, close: () => app.close() };
}

async function sample(stack: Stack, route: 'health' | 'register', n: number, into: number[]): Promise<void> {
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const r =
      route === 'health'
        ? await apiRequest(stack.socket, 'GET', '/v1/health')
        : await apiRequest(stack.socket, 'POST', '/v1/workloads', BODY);
    into.push(performance.now() - t);
    if (r.status !== (route === 'health' ? 200 : 201))
      throw new TgError('TG_ERR_COMMAND_FAILED', `${stack.name} ${route}: HTTP ${r.status} ${r.raw}`);
  }
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const r3 = (x: number): number => Math.round(x * 1000) / 1000;

export async function run(args: string[]): Promise<number> {
  let values: { requests?: string; rounds?: string; json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        requests: { type: 'string' },
        rounds: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new TgError('TG_ERR_USAGE', `${(err as Error).message}\n\n${HELP}`, { cause: err });
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const int = (text: string | undefined, dflt: number, max: number, name: string): number => {
    const v = text === undefined ? dflt : Number(text);
    if (!Number.isInteger(v) || v < 1 || v > max)
      throw new TgError('TG_ERR_USAGE', `--${name} must be an integer in [1, ${max}]`);
    return v;
  };
  const requests = int(values.requests, 500, 100_000, 'requests');
  const rounds = int(values.rounds, 4, 100, 'rounds');
  const dir = mkdtempSync(join(tmpdir(), 'tg-bench-http-'));
  const stacks: Stack[] = [];
  try {
    stacks.push(await ours(join(dir, 'ours.sock')), await fastify(join(dir, 'fastify.sock')));
    const times = new Map<string, number[]>();
    for (const s of stacks) for (const route of ['health', 'register']) times.set(`${s.name}/${route}`, []);
    // Warm-up: JIT and the servers' first-request paths.
    for (const s of stacks) {
      await sample(s, 'health', 100, []);
      await sample(s, 'register', 100, []);
    }
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? stacks : [...stacks].reverse();
      for (const s of order)
        for (const route of ['health', 'register'] as const)
          await sample(s, route, requests, times.get(`${s.name}/${route}`)!);
    }
    const rows: Record<string, unknown>[] = [];
    for (const route of ['health', 'register']) {
      const fig = (stack: string) => {
        const t = [...times.get(`${stack}/${route}`)!].sort((a, b) => a - b);
        return { p50: pct(t, 50), p99: pct(t, 99) };
      };
      const a = fig('tenguard');
      const b = fig('fastify');
      rows.push({
        route,
        tenguard_p50_ms: r3(a.p50),
        tenguard_p99_ms: r3(a.p99),
        fastify_p50_ms: r3(b.p50),
        fastify_p99_ms: r3(b.p99),
        p50_ratio_fastify_to_tenguard: r3(b.p50 / a.p50),
        p99_ratio_fastify_to_tenguard: r3(b.p99 / a.p99),
      });
    }
    const result = { requests, rounds, samples_per_cell: requests * rounds, rows };
    if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else {
      process.stdout.write(
        `HTTP over a Unix socket, ${requests * rounds} requests per route and stack (shared machine: compare ratios)\n`,
      );
      process.stdout.write('route     tenguard p50/p99 ms   fastify p50/p99 ms   ratio p50/p99\n');
      for (const r of rows)
        process.stdout.write(
          `${String(r.route).padEnd(9)} ${`${r.tenguard_p50_ms} / ${r.tenguard_p99_ms}`.padEnd(21)} ${`${r.fastify_p50_ms} / ${r.fastify_p99_ms}`.padEnd(20)} ${r.p50_ratio_fastify_to_tenguard} / ${r.p99_ratio_fastify_to_tenguard}\n`,
        );
    }
    return 0;
  } finally {
    for (const s of stacks) await s.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}
