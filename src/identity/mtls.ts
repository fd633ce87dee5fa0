// Mutual TLS with X.509-SVIDs: TLS options for node:tls / node:https servers and clients
// built from an Identity and a TrustBundle, and authorisation of the peer by SPIFFE ID.
//
// The TLS handshake (OpenSSL) verifies the peer's chain against the bundle; authorize()
// then decides whether this peer may do this: the certificate must be a leaf of our trust
// domain with exactly one SPIFFE ID matching an allowed pattern, within its validity, and
// not revoked. Call it on every request, not once per connection, so that a revocation or
// an expiry takes effect on the next request even on a long-lived connection.
import { constants, type KeyObject, X509Certificate } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import {
  type ConnectionOptions,
  createSecureContext,
  type PeerCertificate,
  type TLSSocket,
  type TlsOptions,
} from 'node:tls';
import { TgError } from '../util/errors.js';
import type { Identity } from './identity.js';
import { svidSpiffeId } from './identity.js';
import { compilePatterns, type SpiffeId, type SpiffeIdPattern } from './spiffe.js';
import { certDate, type TrustBundle } from './trust-bundle.js';

/** Whether a certificate serial (canonical text, certs.ts) is revoked; checked on every handshake or request. */
export type IsRevoked = (serial: string) => boolean;

export const MTLS_MIN_VERSION = 'TLSv1.3';

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/**
 * The key as PKCS#8 PEM in a Buffer the caller can wipe: node:tls takes private keys only
 * as PEM, and going through a JS string would leave a copy nobody can erase.
 */
export function privateKeyPem(key: KeyObject): Buffer {
  const der = key.export({ format: 'der', type: 'pkcs8' });
  const head = Buffer.from('-----BEGIN PRIVATE KEY-----\n');
  const tail = Buffer.from('-----END PRIVATE KEY-----\n');
  const b64len = 4 * Math.ceil(der.length / 3);
  const out = Buffer.alloc(head.length + b64len + Math.ceil(b64len / 64) + tail.length);
  let o = head.copy(out, 0);
  let col = 0;
  const put = (c: number): void => {
    out[o++] = c;
    if (++col === 64) {
      out[o++] = 0x0a;
      col = 0;
    }
  };
  try {
    for (let i = 0; i < der.length; i += 3) {
      const n = (der[i] << 16) | ((der[i + 1] ?? 0) << 8) | (der[i + 2] ?? 0);
      put(B64.charCodeAt((n >> 18) & 63));
      put(B64.charCodeAt((n >> 12) & 63));
      put(i + 1 < der.length ? B64.charCodeAt((n >> 6) & 63) : 0x3d);
      put(i + 2 < der.length ? B64.charCodeAt(n & 63) : 0x3d);
    }
    if (col !== 0) out[o++] = 0x0a;
    o += tail.copy(out, o);
    return out.subarray(0, o);
  } finally {
    der.fill(0);
  }
}

export interface MtlsServerOptions extends TlsOptions {
  key: Buffer;
}

/**
 * Options for tls.createServer / https.createServer / server.setSecureContext. `key` is a
 * PEM buffer: wipe it with wipeTlsKey() once the server or context is built. Clients must
 * present a certificate chaining to the bundle. Session tickets are off, so every
 * connection is a full handshake in which the client's chain is checked again.
 */
export function serverTlsOptions(identity: Identity, bundle: TrustBundle): MtlsServerOptions {
  return {
    key: privateKeyPem(identity.privateKey),
    cert: [identity.certificatePem, ...identity.chainPem].join(''),
    ca: bundle.pems(),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: MTLS_MIN_VERSION,
    secureOptions: constants.SSL_OP_NO_TICKET,
  };
}

export function wipeTlsKey(options: { key?: unknown }): void {
  if (Buffer.isBuffer(options.key)) options.key.fill(0);
}

/**
 * Swaps a running API server's identity and bundle (JsonApiServer.updateTls): new connections
 * use them, open ones go on. The key buffer is wiped after.
 */
export function updateServerIdentity(
  server: { updateTls(options: MtlsServerOptions): void },
  identity: Identity,
  bundle: TrustBundle,
): void {
  const opts = serverTlsOptions(identity, bundle);
  try {
    server.updateTls(opts);
  } finally {
    wipeTlsKey(opts);
  }
}

export interface AuthorizeOptions {
  readonly trustDomain: string;
  readonly isRevoked?: IsRevoked;
  /** Milliseconds since the epoch; default Date.now. */
  readonly now?: () => number;
}

/**
 * Options for tls.connect / https.request: our identity as client certificate, the bundle
 * as trust anchors, and the server authorised by SPIFFE ID instead of host name. The key is
 * inside the returned secureContext; no PEM copy remains. Use one https.Agent per identity:
 * agents pool sockets by options, and a secureContext is not part of that key.
 */
export function clientTlsOptions(
  identity: Identity,
  bundle: TrustBundle,
  allowedServerIds: readonly (string | SpiffeIdPattern)[],
  opts: Omit<AuthorizeOptions, 'trustDomain'> = {},
): ConnectionOptions {
  const patterns = compilePatterns(allowedServerIds);
  const key = privateKeyPem(identity.privateKey);
  let secureContext: ReturnType<typeof createSecureContext>;
  try {
    secureContext = createSecureContext({
      key,
      cert: [identity.certificatePem, ...identity.chainPem].join(''),
      ca: bundle.pems(),
      minVersion: MTLS_MIN_VERSION,
    });
  } finally {
    key.fill(0);
  }
  return {
    secureContext,
    minVersion: MTLS_MIN_VERSION,
    rejectUnauthorized: true,
    checkServerIdentity: (_host: string, cert: PeerCertificate): Error | undefined => {
      const r = authorize(cert, patterns, { ...opts, trustDomain: bundle.trustDomain });
      return r.allowed ? undefined : new TgError('TG_ERR_FORBIDDEN', `server refused: ${r.reason}`);
    },
  };
}

/**
 * A denial says whether the peer failed to prove an acceptable identity at all (401: no,
 * unverifiable, expired, revoked or malformed certificate) or proved one that may not do
 * this (403: another trust domain, or an ID outside the allow-list).
 */
/**
 * Options for a client that has no certificate yet (enrolment): the server is still verified
 * against the bundle and authorised by SPIFFE ID.
 */
export function serverOnlyTlsOptions(
  bundle: TrustBundle,
  allowedServerIds: readonly (string | SpiffeIdPattern)[],
): ConnectionOptions {
  const patterns = compilePatterns(allowedServerIds);
  return {
    ca: bundle.pems(),
    minVersion: MTLS_MIN_VERSION,
    rejectUnauthorized: true,
    checkServerIdentity: (_host: string, cert: PeerCertificate): Error | undefined => {
      const r = authorize(cert, patterns, { trustDomain: bundle.trustDomain });
      return r.allowed ? undefined : new TgError('TG_ERR_FORBIDDEN', `server refused: ${r.reason}`);
    },
  };
}

export type Authorization =
  | { readonly allowed: true; readonly id: SpiffeId; readonly serial: string; readonly notAfter: Date }
  | { readonly allowed: false; readonly reason: string; readonly status: 401 | 403 };

export type PeerCertificateInput = X509Certificate | PeerCertificate | Uint8Array | string | undefined | null;

function toX509(peer: PeerCertificateInput): X509Certificate | undefined {
  if (peer === undefined || peer === null) return undefined;
  if (peer instanceof X509Certificate) return peer;
  if (typeof peer === 'string' || peer instanceof Uint8Array) return new X509Certificate(peer);
  // tls.PeerCertificate: an empty object when the peer sent none.
  if (peer.raw === undefined || peer.raw.length === 0) return undefined;
  return new X509Certificate(peer.raw);
}

const deny = (reason: string, status: 401 | 403 = 401): Authorization => ({ allowed: false, reason, status });

/**
 * Decides whether a peer certificate (already chain-verified by TLS) may act as one of the
 * allowed SPIFFE IDs. Never throws: bad input is a denial with a reason.
 */
export function authorize(
  peer: PeerCertificateInput,
  allowed: readonly (string | SpiffeIdPattern)[],
  opts: AuthorizeOptions,
): Authorization {
  let cert: X509Certificate | undefined;
  try {
    cert = toX509(peer);
  } catch {
    return deny('unreadable certificate');
  }
  if (cert === undefined) return deny('no certificate presented');
  if (cert.ca) return deny('a CA certificate is not an identity');
  let id: SpiffeId;
  try {
    id = svidSpiffeId(cert);
  } catch (err) {
    return deny((err as Error).message);
  }
  if (id.trustDomain !== opts.trustDomain)
    return deny(`${id.uri} belongs to trust domain '${id.trustDomain}', not '${opts.trustDomain}'`, 403);
  const now = (opts.now ?? Date.now)();
  const notBefore = certDate(cert.validFrom);
  const notAfter = certDate(cert.validTo);
  if (now < notBefore.getTime()) return deny(`certificate not valid before ${notBefore.toISOString()}`);
  if (now > notAfter.getTime()) return deny(`certificate expired at ${notAfter.toISOString()}`);
  const serial = cert.serialNumber.toLowerCase().replace(/^0+(?=.)/, '');
  if (opts.isRevoked?.(serial)) return deny(`certificate ${serial} is revoked`);
  let patterns: SpiffeIdPattern[];
  try {
    patterns = compilePatterns(allowed);
  } catch {
    return deny('invalid allow-list', 403);
  }
  if (!patterns.some((p) => p.matches(id.uri))) return deny(`${id.uri} is not allowed here`, 403);
  return { allowed: true, id, serial, notAfter };
}

/** authorize() for a TLS socket (or the socket of an https request): chain verified first. */
export function authorizeSocket(
  socket: TLSSocket,
  allowed: readonly (string | SpiffeIdPattern)[],
  opts: AuthorizeOptions,
): Authorization {
  if (!socket.authorized) {
    const peer = socket.getPeerX509Certificate();
    if (peer === undefined) return deny('no certificate presented');
    const why = socket.authorizationError;
    return deny(`certificate chain not verified${why ? `: ${why}` : ''}`);
  }
  return authorize(socket.getPeerX509Certificate(), allowed, opts);
}

export function authorizeRequest(
  req: IncomingMessage,
  allowed: readonly (string | SpiffeIdPattern)[],
  opts: AuthorizeOptions,
): Authorization {
  const socket = req.socket as TLSSocket;
  if (typeof socket.getPeerX509Certificate !== 'function') return deny('not a TLS connection');
  return authorizeSocket(socket, allowed, opts);
}
