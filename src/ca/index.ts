// The CA library's public surface, for the NIC agent, the orchestrator and the CLI.
export { decide, type PlacementLookup, type PlacementQuery, type Requester } from './approval.js';
export {
  type CaOptions,
  CertificateAuthority,
  type GenerationSummary,
  type IssuedSvid,
  type IssueRequest,
} from './authority.js';
export { type Clock, systemClock } from './clock.js';
export { type CaConfig, loadCaConfig, parseCaConfig } from './config.js';
export {
  type CertificateSigningRequest,
  CsrService,
  issuedChain,
  SIGNER_NAME,
  type SvidIssuer,
} from './csr-api.js';
export {
  type Authenticator,
  CSR_COLLECTION_PATH,
  csrAuthorize,
  csrRoutes,
  localAdminAuthenticator,
  mtlsAuthenticator,
} from './csr-http.js';
export { CsrServer, type CsrServerOptions } from './csr-server.js';
export { CA_SERVICE_NAME, CaClient, enrol, RemoteRevocations } from './enrolment.js';
export { assembleIdentity, createKeyAndCsr, type Identity, svidSpiffeId } from './identity.js';
export { type CaKeyStore, TokenKeyStore } from './key-store.js';
export {
  type Authorization,
  authorize,
  authorizeRequest,
  authorizeSocket,
  clientTlsOptions,
  serverTlsOptions,
  updateServerIdentity,
  wipeTlsKey,
} from './mtls.js';
export { orchestratorPlacement, type WorkloadDirectory } from './placement.js';
export { IdentityRenewer, type SignCallback } from './renewal.js';
export { type IsRevoked, RevocationList } from './revocation.js';
export {
  JOIN_TOKEN_ENV,
  MTLS_ARG_OPTIONS,
  MTLS_USAGE,
  mtlsConfigFromArgs,
  ServiceMtls,
  type ServiceMtlsConfig,
} from './service-mtls.js';
export { nicId, parseSpiffeId, type SpiffeId, SpiffeIdPattern, serviceId, workloadId } from './spiffe.js';
export { type CaStore, FileCaStore, MemoryCaStore } from './store.js';
export { verifyCsr } from './svid.js';
export { TrustBundle } from './trust-bundle.js';
