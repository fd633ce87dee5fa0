// The CA's configuration: validated by schema at start (unknown keys rejected), then frozen.
//
// {
//   "stateDir": "/var/lib/tenguard/ca",            issued-certificate records, CA metadata and,
//                                                  for the embedded token, the SoftHSM2 store
//   "trustDomain": "prod.example",
//   "token": {
//     "module": "/usr/lib/softhsm/libsofthsm2.so",  any PKCS#11 module
//     "label": "tenguard-ca",                       token label (CKA_LABEL of the token)
//     "pin": { "env": "TENGUARD_CA_PIN" },          or { "file": "/etc/tenguard/ca.pin" }
//     "keyLabel": "tenguard-ca-key",                label of the signing key pair
//     "embedded": true                              SoftHSM2 with its store under stateDir,
//                                                  initialised here on first use
//   },
//   "issuance": { "defaultTtlSeconds": 3600, "minTtlSeconds": 60, "maxTtlSeconds": 86400,
//                 "backdateSeconds": 60 },
//   "root": { "commonName": "...", "organization": "tenguard", "validityDays": 3650 }
// }
import { readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { z } from 'zod';
import { validateTrustDomain } from '../identity/spiffe.js';
import { TgError } from '../util/errors.js';

export const SOFTHSM2_MODULE = '/usr/lib/softhsm/libsofthsm2.so';
export const CONFIG_ENV = 'TENGUARD_CA_CONFIG';

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name');
const absolutePath = z.string().min(1).refine(isAbsolute, 'must be an absolute path');
const pinSource = z.union([z.strictObject({ env: envName }), z.strictObject({ file: absolutePath })]);

const trustDomain = z.string().superRefine((td, ctx) => {
  try {
    validateTrustDomain(td);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
  }
});

export const CaConfigSchema = z
  .strictObject({
    stateDir: absolutePath,
    trustDomain,
    token: z.strictObject({
      module: absolutePath.default(SOFTHSM2_MODULE),
      // PKCS#11 token labels are 32 bytes, blank padded.
      label: z
        .string()
        .min(1)
        .refine((s) => Buffer.byteLength(s) <= 32 && s.trim() === s, 'must be 1 to 32 bytes, no edge blanks'),
      pin: pinSource,
      keyLabel: z
        .string()
        .regex(/^[A-Za-z0-9._-]{1,48}$/, 'must be 1 to 48 letters, digits, ".", "-" or "_"')
        .default('tenguard-ca'),
      embedded: z.boolean().default(true),
      // Embedded token only: the security officer PIN set when the token is first
      // initialised. When absent a random SO PIN is used and forgotten, so the user PIN can
      // never be reset: the token is then re-created rather than repaired.
      soPin: pinSource.optional(),
    }),
    issuance: z
      .strictObject({
        defaultTtlSeconds: z.number().int().min(1).default(3600),
        minTtlSeconds: z.number().int().min(1).default(60),
        maxTtlSeconds: z
          .number()
          .int()
          .min(1)
          .max(90 * 86400)
          .default(86400),
        backdateSeconds: z.number().int().min(0).max(3600).default(60),
      })
      .prefault({}),
    root: z
      .strictObject({
        commonName: z.string().min(1).max(64).optional(),
        organization: z.string().min(1).max(64).default('tenguard'),
        validityDays: z.number().int().min(1).max(7300).default(3650),
      })
      .prefault({}),
  })
  .superRefine((c, ctx) => {
    const i = c.issuance;
    if (!(i.minTtlSeconds <= i.defaultTtlSeconds && i.defaultTtlSeconds <= i.maxTtlSeconds)) {
      ctx.addIssue({
        code: 'custom',
        path: ['issuance'],
        message: 'need minTtlSeconds <= defaultTtlSeconds <= maxTtlSeconds',
      });
    }
    if (i.maxTtlSeconds >= c.root.validityDays * 86400) {
      ctx.addIssue({
        code: 'custom',
        path: ['issuance', 'maxTtlSeconds'],
        message: 'must be below the root validity',
      });
    }
    if (!c.token.embedded && c.token.soPin !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['token', 'soPin'],
        message: 'only an embedded token is initialised here',
      });
    }
  });

export type CaConfig = Readonly<z.infer<typeof CaConfigSchema>>;

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

/** Validates a configuration object; every problem is listed in one TG_ERR_CONFIG. */
export function parseCaConfig(input: unknown): CaConfig {
  const r = CaConfigSchema.safeParse(input);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `  ${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`);
    throw new TgError('TG_ERR_CONFIG', `invalid CA configuration:\n${lines.join('\n')}`);
  }
  return deepFreeze(r.data);
}

/** Reads and validates a JSON configuration file. */
export function loadCaConfig(path: string): CaConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new TgError('TG_ERR_CONFIG', `cannot read the CA configuration ${path}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new TgError('TG_ERR_CONFIG', `the CA configuration ${path} is not JSON: ${(err as Error).message}`);
  }
  return parseCaConfig(json);
}
