// The network configuration the runtime passes on stdin, parsed and checked by schema. Pure:
// no I/O, so a fuzz target can call parseCniConfig() with any bytes.
//
// Following the spec, keys this plugin does not know are kept, not rejected: a runtime adds
// its own (runtimeConfig, args, prevResult, capabilities), and a conflist's shared keys may be
// meant for other plugins. Keys this plugin knows must have the right type.
import { z } from 'zod';
import { CNI_ERR, CniError, SUPPORTED_VERSIONS } from './spec.js';

/** The largest configuration accepted (a conflist entry is a few hundred bytes). */
export const MAX_CONFIG_BYTES = 256 * 1024;
/**
 * The deepest nesting of objects and arrays accepted. JSON.parse takes any depth, but what it
 * builds from a deep enough document cannot be serialised again (JSON.stringify and deep
 * comparisons recurse and overflow the stack), so such a configuration is refused up front.
 * Real ones (prevResult, runtimeConfig) are under ten levels deep.
 */
export const MAX_CONFIG_DEPTH = 64;

/** The deepest nesting of `{`/`[` outside strings in JSON text; stops counting past `limit`. */
function nestingDepth(text: string, limit: number): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) {
        max = depth;
        if (max > limit) return max;
      }
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return max;
}

const NAME_RE = /^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$/;
const absPath = z
  .string()
  .min(2)
  .max(4096)
  .regex(/^\/[^\0]*$/, 'must be an absolute path');
const socketPath = absPath.max(107);

export const mtlsSchema = z.strictObject({
  /** The plugin's X.509-SVID chain (PEM). */
  cert: absPath,
  /** Its private key (PEM; read per call and the buffer wiped). */
  key: absPath,
  /** The trusted roots (PEM). */
  caBundle: absPath,
});

export const cniConfigSchema = z.looseObject({
  cniVersion: z.enum(SUPPORTED_VERSIONS),
  name: z.string().min(1).max(253),
  type: z.string().min(1).max(253),
  /** The tenant; without it, K8S_POD_NAMESPACE from CNI_ARGS (Kubernetes: tenant = namespace). */
  tenant: z.string().regex(NAME_RE, 'must be a tenant name').optional(),
  /** The orchestrator's name of this host. */
  host: z.string().regex(NAME_RE, 'must be a host name'),
  /** The orchestrator's API socket. */
  orchestrator: socketPath,
  mtls: mtlsSchema.optional(),
  /** Milliseconds to wait for the orchestrator per call (default 60 s). */
  timeoutMs: z.number().int().min(100).max(600_000).optional(),
  /** DEL/CHECK (1.0): the result of the ADD. Only its type is checked here. */
  prevResult: z.record(z.string(), z.unknown()).optional(),
  runtimeConfig: z.record(z.string(), z.unknown()).optional(),
  args: z.record(z.string(), z.unknown()).optional(),
  /** GC (1.1): the attachments still valid. */
  'cni.dev/valid-attachments': z
    .array(z.looseObject({ containerID: z.string().min(1).max(1024), ifname: z.string().min(1).max(64) }))
    .optional(),
});

export type CniConfig = z.infer<typeof cniConfigSchema>;

/**
 * Parses the configuration bytes. Throws CniError: 6 (not JSON, nested deeper than
 * MAX_CONFIG_DEPTH, not an object), 1 (a version
 * this plugin does not accept), 7 (a known key missing or of the wrong type). Never anything else.
 */
export function parseCniConfig(bytes: Uint8Array): CniConfig {
  if (bytes.length > MAX_CONFIG_BYTES)
    throw new CniError(CNI_ERR.DECODE_FAILURE, `network configuration larger than ${MAX_CONFIG_BYTES} bytes`);
  let raw: unknown;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    if (nestingDepth(text, MAX_CONFIG_DEPTH) > MAX_CONFIG_DEPTH)
      throw new CniError(
        CNI_ERR.DECODE_FAILURE,
        `network configuration nested deeper than ${MAX_CONFIG_DEPTH} levels`,
      );
    raw = JSON.parse(text);
  } catch (err) {
    if (err instanceof CniError) throw err;
    throw new CniError(
      CNI_ERR.DECODE_FAILURE,
      'network configuration is not JSON',
      err instanceof Error ? err.message : String(err),
    );
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new CniError(CNI_ERR.DECODE_FAILURE, 'network configuration is not a JSON object');
  const version = (raw as Record<string, unknown>).cniVersion;
  if (typeof version === 'string' && !(SUPPORTED_VERSIONS as readonly string[]).includes(version))
    throw new CniError(
      CNI_ERR.INCOMPATIBLE_VERSION,
      `cniVersion '${version.slice(0, 32)}' is not supported (supported: ${SUPPORTED_VERSIONS.join(', ')})`,
    );
  const r = cniConfigSchema.safeParse(raw);
  if (!r.success) {
    const first = r.error.issues[0];
    const where = first.path.length > 0 ? first.path.join('.') : '(top)';
    throw new CniError(
      CNI_ERR.INVALID_NETWORK_CONFIG,
      `invalid network configuration: ${where}: ${first.message}`,
      r.error.issues
        .slice(0, 8)
        .map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`)
        .join('; '),
    );
  }
  return r.data;
}

/** CNI_ARGS: "K1=V1;K2=V2" (spec: alphanumeric keys, values without ';'). */
export function parseCniArgs(text: string | undefined): Map<string, string> {
  const m = new Map<string, string>();
  if (text === undefined || text === '') return m;
  for (const part of text.split(';')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw new CniError(CNI_ERR.INVALID_ENV, `CNI_ARGS: '${part.slice(0, 64)}' is not KEY=VALUE`);
    m.set(part.slice(0, eq), part.slice(eq + 1));
  }
  return m;
}
