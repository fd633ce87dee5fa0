// Request bodies of the NIC agent's API. Unknown keys are rejected (strict objects); sizes
// are bounded. Keys are checked here for form (base64 of 32 bytes) and by the agent for use.
import { z } from 'zod';
import { nameSchema } from '../net/name.js';
import { labelsSchema } from '../policy/model.js';
import { MAX_CHAIN_PEM_CHARS } from './cert-binding.js';

const KEY_RE = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;
const SIGNATURE_RE = /^[A-Za-z0-9+/]{85}[AQgw]==$/;

export const keySchema = z.string().regex(KEY_RE, 'must be a 32-byte key in base64 (44 characters)');
export const signatureSchema = z
  .string()
  .regex(SIGNATURE_RE, 'must be a 64-byte signature in base64 (88 characters)');
export const addressSchema = z.string().min(2).max(64);
export const endpointSchema = z.string().min(9).max(64);

export const registerWorkloadSchema = z.strictObject({
  tenant: nameSchema,
  workload: nameSchema,
  address: addressSchema,
  /** The IPv6 address of a dual-stack workload (`address` is then its IPv4 one). */
  address6: addressSchema.optional(),
  vswitchPublicKey: keySchema,
  labels: labelsSchema.optional(),
  /** Replace the workload's registration in the same tenant, keeping the tenant (agent.ts). */
  replace: z.boolean().optional(),
});

/** Remote NICs holding workloads per tenant: bounded well above any lab or rack. */
export const MAX_TENANT_PEERS = 1024;
export const MAX_REMOTE_WORKLOADS = 4096;

export const tenantPeersSchema = z.strictObject({
  peers: z
    .array(
      z.strictObject({
        nicIdentityKey: keySchema,
        endpoint: endpointSchema,
        publicKey: keySchema,
        signature: signatureSchema,
        nicCertificate: z.string().min(1).max(MAX_CHAIN_PEM_CHARS).optional(),
        identityBinding: z
          .string()
          .regex(/^[A-Za-z0-9+/]{8,200}={0,2}$/, 'must be a DER signature in base64')
          .optional(),
        workloads: z
          .array(
            z.strictObject({
              workload: nameSchema,
              address: addressSchema,
              address6: addressSchema.optional(),
              labels: labelsSchema.optional(),
            }),
          )
          .max(MAX_REMOTE_WORKLOADS),
      }),
    )
    .max(MAX_TENANT_PEERS),
});

/**
 * A policy document: checked in full by the policy validator (422 with every reason); here
 * only that it is a JSON object.
 */
export const policyBodySchema = z.record(
  z.string(),
  z.unknown(),
  'a policy document (a JSON object) is required',
);

/** Bodies of requests that take none: absent or {}. */
export const emptySchema = z.strictObject({}).optional();

/** Other tenants' workloads a tenant's workloads may exchange traffic with (api.ts). */
export const MAX_GRANT_WORKLOADS = 16_384;

export const tenantGrantsSchema = z.strictObject({
  workloads: z
    .array(
      z.strictObject({
        tenant: nameSchema,
        workload: nameSchema,
        address: addressSchema,
        address6: addressSchema.optional(),
        labels: labelsSchema.optional(),
        nicIdentityKey: keySchema.optional(),
      }),
    )
    .max(MAX_GRANT_WORKLOADS),
});

/** GET /v1/flows query: tenant, verdict, since (5m, 1h, an ISO time or epoch ms), limit. */
export const flowQuerySchema = z.strictObject({
  tenant: nameSchema.optional(),
  verdict: z.enum(['allow', 'deny']).optional(),
  since: z.string().min(1).max(40).optional(),
  limit: z.coerce.number().int().min(1).max(10_000).optional(),
});
