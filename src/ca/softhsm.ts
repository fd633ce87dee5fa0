// The embedded default token: SoftHSM2 with its object store in <stateDir>/softhsm, set up
// through a configuration file of our own (SOFTHSM2_CONF), never the system-wide default
// store under /etc and /var/lib/softhsm.
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TgError } from '../util/errors.js';
import {
  isPkcs11Error,
  P,
  type Pkcs11Module,
  padLabel,
  type TokenSlot,
  tokenError,
} from './pkcs11-module.js';

export const SOFTHSM2_CONF_ENV = 'SOFTHSM2_CONF';

export interface SoftHsmPaths {
  readonly dir: string;
  readonly conf: string;
  readonly tokenDir: string;
}

export function softHsmPaths(stateDir: string): SoftHsmPaths {
  const dir = join(stateDir, 'softhsm');
  return { dir, conf: join(dir, 'softhsm2.conf'), tokenDir: join(dir, 'tokens') };
}

/**
 * Writes the configuration and points SOFTHSM2_CONF at it. Must run before the module is
 * initialised (SoftHSM2 reads the variable in C_Initialize). The token directory is 0700:
 * its private objects are encrypted under the user PIN, but nobody else needs to see them.
 */
export function prepareSoftHsm(stateDir: string): SoftHsmPaths {
  const paths = softHsmPaths(stateDir);
  mkdirSync(paths.tokenDir, { recursive: true, mode: 0o700 });
  chmodSync(paths.dir, 0o700);
  chmodSync(paths.tokenDir, 0o700);
  writeFileSync(
    paths.conf,
    [
      '# tenguard CA: embedded SoftHSM2 token store (written by tenguard ca)',
      `directories.tokendir = ${paths.tokenDir}`,
      'objectstore.backend = file',
      'log.level = ERROR',
      'slots.removable = false',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  process.env[SOFTHSM2_CONF_ENV] = paths.conf;
  return paths;
}

/**
 * Initialises a token with this label in SoftHSM2's free slot and sets its user PIN.
 * `soPin` undefined means a random SO PIN that is wiped and forgotten.
 */
export function initSoftHsmToken(
  mod: Pkcs11Module,
  label: string,
  userPin: string,
  soPin?: string,
): TokenSlot {
  const free = mod.slots().find((s) => !s.initialized);
  if (free === undefined)
    throw new TgError('TG_ERR_TOKEN', 'SoftHSM2 offers no free slot to initialise a token');
  const randomSo = soPin === undefined ? randomBytes(24) : undefined;
  const so = soPin ?? randomSo!.toString('base64url');
  randomSo?.fill(0);
  const lib = mod.lib;
  try {
    lib.C_InitToken(free.slot, so, padLabel(label));
  } catch (err) {
    throw tokenError(`C_InitToken '${label}'`, err);
  }
  // SoftHSM2 renumbers its slots after an initialisation: find the token again by label.
  const token = mod.findToken(label);
  if (token === undefined) throw new TgError('TG_ERR_TOKEN', `token '${label}' not found after C_InitToken`);
  const session = lib.C_OpenSession(token.slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
  try {
    lib.C_Login(session, P.CKU_SO, so);
    lib.C_InitPIN(session, userPin);
    lib.C_Logout(session);
  } catch (err) {
    if (isPkcs11Error(err, P.CKR_PIN_LEN_RANGE))
      throw new TgError('TG_ERR_TOKEN', 'SoftHSM2 accepts PINs of 4 to 255 bytes', { cause: err });
    throw tokenError(`setting the user PIN of token '${label}'`, err);
  } finally {
    lib.C_CloseSession(session);
  }
  const ready = mod.findToken(label);
  if (ready === undefined || !ready.userPinInitialized)
    throw new TgError('TG_ERR_TOKEN', `token '${label}' has no user PIN after initialisation`);
  return ready;
}
