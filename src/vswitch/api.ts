// The vSwitch daemon's API (HTTP+JSON on a Unix socket, mTLS with the CA), thin over
// VSwitchDaemon; GET /openapi.json is generated from the route list (src/util/openapi.ts).
//
//   GET    /v1/health                             liveness, counts, API version
//   GET    /openapi.json                          this API's OpenAPI 3.1 document
//   GET    /v1/instances                          every instance with its state
//   POST   /v1/instances                          {workload, netns, address, routes?, netnsIfname?} -> 201 {publicKey, ifname}
//   POST   /v1/instances/batch                    {instances: [create bodies]} -> {results: [answer | {workload, error}]}
//   PUT    /v1/instances/nic                      {instances: [{workload, configure body}]} -> {results: [...]}
//   GET    /v1/instances/:workload
//   PUT    /v1/instances/:workload/nic            {nicPublicKey, sealedPsk, nicEndpoint}: the NIC becomes its peer
//   POST   /v1/instances/:workload/psk            {sealedPsk}: rotate
// A PSK arrives only sealed by the NIC to the instance's public key (../nic/psk-box.ts); the
// daemon opens it with the instance's private key, which it keeps for this until the instance ends.
//   POST   /v1/instances/:workload/restart        a crashed instance again, new key pair -> {publicKey}
//   DELETE /v1/instances/:workload                device ends, keys gone, tg0 removed
import { z } from 'zod';
import { nameSchema } from '../net/name.js';
import { pskBoxSchema } from '../nic/psk-box.js';
import { keySchema } from '../nic/schemas.js';
import { answer, bodyRoute, type Route } from '../util/http-json.js';
import { type ApiInfo, withOpenApi } from '../util/openapi.js';
import { MAX_BATCH, type VSwitchDaemon } from './daemon.js';

export const createInstanceSchema = z.strictObject({
  workload: nameSchema,
  netns: z.string().min(1).max(64),
  address: z.string().min(2).max(64),
  /** The IPv6 address of a dual-stack workload (`address` is then its IPv4 one). */
  address6: z.string().min(2).max(64).optional(),
  routes: z.array(z.string().max(64)).max(64).optional(),
  /** The interface's name inside the namespace (default tg0), e.g. the CNI_IFNAME a runtime asks for. */
  netnsIfname: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,15}$/, 'must be an interface name: 1..15 of A-Z, a-z, 0-9, ".", "_", "-"')
    .optional(),
});

export const configureSchema = z.strictObject({
  nicPublicKey: keySchema,
  sealedPsk: pskBoxSchema,
  nicEndpoint: z.string().min(9).max(64),
});

/** Several creates in one request: a daemon that came back empty gets its workloads back at once. */
export const createBatchSchema = z.strictObject({
  instances: z.array(createInstanceSchema).min(1).max(MAX_BATCH),
});

export const configureBatchSchema = z.strictObject({
  instances: z
    .array(configureSchema.extend({ workload: nameSchema }))
    .min(1)
    .max(MAX_BATCH),
});

export const rotateSchema = z.strictObject({ sealedPsk: pskBoxSchema });

const EXAMPLE_BOX = {
  version: 1,
  ephemeral: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=',
  box: 'A'.repeat(64),
};

const emptySchema = z.strictObject({}).optional();

/** A batch of MAX_BATCH configures is about 250 bytes each. */
export const VSWITCH_MAX_BODY_BYTES = 128 * 1024;
export const VSWITCH_API_VERSION = '1.2.0';

export const VSWITCH_API: ApiInfo = {
  title: 'tenguard vSwitch daemon',
  version: VSWITCH_API_VERSION,
  description:
    "One tunnel device per workload in the workload's namespace: create, configure with the NIC's crypto, rotate, restart, delete. HTTP+JSON on a Unix socket, mTLS with the CA.",
};

const workload = { workload: nameSchema };
const EXAMPLE_KEY = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=';

export function vswitchRoutes(daemon: VSwitchDaemon, startedAt: number): Route[] {
  return withOpenApi(VSWITCH_API, [
    {
      method: 'GET',
      path: '/v1/health',
      operationId: 'health',
      summary: 'Liveness, instance counts, crashes and the API version',
      handler: () => ({
        status: 'ok',
        uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
        crashes: daemon.crashes,
        ...daemon.counts(),
        apiVersion: VSWITCH_API_VERSION,
      }),
    },
    {
      method: 'GET',
      path: '/v1/instances',
      operationId: 'listInstances',
      summary: 'Every instance with its state',
      handler: () => ({ instances: daemon.list() }),
    },
    bodyRoute({
      method: 'POST',
      path: '/v1/instances',
      operationId: 'createInstance',
      summary: "Create a workload's tunnel device in its namespace: its public key and interface name",
      body: createInstanceSchema,
      example: { workload: 'web-1', netns: 'tg-h1-web-1', address: '100.64.1.10' },
      status: 201,
      handler: async (_req, body) => answer(201, await daemon.create(body)),
    }),
    bodyRoute({
      method: 'POST',
      path: '/v1/instances/batch',
      operationId: 'createInstances',
      summary:
        'Create several instances at once (in parallel inside the daemon): one result per instance, in order, each its answer or its own error',
      body: createBatchSchema,
      example: { instances: [{ workload: 'web-1', netns: 'tg-h1-web-1', address: '100.64.1.10' }] },
      handler: async (_req, body) => ({ results: await daemon.createMany(body.instances) }),
    }),
    bodyRoute({
      method: 'PUT',
      path: '/v1/instances/nic',
      operationId: 'configureInstances',
      summary: "Make the NIC several instances' peer at once: one result per instance, in order",
      body: configureBatchSchema,
      example: {
        instances: [
          {
            workload: 'web-1',
            nicPublicKey: EXAMPLE_KEY,
            sealedPsk: EXAMPLE_BOX,
            nicEndpoint: '198.18.1.2:51820',
          },
        ],
      },
      handler: async (_req, body) => ({ results: await daemon.configureMany(body.instances) }),
    }),
    {
      method: 'GET',
      path: '/v1/instances/:workload',
      operationId: 'getInstance',
      summary: 'One instance',
      params: workload,
      handler: (req) => daemon.get(req.params.workload),
    },
    bodyRoute({
      method: 'PUT',
      path: '/v1/instances/:workload/nic',
      operationId: 'configureInstance',
      summary: "Make the NIC the instance's peer: its public key, the PSK and its endpoint",
      params: workload,
      body: configureSchema,
      example: { nicPublicKey: EXAMPLE_KEY, sealedPsk: EXAMPLE_BOX, nicEndpoint: '198.18.1.2:51820' },
      handler: (req, body) => daemon.configure(req.params.workload, body),
    }),
    bodyRoute({
      method: 'POST',
      path: '/v1/instances/:workload/psk',
      operationId: 'rotatePsk',
      summary: "Rotate the instance's PSK",
      params: workload,
      body: rotateSchema,
      example: { sealedPsk: EXAMPLE_BOX },
      handler: (req, body) => daemon.rotatePsk(req.params.workload, body.sealedPsk),
    }),
    {
      method: 'POST',
      path: '/v1/instances/:workload/restart',
      operationId: 'restartInstance',
      summary: 'Start a crashed instance again, with a new key pair',
      params: workload,
      body: emptySchema,
      handler: (req) => daemon.restart(req.params.workload),
    },
    {
      method: 'DELETE',
      path: '/v1/instances/:workload',
      operationId: 'deleteInstance',
      summary: 'End the device: keys gone, tg0 removed',
      params: workload,
      body: emptySchema,
      handler: (req) => daemon.delete(req.params.workload),
    },
  ]);
}
