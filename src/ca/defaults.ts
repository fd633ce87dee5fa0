// The CA a first run gets without any configuration: an embedded SoftHSM2 token under a
// default state directory, its configuration written there by `tenguard ca init` so that
// later commands find it.
//
// Where (the first that applies):
//   $TENGUARD_HOME/ca             when TENGUARD_HOME is set
//   /var/lib/tenguard/ca          for root
//   $XDG_STATE_HOME/tenguard/ca   else, with XDG_STATE_HOME defaulting to ~/.local/state
// The token's user PIN is $TENGUARD_CA_PIN when that is set at init (the configuration then
// names the variable, and every later command needs it too); otherwise a random PIN is
// generated once and kept in <stateDir>/pin, mode 0600 in a 0700 directory, like an ssh key.
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { TgError } from '../util/errors.js';
import { type CaConfig, loadCaConfig, parseCaConfig } from './config.js';

export const DEFAULT_PIN_ENV = 'TENGUARD_CA_PIN';
export const DEFAULT_TRUST_DOMAIN = 'tenguard.local';
export const DEFAULT_TOKEN_LABEL = 'tenguard-ca';
export const DEFAULT_CONFIG_NAME = 'config.json';
const PIN_FILE = 'pin';

export function defaultCaStateDir(env: NodeJS.ProcessEnv = process.env): string {
  const home = env.TENGUARD_HOME;
  if (home !== undefined && home !== '') return join(home, 'ca');
  if (process.getuid?.() === 0) return '/var/lib/tenguard/ca';
  const state = env.XDG_STATE_HOME;
  const base = state?.startsWith('/') ? state : join(homedir(), '.local', 'state');
  return join(base, 'tenguard', 'ca');
}

/** The default configuration file, whether or not it exists yet. */
export function defaultCaConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(defaultCaStateDir(env), DEFAULT_CONFIG_NAME);
}

export interface DefaultCa {
  readonly config: CaConfig;
  readonly configPath: string;
  /** What was made now: nothing when the default CA existed. */
  readonly created: boolean;
  /** Where the PIN comes from, for the operator (never the PIN itself). */
  readonly pinSource: string;
}

/**
 * The default CA's configuration, written (with a new PIN file unless $TENGUARD_CA_PIN is
 * set) when absent. `trustDomain` applies only when it is created; a different one for an
 * existing CA is a conflict.
 */
export function ensureDefaultCa(opts: { trustDomain?: string; env?: NodeJS.ProcessEnv } = {}): DefaultCa {
  const env = opts.env ?? process.env;
  const stateDir = defaultCaStateDir(env);
  const configPath = join(stateDir, DEFAULT_CONFIG_NAME);
  if (existsSync(configPath)) {
    const config = loadCaConfig(configPath);
    if (opts.trustDomain !== undefined && opts.trustDomain !== config.trustDomain)
      throw new TgError(
        'TG_ERR_CONFLICT',
        `the CA in ${stateDir} is for trust domain '${config.trustDomain}', not '${opts.trustDomain}'`,
      );
    return { config, configPath, created: false, pinSource: describe(config) };
  }
  const fromEnv = env[DEFAULT_PIN_ENV] !== undefined && env[DEFAULT_PIN_ENV] !== '';
  const pinFile = join(stateDir, PIN_FILE);
  const json = {
    stateDir,
    trustDomain: opts.trustDomain ?? DEFAULT_TRUST_DOMAIN,
    token: {
      label: DEFAULT_TOKEN_LABEL,
      pin: fromEnv ? { env: DEFAULT_PIN_ENV } : { file: pinFile },
      embedded: true,
    },
  };
  // Checked before anything is written: a bad trust domain leaves no state behind.
  const config = parseCaConfig(json);
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  chmodSync(stateDir, 0o700);
  if (!fromEnv && !existsSync(pinFile)) {
    const raw = randomBytes(24);
    // 'wx': never over a file someone placed there; the mode is set at creation.
    writeFileSync(pinFile, `${raw.toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
    raw.fill(0);
  }
  writeFileSync(configPath, `${JSON.stringify(json, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  return { config, configPath, created: true, pinSource: describe(config) };
}

function describe(c: CaConfig): string {
  const p = c.token.pin;
  return 'env' in p ? `environment variable ${p.env}` : `file ${p.file} (owner only)`;
}
