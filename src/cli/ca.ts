// `tenguard ca <command>`: the operator's side of the certificate authority whose signing
// key lives in a PKCS#11 token. Output (certificates, tables, JSON) goes to stdout; logs go
// to stderr. The token PIN comes from the environment variable or file the configuration
// names, never from the command line.
import { existsSync, lstatSync, readFileSync, unlinkSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { runCaBench } from '../bench/ca.js';
import { CertificateAuthority, type InitResult } from '../ca/authority.js';
import { CONFIG_ENV, loadCaConfig } from '../ca/config.js';
import { CsrService } from '../ca/csr-api.js';
import { csrAuthorize, csrRoutes, localAdminAuthenticator, MAX_BODY_BYTES } from '../ca/csr-http.js';
import { CsrServer } from '../ca/csr-server.js';
import { DEFAULT_PIN_ENV, defaultCaConfigPath, defaultCaStateDir, ensureDefaultCa } from '../ca/defaults.js';
import { orchestratorPlacement } from '../ca/placement.js';
import { verifyCsr } from '../ca/svid.js';
import { splitPemCertificates } from '../identity/certs.js';
import { CsrClient } from '../identity/csr-client.js';
import { parseSpiffeId } from '../identity/spiffe.js';
import { OrchestratorClient } from '../orchestrator/client.js';
import { TgError } from '../util/errors.js';
import { JsonApiServer } from '../util/http-json.js';
import { logger } from '../util/log.js';

const USAGE = `usage: tenguard ca [--config FILE] <command> [options]

The configuration (JSON, see src/ca/config.ts) is --config FILE, or $${CONFIG_ENV}, or else
the default CA: an embedded SoftHSM2 token in the default state directory ($TENGUARD_HOME/ca,
/var/lib/tenguard/ca for root, else ~/.local/state/tenguard/ca), which \`init\` creates with
its configuration (config.json there). Its PIN is $${DEFAULT_PIN_ENV} when set at init, else a
generated one kept in the pin file there (mode 0600).

commands:
  init [--intermediate] [--trust-domain TD]
                             create or find the signing key and the CA certificate in the
                             token; --intermediate prints a request (PEM) for an external root;
                             --trust-domain only for a new default CA (default tenguard.local)
  install --cert FILE --root FILE [--chain FILE]
                             activate the intermediate certificate the external root issued
  root                       print the trusted root certificates (PEM)
  sign --csr FILE|- --spiffe-id ID [--ttl S]
                             sign a PKCS#10 request; print the chain, leaf first (PEM)
  list [--all] [--json]      issued certificates (unexpired ones unless --all)
  revoke <serial> [--reason TEXT]
  status [--json]            CA generations (for rotation)
  rotate prepare [--intermediate] | rotate activate | rotate retire [--force]
                             CA rotation: the new root is trusted before it signs, the old one
                             until its certificates expire
  prune                      drop records of certificates that expired
  serve --socket PATH [--tls-socket PATH [--orchestrator-socket PATH]] [--ttl S]
                             the CSR API (Kubernetes CSR v1 shape) for the operator on the Unix
                             socket PATH, mode 0600; with --tls-socket also over TLS for NICs
                             and services, which enrol with a one-time join token and renew
                             with their certificate (the server's own identity,
                             spiffe://TD/service/ca, lives --ttl seconds, renewed at half life);
                             a NIC obtains a workload's identity only when the orchestrator
                             (--orchestrator-socket) has placed that workload on it
  join-token --socket PATH --spiffe-id ID [--ttl S]
                             ask a serving CA (its operator socket) for a one-time join token
                             bound to ID, valid S seconds (default 600); printed on stdout, to
                             be handed to the service in $TENGUARD_JOIN_TOKEN
  bench [--count N] [--seconds S] [--json]
                             signatures and certificates per second through a throwaway
                             embedded SoftHSM2 token
`;

function parse(args: string[]) {
  return parseArgs({
    args,
    options: {
      config: { type: 'string' },
      intermediate: { type: 'boolean' },
      cert: { type: 'string' },
      root: { type: 'string' },
      chain: { type: 'string' },
      csr: { type: 'string' },
      'spiffe-id': { type: 'string' },
      ttl: { type: 'string' },
      all: { type: 'boolean' },
      json: { type: 'boolean' },
      reason: { type: 'string' },
      force: { type: 'boolean' },
      socket: { type: 'string' },
      'tls-socket': { type: 'string' },
      'orchestrator-socket': { type: 'string' },
      'trust-domain': { type: 'string' },
      count: { type: 'string' },
      seconds: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: true,
  });
}

type Values = ReturnType<typeof parse>['values'];

function readInput(path: string, what: string): string {
  try {
    return readFileSync(path === '-' ? 0 : path, 'utf8');
  } catch (err) {
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `cannot read ${what} ${path}`, { cause: err });
  }
}

function positiveInt(text: string | undefined, name: string, dflt: number, max: number): number {
  if (text === undefined) return dflt;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > max)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `${name} must be an integer from 1 to ${max}`);
  return n;
}

/**
 * The CA of --config, $TENGUARD_CA_CONFIG, or the default one (created by `init` when
 * absent; any other command needs it to exist).
 */
function openCa(values: Values, command: string): CertificateAuthority {
  const path = values.config ?? process.env[CONFIG_ENV];
  if (path !== undefined) {
    if (values['trust-domain'] !== undefined)
      throw new TgError('TG_ERR_USAGE', `--trust-domain is for the default CA (no --config)\n${USAGE}`);
    return CertificateAuthority.open(loadCaConfig(path));
  }
  if (command === 'init') {
    const d = ensureDefaultCa({ trustDomain: values['trust-domain'] });
    if (d.created)
      process.stderr.write(
        `default CA in ${d.config.stateDir}: trust domain ${d.config.trustDomain}, embedded SoftHSM2 token, PIN from ${d.pinSource}\n`,
      );
    return CertificateAuthority.open(d.config);
  }
  if (values['trust-domain'] !== undefined)
    throw new TgError('TG_ERR_USAGE', `--trust-domain goes with init\n${USAGE}`);
  if (!existsSync(defaultCaConfigPath()))
    throw new TgError(
      'TG_ERR_USAGE',
      `no CA: run \`tenguard ca init\` (default CA in ${defaultCaStateDir()}), or give --config FILE or set ${CONFIG_ENV}`,
    );
  return CertificateAuthority.open(ensureDefaultCa().config);
}

function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

function describeInit(r: InitResult): string {
  const g = r.generation;
  const lines = [
    `generation ${g.id}: ${g.state} (${g.mode}), key '${g.keyLabel}' ${r.keyCreated ? 'created in' : 'found on'} the token`,
  ];
  if (g.subject) lines.push(`  subject ${g.subject}, valid until ${g.notAfter}`);
  if (g.fingerprint256) lines.push(`  SHA-256 ${g.fingerprint256}`);
  return lines.join('\n');
}

export async function run(args: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(args);
  } catch (err) {
    throw new TgError('TG_ERR_USAGE', `${(err as Error).message}\n${USAGE}`);
  }
  const { values, positionals } = parsed;
  const [command, ...rest] = positionals;
  if (values.help || command === undefined || command === 'help') {
    process.stdout.write(USAGE);
    return command === undefined && !values.help ? 2 : 0;
  }
  if (command === 'bench') return bench(values);
  if (command === 'join-token') return joinToken(values);
  const ca = openCa(values, command);
  try {
    switch (command) {
      case 'init': {
        const r = await ca.init({ intermediate: values.intermediate });
        process.stderr.write(`${describeInit(r)}\n`);
        if (r.request !== undefined) {
          process.stderr.write(
            'have this request signed by the external root, then run tenguard ca install\n',
          );
          out(r.request);
        }
        return 0;
      }
      case 'install': {
        if (values.cert === undefined || values.root === undefined)
          throw new TgError('TG_ERR_USAGE', `install needs --cert FILE and --root FILE\n${USAGE}`);
        const chain =
          values.chain === undefined ? [] : splitPemCertificates(readInput(values.chain, 'chain'));
        const g = await ca.installIntermediate(
          readInput(values.cert, 'certificate'),
          readInput(values.root, 'root'),
          chain,
        );
        process.stderr.write(`generation ${g.id}: ${g.state}, ${g.subject}\n`);
        return 0;
      }
      case 'root':
        out(ca.trustBundle().toPem());
        return 0;
      case 'sign': {
        if (values.csr === undefined || values['spiffe-id'] === undefined)
          throw new TgError('TG_ERR_USAGE', `sign needs --csr FILE and --spiffe-id ID\n${USAGE}`);
        const id = parseSpiffeId(values['spiffe-id']);
        const ttl = values.ttl === undefined ? undefined : positiveInt(values.ttl, '--ttl', 0, 90 * 86400);
        const csr = await verifyCsr(readInput(values.csr, 'request'));
        const svid = await ca.issue({ csr, spiffeId: id, ttlSeconds: ttl, requester: 'admin' });
        process.stderr.write(
          `issued serial ${svid.serial} for ${svid.spiffeId}, valid until ${svid.notAfter.toISOString()}\n`,
        );
        out([svid.certificatePem, ...svid.chainPem].join(''));
        return 0;
      }
      case 'list': {
        const rows = ca.list().filter((r) => values.all || !r.expired);
        if (values.json) {
          out(JSON.stringify(rows, null, 2));
          return 0;
        }
        const lines = [`${'SERIAL'.padEnd(33)} ${'NOT AFTER'.padEnd(24)} ${'STATE'.padEnd(8)} SPIFFE ID`];
        for (const r of rows) {
          const state = r.revoked ? 'revoked' : r.expired ? 'expired' : 'valid';
          lines.push(`${r.serial.padEnd(33)} ${r.notAfter.padEnd(24)} ${state.padEnd(8)} ${r.spiffeId}`);
        }
        out(lines.join('\n'));
        return 0;
      }
      case 'revoke': {
        if (rest.length !== 1) throw new TgError('TG_ERR_USAGE', `revoke needs exactly one serial\n${USAGE}`);
        const r = ca.revoke(rest[0], values.reason);
        out(`revoked ${r.serial} at ${r.revokedAt} (${r.reason})`);
        return 0;
      }
      case 'status': {
        const gens = ca.generations();
        if (values.json) out(JSON.stringify(gens, null, 2));
        else
          out(
            gens
              .map(
                (g) =>
                  `${g.id}\t${g.state}\t${g.mode}\t${g.keyLabel}\t${g.subject ?? '(awaiting certificate)'}\t${g.notAfter ?? ''}`,
              )
              .join('\n') || 'no CA generations: run tenguard ca init',
          );
        return 0;
      }
      case 'rotate': {
        const step = rest[0];
        if (step === 'prepare') {
          const r = await ca.rotatePrepare({ intermediate: values.intermediate });
          process.stderr.write(
            `${describeInit(r)}\ndistribute the new trust bundle (tenguard ca root), then rotate activate\n`,
          );
          if (r.request !== undefined) out(r.request);
          return 0;
        }
        if (step === 'activate') {
          const g = await ca.rotateActivate();
          out(`generation ${g.id} is active; the previous one stays trusted until retired`);
          return 0;
        }
        if (step === 'retire') {
          const g = ca.rotateRetire({ force: values.force });
          out(`generation ${g.id} retired; distribute the new trust bundle (tenguard ca root)`);
          return 0;
        }
        throw new TgError('TG_ERR_USAGE', `rotate needs prepare, activate or retire\n${USAGE}`);
      }
      case 'prune':
        out(`removed ${ca.prune()} expired records`);
        return 0;
      case 'serve':
        return await serve(ca, values);
      default:
        throw new TgError('TG_ERR_USAGE', `unknown ca command '${command}'\n${USAGE}`);
    }
  } finally {
    ca.close();
  }
}

export { JOIN_TOKENS_PATH } from '../identity/csr.js';

function replaceSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
    else throw new TgError('TG_ERR_CONFLICT', `${path} exists and is not a socket`);
  } catch (err) {
    if (err instanceof TgError) throw err;
  }
}

async function serve(ca: CertificateAuthority, values: Values): Promise<number> {
  const path = values.socket;
  if (path === undefined) throw new TgError('TG_ERR_USAGE', `serve needs --socket PATH\n${USAGE}`);
  const tlsPath = values['tls-socket'];
  if (tlsPath !== undefined && tlsPath === path)
    throw new TgError('TG_ERR_USAGE', '--socket and --tls-socket must be different paths');
  const ttl = values.ttl === undefined ? undefined : positiveInt(values.ttl, '--ttl', 0, 90 * 86400);
  replaceSocket(path);
  ca.trustBundle(); // fail now, not on the first request, if there is no CA yet
  // Over the local socket every requester is the operator; placement is never consulted.
  const service = new CsrService({ ca, isPlacedOn: () => false });
  // Over TLS a NIC obtains workload identities only for placements the orchestrator confirms;
  // with no orchestrator to ask, none is confirmed.
  const orch = values['orchestrator-socket'];
  if (orch !== undefined && tlsPath === undefined)
    throw new TgError('TG_ERR_USAGE', `--orchestrator-socket goes with --tls-socket\n${USAGE}`);
  const isPlacedOn =
    orch === undefined ? () => false : orchestratorPlacement(new OrchestratorClient(orch, 10_000));
  const tls =
    tlsPath === undefined
      ? undefined
      : await CsrServer.start({
          ca,
          socketPath: tlsPath,
          log: logger('ca.serve'),
          ttlSeconds: ttl,
          isPlacedOn,
        });
  const routes = csrRoutes({
    service,
    trustBundle: () => ca.trustBundle(),
    revocations: () => ca.revocations.list(),
    ...(tls === undefined ? {} : { joinTokens: { tokens: tls.joinTokens, trustDomain: tls.trustDomain } }),
  });
  let api: JsonApiServer;
  // The socket is created 0600 (umask), not made so after a window.
  const umask = process.umask(0o177);
  try {
    api = await JsonApiServer.listen({
      socketPath: path,
      authorize: csrAuthorize(localAdminAuthenticator),
      routes,
      log: logger('ca.serve'),
      maxBodyBytes: MAX_BODY_BYTES,
    });
  } catch (err) {
    await tls?.close();
    throw err;
  } finally {
    process.umask(umask);
  }
  process.stderr.write(
    `tenguard ca: CSR API on ${path}${tlsPath === undefined ? '' : `, over TLS on ${tlsPath}`}\n`,
  );
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      api.close().then(resolve, resolve);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await tls?.close();
  return 0;
}

async function joinToken(values: Values): Promise<number> {
  const socket = values.socket;
  const id = values['spiffe-id'];
  if (socket === undefined || id === undefined)
    throw new TgError('TG_ERR_USAGE', `join-token needs --socket PATH and --spiffe-id ID\n${USAGE}`);
  parseSpiffeId(id);
  const ttl = positiveInt(values.ttl, '--ttl', 600, 86_400);
  const r = await new CsrClient(socket).joinToken(id, ttl).catch((err: unknown) => {
    throw new TgError('TG_ERR_COMMAND_FAILED', `join token refused: ${(err as Error).message}`, {
      cause: err,
    });
  });
  out(r.token);
  return 0;
}

async function bench(values: Values): Promise<number> {
  const count = positiveInt(values.count, '--count', 2000, 1_000_000);
  const seconds = positiveInt(values.seconds, '--seconds', 10, 600);
  const r = await runCaBench({ count, seconds });
  if (values.json) {
    out(JSON.stringify(r, null, 2));
    return 0;
  }
  const f = (x: number): string => x.toFixed(0).padStart(8);
  out(
    [
      `token: embedded SoftHSM2 (${r.module}), ECDSA P-256`,
      `${f(r.signaturesPerSecondAsync)} signatures/s  C_Sign, queued and asynchronous (as the CA signs)`,
      `${f(r.signaturesPerSecondSync)} signatures/s  C_Sign, synchronous (blocks the event loop)`,
      `${f(r.certificatesPerSecond)} certificates/s build + token signature + record`,
      `${f(r.verifyAndIssuePerSecond)} certificates/s with the request's own signature checked too`,
      `${f(r.enrolmentsPerSecondOverTls)} enrolments/s through the CSR API over TLS (handshake, join token, chain)`,
      `(${r.counts.signatures} signatures, ${r.counts.certificates} certificates, ${r.counts.enrolments} enrolments)`,
    ].join('\n'),
  );
  return 0;
}
