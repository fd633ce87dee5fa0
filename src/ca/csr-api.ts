// The CSR API's domain: certificate signing requests shaped like Kubernetes
// certificates.k8s.io/v1 CertificateSigningRequest. A request carries a PKCS#10 request
// (spec.request, base64 of the PEM), signerName, usages and expirationSeconds; its status
// carries the conditions Approved, Denied or Failed and, once issued, the certificate chain
// (status.certificate, base64 of PEM, leaf first). Requests are decided and signed as they
// are created: the built-in policy (approval.ts) approves or denies, the CA signs.
//
// Departures from Kubernetes: one signer only (SIGNER_NAME); the SPIFFE ID to issue is the
// single URI SAN of the PKCS#10 request; spec.username is the authenticated requester and
// cannot be supplied; objects live in memory and are dropped (oldest first) beyond
// maxObjects or after retainSeconds, as the Kubernetes CSR cleaner drops them after an hour.
import { randomBytes, randomUUID } from 'node:crypto';
import { z } from 'zod';
import {
  ALLOWED_USAGES,
  API_GROUP_VERSION,
  type CertificateSigningRequest,
  type CertificateSigningRequestList,
  type ConditionType,
  type CsrCondition,
  type CsrUsage,
  SIGNER_NAME,
} from '../identity/csr.js';
import { parseSpiffeId, type SpiffeId } from '../identity/spiffe.js';
import { TgError } from '../util/errors.js';
import { decide, type PlacementLookup, type Requester, requesterName } from './approval.js';
import type { IssuedSvid, IssueRequest } from './authority.js';
import { CSR_MAX_PEM_CHARS, type SvidUsage, verifyCsr } from './svid.js';

export const CSR_NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

const CreateSchema = z.strictObject({
  apiVersion: z.literal(API_GROUP_VERSION).optional(),
  kind: z.literal('CertificateSigningRequest').optional(),
  metadata: z
    .strictObject({
      name: z.string().regex(CSR_NAME_RE, 'must be a DNS subdomain name').optional(),
      generateName: z
        .string()
        .regex(/^[a-z0-9][-a-z0-9.]{0,40}$/, 'must be a short DNS-name prefix')
        .optional(),
    })
    .optional(),
  spec: z.strictObject({
    request: z
      .string()
      .min(1)
      .max(Math.ceil((CSR_MAX_PEM_CHARS * 4) / 3) + 4)
      .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64'),
    signerName: z.string().min(1).max(253),
    usages: z.array(z.string()).min(1).max(8),
    expirationSeconds: z
      .number()
      .int()
      .min(1)
      .max(2 ** 31)
      .optional(),
  }),
});

/** What the CSR API needs from the CA. */
export interface SvidIssuer {
  readonly trustDomain: string;
  readonly config: {
    readonly issuance: {
      readonly minTtlSeconds: number;
      readonly maxTtlSeconds: number;
      readonly defaultTtlSeconds: number;
    };
  };
  issue(req: IssueRequest): Promise<IssuedSvid>;
}

export interface CsrServiceOptions {
  readonly ca: SvidIssuer;
  readonly isPlacedOn: PlacementLookup;
  readonly now?: () => number;
  readonly maxObjects?: number;
  readonly retainSeconds?: number;
}

function bad(message: string): TgError {
  return new TgError('TG_ERR_INVALID_ARGUMENT', message);
}

export class CsrService {
  private readonly objects = new Map<string, CertificateSigningRequest>();
  /** Names taken by requests still being decided or signed. */
  private readonly reserved = new Set<string>();
  private readonly now: () => number;
  private readonly maxObjects: number;
  private readonly retainMs: number;

  constructor(private readonly opts: CsrServiceOptions) {
    this.now = opts.now ?? Date.now;
    this.maxObjects = opts.maxObjects ?? 10_000;
    this.retainMs = (opts.retainSeconds ?? 3600) * 1000;
  }

  /**
   * Creates a request, decides it and, if approved, issues the certificate. Malformed input
   * is a TG_ERR_INVALID_ARGUMENT (HTTP 400) and stores nothing; a policy refusal is a stored
   * object with a Denied condition.
   */
  async create(body: unknown, requester: Requester): Promise<CertificateSigningRequest> {
    const parsed = CreateSchema.safeParse(body);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      throw bad(`invalid CertificateSigningRequest: ${i.path.join('.') || '(body)'}: ${i.message}`);
    }
    const input = parsed.data;
    const spec = input.spec;
    if (spec.signerName !== SIGNER_NAME)
      throw bad(`unknown signerName '${spec.signerName.slice(0, 80)}': use ${SIGNER_NAME}`);
    const usages = this.checkUsages(spec.usages);
    const iss = this.opts.ca.config.issuance;
    if (spec.expirationSeconds !== undefined && spec.expirationSeconds < iss.minTtlSeconds)
      throw bad(`spec.expirationSeconds must be at least ${iss.minTtlSeconds}`);
    const ttl = Math.min(spec.expirationSeconds ?? iss.defaultTtlSeconds, iss.maxTtlSeconds);

    const pem = Buffer.from(spec.request, 'base64').toString('utf8');
    const csr = await verifyCsr(pem);
    if (csr.uriSans.length !== 1)
      throw bad(
        `the PKCS#10 request must name exactly one SPIFFE ID as URI SAN, it names ${csr.uriSans.length}`,
      );
    let id: SpiffeId;
    try {
      id = parseSpiffeId(csr.uriSans[0]);
    } catch (err) {
      throw bad((err as Error).message);
    }

    this.collect(1);
    const name = this.pickName(input.metadata?.name, input.metadata?.generateName);
    this.reserved.add(name);
    try {
      return await this.decideAndIssue(name, spec, usages, ttl, csr, id, requester);
    } finally {
      this.reserved.delete(name);
    }
  }

  private async decideAndIssue(
    name: string,
    spec: z.infer<typeof CreateSchema>['spec'],
    usages: CsrUsage[],
    ttl: number,
    csr: Awaited<ReturnType<typeof verifyCsr>>,
    id: SpiffeId,
    requester: Requester,
  ): Promise<CertificateSigningRequest> {
    const at = new Date(this.now()).toISOString();
    const cond = (type: ConditionType, reason: string, message: string): CsrCondition => ({
      type,
      status: 'True',
      reason,
      message,
      lastUpdateTime: at,
      lastTransitionTime: at,
    });
    const base = {
      apiVersion: API_GROUP_VERSION,
      kind: 'CertificateSigningRequest',
      metadata: { name, uid: randomUUID(), creationTimestamp: at },
      spec: {
        request: spec.request,
        signerName: spec.signerName,
        usages,
        ...(spec.expirationSeconds === undefined ? {} : { expirationSeconds: spec.expirationSeconds }),
        username: requesterName(requester),
      },
    } as const;

    const decision = await decide(requester, id, this.opts.ca.trustDomain, this.opts.isPlacedOn);
    let status: CertificateSigningRequest['status'];
    if (!decision.approved) {
      status = { conditions: [cond('Denied', decision.reason, decision.message)] };
    } else {
      const approved = cond('Approved', decision.reason, decision.message);
      try {
        const svid = await this.opts.ca.issue({
          csr,
          spiffeId: id,
          ttlSeconds: ttl,
          usages: usages.filter((u): u is SvidUsage => u === 'server auth' || u === 'client auth'),
          requester: requesterName(requester),
        });
        const chain = [svid.certificatePem, ...svid.chainPem].join('');
        status = { conditions: [approved], certificate: Buffer.from(chain).toString('base64') };
      } catch (err) {
        const reason =
          err instanceof TgError && err.code === 'TG_ERR_TOKEN' ? 'SignerUnavailable' : 'SigningFailed';
        status = { conditions: [approved, cond('Failed', reason, (err as Error).message)] };
      }
    }
    const obj: CertificateSigningRequest = deepFreeze({ ...base, status });
    this.objects.set(name, obj);
    return obj;
  }

  /** One request; a requester other than admin sees only its own (others are not found). */
  get(name: string, requester: Requester): CertificateSigningRequest {
    const obj = this.objects.get(name);
    if (obj === undefined || !this.visible(obj, requester))
      throw new TgError('TG_ERR_NOT_FOUND', `certificatesigningrequest '${name.slice(0, 253)}' not found`);
    return obj;
  }

  list(requester: Requester): CertificateSigningRequestList {
    this.collect(0);
    return {
      apiVersion: API_GROUP_VERSION,
      kind: 'CertificateSigningRequestList',
      items: [...this.objects.values()].filter((o) => this.visible(o, requester)),
    };
  }

  private visible(obj: CertificateSigningRequest, requester: Requester): boolean {
    return requester.kind === 'admin' || obj.spec.username === requesterName(requester);
  }

  private checkUsages(usages: readonly string[]): CsrUsage[] {
    const out: CsrUsage[] = [];
    for (const u of usages) {
      if (!(ALLOWED_USAGES as readonly string[]).includes(u))
        throw bad(
          `usage '${u.slice(0, 40)}' is not available from ${SIGNER_NAME}; allowed: ${ALLOWED_USAGES.join(', ')}`,
        );
      if (!out.includes(u as CsrUsage)) out.push(u as CsrUsage);
    }
    if (!out.includes('server auth') && !out.includes('client auth'))
      throw bad('usages must include "server auth" or "client auth"');
    return out;
  }

  private pickName(name: string | undefined, generateName: string | undefined): string {
    if (name !== undefined) {
      if (this.objects.has(name) || this.reserved.has(name))
        throw new TgError('TG_ERR_CONFLICT', `certificatesigningrequest '${name}' already exists`);
      return name;
    }
    for (;;) {
      const candidate = `${generateName ?? 'csr-'}${randomBytes(4).toString('hex')}`;
      if (!this.objects.has(candidate) && !this.reserved.has(candidate)) return candidate;
    }
  }

  /** Drops objects past retention, then the oldest until `room` more fit under the cap. */
  private collect(room: number): void {
    const cutoff = this.now() - this.retainMs;
    for (const [name, o] of this.objects) {
      if (Date.parse(o.metadata.creationTimestamp) < cutoff) this.objects.delete(name);
      else break; // insertion order is creation order
    }
    while (this.objects.size + room > this.maxObjects) {
      const oldest = this.objects.keys().next().value;
      if (oldest === undefined) break;
      this.objects.delete(oldest);
    }
  }
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}
