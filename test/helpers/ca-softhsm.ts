// Support for the CA integration tests: a temporary state directory with an embedded
// SoftHSM2 token per test file (removed afterwards), configurations, and OpenSSL helpers.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type CaConfig, parseCaConfig } from '../../src/ca/config.js';
import { runOk } from '../../src/util/exec.js';

export const TD = 'lab.test';

export interface CaTestEnv {
  readonly dir: string;
  readonly stateDir: string;
  readonly pinEnv: string;
  readonly pin: string;
  config(overrides?: Record<string, unknown>): CaConfig;
  file(name: string, content?: string): string;
  cleanup(): void;
}

/** A temporary directory (tgca-*) holding the CA state and scratch files; PIN in the environment. */
export function caTestEnv(): CaTestEnv {
  const dir = mkdtempSync(join(tmpdir(), 'tgca-it-'));
  const stateDir = join(dir, 'state');
  const pinEnv = `TG_CA_TEST_PIN_${process.pid}`;
  const pin = randomBytes(9).toString('base64url');
  process.env[pinEnv] = pin;
  return {
    dir,
    stateDir,
    pinEnv,
    pin,
    config: (overrides = {}) =>
      parseCaConfig({
        stateDir,
        trustDomain: TD,
        token: { label: 'tg-it', pin: { env: pinEnv } },
        ...overrides,
      }),
    file: (name, content) => {
      const p = join(dir, name);
      if (content !== undefined) writeFileSync(p, content);
      return p;
    },
    cleanup: () => {
      delete process.env[pinEnv];
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An OpenSSL-made key and PKCS#10 request (EC P-256 unless `rsa`), optionally with a URI SAN. */
export async function opensslCsr(env: CaTestEnv, name: string, uri?: string, rsa = false): Promise<string> {
  const key = env.file(`${name}.key`);
  const csr = env.file(`${name}.csr`);
  const args = ['req', '-new', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`];
  if (rsa) args.push('-newkey', 'rsa:2048');
  else args.push('-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256');
  if (uri !== undefined) args.push('-addext', `subjectAltName=URI:${uri}`);
  await runOk('openssl', args);
  return readFileSync(csr, 'utf8');
}

/** Every regular file under `dir`, recursively, except under `skip` directories. */
export function filesUnder(dir: string, skip: readonly string[] = []): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (skip.includes(p)) continue;
    const st = statSync(p);
    if (st.isDirectory()) out.push(...filesUnder(p, skip));
    else if (st.isFile()) out.push(p);
  }
  return out;
}

const BIN = join(import.meta.dirname, '..', '..', '..', 'bin', 'tenguard.js');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `tenguard ca ...` as a child process, logging at debug level; `input` goes to its stdin. */
export function caCli(
  args: string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'ca', ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, TENGUARD_LOG_LEVEL: 'debug', ...opts.env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input);
  });
}
