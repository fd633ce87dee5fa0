// Token access through pkcs11js: load a PKCS#11 module, find a token by label, open a
// logged-in session. Every Cryptoki failure becomes a TG_ERR_TOKEN naming the call.
//
// A PKCS#11 module is process-global state (one C_Initialize per process per library), so
// modules are shared through a reference-counted registry keyed by path. SoftHSM2 reads its
// configuration file (SOFTHSM2_CONF) once, at C_Initialize: opening the same module with a
// different configuration while it is open is refused.
import pkcs11js from 'pkcs11js';
import { TgError } from '../util/errors.js';

export type Handle = Buffer;
export const P = pkcs11js;

/** The 32-byte, blank-padded label field of CK_TOKEN_INFO. */
export const TOKEN_LABEL_BYTES = 32;

export function isPkcs11Error(err: unknown, code?: number): boolean {
  return err instanceof pkcs11js.Pkcs11Error && (code === undefined || err.code === code);
}

/** Wraps a Cryptoki failure into the catalogue, keeping the CKR_ name and the call. */
export function tokenError(what: string, err: unknown): TgError {
  if (err instanceof TgError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new TgError('TG_ERR_TOKEN', `${what}: ${detail}`, { cause: err });
}

function call<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw tokenError(what, err);
  }
}

/** Trims the blank (and, from some modules, NUL) padding of a fixed-width PKCS#11 string. */
export function unpad(s: string): string {
  return s.replace(/[\s\0]+$/, '');
}

export function padLabel(label: string): string {
  const n = Buffer.byteLength(label);
  if (n === 0 || n > TOKEN_LABEL_BYTES)
    throw new TgError('TG_ERR_CONFIG', `token label must be 1 to 32 bytes`);
  return label + ' '.repeat(TOKEN_LABEL_BYTES - n);
}

export interface TokenSlot {
  readonly slot: Handle;
  readonly label: string;
  readonly initialized: boolean;
  readonly userPinInitialized: boolean;
}

interface Loaded {
  lib: pkcs11js.PKCS11;
  refs: number;
  context: string;
}

const loaded = new Map<string, Loaded>();

export class Pkcs11Module {
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly entry: Loaded,
  ) {}

  /**
   * Loads and initialises a module, or shares the instance this process already has.
   * `context` names the configuration the module was initialised with (the SoftHSM2 conf
   * path for the embedded token, '' otherwise); a mismatch is TG_ERR_CONFLICT.
   */
  static open(path: string, context = ''): Pkcs11Module {
    const have = loaded.get(path);
    if (have !== undefined) {
      if (have.context !== context) {
        throw new TgError(
          'TG_ERR_CONFLICT',
          `PKCS#11 module ${path} is already initialised in this process with another configuration`,
        );
      }
      have.refs++;
      return new Pkcs11Module(path, have);
    }
    const lib = new pkcs11js.PKCS11();
    call(`loading PKCS#11 module ${path}`, () => lib.load(path));
    try {
      call('C_Initialize', () => lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK }));
    } catch (err) {
      lib.close();
      throw err;
    }
    const entry: Loaded = { lib, refs: 1, context };
    loaded.set(path, entry);
    return new Pkcs11Module(path, entry);
  }

  get lib(): pkcs11js.PKCS11 {
    if (this.closed) throw new TgError('TG_ERR_INTERNAL', 'PKCS#11 module used after close');
    return this.entry.lib;
  }

  slots(): TokenSlot[] {
    const lib = this.lib;
    return call('C_GetSlotList', () => lib.C_GetSlotList(true)).map((slot) => {
      const info = call('C_GetTokenInfo', () => lib.C_GetTokenInfo(slot));
      return {
        slot,
        label: unpad(info.label),
        initialized: (info.flags & pkcs11js.CKF_TOKEN_INITIALIZED) !== 0,
        userPinInitialized: (info.flags & pkcs11js.CKF_USER_PIN_INITIALIZED) !== 0,
      };
    });
  }

  /** The initialised token with this label; two tokens with one label is an error. */
  findToken(label: string): TokenSlot | undefined {
    const found = this.slots().filter((s) => s.initialized && s.label === label);
    if (found.length > 1)
      throw new TgError('TG_ERR_TOKEN', `${found.length} tokens carry the label '${label}'`);
    return found[0];
  }

  /**
   * Opens a read-write session and logs the normal user in. The PIN is not kept. PKCS#11
   * login state belongs to the application, not the session: while this process is logged
   * in to the token, a further login answers CKR_USER_ALREADY_LOGGED_IN without checking
   * the PIN, and is accepted as such.
   */
  openUserSession(token: TokenSlot, pin: string): Pkcs11Session {
    const lib = this.lib;
    const session = call('C_OpenSession', () =>
      lib.C_OpenSession(token.slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION),
    );
    try {
      lib.C_Login(session, pkcs11js.CKU_USER, pin);
    } catch (err) {
      if (!isPkcs11Error(err, pkcs11js.CKR_USER_ALREADY_LOGGED_IN)) {
        lib.C_CloseSession(session);
        if (isPkcs11Error(err, pkcs11js.CKR_PIN_INCORRECT) || isPkcs11Error(err, pkcs11js.CKR_PIN_LEN_RANGE))
          throw new TgError('TG_ERR_TOKEN', `the PIN for token '${token.label}' is incorrect`, {
            cause: err,
          });
        throw tokenError(`C_Login to token '${token.label}'`, err);
      }
    }
    return new Pkcs11Session(this, session);
  }

  /** Drops this reference; the last one finalises and unloads the module. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (--this.entry.refs > 0) return;
    loaded.delete(this.path);
    try {
      this.entry.lib.C_Finalize();
    } finally {
      this.entry.lib.close();
    }
  }
}

/** One PKCS#11 session. Cryptoki allows one active operation per session: callers serialise. */
export class Pkcs11Session {
  private open = true;

  constructor(
    readonly module: Pkcs11Module,
    readonly handle: Handle,
  ) {}

  get lib(): pkcs11js.PKCS11 {
    if (!this.open) throw new TgError('TG_ERR_INTERNAL', 'PKCS#11 session used after close');
    return this.module.lib;
  }

  find(template: pkcs11js.Template, max = 16): Handle[] {
    const lib = this.lib;
    call('C_FindObjectsInit', () => lib.C_FindObjectsInit(this.handle, template));
    try {
      return call('C_FindObjects', () => lib.C_FindObjects(this.handle, max));
    } finally {
      lib.C_FindObjectsFinal(this.handle);
    }
  }

  getAttributes(object: Handle, types: number[]): Map<number, Buffer> {
    const lib = this.lib;
    const result = call('C_GetAttributeValue', () =>
      lib.C_GetAttributeValue(
        this.handle,
        object,
        types.map((type) => ({ type })),
      ),
    );
    return new Map(result.map((a) => [a.type, a.value]));
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    try {
      this.module.lib.C_CloseSession(this.handle);
    } catch {
      // The session may already be gone with its token; nothing is left to release.
    }
  }
}
