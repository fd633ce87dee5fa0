// Where a token PIN comes from: an environment variable or a file, never the command line
// (argv is readable by every user through /proc/<pid>/cmdline).
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { TgError } from '../util/errors.js';

export type PinSource = { readonly env: string } | { readonly file: string };

/** PKCS#11 leaves the PIN length to the token; this bounds what we read. */
export const PIN_MAX_BYTES = 256;

/**
 * Reads a PIN. A file must be a regular file that only its owner can read or write
 * (like an ssh private key); one trailing newline is dropped. The bytes read are wiped;
 * the returned string cannot be (pkcs11js takes PINs as strings), so callers drop it as
 * soon as C_Login has returned.
 */
export function readPin(source: PinSource): string {
  if ('env' in source) {
    const value = process.env[source.env];
    if (value === undefined || value.length === 0)
      throw new TgError('TG_ERR_CONFIG', `the PIN variable ${source.env} is not set or empty`);
    if (Buffer.byteLength(value) > PIN_MAX_BYTES)
      throw new TgError('TG_ERR_CONFIG', `the PIN in ${source.env} is longer than ${PIN_MAX_BYTES} bytes`);
    return value;
  }
  let fd: number;
  try {
    fd = openSync(source.file, 'r');
  } catch (err) {
    throw new TgError('TG_ERR_CONFIG', `cannot open the PIN file ${source.file}`, { cause: err });
  }
  const buf = Buffer.alloc(PIN_MAX_BYTES + 2);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new TgError('TG_ERR_CONFIG', `the PIN file ${source.file} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      throw new TgError(
        'TG_ERR_CONFIG',
        `the PIN file ${source.file} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`,
      );
    }
    let n = 0;
    for (;;) {
      const r = readSync(fd, buf, n, buf.length - n, null);
      if (r === 0) break;
      n += r;
      if (n === buf.length) break;
    }
    let end = n;
    if (end > 0 && buf[end - 1] === 0x0a) end--;
    if (end > 0 && buf[end - 1] === 0x0d) end--;
    if (end === 0) throw new TgError('TG_ERR_CONFIG', `the PIN file ${source.file} is empty`);
    if (end > PIN_MAX_BYTES)
      throw new TgError('TG_ERR_CONFIG', `the PIN file ${source.file} is longer than ${PIN_MAX_BYTES} bytes`);
    return buf.toString('utf8', 0, end);
  } finally {
    buf.fill(0);
    closeSync(fd);
  }
}

/** Describes a PIN source for logs and messages without revealing the PIN. */
export function describePinSource(source: PinSource): string {
  return 'env' in source ? `environment variable ${source.env}` : `file ${source.file}`;
}
