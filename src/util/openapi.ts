// The OpenAPI 3.1 document of an API, generated from its route list (src/util/http-json.ts):
// every route with its operationId, summary, path parameters (with their schemas), query,
// request body schema and example, success status and the catalogue's error shape. Each API
// serves its own at GET /openapi.json (withOpenApi), from the list it serves.
import { z } from 'zod';
import { ERROR_CODES } from './errors.js';
import type { Route } from './http-json.js';

export interface ApiInfo {
  title: string;
  version: string;
  description: string;
}

export const OPENAPI_PATH = '/openapi.json';

function toJsonSchema(schema: z.ZodType): unknown {
  return z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' });
}

/** `/v1/workloads/:workload` -> `/v1/workloads/{workload}`. */
export function openApiPath(path: string): string {
  return path.replace(/:([A-Za-z]+)/g, '{$1}');
}

function queryParameters(schema: z.ZodType): Record<string, unknown>[] {
  const js = toJsonSchema(schema) as { properties?: Record<string, unknown>; required?: string[] };
  return Object.entries(js.properties ?? {}).map(([name, s]) => ({
    name,
    in: 'query',
    required: (js.required ?? []).includes(name),
    schema: s,
  }));
}

/** The OpenAPI 3.1 document of a route list. */
export function openApiDocument(info: ApiInfo, routes: readonly Route[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const names = r.path
      .split('/')
      .filter((s) => s.startsWith(':'))
      .map((s) => s.slice(1));
    const ok = r.produces ?? 'application/json';
    const op: Record<string, unknown> = {
      operationId: r.operationId,
      summary: r.summary,
      responses: {
        [String(r.status ?? 200)]: {
          description: 'success',
          content: { [ok]: { schema: ok === 'application/json' ? { type: 'object' } : { type: 'string' } } },
        },
        default: {
          description: 'an error from the catalogue',
          content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
        },
      },
    };
    const parameters = [
      ...names.map((p) => ({
        name: p,
        in: 'path',
        required: true,
        schema: r.params?.[p] !== undefined ? toJsonSchema(r.params[p]) : { type: 'string', minLength: 1 },
      })),
      ...(r.query !== undefined ? queryParameters(r.query) : []),
    ];
    if (parameters.length > 0) op.parameters = parameters;
    if (r.body !== undefined)
      op.requestBody = {
        required: !r.body.safeParse(undefined).success,
        content: {
          'application/json': {
            schema: toJsonSchema(r.body),
            ...(r.example !== undefined ? { example: r.example } : {}),
          },
        },
      };
    const p = openApiPath(r.path);
    paths[p] = { ...(paths[p] ?? {}), [r.method.toLowerCase()]: op };
  }
  return {
    openapi: '3.1.0',
    info,
    paths,
    components: {
      schemas: {
        Error: {
          type: 'object',
          required: ['code', 'message'],
          properties: {
            code: { type: 'string', enum: Object.keys(ERROR_CODES) },
            message: { type: 'string' },
          },
        },
      },
    },
  };
}

/** The routes plus GET /openapi.json answering their document (and its own entry). */
export function withOpenApi(info: ApiInfo, routes: readonly Route[]): Route[] {
  const all: Route[] = [
    ...routes,
    {
      method: 'GET',
      path: OPENAPI_PATH,
      operationId: 'openapi',
      summary: 'This API as an OpenAPI 3.1 document',
      handler: () => doc,
    },
  ];
  const doc = openApiDocument(info, all);
  return all;
}
