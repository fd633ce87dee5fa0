// The lab's certificate authority, so that a lab runs the way production does: every API over
// mTLS with SPIFFE identities. A CA with an embedded SoftHSM2 token (its store, the PIN only
// in this process's environment) in the lab's run directory, serving its CSR API over TLS on a
// Unix socket there; each agent and the orchestrator enrol with a one-time join token handed
// through their environment; the operator's identity (the demo's and the tests' client) is
// issued directly by the CA. close() stops the server and removes the CA's state.
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CertificateAuthority } from '../ca/authority.js';
import { parseCaConfig } from '../ca/config.js';
import { CsrServer } from '../ca/csr-server.js';
import { verifyCsr } from '../ca/svid.js';
import { assembleIdentity, createKeyAndCsr, type Identity } from '../identity/identity.js';
import { clientTlsOptions } from '../identity/mtls.js';
import { serviceId } from '../identity/spiffe.js';
import type { TrustBundle } from '../identity/trust-bundle.js';
import type { ApiEndpoint } from '../util/http-json.js';
import { logger } from '../util/log.js';
import type { LabState } from './state.js';

/** The trust domain of every lab. */
export const LAB_TRUST_DOMAIN = 'lab.tenguard';

export class LabCa {
  private constructor(
    private readonly ca: CertificateAuthority,
    private readonly server: CsrServer,
    private readonly dir: string,
    private readonly pinEnv: string,
    readonly socket: string,
    readonly bundleFile: string,
    readonly trustDomain: string,
  ) {}

  static async start(lab: LabState): Promise<LabCa> {
    const dir = join(lab.runDir, 'ca');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const pinEnv = `TENGUARD_LAB_CA_PIN_${lab.prefix.toUpperCase()}`;
    process.env[pinEnv] = randomBytes(12).toString('base64url');
    const ca = CertificateAuthority.open(
      parseCaConfig({
        stateDir: join(dir, 'state'),
        trustDomain: LAB_TRUST_DOMAIN,
        token: { label: `${lab.prefix}-ca`, pin: { env: pinEnv } },
      }),
    );
    try {
      await ca.init();
      const socket = join(lab.runDir, 'ca.sock');
      const server = await CsrServer.start({ ca, socketPath: socket, log: logger('lab.ca') });
      const bundleFile = join(dir, 'bundle.pem');
      writeFileSync(bundleFile, ca.trustBundle().toPem(), { mode: 0o644 });
      return new LabCa(ca, server, dir, pinEnv, socket, bundleFile, LAB_TRUST_DOMAIN);
    } catch (err) {
      ca.close();
      delete process.env[pinEnv];
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  bundle(): TrustBundle {
    return this.ca.trustBundle();
  }

  /** A one-time join token for a service's SPIFFE ID (handed through its environment). */
  joinToken(spiffeId: string): string {
    return this.server.joinTokens.issue(spiffeId, 120_000);
  }

  /** An identity issued directly by the CA (the operator's). */
  async issue(spiffeId: string, ttlSeconds = 3600): Promise<Identity> {
    const { privateKey, csrPem } = await createKeyAndCsr(spiffeId);
    const svid = await this.ca.issue({
      csr: await verifyCsr(csrPem),
      spiffeId,
      ttlSeconds,
      requester: 'admin',
    });
    return assembleIdentity(privateKey, [svid.certificatePem, ...svid.chainPem], spiffeId);
  }

  /** The operator's SPIFFE ID in the lab. */
  get operatorId(): string {
    return serviceId(this.trustDomain, 'operator').uri;
  }

  /**
   * An mTLS endpoint on a Unix socket: `identity` is presented (null: no client certificate)
   * and the server must prove `serverId`.
   */
  endpoint(socketPath: string, identity: Identity | null, serverId: string): ApiEndpoint {
    return {
      socketPath,
      tls: () => {
        const bundle = this.bundle();
        if (identity !== null) return clientTlsOptions(identity, bundle, [serverId]);
        return { ca: bundle.pems(), minVersion: 'TLSv1.3', checkServerIdentity: () => undefined };
      },
    };
  }

  async close(): Promise<void> {
    await this.server.close();
    this.ca.close();
    delete process.env[this.pinEnv];
    rmSync(this.dir, { recursive: true, force: true });
  }
}
