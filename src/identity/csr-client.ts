// A typed client of the CSR API (served by src/ca/csr-http.ts; its wire contract in csr.ts),
// on the CA operator's Unix socket or over TLS.
// Errors come back as TgError with the server's code and message.
import { TgError } from '../util/errors.js';
import { type ApiEndpoint, apiCall, type HttpMethod } from '../util/http-json.js';
import {
  type CertificateSigningRequest,
  type CertificateSigningRequestList,
  CSR_COLLECTION_PATH,
  JOIN_TOKENS_PATH,
} from './csr.js';

export interface RevocationItem {
  serial: string;
  revokedAt: string;
  notAfter: string;
}

export class CsrClient {
  /**
   * @param endpoint The API's Unix socket (the operator) or an endpoint with TLS options.
   * @param headers Sent with every request (Authorization: Bearer <join token>).
   */
  constructor(
    readonly endpoint: ApiEndpoint,
    private readonly timeoutMs = 10_000,
    private readonly headers: Record<string, string> = {},
  ) {}

  private call<T>(method: HttpMethod, path: string, body?: unknown): Promise<T> {
    return apiCall(this.endpoint, method, path, body, {
      timeoutMs: this.timeoutMs,
      headers: this.headers,
    }) as Promise<T>;
  }

  /** Submits a request; the answer is approved and issued, or denied (with its conditions). */
  create(csr: unknown): Promise<CertificateSigningRequest> {
    return this.call('POST', CSR_COLLECTION_PATH, csr);
  }

  list(): Promise<CertificateSigningRequestList> {
    return this.call('GET', CSR_COLLECTION_PATH);
  }

  get(name: string): Promise<CertificateSigningRequest> {
    return this.call('GET', `${CSR_COLLECTION_PATH}/${encodeURIComponent(name)}`);
  }

  /** The roots to trust now, as PEM. */
  async trustBundlePem(): Promise<string> {
    const pem = await this.call<unknown>('GET', '/trust-bundle');
    if (typeof pem !== 'string') throw new TgError('TG_ERR_COMMAND_FAILED', 'trust bundle: not a PEM answer');
    return pem;
  }

  async revocations(): Promise<RevocationItem[]> {
    return (await this.call<{ items: RevocationItem[] }>('GET', '/revocations')).items;
  }

  /** A one-time join token for `spiffeId` (the operator's socket). */
  joinToken(
    spiffeId: string,
    ttlSeconds?: number,
  ): Promise<{ spiffeId: string; token: string; expiresAt: string }> {
    return this.call('POST', JOIN_TOKENS_PATH, {
      spiffeId,
      ...(ttlSeconds === undefined ? {} : { ttlSeconds }),
    });
  }

  openapi(): Promise<Record<string, unknown>> {
    return this.call('GET', '/openapi.json');
  }
}
