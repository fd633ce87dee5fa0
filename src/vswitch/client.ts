// A typed client of the vSwitch daemon's API.
import type { ResponseRecorder } from '../nic/client.js';
import type { PskBox } from '../nic/psk-box.js';
import { type ApiEndpoint, apiCall, type HttpMethod } from '../util/http-json.js';
import type { BatchResult, ConfigureRequest, CreateInstanceRequest } from './daemon.js';
import type { InstanceInfo } from './instance.js';

export interface CreatedInstance {
  workload: string;
  publicKey: string;
  ifname: string;
}

const seg = (s: string): string => encodeURIComponent(s);

/** What each item of a batch adds to the client's deadline. */
export const BATCH_ITEM_MS = 500;

export class VSwitchClient {
  /**
   * @param endpoint The API's Unix socket path (plain HTTP), or an endpoint with TLS options.
   * @param timeoutMs Per request (default 30 s).
   */
  constructor(
    readonly endpoint: ApiEndpoint,
    private readonly recorder?: ResponseRecorder,
    private readonly timeoutMs?: number,
  ) {}

  private call<T>(method: HttpMethod, path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<T> {
    return apiCall(this.endpoint, method, path, body, {
      onResponse: this.recorder,
      timeoutMs,
    }) as Promise<T>;
  }

  /** A batch's deadline: the client's, plus BATCH_ITEM_MS per item (a device may start for each). */
  private batchTimeout(n: number): number | undefined {
    return this.timeoutMs === undefined ? undefined : this.timeoutMs + n * BATCH_ITEM_MS;
  }

  health(): Promise<Record<string, unknown>> {
    return this.call('GET', '/v1/health');
  }

  openapi(): Promise<Record<string, unknown>> {
    return this.call('GET', '/openapi.json');
  }

  async list(): Promise<InstanceInfo[]> {
    return (await this.call<{ instances: InstanceInfo[] }>('GET', '/v1/instances')).instances;
  }

  get(workload: string): Promise<InstanceInfo> {
    return this.call('GET', `/v1/instances/${seg(workload)}`);
  }

  create(req: CreateInstanceRequest): Promise<CreatedInstance> {
    return this.call('POST', '/v1/instances', req);
  }

  /** Several creates in one call: one result per request, in order (an item's error is its own). */
  async createMany(reqs: CreateInstanceRequest[]): Promise<BatchResult<CreatedInstance>[]> {
    return (
      await this.call<{ results: BatchResult<CreatedInstance>[] }>(
        'POST',
        '/v1/instances/batch',
        { instances: reqs },
        this.batchTimeout(reqs.length),
      )
    ).results;
  }

  /** Several configures in one call: one result per request, in order. */
  async configureMany(
    reqs: (ConfigureRequest & { workload: string })[],
  ): Promise<BatchResult<InstanceInfo>[]> {
    return (
      await this.call<{ results: BatchResult<InstanceInfo>[] }>(
        'PUT',
        '/v1/instances/nic',
        { instances: reqs },
        this.batchTimeout(reqs.length),
      )
    ).results;
  }

  configure(workload: string, req: ConfigureRequest): Promise<InstanceInfo> {
    return this.call('PUT', `/v1/instances/${seg(workload)}/nic`, req);
  }

  rotatePsk(workload: string, sealedPsk: PskBox): Promise<InstanceInfo> {
    return this.call('POST', `/v1/instances/${seg(workload)}/psk`, { sealedPsk });
  }

  restart(workload: string): Promise<CreatedInstance> {
    return this.call('POST', `/v1/instances/${seg(workload)}/restart`);
  }

  delete(workload: string): Promise<{ workload: string }> {
    return this.call('DELETE', `/v1/instances/${seg(workload)}`);
  }
}
