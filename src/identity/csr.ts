// The CSR API's wire contract, shared by the CA that serves it (src/ca/csr-api.ts,
// csr-http.ts) and the clients that enrol through it (enrolment.ts): certificate signing
// requests shaped like Kubernetes certificates.k8s.io/v1 CertificateSigningRequest, the one
// signer name, the usages it honours and the collection's path.

export const API_GROUP_VERSION = 'certificates.k8s.io/v1';
export const SIGNER_NAME = 'tenguard.io/x509-svid';

/** Kubernetes KeyUsage strings this signer honours. */
export const ALLOWED_USAGES = [
  'digital signature',
  'key encipherment',
  'server auth',
  'client auth',
] as const;
export type CsrUsage = (typeof ALLOWED_USAGES)[number];

export const CSR_COLLECTION_PATH = `/apis/${API_GROUP_VERSION}/certificatesigningrequests`;

/** POST {spiffeId, ttlSeconds?} -> a one-time join token (the CA operator's socket only). */
export const JOIN_TOKENS_PATH = '/join-tokens';

export type ConditionType = 'Approved' | 'Denied' | 'Failed';

export interface CsrCondition {
  readonly type: ConditionType;
  readonly status: 'True';
  readonly reason: string;
  readonly message: string;
  readonly lastUpdateTime: string;
  readonly lastTransitionTime: string;
}

export interface CertificateSigningRequest {
  readonly apiVersion: typeof API_GROUP_VERSION;
  readonly kind: 'CertificateSigningRequest';
  readonly metadata: { readonly name: string; readonly uid: string; readonly creationTimestamp: string };
  readonly spec: {
    readonly request: string;
    readonly signerName: string;
    readonly usages: readonly CsrUsage[];
    readonly expirationSeconds?: number;
    readonly username: string;
  };
  readonly status: { readonly conditions: readonly CsrCondition[]; readonly certificate?: string };
}

export interface CertificateSigningRequestList {
  readonly apiVersion: typeof API_GROUP_VERSION;
  readonly kind: 'CertificateSigningRequestList';
  readonly items: readonly CertificateSigningRequest[];
}

/** Decodes status.certificate into PEM certificates (leaf first). */
export function issuedChain(obj: CertificateSigningRequest): string | undefined {
  return obj.status.certificate === undefined
    ? undefined
    : Buffer.from(obj.status.certificate, 'base64').toString('utf8');
}
