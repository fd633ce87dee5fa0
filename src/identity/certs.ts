// Certificate text as every holder and relying party reads it: concatenated PEM
// certificates split one by one, serial numbers in one canonical form, the SAN extension's OID.
import { TgError } from '../util/errors.js';

/** subjectAltName */
export const OID_SAN = '2.5.29.17';

function bad(message: string): TgError {
  return new TgError('TG_ERR_INVALID_ARGUMENT', message);
}

/** Canonical serial text: lowercase hex, no separators, no leading zeros. */
export function normalizeSerial(serial: string): string {
  const s = serial
    .trim()
    .replace(/^0x/i, '')
    .replace(/:/g, '')
    .toLowerCase()
    .replace(/^0+(?=.)/, '');
  if (!/^[0-9a-f]{1,40}$/.test(s))
    throw bad(`'${serial.slice(0, 60)}' is not a certificate serial number (hex)`);
  return s;
}

/** Splits concatenated PEM certificates; anything else in the text is an error. */
export function splitPemCertificates(text: string): string[] {
  const re = /-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----\r?\n?/g;
  const out: string[] = [];
  let rest = text;
  for (const m of text.matchAll(re)) {
    out.push(m[0].replace(/\r\n/g, '\n').replace(/\n?$/, '\n'));
    rest = rest.replace(m[0], '');
  }
  if (rest.trim().length > 0) throw bad('unexpected text around the PEM certificates');
  return out;
}
