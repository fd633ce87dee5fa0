// The orchestrator client of a network configuration: its socket, plain or over mTLS with the
// files the configuration names (the plugin's X.509-SVID, its key, the trusted roots). The key
// is read per call and the read buffer wiped.
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { assembleIdentity } from '../identity/identity.js';
import { clientTlsOptions } from '../identity/mtls.js';
import { serviceId } from '../identity/spiffe.js';
import { TrustBundle } from '../identity/trust-bundle.js';
import { OrchestratorClient } from '../orchestrator/client.js';
import type { CniConfig } from './config.js';
import { CNI_ERR, CniError } from './spec.js';

export const DEFAULT_TIMEOUT_MS = 60_000;

function read(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new CniError(
      CNI_ERR.IO_FAILURE,
      `cannot read ${what} ${path}`,
      err instanceof Error ? err.message : String(err),
    );
  }
}

export function orchestratorClient(cfg: CniConfig): OrchestratorClient {
  const timeout = cfg.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (cfg.mtls === undefined) return new OrchestratorClient(cfg.orchestrator, timeout);
  const keyPem = read(cfg.mtls.key, 'the mTLS key');
  try {
    const identity = assembleIdentity(
      createPrivateKey(keyPem),
      read(cfg.mtls.cert, 'the mTLS certificate').toString('utf8'),
    );
    const td = identity.spiffeId.trustDomain;
    const bundle = TrustBundle.fromPem(td, read(cfg.mtls.caBundle, 'the CA bundle').toString('utf8'));
    const server = serviceId(td, 'orchestrator').uri;
    return new OrchestratorClient(
      { socketPath: cfg.orchestrator, tls: () => clientTlsOptions(identity, bundle, [server]) },
      timeout,
    );
  } catch (err) {
    if (err instanceof CniError) throw err;
    throw new CniError(
      CNI_ERR.INVALID_NETWORK_CONFIG,
      'the mTLS files of the network configuration are not a usable identity',
      err instanceof Error ? err.message : String(err),
    );
  } finally {
    keyPem.fill(0);
  }
}
