// The vSwitch daemon's API (HTTP+JSON on a Unix socket), thin over VSwitchDaemon.
//
//   GET    /v1/health
//   GET    /v1/instances                          every instance with its state
//   POST   /v1/instances                          {workload, netns, address, routes?} -> 201 {publicKey, ifname}
//   GET    /v1/instances/:workload
//   PUT    /v1/instances/:workload/nic            {nicPublicKey, psk, nicEndpoint}: the NIC becomes its peer
//   POST   /v1/instances/:workload/psk            {psk}: rotate
//   POST   /v1/instances/:workload/restart        a crashed instance again, new key pair -> {publicKey}
//   DELETE /v1/instances/:workload                device ends, keys gone, tg0 removed
import { z } from 'zod';
import { nameSchema } from '../net/name.js';
import { keySchema } from '../nic/schemas.js';
import { answer, parseBody, type Route } from '../util/http-json.js';
import type { VSwitchDaemon } from './daemon.js';

export const createInstanceSchema = z.strictObject({
  workload: nameSchema,
  netns: z.string().min(1).max(64),
  address: z.string().min(2).max(64),
  routes: z.array(z.string().max(64)).max(64).optional(),
});

export const configureSchema = z.strictObject({
  nicPublicKey: keySchema,
  psk: keySchema,
  nicEndpoint: z.string().min(9).max(64),
});

export const rotateSchema = z.strictObject({ psk: keySchema });

const emptySchema = z.strictObject({}).optional();

export const VSWITCH_MAX_BODY_BYTES = 16 * 1024;

export function vswitchRoutes(daemon: VSwitchDaemon, startedAt: number): Route[] {
  const workload = (v: string | undefined): string => parseBody(nameSchema, v, 'workload');
  return [
    {
      method: 'GET',
      path: '/v1/health',
      handler: () => ({
        status: 'ok',
        uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
        crashes: daemon.crashes,
        ...daemon.counts(),
      }),
    },
    { method: 'GET', path: '/v1/instances', handler: () => ({ instances: daemon.list() }) },
    {
      method: 'POST',
      path: '/v1/instances',
      handler: async (req) => answer(201, await daemon.create(parseBody(createInstanceSchema, req.body))),
    },
    {
      method: 'GET',
      path: '/v1/instances/:workload',
      handler: (req) => daemon.get(workload(req.params.workload)),
    },
    {
      method: 'PUT',
      path: '/v1/instances/:workload/nic',
      handler: (req) => daemon.configure(workload(req.params.workload), parseBody(configureSchema, req.body)),
    },
    {
      method: 'POST',
      path: '/v1/instances/:workload/psk',
      handler: (req) =>
        daemon.rotatePsk(workload(req.params.workload), parseBody(rotateSchema, req.body).psk),
    },
    {
      method: 'POST',
      path: '/v1/instances/:workload/restart',
      handler: (req) => {
        parseBody(emptySchema, req.body);
        return daemon.restart(workload(req.params.workload));
      },
    },
    {
      method: 'DELETE',
      path: '/v1/instances/:workload',
      handler: (req) => {
        parseBody(emptySchema, req.body);
        return daemon.delete(workload(req.params.workload));
      },
    },
  ];
}
