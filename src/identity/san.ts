// The URI names of a certificate's subjectAltName (RFC 5280 4.2.1.6), read from its DER by a
// small strict reader of the few structures on the way (Certificate, TBSCertificate,
// Extensions, Extension, GeneralNames). Every service authorises its peers by this, so it is
// on the path of every mTLS connection; a general ASN.1 library costs a process about 400 ms
// of start-up (the CNI plugin and the CLI are a process per call), so it is loaded only where
// certificates are made (CSRs, the CA).
//
// Strict DER: definite lengths in the shortest form, every element inside its parent, the
// certificate exactly the input. Anything else throws. Like the library it replaces here, it
// collects the URIs of every subjectAltName extension (RFC 5280 allows one; OpenSSL refuses a
// certificate with two before any of this runs).

/** One element: its tag and where its contents start and end. */
interface Tlv {
  tag: number;
  start: number;
  end: number;
}

const TAG_BOOLEAN = 0x01;
const TAG_OCTET_STRING = 0x04;
const TAG_OID = 0x06;
const TAG_SEQUENCE = 0x30;
/** TBSCertificate's `extensions [3] EXPLICIT`. */
const TAG_EXTENSIONS = 0xa3;
/** GeneralName's `uniformResourceIdentifier [6] IMPLICIT IA5String`. */
const TAG_URI = 0x86;
/** The DER of the OID 2.5.29.17 (id-ce-subjectAltName). */
const OID_SAN_DER = [0x55, 0x1d, 0x11];

export class DerError extends Error {
  constructor(message: string) {
    super(`not a DER certificate: ${message}`);
    this.name = 'DerError';
  }
}

function read(b: Uint8Array, at: number, limit: number): Tlv {
  if (at + 2 > limit) throw new DerError(`element at ${at} runs past its parent`);
  const tag = b[at];
  if ((tag & 0x1f) === 0x1f) throw new DerError(`high tag number at ${at}`);
  let len = b[at + 1];
  let p = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw new DerError(`indefinite length at ${at}`);
    if (n > 3) throw new DerError(`length of ${n} bytes at ${at}`);
    if (p + n > limit) throw new DerError(`length at ${at} runs past its parent`);
    if (b[p] === 0) throw new DerError(`length not in its shortest form at ${at}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + b[p++];
    if (len < 0x80) throw new DerError(`length not in its shortest form at ${at}`);
  }
  if (p + len > limit) throw new DerError(`element at ${at} runs past its parent`);
  return { tag, start: p, end: p + len };
}

function expect(t: Tlv, tag: number, what: string): Tlv {
  if (t.tag !== tag) throw new DerError(`${what} has tag 0x${t.tag.toString(16)}`);
  return t;
}

/** The elements inside a constructed element, in order. */
function children(b: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let at = parent.start; at < parent.end; ) {
    const t = read(b, at, parent.end);
    out.push(t);
    at = t.end;
  }
  return out;
}

function isSanOid(b: Uint8Array, t: Tlv): boolean {
  return t.end - t.start === OID_SAN_DER.length && OID_SAN_DER.every((x, i) => b[t.start + i] === x);
}

/** The URIs of a GeneralNames value; other kinds of name are skipped. */
function generalNameUris(b: Uint8Array, value: Tlv): string[] {
  const names = expect(read(b, value.start, value.end), TAG_SEQUENCE, 'GeneralNames');
  if (names.end !== value.end) throw new DerError('bytes after GeneralNames');
  const out: string[] = [];
  for (const n of children(b, names)) {
    if (n.tag !== TAG_URI) continue;
    let s = '';
    for (let i = n.start; i < n.end; i++) {
      if (b[i] > 0x7f) throw new DerError('a URI that is not an IA5String');
      s += String.fromCharCode(b[i]);
    }
    out.push(s);
  }
  return out;
}

/** The URI SANs of a certificate (DER), in order. Throws DerError on anything malformed. */
/**
 * TBSCertificate's fields in RFC 5280's order: [0] version (optional), serialNumber, signature, issuer,
 * validity, subject, subjectPublicKeyInfo, then [1], [2], [3] each at most once, in order. A
 * changed length that still parses as some TLV sequence fails here instead of hiding the
 * extensions.
 */
function checkTbsShape(fields: readonly Tlv[]): void {
  // The version is absent in a version 1 certificate (which has no extensions either).
  const required = [0x02, TAG_SEQUENCE, TAG_SEQUENCE, TAG_SEQUENCE, TAG_SEQUENCE, TAG_SEQUENCE];
  const first = fields.length > 0 && fields[0].tag === 0xa0 ? 1 : 0;
  if (fields.length < first + required.length) throw new DerError('a TBSCertificate with missing fields');
  for (let i = 0; i < required.length; i++)
    if (fields[first + i].tag !== required[i])
      throw new DerError(`TBSCertificate field ${first + i} of the wrong type`);
  let last = 0;
  for (const f of fields.slice(first + required.length)) {
    if (f.tag !== 0xa1 && f.tag !== 0xa2 && f.tag !== TAG_EXTENSIONS)
      throw new DerError('an unknown TBSCertificate field');
    if (f.tag <= last) throw new DerError('TBSCertificate fields out of order');
    last = f.tag;
  }
}

export function certificateUriSans(der: Uint8Array): string[] {
  const cert = expect(read(der, 0, der.length), TAG_SEQUENCE, 'Certificate');
  if (cert.end !== der.length) throw new DerError('bytes after the certificate');
  const tbs = expect(read(der, cert.start, cert.end), TAG_SEQUENCE, 'TBSCertificate');
  const out: string[] = [];
  const fields = children(der, tbs);
  checkTbsShape(fields);
  for (const field of fields) {
    if (field.tag !== TAG_EXTENSIONS) continue;
    const list = expect(read(der, field.start, field.end), TAG_SEQUENCE, 'Extensions');
    if (list.end !== field.end) throw new DerError('bytes after Extensions');
    for (const ext of children(der, list)) {
      const parts = children(der, expect(ext, TAG_SEQUENCE, 'Extension'));
      const oid = expect(parts[0] ?? ext, TAG_OID, 'extnID');
      const hasCritical = parts.length === 3;
      if (parts.length !== 2 && !hasCritical) throw new DerError('an Extension of the wrong shape');
      if (hasCritical) expect(parts[1], TAG_BOOLEAN, 'critical');
      const value = expect(parts[parts.length - 1], TAG_OCTET_STRING, 'extnValue');
      if (isSanOid(der, oid)) out.push(...generalNameUris(der, value));
    }
  }
  return out;
}
