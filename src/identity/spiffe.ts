// SPIFFE IDs (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md) as tenguard
// uses them. Three shapes are issued:
//   spiffe://<trust-domain>/nic/<host>                          a NIC agent
//   spiffe://<trust-domain>/tenant/<tenant>/workload/<workload> a workload
//   spiffe://<trust-domain>/service/<name>                      a control-plane service
//                                                               (orchestrator, CA, operator CLI)
// Any other path is a valid SPIFFE ID but not one tenguard issues or accepts.
import { TgError } from '../util/errors.js';

export const SPIFFE_SCHEME = 'spiffe://';
/** SPIFFE-ID.md §2.3: URIs are limited to 2048 bytes. */
export const SPIFFE_ID_MAX_BYTES = 2048;
/** SPIFFE-ID.md §2.1: trust domain names are limited to 255 characters. */
export const TRUST_DOMAIN_MAX_CHARS = 255;
/** tenguard limit on one name (host, tenant, workload, service): a DNS label's length. */
export const NAME_MAX_CHARS = 63;

// SPIFFE-ID.md §2.1 and §2.2: the allowed characters of a trust domain and of a path segment.
const TRUST_DOMAIN_RE = /^[a-z0-9._-]+$/;
const SEGMENT_RE = /^[A-Za-z0-9._-]+$/;

export type SpiffeId =
  | { readonly kind: 'nic'; readonly uri: string; readonly trustDomain: string; readonly host: string }
  | {
      readonly kind: 'workload';
      readonly uri: string;
      readonly trustDomain: string;
      readonly tenant: string;
      readonly workload: string;
    }
  | { readonly kind: 'service'; readonly uri: string; readonly trustDomain: string; readonly name: string };

function invalid(what: string, value: string, why: string): TgError {
  return new TgError('TG_ERR_INVALID_ARGUMENT', `invalid ${what} '${printable(value)}': ${why}`);
}

/** Shows at most 120 characters of untrusted input, with control characters escaped. */
function printable(value: string): string {
  const s = value.length > 120 ? `${value.slice(0, 120)}...` : value;
  return JSON.stringify(s).slice(1, -1);
}

/** Returns the trust domain name when it is valid, else throws TG_ERR_INVALID_ARGUMENT. */
export function validateTrustDomain(td: string): string {
  if (td.length === 0 || td.length > TRUST_DOMAIN_MAX_CHARS)
    throw invalid('trust domain', td, `must be 1 to ${TRUST_DOMAIN_MAX_CHARS} characters`);
  if (!TRUST_DOMAIN_RE.test(td))
    throw invalid('trust domain', td, 'only lowercase letters, digits, ".", "-" and "_" are allowed');
  return td;
}

/** Checks one host, tenant, workload or service name. */
export function validateName(what: string, name: string): string {
  if (name.length === 0 || name.length > NAME_MAX_CHARS)
    throw invalid(what, name, `must be 1 to ${NAME_MAX_CHARS} characters`);
  if (!SEGMENT_RE.test(name)) throw invalid(what, name, 'only letters, digits, ".", "-" and "_" are allowed');
  if (name === '.' || name === '..') throw invalid(what, name, '"." and ".." are not names');
  return name;
}

/** Splits a SPIFFE ID into trust domain and path segments, checking the generic SPIFFE rules. */
function splitSpiffeUri(uri: string): { trustDomain: string; segments: string[] } {
  if (Buffer.byteLength(uri) > SPIFFE_ID_MAX_BYTES)
    throw invalid('SPIFFE ID', uri, `longer than ${SPIFFE_ID_MAX_BYTES} bytes`);
  if (!uri.startsWith(SPIFFE_SCHEME)) throw invalid('SPIFFE ID', uri, 'must start with spiffe://');
  const rest = uri.slice(SPIFFE_SCHEME.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  if (!TRUST_DOMAIN_RE.test(trustDomain) || trustDomain.length > TRUST_DOMAIN_MAX_CHARS)
    throw invalid('SPIFFE ID', uri, 'the trust domain is empty or has characters outside [a-z0-9._-]');
  if (slash < 0) return { trustDomain, segments: [] };
  const segments = rest.slice(slash + 1).split('/');
  for (const seg of segments) {
    if (seg.length === 0) throw invalid('SPIFFE ID', uri, 'empty path segment or trailing "/"');
    if (seg === '.' || seg === '..') throw invalid('SPIFFE ID', uri, '"." and ".." segments are not allowed');
    if (!SEGMENT_RE.test(seg))
      throw invalid('SPIFFE ID', uri, 'path segments may hold only letters, digits, ".", "-" and "_"');
  }
  return { trustDomain, segments };
}

/** Parses one of the three tenguard identity shapes; anything else throws TG_ERR_INVALID_ARGUMENT. */
export function parseSpiffeId(uri: string): SpiffeId {
  const { trustDomain, segments } = splitSpiffeUri(uri);
  const [a, b, c, d] = segments;
  if (segments.length === 2 && a === 'nic')
    return Object.freeze({ kind: 'nic', uri, trustDomain, host: validateName('host', b) });
  if (segments.length === 4 && a === 'tenant' && c === 'workload') {
    return Object.freeze({
      kind: 'workload',
      uri,
      trustDomain,
      tenant: validateName('tenant', b),
      workload: validateName('workload', d),
    });
  }
  if (segments.length === 2 && a === 'service')
    return Object.freeze({ kind: 'service', uri, trustDomain, name: validateName('service name', b) });
  throw invalid(
    'SPIFFE ID',
    uri,
    'expected spiffe://<td>/nic/<host>, spiffe://<td>/tenant/<t>/workload/<w> or spiffe://<td>/service/<name>',
  );
}

export function nicId(trustDomain: string, host: string): SpiffeId {
  return parseSpiffeId(
    `${SPIFFE_SCHEME}${validateTrustDomain(trustDomain)}/nic/${validateName('host', host)}`,
  );
}

export function workloadId(trustDomain: string, tenant: string, workload: string): SpiffeId {
  validateTrustDomain(trustDomain);
  validateName('tenant', tenant);
  validateName('workload', workload);
  return parseSpiffeId(`${SPIFFE_SCHEME}${trustDomain}/tenant/${tenant}/workload/${workload}`);
}

export function serviceId(trustDomain: string, name: string): SpiffeId {
  return parseSpiffeId(
    `${SPIFFE_SCHEME}${validateTrustDomain(trustDomain)}/service/${validateName('service name', name)}`,
  );
}

/**
 * A pattern over SPIFFE IDs: a SPIFFE ID in which any whole path segment may be '*', which
 * matches exactly one segment. The trust domain is always literal, so a pattern never admits
 * a peer from another trust domain. Examples: spiffe://td/nic/*,
 * spiffe://td/tenant/acme/workload/*, spiffe://td/service/orchestrator.
 */
export class SpiffeIdPattern {
  readonly trustDomain: string;
  private readonly segments: readonly string[];

  private constructor(
    readonly source: string,
    trustDomain: string,
    segments: string[],
  ) {
    this.trustDomain = trustDomain;
    this.segments = segments;
  }

  static parse(pattern: string): SpiffeIdPattern {
    if (!pattern.startsWith(SPIFFE_SCHEME))
      throw invalid('SPIFFE ID pattern', pattern, 'must start with spiffe://');
    const [trustDomain, ...segments] = pattern.slice(SPIFFE_SCHEME.length).split('/');
    if (segments.length === 0) throw invalid('SPIFFE ID pattern', pattern, 'has no path');
    // The same rules as an ID, with '*' standing for one segment.
    const probe = `${SPIFFE_SCHEME}${trustDomain}/${segments.map((s) => (s === '*' ? 'x' : s)).join('/')}`;
    splitSpiffeUri(probe);
    return new SpiffeIdPattern(pattern, trustDomain, segments);
  }

  matches(uri: string): boolean {
    if (!uri.startsWith(`${SPIFFE_SCHEME}${this.trustDomain}/`)) return false;
    const segs = uri.slice(SPIFFE_SCHEME.length + this.trustDomain.length + 1).split('/');
    if (segs.length !== this.segments.length) return false;
    for (let i = 0; i < segs.length; i++) {
      const want = this.segments[i];
      if (want !== '*' && want !== segs[i]) return false;
    }
    return true;
  }

  toString(): string {
    return this.source;
  }
}

/** Compiles a list of patterns, accepting already compiled ones. */
export function compilePatterns(patterns: readonly (string | SpiffeIdPattern)[]): SpiffeIdPattern[] {
  return patterns.map((p) => (typeof p === 'string' ? SpiffeIdPattern.parse(p) : p));
}
