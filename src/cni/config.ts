// The network configuration the runtime passes on stdin, parsed and checked by schema. Pure:
// no I/O, so a fuzz target can call parseCniConfig() with any bytes.
//
// Following the spec, keys this plugin does not know are kept, not rejected: a runtime adds
// its own (runtimeConfig, args, prevResult, capabilities), and a conflist's shared keys may be
// meant for other plugins. Keys this plugin knows must have the right type.
//
// Checked by a small declarative table here, not by zod as the APIs are: the plugin is a
// process per runtime call, and loading zod costs it about 80-100 ms of start-up on this
// project's 2-core CI machine (a third of the ADD-to-first-packet budget).
import { CNI_ERR, CniError, SUPPORTED_VERSIONS, type SupportedVersion } from './spec.js';

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
const ABS_PATH_RE = /^\/[^\0]*$/;

/** The mTLS files of a configuration. */
export interface CniMtlsFiles {
  /** The plugin's X.509-SVID chain (PEM). */
  cert: string;
  /** Its private key (PEM; read per call and the buffer wiped). */
  key: string;
  /** The trusted roots (PEM). */
  caBundle: string;
}

export interface CniConfig {
  /** Keys of the runtime and of other plugins, kept as given. */
  [key: string]: unknown;
  cniVersion: SupportedVersion;
  name: string;
  type: string;
  /** The tenant; without it, K8S_POD_NAMESPACE from CNI_ARGS (Kubernetes: tenant = namespace). */
  tenant?: string;
  /** The orchestrator's name of this host. */
  host: string;
  /** The orchestrator's API socket. */
  orchestrator: string;
  mtls?: CniMtlsFiles;
  /** Milliseconds to wait for the orchestrator per call (default 60 s). */
  timeoutMs?: number;
  /** DEL/CHECK (1.0): the result of the ADD. Only its type is checked here. */
  prevResult?: Record<string, unknown>;
  runtimeConfig?: Record<string, unknown>;
  args?: Record<string, unknown>;
  /** GC (1.1): the attachments still valid. */
  'cni.dev/valid-attachments'?: { containerID: string; ifname: string; [key: string]: unknown }[];
}

/** A check of one value: null when it is right, else what is wrong with it. */
type Check = (v: unknown) => string | null;

const isObject = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v);

const str =
  (min: number, max: number, re?: RegExp, what?: string): Check =>
  (v) => {
    if (typeof v !== 'string') return `must be a string, not ${v === null ? 'null' : typeof v}`;
    if (v.length < min || v.length > max) return `must be ${min} to ${max} characters long`;
    if (re !== undefined && !re.test(v)) return `must be ${what}`;
    return null;
  };

const absPath = (max: number): Check => str(2, max, ABS_PATH_RE, 'an absolute path');

const oneOf =
  (values: readonly string[]): Check =>
  (v) =>
    typeof v === 'string' && values.includes(v) ? null : `must be one of ${values.join(', ')}`;

const integer =
  (min: number, max: number): Check =>
  (v) =>
    typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max
      ? null
      : `must be an integer from ${min} to ${max}`;

const record: Check = (v) => (isObject(v) ? null : 'must be an object');

/** Known keys: their check and whether they are required. Other keys are kept unchecked. */
interface Field {
  check: Check;
  required?: boolean;
}

const MTLS_FIELDS: Record<keyof CniMtlsFiles, Field> = {
  cert: { check: absPath(4096), required: true },
  key: { check: absPath(4096), required: true },
  caBundle: { check: absPath(4096), required: true },
};

const ATTACHMENT_FIELDS: Record<string, Field> = {
  containerID: { check: str(1, 1024), required: true },
  ifname: { check: str(1, 64), required: true },
};

/** The first problem of an object against its fields, as [path, message]; null when none. */
function problemOf(
  v: Record<string, unknown>,
  fields: Record<string, Field>,
  at: string[],
  strict: boolean,
): [string[], string] | null {
  for (const [key, f] of Object.entries(fields)) {
    const x = Object.hasOwn(v, key) ? v[key] : undefined;
    if (x === undefined) {
      if (f.required === true) return [[...at, key], 'is required'];
      continue;
    }
    const p = f.check(x);
    if (p !== null) return [[...at, key], p];
  }
  if (strict)
    for (const key of Object.keys(v))
      if (!Object.hasOwn(fields, key)) return [[...at, key.slice(0, 64)], 'is not a known key'];
  return null;
}

const mtlsCheck: Check = (v) => {
  if (!isObject(v)) return 'must be an object';
  const p = problemOf(v, MTLS_FIELDS, [], true);
  return p === null ? null : `${p[0].join('.')}: ${p[1]}`;
};

const attachmentsCheck: Check = (v) => {
  if (!Array.isArray(v)) return 'must be an array';
  for (let i = 0; i < v.length; i++) {
    const a: unknown = v[i];
    if (!isObject(a)) return `${i}: must be an object`;
    const p = problemOf(a, ATTACHMENT_FIELDS, [String(i)], false);
    if (p !== null) return `${p[0].join('.')}: ${p[1]}`;
  }
  return null;
};

const CONFIG_FIELDS: Record<string, Field> = {
  cniVersion: { check: oneOf(SUPPORTED_VERSIONS), required: true },
  name: { check: str(1, 253), required: true },
  type: { check: str(1, 253), required: true },
  tenant: { check: str(1, 63, NAME_RE, 'a tenant name') },
  host: { check: str(1, 63, NAME_RE, 'a host name'), required: true },
  orchestrator: { check: absPath(107), required: true },
  mtls: { check: mtlsCheck },
  timeoutMs: { check: integer(100, 600_000) },
  prevResult: { check: record },
  runtimeConfig: { check: record },
  args: { check: record },
  'cni.dev/valid-attachments': { check: attachmentsCheck },
};

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
  const problem = problemOf(raw as Record<string, unknown>, CONFIG_FIELDS, [], false);
  if (problem !== null) {
    const where = problem[0].join('.');
    throw new CniError(
      CNI_ERR.INVALID_NETWORK_CONFIG,
      `invalid network configuration: ${where}: ${problem[1]}`,
    );
  }
  return raw as CniConfig;
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
